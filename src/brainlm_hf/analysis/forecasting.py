# Copyright 2026 The brainlm_hf authors. Licensed under the Apache License, Version 2.0.
"""Forecasting future brain states from the past, against three model-free baselines, scored by horizon.

Notation: W windows, V regions, P past timepoints, H forecast horizon (timepoints).

Each window of a recording is masked with the `forecast` strategy (the last `ceil(mask_ratio * N)` windows of every
region; converted 111M/650M checkpoints: the original `predict_last` tile columns), so the model predicts the last H
timepoints from the first P. Baselines use the same past of each region: `persistence` (the last past value),
`autoregressive` (an AR(p) model with intercept fitted by least squares on that region's past, iterated H steps) and
`region_mean` (the mean of the past). To fine-tune a checkpoint for forecasting, continue pretraining with the
strategy: `brainlm pretrain --model CHECKPOINT --mask_strategy forecast --mask_ratio 0.2 --dataset D --output_dir O`.
"""

from dataclasses import dataclass

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from ..errors import InvalidArgumentError
from ..feature_extraction_brainlm import BrainLMFeatureExtractor
from ..metrics import masked_reconstruction_metrics
from ..modeling_brainlm import BrainLMForMaskedSignalModeling
from .reconstruction import predict_windows


@dataclass
class Forecast:
    """Per window, atlas order: `past` `(W, V, P)`, `target` and `prediction` `(W, V, H)`, and the window `starts`."""

    past: np.ndarray
    target: np.ndarray
    prediction: np.ndarray
    starts: list[int]

    def metrics(self, ar_order: int = 4) -> dict:
        """`{predictor: {"by_horizon": {"mse": [H], "r2": [H]}, "overall": {...}}}` for the model and baselines."""
        predictors = {"model": self.prediction, **forecast_baselines(self.past, self.target.shape[-1], ar_order)}
        ones = np.ones_like(self.target)
        return {
            name: {
                "by_horizon": horizon_metrics(prediction, self.target),
                "overall": masked_reconstruction_metrics(prediction, self.target, ones),
            }
            for name, prediction in predictors.items()
        }


def forecast_recording(
    model: BrainLMForMaskedSignalModeling,
    processor: BrainLMFeatureExtractor,
    recording: np.ndarray,
    mask_ratio: float = 0.2,
    stride: int | None = None,
    batch_size: int = 8,
    repetition_time: float | None = None,
) -> Forecast:
    """
    Forecast the end of every window of a `(T, V)` recording (atlas order, raw) from its beginning. Windows are
    placed by `processor.window_starts`; the strategy is the layout's forecast strategy (`forecast`; tiles:
    `predict_last`). A recording whose `repetition_time` differs from the processor's is resampled to it first.
    """
    recording = processor.resample(recording, repetition_time)
    starts = processor.window_starts(len(recording), stride)
    windows, predictions, masks = predict_windows(
        model, processor, recording, starts, mask_ratio, model.layout.forecast_strategy, batch_size=batch_size
    )  # (W, V, Tw) each, atlas order
    horizon = int(masks[0, 0].sum())
    expected = np.zeros_like(masks)
    expected[..., expected.shape[-1] - horizon :] = 1
    if horizon == 0 or not np.array_equal(masks, expected):
        raise InvalidArgumentError(
            f"mask_ratio={mask_ratio} does not hide a final block of timepoints in every region; raise it so that "
            "at least one window (tile column) is forecast.",
            argument="mask_ratio",
        )
    past, future = windows[..., :-horizon], windows[..., -horizon:]
    return Forecast(past, future, predictions[..., -horizon:], starts)


def forecast_baselines(past, horizon: int, ar_order: int = 4) -> dict[str, np.ndarray]:
    """
    Model-free forecasts `(..., V, H)` from `past` `(..., V, P)`: `persistence`, `autoregressive` (AR(`ar_order`)
    with intercept, least squares on each series' own past, iterated) and `region_mean` (see the module docstring).
    """
    past = np.asarray(past, dtype=np.float64)
    equations = past.shape[-1] - ar_order
    if ar_order < 1 or equations < ar_order + 1:
        raise InvalidArgumentError(
            f"An AR({ar_order}) fit needs at least {2 * ar_order + 1} past timepoints, got {past.shape[-1]}; lower "
            "ar_order or forecast fewer timepoints.",
            argument="ar_order",
        )
    lags = sliding_window_view(past, ar_order, axis=-1)[..., :-1, :]  # (..., P - p, p): x[j .. j + p - 1]
    design = np.concatenate([lags, np.ones(lags.shape[:-1] + (1,))], axis=-1)  # (..., P - p, p + 1)
    coefficients = np.linalg.pinv(design) @ past[..., ar_order:, None]  # (..., p + 1, 1)
    history, forecasts = past[..., -ar_order:], []
    for _ in range(horizon):
        step = (history[..., None, :] @ coefficients[..., :-1, :])[..., 0, 0] + coefficients[..., -1, 0]
        forecasts.append(step)
        history = np.concatenate([history[..., 1:], step[..., None]], axis=-1)
    shape = past.shape[:-1] + (horizon,)
    return {
        "persistence": np.broadcast_to(past[..., -1:], shape),
        "autoregressive": np.stack(forecasts, axis=-1),
        "region_mean": np.broadcast_to(past.mean(-1, keepdims=True), shape),
    }


def horizon_metrics(prediction, target) -> dict[str, list[float]]:
    """
    MSE and R^2 at each horizon `h` over all windows and regions: `(..., H)` inputs -> `{"mse": [H], "r2": [H]}`,
    R^2 = 1 - SSE_h / SST_h with SST_h around the mean of the targets at horizon h.
    """
    prediction = np.asarray(prediction, dtype=np.float64).reshape(-1, np.shape(target)[-1])
    target = np.asarray(target, dtype=np.float64).reshape(prediction.shape)
    sse = ((prediction - target) ** 2).sum(0)
    sst = ((target - target.mean(0)) ** 2).sum(0)
    return {"mse": (sse / len(target)).tolist(), "r2": (1 - sse / sst).tolist()}
