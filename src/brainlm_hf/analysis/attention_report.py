# Copyright 2026 The brainlm_hf authors. Licensed under the Apache License, Version 2.0.
"""Attention analysis of whole recordings, as `brainlm attention` runs it: scores, tables and figures in a folder.

Notation: R recordings, V regions (atlas order), Tw timepoints of a window, K networks.
"""

import csv
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..arguments import check_choice, check_positive, positional
from ..errors import InvalidArgumentError
from ..feature_extraction_brainlm import BrainLMFeatureExtractor
from ..folders import output_folder
from ..modeling_brainlm import BrainLMPreTrainedModel
from .attention_maps import network_scores, recording_attention
from .figures import plot_attention_heatmap, plot_glass_brain, plot_network_bars

NETWORK_GROUPINGS = ("a424", "aal2-lobes", "none")  # region -> network: A424's networks, AAL2's lobes, or none


@dataclass
class AttentionArguments:
    """What `brainlm attention` reads (a checkpoint, recordings) and how it groups and writes the CLS attention."""

    checkpoint: str = positional(
        "a folder or Hub id with the model and its processor (or an original BrainLM checkpoint, or a short name such "
        "as brainlm-111m)",
        "CHECKPOINT",
    )
    inputs: list[str] = positional(
        "parcel tables (T, V) (.npy/.csv/.tsv/.dat) or prepared Parquet shards or split folders (e.g. prepared/test)",
        "INPUTS",
    )
    output_dir: str = positional(
        "the folder of region_scores.csv, attention.json and the figures (new or empty, or replaced whole with "
        "--overwrite)",
        "OUT",
    )
    layers: list[int] | None = field(default=None, metadata={"help": "encoder layers to average (default: all)"})
    stride: int | None = field(default=None, metadata={"help": "timepoints between windows (default: one window)"})
    networks: str = field(
        default="none", metadata={"choices": NETWORK_GROUPINGS, "help": "region-to-network grouping"}
    )
    atlas_dir: str | None = field(
        default=None, metadata={"help": "A424 labels table or its folder (default: download and verify it)"}
    )
    repetition_time: float | None = field(
        default=None,
        metadata={
            "aliases": ["--tr"],
            "help": "repetition time in seconds of table INPUTS (shards carry theirs); recordings at another TR than "
            "the model's are resampled to it (linear)",
        },
    )
    overwrite: bool = field(
        default=False, metadata={"help": "replace what OUT holds, whole (an earlier report is never mixed with it)"}
    )
    quiet: bool = field(default=False, metadata={"help": "no progress bar and no summary line"})

    def __post_init__(self):
        check_positive(self, "stride", integer=True, optional=True)
        check_positive(self, "repetition_time", optional=True)
        check_choice(self, "networks", NETWORK_GROUPINGS)


def analyze_attention(
    model: BrainLMPreTrainedModel,
    processor: BrainLMFeatureExtractor,
    recordings: dict[str, np.ndarray],
    output_dir,
    networks: list[str] | None = None,
    layers=None,
    stride: int | None = None,
    batch_size: int = 8,
    repetition_times: dict[str, float | None] | None = None,
    progress=None,
    overwrite: bool = False,
) -> dict:
    """
    CLS attention scores of the recordings per region and, given `networks` (the network of each region, in atlas
    order), per network. Writes to `output_dir`: `region_scores.csv` (per region: name, mean score and one column per
    recording), `network_scores.csv`, `attention.json` (everything, plus the file names of the figures) and the
    figures `attention_networks.png`, `attention_glass_brain.png`, `attention_heatmap.png`. Returns the JSON dict.
    `repetition_times` (the TR of each recording, by key): recordings at another TR than the processor's are
    resampled to it. `progress` (a `brainlm_hf.progress.Progress`) counts the recordings done and their windows.

    `output_dir` must be new or empty (`FolderNotEmptyError` before any work otherwise); `overwrite=True` replaces
    it whole, so that no file of an earlier report (e.g. its `network_scores.csv`) stays beside the new one. The
    report is written into a temporary folder that becomes `output_dir` once complete.
    """
    with output_folder(output_dir, overwrite, "the attention report") as output:
        return _write_report(
            model, processor, recordings, output, networks, layers, stride, batch_size, repetition_times, progress
        )


