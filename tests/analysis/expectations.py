"""Independent expectations shared by the analysis tests: a region order, the processor pair it gives, and a
resampling written with np.interp."""

import numpy as np

from brainlm_hf import BrainLMFeatureExtractor

ORDER = [6, 2, 0, 1, 5, 4, 3]  # model row i is atlas region ORDER[i], as in the 111M/650M family's processors


def ordered_and_plain(coordinates, **settings) -> tuple[BrainLMFeatureExtractor, BrainLMFeatureExtractor]:
    """Two z-scoring processors that feed the model the same rows: one with `region_order=ORDER` for `coordinates`
    `(V, 3)` in atlas order, and one without order given the coordinates permuted into model order. `settings` go to
    both (`num_timepoints`, `repetition_time`, ...)."""
    coordinates = np.asarray(coordinates)
    ordered = BrainLMFeatureExtractor(
        normalization="zscore", coordinates=coordinates.tolist(), region_order=ORDER, **settings
    )
    plain = BrainLMFeatureExtractor(normalization="zscore", coordinates=coordinates[ORDER].tolist(), **settings)
    return ordered, plain


def interpolated(recording: np.ndarray, source_tr: float, target_tr: float) -> np.ndarray:
    """A `(T, V)` recording sampled every `source_tr` seconds, linearly interpolated at every multiple of `target_tr`
    within its span."""
    span = (len(recording) - 1) * source_tr
    times = np.arange(int(np.floor(span / target_tr + 1e-9)) + 1) * target_tr
    source = np.arange(len(recording)) * source_tr
    return np.stack([np.interp(times, source, region) for region in recording.T], axis=1).astype(np.float32)
