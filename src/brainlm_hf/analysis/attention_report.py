# Copyright 2026 The brainlm_hf authors. Licensed under the Apache License, Version 2.0.
"""Attention analysis of whole recordings, as `brainlm attention` runs it: scores, tables and figures in a folder.

Notation: R recordings, V regions (atlas order), Tw timepoints of a window, K networks.
"""

import csv
import json
from pathlib import Path

import numpy as np
import torch

from ..data.parcellation import load_parcel_series
from ..data.prepare import read_recordings
from .attention_maps import attention_maps, network_scores, region_scores
from .figures import plot_attention_heatmap, plot_glass_brain, plot_network_bars
from .reconstruction import window_starts


def load_recordings(inputs: list[str]) -> dict[str, np.ndarray]:
    """
    Recording id -> `(T, V)` series from parcel tables (`.npy`, `.csv`, `.tsv`, `.dat`, `.txt`; id = file name
    without suffix) and from prepared Parquet shards (`.parquet` files, or a split folder holding them such as
    `prepared/test`; ids from the shards).
    """
    recordings = {}
    for item in map(Path, inputs):
        if item.is_dir():
            shards = sorted(item.glob("*.parquet"))
            if not shards:
                raise ValueError(f"{item} holds no .parquet shards: give a prepared split folder or parcel tables.")
            found = [pair for shard in shards for pair in _shard_recordings(shard)]
        elif item.suffix == ".parquet":
            found = _shard_recordings(item)
        else:
            found = [(item.stem, load_parcel_series(item))]
        for name, series in found:
            if name in recordings:
                raise ValueError(f"Two inputs give the recording id {name!r}; rename one of them.")
            recordings[name] = series
    if not recordings:
        raise ValueError("No recordings given.")
    return recordings


def _shard_recordings(shard: Path) -> list[tuple[str, np.ndarray]]:
    """(id, `(T, V)` series) of every row of a prepared Parquet shard."""
    return [(record["id"], record["series"]) for record in read_recordings(str(shard))]


def window_attention(
    model, processor, recording, layers=None, stride: int | None = None, batch_size: int = 8
) -> np.ndarray:
    """
    Region x time CLS attention `(W, V, Tw)` (atlas order) of the windows of one raw `(T, V)` recording, placed as in
    `reconstruction.window_starts`, averaged over the chosen layers and all heads.
    """
    coordinates = processor.model_coordinates()
    coordinates = None if coordinates is None else torch.from_numpy(coordinates)
    signal = processor.normalize(recording).T  # (V, T), atlas order
    starts = window_starts(signal.shape[1], processor.num_timepoints, stride)
    windows = processor.to_model_order(np.stack([signal[:, s : s + processor.num_timepoints] for s in starts]))
    maps = attention_maps(model, torch.from_numpy(windows), coordinates, layers, batch_size)  # (W, V, Tw)
    return processor.to_atlas_order(maps)


def recording_attention(
    model, processor, recordings: dict[str, np.ndarray], layers=None, stride: int | None = None, batch_size: int = 8
) -> tuple[np.ndarray, np.ndarray]:
    """
    Region scores per recording `(R, V)` (mean over its windows, see `window_attention`) and the region x time map
    `(V, Tw)` averaged over all windows of all recordings, both in atlas order.
    """
    maps = [window_attention(model, processor, r, layers, stride, batch_size) for r in recordings.values()]
    scores = np.stack([region_scores(m).mean(0) for m in maps])
    return scores, np.concatenate(maps).mean(0)


def analyze_attention(
    model,
    processor,
    recordings: dict[str, np.ndarray],
    output_dir,
    networks: list[str] | None = None,
    layers=None,
    stride: int | None = None,
    batch_size: int = 8,
) -> dict:
    """
    CLS attention scores of the recordings per region and, given `networks` (the network of each region, in atlas
    order), per network. Writes to `output_dir`: `region_scores.csv` (per region: name, mean score and one column per
    recording), `network_scores.csv`, `attention.json` (everything, plus the file names of the figures) and the
    figures `attention_networks.png`, `attention_glass_brain.png`, `attention_heatmap.png`. Returns the JSON dict.
    """
    output = Path(output_dir)
    output.mkdir(parents=True, exist_ok=True)
    per_recording, mean_map = recording_attention(model, processor, recordings, layers, stride, batch_size)
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