def report_attention(args: AttentionArguments) -> dict:
    """
    What `brainlm attention` runs: the processor saved with `args.checkpoint`, the network grouping `args.networks`,
    then `analyze_attention` of the recordings `args.inputs` into `args.output_dir`; returns its report (the
    `attention.json` dict). `networks="aal2-lobes"` needs the AAL2 region names in the processor
    (`InvalidArgumentError` otherwise).
    """
    from ..data import aal2_lobes, load_a424_networks
    from ..data.recordings import read_inputs
    from ..modeling_brainlm import BrainLMModel
    from ..progress import Progress
    from .recording_embeddings import load_processor

    processor = load_processor(
        args.checkpoint,
        "checkpoint",
        "save the processor of the model there (BrainLMFeatureExtractor.save_pretrained).",
    )
    networks = None
    if args.networks == "a424":
        networks = load_a424_networks(args.atlas_dir)
    elif args.networks == "aal2-lobes":
        if not processor.region_names:
            raise InvalidArgumentError(
                "networks='aal2-lobes' needs the AAL2 region names in the checkpoint's processor.",
                argument="networks",
            )
        networks = aal2_lobes(processor.region_names)
    model = BrainLMModel.from_pretrained(args.checkpoint).eval()
    recordings = read_inputs(args.inputs, repetition_time=args.repetition_time)
    with Progress("attention", len(recordings), quiet=args.quiet) as progress:
        return analyze_attention(
            model, processor, {r.id: r.series for r in recordings}, args.output_dir, networks, args.layers,
            args.stride, repetition_times={r.id: r.repetition_time for r in recordings}, progress=progress,
            overwrite=args.overwrite,
        )  # fmt: skip


def _write_report(
    model, processor, recordings, output: Path, networks, layers, stride, batch_size, repetition_times, progress
):
    """`analyze_attention` into the folder `output`."""
    per_recording, mean_map = recording_attention(
        model, processor, recordings, layers, stride, batch_size, repetition_times, progress
    )
    names = processor.region_names or [f"region {i}" for i in range(per_recording.shape[1])]
    mean_scores = per_recording.mean(0)
    _write_table(output / "region_scores.csv", ["region", "mean", *recordings], names, mean_scores, per_recording)
    report = {
        "recordings": list(recordings),
        "layers": "all" if layers is None else list(layers),
        "region_names": names,
        "region_scores": mean_scores.tolist(),
        "region_scores_per_recording": per_recording.tolist(),
        "figures": {},
    }
    if networks is not None:
        network_names, per_network = network_scores(per_recording, networks)  # (R, K)
        header = ["network", "mean", *recordings]
        _write_table(output / "network_scores.csv", header, network_names, per_network.mean(0), per_network)
        report.update(network_names=network_names, network_scores=per_network.mean(0).tolist())
        report["figures"]["networks"] = plot_network_bars(
            network_names, per_network.mean(0), output / "attention_networks.png", errors=per_network.std(0)
        ).name
    if processor.coordinates is not None:
        report["figures"]["glass_brain"] = plot_glass_brain(
            processor.coordinates, mean_scores, output / "attention_glass_brain.png"
        ).name
    report["figures"]["heatmap"] = plot_attention_heatmap(
        mean_map, output / "attention_heatmap.png", names, processor.repetition_time
    ).name
    (output / "attention.json").write_text(json.dumps(report, indent=2))
    return report


def _write_table(path: Path, header: list[str], names: list[str], mean, per_recording) -> None:
    """One row per region or network: name, mean score, one score per recording (`per_recording` `(R, n)`)."""
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        for i, name in enumerate(names):
            writer.writerow([name, f"{mean[i]:.6g}", *(f"{v:.6g}" for v in per_recording[:, i])])
