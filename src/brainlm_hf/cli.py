# Copyright 2026 The brainlm_hf authors. Licensed under the Apache License, Version 2.0.
"""The `brainlm` command line: `brainlm convert`, `prepare`, `pretrain`, `finetune`, `embed`, `attention`.

`pretrain` and `finetune` read their arguments with `HfArgumentParser` (dataclasses, also from one JSON/YAML file);
the other commands are argparse subcommands, each an `_add_<command>` parser and a `_<command>` runner.
"""

import argparse
import json
import sys


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    for name, run in (("pretrain", pretrain_main), ("finetune", finetune_main)):
        if argv[:1] == [name]:
            try:
                return run(argv[1:])
            except (ValueError, FileNotFoundError) as error:  # a refused run: one line, exit status 2
                sys.stderr.write(f"brainlm {name}: error: {error}\n")
                raise SystemExit(2) from None
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        args.run(args)
    except (ValueError, FileNotFoundError) as error:
        parser.exit(2, f"brainlm {args.command}: error: {error}\n")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="brainlm", description="BrainLM on Hugging Face.")
    commands = parser.add_subparsers(dest="command", required=True)
    for add in (_add_convert, _add_prepare, _add_embed, _add_attention):
        add(commands)
    commands.add_parser("pretrain", help="pretrain with Accelerate on prepared shards (see `brainlm pretrain -h`)")
    commands.add_parser("finetune", help="fine-tune for phenotype columns with Trainer (see `brainlm finetune -h`)")
    return parser


def parse_dataclass_arguments(types: tuple, argv: list[str] | None, prog: str) -> tuple:
    """Instances of the dataclasses `types` from the command line, or from one JSON/YAML file given alone."""
    from transformers import HfArgumentParser

    parser = HfArgumentParser(types, prog=prog)
    if argv and len(argv) == 1 and argv[0].endswith((".json", ".yaml", ".yml")):
        read = parser.parse_json_file if argv[0].endswith(".json") else parser.parse_yaml_file
        return tuple(read(argv[0]))
    return tuple(parser.parse_args_into_dataclasses(args=argv))


def pretrain_main(argv: list[str] | None = None) -> None:
    """`brainlm pretrain`: `PretrainingArguments` from the command line or a JSON/YAML file."""
    from .training.pretraining import PretrainingArguments, pretrain

    (args,) = parse_dataclass_arguments((PretrainingArguments,), argv, "brainlm pretrain")
    metrics = pretrain(args)
    if metrics:
        print(json.dumps(metrics, indent=2))


def finetune_main(argv: list[str] | None = None) -> dict:
    """`brainlm finetune`: `FinetuningArguments` and `TrainingArguments` from the command line or a JSON/YAML file."""
    from transformers import TrainingArguments

    from .training.finetuning import FinetuningArguments, finetune

    args, training_args = parse_dataclass_arguments((FinetuningArguments, TrainingArguments), argv, "brainlm finetune")
    results = finetune(args, training_args)
    print(json.dumps(results, indent=2))
    return results


def _add_atlas_options(parser: argparse.ArgumentParser, coordinates: bool = False) -> None:
    parser.add_argument("--atlas", help="'A424' or a label NIfTI, for NIfTI inputs")
    parser.add_argument("--atlas-dir", help="folder with the A424 files (default: download and verify them)")
    if coordinates:
        parser.add_argument("--atlas-coordinates", help="coordinate table for a custom atlas (label x y z)")


def _atlas(args: argparse.Namespace):
    """The atlas `--atlas` names: `A424` (from `--atlas-dir` or the verified download), a label NIfTI (with
    `--atlas-coordinates` when given), or None."""
    if not args.atlas:
        return None
    from .data import load_a424, load_atlas

    if args.atlas == "A424":
        return load_a424(args.atlas_dir)
    table = getattr(args, "atlas_coordinates", None)
    return load_atlas(args.atlas, coordinates=None if table is None else _coordinate_table(table))


def _coordinate_table(path: str):
    import numpy as np

    return np.loadtxt(path)[:, 1:4]  # label, x, y, z


