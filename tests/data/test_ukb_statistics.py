"""BrainLM's UK Biobank pretraining statistics: safe reading, the converted releases' processor, clipping and units.

The statistics file is `../shared/reference/ukb_statistics` when present, otherwise the stand-in of
`tests/ukb_stand_in.py` (conftest's `ukb_statistics_file`). Expected numbers are read from the file's bytes by
`arrays_by_opcodes`, which walks the pickle's opcodes and never unpickles (so it runs nothing and shares no code with
the package's reader).
"""

import json
import os
import pickle
import pickletools
import warnings
from pathlib import Path

import numpy as np
import pytest

from brainlm_hf import BrainLMFeatureExtractor
from brainlm_hf.convert import RELEASE_INPUT_SCALE, convert_checkpoint
from brainlm_hf.data.ukb_statistics import (
    UKB_STATISTICS_ENV,
    UKB_STATISTICS_FILES,
    UKB_STATISTICS_NAME,
    load_ukb_statistics,
    safe_unpickle,
)

from ..conftest import REAL_UKB_STATISTICS
from ..integrations.test_convert_cli import coordinates_file, original_folder

KEYS = [
    "data_std_per_voxel",
    "data_mean_per_voxel",
    "data_median_per_voxel",
    "_99th_percentile_per_voxel_robustScaling",
    "_1th_percentile_per_voxel_robustScaling",
    "_99th_percentile_per_voxel_zscore",
    "_1th_percentile_per_voxel_zscore",
    "IQR",
]
FAMILIES = {"brainlm_small": 1.0, "vitmae_pad_small": RELEASE_INPUT_SCALE}  # fixture case -> input_scale


def arrays_by_opcodes(path: Path) -> dict[str, np.ndarray]:
    """The float64 vectors of the statistics file, each the raw bytes that follow its key in the pickle stream."""
    arrays, key = {}, None
    for opcode, argument, _ in pickletools.genops(path.read_bytes()):
        if opcode.name in ("SHORT_BINUNICODE", "BINUNICODE") and argument in KEYS:
            key = argument
        elif opcode.name in ("BINBYTES", "SHORT_BINBYTES") and len(argument) == 424 * 8 and key is not None:
            arrays[key] = np.frombuffer(argument, dtype="<f8")
            key = None
    assert sorted(arrays) == sorted(KEYS)
    return arrays


def expected_normalized(recording: np.ndarray, arrays: dict, input_scale: float) -> np.ndarray:
    """Item 1 of the original's pretraining, per region in atlas order: clip((x - median) / IQR, p1, p99) / scale."""
    low = arrays["_1th_percentile_per_voxel_robustScaling"]
    high = arrays["_99th_percentile_per_voxel_robustScaling"]
    scaled = (recording.astype(np.float64) - arrays["data_median_per_voxel"]) / arrays["IQR"]
    return np.clip(scaled, low, high) / input_scale


def right_units(arrays: dict, timepoints: int = 300, seed: int = 0) -> np.ndarray:
    """A recording in the statistics' units: per region centred on its median, spread like its IQR."""
    rng = np.random.default_rng(seed)
    noise = rng.standard_normal((timepoints, 424)) * (arrays["IQR"] / 1.349)  # a normal's IQR is 1.349 std
    return (arrays["data_median_per_voxel"] + noise).astype(np.float32)


@pytest.fixture
def arrays(ukb_statistics_file) -> dict[str, np.ndarray]:
    return arrays_by_opcodes(ukb_statistics_file)


@pytest.fixture(scope="module")
def converted(tmp_path_factory, a424_folder) -> dict[str, Path]:
    """Both families converted from their small fixtures (statistics from `$BRAINLM_UKB_STATISTICS`)."""
    folders = {}
    for case in FAMILIES:
        tmp = tmp_path_factory.mktemp(case)
        folders[case] = tmp / "converted"
        convert_checkpoint(
            str(original_folder(tmp, case)), str(folders[case]), atlas_coordinates=coordinates_file(a424_folder)
        )
    return folders


