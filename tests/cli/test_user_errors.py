"""Nothing lost, nothing silently wrong (issue 13), through the Python API: output folders are never overwritten or
mixed, recording ids are unique, phenotype columns cannot overwrite dataset fields, a prepared dataset is checked
against its summary and its processor against its atlas, processor statistics and fields are validated, an explicit
learning rate is used as given, and every unreadable input is named. The command line runs of the same mistakes are
in `test_cli_errors.py`.
"""

import json
import math
import shutil
import warnings
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import torch

from brainlm_hf import BrainLMFeatureExtractor, BrainLMForMaskedSignalModeling
from brainlm_hf.data import PreparedDataset, load_recordings, prepare_dataset

from ..conftest import reference_bytes, reference_file

RNG = np.random.default_rng(0)


def table(length=30, regions=4, seed=0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(length, regions)).astype(np.float32)


def write_tables(folder: Path, names, length=30, regions=4) -> Path:
    for index, name in enumerate(names):
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        np.save(folder / name, table(length, regions, seed=index))
    return folder


def prepare(inputs, output, **overrides):
    settings = dict(num_timepoints=10, normalization="zscore", splits={"train": 1.0}, shard_multiple=1)
    settings["coordinates"] = overrides.pop("coordinates", RNG.normal(size=(4, 3)))
    return prepare_dataset(inputs, output, **{**settings, **overrides})


def ids_of(folder: Path, split: str = "train") -> list[str]:
    return sorted(record["id"] for record in PreparedDataset(folder).recordings(split))


# ---------------------------------------------------------------------------------------------------- prepare output


def test_prepare_refuses_a_non_empty_output_and_overwrite_replaces_it_whole(tmp_path):
    first = write_tables(tmp_path / "first", [f"sub-{i}_bold.npy" for i in range(4)])
    out = tmp_path / "prepared"
    prepare(first, out, shard_multiple=1, target_shard_bytes=1)  # 4 recordings, 4 shards
    assert len(list((out / "train").glob("*.parquet"))) == 4
    second = write_tables(tmp_path / "second", ["sub-9_bold.npy"])
    with pytest.raises(FileExistsError, match=f"{out} is not empty .*overwrite=True"):
        prepare(second, out)
    assert len(list((out / "train").glob("*.parquet"))) == 4  # untouched
    summary = prepare(second, out, overwrite=True)
    assert summary["splits"]["train"]["shards"] == 1
    assert [p.name for p in (out / "train").iterdir()] == ["shard-00000-of-00001.parquet"]  # nothing of run 1 left
    assert ids_of(out) == ["sub-9_bold"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary folder left


def test_a_failed_overwrite_leaves_the_earlier_dataset_as_it_was(tmp_path):
    first = write_tables(tmp_path / "first", ["sub-1_bold.npy", "sub-2_bold.npy"])
    out = tmp_path / "prepared"
    prepare(first, out)
    before = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    broken = write_tables(tmp_path / "broken", ["sub-3_bold.npy"])
    values = table()
    values[3, 1] = np.nan
    np.save(broken / "sub-3_bold.npy", values)
    with pytest.raises(ValueError, match="sub-3_bold.npy: NaN/Inf"):
        prepare(broken, out, overwrite=True)
    assert {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()} == before
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_a_full_disk_while_preparing_keeps_the_earlier_dataset(tmp_path, monkeypatch):
    import errno

    import pyarrow.parquet as pq

    inputs = write_tables(tmp_path / "in", ["sub-1_bold.npy", "sub-2_bold.npy"])
    out = tmp_path / "prepared"
    prepare(inputs, out)
    before = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}

    def full(table, where, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device", str(where))

    monkeypatch.setattr(pq, "write_table", full)
    with pytest.raises(OSError, match=f"cannot write {out}: No space left on device; {out} was left as it was"):
        prepare(inputs, out, overwrite=True)
    assert {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()} == before
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


@pytest.mark.parametrize("foreign", ["notes.txt", "train/notes.txt", "checkpoints/x.bin"])
def test_overwrite_replaces_the_folder_whole(tmp_path, foreign):
    inputs = write_tables(tmp_path / "in", ["sub-1_bold.npy"])
    out = tmp_path / "prepared"
    (out / foreign).parent.mkdir(parents=True)
    (out / foreign).write_text("not a dataset")
    with pytest.raises(FileExistsError, match=f"{out} is not empty"):
        prepare(inputs, out)
    assert (out / foreign).read_text() == "not a dataset"
    prepare(inputs, out, overwrite=True)
    assert not (out / foreign).exists() and ids_of(out) == ["sub-1_bold"]  # nothing of the old folder mixed in


def test_overwrite_never_deletes_the_working_or_home_folder(tmp_path, monkeypatch):
    inputs = write_tables(tmp_path / "in", ["sub-1_bold.npy"])
    work = tmp_path / "work" / "here"
    work.mkdir(parents=True)
    (work / "notes.txt").write_text("mine")
    monkeypatch.chdir(work)
    for out in (work, work.parent, Path(".")):
        with pytest.raises(ValueError, match="holds the working folder: overwrite=True would delete it"):
            prepare(inputs, out, overwrite=True)
    monkeypatch.setenv("HOME", str(work))
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ValueError, match="holds the home folder"):
        prepare(inputs, "~", overwrite=True)
    assert (work / "notes.txt").read_text() == "mine"