def _add_convert(commands) -> None:
    convert = commands.add_parser(
        "convert",
        help="convert an original BrainLM checkpoint (13M, 111M, 650M families) into a brainlm_hf folder",
        description="SRC is an original checkpoint folder (config.json + pytorch_model.bin or model.safetensors), a "
        "Hub repository id, e.g. `vandijklab/brainlm --subfolder vitmae_111M`, or a released model's short name: "
        "brainlm-13m, brainlm-111m, brainlm-650m.",
    )
    convert.add_argument("source", metavar="SRC")
    convert.add_argument("output_dir", metavar="OUT")
    convert.add_argument("--subfolder", help="folder inside SRC, e.g. old_13M, vitmae_111M, vitmae_650M")
    convert.add_argument("--revision", help="Hub revision of SRC")
    convert.add_argument(
        "--atlas-coordinates",
        help="coordinate table (label x y z), e.g. A424_Coordinates.dat (default: A424's, downloaded from the pinned "
        "upstream commit and SHA-256 checked)",
    )
    convert.add_argument("--preset", help="refuse a checkpoint whose architecture differs from this preset")
    convert.add_argument("--push-to-hub", metavar="REPO", help="upload OUT to this Hub repository")
    convert.add_argument("--accept-weights-license", action="store_true", help="confirm CC BY-NC-ND 4.0 re-hosting")
    convert.set_defaults(run=_convert)


def _convert(args: argparse.Namespace) -> None:
    from pathlib import Path

    from .convert import WEIGHTS_LICENSE_WARNING, convert_checkpoint
    from .hub import release_location

    if args.push_to_hub:
        print(f"warning: {WEIGHTS_LICENSE_WARNING}", file=sys.stderr)
    source, subfolder = (args.source, args.subfolder)
    if not Path(source).is_dir():  # a short name: brainlm-111m is vandijklab/brainlm --subfolder vitmae_111M
        source, subfolder = release_location(source, subfolder)
    model = convert_checkpoint(
        source,
        args.output_dir,
        subfolder=subfolder or None,
        revision=args.revision,
        atlas_coordinates=args.atlas_coordinates,
        expected_preset=args.preset,
        push_to_hub=args.push_to_hub,
        accept_weights_license=args.accept_weights_license,
    )
    print(f"Converted {args.source} ({model.num_parameters() / 1e6:.2f}M parameters) to {args.output_dir}")


def _add_prepare(commands) -> None:
    prepare = commands.add_parser(
        "prepare",
        help="turn NIfTI images or parcel tables into Parquet shards with a fitted processor",
        description="INPUTS is a folder, a glob (quoted) or files: 4-D NIfTI images (parcellated with --atlas) or "
        "parcel tables (T, V) as .npy/.csv/.tsv/.dat.",
    )
    prepare.add_argument("inputs", metavar="INPUTS", nargs="+")
    prepare.add_argument("output_dir", metavar="OUT")
    _add_atlas_options(prepare, coordinates=True)
    prepare.add_argument("--phenotypes", help="CSV/TSV with a 'subject' or 'id' column")
    prepare.add_argument("--tr", type=float, help="repetition time in seconds (default: from the NIfTI header)")
    prepare.add_argument("--num-timepoints", type=int, default=200, help="window length")
    prepare.add_argument(
        "--patch-size",
        type=int,
        help="patch size of the region_window model to train (refuse a window length that is not a multiple of it; "
        "without it a window length the presets' patch size 20 does not divide is warned about)",
    )
    prepare.add_argument("--normalization", default="robust", choices=["robust", "zscore", "none"])
    prepare.add_argument("--split", type=float, nargs=3, default=[0.8, 0.1, 0.1], metavar=("TRAIN", "VAL", "TEST"))
    prepare.add_argument("--seed", type=int, default=0)
    prepare.add_argument("--shard-multiple", type=int, default=8, help="shard counts are multiples of this")
    prepare.set_defaults(run=_prepare)


