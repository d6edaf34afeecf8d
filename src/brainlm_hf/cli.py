# Copyright 2026 The brainlm_hf authors. Licensed under the Apache License, Version 2.0.
"""The `brainlm` command line: `brainlm convert`, `prepare`, `pretrain`, `finetune`, `embed`, `attention`.

`pretrain` and `finetune` read their arguments with `HfArgumentParser` (dataclasses, also from one JSON/YAML file);
the other commands are argparse subcommands, each an `_add_<command>` parser and a `_<command>` runner.

User errors end the command with one line, `brainlm <command>: error: ...`, that names the file or option at fault,
and exit code 2, without a traceback: invalid options (argparse), and every `ValueError` and `OSError`
(`FileNotFoundError`, `PermissionError`, `NotADirectoryError`, a full disk, a failed download, ...) raised while the
command runs: the package raises those for bad input and names the input. Any other exception is a bug and keeps its
traceback; `BRAINLM_DEBUG=1` prints the traceback of user errors too. Warnings of the package print as one line,
`brainlm <command>: warning: ...`.
"""

import argparse
import json
import os
import re
import sys
import traceback
import warnings
from contextlib import contextmanager
from pathlib import Path

USER_ERRORS = (ValueError, OSError)
_PACKAGE = str(Path(__file__).resolve().parent)
# what `save_state` writes into a step checkpoint (a folder to resume from, not a model)
_STEP_CHECKPOINT_NAME = re.compile(r"checkpoint_\d+(_\w+)?(\.partial)?")
_STEP_CHECKPOINT_FILES = ("trainer_state.json", "optimizer*.bin", "random_states_*.pkl", "custom_*.pkl")


def main(argv: list[str] | None = None):
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["pretrain"]:
        return pretrain_main(argv[1:])
    if argv[:1] == ["finetune"]:
        return finetune_main(argv[1:])
    parser = build_parser()
    args, unknown = parser.parse_known_args(argv)
    if unknown:
        parser.commands[args.command].error(f"unrecognized arguments: {' '.join(unknown)}")
    with user_errors(args.command):
        args.run(args)