def test_overwrite_never_deletes_an_input(tmp_path):
    inputs = write_tables(tmp_path / "data", ["sub-1_bold.npy"])
    with pytest.raises(ValueError, match="holds the input .*sub-1_bold.npy"):
        prepare(inputs, tmp_path, overwrite=True)
    assert (inputs / "sub-1_bold.npy").is_file()


def test_prepare_into_an_empty_folder_or_a_new_nested_one(tmp_path):
    inputs = write_tables(tmp_path / "in", ["sub-1_bold.npy"])
    (tmp_path / "empty").mkdir()
    prepare(inputs, tmp_path / "empty")
    prepare(inputs, tmp_path / "a" / "b" / "c")
    assert ids_of(tmp_path / "empty") == ids_of(tmp_path / "a" / "b" / "c") == ["sub-1_bold"]


def test_prepare_output_that_is_a_file(tmp_path):
    inputs = write_tables(tmp_path / "in", ["sub-1_bold.npy"])
    (tmp_path / "file").write_text("x")
    with pytest.raises(NotADirectoryError, match=f"{tmp_path / 'file'} is a file"):
        prepare(inputs, tmp_path / "file")


# ---------------------------------------------------------------------------------------------------- recording ids


ID_CASES = [  # (paths below a common root, their (id, subject, session))
    (["site1/rest.npy", "site2/rest.npy"], [("site1/rest", "site1/rest", ""), ("site2/rest", "site2/rest", "")]),
    (["a/sub-01_bold.npy", "b/sub-01_bold.npy"], [("a/sub-01_bold", "a/01", ""), ("b/sub-01_bold", "b/01", "")]),
    (
        ["s1/sub-01/func/sub-01_task-rest_bold.nii.gz", "s2/sub-01/func/sub-01_task-rest_bold.nii.gz"],
        [("s1/sub-01/func/sub-01_task-rest_bold", "s1/01", ""), ("s2/sub-01/func/sub-01_task-rest_bold", "s2/01", "")],
    ),
    (
        ["ds/sub-01/func/sub-01_task-rest_bold.nii", "ds/sub-02/ses-2/func/sub-02_ses-2_task-rest_bold.nii"],
        [
            ("sub-01/func/sub-01_task-rest_bold", "01", ""),
            ("sub-02/ses-2/func/sub-02_ses-2_task-rest_bold", "02", "2"),
        ],
    ),
    (  # one subject's folder: its runs and sessions stay one subject
        ["sub-01/func/sub-01_run-1_bold.npy", "sub-01/ses-2/func/sub-01_ses-2_run-1_bold.npy"],
        [("func/sub-01_run-1_bold", "01", ""), ("ses-2/func/sub-01_ses-2_run-1_bold", "01", "2")],
    ),
    (
        ["x/sub-007_bold.npy", "x/sub-012_ses-1_bold.npy"],
        [("sub-007_bold", "007", ""), ("sub-012_ses-1_bold", "012", "1")],
    ),
    (["x/nosub-3_bold.npy"], [("nosub-3_bold", "nosub-3_bold", "")]),
    (
        ["x/sub-01_ses-a_bold.npy", "y/sub-01_ses-b_bold.npy"],
        [("x/sub-01_ses-a_bold", "x/01", "a"), ("y/sub-01_ses-b_bold", "y/01", "b")],
    ),
]


@pytest.mark.parametrize("paths, expected", ID_CASES)
def test_recording_ids_are_unique_and_keep_subjects_and_sessions(tmp_path, paths, expected):
    from brainlm_hf.data.recordings import recording_names

    names = recording_names([tmp_path / "root" / p for p in paths])
    assert [names[tmp_path / "root" / p] for p in paths] == expected


@pytest.mark.parametrize("second", ["a/rest.csv", "a/rest.tsv", "a/rest.npy"])
def test_two_files_of_one_id_are_refused_with_both_named(tmp_path, second):
    from brainlm_hf.data.recordings import recording_names

    first = tmp_path / "a" / "rest.npy"
    with pytest.raises(ValueError, match=f"recording id 'rest': .*{first}.* and .*{tmp_path / second}"):
        recording_names([first, tmp_path / second])


def test_prepare_keeps_recordings_of_two_sites_apart(tmp_path):
    """`site1/rest.npy` and `site2/rest.npy`: two recordings of two subjects, never one id or one subject."""
    inputs = write_tables(tmp_path / "data", ["site1/rest.npy", "site2/rest.npy", "site3/rest.npy", "site4/rest.npy"])
    out = tmp_path / "prepared"
    summary = prepare(inputs, out, splits={"train": 0.5, "test": 0.5})
    assert sum(s["recordings"] for s in summary["splits"].values()) == 4
    assert sum(s["subjects"] for s in summary["splits"].values()) == 4
    records = [r for split in ("train", "test") for r in PreparedDataset(out).recordings(split, ["subject"])]
    assert sorted(r["id"] for r in records) == [f"site{i}/rest" for i in range(1, 5)]
    assert len({r["subject"] for r in records}) == 4
    for record in records:
        np.testing.assert_array_equal(record["series"], np.load(inputs / f"{record['id']}.npy"))


