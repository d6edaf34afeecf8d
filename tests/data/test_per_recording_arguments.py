"""`BrainLMFeatureExtractor.windows` with per-recording arguments: each recording gets its own TR and statistics (a
list by position, a dict by name), with a region order, against windows computed by hand."""

import numpy as np
import pytest

from brainlm_hf import BrainLMFeatureExtractor

from ..analysis.expectations import ORDER, interpolated


@pytest.fixture
def recordings() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(5)
    return {name: (rng.normal(size=(length, 7)) * (i + 1) + i).astype(np.float32) for i, (name, length) in
            enumerate({"a": 24, "b": 31, "c": 20}.items())}  # fmt: skip


def _by_hand(series: np.ndarray, mean: np.ndarray, std: np.ndarray, starts: list[int]) -> np.ndarray:
    normalised = (series - mean) / std
    return np.stack([normalised[start : start + 10, ORDER].T for start in starts])


@pytest.mark.parametrize("by_name", [False, True])
def test_each_recording_gets_its_own_tr_and_statistics(recordings, by_name):
    processor = BrainLMFeatureExtractor(
        normalization="zscore", region_order=ORDER, num_timepoints=10, repetition_time=0.5
    )
    trs = {"a": 0.8, "b": None, "c": 0.5}  # resampled to 0.5 s (37 timepoints), unknown, already at 0.5 s
    given = {name: (np.full(7, i, np.float32), np.full(7, 2.0 + i, np.float32)) for i, name in enumerate(recordings)}
    if by_name:
        windows, owners = processor.windows(recordings, repetition_times=trs, statistics=given)
    else:
        windows, owners = processor.windows(
            list(recordings.values()), repetition_times=list(trs.values()), statistics=list(given.values())
        )
    assert owners.tolist() == [0] * 4 + [1] * 4 + [2] * 2  # starts: a 0 10 20 27; b 0 10 20 21; c 0 10
    resampled = interpolated(recordings["a"], 0.8, 0.5)
    assert len(resampled) == 37  # floor(23 * 0.8 / 0.5) + 1
    # "a" is resampled: its given statistics are those of the recording as given, not used; it is z-scored itself
    expected_a = _by_hand(resampled, resampled.mean(0), resampled.std(0), [0, 10, 20, 27])
    np.testing.assert_allclose(windows[:4], expected_a, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(windows[4:8], _by_hand(recordings["b"], *given["b"], [0, 10, 20, 21]), atol=1e-6)
    np.testing.assert_allclose(windows[8:], _by_hand(recordings["c"], *given["c"], [0, 10]), atol=1e-6)


def test_per_recording_arguments_of_another_count_are_refused(recordings):
    processor = BrainLMFeatureExtractor(normalization="zscore", num_timepoints=10, repetition_time=0.5)
    with pytest.raises(ValueError, match="statistics gives 2 entries for 3 recordings"):
        processor.windows(list(recordings.values()), statistics=[None, None])
    with pytest.raises(ValueError, match="repetition"):
        processor.windows(list(recordings.values()), repetition_times=[0.5, 0.5])
