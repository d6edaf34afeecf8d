# Copyright 2026 The brainlm_hf authors. Licensed under the Apache License, Version 2.0.
"""
Any brainlm_hf checkpoint as a Brainmarks model (the fMRI foundation-model benchmark, PyPI `brainmarks`).

Brainmarks finds models as modules of its namespace package `brainmarks.models`; brainlm_hf ships one,
`brainmarks/models/brainlm_hf.py`, that registers the constructor `brainlm_hf` below under that name:

    BRAINLM_HF_CHECKPOINT=<folder, Hub id or short name> python -m brainmarks.models.test_models brainlm_hf
    python -m brainmarks.main_logistic brainlm_hf cls <dataset> --overrides model_kwargs.checkpoint=brainlm-111m

The checkpoint is anything `BrainLMModel.from_pretrained` reads: a brainlm_hf folder or Hub repository, an original
BrainLM checkpoint (converted on load), or `brainlm-13m` / `brainlm-111m` / `brainlm-650m` (the default when neither
`checkpoint` nor `$BRAINLM_HF_CHECKPOINT` is given).

Brainmarks gives each sample in the A424 space as `bold` `(T, 424)`, z-scored per region over time, with the `mean`
and `std` `(1, 424)` it removed and the repetition time `tr` (seconds). `BrainmarksTransform` turns it into windows:

1. the signal: a `"zscore"` processor takes Brainmarks' `bold` as its normalised signal (the same per-recording
   z-scoring, population std; regions without signal stay 0 instead of being refused as constant); other
   normalisations start from the signal with the z-scoring undone (`bold * std + mean`: the units of the dataset as
   Brainmarks curated it, e.g. scanner intensities, not UK Biobank's). A `"robust"` processor's statistics are the
   option `statistics`: `"training_split"` (the default) fits median/IQR on the training split, which Brainmarks
   hands to `fit`, and does not clip, as Brainmarks' own BrainLM wrapper does; `"pretraining"` keeps the
   checkpoint's UK Biobank statistics and clip bounds, reached through `unit_conversion` (e.g.
   `"grand_mean_scaling"` for raw BOLD intensities), and the processor warns about each recording mostly clipped.
   The default is the training split: Brainmarks' numbers were measured with it (BrainLM-111M decoded HCP tasks at
   92.5 % with it, at chance without per-parcel normalisation), and a benchmark's curated units are not known to
   match UK Biobank's, whereas the fitted statistics put every dataset on the scale robust scaling expects;
2. the TR: resampled linearly in time to the processor's `repetition_time` when the TR differs from it by at least
   `tr_tolerance` (0.1 s), Brainmarks' own rule and method, by the processor (`BrainLMFeatureExtractor.resample`:
   samples at exact multiples of the model's TR; Brainmarks' `F.interpolate(size=round(T * tr / target))` stretches
   the frames with half-frame alignment instead); a processor without `repetition_time` keeps the data's TR;
3. short recordings (fewer timepoints than one window) are padded at the end with each region's mean, as
   Brainmarks' BrainLM wrapper does (the processor's `short_recordings="pad"`);
4. the windows: `processor.windows` (normalisation, region order, `window_policy` `"covering"` or
   `"non_overlapping"`).

`BrainmarksWrapper` embeds the windows with `analysis.recording_embeddings.embed_windows` (no masking, canonical
token order: deterministic) at the chosen `layer` and returns Brainmarks' `(cls_embeds, reg_embeds, patch_embeds)`:
the CLS row averaged over the windows `(B, 1, H)`, no registers, and the tokens that hold signal of every window
`(B, W * K, H)` (tiles made only of padding are left out). Samples batched together must give the same number of
windows (Brainmarks' datasets have equal lengths).
"""

import os

import numpy as np
import torch
from torch import nn

from ..analysis.recording_embeddings import WINDOW_POLICIES, embed_windows
from ..errors import InvalidArgumentError, UserError
from ..feature_extraction_brainlm import BrainLMFeatureExtractor
from ..modeling_brainlm import BrainLMModel

CHECKPOINT_ENV = "BRAINLM_HF_CHECKPOINT"
DEFAULT_CHECKPOINT = "brainlm-111m"
SPACE = "a424"
NUM_REGIONS = 424
STATISTICS = ("training_split", "pretraining")  # where a robust processor's median/IQR come from
# the processor fields `BrainmarksTransform.fit` sets
FITTED_FIELDS = ("median", "iqr", "iqr_epsilon", "iqr_epsilon_regions", "statistics_source", "clip_low", "clip_high")