def test_prepare_keeps_bids_subjects_of_two_sites_apart(tmp_path):
    names = [f"{site}/sub-0{s}/func/sub-0{s}_task-rest_bold.npy" for site in ("siteA", "siteB") for s in (1, 2)]
    inputs = write_tables(tmp_path / "bids", names)
    out = tmp_path / "prepared"
    prepare(inputs, out, splits={"train": 0.5, "test": 0.5})
    records = [r for split in PreparedDataset(out).splits for r in PreparedDataset(out).recordings(split, ["subject"])]
    assert sorted(r["subject"] for r in records) == ["siteA/01", "siteA/02", "siteB/01", "siteB/02"]
    assert len({r["id"] for r in records}) == 4


def test_embed_ids_of_two_sites_are_unique(tmp_path):
    inputs = write_tables(tmp_path / "data", ["site1/rest.npy", "site2/rest.npy"])
    recordings = load_recordings(inputs)
    assert sorted(recordings) == ["site1/rest", "site2/rest"]
    np.testing.assert_array_equal(recordings["site2/rest"], np.load(inputs / "site2" / "rest.npy"))


# ------------------------------------------------------------------------------------------------------ phenotypes


FIELDS = [
    "session",
    "repetition_time",
    "series",
    "series_mean",
    "series_std",
    "atlas",
    "num_timepoints",
    "num_regions",
    "Session",
    " atlas",
]


# (key column, clashing column): with a `subject` key every field clashes; with an `id` key `subject` does too (an
# `id` column, when present, is the key, so `subject` + `id` is not a clash)
CLASHES = [("subject", column) for column in FIELDS] + [("id", column) for column in [*FIELDS, "subject"]]


@pytest.mark.parametrize(("key", "column"), CLASHES)
def test_a_phenotype_column_named_like_a_dataset_field_is_refused(tmp_path, key, column):
    inputs = write_tables(tmp_path / "in", ["sub-1_bold.npy"])
    ids = {"subject": "1", "id": "sub-1_bold"}
    pd.DataFrame({key: [ids[key]], column: [99.0]}).to_csv(tmp_path / "pheno.csv", index=False)
    with pytest.raises(ValueError, match=f"pheno.csv: columns \\[{column!r}\\] are named like fields"):
        prepare(inputs, tmp_path / "out", phenotypes=tmp_path / "pheno.csv", repetition_time=0.72)
    assert not (tmp_path / "out").exists()


def test_the_repetition_time_stays_the_one_given(tmp_path):
    inputs = write_tables(tmp_path / "in", ["sub-1_bold.npy"])
    pd.DataFrame({"subject": ["1"], "phenotype_repetition_time": [99.0]}).to_csv(tmp_path / "p.csv", index=False)
    prepare(inputs, tmp_path / "out", phenotypes=tmp_path / "p.csv", repetition_time=0.72)
    (record,) = PreparedDataset(tmp_path / "out").recordings("train", ["repetition_time", "phenotype_repetition_time"])
    assert record["repetition_time"] == pytest.approx(0.72) and record["phenotype_repetition_time"] == 99.0


# ------------------------------------------------------------------------------------------------ prepared dataset


@pytest.fixture
def dataset(tmp_path):
    inputs = write_tables(tmp_path / "in", [f"sub-{i}_bold.npy" for i in range(4)])
    out = tmp_path / "prepared"
    prepare(inputs, out, atlas_name="toy", shard_multiple=2)
    assert len(PreparedDataset(out).shards("train")) == 2
    return out


def test_a_missing_shard_is_named(dataset):
    (dataset / "train" / "shard-00001-of-00002.parquet").unlink()
    with pytest.raises(
        FileNotFoundError, match="prepare_summary.json lists: missing \\['shard-00001-of-00002.parquet'\\]"
    ):
        PreparedDataset(dataset).shards("train")
    with pytest.raises(FileNotFoundError, match="prepare_summary.json lists: missing"):
        PreparedDataset(dataset).recordings("train")


def test_a_shard_of_another_run_is_named(dataset):
    shutil.copy(dataset / "train" / "shard-00000-of-00002.parquet", dataset / "train" / "shard-00000-of-00004.parquet")
    with pytest.raises(ValueError, match="not listed \\['shard-00000-of-00004.parquet'\\]"):
        PreparedDataset(dataset).shards("train")


def test_a_split_the_summary_does_not_know_is_refused(dataset):
    shutil.copytree(dataset / "train", dataset / "validation")
    with pytest.raises(ValueError, match="validation/ holds 2 Parquet shards .* prepare_summary.json does not list"):
        PreparedDataset(dataset).shards("validation")
    assert PreparedDataset(dataset).shards("test") == []


def test_a_summary_without_file_names_is_checked_by_count(dataset):
    summary = json.loads((dataset / "prepare_summary.json").read_text())
    del summary["splits"]["train"]["files"]  # as written before the shard names were recorded
    (dataset / "prepare_summary.json").write_text(json.dumps(summary))
    assert len(PreparedDataset(dataset).shards("train")) == 2
    summary["splits"]["train"]["shards"] = 3
    (dataset / "prepare_summary.json").write_text(json.dumps(summary))
    with pytest.raises(FileNotFoundError, match="does not hold the 3 shards"):
        PreparedDataset(dataset).shards("train")


def test_a_folder_that_is_not_a_prepared_dataset(tmp_path):
    write_tables(tmp_path / "raw", ["sub-1_bold.npy"])
    with pytest.raises(FileNotFoundError, match="raw is not a prepared dataset: it has no prepare_summary.json"):
        PreparedDataset(tmp_path / "raw")
    (tmp_path / "file").write_text("x")
    with pytest.raises(NotADirectoryError, match="is a file"):
        PreparedDataset(tmp_path / "file")