class ArgumentParser(argparse.ArgumentParser):
    """argparse with its errors on one line: `<prog>: error: <message> (see `<prog> -h`)`, exit code 2."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {_one_line(message)} (see `{self.prog} -h`)\n")


@contextmanager
def user_errors(command: str):
    """Turn the user errors (`USER_ERRORS`) raised inside into one line and exit code 2; warnings of the package into
    `brainlm <command>: warning: ...` lines."""
    default = warnings.showwarning

    def show(message, category, filename, lineno, file=None, line=None):
        if str(filename).startswith(_PACKAGE) and issubclass(category, UserWarning):
            print(f"brainlm {command}: warning: {_one_line(message)}", file=sys.stderr)
        else:
            default(message, category, filename, lineno, file, line)

    warnings.showwarning = show
    try:
        yield
    except USER_ERRORS as error:
        if os.environ.get("BRAINLM_DEBUG"):
            traceback.print_exception(error)
        sys.stderr.flush()
        sys.stdout.flush()
        print(f"brainlm {command}: error: {describe_error(error)}", file=sys.stderr)
        sys.exit(2)
    finally:
        warnings.showwarning = default


def describe_error(error: BaseException) -> str:
    """One line: the message, or for an operating-system error `path: reason`."""
    if isinstance(error, OSError) and error.strerror and error.filename is not None:
        text = f"{error.filename}: {error.strerror}"
        if error.filename2 is not None:
            text += f" ({error.filename2})"
    else:
        text = str(error) or type(error).__name__
    return _one_line(text)


def _one_line(text) -> str:
    return " ".join(str(text).split())


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(prog="brainlm", description="BrainLM on Hugging Face.")
    commands = parser.add_subparsers(dest="command", required=True)
    for add in (_add_convert, _add_prepare, _add_embed, _add_attention):
        add(commands)
    commands.add_parser("pretrain", help="pretrain with Accelerate on prepared shards (see `brainlm pretrain -h`)")
    commands.add_parser("finetune", help="fine-tune for phenotype columns with Trainer (see `brainlm finetune -h`)")
    parser.commands = commands.choices
    return parser


def parse_dataclass_arguments(types: tuple, argv: list[str] | None, prog: str) -> tuple:
    """Instances of the dataclasses `types` from the command line, or from one JSON/YAML file given alone."""
    from transformers import HfArgumentParser

    parser = HfArgumentParser(types, prog=prog)
    parser.error = lambda message: ArgumentParser.error(parser, message)  # one line, as the other commands
    if argv and len(argv) == 1 and argv[0].endswith((".json", ".yaml", ".yml")):
        if not Path(argv[0]).is_file():
            raise FileNotFoundError(f"no such file: {argv[0]} (the arguments as JSON or YAML)")
        read = parser.parse_json_file if argv[0].endswith(".json") else parser.parse_yaml_file
        return tuple(read(argv[0]))
    return tuple(parser.parse_args_into_dataclasses(args=argv))


def pretrain_main(argv: list[str] | None = None) -> None:
    """`brainlm pretrain`: `PretrainingArguments` from the command line or a JSON/YAML file."""
    from .training.pretraining import PretrainingArguments, pretrain

    with user_errors("pretrain"):
        (args,) = parse_dataclass_arguments((PretrainingArguments,), argv, "brainlm pretrain")
        _check_pretraining(args)
        metrics = pretrain(args)
    if metrics:
        print(json.dumps(metrics, indent=2))


def finetune_main(argv: list[str] | None = None) -> dict:
    """`brainlm finetune`: `FinetuningArguments` and `TrainingArguments` from the command line or a JSON/YAML file."""
    from transformers import TrainingArguments

    from .configuration_brainlm import PRESETS
    from .data import PreparedDataset
    from .training.finetuning import FinetuningArguments, finetune

    with user_errors("finetune"):
        args, training_args = parse_dataclass_arguments(
            (FinetuningArguments, TrainingArguments), argv, "brainlm finetune"
        )
        check_model_path(args.model, "--model", presets=PRESETS)
        PreparedDataset(args.dataset)  # an error that names the folder before any work
        check_output_folder(training_args.output_dir, "--output_dir")
        results = finetune(args, training_args)
    print(json.dumps(results, indent=2))
    return results


def _check_pretraining(args) -> None:
    """What `brainlm pretrain` can check before starting: the model, the dataset (its shards, its processor, and
    coordinates for a region-window model) and the output folder."""
    from .configuration_brainlm import PRESETS, BrainLMConfig
    from .data import PreparedDataset

    check_model_path(args.model, "--model", presets=PRESETS, config_file=True)
    dataset = PreparedDataset(args.dataset)
    if not dataset.shards("train"):
        raise FileNotFoundError(f"{args.dataset} has no train/ split to pretrain on (--dataset).")
    if dataset.processor.coordinates is None:
        if args.model in PRESETS:
            layout = BrainLMConfig.from_preset(args.model).token_layout
        else:
            file = Path(args.model) if args.model.endswith(".json") else Path(args.model) / "config.json"
            layout = json.loads(file.read_text()).get("token_layout", "region_window") if file.is_file() else None
        if layout == "region_window":
            raise ValueError(
                f"{args.dataset} has no region coordinates, which a region-window model ({args.model}) embeds: "
                "prepare it again with --atlas-coordinates FILE (label x y z) or --atlas."
            )
    check_output_folder(args.output_dir, "--output_dir")


def check_model_path(name: str, option: str, presets=(), config_file: bool = False) -> None:
    """
    Refuse, before any loading, a model path that cannot be a model: a path-like name that does not exist ("no
    such folder"), a file (unless `config_file` and a `.json`), a step checkpoint of a training run (use `final/`
    or resume), or a folder without `config.json`. A name that is not path-like is left to the Hub.
    """
    from .folders import is_path_like

    if name in presets:
        return
    path = Path(os.path.expanduser(name))
    if path.is_file():
        if config_file and name.endswith(".json"):
            return
        raise NotADirectoryError(f"{option} {name} is a file: give a model folder (config.json + model.safetensors).")
    if path.is_dir():
        if is_step_checkpoint(path):
            final = path.parent.parent / "final" if path.parent.name == "checkpoints" else Path("RUN") / "final"
            raise ValueError(
                f"{option} {name} is a step checkpoint of a training run (optimizer and data-stream state to resume "
                f"from), not a model: give the run's final model ({final}/), or continue the run with "
                f"--resume_from_checkpoint {name}."
            )
        if not (path / "config.json").is_file():
            final = path / "final"
            hint = f" (the final model of this run is {final}/)" if (final / "config.json").is_file() else ""
            raise FileNotFoundError(f"{option} {name} has no config.json: it is not a model folder{hint}.")
        return
    if config_file and name.endswith(".json"):
        raise FileNotFoundError(f"no such file: {name} ({option})")
    if is_path_like(name):
        raise FileNotFoundError(f"no such folder: {name} ({option})")


def is_step_checkpoint(folder: Path) -> bool:
    """A folder written by `save_state` during training (`checkpoints/checkpoint_<step>`), not a model folder."""
    if (folder / "config.json").is_file():
        return False
    if _STEP_CHECKPOINT_NAME.fullmatch(folder.name):
        return True
    return any(next(folder.glob(pattern), None) for pattern in _STEP_CHECKPOINT_FILES)


def check_output_folder(path: str, option: str) -> None:
    """An output folder the command creates or writes into: refuse a file in its place or on its way, and a folder
    that cannot be written (as far as the permissions tell; the write itself names the folder otherwise)."""
    folder = Path(os.path.expanduser(path))
    existing = next(p for p in (folder, *folder.absolute().parents) if p.exists())
    if not existing.is_dir():
        where = "" if existing == folder else f": {existing} is a file"
        raise NotADirectoryError(f"{option} {path} is not a folder{where or ' but a file'}.")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise PermissionError(f"{option} {path}: {existing} is not writable (permission denied).")


def _processor(folder: str, option: str, fix: str, **location):
    """
    The processor saved in `folder` (a folder, Hub id or short name; `location`: `subfolder`, `revision`), refusing
    a local folder without one with the missing file named.
    """
    from .feature_extraction_brainlm import CONFIG_NAME, BrainLMFeatureExtractor
    from .hub import original_family

    path = Path(os.path.expanduser(folder))
    inner = path / (location.get("subfolder") or "")
    if path.is_dir() and not (inner / CONFIG_NAME).is_file() and original_family(inner / "config.json") is None:
        raise FileNotFoundError(
            f"{folder} has no {CONFIG_NAME} (the processor: normalisation statistics, region coordinates and order): "
            f"{fix}"
        )
    if not path.exists():
        check_model_path(folder, option)
    return BrainLMFeatureExtractor.from_pretrained(folder, **location)


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1 or str(value) != text.strip().lstrip("+"):
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text!r}")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not (value > 0 and value != float("inf")):
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text!r}")
    return value


def _fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not (0 <= value < float("inf")):
        raise argparse.ArgumentTypeError(f"must be a fraction >= 0, got {text!r}")
    return value


def _add_atlas_options(parser: argparse.ArgumentParser, coordinates: bool = False) -> None:
    parser.add_argument("--atlas", help="'A424' or a label NIfTI, for NIfTI inputs")
    parser.add_argument("--atlas-dir", help="folder with the A424 files (default: download and verify them)")
    if coordinates:
        parser.add_argument(
            "--atlas-coordinates",
            help="region coordinates, a `label x y z` table (one row per region): for a custom label NIfTI atlas, "
            "or for parcel tables (a region-window model needs them)",
        )


def _atlas(args: argparse.Namespace):
    """The atlas `--atlas` names: `A424` (from `--atlas-dir` or the verified download), a label NIfTI (with
    `--atlas-coordinates` when given), or None."""
    if not args.atlas:
        return None
    from .data import load_a424, load_atlas
    from .data.atlas import read_coordinate_table

    table = getattr(args, "atlas_coordinates", None)
    if args.atlas == "A424":
        if table:
            raise ValueError(
                "--atlas-coordinates is for a custom atlas or parcel tables: A424 has its own coordinates."
            )
        return load_a424(args.atlas_dir)
    atlas = load_atlas(args.atlas)
    if table:
        labels, atlas.coordinates = read_coordinate_table(table, atlas.num_regions)
        if not (labels == atlas.labels).all():
            raise ValueError(f"{table} does not list the labels of the atlas {args.atlas} in order (label x y z).")
    return atlas


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
    convert.add_argument("--overwrite", action="store_true", help="replace what OUT holds, whole")
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
        overwrite=args.overwrite,
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
    prepare.add_argument(
        "--phenotypes", help="CSV/TSV with a 'subject' or 'id' column (other columns may not be named like a field)"
    )
    prepare.add_argument(
        "--tr", type=_positive_float, help="repetition time in seconds (default: from the NIfTI header)"
    )
    prepare.add_argument("--num-timepoints", type=_positive_int, default=200, help="window length")
    prepare.add_argument(
        "--target-tr",
        type=_positive_float,
        help="TR in seconds of the model's windows (0.735 for the released weights): recordings at another TR are "
        "resampled to it (linear) when windows are cut; needed when the recordings' TRs differ",
    )
    prepare.add_argument(
        "--short-recordings",
        choices=["refuse", "pad"],
        default="refuse",
        help="a recording shorter than one window at that TR: left out (refuse), or kept and padded with its "
        "per-region mean when windows are cut (pad; pretraining streams skip it)",
    )
    prepare.add_argument(
        "--patch-size",
        type=_positive_int,
        help="patch size of the region_window model to train (refuse a window length that is not a multiple of it; "
        "without it a window length the presets' patch size 20 does not divide is warned about)",
    )
    prepare.add_argument("--normalization", default="robust", choices=["robust", "zscore", "none"])
    prepare.add_argument("--split", type=_fraction, nargs=3, default=[0.8, 0.1, 0.1], metavar=("TRAIN", "VAL", "TEST"))
    prepare.add_argument("--seed", type=int, default=0)
    prepare.add_argument("--shard-multiple", type=_positive_int, default=8, help="shard counts are multiples of this")
    prepare.add_argument(
        "--iqr-epsilon",
        type=_positive_float,
        help="robust scaling: regions whose training IQR is below this (empty parcels) are scaled by it instead of "
        "an error; they are recorded in the processor",
    )
    prepare.add_argument(
        "--overwrite", action="store_true", help="replace what OUT holds, whole (never mixed with it)"
    )
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
    if sum(args.split) <= 0:
        raise ValueError(f"--split {' '.join(map(str, args.split))}: the fractions must not all be 0.")
    atlas = _atlas(args)
    summary = prepare_dataset(
        args.inputs,
        args.output_dir,
        atlas=atlas,
        phenotypes=args.phenotypes,
        repetition_time=args.tr,
        num_timepoints=args.num_timepoints,
        normalization=args.normalization,
        splits=dict(zip(("train", "validation", "test"), args.split, strict=True)),
        seed=args.seed,
        shard_multiple=args.shard_multiple,
        patch_size=args.patch_size,
        target_repetition_time=args.target_tr,
        short_recordings=args.short_recordings,
        coordinates=args.atlas_coordinates if atlas is None and args.atlas_coordinates else None,
        overwrite=args.overwrite,
        iqr_epsilon=args.iqr_epsilon,
    )
    for split, numbers in summary["splits"].items():
        print(
            f"{split}: {numbers['recordings']} recordings, {numbers['subjects']} subjects, {numbers['shards']} shards"
        )
    print(f"left out (shorter than {args.num_timepoints} timepoints): {len(summary['too_short'])}")
    if summary["padded"]:
        print(f"kept to be padded (shorter than {args.num_timepoints} timepoints): {len(summary['padded'])}")


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
    embed.add_argument("--batch-size", type=_positive_int, default=16)
    _add_cohort_options(embed)
    embed.add_argument("--device", help="default: cuda when available, else cpu")
    embed.add_argument("--dtype", default="fp32", choices=["fp32", "bf16", "fp16"], help="autocast dtype")
    embed.add_argument("--quiet", action="store_true", help="no progress bar")
    embed.set_defaults(run=_embed)


def _embed(args: argparse.Namespace) -> None:
    import torch

    from .analysis.recording_embeddings import embed_recordings, save_embeddings
    from .data.prepared import shard_atlas
    from .data.recordings import RAW_SUFFIXES, SHARD_SUFFIXES, find_recordings, read_inputs
    from .modeling_brainlm import BrainLMModel

    check_model_path(args.model, "MODEL")
    if args.processor:
        check_model_path(args.processor, "--processor")
    if Path(args.output).suffix not in (".parquet", ".npz"):
        raise ValueError(f"--output {args.output}: the embeddings file must end in .parquet or .npz.")
    _check_output_file(args.output, "--output")
    fix = (
        f"the folder {args.processor} given with --processor must hold it."
        if args.processor
        else "pass the folder that holds it with --processor (e.g. the prepared dataset the model was trained on)."
    )
    location = {key: value for key, value in (("subfolder", args.subfolder), ("revision", args.revision)) if value}
    if args.processor:
        processor = _processor(args.processor, "--processor", fix)
    else:
        processor = _processor(args.model, "MODEL", fix, **location)
    for shard in find_recordings(args.inputs, RAW_SUFFIXES + SHARD_SUFFIXES):
        atlas = shard_atlas(str(shard)) if shard.name.endswith(SHARD_SUFFIXES) else None
        if processor.atlas and atlas and atlas != processor.atlas:
            raise ValueError(
                f"the processor of {args.processor or args.model} is for the atlas {processor.atlas!r}, but {shard} "
                f"holds recordings parcellated with {atlas!r}: embed them with a model and processor of that atlas."
            )
    recordings = _cohort(processor, args, read_inputs(args.inputs, _atlas(args), args.tr))
    named = {r.source: r.series for r in recordings}  # errors name the file
    trs = [r.repetition_time for r in recordings]
    if processor.normalization == "robust" and processor.median is None:
        if not args.fit_processor:
            raise ValueError(
                "The processor uses BrainLM's robust scaling but holds no statistics (the released weights ship "
                "none): pass --fit-processor to fit them on INPUTS, or --processor a folder with a fitted processor."
            )
        processor.fit(list(named.values()), repetition_times=trs)
    model = BrainLMModel.from_pretrained(args.model, **location)
    dtype = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[args.dtype]
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    embeddings = embed_recordings(
        model, processor, named, args.pooling, args.batch_size, device, dtype, progress=not args.quiet,
        layer=args.layer, include_padding_tokens=args.include_padding_tokens, window_policy=args.window_policy,
        repetition_times=trs,
    )  # fmt: skip
    path = save_embeddings(args.output, [r.id for r in recordings], embeddings)
    what = f"{embeddings[0].shape[-1]}-d {args.pooling}"
    print(f"{len(recordings)} recordings -> {what} embeddings ({args.window_policy} windows) in {path}")


def _add_cohort_options(parser) -> None:
    """`--tr` and `--short-recordings`: how recordings reach the model's sampling rate and window length."""
    parser.add_argument(
        "--tr",
        type=_positive_float,
        help="repetition time in seconds of the image and table INPUTS (default: the NIfTI header; tables: unknown, "
        "used as they are); recordings at another TR than the model's are resampled to it (linear)",
    )
    parser.add_argument(
        "--short-recordings",
        choices=["refuse", "pad"],
        help="a recording shorter than one window (after resampling): an error, or one window padded with its "
        "per-region mean, the padding left out of mean pooling (default: the processor's setting, refuse)",
    )


