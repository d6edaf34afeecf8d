# Copyright 2026 The brainlm_hf authors. Licensed under the Apache License, Version 2.0.
"""Turns parcel time series into BrainLM model inputs, and model outputs back into atlas order.

The feature extractor is saved next to a checkpoint or a prepared dataset as `preprocessor_config.json` and loads
with `AutoFeatureExtractor.from_pretrained`, so that pretraining, fine-tuning and inference see identical inputs. It
holds:

* `normalization` and its statistics: `"robust"` is BrainLM's per-region robust scaling `(x - median) / IQR` with
  the median and inter-quartile range of each region: those of BrainLM's UK Biobank pretraining data in a converted
  release (`statistics_source`, see `brainlm_hf.data.ukb_statistics`), or computed across your training recordings
  by `fit` (the later original toolkit computes `x - median / IQR`, an operator-precedence slip; we implement the
  formula as written). `"zscore"` standardises each recording per region with its own mean and std; `"none"` leaves
  the signal as is.
* `clip_low`, `clip_high`: per-region bounds the normalised signal is clipped to (before `input_scale`); a converted
  release holds the 1st / 99th percentiles of the robust-scaled pretraining data, as the original pretraining
  clipped. When more than `clip_warning_fraction` of a recording's values are clipped a warning names it: its
  values are not in the units of the statistics.
* `unit_conversion`, the step from a recording's units to those of the statistics, applied per recording before
  normalising: `"none"` (the recording is already in them: centred per region, FSL intensity scaling as in UK
  Biobank), `"demean"` (subtract each region's mean over the recording) or `"grand_mean_scaling"` (raw positive BOLD
  intensities: scale the recording so that its grand mean, over all regions and timepoints, is 10000, as FSL does,
  then demean each region). See docs/preprocessing.md.
* `input_scale`: the normalised signal is divided by it (5.6430855 for the released 111M/650M weights, as in their
  tutorials; 1.0 otherwise).
* `coordinates` `(V, 3)` (MNI mm) and `region_names`, in atlas order; `region_order` (model row `i` is atlas region
  `region_order[i]`; the 111M/650M weights expect a stable sort on Y; `None` keeps atlas order);
* `num_timepoints` (the window length) and `repetition_time` (TR, seconds, of the data the model was trained on).
* Sampling rate: a recording whose TR differs from `repetition_time` by `resample_tolerance` (0.1 s) or more is
  resampled to it by linear interpolation per region over its own time span (the method of Brainmarks; frequencies
  in Hz are kept, and the slow fMRI signal, < 0.1 Hz, is far below the Nyquist frequency of either TR). The TR of a
  recording comes from its NIfTI header, its prepared dataset's `repetition_time` column or an argument
  (`repetition_times=`); a recording of unknown TR (None) is used as it is. A TR must lie in the range of fMRI,
  `REPETITION_TIME_RANGE` seconds: NaN, or a TR in milliseconds given as seconds, is an error that names it.
* `short_recordings`: a recording shorter than one window (after resampling) is an error (`"refuse"`), or
  (`"pad"`) becomes one window padded at the end with the recording's per-region mean; `timepoint_mask` (1 = real,
  0 = padding) then marks the padded timepoints, which the models leave out of the reconstruction loss and of mean
  pooling.

A `"robust"` extractor without statistics (e.g. made for a custom atlas) refuses to normalise until `fit` has run
on your cohort.

Every field is checked when the extractor is made or loaded (`from_pretrained`): an invalid one (`num_timepoints=0`,
an IQR <= 0 from a tampered file, NaN statistics, ...) is a `ValueError` that names it. A region whose training IQR
is 0 (an empty or constant parcel) stops `fit` with the region named, unless `iqr_epsilon` is given: such regions are
then scaled by `iqr_epsilon` instead and listed in `iqr_epsilon_regions`, both saved with the extractor.
"""

import math
import numbers
import os
import threading
import warnings
from collections.abc import Callable, Mapping, Sequence

import numpy as np
import torch
from transformers import BatchFeature, FeatureExtractionMixin

from .errors import InvalidArgumentError, InvalidFileError, InvalidInputError, MissingFileError, UserError

NORMALIZATIONS = ("robust", "zscore", "none")
UNIT_CONVERSIONS = ("none", "demean", "grand_mean_scaling")
GRAND_MEAN = 10000.0  # FSL's grand-mean intensity scaling target
# Data distributed like the pretraining data has 2 % of each region's values outside its [1st, 99th] percentile
# bounds; a recording in other units (raw scanner values) has most of them outside. 10 % leaves a recording five
# times the expected share before warning.
CLIP_WARNING_FRACTION = 0.1
SHORT_RECORDINGS = ("refuse", "pad")
RESAMPLE_TOLERANCE = 0.1  # seconds: recordings whose TR differs from the processor's by this much are resampled
# seconds: the TRs of fMRI, from fast multiband / MREG sequences (~0.1 s) to sparse sampling (~20 s)
REPETITION_TIME_RANGE = (0.05, 30.0)
CONFIG_NAME = "preprocessor_config.json"