def test_a_processor_of_another_atlas_is_refused_with_both_named(dataset):
    settings = json.loads((dataset / "preprocessor_config.json").read_text())
    settings["atlas"] = "A424"  # same region count, another atlas
    (dataset / "preprocessor_config.json").write_text(json.dumps(settings))
    with pytest.raises(ValueError, match="is for the atlas 'A424', but the recordings of .* with 'toy'"):
        _ = PreparedDataset(dataset).processor
    other = BrainLMFeatureExtractor(normalization="zscore", atlas="Schaefer", num_timepoints=10)
    with pytest.raises(ValueError, match="'Schaefer'.*'toy'"):
        PreparedDataset(dataset).check_processor(other)
    PreparedDataset(dataset).check_processor(BrainLMFeatureExtractor(normalization="zscore", atlas="toy"))


def test_the_atlas_of_an_old_summary_comes_from_the_shards(dataset):
    summary = json.loads((dataset / "prepare_summary.json").read_text())
    del summary["atlas"]
    (dataset / "prepare_summary.json").write_text(json.dumps(summary))
    assert PreparedDataset(dataset).recording_atlas() == "toy"


# ---------------------------------------------------------------------------------------- processor statistics


def fitted(**kwargs) -> BrainLMFeatureExtractor:
    return BrainLMFeatureExtractor(num_timepoints=10, **kwargs).fit([table(40, 4)])


@pytest.mark.parametrize("bad", [0.0, -1.0, float("nan"), float("inf"), 1e-50])
def test_a_damaged_iqr_is_refused_at_load(tmp_path, bad):
    fitted().save_pretrained(tmp_path)
    settings = json.loads((tmp_path / "preprocessor_config.json").read_text())
    settings["iqr"][2] = bad
    (tmp_path / "preprocessor_config.json").write_text(json.dumps(settings))
    message = "iqr" + (": regions \\[2\\] have an inter-quartile range <= 0" if math.isfinite(bad) else " holds NaN")
    with pytest.raises(ValueError, match=f"{tmp_path}/preprocessor_config.json: {message}"):
        BrainLMFeatureExtractor.from_pretrained(tmp_path)


def test_damaged_statistics_set_after_loading_are_refused_before_dividing(tmp_path):
    processor = fitted()
    processor.iqr = [1.0, 0.0, 1.0, 1.0]
    with pytest.raises(ValueError, match="regions \\[1\\] are not usable"):
        processor(table(10, 4))


def test_fit_names_an_empty_region_and_offers_iqr_epsilon():
    recordings = [table(40, 4, seed=s) for s in range(2)]
    for recording in recordings:
        recording[:, 1] = 0.0  # an empty parcel
    with pytest.raises(ValueError, match="Regions \\[1\\] \\(b\\) have zero inter-quartile range.*iqr_epsilon"):
        BrainLMFeatureExtractor(region_names=list("abcd"), num_timepoints=10).fit(recordings)


def test_iqr_epsilon_scales_empty_regions_and_records_them(tmp_path):
    recordings = [table(40, 4, seed=s) for s in range(2)]
    for recording in recordings:
        recording[:, 1] = 0.0
    with pytest.warns(UserWarning, match="Regions \\[1\\] have an inter-quartile range below iqr_epsilon=0.5"):
        processor = BrainLMFeatureExtractor(num_timepoints=10).fit(recordings, iqr_epsilon=0.5)
    assert processor.iqr[1] == 0.5 and processor.iqr_epsilon == 0.5 and processor.iqr_epsilon_regions == [1]
    out = processor(recordings[0][:10])["signal_values"][0].numpy()
    assert np.isfinite(out).all() and (out[1] == 0).all()
    processor.save_pretrained(tmp_path)
    reloaded = BrainLMFeatureExtractor.from_pretrained(tmp_path)
    assert reloaded.iqr_epsilon_regions == [1] and reloaded.to_dict() == processor.to_dict()
    assert json.loads((tmp_path / "preprocessor_config.json").read_text())["iqr_epsilon_regions"] == [1]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no region needs it: recorded as an empty list, no warning
        clean = BrainLMFeatureExtractor(num_timepoints=10).fit([table(40, 4)], iqr_epsilon=1e-6)
    assert clean.iqr_epsilon_regions == []


def test_prepare_passes_iqr_epsilon_to_the_processor(tmp_path):
    inputs = write_tables(tmp_path / "in", ["sub-1_bold.npy", "sub-2_bold.npy"])
    for path in inputs.iterdir():
        values = np.load(path)
        values[:, 3] = 0.0
        np.save(path, values)
    with pytest.raises(ValueError, match="Regions \\[3\\] have zero inter-quartile range"):
        prepare(inputs, tmp_path / "a", normalization="robust")
    with pytest.warns(UserWarning, match="iqr_epsilon"):
        prepare(inputs, tmp_path / "b", normalization="robust", iqr_epsilon=1e-3)
    assert PreparedDataset(tmp_path / "b").processor.iqr_epsilon_regions == [3]


def test_prepare_refuses_a_constant_region_under_zscore_naming_the_file(tmp_path):
    inputs = write_tables(tmp_path / "in", ["sub-1_bold.npy", "sub-2_bold.npy"])
    values = np.load(inputs / "sub-2_bold.npy")
    values[:, 0] = 7.0
    np.save(inputs / "sub-2_bold.npy", values)
    with pytest.raises(ValueError, match="sub-2_bold.npy: regions \\[0\\] are constant"):
        prepare(inputs, tmp_path / "out")


