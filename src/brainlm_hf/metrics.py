# Copyright 2026 The brainlm_hf authors. Licensed under the Apache License, Version 2.0.
"""Reconstruction metrics on masked timepoints, and the two model-free baselines they are compared with.

All metrics pool every masked value of the evaluation set (the paper evaluates on masked tokens):
`mse = mean((prediction - target)^2)`, `r2 = 1 - SSE / SST` with `SST` taken around the mean of the pooled masked
targets, and `pearson_r` the correlation of the pooled masked predictions and targets. The same functions back the
`evaluate` module shipped in the package (`evaluate.load(brainlm_hf.metrics.EVALUATE_MODULE)`, offline).
"""

from pathlib import Path

import numpy as np

EVALUATE_MODULE = str(Path(__file__).parent / "evaluate_modules" / "brain_reconstruction")


def masked_reconstruction_metrics(prediction, target, mask) -> dict[str, float]:
    """
    Args:
        prediction, target (array-like of shape `(B, V, T)`): reconstruction and true signal.
        mask (array-like of shape `(B, V, T)`): 1 where the timepoint was masked (only these are scored).

    Returns `{"mse", "r2", "pearson_r", "num_masked"}`.
    """
    prediction, target, mask = (np.asarray(x, dtype=np.float64) for x in (prediction, target, mask))
    if not prediction.shape == target.shape == mask.shape:
        raise ValueError(f"Shapes differ: prediction {prediction.shape}, target {target.shape}, mask {mask.shape}.")
    selected = mask.astype(bool)
    if not selected.any():
        raise ValueError("The mask selects no timepoint: nothing to score.")
    p, y = prediction[selected], target[selected]
    sse, sst = np.sum((p - y) ** 2), np.sum((y - y.mean()) ** 2)
    pearson = np.corrcoef(p, y)[0, 1] if p.std() > 0 and y.std() > 0 else float("nan")
    return {
        "mse": float(sse / len(y)),
        "r2": float(1 - sse / sst),
        "pearson_r": float(pearson),
        "num_masked": int(len(y)),
    }


def baseline_predictions(signal, mask) -> dict[str, np.ndarray]:
    """
    Model-free reconstructions of the masked timepoints from the visible ones of the same region and window:
    `region_mean` (the mean of the visible timepoints; 0 when none is visible) and `linear_interpolation` (in time,
    constant beyond the first and last visible timepoints). Both `(B, V, T)`.
    """
    signal, visible = np.asarray(signal, dtype=np.float64), ~np.asarray(mask, dtype=bool)
    count = visible.sum(-1, keepdims=True)
    region_mean = np.where(count > 0, (signal * visible).sum(-1, keepdims=True) / np.maximum(count, 1), 0.0)
    interpolated = np.broadcast_to(region_mean, signal.shape).copy()
    time = np.arange(signal.shape[-1])
    for index in np.ndindex(signal.shape[:-1]):
        seen = visible[index]
        if seen.any():
            interpolated[index] = np.interp(time, time[seen], signal[index][seen])
    return {"region_mean": np.broadcast_to(region_mean, signal.shape), "linear_interpolation": interpolated}