@pytest.mark.real_data("ukb_statistics")
def test_the_real_file_has_the_pinned_hash_and_the_documented_ranges():
    path = REAL_UKB_STATISTICS / UKB_STATISTICS_NAME
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the pinned bytes: no "not the pinned file" warning
        statistics = load_ukb_statistics(path)
    ranges = {"median": (-2.086, 0.741), "iqr": (17.81, 305.0), "clip_low": (-4.219, -1.628)}
    ranges["clip_high"] = (1.657, 4.589)
    for field, (low, high) in ranges.items():
        values = getattr(statistics, field)
        assert values.shape == (424,)
        np.testing.assert_allclose([values.min(), values.max()], [low, high], atol=1e-3, rtol=1e-3)


def test_the_reader_returns_the_vectors_of_the_file(ukb_statistics_file, arrays):
    statistics = load_ukb_statistics()  # from $BRAINLM_UKB_STATISTICS (conftest)
    assert statistics.path == str(ukb_statistics_file)
    for field, key in [("median", "data_median_per_voxel"), ("iqr", "IQR")]:
        np.testing.assert_array_equal(getattr(statistics, field), arrays[key])
    np.testing.assert_array_equal(statistics.clip_low, arrays["_1th_percentile_per_voxel_robustScaling"])
    np.testing.assert_array_equal(statistics.clip_high, arrays["_99th_percentile_per_voxel_robustScaling"])


def crafted_pickle(marker: Path) -> bytes:
    """A pickle that, unpickled, creates `marker` (through `os.system`) and then looks like a dict of arrays."""

    class Payload:
        def __reduce__(self):
            return os.system, (f"touch {marker}",)

    return pickle.dumps({"IQR": Payload(), "data_median_per_voxel": np.zeros(424)}, protocol=4)


def test_a_crafted_pickle_is_refused_before_it_runs(tmp_path, monkeypatch, a424_folder):
    proof = tmp_path / "proof"
    pickle.loads(crafted_pickle(proof))  # the payload works: plain unpickling runs it
    assert proof.exists()

    marker = tmp_path / "marker"
    crafted = tmp_path / UKB_STATISTICS_NAME
    crafted.write_bytes(crafted_pickle(marker))
    with pytest.raises(ValueError, match=f"{crafted}: the pickle refers to posix.system.*refused before anything ran"):
        load_ukb_statistics(crafted)
    monkeypatch.setenv(UKB_STATISTICS_ENV, str(tmp_path))  # the folder that holds it, through the variable
    with pytest.raises(ValueError, match="refused before anything ran"):
        convert_checkpoint(
            str(original_folder(tmp_path, "brainlm_small")),
            str(tmp_path / "out"),
            atlas_coordinates=coordinates_file(a424_folder),
        )
    with pytest.raises(pickle.UnpicklingError, match="builtins.exec"):
        safe_unpickle(pickle.dumps(exec))  # any other global too
    assert not marker.exists()
    assert not (tmp_path / "out").exists()


def test_a_file_without_the_structure_is_refused_naming_what_is_wrong(tmp_path):
    path = tmp_path / "statistics"
    for content, message in [
        ([1.0, 2.0], "holds a list, not the dict"),
        ({"IQR": np.ones(424)}, "lacks the keys"),
        ({key: np.ones(424) for key in KEYS} | {"IQR": np.ones(3)}, "IQR is a float64 \\(3,\\) array"),
        ({key: np.ones(424) for key in KEYS} | {"IQR": np.zeros(424)}, "IQR <= 0 in regions \\[0, 1, 2"),
    ]:
        path.write_bytes(pickle.dumps(content))
        with pytest.raises(ValueError, match=f"{path}.*{message}"):
            load_ukb_statistics(path)
    with pytest.raises(FileNotFoundError, match=f"no such file: {tmp_path / 'absent'}.*{UKB_STATISTICS_ENV}"):
        load_ukb_statistics(tmp_path / "absent")


def test_a_local_copy_that_is_not_the_pinned_file_is_read_with_a_warning(tmp_path, arrays):
    from ..ukb_stand_in import write_ukb_stand_in

    other = write_ukb_stand_in(tmp_path, seed=7)
    with pytest.warns(UserWarning, match=f"{other} is not the pinned file"):
        statistics = load_ukb_statistics(tmp_path)
    assert not np.array_equal(statistics.iqr, arrays["IQR"])


