# Copyright 2026 The brainlm_hf authors. Licensed under the Apache License, Version 2.0.
"""Metrics: reconstruction on masked timepoints (with the two model-free baselines it is compared with), and the
per-recording regression and classification metrics of fine-tuning and of the clinical benchmark.

Arguments whose order matters are keyword-only (`predictions=`, `targets=`, `scores=`, `labels=`): R^2 is not
symmetric, so a swapped call must not be possible.

Reconstruction metrics pool every masked value of the evaluation set (the paper evaluates on masked tokens):
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
    return {
        "mse": float(sse / len(y)),
        "r2": float(1 - sse / sst),
        "pearson_r": _pearson(p, y),
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


def regression_metrics(*, predictions, targets) -> dict[str, float]:
    """
    Args:
        predictions, targets (array-like of shape `(R,)` or `(R, D)`): one row per recording, D targets.

    Returns `mse`, `mae`, `r2` (`1 - SSE / SST` around the targets' mean) and `pearson_r`, each averaged over the
    targets, plus `<metric>_<d>` per target when D > 1.
    """
    predictions, targets = (np.asarray(x, dtype=np.float64) for x in (predictions, targets))
    predictions, targets = predictions.reshape(len(predictions), -1), targets.reshape(len(targets), -1)
    if predictions.shape != targets.shape:
        raise ValueError(f"Shapes differ: predictions {predictions.shape}, targets {targets.shape}.")
    error = predictions - targets
    per_target = {
        "mse": np.mean(error**2, 0),
        "mae": np.mean(np.abs(error), 0),
        "r2": 1 - np.sum(error**2, 0) / np.sum((targets - targets.mean(0)) ** 2, 0),
        "pearson_r": np.array([_pearson(predictions[:, d], targets[:, d]) for d in range(targets.shape[1])]),
    }
    result = {name: float(values.mean()) for name, values in per_target.items()}
    if targets.shape[1] > 1:
        result.update({f"{name}_{d}": float(v) for name, values in per_target.items() for d, v in enumerate(values)})
    return result


def classification_metrics(*, scores, labels) -> dict[str, float]:
    """
    Args:
        scores (array-like of shape `(R, C)`): class scores on any monotonic scale (logits or probabilities), C >= 2.
        labels (array-like of shape `(R,)`): class indices.

    Returns `accuracy`, `balanced_accuracy` (mean recall over the classes present) and `auroc` (binary: the
    probability that a positive outranks a negative, ties counting half; multi-class: the mean one-vs-rest AUROC
    over classes that have both positives and negatives).
    """
    logits, labels = np.asarray(scores, dtype=np.float64), np.asarray(labels).astype(int).reshape(-1)
    if logits.ndim != 2 or logits.shape[0] != len(labels) or logits.shape[1] < 2:
        raise ValueError(f"Expected scores (R, C >= 2) and labels (R,), got {logits.shape} and {labels.shape}.")
    predicted = logits.argmax(1)
    present = np.unique(labels)
    recalls = [np.mean(predicted[labels == c] == c) for c in present]
    if logits.shape[1] == 2:
        auroc = _auroc(logits[:, 1] - logits[:, 0], labels == 1)
    else:
        scores = [_auroc(logits[:, c], labels == c) for c in range(logits.shape[1])]
        auroc = float(np.nanmean(scores)) if not np.all(np.isnan(scores)) else float("nan")
    return {
        "accuracy": float(np.mean(predicted == labels)),
        "balanced_accuracy": float(np.mean(recalls)),
        "auroc": auroc,
    }


def _pearson(x: np.ndarray, y: np.ndarray) -> float:
    return float(np.corrcoef(x, y)[0, 1]) if x.std() > 0 and y.std() > 0 else float("nan")


def _auroc(scores: np.ndarray, positive: np.ndarray) -> float:
    """Mann-Whitney AUROC: P(positive score > negative score) + P(tie) / 2; NaN when only one class is present."""
    negatives = np.sort(scores[~positive])
    if not positive.any() or not len(negatives):
        return float("nan")
    below = np.searchsorted(negatives, scores[positive], side="left")  # negatives strictly below each positive
    ties = np.searchsorted(negatives, scores[positive], side="right") - below
    return float((below + ties / 2).sum() / (positive.sum() * len(negatives)))
