# Copyright 2026 The brainlm_hf authors. Licensed under the Apache License, Version 2.0.
"""
Per-recording embeddings: every recording is normalised by the processor, cut into windows that cover it, embedded by
the encoder without masking in canonical token order (deterministic), pooled per window (`"cls"` or `"mean"`) and
averaged over its windows.

Windows: non-overlapping windows of `processor.num_timepoints` from the start, plus one window aligned to the end when
the length is not a multiple of the window (it overlaps the one before), so that every timepoint is covered. A
recording shorter than one window is an error.
"""

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np
import torch

from ..feature_extraction_brainlm import BrainLMFeatureExtractor
from ..modeling_brainlm import pool_tokens


def window_starts(num_timepoints: int, window: int, stride: int | None = None) -> list[int]:
    """
    Starts of the windows that cover `num_timepoints`: every `stride` (default `window`: no overlap), plus one window
    ending at the last timepoint when the others miss it. A recording shorter than one window is an error.
    """
    if num_timepoints < window:
        raise ValueError(
            f"A recording of {num_timepoints} timepoints is shorter than one window of {window}: leave it out or use "
            "a processor with a shorter num_timepoints (a multiple of the model's patch_size)."
        )
    if stride is not None and stride < 1:
        raise ValueError(f"stride must be a positive number of timepoints, got {stride}.")
    starts = list(range(0, num_timepoints - window + 1, stride or window))
    if starts[-1] + window < num_timepoints:
        starts.append(num_timepoints - window)
    return starts


def recording_windows(
    processor: BrainLMFeatureExtractor, recordings, starts: Callable[[int], Sequence[int]] | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """
    Recordings `(T_i, V)` in atlas order -> windows `(W, V, num_timepoints)` in model order (normalised, float32) and
    the recording index of each window `(W,)`. `starts(T_i)` gives each recording's window starts; by default the
    covering windows of `window_starts`.
    """
    length = processor.num_timepoints
    starts = starts or (lambda num_timepoints: window_starts(num_timepoints, length))
    windows, owners = [], []
    for index, recording in enumerate(recordings):
        series = processor.normalize(np.asarray(recording), f"recording {index}")  # (T, V)
        for start in starts(len(series)):
            windows.append(processor.to_model_order(series[start : start + length].T))
            owners.append(index)
    return np.stack(windows).astype(np.float32, copy=False), np.asarray(owners)


def average_by_recording(values: np.ndarray, owners: np.ndarray, num_recordings: int) -> np.ndarray:
    """Mean of the rows of `values` `(W, D)` per recording index in `owners` `(W,)` -> `(R, D)`."""
    sums = np.zeros((num_recordings, values.shape[1]), dtype=np.float64)
    np.add.at(sums, owners, values)
    return (sums / np.bincount(owners, minlength=num_recordings)[:, None]).astype(np.float32)


@torch.no_grad()
def embed_windows(
    model,
    signal_values: np.ndarray,
    coordinates: np.ndarray | None,
    pooling: str = "cls",
    batch_size: int = 16,
    device: str | torch.device | None = None,
    dtype: torch.dtype | None = None,
    progress: bool = False,
) -> np.ndarray:
    """
    Windows `(W, V, T)` (normalised, model order) -> pooled embeddings `(W, H)` float32, without masking.

    `model` is any BrainLM model (its encoder is used). `device` defaults to the model's; `dtype` (e.g.
    `torch.bfloat16`) runs the encoder under autocast on that device.
    """
    encoder = model.base_model
    device = torch.device(device) if device is not None else encoder.device
    encoder = encoder.to(device).eval()
    xyz = torch.from_numpy(np.asarray(coordinates, dtype=np.float32)).to(device) if coordinates is not None else None
    starts = range(0, len(signal_values), batch_size)
    if progress:
        from tqdm.auto import tqdm

        starts = tqdm(starts, desc="embedding", unit="batch")
    pooled = []
    for start in starts:
        batch = torch.from_numpy(signal_values[start : start + batch_size]).to(device)  # (b, V, T)
        with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            outputs = encoder(batch, xyz)
            pooled.append(pool_tokens(encoder, outputs, batch.shape, pooling).float().cpu())  # (b, H)
    return torch.cat(pooled).numpy()


def embed_recordings(
    model,
    processor: BrainLMFeatureExtractor,
    recordings: Sequence[np.ndarray] | Mapping[str, np.ndarray],
    pooling: str = "cls",
    batch_size: int = 16,
    device: str | torch.device | None = None,
    dtype: torch.dtype | None = None,
    progress: bool = False,
) -> np.ndarray:
    """
    One embedding per recording: `(R, H)` float32, the mean over the recording's covering windows of the pooled
    encoder output (see the module docstring). `recordings` are raw `(T_i, V)` arrays in atlas order (a list, or a
    dict whose values are taken in order); `processor` normalises them and sets the region order, coordinates and
    window length. Deterministic, and independent of `batch_size` up to float rounding.
    """
    recordings = list(recordings.values()) if isinstance(recordings, Mapping) else list(recordings)
    if not recordings:
        raise ValueError("embed_recordings needs at least one recording.")
    windows, owners = recording_windows(processor, recordings)
    pooled = embed_windows(
        model, windows, processor.model_coordinates(), pooling, batch_size, device, dtype, progress
    )  # (W, H)
    return average_by_recording(pooled, owners, len(recordings))


def save_embeddings(path, ids: Sequence[str], embeddings: np.ndarray) -> Path:
    """Write `(R, H)` embeddings with their recording ids: `.parquet` (columns `id`, `embedding`) or `.npz`."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = Path(path)
    if len(ids) != len(embeddings):
        raise ValueError(f"{len(ids)} ids for {len(embeddings)} embeddings.")
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".parquet":
        values = pa.array(list(np.asarray(embeddings, dtype=np.float32)), type=pa.list_(pa.float32()))
        pq.write_table(pa.table({"id": list(ids), "embedding": values}), path)
    elif path.suffix == ".npz":
        np.savez(path, ids=np.asarray(ids), embeddings=np.asarray(embeddings, dtype=np.float32))
    else:
        raise ValueError(f"Unknown embedding file type {path.suffix!r}: use .parquet or .npz.")
    return path


__all__ = ["embed_recordings", "embed_windows", "recording_windows", "save_embeddings", "window_starts"]
