# Copyright 2026 The brainlm_hf authors. Licensed under the Apache License, Version 2.0.
"""Running a model over many windows: batches on a device, optional autocast, results back as numpy.

Notation: W windows, V regions, T timepoints of a window, R recordings.
"""

from collections.abc import Callable

import numpy as np
import torch

from .errors import InvalidArgumentError, InvalidInputError
from .modeling_brainlm import BrainLMPreTrainedModel

# One batch: (model inputs `(b, V, T)`, coordinates `(V, 3)` or None, the rows of the batch) -> tensor(s) per window
BatchStep = Callable[[torch.Tensor, torch.Tensor | None, slice], torch.Tensor | tuple[torch.Tensor, ...]]


@torch.no_grad()
def map_windows(
    model: BrainLMPreTrainedModel,
    windows: np.ndarray,
    coordinates: np.ndarray | None,
    step: BatchStep,
    batch_size: int = 16,
    device: str | torch.device | None = None,
    dtype: torch.dtype | None = None,
    progress: bool = False,
) -> np.ndarray | tuple[np.ndarray, ...]:
    """
    Apply `step` to `windows` `(W, V, T)` (normalised, model order) in batches of `batch_size`, in eval mode
    without gradients.

    `model` is moved to `device` (default: where it is) and put in eval mode; each batch and the `coordinates`
    `(V, 3)` are moved there in the model's dtype. `dtype` (e.g. `torch.bfloat16`) runs `step` under autocast.
    `step(batch, coordinates, rows)` returns a tensor (or a tuple of tensors) with one leading row per window;
    the results are concatenated over batches and returned as float32 numpy arrays (one per returned tensor).
    """
    if batch_size < 1:
        raise InvalidArgumentError(f"batch_size must be at least 1, got {batch_size}.", argument="batch_size")
    if not len(windows):
        raise InvalidInputError("No windows to run the model on.", argument="windows")
    device = torch.device(device) if device is not None else model.device
    model.to(device).eval()
    xyz = None if coordinates is None else torch.as_tensor(coordinates).to(device, model.dtype)
    starts = range(0, len(windows), batch_size)
    if progress:
        from tqdm.auto import tqdm

        starts = tqdm(starts, desc="windows", unit="batch")
    results = []
    for start in starts:
        rows = slice(start, start + batch_size)
        batch = torch.as_tensor(windows[rows]).to(device, model.dtype)  # (b, V, T)
        with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            out = step(batch, xyz, rows)
        results.append(tuple(t.float().cpu() for t in (out if isinstance(out, tuple) else (out,))))
    arrays = tuple(torch.cat(parts).numpy() for parts in zip(*results, strict=True))
    return arrays if isinstance(out, tuple) else arrays[0]


def average_by_recording(values: np.ndarray, owners: np.ndarray, num_recordings: int) -> np.ndarray:
    """Mean of the rows of `values` `(W, D)` per recording index in `owners` `(W,)` -> `(R, D)` float32."""
    sums = np.zeros((num_recordings, values.shape[1]), dtype=np.float64)
    np.add.at(sums, owners, values)
    return (sums / np.bincount(owners, minlength=num_recordings)[:, None]).astype(np.float32)
