# Copyright 2026 The brainlm_hf authors. Licensed under the Apache License, Version 2.0.
"""Whole-recording reconstruction: masked windows slid over a long recording, predictions stitched back together.

Notation: V regions, T timepoints of the recording, W windows of `processor.num_timepoints` (Tw) timepoints.

Windows start every `stride` timepoints (default: one window, no overlap) and one more window ends at the last
timepoint, so that every timepoint is covered. Stitching rule: a timepoint masked in at least one window is
predicted by the mean of the predictions of the windows that masked it (a prediction never sees the value it
predicts); any other timepoint by the mean over all windows that cover it (the model's reconstruction of visible
input). The stitched mask is 1 where at least one window masked the timepoint. Models run in eval mode on their
device and dtype (`brainlm_hf.inference.map_windows`); results come back as numpy.
"""

from dataclasses import dataclass

import numpy as np
import torch

from ..errors import InvalidArgumentError
from ..feature_extraction_brainlm import BrainLMFeatureExtractor
from ..inference import map_windows
from ..metrics import masked_reconstruction_metrics
from ..modeling_brainlm import BrainLMForMaskedSignalModeling


def predict_windows(
    model: BrainLMForMaskedSignalModeling,
    processor: BrainLMFeatureExtractor,
    recording: np.ndarray,
    starts: list[int],
    mask_ratio: float,
    mask_strategy: str | None = None,
    seed: int = 0,
    batch_size: int = 8,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """
    Cut a raw `(T, V)` recording (atlas order) into the processor's windows at `starts`, run `model` on them with a
    mask drawn from `seed`, and return the normalised windows, the predictions and the masks (1 = masked), each
    `(W, V, Tw)` in atlas order.
    """
    if not hasattr(model, "decoder"):
        raise InvalidArgumentError(
            "Reconstruction needs the decoder: load the checkpoint with AutoModelForPreTraining.", argument="model"
        )
    windows, _ = processor.windows([recording], starts=lambda num_timepoints: starts)  # (W, V, Tw), model order
    noise = torch.rand(
        len(starts), model.num_tokens(*windows.shape[1:]), generator=torch.Generator().manual_seed(seed)
    )

    def reconstruct(batch, xyz, rows):
        out = model(batch, xyz, noise=noise[rows].to(batch.device), mask_ratio=mask_ratio, mask_strategy=mask_strategy)
        return out.logits, model.mask_to_signal(out.mask)

    predictions, masks = map_windows(model, windows, processor.model_coordinates(), reconstruct, batch_size)
    return tuple(processor.to_atlas_order(x) for x in (windows, predictions, masks))


def stitch(predictions, masks, starts: list[int], num_timepoints: int) -> tuple[np.ndarray, np.ndarray]:
    """Window predictions and masks `(W, V, Tw)` -> recording prediction `(V, T)` and mask `(V, T)` (module rule)."""
    shape = (predictions.shape[1], num_timepoints)
    total, count, masked_total, masked_count = (np.zeros(shape) for _ in range(4))
    for prediction, mask, start in zip(predictions, masks, starts, strict=True):
        span = slice(start, start + prediction.shape[-1])
        total[:, span] += prediction
        count[:, span] += 1
        masked_total[:, span] += prediction * mask
        masked_count[:, span] += mask
    if (count == 0).any():
        raise InvalidArgumentError(
            "The windows do not cover every timepoint; place them with processor.window_starts.", argument="starts"
        )
    stitched = np.where(masked_count > 0, masked_total / np.maximum(masked_count, 1), total / count)
    return stitched, masked_count > 0


@dataclass
class Reconstruction:
    """
    A stitched whole-recording reconstruction (atlas order): `signal` `(V, T)` the normalised recording,
    `prediction` `(V, T)`, `mask` `(V, T)` bool (masked in at least one window), `starts` the window starts.
    """

    signal: np.ndarray
    prediction: np.ndarray
    mask: np.ndarray
    starts: list[int]

    def metrics(self) -> dict:
        """Masked-timepoint MSE, R^2 and Pearson r overall (`masked_reconstruction_metrics`) and per region."""
        return {
            "overall": masked_reconstruction_metrics(self.prediction, self.signal, self.mask),
            "per_region": {k: v.tolist() for k, v in region_metrics(self.prediction, self.signal, self.mask).items()},
        }


def reconstruct_recording(
    model: BrainLMForMaskedSignalModeling,
    processor: BrainLMFeatureExtractor,
    recording: np.ndarray,
    mask_ratio: float = 0.5,
    mask_strategy: str | None = None,
    stride: int | None = None,
    seed: int = 0,
    batch_size: int = 8,
    repetition_time: float | None = None,
) -> Reconstruction:
    """
    Reconstruct a whole `(T, V)` recording (atlas order, raw: `processor` normalises it) from windows masked with
    `mask_ratio` and `mask_strategy` (default the model's), placed and stitched as the module docstring says. A
    recording whose `repetition_time` differs from the processor's is resampled to it first: the reconstruction is
    on the model's time grid.
    """
    recording = processor.resample(recording, repetition_time)
    starts = processor.window_starts(len(recording), stride)
    _, predictions, masks = predict_windows(
        model, processor, recording, starts, mask_ratio, mask_strategy, seed, batch_size
    )
    prediction, mask = stitch(predictions, masks, starts, len(recording))
    return Reconstruction(processor.normalize(recording).T, prediction, mask, starts)


def region_metrics(prediction, target, mask) -> dict[str, np.ndarray]:
    """
    MSE, R^2 (around each region's mean masked target) and Pearson r of each region over its masked timepoints.
    Inputs `(V, T)`; outputs `(V,)`, NaN for a region with fewer than 2 masked timepoints.
    """
    mask = np.asarray(mask, dtype=bool)
    count = mask.sum(-1)
    valid = count >= 2
    n = np.maximum(count, 1)
    p, y = np.where(mask, prediction, 0.0), np.where(mask, target, 0.0)
    p_centered = np.where(mask, prediction - p.sum(-1, keepdims=True) / n[:, None], 0.0)
    y_centered = np.where(mask, target - y.sum(-1, keepdims=True) / n[:, None], 0.0)
    sse, sst = ((p - y) ** 2).sum(-1), (y_centered**2).sum(-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        r2 = 1 - sse / sst
        pearson = (p_centered * y_centered).sum(-1) / np.sqrt((p_centered**2).sum(-1) * sst)
    return {
        "mse": np.where(valid, sse / n, np.nan),
        "r2": np.where(valid, r2, np.nan),
        "pearson_r": np.where(valid, pearson, np.nan),
    }