@pytest.mark.parametrize(
    "field, value",
    [
        ("num_timepoints", 0), ("num_timepoints", -5), ("num_timepoints", 2.5), ("num_timepoints", "200"),
        ("num_timepoints", True), ("num_timepoints", None),
        ("input_scale", 0), ("input_scale", -1.0), ("input_scale", float("nan")), ("input_scale", float("inf")),
        ("repetition_time", 0), ("repetition_time", float("nan")), ("repetition_time", -0.72),
        ("iqr_epsilon", 0), ("iqr_epsilon", float("nan")),
        ("coordinates", [[0, 0], [1, 1]]), ("coordinates", [[0, 0, float("nan")]]), ("coordinates", []),
        ("region_order", [0, 0]), ("region_order", [0, 2]),
        ("region_names", [1, 2]), ("atlas", 424),
        ("median", [0.0, 1.0]), ("iqr", [1.0, 1.0]),
        ("normalization", "minmax"),
    ],
)  # fmt: skip
def test_an_invalid_field_is_a_value_error_naming_it(field, value):
    with pytest.raises(ValueError, match=field):
        BrainLMFeatureExtractor(**{field: value})


def test_valid_fields_still_load():
    processor = BrainLMFeatureExtractor(num_timepoints=np.int64(20), input_scale=np.float32(2.0), repetition_time=2)
    assert processor.num_timepoints == 20 and processor.input_scale == 2.0 and processor.repetition_time == 2.0
    assert BrainLMFeatureExtractor(num_timepoints=200.0).num_timepoints == 200


def test_from_pretrained_names_a_folder_without_a_processor(tmp_path):
    with pytest.raises(FileNotFoundError, match=f"{tmp_path} has no preprocessor_config.json"):
        BrainLMFeatureExtractor.from_pretrained(tmp_path)


# --------------------------------------------------------------------------------------------------- learning rate


def pretraining_arguments(**overrides):
    from brainlm_hf.training.pretraining import PretrainingArguments

    return PretrainingArguments(dataset="unused", output_dir="unused", **overrides)


@pytest.mark.parametrize("learning_rate", [0.0, 1e-3, 2.0])
def test_an_explicit_learning_rate_is_used_as_given(config, learning_rate):
    from brainlm_hf.training.pretraining import build_optimizer

    optimizer, _ = build_optimizer(
        BrainLMForMaskedSignalModeling(config), pretraining_arguments(learning_rate=learning_rate), 1
    )
    assert [group["initial_lr"] for group in optimizer.param_groups] == [learning_rate] * 2


def test_without_a_learning_rate_the_base_rate_is_scaled(config):
    from brainlm_hf.training.pretraining import build_optimizer

    args = pretraining_arguments(per_device_train_batch_size=64, base_learning_rate=1e-4)
    optimizer, _ = build_optimizer(BrainLMForMaskedSignalModeling(config), args, 2)
    assert optimizer.param_groups[0]["initial_lr"] == pytest.approx(1e-4 * 128 / 256)


@pytest.mark.parametrize(
    "overrides, option",
    [
        ({"learning_rate": float("nan")}, "learning_rate=nan"),
        ({"learning_rate": float("inf")}, "learning_rate=inf"),
        ({"learning_rate": -1e-3}, "learning_rate=-0.001"),
        ({"base_learning_rate": float("nan")}, "base_learning_rate=nan"),
    ],
)
def test_an_unusable_learning_rate_is_refused_with_the_option(config, overrides, option):
    from brainlm_hf.training.pretraining import build_optimizer

    with pytest.raises(ValueError, match=f"{option}: the learning rate must be a finite number >= 0"):
        build_optimizer(BrainLMForMaskedSignalModeling(config), pretraining_arguments(**overrides), 1)


# ------------------------------------------------------------------------------------------- coordinate tables


@pytest.mark.parametrize(
    "content, message",
    [
        (np.random.default_rng(0).normal(size=(30, 424)), "30 rows x 424 columns: a coordinate table has 4 columns"),
        (np.random.default_rng(0).normal(size=(5, 3)), "5 rows x 3 columns"),
        (np.column_stack([np.arange(1, 6), np.full((5, 3), np.nan)]), "non-finite values in rows \\[0, 1, 2, 3, 4\\]"),
        (np.column_stack([np.ones(5), np.zeros((5, 3))]), "integer label once"),
        (np.column_stack([np.arange(5) + 0.5, np.zeros((5, 3))]), "integer label once"),
        ("label x y z\n1 0 0 0\n", "not a coordinate table of numbers"),
        ("", "0 rows"),
    ],
)
def test_a_file_that_is_not_a_coordinate_table_is_refused(tmp_path, content, message):
    from brainlm_hf.data.atlas import read_coordinate_table

    path = tmp_path / "coordinates.dat"
    path.write_text(content) if isinstance(content, str) else np.savetxt(path, content)
    with pytest.raises(ValueError, match=f"{path}.*{message}"):
        read_coordinate_table(path)