class BrainLMFeatureExtractor(FeatureExtractionMixin):
    """
    Args:
        normalization (`str`, defaults to `"robust"`): `"robust"`, `"zscore"` or `"none"`, see above.
        median, iqr (`list[float]`, *optional*): per-region statistics of `"robust"`, set by `fit`.
        input_scale (`float`, defaults to 1.0): divisor applied after normalisation.
        coordinates (`list[list[float]]`, *optional*): region xyz in atlas order, `(V, 3)`.
        region_order (`list[int]`, *optional*): atlas index of each model row; `None` keeps atlas order.
        region_names (`list[str]`, *optional*): names of the regions in atlas order.
        num_timepoints (`int`, defaults to 200): window length given to the model.
        repetition_time (`float`, *optional*): TR in seconds of the data the model was trained on.
        atlas (`str`, *optional*): name of the parcellation.
        iqr_epsilon (`float`, *optional*): robust scaling of regions whose training IQR is below this value uses
            this value instead (set by `fit(..., iqr_epsilon=...)` or here); without it such regions are an error.
        iqr_epsilon_regions (`list[int]`, *optional*): the regions (atlas order) that `fit` scaled by `iqr_epsilon`.
        resample_tolerance (`float`, defaults to 0.1): seconds; recordings whose TR differs from `repetition_time` by
            at least this much are resampled to it.
        short_recordings (`str`, defaults to `"refuse"`): `"refuse"` or `"pad"` a recording shorter than one
            window (see above).
        clip_low, clip_high (`list[float]`, *optional*): per-region bounds (atlas order) of the normalised signal
            before `input_scale`; both or neither, `clip_low < clip_high`.
        clip_warning_fraction (`float`, defaults to 0.1): warn when more than this fraction of a recording's values
            (of its windows cut so far, when windows are cut) is clipped; 1.0 never warns.
        unit_conversion (`str`, defaults to `"none"`): `"none"`, `"demean"` or `"grand_mean_scaling"`, see above.
        statistics_source (`str`, *optional*): where `median` / `iqr` come from: the UK Biobank pretraining data of
            a converted release, or `"fit"`.
    """

    model_input_names = ["signal_values", "coordinates"]
    # `(pretrained_model_name_or_path, kwargs) -> (what to load, kwargs)`, called first by `from_pretrained` when set:
    # the installed package sets it (brainlm_hf.hub.resolve_pretrained: short names, original checkpoints converted
    # on load); it stays None in the copy of this file saved beside a checkpoint for remote code.
    _resolve_pretrained: Callable | None = None

    def __init__(
        self,
        normalization: str = "robust",
        median: list[float] | None = None,
        iqr: list[float] | None = None,
        input_scale: float = 1.0,
        coordinates: list[list[float]] | None = None,
        region_order: list[int] | None = None,
        region_names: list[str] | None = None,
        num_timepoints: int = 200,
        repetition_time: float | None = None,
        atlas: str | None = None,
        iqr_epsilon: float | None = None,
        iqr_epsilon_regions: list[int] | None = None,
        resample_tolerance: float = RESAMPLE_TOLERANCE,
        short_recordings: str = "refuse",
        clip_low: list[float] | None = None,
        clip_high: list[float] | None = None,
        clip_warning_fraction: float = CLIP_WARNING_FRACTION,
        unit_conversion: str = "none",
        statistics_source: str | None = None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.normalization = normalization
        self.median = median
        self.iqr = iqr
        self.input_scale = input_scale
        self.coordinates = coordinates
        self.region_order = region_order
        self.region_names = region_names
        self.num_timepoints = num_timepoints
        self.repetition_time = repetition_time
        self.atlas = atlas
        self.iqr_epsilon = iqr_epsilon
        self.iqr_epsilon_regions = iqr_epsilon_regions
        self.resample_tolerance = resample_tolerance
        self.short_recordings = short_recordings
        self.clip_low = clip_low
        self.clip_high = clip_high
        self.clip_warning_fraction = clip_warning_fraction
        self.unit_conversion = unit_conversion
        self.statistics_source = statistics_source
        self._check_settings()
        self._check_per_region_fields()
        self._check_robust_statistics()
        self._check_clip_bounds()
        self._check_iqr_epsilon_regions()

    def _check_settings(self) -> None:
        """The settings that are one value: a known choice, a positive number (as a float or int), a string."""
        if self.normalization not in NORMALIZATIONS:
            raise InvalidArgumentError(
                f"normalization must be one of {NORMALIZATIONS}, got {self.normalization!r}.", argument="normalization"
            )
        self.input_scale = _positive_number(self.input_scale, "input_scale")
        self.num_timepoints = _positive_integer(self.num_timepoints, "num_timepoints")
        if self.repetition_time is not None:
            repetition_time = _positive_number(self.repetition_time, "repetition_time")
            self.repetition_time = check_repetition_time(
                repetition_time, "repetition_time", argument="repetition_time"
            )
        if self.iqr_epsilon is not None:
            self.iqr_epsilon = _positive_number(self.iqr_epsilon, "iqr_epsilon")
        self.resample_tolerance = _positive_number(self.resample_tolerance, "resample_tolerance")
        if self.short_recordings not in SHORT_RECORDINGS:
            raise InvalidArgumentError(
                f"short_recordings must be one of {SHORT_RECORDINGS}, got {self.short_recordings!r}.",
                argument="short_recordings",
            )
        if self.atlas is not None and not isinstance(self.atlas, str):
            raise InvalidArgumentError(
                f"atlas must be the name of the parcellation (a string), got {self.atlas!r}.", argument="atlas"
            )
        self._check_unit_conversion()
        self.clip_warning_fraction = _positive_number(self.clip_warning_fraction, "clip_warning_fraction")
        if self.clip_warning_fraction > 1:
            raise InvalidArgumentError(
                f"clip_warning_fraction is a fraction of values, in (0, 1], got {self.clip_warning_fraction}.",
                argument="clip_warning_fraction",
            )
        if self.statistics_source is not None and not isinstance(self.statistics_source, str):
            raise InvalidArgumentError(
                f"statistics_source must be a string, got {self.statistics_source!r}.", argument="statistics_source"
            )

    def _check_unit_conversion(self) -> None:
        """A known conversion, and none with z-scoring (which makes units irrelevant)."""
        if self.unit_conversion not in UNIT_CONVERSIONS:
            raise InvalidArgumentError(
                f"unit_conversion must be one of {UNIT_CONVERSIONS}, got {self.unit_conversion!r}.",
                argument="unit_conversion",
            )
        if self.unit_conversion != "none" and self.normalization == "zscore":
            raise InvalidArgumentError(
                f"unit_conversion={self.unit_conversion!r} with z-scoring: z-scoring removes each region's mean and "
                "scale, so units do not matter; use unit_conversion='none' (or robust scaling with the statistics).",
                argument="unit_conversion",
            )

    def _check_per_region_fields(self) -> None:
        """
        The fields with one entry per region: non-empty lists of one length V; `coordinates` finite `(V, 3)`,
        `region_order` a permutation of `0 .. V - 1` (as ints), `region_names` strings.
        """
        per_region = {
            "coordinates": self.coordinates,
            "region_order": self.region_order,
            "region_names": self.region_names,
            "median": self.median,
            "iqr": self.iqr,
            "clip_low": self.clip_low,
            "clip_high": self.clip_high,
        }
        for name, values in per_region.items():
            if values is not None and (isinstance(values, str | bytes) or not hasattr(values, "__len__")):
                raise InvalidArgumentError(
                    f"{name} must be a list with one entry per region, got {values!r}.", argument=name
                )
            if values is not None and len(values) == 0:
                raise InvalidArgumentError(f"{name} is empty: give one entry per region, or None.", argument=name)
        sizes = {name: len(v) for name, v in per_region.items() if v is not None}
        if len(set(sizes.values())) > 1:
            raise InvalidArgumentError(f"Per-region fields disagree on the number of regions: {sizes}.")
        if self.coordinates is not None:
            self.coordinates = _finite_array(self.coordinates, "coordinates", (len(self.coordinates), 3)).tolist()
        if self.region_order is not None:
            order = _finite_array(self.region_order, "region_order", (len(self.region_order),))
            if not np.array_equal(np.sort(order), np.arange(len(order))):
                raise InvalidArgumentError(
                    "region_order must be a permutation of 0 .. V - 1.", argument="region_order"
                )
            self.region_order = [int(i) for i in order]
        if self.region_names is not None and not all(isinstance(name, str) for name in self.region_names):
            raise InvalidArgumentError("region_names must be strings, one per region.", argument="region_names")

    def _check_robust_statistics(self) -> None:
        """`median` and `iqr`: both or neither, finite, and every IQR > 0 (in float32, as robust scaling divides)."""
        if (self.median is None) != (self.iqr is None):
            raise InvalidArgumentError(
                f"median and iqr go together (both set by fit), got only {'iqr' if self.median is None else 'median'}."
            )
        if self.median is None:
            return
        self.median = _finite_array(self.median, "median", (len(self.median),)).tolist()
        iqr = _finite_array(self.iqr, "iqr", (len(self.iqr),))
        bad = np.flatnonzero(~(iqr.astype(np.float32) > 0))
        if len(bad):
            raise InvalidArgumentError(
                f"iqr: regions {_region_list(bad, self.region_names)} have an inter-quartile range <= 0 ("
                f"{iqr[bad][:5].tolist()}); robust scaling would divide by it. The statistics are damaged: fit "
                "the processor again (with iqr_epsilon for empty parcels).",
                argument="iqr",
            )
        self.iqr = iqr.tolist()

    def _check_clip_bounds(self) -> None:
        """`clip_low` and `clip_high`: both or neither, finite, and `clip_low < clip_high` in every region."""
        if (self.clip_low is None) != (self.clip_high is None):
            given = "clip_high" if self.clip_low is None else "clip_low"
            raise InvalidArgumentError(f"clip_low and clip_high go together, got only {given}.", argument=given)
        if self.clip_low is None:
            return
        clip_low = _finite_array(self.clip_low, "clip_low", (len(self.clip_low),))
        clip_high = _finite_array(self.clip_high, "clip_high", (len(self.clip_high),))
        bad = np.flatnonzero(~(clip_low.astype(np.float32) < clip_high.astype(np.float32)))
        if len(bad):
            raise InvalidArgumentError(
                f"clip_low must be below clip_high in every region; regions {_region_list(bad, self.region_names)} "
                f"have {clip_low[bad][:5].tolist()} >= {clip_high[bad][:5].tolist()}."
            )
        self.clip_low, self.clip_high = clip_low.tolist(), clip_high.tolist()

    def _check_iqr_epsilon_regions(self) -> None:
        """`iqr_epsilon_regions` (set by `fit`): region indices whose `iqr` is `iqr_epsilon`."""
        if self.iqr_epsilon_regions is None:
            return
        if self.iqr_epsilon is None or self.iqr is None:
            raise InvalidArgumentError(
                "iqr_epsilon_regions is set by fit with iqr_epsilon: it needs iqr_epsilon and iqr.",
                argument="iqr_epsilon_regions",
            )
        regions = _finite_array(self.iqr_epsilon_regions, "iqr_epsilon_regions", (len(self.iqr_epsilon_regions),))
        if not np.isin(regions, np.arange(len(self.iqr))).all():
            raise InvalidArgumentError(
                f"iqr_epsilon_regions must be region indices in 0 .. {len(self.iqr) - 1}.",
                argument="iqr_epsilon_regions",
            )
        self.iqr_epsilon_regions = [int(i) for i in regions]
        if not np.allclose(np.asarray(self.iqr)[self.iqr_epsilon_regions], self.iqr_epsilon):
            raise InvalidArgumentError(
                "iqr_epsilon_regions: the iqr of those regions is not iqr_epsilon (damaged statistics).",
                argument="iqr_epsilon_regions",
            )

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, **kwargs) -> "BrainLMFeatureExtractor":
        """
        `FeatureExtractionMixin.from_pretrained`; with brainlm_hf installed, also an original BrainLM checkpoint (a
        folder, or a Hub id with `subfolder`), converted on load and cached, or a released model's short name
        (`"brainlm-13m"`, `"brainlm-111m"`, `"brainlm-650m"`): see `brainlm_hf.hub.resolve_pretrained`. Errors name
        the folder: a local folder without `preprocessor_config.json`, or one whose fields are invalid.
        """
        if cls._resolve_pretrained is not None:
            pretrained_model_name_or_path, kwargs = cls._resolve_pretrained(pretrained_model_name_or_path, kwargs)
        name = os.fspath(pretrained_model_name_or_path)
        folder = os.path.join(name, kwargs.get("subfolder") or "")
        if os.path.isdir(name) and not os.path.isfile(os.path.join(folder, CONFIG_NAME)):
            raise MissingFileError(
                f"{folder.rstrip(os.sep)} has no {CONFIG_NAME}: it holds no BrainLM processor (normalisation "
                "statistics, region coordinates and order). Give the folder that holds one: the prepared dataset, or "
                "a model folder saved with its processor."
            )
        try:
            return super().from_pretrained(pretrained_model_name_or_path, **kwargs)
        except ValueError as error:
            where = os.path.join(folder, CONFIG_NAME) if os.path.isdir(name) else name
            raise InvalidFileError(f"{where}: {error}") from error

    @classmethod
    def sorted_by_y(cls, coordinates, **kwargs) -> "BrainLMFeatureExtractor":
        """A feature extractor whose model order is a stable sort of the regions by their Y coordinate."""
        coordinates = np.asarray(coordinates, dtype=np.float64)
        region_order = np.argsort(coordinates[:, 1], kind="stable").tolist()
        return cls(coordinates=coordinates.tolist(), region_order=region_order, **kwargs)

    @property
    def num_regions(self) -> int | None:
        for values in (self.coordinates, self.region_order, self.median, self.clip_low):
            if values is not None:
                return len(values)
        return None

    @property
    def inverse_order(self) -> list[int] | None:
        """Model row of each atlas region (`inverse_order[region_order[i]] == i`)."""
        return None if self.region_order is None else np.argsort(self.region_order).tolist()

    def fit(
        self,
        recordings,
        iqr_epsilon: float | None = None,
        repetition_times=None,
        clip_percentiles: tuple[float, float] | None = None,
    ) -> "BrainLMFeatureExtractor":
        """
        Compute the `"robust"` statistics (per-region median and IQR over every timepoint of every training
        recording, `(T_i, V)` arrays in atlas order, after `unit_conversion`), replacing those the extractor held
        (e.g. the UK Biobank ones of a converted release); `statistics_source` becomes `"fit"`. Holds all training
        timepoints in memory once. Other methods need no fitting; `fit` then only checks the recordings.

        `clip_percentiles` (e.g. `(1, 99)`, as the original pretraining did): the clip bounds become those
        percentiles of each region's robust-scaled training series; without it the extractor does not clip (clip
        bounds it held are dropped, with a warning: they belonged to the statistics replaced).

        A region whose IQR is 0 (an empty or constant parcel) is an error that names it, unless `iqr_epsilon` (or
        `self.iqr_epsilon`) is given: regions whose IQR is below it are then scaled by `iqr_epsilon`, and their
        indices are recorded in `iqr_epsilon_regions` (saved with the extractor) and warned about. `repetition_times`
        (as in `windows`): the statistics are those of the recordings resampled to `repetition_time`.
        """
        recordings = list(recordings.values()) if isinstance(recordings, Mapping) else list(recordings)
        trs = _per_recording(repetition_times, [f"recording {i}" for i in range(len(recordings))])
        recordings = [
            self.resample(self._checked(r, f"recording {i}"), trs[i], f"recording {i}")
            for i, r in enumerate(recordings)
        ]
        if not recordings:
            raise InvalidInputError("fit needs at least one training recording.", argument="recordings")
        epsilon = self.iqr_epsilon if iqr_epsilon is None else _positive_number(iqr_epsilon, "iqr_epsilon")
        if self.normalization != "robust":
            if iqr_epsilon is not None or clip_percentiles is not None:
                option = "iqr_epsilon" if iqr_epsilon is not None else "clip_percentiles"
                raise InvalidArgumentError(
                    f"{option} is an option of robust scaling, not of {self.normalization!r}.", argument=option
                )
            return self
        low, high = clip_percentiles if clip_percentiles is not None else (0, 100)
        if not 0 <= low < high <= 100:
            raise InvalidArgumentError(
                f"clip_percentiles must be two percentiles, low < high, in 0..100: {clip_percentiles}.",
                argument="clip_percentiles",
            )
        stacked = np.concatenate([self.convert_units(r, f"recording {i}") for i, r in enumerate(recordings)])
        q1, median, q3 = np.percentile(stacked, [25, 50, 75], axis=0)
        iqr = q3 - q1
        small = np.flatnonzero(~(iqr.astype(np.float32) > 0) | (iqr < (epsilon or 0.0)))
        if len(small) and epsilon is None:
            raise InvalidInputError(
                f"Regions {_region_list(small, self.region_names)} have zero inter-quartile range in the training "
                "recordings (empty or constant parcels?): drop them, or pass iqr_epsilon= to scale them by that value "
                "instead.",
                argument="iqr_epsilon",
            )
        if len(small):
            iqr[small] = epsilon
            warnings.warn(
                f"Regions {_region_list(small, self.region_names)} have an inter-quartile range below iqr_epsilon="
                f"{epsilon} and are scaled by it (recorded in iqr_epsilon_regions).",
                stacklevel=2,
            )
        self.median, self.iqr = median.tolist(), iqr.tolist()
        self.iqr_epsilon = epsilon
        self.iqr_epsilon_regions = small.tolist() if epsilon is not None else None
        self.statistics_source = "fit"
        if clip_percentiles is None and self.clip_low is not None:
            warnings.warn(
                "fit replaced the statistics the clip bounds belonged to: the extractor no longer clips (pass "
                "clip_percentiles=(1, 99) to clip at the percentiles of your training data).",
                stacklevel=2,
            )
        self.clip_low = self.clip_high = None
        if clip_percentiles is not None:
            scaled = (stacked - median) / iqr
            self.clip_low, self.clip_high = (p.tolist() for p in np.percentile(scaled, [low, high], axis=0))
        return self

    def convert_units(self, recording: np.ndarray, name: str = "recording") -> np.ndarray:
        """A checked `(T, V)` recording in the units of the statistics (`unit_conversion`), float32."""
        recording = self._checked(recording, name)
        if self.unit_conversion == "none":
            return recording
        offset, gain = self._unit_affine(recording.mean(0, dtype=np.float64), name)
        return ((recording - offset) * gain).astype(np.float32)

    def _unit_affine(self, mean: np.ndarray, name: str) -> tuple[np.ndarray, float]:
        """`(offset, gain)` of `unit_conversion` for a recording of per-region means `mean` `(V,)`: the converted
        recording is `(x - offset) * gain`."""
        if self.unit_conversion == "demean":
            return mean, 1.0
        grand_mean = float(np.mean(mean, dtype=np.float64))
        if not grand_mean > 0:
            raise InvalidInputError(
                f"{name}: its grand mean is {grand_mean:.4g}, but grand-mean scaling is for raw BOLD intensities, "
                "which are positive: is it already centred or scaled? Use unit_conversion='demean' or 'none'."
            )
        return mean, GRAND_MEAN / grand_mean

    def normalize(self, recording: np.ndarray, name: str = "recording") -> np.ndarray:
        """
        One `(T, V)` recording in atlas order -> in the units of the statistics (`unit_conversion`), normalised,
        clipped to `[clip_low, clip_high]` when set and divided by `input_scale`, float32. Warns, naming `name`, when
        more than `clip_warning_fraction` of its values are clipped.
        """
        out = np.array(self._checked(recording, name), dtype=np.float32)  # one copy, then in place
        center, factor = self._affine(out, name)
        out -= center
        out *= factor
        self.clip(out, name)
        return out

    def clip_bounds(self) -> tuple[np.ndarray, np.ndarray] | None:
        """The clip bounds of the normalised output (`(V,)` float32 each, after `input_scale`), or None."""
        if self.clip_low is None:
            return None
        scale = np.float32(self.input_scale)
        return np.asarray(self.clip_low, np.float32) / scale, np.asarray(self.clip_high, np.float32) / scale

    def clip(self, values: np.ndarray, name: str, bounds=None, warn: bool = True) -> int:
        """
        Clip normalised `(T, V)` float32 `values` in place to `bounds` (default `clip_bounds()`; nothing without
        them) and return how many were clipped; with `warn`, `warn_clipped`.
        """
        bounds = self.clip_bounds() if bounds is None else bounds
        if bounds is None:
            return 0
        low, high = bounds
        clipped = int(np.count_nonzero(values < low)) + int(np.count_nonzero(values > high))
        np.clip(values, low, high, out=values)
        if warn:
            self.warn_clipped(name, clipped, values.size)
        return clipped

    def warn_clipped(self, name: str, clipped: int, total: int) -> bool:
        """Warn, naming `name`, when `clipped` of `total` values is more than `clip_warning_fraction`; whether it
        did."""
        if clipped > self.clip_warning_fraction * total:
            warnings.warn(
                f"{name}: {clipped / total:.0%} of its values lie outside the clip bounds of the statistics "
                f"({self.statistics_source or 'given'}), more than clip_warning_fraction={self.clip_warning_fraction}"
                f": it is probably not in their units (unit_conversion={self.unit_conversion!r}); see "
                "docs/preprocessing.md for the path from raw BOLD (unit_conversion='grand_mean_scaling').",
                stacklevel=3,
            )
            return True
        return False

    def _affine(self, recording: np.ndarray, name: str, values_checked: bool = True, statistics=None):
        """
        `(center, factor)` of the normalisation of a checked float32 recording: `normalize` returns
        `(recording - center) * factor`, float32, in that order of operations (so applying it to a cut window gives
        the very numbers of normalising the whole recording first). Per-region `(V,)` arrays, or scalars. With
        `values_checked=False` a `"zscore"` recording is checked for NaN/Inf through its statistics (a NaN or Inf
        value makes its region's mean or std non-finite), which saves a pass over it. `statistics`: the recording's
        `zscore_statistics`, computed before (then the recording is not read here).

        A `unit_conversion` makes the recording `y = (x - offset) * gain` first (from its per-region means, float64);
        normalising `y` by `(center_y, scale_y)` is then `(x - (offset + center_y / gain)) * gain / (scale_y *
        input_scale)`.
        """
        if self.normalization == "zscore" and statistics is None:
            statistics = zscore_statistics(recording)
            if not values_checked and not all(np.isfinite(s).all() for s in statistics):
                self._check_values(recording, name)  # raises naming the regions (passes on a float32 overflow)
        center, scale = self._statistics_affine(statistics, name)
        if self.unit_conversion == "none":
            return center, 1 / (scale * np.float32(self.input_scale))
        # not z-scoring (refused with a unit conversion), so the values were checked; float64: raw means are large
        offset, gain = self._unit_affine(recording.mean(0, dtype=np.float64), name)
        factor = gain / (np.asarray(scale, np.float64) * self.input_scale)
        return (offset + center / gain).astype(np.float32), np.asarray(factor, np.float32)

    def _statistics_affine(self, statistics, name: str):
        """`(center, scale)` of the normalisation (before `input_scale`) of a recording in the units of the
        statistics, given its `zscore_statistics` when z-scoring."""
        if self.normalization == "robust":
            if self.median is None:
                raise InvalidArgumentError(
                    "This feature extractor uses BrainLM's robust scaling but holds no statistics: call fit() on your "
                    "training recordings first (or convert a released checkpoint, whose processor holds the UK "
                    "Biobank statistics)."
                )
            center, scale = np.asarray(self.median, np.float32), np.asarray(self.iqr, np.float32)
            if not (np.isfinite(center).all() and np.isfinite(scale).all() and (scale > 0).all()):
                bad = np.flatnonzero(~(np.isfinite(center) & np.isfinite(scale) & (scale > 0)))
                raise InvalidArgumentError(
                    f"The robust statistics of regions {_region_list(bad, self.region_names)} are not usable (IQR "
                    "<= 0 or non-finite): fit the processor again."
                )
            return center, scale
        if self.normalization == "zscore":
            center, scale = statistics
            if (scale == 0).any():
                raise InvalidInputError(
                    f"{name}: regions {np.flatnonzero(scale == 0).tolist()} are constant; cannot z-score (drop the "
                    "recording, or use robust normalisation with iqr_epsilon for empty parcels)."
                )
            return center, scale
        return np.float32(0), np.float32(1)

    def needs_resampling(self, repetition_time: float | None) -> bool:
        """Whether a recording of this TR is resampled (see the module): both TRs known and `resample_tolerance` or
        more apart."""
        if repetition_time is None or self.repetition_time is None:
            return False
        return abs(float(repetition_time) - self.repetition_time) >= self.resample_tolerance - 1e-12

    def resampled_length(self, num_timepoints: int, repetition_time: float | None) -> int:
        """The number of timepoints of a recording of `num_timepoints` at `repetition_time` after `resample`."""
        if not self.needs_resampling(repetition_time) or num_timepoints < 2:
            return num_timepoints
        return int(math.floor((num_timepoints - 1) * repetition_time / self.repetition_time + 1e-9)) + 1

    def resample(self, recording: np.ndarray, repetition_time: float | None, name: str = "recording") -> np.ndarray:
        """
        A `(T, V)` recording sampled every `repetition_time` seconds, on this processor's grid: samples at `k *
        self.repetition_time` for every `k` within the recording's span `[0, (T - 1) * repetition_time]`, linearly
        interpolated per region (float32). Returned unchanged when `needs_resampling` is False.
        """
        repetition_time = check_repetition_time(repetition_time, f"the repetition time of {name}")
        if not self.needs_resampling(repetition_time):
            return recording
        if len(recording) < 2:
            raise InvalidInputError(
                f"{name} has {len(recording)} timepoint: resampling it to another TR needs at least 2."
            )
        length = self.resampled_length(len(recording), repetition_time)
        position = np.arange(length) * (self.repetition_time / repetition_time)  # in source samples
        left = np.minimum(position.astype(np.int64), len(recording) - 2)
        weight = (position - left).astype(np.float32)[:, None]
        recording = np.asarray(recording, dtype=np.float32)
        return recording[left] * (1 - weight) + recording[left + 1] * weight

    def window_starts(
        self, num_timepoints: int, stride: int | None = None, cover_end: bool = True, name: str = "a recording"
    ) -> list[int]:
        """
        Starts of the `self.num_timepoints`-long windows of a recording of `num_timepoints`: every `stride`
        timepoints from the start (default one window: no overlap), plus, with `cover_end`, one window ending at the
        last timepoint when the others miss it (so every timepoint is covered); without it the remainder is dropped.
        A recording shorter than one window is an error that names it (`name`).
        """
        if stride is not None and stride < 1:
            raise InvalidArgumentError(
                f"stride must be a positive number of timepoints, got {stride}.", argument="stride"
            )
        if num_timepoints < self.num_timepoints:
            raise InvalidInputError(
                f"{name} has {num_timepoints} timepoints (at the model's TR), fewer than one window of "
                f"{self.num_timepoints}: leave it out, pad it (short_recordings='pad') or use "
                "a processor with a shorter num_timepoints (a multiple of the model's patch_size).",
                argument="short_recordings",
            )
        starts = list(range(0, num_timepoints - self.num_timepoints + 1, stride or self.num_timepoints))
        if cover_end and starts[-1] + self.num_timepoints < num_timepoints:
            starts.append(num_timepoints - self.num_timepoints)
        return starts

    def windows(
        self,
        recordings,
        starts: Callable[[int], Sequence[int]] | None = None,
        stride: int | None = None,
        cover_end: bool = True,
        repetition_times=None,
        return_timepoint_mask: bool = False,
        statistics=None,
    ) -> tuple[np.ndarray, ...]:
        """
        The one way a recording becomes model windows: resample it to the model's TR (`resample`), normalise it
        whole (`normalize`), place the windows, cut them and put the regions in model order. A recording shorter
        than one window is an error, or with `short_recordings="pad"` one window padded at the end with its
        per-region mean (normalised like the rest: 0 under z-scoring).

        Args:
            recordings: raw `(T_i, V)` arrays in atlas order: one array, a list, or a dict whose keys name the
                recordings in error messages.
            starts (*optional*): `starts(T_i)` gives a recording's window starts (e.g. random crops); by default
                `window_starts(T_i, stride, cover_end)`. Not used for a padded recording (one window).
            repetition_times (*optional*): the TR in seconds of the recordings: one number for all, or one per
                recording (a list, or a dict with the keys of `recordings`; None = unknown, not resampled).
            return_timepoint_mask (`bool`): also return the timepoint mask.
            statistics (*optional*): the `zscore_statistics` `(mean, std)` of each recording as given, computed
                before (a prepared shard stores them: `read_recordings(..., statistics=True)`), or None where
                unknown; a list, or a dict with the keys of `recordings` (for one array: its pair). Under
                z-scoring they save reading the whole recording (only the windows are read; they are then checked
                for NaN/Inf themselves). Not used for a recording that is resampled.

        Returns the windows `(W, V, num_timepoints)` float32 (normalised, model region order), the index of the
        recording of each window `(W,)` and, with `return_timepoint_mask`, `(W, num_timepoints)` float32 (1 = a
        real timepoint, 0 = padding).
        """
        if isinstance(recordings, np.ndarray | torch.Tensor) and recordings.ndim == 2:
            recordings = [recordings]
            statistics = None if statistics is None else [statistics]  # the pair of the one recording
        if not isinstance(recordings, Mapping):
            recordings = {f"recording {i}": recording for i, recording in enumerate(recordings)}
        trs = _per_recording(_by_name(repetition_times, recordings), list(recordings))
        statistics = _by_name(statistics, recordings)
        statistics = [None] * len(recordings) if statistics is None else list(statistics)
        if len(statistics) != len(recordings):
            raise InvalidArgumentError(
                f"statistics gives {len(statistics)} entries for {len(recordings)} recordings.", argument="statistics"
            )
        windows, owners, lengths = [], [], []
        for index, (name, recording) in enumerate(recordings.items()):
            source = self.recording_windows(recording, name, trs[index], statistics[index])
            if source.padded:
                placed = [0]
            else:
                length = source.num_timepoints
                placed = starts(length) if starts else self.window_starts(length, stride, cover_end, name)
            windows.append(source.cut(placed))
            owners += [index] * len(windows[-1])
            lengths += [min(source.real_timepoints, self.num_timepoints)] * len(windows[-1])
        if not owners:
            raise InvalidInputError("No window: give at least one recording.", argument="recordings")
        windows = windows[0] if len(windows) == 1 else np.concatenate(windows)
        if not return_timepoint_mask:
            return windows, np.asarray(owners)
        mask = (np.arange(self.num_timepoints)[None, :] < np.asarray(lengths)[:, None]).astype(np.float32)
        return windows, np.asarray(owners), mask

    def recording_windows(
        self, recording, name: str = "recording", repetition_time: float | None = None, statistics=None
    ) -> "RecordingWindows":
        """
        One raw `(T, V)` recording (atlas order) made ready to be cut into windows, the steps of `windows` before
        the cut: checked, resampled to the processor's TR, its normalisation computed (or taken from `statistics`,
        see `windows`) and, when shorter than one window with `short_recordings="pad"`, padded to one window with
        its per-region mean. Nothing is copied beyond what resampling or padding needs.
        """
        by_statistics = self.normalization == "zscore"  # NaN/Inf show in the statistics: no extra pass
        series = self._checked(recording, name, check_values=not by_statistics)  # (T, V) float32, not copied
        given = self._given_statistics(statistics, series, repetition_time, name)
        series = self.resample(series, repetition_time, name)
        if given is None and not (series.flags.c_contiguous or series.flags.f_contiguous):
            series = np.array(series)  # the layout `normalize` computes its statistics on
        center, factor = self._affine(series, name, values_checked=not by_statistics, statistics=given)
        real = len(series)
        if real < self.num_timepoints and self.short_recordings == "pad":
            padding = np.broadcast_to(
                series.mean(0, dtype=np.float64).astype(np.float32), (self.num_timepoints - real, series.shape[1])
            )
            series = np.concatenate([series, padding])
        return RecordingWindows(self, series, center, factor, real, name, check_values=given is not None)

    def _given_statistics(self, statistics, series: np.ndarray, repetition_time, name: str):
        """The `(mean, std)` given for a recording as float32 `(V,)` arrays when they apply (z-scoring, not
        resampled), else None; statistics of another shape are an error."""
        if statistics is None or self.normalization != "zscore" or self.needs_resampling(repetition_time):
            return None
        mean, std = (np.asarray(value, dtype=np.float32) for value in statistics)
        fix = "give `brainlm_hf.feature_extraction_brainlm.zscore_statistics(recording)` of this very recording"
        if mean.shape != (series.shape[1],) or std.shape != (series.shape[1],):
            raise InvalidArgumentError(
                f"{name}: the statistics given have shapes {mean.shape} and {std.shape}, but the recording has "
                f"{series.shape[1]} regions: {fix}.",
                argument="statistics",
            )
        bad = ~(np.isfinite(mean) & np.isfinite(std) & (std >= 0))
        if bad.any():
            raise InvalidArgumentError(
                f"{name}: the statistics given are not finite, or the std is negative (regions "
                f"{_region_list(np.flatnonzero(bad), self.region_names)}): {fix}, or prepare the dataset again.",
                argument="statistics",
            )
        return mean, std

    def __call__(
        self,
        recordings,
        sliding_windows: bool = False,
        stride: int | None = None,
        return_tensors: str | None = "pt",
        repetition_time=None,
        return_timepoint_mask: bool | None = None,
    ) -> BatchFeature:
        """
        Args:
            recordings: one recording `(T, V)` in atlas order, a list of them, or an array `(B, T, V)`.
            sliding_windows (`bool`): cut every recording into `num_timepoints` windows every `stride` timepoints
                (default: non-overlapping; the remainder is dropped, see `windows`); `recording_index` then says
                which recording each window comes from. A recording shorter than one window is an error. Without it
                the recordings are used whole and must have equal lengths (after resampling).
            repetition_time (*optional*): the recordings' TR in seconds (one number, or one per recording):
                recordings at another TR than `self.repetition_time` are resampled to it (see `resample`).
            return_timepoint_mask (`bool`, *optional*): with `sliding_windows`, add `timepoint_mask` `(B, T)`
                (1 = real timepoint, 0 = padding of a short recording); default: when `short_recordings="pad"`.

        Returns a `BatchFeature` with `signal_values` `(B, V, T)` (normalised, model region order) and, when known,
        `coordinates` `(V, 3)` in model order.
        """
        if isinstance(recordings, np.ndarray | torch.Tensor) and recordings.ndim == 2:
            recordings = [recordings]
        data = {}
        if sliding_windows:
            if return_timepoint_mask is None:
                return_timepoint_mask = self.short_recordings == "pad"
            out = self.windows(recordings, stride=stride, cover_end=False, repetition_times=repetition_time,
                               return_timepoint_mask=return_timepoint_mask)  # fmt: skip
            data.update(zip(("signal_values", "recording_index", "timepoint_mask"), out, strict=False))
        else:
            trs = _per_recording(
                repetition_time, [f"recording {i}" for i in range(len(recordings))], "repetition_time"
            )
            resampled = [self.resample(self._checked(r, f"recording {i}"), trs[i], f"recording {i}")
                         for i, r in enumerate(recordings)]  # fmt: skip
            normalized = [self.normalize(r, f"recording {i}") for i, r in enumerate(resampled)]
            if len({len(r) for r in normalized}) > 1:
                raise InvalidInputError(
                    "Recordings of different lengths: use sliding_windows=True or crop them to one length."
                )
            data["signal_values"] = self.to_model_order(np.stack(normalized).transpose(0, 2, 1))  # (B, V, T)
        if self.coordinates is not None:
            data["coordinates"] = self.model_coordinates()
        return BatchFeature(data=data, tensor_type=return_tensors)

    def model_coordinates(self) -> np.ndarray | None:
        """Region coordinates `(V, 3)` float32 in model order, or None when unknown."""
        if self.coordinates is None:
            return None
        return self.to_model_order(np.asarray(self.coordinates, dtype=np.float32))

    def to_model_order(self, values):
        """Reorder the region axis of `(..., V, T)` signal or `(V, 3)` coordinates from atlas to model order."""
        return values if self.region_order is None else _take(values, self.region_order)

    def to_atlas_order(self, values):
        """Reorder model outputs `(..., V, T)` (or `(V, 3)`) back to atlas order."""
        return values if self.region_order is None else _take(values, self.inverse_order)

    def _checked(self, recording, name: str, check_values: bool = True) -> np.ndarray:
        recording = np.asarray(recording, dtype=np.float32)
        if recording.ndim != 2:
            raise InvalidInputError(f"{name} has shape {recording.shape}; expected (timepoints, regions).")
        if 0 in recording.shape:
            raise InvalidInputError(
                f"{name} is empty: shape {recording.shape} (timepoints, regions) has no value; leave it out."
            )
        if self.num_regions is not None and recording.shape[1] != self.num_regions:
            raise InvalidInputError(
                f"{name} has {recording.shape[1]} regions but this feature extractor's atlas has {self.num_regions}: "
                "parcellate with the same atlas (is the array transposed? expected (timepoints, regions))."
            )
        if check_values and not np.isfinite(np.add.reduce(recording, axis=None)):
            # the sum is NaN/Inf if any value is (one fast pass); only then (or on a float32 overflow) look closer
            self._check_values(recording, name)
        return recording

    @staticmethod
    def _check_values(recording: np.ndarray, name: str) -> None:
        bad = ~np.isfinite(recording)
        if bad.any():
            regions = np.flatnonzero(bad.any(0))
            raise InvalidInputError(
                f"{name} has NaN/Inf values in regions {regions.tolist()}; clean or drop them first."
            )