class BrainmarksTransform:
    """
    A Brainmarks sample (`bold`, `mean`, `std`, `tr`) -> the same sample with `signal_values` `(W, V, T)` (normalised
    windows in model order) in place of `bold`, `mean` and `std`; see the module docstring.

    Args:
        processor (`BrainLMFeatureExtractor`): the checkpoint's processor (normalisation, region order, window, TR).
        tr_tolerance (`float`, defaults to 0.1): resample when `|tr - processor.repetition_time|` reaches it (s).
        window_policy (`str`, defaults to `"covering"`): `"covering"` or `"non_overlapping"`.
        iqr_epsilon (`float`, defaults to 1e-6): robust scaling of regions whose training IQR is below it (the
            regions Brainmarks' preprocessing zeroed) uses it, as Brainmarks divides by `IQR + 1e-6` (recorded in
            the processor's `iqr_epsilon_regions`); None refuses such regions.
        statistics (`str`, defaults to `"training_split"`): `"training_split"` or `"pretraining"`, see the module
            docstring (robust processors only).
        unit_conversion (`str`, defaults to `"none"`): the processor's `unit_conversion` for the un-normalised
            signal (see `BrainLMFeatureExtractor`).
    """

    def __init__(
        self,
        processor: BrainLMFeatureExtractor,
        tr_tolerance: float = 0.1,
        window_policy: str = "covering",
        iqr_epsilon: float | None = 1e-6,
        statistics: str = "training_split",
        unit_conversion: str = "none",
    ):
        if window_policy not in WINDOW_POLICIES:
            raise InvalidArgumentError(
                f"window_policy must be one of {WINDOW_POLICIES}, got {window_policy!r}.", argument="window_policy"
            )
        if statistics not in STATISTICS:
            raise InvalidArgumentError(
                f"statistics must be one of {STATISTICS}, got {statistics!r}.", argument="statistics"
            )
        if statistics == "pretraining" and (processor.normalization != "robust" or processor.median is None):
            raise InvalidArgumentError(
                "statistics='pretraining' needs a robust processor that holds the pretraining statistics (a converted "
                "release); this one has none: use statistics='training_split'."
            )
        self.processor = processor
        self.tr_tolerance = tr_tolerance
        self.window_policy = window_policy
        self.iqr_epsilon = iqr_epsilon
        self.statistics = statistics
        self.unit_conversion = unit_conversion
        self._windowing = self._windowing_processor()

    def _windowing_processor(self) -> BrainLMFeatureExtractor:
        """The processor with Brainmarks' resampling tolerance and padding; Brainmarks' bold is already the
        `"zscore"` normalisation, so a `"zscore"` processor cuts it without normalising again."""
        settings = {"resample_tolerance": self.tr_tolerance, "short_recordings": "pad"}
        if self.processor.normalization == "zscore":
            settings["normalization"] = "none"
        else:
            settings["unit_conversion"] = self.unit_conversion
        if self.statistics == "training_split":
            settings.update(clip_low=None, clip_high=None)  # Brainmarks fits its statistics and never clips
        return BrainLMFeatureExtractor.from_dict({**self.processor.to_dict(), **settings})

    def fit(self, train_dataset) -> None:
        """Fit a `"robust"` processor's median/IQR on the training samples with `statistics="training_split"` (other
        normalisations, and the pretraining statistics, need nothing)."""
        if self.processor.normalization == "robust" and self.statistics == "training_split":
            samples = list(train_dataset)
            trs = [float(sample["tr"]) for sample in samples]
            recordings = [_raw_recording(sample) for sample in samples]
            self._windowing.fit(recordings, iqr_epsilon=self.iqr_epsilon, repetition_times=trs)
            for name in FITTED_FIELDS:  # the checkpoint's processor, fitted
                setattr(self.processor, name, getattr(self._windowing, name))

    def __call__(self, sample: dict) -> dict:
        if self.processor.normalization == "zscore":
            signal = np.asarray(sample["bold"], dtype=np.float32)  # (T, V), atlas order
        else:
            signal = _raw_recording(sample)
        windows, _ = self._windowing.windows(
            [signal], cover_end=self.window_policy == "covering", repetition_times=float(sample["tr"])
        )
        out = {key: value for key, value in sample.items() if key not in ("bold", "mean", "std")}
        out["signal_values"] = torch.from_numpy(windows)  # (W, V, T)
        return out