def _prepare(args: argparse.Namespace) -> None:
    from .data import prepare_dataset
    from .data.prepare import PRESET_PATCH_SIZE, check_window_length

    check_window_length(args.num_timepoints, args.patch_size)
    if args.patch_size is None and args.num_timepoints % PRESET_PATCH_SIZE:
        print(
            f"warning: --num-timepoints {args.num_timepoints} is not a multiple of {PRESET_PATCH_SIZE}, the patch "
            "size of the brainlm presets: pretraining them on this dataset will be refused (pass --patch-size with "
            "your model's patch size to check against it).",
            file=sys.stderr,
        )
    summary = prepare_dataset(
        args.inputs,
        args.output_dir,
        atlas=_atlas(args),
        phenotypes=args.phenotypes,
        repetition_time=args.tr,
        num_timepoints=args.num_timepoints,
        normalization=args.normalization,
        splits=dict(zip(("train", "validation", "test"), args.split, strict=True)),
        seed=args.seed,
        shard_multiple=args.shard_multiple,
        patch_size=args.patch_size,
    )
    for split, numbers in summary["splits"].items():
        print(
            f"{split}: {numbers['recordings']} recordings, {numbers['subjects']} subjects, {numbers['shards']} shards"
        )
    print(f"left out (shorter than {args.num_timepoints} timepoints): {len(summary['too_short'])}")


def _add_embed(commands) -> None:
    embed = commands.add_parser(
        "embed",
        help="per-recording embeddings (no masking; windows of each recording pooled and averaged, or all tokens)",
        description="MODEL: a brainlm_hf checkpoint folder or Hub id (with its processor), an original BrainLM "
        "checkpoint (converted on load and cached), or a released model's short name (brainlm-13m, brainlm-111m, "
        "brainlm-650m). INPUTS: parcel tables (T, V) as .npy/.csv/.tsv/.dat, 4-D NIfTI images with --atlas, or "
        "prepared Parquet shards; a folder or a quoted glob. Writes OUT as .parquet or .npz: with --pooling cls or "
        "mean one (H,) embedding per recording (Parquet: id, embedding; npz: ids, embeddings); with --pooling "
        "tokens every token of every window (Parquet: one row per window, id, window, tokens (1 + K) x H with the "
        "CLS token first; npz: ids, tokens (windows, 1 + K, H), recording_index).",
    )
    embed.add_argument("model", metavar="MODEL", help="checkpoint folder, Hub id or short name")
    embed.add_argument("inputs", metavar="INPUTS", nargs="+")
    embed.add_argument("--output", required=True, help="OUT: embeddings.parquet or embeddings.npz")
    embed.add_argument("--processor", help="processor folder when it is not saved with the model")
    embed.add_argument(
        "--fit-processor",
        action="store_true",
        help="fit the processor's robust scaling (per-region median and IQR) on INPUTS: the released weights ship "
        "no statistics",
    )
    _add_atlas_options(embed)
    embed.add_argument("--subfolder", help="folder inside a Hub MODEL, e.g. vitmae_111M of vandijklab/brainlm")
    embed.add_argument("--revision", help="Hub revision of MODEL")
    embed.add_argument(
        "--layer",
        type=int,
        help="hidden state to read: 0 = input embeddings, i = layer i before the final LayerNorm, -1 = the last "
        "layer before it (Brainmarks' choice for 111M/650M); default: after the final LayerNorm",
    )
    embed.add_argument("--pooling", default="cls", choices=["cls", "mean", "tokens"])
    embed.add_argument(
        "--include-padding-tokens", action="store_true", help="with --pooling tokens: keep tiles made only of padding"
    )
    embed.add_argument(
        "--window-policy",
        default="covering",
        choices=["covering", "non_overlapping"],
        help="covering: every timepoint, one last window aligned to the end; non_overlapping: remainder dropped",
    )
    embed.add_argument("--batch-size", type=int, default=16)
    embed.add_argument("--device", help="default: cuda when available, else cpu")
    embed.add_argument("--dtype", default="fp32", choices=["fp32", "bf16", "fp16"], help="autocast dtype")
    embed.add_argument("--quiet", action="store_true", help="no progress bar")
    embed.set_defaults(run=_embed)