def _cohort(processor, args: argparse.Namespace, recordings: list) -> list:
    """Apply `--short-recordings` to the processor; warn about recordings of unknown TR when the model has one."""
    if args.short_recordings:
        processor.short_recordings = args.short_recordings
    unknown = [r.source for r in recordings if r.repetition_time is None]
    if processor.repetition_time is not None and unknown:
        warnings.warn(
            f"{len(unknown)} of {len(recordings)} inputs have no known TR ({unknown[0]}, ...): they are used as "
            f"sampled at the model's TR, {processor.repetition_time} s; pass --tr to resample them.",
            stacklevel=2,
        )
    resampled = sum(processor.needs_resampling(r.repetition_time) for r in recordings)
    if resampled:
        print(f"{resampled} recordings resampled to the model's TR of {processor.repetition_time} s (linear)")
    return recordings


def _check_output_file(path: str, option: str) -> None:
    """An output file: refuse a folder in its place, or a file where one of its folders should be."""
    file = Path(os.path.expanduser(path))
    if file.is_dir():
        raise IsADirectoryError(f"{option} {path} is a folder: give a file name.")
    for parent in file.parents:
        if parent.exists():
            if not parent.is_dir():
                raise NotADirectoryError(f"{option} {path}: {parent} is a file, not a folder.")
            break