class RecordingWindows:
    """
    One recording ready to be cut into model windows (`BrainLMFeatureExtractor.recording_windows`): its raw
    `series` `(T, V)` at the processor's TR (padded to one window when short and padding is asked for), the
    normalisation `(center, factor)` of the whole recording (see `_affine`) and `real_timepoints`, its length before
    padding. `cut(starts)` normalises, clips and cuts only the windows asked for: the numbers equal those of
    `normalize` applied to the whole recording, cut afterwards. The clipped values are counted over every window cut
    so far: when their share passes `clip_warning_fraction`, one warning names the recording (`name`).
    `check_values`: the recording's values were not checked (its statistics were given), so each window is.
    """

    def __init__(
        self, processor, series: np.ndarray, center, factor, real_timepoints: int, name: str, check_values=False
    ):
        self.processor, self.series, self.real_timepoints = processor, series, real_timepoints
        self.center, self.factor, self.name, self.check_values = center, factor, name, check_values
        order = processor.region_order  # as an index array once per recording, not once per cut window
        self.order = None if order is None else np.asarray(order, np.intp)
        self.bounds = processor.clip_bounds()
        self.clipped = self.seen = 0
        self.warned = False

    @property
    def num_timepoints(self) -> int:
        return len(self.series)

    @property
    def padded(self) -> bool:
        return len(self.series) > self.real_timepoints

    def cut(self, starts: Sequence[int], out: np.ndarray | None = None) -> np.ndarray:
        """
        Windows `(W, V, num_timepoints)` float32 at `starts`, normalised and in model region order, written into
        `out` when given (e.g. rows of a batch buffer). When the recording's values were not checked (statistics
        given) each window is checked for NaN/Inf while it is in cache; an error names the recording and regions.
        """
        length, series, order = self.processor.num_timepoints, self.series, self.order
        starts = [int(s) for s in starts]
        if out is None:
            out = np.empty((len(starts), series.shape[1], length), dtype=np.float32)
        window = _scratch((length, series.shape[1]), "window")
        for i, start in enumerate(starts):
            if start < 0 or start + length > len(series):
                raise InvalidArgumentError(
                    f"window start {start} is outside a recording of {len(series)} timepoints (window {length}).",
                    argument="starts",
                )
            np.subtract(series[start : start + length], self.center, out=window)  # (T, V), contiguous: read once
            np.multiply(window, self.factor, out=window)
            if self.check_values and not np.isfinite(np.add.reduce(window, axis=None)):
                where = f"{self.name} (timepoints {start}-{start + length})"
                self.processor._check_values(series[start : start + length], where)
            if self.bounds is not None:
                self.clipped += self.processor.clip(window, self.name, self.bounds, warn=False)
                self.seen += window.size
            if order is None:
                out[i] = window.T
            else:  # transposed (numpy's take copies it contiguous first), then regions gathered into model order
                np.take(window.T, order, axis=0, out=out[i], mode="clip")  # order is a checked permutation
        if self.seen and not self.warned:
            self.warned = self.processor.warn_clipped(self.name, self.clipped, self.seen)
        return out