def test_the_download_is_verified_and_cached_beside_the_atlases(tmp_path, monkeypatch, ukb_statistics_file, arrays):
    monkeypatch.delenv(UKB_STATISTICS_ENV)
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    (mirror / UKB_STATISTICS_NAME).write_bytes(ukb_statistics_file.read_bytes())
    cache = tmp_path / "cache"
    statistics = load_ukb_statistics(cache_dir=cache, base_url=mirror.as_uri() + "/")
    assert Path(statistics.path) == cache / "statistics" / UKB_STATISTICS_NAME  # the A424 files: cache / "atlases"
    np.testing.assert_array_equal(statistics.iqr, arrays["IQR"])

    tampered = tmp_path / "tampered"
    tampered.mkdir()
    (tampered / UKB_STATISTICS_NAME).write_bytes(ukb_statistics_file.read_bytes() + b"\0")
    with pytest.raises(ValueError, match="does not have the pinned SHA-256"):
        load_ukb_statistics(cache_dir=tmp_path / "other", base_url=tampered.as_uri() + "/")
    assert not any((tmp_path / "other" / "statistics").iterdir())
    with pytest.raises(ConnectionError, match=f"ukb_statistics=PATH, or \\${UKB_STATISTICS_ENV}"):
        load_ukb_statistics(cache_dir=tmp_path / "other", base_url=(tmp_path / "nowhere").as_uri() + "/")
    assert UKB_STATISTICS_FILES[UKB_STATISTICS_NAME][0] == UKB_STATISTICS_NAME


@pytest.mark.parametrize("case", FAMILIES)
def test_normalize_of_a_converted_release_is_the_pretraining_formula(case, converted, arrays, monkeypatch):
    monkeypatch.delenv(UKB_STATISTICS_ENV)  # the numbers are in preprocessor_config.json: no pickle is read again
    processor = BrainLMFeatureExtractor.from_pretrained(converted[case])
    config = json.loads((converted[case] / "preprocessor_config.json").read_text())
    assert all(isinstance(v, float) for key in ("median", "iqr", "clip_low", "clip_high") for v in config[key])
    recording = right_units(arrays)
    expected = expected_normalized(recording, arrays, FAMILIES[case])
    assert 0 < np.mean(expected * FAMILIES[case] >= arrays["_99th_percentile_per_voxel_robustScaling"]) < 0.05

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # in the statistics' units: no clip warning
        normalized = processor.normalize(recording)
        signal = processor(recording)["signal_values"][0].numpy()  # (V, T) in model order
        windows, _ = processor.windows({"sub-1": recording}, stride=50)
    np.testing.assert_allclose(normalized, expected, rtol=1e-5, atol=1e-6)
    order = processor.region_order if case == "vitmae_pad_small" else list(range(424))
    assert (processor.region_order is None) == (case == "brainlm_small")
    np.testing.assert_allclose(signal, expected.T[order], rtol=1e-5, atol=1e-6)
    length = processor.num_timepoints
    for index, start in enumerate(processor.window_starts(len(recording), 50)):
        np.testing.assert_allclose(windows[index], expected[start : start + length].T[order], rtol=1e-5, atol=1e-6)


