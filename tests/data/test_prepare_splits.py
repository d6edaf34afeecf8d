"""`prepare`'s subject split: per-split subject and recording counts, ids and shards against hand-computed numbers,
with unequal fractions."""

import json

import numpy as np
import pyarrow.parquet as pq
import pytest

from brainlm_hf.data import prepare_dataset
from brainlm_hf.data.prepare import split_subjects

SUBJECTS = [f"{i:02d}" for i in range(10)]
TWO_SESSIONS = {"00", "03", "06"}  # 13 recordings of 10 subjects


@pytest.mark.parametrize(
    ("fractions", "counts"),
    [
        # positions (rank + 0.5) / 10 = 0.05 .. 0.95 against the cumulative bounds 0.7, 0.9, 1.0
        ({"train": 0.7, "validation": 0.2, "test": 0.1}, {"train": 7, "validation": 2, "test": 1}),
        # fractions are relative: 3:1:1 -> bounds 0.6, 0.8, 1.0
        ({"train": 3, "validation": 1, "test": 1}, {"train": 6, "validation": 2, "test": 2}),
        ({"train": 0.5, "validation": 0.0, "test": 0.5}, {"train": 5, "test": 5}),
        ({"test": 0.1, "train": 0.9}, {"test": 1, "train": 9}),  # the first split named takes the first ranks
    ],
)
def test_split_subjects_counts_follow_the_fractions(fractions, counts):
    assignment = split_subjects(SUBJECTS * 2, fractions, seed=0)  # a subject listed twice is one subject
    assert sorted(assignment) == SUBJECTS
    assert {split: list(assignment.values()).count(split) for split in counts} == counts
    assert set(assignment.values()) == set(counts)
    shuffled = split_subjects(SUBJECTS[::-1], fractions, seed=0)
    assert shuffled == assignment  # the order subjects are listed in does not matter, only the seed
    other = [split_subjects(SUBJECTS, fractions, seed) for seed in range(1, 6)]
    assert any(seeded != assignment for seeded in other)  # the seed draws which subjects, not how many


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    """13 recordings (7 regions, 12 .. 24 timepoints) of 10 subjects, split 0.7 / 0.2 / 0.1, two shards a split."""
    folder = tmp_path_factory.mktemp("recordings")
    rng = np.random.default_rng(0)
    series = {}
    for subject in SUBJECTS:
        for session in ("1", "2") if subject in TWO_SESSIONS else ("1",):
            name = f"sub-{subject}_ses-{session}_bold"
            series[name] = (rng.normal(size=(12 + len(series), 7)) * (1 + len(series))).astype(np.float32)
            np.save(folder / f"{name}.npy", series[name])
    out = tmp_path_factory.mktemp("prepared") / "out"
    summary = prepare_dataset(
        folder / "*.npy", out, num_timepoints=10, splits={"train": 0.7, "validation": 0.2, "test": 0.1},
        shard_multiple=2, seed=3, repetition_time=1.0,
    )  # fmt: skip
    return out, summary, series


def _rows(out, split):
    tables = [pq.read_table(path) for path in sorted((out / split).glob("*.parquet"))]
    return tables, [row for table in tables for row in table.to_pylist()]


def test_prepare_writes_the_hand_computed_split_counts(prepared):
    out, summary, series = prepared
    assert json.loads((out / "prepare_summary.json").read_text())["splits"] == summary["splits"]
    subjects = {}
    for split, expected_subjects in {"train": 7, "validation": 2, "test": 1}.items():
        tables, rows = _rows(out, split)
        subjects[split] = {row["subject"] for row in rows}
        assert summary["splits"][split]["subjects"] == len(subjects[split]) == expected_subjects
        # every recording of each of the split's subjects, and only those: sessions stay with their subject
        ids = sorted(row["id"] for row in rows)
        expected_ids = sorted(name for name in series if name[4:6] in subjects[split])
        assert ids == expected_ids and summary["splits"][split]["recordings"] == len(expected_ids)
        assert len(expected_ids) == expected_subjects + len(subjects[split] & TWO_SESSIONS)
        # two shards when the split has 2 recordings or more, cut at linspace(0, n, 3): floor(n / 2) and the rest
        n = len(ids)
        expected_rows = [n] if n < 2 else [n // 2, n - n // 2]
        assert [table.num_rows for table in tables] == expected_rows
        assert summary["splits"][split]["shards"] == len(expected_rows)
        assert summary["splits"][split]["files"] == sorted(path.name for path in (out / split).glob("*.parquet"))
        for row in rows:  # each row holds its own recording
            values = np.asarray(row["series"], dtype=np.float32).reshape(row["num_timepoints"], row["num_regions"])
            np.testing.assert_array_equal(values, series[row["id"]])
    assert set().union(*subjects.values()) == set(SUBJECTS)
    assert sum(len(s) for s in subjects.values()) == len(SUBJECTS)  # no subject in two splits


def test_the_processor_statistics_come_from_the_training_recordings_only(prepared):
    out, _, series = prepared
    _, rows = _rows(out, "train")
    train = np.concatenate([series[row["id"]] for row in rows])
    config = json.loads((out / "preprocessor_config.json").read_text())
    np.testing.assert_allclose(config["median"], np.median(train, axis=0), rtol=1e-5)
    everything = np.concatenate(list(series.values()))
    assert not np.allclose(config["median"], np.median(everything, axis=0), rtol=1e-3)
