# Copyright 2026 The brainlm_hf authors. Licensed under the Apache License, Version 2.0.
"""
Per-recording embeddings: every recording is cut into windows by the processor (`BrainLMFeatureExtractor.windows`:
normalised, covering every timepoint, one window aligned to the end when the length is not a multiple of the
window), embedded by the encoder without masking in canonical token order (deterministic), pooled per window
(`"cls"` or `"mean"`) and averaged over its windows. A recording shorter than one window is an error.
"""

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch

from ..feature_extraction_brainlm import BrainLMFeatureExtractor
from ..inference import average_by_recording, map_windows
from ..modeling_brainlm import BrainLMPreTrainedModel


def embed_windows(
    model: BrainLMPreTrainedModel,
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
    num_regions, num_timepoints = signal_values.shape[1:]

    def pooled(batch, xyz, rows):
        return encoder.pool(encoder(batch, xyz), num_regions, num_timepoints, pooling)  # (b, H)

    return map_windows(encoder, signal_values, coordinates, pooled, batch_size, device, dtype, progress)


def embed_recordings(
    model: BrainLMPreTrainedModel,
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
    dict whose values are taken in order and whose keys name them in errors); `processor` normalises them and sets
    the region order, coordinates and window length. Deterministic, and independent of `batch_size` up to float
    rounding.
    """
    named = dict(recordings) if isinstance(recordings, Mapping) else None  # keys name recordings in errors
    recordings = list(named.values()) if named is not None else list(recordings)
    if not recordings:
        raise ValueError("embed_recordings needs at least one recording.")
    windows, owners = processor.windows(named if named is not None else recordings)  # (W, V, T), (W,)
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


__all__ = ["embed_recordings", "embed_windows", "save_embeddings"]