def test_raw_scanner_units_warn_naming_the_recording_and_the_right_units_stay_quiet(converted, arrays):
    processor = BrainLMFeatureExtractor.from_pretrained(converted["vitmae_pad_small"])
    rng = np.random.default_rng(1)
    raw = (rng.uniform(2000, 9000, 424) * (1 + 0.01 * rng.standard_normal((300, 424)))).astype(np.float32)
    with pytest.warns(UserWarning, match="sub-raw: 100% of its values lie outside the clip bounds") as record:
        processor.normalize(raw, "sub-raw")
    assert "unit_conversion='grand_mean_scaling'" in str(record[0].message)
    with pytest.warns(UserWarning, match="sub-raw: 100% of its values") as record:
        processor.windows({"sub-raw": raw}, stride=10)  # many windows, one warning for the recording
    assert len([w for w in record if "sub-raw" in str(w.message)]) == 1
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        processor.normalize(right_units(arrays), "sub-right")
    quiet = BrainLMFeatureExtractor.from_pretrained(converted["vitmae_pad_small"], clip_warning_fraction=1.0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        quiet.normalize(raw, "sub-raw")  # configurable: 1.0 never warns


def test_grand_mean_scaling_brings_raw_bold_into_the_units_of_the_statistics(converted, arrays):
    processor = BrainLMFeatureExtractor.from_pretrained(
        converted["vitmae_pad_small"], unit_conversion="grand_mean_scaling"
    )
    rng = np.random.default_rng(2)
    baseline = rng.uniform(0.7, 1.3, 424)  # each region's mean intensity, relative
    relative = right_units(arrays, seed=2).astype(np.float64) / 10000
    raw = (600 * (baseline + relative)).astype(np.float32)  # scanner units, grand mean about 600
    mean = raw.astype(np.float64).mean(0)
    converted_units = (raw - mean) * (10000 / mean.mean())  # FSL's grand mean 10000, then demeaned per region
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        normalized = processor.normalize(raw, "sub-raw")
    expected = expected_normalized(converted_units, arrays, RELEASE_INPUT_SCALE)
    # float32 tolerance: the recording's mean is a float32 sum of raw values; a few ulps of them, normalised
    atol = 4 * np.finfo(np.float32).eps * np.abs(raw).max() * (10000 / mean.mean()) / arrays["IQR"].min() / 5.64
    np.testing.assert_allclose(normalized, expected, rtol=1e-5, atol=atol)
    windows, _ = processor.windows([raw], stride=100)
    np.testing.assert_allclose(windows[1], expected[100:300].T[processor.region_order], rtol=1e-5, atol=atol)
    with pytest.raises(ValueError, match="sub-centred: its grand mean is .*unit_conversion='demean'"):
        processor.normalize(raw - mean.astype(np.float32), "sub-centred")

    demeaning = BrainLMFeatureExtractor.from_pretrained(converted["vitmae_pad_small"], unit_conversion="demean")
    offset = right_units(arrays) + rng.uniform(-50, 50, 424).astype(np.float32)
    expected = expected_normalized(offset - offset.astype(np.float64).mean(0), arrays, RELEASE_INPUT_SCALE)
    atol = 4 * np.finfo(np.float32).eps * np.abs(offset).max() / arrays["IQR"].min() / 5.64
    np.testing.assert_allclose(demeaning.normalize(offset), expected, rtol=1e-5, atol=atol)


def test_clip_bounds_are_checked_like_the_other_fields():
    good = {"median": [0.0, 0.0], "iqr": [1.0, 1.0]}
    for fields, message in [
        ({"clip_low": [-1.0, -1.0]}, "clip_low and clip_high go together, got only clip_low"),
        ({"clip_low": [-1.0, 2.0], "clip_high": [1.0, 1.0]}, "regions \\[1\\] have \\[2.0\\] >= \\[1.0\\]"),
        ({"clip_low": [-1.0, float("nan")], "clip_high": [1.0, 1.0]}, "clip_low holds NaN/Inf"),
        ({"clip_low": [-1.0], "clip_high": [1.0]}, "Per-region fields disagree"),
        ({"clip_warning_fraction": 0.0}, "clip_warning_fraction must be a positive finite number"),
        ({"clip_warning_fraction": 1.5}, "clip_warning_fraction is a fraction of values"),
        ({"unit_conversion": "psc"}, "unit_conversion must be one of"),
        ({"normalization": "zscore", "unit_conversion": "demean"}, "z-scoring removes each region's mean"),
    ]:
        with pytest.raises(ValueError, match=message):
            BrainLMFeatureExtractor(**good, **fields)


def test_fit_on_a_cohort_stays_an_explicit_choice_with_its_own_clip_percentiles(converted, tmp_path):
    processor = BrainLMFeatureExtractor.from_pretrained(converted["brainlm_small"])
    cohort = [np.random.default_rng(seed).standard_normal((120, 424)).astype(np.float32) * 3 for seed in range(3)]
    processor.fit(cohort, clip_percentiles=(1, 99))
    stacked = np.concatenate(cohort).astype(np.float64)
    median = np.percentile(stacked, 50, axis=0)
    iqr = np.percentile(stacked, 75, axis=0) - np.percentile(stacked, 25, axis=0)
    np.testing.assert_allclose(processor.median, median, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(processor.clip_high, np.percentile((stacked - median) / iqr, 99, axis=0), rtol=1e-5)
    processor.save_pretrained(tmp_path)
    reloaded = BrainLMFeatureExtractor.from_pretrained(tmp_path)
    assert reloaded.statistics_source == "fit" and reloaded.clip_low == processor.clip_low
    with pytest.raises(ValueError, match="clip_percentiles is an option of robust scaling, not of 'zscore'"):
        BrainLMFeatureExtractor(normalization="zscore").fit(cohort, clip_percentiles=(1, 99))


def test_prepare_with_the_pretraining_statistics_warns_per_recording_and_streams_clip(tmp_path, arrays):
    from brainlm_hf.data import PreparedDataset, WindowStream, prepare_dataset

    inputs = tmp_path / "inputs"
    inputs.mkdir()
    recordings = {f"sub-{i:02d}": right_units(arrays, 200, seed=i) for i in range(8)}
    rng = np.random.default_rng(3)
    recordings["sub-raw"] = (rng.uniform(2000, 9000, 424) * (1 + 0.01 * rng.standard_normal((200, 424)))).astype(
        np.float32
    )
    for name, recording in recordings.items():
        np.save(inputs / f"{name}.npy", recording)
    with pytest.warns(UserWarning) as record:
        prepare_dataset(str(inputs), tmp_path / "prepared", statistics="uk_biobank", shard_multiple=1)
    clipped = [str(w.message) for w in record if "outside the clip bounds" in str(w.message)]
    assert len(clipped) == 1 and clipped[0].startswith("sub-raw") and "100% of its values" in clipped[0]

    dataset = PreparedDataset(tmp_path / "prepared")
    assert dataset.processor.clip_high == arrays["_99th_percentile_per_voxel_robustScaling"].tolist()
    items = list(WindowStream(dataset.shards("train"), dataset.processor, crops_per_recording=1))
    assert items
    for item in items:
        expected = expected_normalized(recordings[item["id"]], arrays, 1.0)
        np.testing.assert_allclose(item["signal_values"], expected.T, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="statistics='uk_biobank' are those of the 424 A424 regions.*10 regions"):
        np.save(inputs / "sub-small.npy", np.zeros((200, 10), np.float32))
        prepare_dataset(str(inputs / "sub-small.npy"), tmp_path / "small", statistics="uk_biobank")


def test_the_brainmarks_transform_takes_the_pretraining_statistics_only_when_asked(converted, arrays):
    from brainlm_hf.integrations.brainmarks import BrainmarksTransform

    raw = right_units(arrays, 400)
    mean, std = raw.mean(0, keepdims=True), raw.std(0, keepdims=True)
    sample = {"bold": (raw - mean) / std, "mean": mean, "std": std, "tr": 0.735}  # Brainmarks' z-scored sample
    processor = BrainLMFeatureExtractor.from_pretrained(converted["vitmae_pad_small"])
    pretraining = BrainmarksTransform(processor, statistics="pretraining")
    pretraining.fit([sample])  # nothing to fit: the checkpoint's statistics stay
    windows = pretraining(sample)["signal_values"].numpy()
    expected = expected_normalized(sample["bold"] * std + mean, arrays, RELEASE_INPUT_SCALE)
    for index, start in enumerate([0, 200]):
        np.testing.assert_allclose(windows[index], expected[start : start + 200].T[processor.region_order], atol=1e-5)

    default = BrainmarksTransform(BrainLMFeatureExtractor.from_pretrained(converted["vitmae_pad_small"]))
    default.fit([sample])  # Brainmarks' way: fitted on the training split, not clipped
    assert default.processor.statistics_source == "fit" and default.processor.clip_low is None
    np.testing.assert_allclose(default.processor.median, np.median(sample["bold"] * std + mean, axis=0), atol=1e-4)
    with pytest.raises(ValueError, match="statistics='pretraining' needs a robust processor that holds"):
        BrainmarksTransform(BrainLMFeatureExtractor(), statistics="pretraining")