_scratches = threading.local()  # per thread: a buffer of each shape, reused instead of allocated (and page-faulted)


def _scratch(shape: tuple, name: str, order: str = "C") -> np.ndarray:
    key = (name, shape, order)
    buffers = _scratches.__dict__
    if key not in buffers:
        if len(buffers) > 8:  # recordings of many lengths: keep the memory bounded
            buffers.clear()
        buffers[key] = np.empty(shape, dtype=np.float32, order=order)
    return buffers[key]


def zscore_statistics(recording: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """
    `recording.mean(0), recording.std(0)` `(V,)` float32 of a C- or F-contiguous float32 `(T, V)` array, with numpy's
    own steps (so the very same numbers: sum, divide by the count, subtract, square, sum, divide, square root) but
    the mean computed once and the squares written into a reused buffer instead of a new array. A prepared shard
    stores them per recording (`series_mean`, `series_std`), so that streaming need not read whole recordings.
    """
    count = np.intp(recording.shape[0])
    mean = np.add.reduce(recording, axis=0)
    np.true_divide(mean, count, out=mean, casting="unsafe")
    order = "F" if recording.flags.f_contiguous and not recording.flags.c_contiguous else "C"
    squares = _scratch(recording.shape, "squares", order)  # the layout of numpy's `recording - mean`
    np.subtract(recording, mean, out=squares)
    np.multiply(squares, squares, out=squares)
    variance = np.add.reduce(squares, axis=0)
    np.true_divide(variance, count, out=variance, casting="unsafe")
    return mean, np.sqrt(variance, out=variance)


def _by_name(values, recordings: Mapping):
    """A dict of per-recording values keyed by the names of `recordings` -> a list in their order (None where
    missing); anything else is returned as it is."""
    return [values.get(name) for name in recordings] if isinstance(values, Mapping) else values


def _per_recording(repetition_times, names: list, argument: str = "repetition_times") -> list:
    """One TR in seconds (or None: unknown) per recording of `names` from None, one number, or a sequence of one
    per recording; each checked by `check_repetition_time`."""
    if repetition_times is None or isinstance(repetition_times, numbers.Real):
        repetition_times = [repetition_times] * len(names)
    repetition_times = list(repetition_times)
    if len(repetition_times) != len(names):
        raise InvalidArgumentError(
            f"{argument} gives {len(repetition_times)} values for {len(names)} recordings.", argument=argument
        )
    return [
        check_repetition_time(tr, f"the repetition time of {name}", argument)
        for tr, name in zip(repetition_times, names, strict=True)
    ]


def check_repetition_time(
    value, name: str, argument: str | None = None, error: type[UserError] = InvalidArgumentError
) -> float | None:
    """
    `value`, a TR in seconds (None: unknown), as a float, or an `error` that names it (`name`, e.g. the file it was
    read from): NaN, a non-number, or a TR outside `REPETITION_TIME_RANGE` (with the likely cause: a TR in
    milliseconds, or in minutes, given as seconds).
    """
    if value is None:
        return None
    low, high = REPETITION_TIME_RANGE
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value) or value <= 0:
        raise error(
            f"{name} must be a positive finite number of seconds, got {value!r} (None where unknown).",
            argument=argument,
        )
    if not low <= value <= high:
        cause = (
            f"it looks like milliseconds written as seconds (give {value / 1000:g})"
            if value > high
            else f"it looks like minutes or another unit (give it in seconds, {low:g} to {high:g})"
        )
        raise error(
            f"{name} is {value:g} s, outside the range of fMRI TRs ({low:g} to {high:g} s): {cause}.",
            argument=argument,
        )
    return float(value)