def _add_attention(commands) -> None:
    attention = commands.add_parser(
        "attention",
        help="CLS attention per region and network of a checkpoint on recordings, with figures",
        description="CHECKPOINT is a folder or Hub id with the model and its processor (or an original BrainLM "
        "checkpoint, or a short name such as brainlm-111m); INPUTS are parcel tables (T, V) "
        "(.npy/.csv/.tsv/.dat) or prepared Parquet shards or split folders (e.g. prepared/test).",
    )
    attention.add_argument("checkpoint", metavar="CHECKPOINT")
    attention.add_argument("inputs", metavar="INPUTS", nargs="+")
    attention.add_argument("output_dir", metavar="OUT")
    attention.add_argument("--layers", type=int, nargs="+", help="encoder layers to average (default: all)")
    attention.add_argument("--stride", type=_positive_int, help="timepoints between windows (default: one window)")
    attention.add_argument(
        "--networks", choices=["a424", "aal2-lobes", "none"], default="none", help="region-to-network grouping"
    )
    attention.add_argument("--atlas-dir", help="A424 labels table or its folder (default: download and verify it)")
    attention.add_argument(
        "--tr",
        type=_positive_float,
        help="repetition time in seconds of table INPUTS (shards carry theirs); recordings at another TR than the "
        "model's are resampled to it (linear)",
    )
    attention.set_defaults(run=_attention)


