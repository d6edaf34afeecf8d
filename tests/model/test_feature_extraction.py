"""The saved preprocessing: normalisation statistics, region order, windows, and its refusals."""

import numpy as np
import pytest
from transformers import AutoFeatureExtractor

from brainlm_hf import BrainLMFeatureExtractor


@pytest.fixture
def recordings():
    rng = np.random.default_rng(0)
    return [rng.normal(loc=100, scale=5, size=(t, 6)).astype(np.float32) for t in (250, 300, 410)]


def test_robust_scaling_uses_the_training_median_and_iqr(recordings):
    extractor = BrainLMFeatureExtractor(num_timepoints=50).fit(recordings)
    stacked = np.concatenate(recordings)
    q1, median, q3 = np.percentile(stacked, [25, 50, 75], axis=0)
    np.testing.assert_allclose(extractor.median, median, rtol=1e-6)
    np.testing.assert_allclose(extractor.iqr, q3 - q1, rtol=1e-6)
    x = recordings[0]
    out = extractor(x[:50])["signal_values"][0].numpy()  # (V, T)
    np.testing.assert_allclose(out.T, (x[:50] - median) / (q3 - q1), rtol=1e-5, atol=1e-5)
    # not the original toolkit's precedence slip, x - median / IQR
    assert not np.allclose(out.T, x[:50] - median / (q3 - q1))


def test_zscore_and_none(recordings):
    x = recordings[1][:50]
    zscored = BrainLMFeatureExtractor(normalization="zscore", num_timepoints=50)(x)["signal_values"][0].numpy().T
    np.testing.assert_allclose(zscored.mean(0), 0, atol=1e-4)
    np.testing.assert_allclose(zscored.std(0), 1, atol=1e-4)
    raw = BrainLMFeatureExtractor(normalization="none", input_scale=4.0)(x)["signal_values"][0].numpy().T
    np.testing.assert_allclose(raw, x / 4.0, rtol=1e-6)


def test_sliding_windows(recordings):
    extractor = BrainLMFeatureExtractor(normalization="none", num_timepoints=100)
    out = extractor(recordings, sliding_windows=True, stride=50)
    # windows per recording: (250-100)//50+1 = 4, (300-100)//50+1 = 5, (410-100)//50+1 = 7
    assert out["signal_values"].shape == (16, 6, 100)
    assert out["recording_index"].tolist() == [0] * 4 + [1] * 5 + [2] * 7
    np.testing.assert_array_equal(out["signal_values"][5].numpy(), recordings[1][50:150].T)
    with pytest.raises(ValueError, match="different lengths"):
        extractor(recordings)


def test_too_short_recording_is_refused(a424_folder):
    example = np.loadtxt(a424_folder / "A424_example_fMRI.dat", dtype=np.float32)  # 99 x 424 (real, or stand-in)
    extractor = BrainLMFeatureExtractor(normalization="zscore", num_timepoints=200)
    with pytest.raises(
        ValueError, match="recording 0 has 99 timepoints \\(at the model.s TR\\), fewer than one window of 200"
    ):
        extractor(example, sliding_windows=True)


def test_refusals(recordings):
    fitted = BrainLMFeatureExtractor().fit(recordings)
    with pytest.raises(ValueError, match="holds no statistics.*call fit\\(\\)"):
        BrainLMFeatureExtractor()(recordings[0])
    bad = recordings[0].copy()
    bad[3, 4] = np.nan
    with pytest.raises(ValueError, match="NaN/Inf values in regions \\[4\\]"):
        fitted(bad)
    with pytest.raises(ValueError, match="has 5 regions but this feature extractor's atlas has 6"):
        fitted(recordings[0][:, :5])
    with pytest.raises(ValueError, match="zero inter-quartile range"):
        BrainLMFeatureExtractor().fit([np.ones((10, 6), np.float32)])
    with pytest.raises(ValueError, match="normalization must be one of"):
        BrainLMFeatureExtractor(normalization="minmax")
    with pytest.raises(ValueError, match="disagree on the number of regions"):
        BrainLMFeatureExtractor(coordinates=[[0, 0, 0]] * 3, region_order=[0, 1])