def test_coordinate_tables_are_checked_against_the_region_count(tmp_path):
    from brainlm_hf.data.atlas import read_coordinate_table

    path = tmp_path / "coordinates.csv"
    np.savetxt(path, np.column_stack([np.arange(1, 6), np.zeros((5, 3))]), delimiter=",")
    labels, xyz = read_coordinate_table(path)
    assert labels.tolist() == [1, 2, 3, 4, 5] and xyz.shape == (5, 3)
    with pytest.raises(ValueError, match="lists 5 regions, but the atlas or recordings have 424"):
        read_coordinate_table(path, 424)
    with pytest.raises(FileNotFoundError, match="no such file: .*missing.dat"):
        read_coordinate_table(tmp_path / "missing.dat")


def test_prepare_reads_a_coordinate_table_for_parcel_tables(tmp_path):
    inputs = write_tables(tmp_path / "in", ["sub-1_bold.npy"])
    xyz = RNG.normal(size=(4, 3)) * 40
    np.savetxt(tmp_path / "coords.dat", np.column_stack([np.arange(1, 5), xyz]))
    prepare(inputs, tmp_path / "out", coordinates=tmp_path / "coords.dat")
    np.testing.assert_allclose(PreparedDataset(tmp_path / "out").processor.coordinates, xyz)
    np.savetxt(tmp_path / "coords5.dat", np.column_stack([np.arange(1, 6), np.zeros((5, 3))]))
    with pytest.raises(ValueError, match="coords5.dat gives 5 region coordinates, but the recordings .* have 4"):
        prepare(inputs, tmp_path / "out5", coordinates=tmp_path / "coords5.dat")


def test_prepare_without_coordinates_says_pretraining_will_need_them(tmp_path):
    inputs = write_tables(tmp_path / "in", ["sub-1_bold.npy"])
    with pytest.warns(UserWarning, match="no region coordinates.*coordinates="):
        prepare(inputs, tmp_path / "out", coordinates=None)


def test_a_convert_of_the_released_family_refuses_a_recording_as_coordinates(tmp_path, a424_folder):
    from brainlm_hf.convert import convert_checkpoint

    source = original(tmp_path)
    np.savetxt(tmp_path / "recording.dat", RNG.normal(size=(30, 424)))
    with pytest.raises(ValueError, match="recording.dat has 30 rows x 424 columns"):
        convert_checkpoint(str(source), str(tmp_path / "out"), atlas_coordinates=str(tmp_path / "recording.dat"))
    assert not (tmp_path / "out").exists()


# ---------------------------------------------------------------------------------------------- files named


def nifti(data, affine=None, code=4):
    affine = np.diag([3.0, 3.0, 3.0, 1.0]) if affine is None else affine
    image = nib.Nifti1Image(np.asarray(data, dtype=np.float32), affine)
    image.header.set_sform(affine, code=code)
    image.header.set_qform(affine, code=code)
    return image


@pytest.fixture
def toy_atlas(tmp_path):
    from brainlm_hf.data import load_atlas

    labels = np.zeros((6, 6, 6), dtype=np.int16)
    labels[:3], labels[3:, :3], labels[3:, 3:] = 1, 2, 3
    nib.save(nib.Nifti1Image(labels, np.diag([3.0, 3.0, 3.0, 1.0])), tmp_path / "atlas.nii.gz")
    return load_atlas(tmp_path / "atlas.nii.gz")