def _attention(args: argparse.Namespace) -> None:
    from .analysis.attention_report import analyze_attention
    from .data import load_a424_networks
    from .data.demo import aal2_lobes
    from .data.recordings import read_inputs
    from .modeling_brainlm import BrainLMModel

    check_model_path(args.checkpoint, "CHECKPOINT")
    if Path(args.output_dir).exists() and not Path(args.output_dir).is_dir():
        raise NotADirectoryError(f"OUT {args.output_dir} is a file, not a folder.")
    processor = _processor(
        args.checkpoint,
        "CHECKPOINT",
        "save the processor of the model there (BrainLMFeatureExtractor.save_pretrained).",
    )
    networks = None
    if args.networks == "a424":
        networks = load_a424_networks(args.atlas_dir)
    elif args.networks == "aal2-lobes":
        if not processor.region_names:
            raise ValueError("--networks aal2-lobes needs the AAL2 region names in the checkpoint's processor.")
        networks = aal2_lobes(processor.region_names)
    model = BrainLMModel.from_pretrained(args.checkpoint).eval()
    recordings = read_inputs(args.inputs, repetition_time=args.tr)
    report = analyze_attention(
        model, processor, {r.id: r.series for r in recordings}, args.output_dir, networks, args.layers, args.stride,
        repetition_times={r.id: r.repetition_time for r in recordings},
    )  # fmt: skip
    if networks is not None:
        ranked = sorted(zip(report["network_names"], report["network_scores"], strict=True), key=lambda x: -x[1])
        print("networks: " + ", ".join(f"{name} {score:.4f}" for name, score in ranked))
    print(f"Wrote region_scores.csv, attention.json and {len(report['figures'])} figures to {args.output_dir}")


if __name__ == "__main__":
    main()