def test_save_and_reload_with_auto(recordings, tmp_path):
    coordinates = np.random.default_rng(1).normal(size=(6, 3)) * 40
    extractor = BrainLMFeatureExtractor.sorted_by_y(coordinates, num_timepoints=50, repetition_time=0.72).fit(
        recordings
    )
    extractor.save_pretrained(tmp_path)
    reloaded = AutoFeatureExtractor.from_pretrained(tmp_path)
    assert isinstance(reloaded, BrainLMFeatureExtractor)
    assert reloaded.to_dict() == extractor.to_dict()
    a, b = extractor(recordings[0][:50]), reloaded(recordings[0][:50])
    np.testing.assert_array_equal(a["signal_values"].numpy(), b["signal_values"].numpy())
    # model order is sorted by Y, and to_atlas_order undoes it
    assert (np.diff(a["coordinates"].numpy()[:, 1]) >= 0).all()
    np.testing.assert_array_equal(reloaded.to_atlas_order(a["coordinates"]).numpy(), coordinates.astype(np.float32))


@pytest.mark.parametrize("normalization", ["robust", "zscore", "none"])
@pytest.mark.parametrize("layout", ["c", "fortran", "strided", "float64"])
def test_windows_normalise_only_the_cut_windows_with_the_same_numbers(recordings, normalization, layout):
    """`windows` applies the whole-recording statistics to the cut windows only: bit-identical to normalising the
    whole recording first (`normalize`) and cutting it, in model region order, whatever the input's memory layout."""
    rng = np.random.default_rng(1)
    extractor = BrainLMFeatureExtractor(
        normalization=normalization, num_timepoints=100, region_order=rng.permutation(6).tolist(), input_scale=3.7
    ).fit(recordings)
    recording = recordings[1]
    recording = {
        "c": recording,
        "fortran": np.asfortranarray(recording),
        "strided": np.repeat(recording, 2, axis=0)[::2],
        "float64": recording.astype(np.float64),
    }[layout]
    starts = [0, 17, 200, 17]
    windows, owners = extractor.windows({"a": recording}, starts=lambda t: starts)
    whole = extractor.normalize(recording)  # (T, V)
    expected = np.stack([extractor.to_model_order(whole[s : s + 100].T) for s in starts])
    assert windows.dtype == np.float32 and windows.tobytes() == expected.tobytes()
    assert owners.tolist() == [0, 0, 0, 0]


def test_window_starts_outside_the_recording_are_refused(recordings):
    extractor = BrainLMFeatureExtractor(normalization="none", num_timepoints=100)
    with pytest.raises(ValueError, match="window start 200 is outside a recording of 250 timepoints"):
        extractor.windows([recordings[0]], starts=lambda t: [200])


@pytest.mark.parametrize("normalization", ["robust", "zscore", "none"])
@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
def test_windows_refuse_nan_and_inf_anywhere_in_the_recording(recordings, normalization, value):
    """Also outside the windows that are cut (the whole recording is checked, as `normalize` does)."""
    extractor = BrainLMFeatureExtractor(normalization=normalization, num_timepoints=100).fit(recordings)
    recording = recordings[0].copy()
    recording[240, 4] = value
    with pytest.raises(ValueError, match=r"a has NaN/Inf values in regions \[4\]"):
        extractor.windows({"a": recording}, starts=lambda t: [0])
    huge = np.full((250, 6), 3e38, dtype=np.float32)  # finite values whose sums overflow float32: not refused
    huge[::2] = -3e38
    with np.errstate(all="ignore"):
        extractor.windows({"a": huge}, starts=lambda t: [0])


@pytest.mark.parametrize("shape", [(490, 424), (1, 5), (7, 3), (1200, 94)])
@pytest.mark.parametrize("order", ["C", "F"])
def test_zscore_statistics_are_numpys(shape, order):
    """`zscore_statistics` (numpy's steps, a reused buffer) equal numpy's mean and std bit for bit."""
    from brainlm_hf.feature_extraction_brainlm import zscore_statistics

    rng = np.random.default_rng(sum(shape))
    values = rng.normal(loc=rng.uniform(-1e4, 1e4), scale=rng.uniform(0.1, 100), size=shape).astype(np.float32)
    values = np.asarray(values, order=order)
    mean, std = zscore_statistics(values)
    assert mean.tobytes() == values.mean(0).tobytes() and std.tobytes() == values.std(0).tobytes()