def _embed(args: argparse.Namespace) -> None:
    import torch

    from .analysis.recording_embeddings import embed_recordings, save_embeddings
    from .data import load_recordings
    from .feature_extraction_brainlm import BrainLMFeatureExtractor
    from .modeling_brainlm import BrainLMModel

    location = {key: value for key, value in (("subfolder", args.subfolder), ("revision", args.revision)) if value}
    if args.processor:
        processor = BrainLMFeatureExtractor.from_pretrained(args.processor)
    else:
        processor = BrainLMFeatureExtractor.from_pretrained(args.model, **location)
    recordings = load_recordings(args.inputs, _atlas(args))
    if processor.normalization == "robust" and processor.median is None:
        if not args.fit_processor:
            raise ValueError(
                "The processor uses BrainLM's robust scaling but holds no statistics (the released weights ship "
                "none): pass --fit-processor to fit them on INPUTS, or --processor a folder with a fitted processor."
            )
        processor.fit(list(recordings.values()))
    model = BrainLMModel.from_pretrained(args.model, **location)
    dtype = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[args.dtype]
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    embeddings = embed_recordings(
        model, processor, recordings, args.pooling, args.batch_size, device, dtype, progress=not args.quiet,
        layer=args.layer, include_padding_tokens=args.include_padding_tokens, window_policy=args.window_policy,
    )  # fmt: skip
    path = save_embeddings(args.output, list(recordings), embeddings)
    what = f"{embeddings[0].shape[-1]}-d {args.pooling}"
    print(f"{len(recordings)} recordings -> {what} embeddings ({args.window_policy} windows) in {path}")


def _add_attention(commands) -> None:
    attention = commands.add_parser(
        "attention",
        help="CLS attention per region and network of a checkpoint on recordings, with figures",
        description="CHECKPOINT is a folder with the model and its processor; INPUTS are parcel tables (T, V) "
        "(.npy/.csv/.tsv/.dat) or prepared Parquet shards or split folders (e.g. prepared/test).",
    )
    attention.add_argument("checkpoint", metavar="CHECKPOINT")
    attention.add_argument("inputs", metavar="INPUTS", nargs="+")
    attention.add_argument("output_dir", metavar="OUT")
    attention.add_argument("--layers", type=int, nargs="+", help="encoder layers to average (default: all)")
    attention.add_argument("--stride", type=int, help="timepoints between windows (default: one window)")
    attention.add_argument(
        "--networks", choices=["a424", "aal2-lobes", "none"], default="none", help="region-to-network grouping"
    )
    attention.add_argument("--atlas-dir", help="A424 labels table or its folder (default: download and verify it)")
    attention.set_defaults(run=_attention)


def _attention(args: argparse.Namespace) -> None:
    from transformers import AutoModel

    from . import BrainLMFeatureExtractor
    from .analysis.attention_report import analyze_attention
    from .data import load_a424_networks, load_recordings
    from .data.demo import aal2_lobes

    processor = BrainLMFeatureExtractor.from_pretrained(args.checkpoint)
    networks = None
    if args.networks == "a424":
        networks = load_a424_networks(args.atlas_dir)
    elif args.networks == "aal2-lobes":
        if not processor.region_names:
            raise ValueError("--networks aal2-lobes needs the AAL2 region names in the checkpoint's processor.")
        networks = aal2_lobes(processor.region_names)
    model = AutoModel.from_pretrained(args.checkpoint).eval()
    report = analyze_attention(
        model, processor, load_recordings(args.inputs), args.output_dir, networks, args.layers, args.stride
    )
    if networks is not None:
        ranked = sorted(zip(report["network_names"], report["network_scores"], strict=True), key=lambda x: -x[1])
        print("networks: " + ", ".join(f"{name} {score:.4f}" for name, score in ranked))
    print(f"Wrote region_scores.csv, attention.json and {len(report['figures'])} figures to {args.output_dir}")


if __name__ == "__main__":
    main()