class BrainmarksWrapper(nn.Module):
    """
    A BrainLM encoder as a Brainmarks model: `batch["signal_values"]` `(B, W, V, T)` -> `(cls_embeds, None,
    patch_embeds)`; see the module docstring.

    Args:
        model (`BrainLMModel`): the encoder.
        coordinates (`np.ndarray`, *optional*): region xyz `(V, 3)` in model order (region-window layout).
        layer (`int`, *optional*): the hidden state to read, as in `embed_windows`: None (default) after the final
            LayerNorm, `-1` the last layer before it (what Brainmarks reads from the released 111M/650M).
        batch_size (`int`, defaults to 16): windows per forward pass.
    """

    __space__ = SPACE

    def __init__(
        self, model: BrainLMModel, coordinates: np.ndarray | None, layer: int | None = None, batch_size: int = 16
    ):
        super().__init__()
        self.encoder = model
        self.coordinates = None if coordinates is None else np.asarray(coordinates, dtype=np.float32)
        self.layer = layer
        self.batch_size = batch_size

    def forward(self, batch: dict) -> tuple[torch.Tensor, None, torch.Tensor]:
        signal = batch["signal_values"]  # (B, W, V, T)
        batch_size, num_windows = signal.shape[:2]
        device = signal.device
        # keep Brainmarks' autocast (its `amp` option) for the encoder
        dtype = torch.get_autocast_dtype(device.type) if torch.is_autocast_enabled(device.type) else None
        tokens = embed_windows(
            self.encoder, signal.flatten(0, 1).float().cpu().numpy(), self.coordinates, "tokens", self.batch_size,
            device, dtype, layer=self.layer,
        )  # fmt: skip
        tokens = torch.from_numpy(tokens).to(device).unflatten(0, (batch_size, num_windows))  # (B, W, 1 + K, H)
        return tokens[:, :, 0].mean(1, keepdim=True), None, tokens[:, :, 1:].flatten(1, 2)


def brainlm_hf(
    checkpoint: str | None = None,
    subfolder: str | None = None,
    revision: str | None = None,
    layer: int | None = None,
    window_policy: str = "covering",
    tr_tolerance: float = 0.1,
    batch_size: int = 16,
    iqr_epsilon: float | None = 1e-6,
    statistics: str = "training_split",
    unit_conversion: str = "none",
) -> tuple[BrainmarksTransform, BrainmarksWrapper]:
    """
    Brainmarks model constructor: the transform and the frozen encoder of a checkpoint (a brainlm_hf folder or Hub
    id holding the model and its `preprocessor_config.json`, an original BrainLM checkpoint, or a short name), by
    default `$BRAINLM_HF_CHECKPOINT`, else `brainlm-111m`. The other arguments are those of `BrainmarksTransform` and
    `BrainmarksWrapper` (Brainmarks passes them as `model_kwargs`).
    """
    from_environment = checkpoint is None and bool(os.environ.get(CHECKPOINT_ENV))
    checkpoint = checkpoint or os.environ.get(CHECKPOINT_ENV) or DEFAULT_CHECKPOINT
    location = {key: value for key, value in (("subfolder", subfolder), ("revision", revision)) if value}
    try:
        processor = BrainLMFeatureExtractor.from_pretrained(checkpoint, **location)
    except UserError as error:
        if not from_environment:
            raise
        raise type(error)(f"${CHECKPOINT_ENV}={checkpoint}: {error}") from error
    if processor.num_regions not in (None, NUM_REGIONS):
        raise InvalidArgumentError(
            f"{checkpoint}'s processor has {processor.num_regions} regions; Brainmarks' {SPACE} space has "
            f"{NUM_REGIONS}.",
            argument="checkpoint",
        )
    model = BrainLMModel.from_pretrained(checkpoint, **location).eval().requires_grad_(False)
    wrapper = BrainmarksWrapper(model, processor.model_coordinates(), layer, batch_size).eval()
    transform = BrainmarksTransform(processor, tr_tolerance, window_policy, iqr_epsilon, statistics, unit_conversion)
    return transform, wrapper


def _raw_recording(sample: dict) -> np.ndarray:
    """The sample's signal with Brainmarks' z-scoring undone, `(T, V)` float32 in atlas order."""
    bold, mean, std = (np.asarray(sample[key], dtype=np.float32) for key in ("bold", "mean", "std"))
    return bold * std + mean
