"""`prepare_dataset` at cohort scale: several reading processes (`num_proc`) and parts prepared apart
(`part="I/N"`, then `combine=`) give the very files of one single-process run."""

import numpy as np
import pandas as pd
import pytest

from brainlm_hf.data import prepare_dataset
from brainlm_hf.errors import InvalidArgumentError, InvalidFileError, MissingFileError

from ..conftest import save_region_image, toy_atlas

OPTIONS = {"num_timepoints": 20, "splits": {"train": 0.5, "validation": 0.25, "test": 0.25}, "shard_multiple": 2}


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    """Nine NIfTI runs of seven subjects on a toy atlas (lengths 15 to 47: one too short), and a phenotype table."""
    folder = tmp_path_factory.mktemp("cohort")
    atlas, labels = toy_atlas(folder, 6)
    rng = np.random.default_rng(3)
    runs = [("01", 1), ("01", 2), ("02", 1), ("03", 1), ("04", 1), ("05", 1), ("05", 2), ("06", 1), ("07", 1)]
    for number, (subject, session) in enumerate(runs):
        series = rng.normal(size=(15 + 4 * number, 3)).astype(np.float32) * (number + 1)
        save_region_image(folder / f"sub-{subject}_ses-{session}_bold.nii.gz", labels, series, 0.8)
    table = pd.DataFrame({"subject": [f"{s:02d}" for s in range(1, 8)], "age": np.arange(7) * 3.5 + 20})
    table.to_csv(folder / "participants.csv", index=False)
    return folder, atlas


def run(cohort, out, **options):
    folder, atlas = cohort
    inputs = str(folder / "sub-*_bold.nii.gz")
    phenotypes = folder / "participants.csv"
    return prepare_dataset(inputs, out, atlas=atlas, phenotypes=phenotypes, quiet=True, **OPTIONS, **options)


def folder_bytes(folder) -> dict:
    """Every file under `folder` (relative path -> bytes)."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def one_run(cohort, tmp_path_factory):
    out = tmp_path_factory.mktemp("one") / "out"
    summary = run(cohort, out)
    assert summary["too_short"] and len(summary["splits"]) == 3  # the case covers a left-out recording, 3 splits
    return folder_bytes(out)


@pytest.mark.slow
def test_two_reading_processes_write_the_same_bytes(cohort, one_run, tmp_path):
    run(cohort, tmp_path / "out", num_proc=2)
    assert folder_bytes(tmp_path / "out") == one_run


def test_three_parts_combined_write_the_same_bytes(cohort, one_run, tmp_path):
    parts = tmp_path / "parts"
    for index in (3, 1, 2):  # in any order, as a batch system runs them
        summary = run(cohort, parts, part=f"{index}/3")
        assert summary["recordings"] == 3
    assert sorted(p.name for p in parts.iterdir()) == [f"part-0000{i}-of-00003.parquet" for i in (1, 2, 3)]
    run(cohort, tmp_path / "out", combine=str(parts))
    assert folder_bytes(tmp_path / "out") == one_run


def test_combine_refuses_missing_or_foreign_parts(cohort, tmp_path):
    parts = tmp_path / "parts"
    run(cohort, parts, part="1/2")
    with pytest.raises(MissingFileError, match=r"lacks parts 2/2 of 2"):
        run(cohort, tmp_path / "out", combine=str(parts))
    run(cohort, parts, part="2/2", repetition_time=2.0)
    with pytest.raises(InvalidFileError, match=r"part-00002-of-00002.parquet was prepared with repetition_time=2.0"):
        run(cohort, tmp_path / "out", combine=str(parts))
    with pytest.raises(InvalidArgumentError, match="was prepared already"):
        run(cohort, parts, part="2/2")


@pytest.mark.parametrize("part", ["0/3", "4/3", "1", "a/b"])
def test_a_bad_part_is_refused_before_reading(cohort, tmp_path, part):
    with pytest.raises(InvalidArgumentError, match=r"part must be I/N with 1 <= I <= N"):
        run(cohort, tmp_path / "parts", part=part)
    assert not (tmp_path / "parts").exists()