def _positive_number(value, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value) or value <= 0:
        raise InvalidArgumentError(f"{name} must be a positive finite number, got {value!r}.", argument=name)
    return float(value)


def _positive_integer(value, name: str) -> int:
    integral = isinstance(value, numbers.Integral) or (isinstance(value, float) and value.is_integer())
    if isinstance(value, bool) or not integral or value < 1:
        raise InvalidArgumentError(f"{name} must be a positive integer, got {value!r}.", argument=name)
    return int(value)


def _finite_array(values, name: str, shape: tuple) -> np.ndarray:
    try:
        array = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError) as error:
        raise InvalidArgumentError(f"{name} must hold numbers of shape {shape}: {error}", argument=name) from error
    if array.shape != shape:
        raise InvalidArgumentError(
            f"{name} must have shape {shape} (one entry per region), got {array.shape}.", argument=name
        )
    if not np.isfinite(array).all():
        raise InvalidArgumentError(
            f"{name} holds NaN/Inf values at {np.argwhere(~np.isfinite(array))[:5].tolist()}.", argument=name
        )
    return array


def _region_list(indices, names) -> str:
    """`[3, 7]`, followed by the region names when known."""
    indices = [int(i) for i in indices]
    shown = f"{indices[:20]}{' ...' if len(indices) > 20 else ''}"
    if names:
        return f"{shown} ({', '.join(str(names[i]) for i in indices[:5])}{', ...' if len(indices) > 5 else ''})"
    return shown


def _take(values, order: list[int]):
    """Reorder the region axis, the second to last: `(..., V, T)` signal or `(V, 3)` coordinates."""
    axis = values.ndim - 2
    if isinstance(values, torch.Tensor):
        return values.index_select(axis, torch.as_tensor(order, device=values.device))
    return np.take(values, order, axis=axis)