def write_bad_input(path: Path, kind: str) -> None:
    good = RNG.normal(size=(6, 6, 6, 20))
    if kind == "3d":
        nib.save(nifti(good[..., 0]), path)
    elif kind == "scanner":
        nib.save(nifti(good, code=1), path)
    elif kind == "unknown-space":
        nib.save(nib.Nifti1Image(good.astype(np.float32), None), path)  # no affine: sform and qform codes 0
    elif kind == "missing-labels":
        nib.save(nifti(good[:3]), path)
    elif kind in ("truncated", "truncated-header"):
        nib.save(nifti(good), path)
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 2] if kind == "truncated" else data[:60])
    elif kind == "not-nifti":
        path.write_bytes(b"this is not an image")
    elif kind == "header-row":
        path.write_text("r1,r2,r3,r4\n" + "\n".join(",".join(map(str, row)) for row in table(20)))
    elif kind == "text-cell":
        path.write_text("1,2,3,4\n5,6,seven,8\n")
    elif kind == "pickled-npy":
        np.save(path, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    elif kind == "truncated-npy":
        np.save(path, table(20))
        path.write_bytes(path.read_bytes()[:100])
    elif kind == "one-column":
        np.savetxt(path, table(20)[:, 0])
    elif kind == "empty":
        path.write_text("")


@pytest.mark.parametrize(
    "name, kind, message",
    [
        ("bold.nii.gz", "3d", "has shape \\(6, 6, 6\\): parcellation needs a 4-D"),
        ("bold.nii.gz", "scanner", "is not in a standard space"),
        ("bold.nii", "unknown-space", "is not in a standard space"),
        ("bold.nii.gz", "missing-labels", "2 atlas regions have no voxel in the grid of .*bold.nii.gz"),
        ("bold.nii.gz", "truncated", "cannot read the image data"),
        ("bold.nii.gz", "truncated-header", "cannot read it as a NIfTI image"),
        ("bold.nii", "not-nifti", "cannot read it as a NIfTI image"),
        ("bold.csv", "header-row", "is not a table of numbers .*no header row"),
        ("bold.csv", "text-cell", "is not a table of numbers"),
        ("bold.npy", "pickled-npy", "cannot read it as a .npy array of numbers"),
        ("bold.npy", "truncated-npy", "cannot read it as a .npy array of numbers .*is the file complete"),
        ("bold.tsv", "one-column", "holds an array of shape \\(20,\\); expected \\(timepoints, regions\\)"),
        ("bold.dat", "empty", "holds an array of shape"),
    ],
)
def test_prepare_names_the_file_it_cannot_use(tmp_path, toy_atlas, name, kind, message):
    folder = tmp_path / "inputs"
    write_tables(folder, ["sub-1_bold.npy"], regions=3)
    write_bad_input(folder / f"sub-2_{name}", kind)
    with pytest.raises(ValueError, match=message) as error:
        prepare(folder, tmp_path / "out", atlas=toy_atlas, coordinates=None)
    assert str(folder / f"sub-2_{name}") in str(error.value)
    assert not (tmp_path / "out").exists()


def test_no_input_is_dropped_silently(tmp_path):
    inputs = write_tables(tmp_path / "data", ["sub-1_bold.npy"])
    (tmp_path / "scan.mat").write_bytes(b"")
    for extra, error, message in [
        (tmp_path / "typo", FileNotFoundError, "no such file or folder: .*typo"),
        (str(tmp_path / "more" / "*.npy"), FileNotFoundError, "no file matches .*more/\\*.npy"),
        (tmp_path / "scan.mat", ValueError, "scan.mat is not a recording"),
    ]:
        with pytest.raises(error, match=message):
            prepare([inputs, extra], tmp_path / "out")
        with pytest.raises(error, match=message):
            load_recordings([inputs, extra])


def test_tables_of_another_region_count_than_the_atlas(tmp_path, toy_atlas):
    folder = write_tables(tmp_path / "in", ["sub-1_bold.npy"], regions=5)
    with pytest.raises(ValueError, match="sub-1_bold.npy has 5 regions but the atlas atlas has 3"):
        prepare(folder, tmp_path / "out", atlas=toy_atlas, coordinates=None)


@pytest.mark.parametrize("odd", [0, 1, 2])
def test_the_recording_with_another_region_count_is_named(tmp_path, odd):
    folder = write_tables(tmp_path / "in", [f"sub-{i}_bold.npy" for i in range(3)])
    np.save(folder / f"sub-{odd}_bold.npy", table(30, 7))
    with pytest.raises(ValueError, match=f"sub-{odd}_bold.npy has 7 regions, but .* have 4"):
        prepare(folder, tmp_path / "out")


def test_a_non_integer_atlas_is_named(tmp_path):
    from brainlm_hf.data import load_atlas

    nib.save(nib.Nifti1Image(RNG.normal(size=(4, 4, 4)).astype(np.float32), np.eye(4)), tmp_path / "prob.nii.gz")
    with pytest.raises(ValueError, match="prob.nii.gz holds non-integer values"):
        load_atlas(tmp_path / "prob.nii.gz")


# ---------------------------------------------------------------------------------------------------- convert


def original(tmp_path) -> Path:
    folder = tmp_path / "original"
    folder.mkdir()
    shutil.copy(reference_file("brainlm_small", "mask_ratio_0.20", "config.json"), folder / "config.json")
    (folder / "model.safetensors").write_bytes(reference_bytes("brainlm_small", "model.safetensors"))
    return folder


@pytest.fixture
def local_a424(a424_folder, monkeypatch):
    """`load_a424()` and `a424_coordinates()` read the A424 folder of the tests (no download): conversion takes its
    coordinates from it."""
    import functools

    from brainlm_hf.data import atlas

    monkeypatch.setattr(atlas, "load_a424", functools.partial(atlas.load_a424, a424_folder))
    monkeypatch.setattr(atlas, "a424_coordinates", lambda: atlas.load_a424(a424_folder).coordinates)


def test_convert_refuses_a_non_empty_output_and_overwrite_replaces_it_whole(tmp_path, local_a424):
    from brainlm_hf.convert import convert_checkpoint

    source, out = original(tmp_path), tmp_path / "converted"
    out.mkdir()
    (out / "README.md").write_text("my notes")
    (out / "notes.txt").write_text("more notes")
    with pytest.raises(FileExistsError, match=f"{out} is not empty \\(README.md, notes.txt\\).*overwrite=True"):
        convert_checkpoint(str(source), str(out))
    assert (out / "README.md").read_text() == "my notes"
    convert_checkpoint(str(source), str(out), overwrite=True)  # replaced whole: nothing of the old folder is left
    assert not (out / "notes.txt").exists() and "my notes" not in (out / "README.md").read_text()
    first = (out / "model.safetensors").read_bytes()
    convert_checkpoint(str(source), str(out), overwrite=True)
    assert (out / "model.safetensors").read_bytes() == first
    (tmp_path / "empty").mkdir()
    convert_checkpoint(str(source), str(tmp_path / "empty"))  # an empty folder is fine
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_a_full_disk_while_converting_keeps_the_earlier_conversion(tmp_path, monkeypatch, local_a424):
    import errno

    from brainlm_hf.convert import convert_checkpoint

    source, out = original(tmp_path), tmp_path / "converted"
    convert_checkpoint(str(source), str(out))
    before = {p.name: p.read_bytes() for p in out.iterdir()}

    def full(self, folder, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device", str(Path(folder) / "preprocessor_config.json"))

    monkeypatch.setattr(BrainLMFeatureExtractor, "save_pretrained", full)
    with pytest.raises(OSError, match=f"cannot write {out}: No space left on device; {out} was left as it was"):
        convert_checkpoint(str(source), str(out), overwrite=True)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


@pytest.mark.parametrize("inside", ["", "hf", "a/b"])
def test_convert_never_writes_into_its_source(tmp_path, inside):
    from brainlm_hf.convert import convert_checkpoint

    source = original(tmp_path)
    files = {p.name: p.read_bytes() for p in source.iterdir()}
    with pytest.raises(ValueError, match="source checkpoint"):
        convert_checkpoint(str(source), str(source / inside), overwrite=True)
    assert {p.name: p.read_bytes() for p in source.iterdir()} == files


def test_convert_overwrite_never_deletes_the_source(tmp_path):
    from brainlm_hf.convert import convert_checkpoint

    source = original(tmp_path)
    with pytest.raises(ValueError, match="holds the input"):
        convert_checkpoint(str(source), str(tmp_path), overwrite=True)
    assert (source / "config.json").is_file()


def test_a_failed_conversion_leaves_the_earlier_one(tmp_path, local_a424):
    from brainlm_hf.convert import convert_checkpoint

    source, out = original(tmp_path), tmp_path / "converted"
    convert_checkpoint(str(source), str(out))
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    with pytest.raises(ValueError, match="architecture is not brainlm-111m"):
        convert_checkpoint(str(source), str(out), expected_preset="brainlm-111m", overwrite=True)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before


@pytest.mark.parametrize("name", ["/nonexistent/ckpt", "./missing", "../missing", "~/missing-brainlm", "a/b/c", "a b"])
def test_a_source_path_that_does_not_exist(tmp_path, name, monkeypatch):
    from brainlm_hf.convert import convert_checkpoint

    monkeypatch.chdir(tmp_path)
    with pytest.raises(FileNotFoundError, match=f"^no such folder: {name}$"):
        convert_checkpoint(name, str(tmp_path / "out"))


def test_a_hub_source_that_cannot_be_reached_names_the_repository(tmp_path):
    from brainlm_hf.convert import convert_checkpoint

    with pytest.raises(
        OSError,
        match=r"could not fetch old_13M/config.json of the Hub repository someone/brainlm \(subfolder old_13M\)",
    ) as error:
        convert_checkpoint("someone/brainlm", str(tmp_path / "out"), subfolder="old_13M")
    assert "/nonexistent" not in str(error.value)


def test_damaged_source_files_are_named(tmp_path):
    from brainlm_hf.convert import load_original

    source = original(tmp_path)
    (source / "model.safetensors").write_bytes(b"garbage")
    with pytest.raises(ValueError, match="original/model.safetensors: cannot read the weights"):
        load_original(str(source))
    (source / "model.safetensors").unlink()
    torch.save({"x": torch.zeros(1)}, source / "pytorch_model.bin")
    (source / "pytorch_model.bin").write_bytes((source / "pytorch_model.bin").read_bytes()[:50])
    with pytest.raises(ValueError, match="original/pytorch_model.bin: cannot read the weights"):
        load_original(str(source))
    (source / "config.json").write_text("[]")
    with pytest.raises(ValueError, match="original/config.json is not a model config"):
        load_original(str(source))


# ----------------------------------------------------------------------------------------------- path helpers


@pytest.mark.parametrize(
    "name, path_like",
    [
        ("/abs/model", True), ("./model", True), ("../model", True), ("~/model", True), ("a/b/c", True),
        (".", True), ("a b", True), ("org/model", False), ("brainlm-111m", False), ("vandijklab/brainlm", False),
    ],
)  # fmt: skip
def test_path_or_hub_id(name, path_like):
    from brainlm_hf.folders import is_path_like

    assert is_path_like(name) is path_like


@pytest.mark.parametrize("name", ["checkpoint_100", "checkpoint_7_nan", "checkpoint_100.partial", "step"])
def test_a_step_checkpoint_is_not_a_model(tmp_path, name):
    from brainlm_hf.training.checkpoints import check_model_path

    folder = tmp_path / "run" / "checkpoints" / name
    folder.mkdir(parents=True)
    (folder / ("optimizer.bin" if name == "step" else "model.safetensors")).write_bytes(b"")
    with pytest.raises(ValueError, match=f"{folder} is a step checkpoint.*final.*resume_from_checkpoint='{folder}'"):
        check_model_path(str(folder), "--model")


def test_a_run_folder_points_to_its_final_model(tmp_path, config):
    from brainlm_hf.training.checkpoints import check_model_path

    BrainLMForMaskedSignalModeling(config).save_pretrained(tmp_path / "run" / "final")
    check_model_path(str(tmp_path / "run" / "final"), "--model")
    with pytest.raises(FileNotFoundError, match="has no config.json: .*the final model of this run is .*run/final"):
        check_model_path(str(tmp_path / "run"), "--model")
    check_model_path("brainlm-tiny", "--model", presets=["brainlm-tiny"])
    check_model_path("org/model", "--model")  # a Hub id is left to the Hub


def test_the_cli_describes_operating_system_errors_in_one_line():
    from brainlm_hf.cli import describe_error

    assert describe_error(PermissionError(13, "Permission denied", "/data/out")) == "/data/out: Permission denied"
    assert describe_error(ValueError("two\nlines")) == "two lines"
    assert (
        describe_error(OSError(28, "No space left on device", "/data/out/x")) == "/data/out/x: No space left on device"
    )
