"""What `prepare` tells a user about a small or unusual cohort: BIDS phenotype tables (`participants.tsv`), splits
left empty, too few shards for several processes, and recordings kept to be padded (API and `brainlm prepare`)."""

import warnings

import numpy as np
import pytest

from brainlm_hf.cli import main as cli
from brainlm_hf.data import PreparedDataset, prepare_dataset
from brainlm_hf.errors import InvalidInputError

WINDOW = 20


def write_tables(folder, subjects, lengths=None, regions: int = 3) -> None:
    """One `(T, regions)` table per subject, `sub-<subject>_bold.npy`, of `lengths[i]` timepoints (default 40)."""
    rng = np.random.default_rng(0)
    folder.mkdir(exist_ok=True)
    for index, subject in enumerate(subjects):
        length = lengths[index] if lengths else 40
        np.save(folder / f"sub-{subject}_bold.npy", rng.normal(size=(length, regions)).astype(np.float32))


def prepare(tmp_path, **options) -> dict:
    settings = {"num_timepoints": WINDOW, "normalization": "zscore", "splits": {"train": 1.0}, "shard_multiple": 1}
    settings["coordinates"] = np.arange(9.0).reshape(3, 3)  # no warning about missing coordinates
    return prepare_dataset(str(tmp_path / "tables"), tmp_path / "out", **{**settings, **options})


def scores(folder) -> dict:
    dataset = PreparedDataset(folder)
    return {row["subject"]: row["score"] for row in dataset.recordings("train", ["subject", "score"])}


@pytest.mark.parametrize("prefix", ["sub-", ""])
def test_participants_tsv_labels_the_recordings_with_or_without_the_sub_prefix(tmp_path, prefix):
    write_tables(tmp_path / "tables", ["01", "02", "03"])
    table = "participant_id\tscore\n" + "".join(f"{prefix}{s}\t{v}\n" for s, v in [("01", 1.5), ("02", 2.5)])
    (tmp_path / "participants.tsv").write_text(table)
    with pytest.warns(UserWarning, match=r"1 recordings have no row in the phenotype table.*sub-03_bold"):
        summary = prepare(tmp_path, phenotypes=tmp_path / "participants.tsv")
    assert summary["without_phenotypes"] == ["sub-03_bold"]
    assert scores(tmp_path / "out") == {"01": 1.5, "02": 2.5, "03": None}


def test_a_subject_column_with_the_sub_prefix_matches_too(tmp_path):
    write_tables(tmp_path / "tables", ["01", "02"])
    (tmp_path / "p.csv").write_text("subject,score\nsub-01,1\nsub-02,2\n")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # every recording labelled: nothing to warn about
        prepare(tmp_path, phenotypes=tmp_path / "p.csv")
    assert scores(tmp_path / "out") == {"01": 1, "02": 2}


def test_the_same_subject_with_and_without_the_prefix_is_a_repeated_row(tmp_path):
    write_tables(tmp_path / "tables", ["01"])
    (tmp_path / "p.tsv").write_text("participant_id\tscore\nsub-01\t1\n01\t2\n")
    with pytest.raises(ValueError, match=r"repeated subject values: \['01'\]"):
        prepare(tmp_path, phenotypes=tmp_path / "p.tsv")


def test_a_table_that_labels_no_recording_is_an_error_naming_both_first_ids(tmp_path):
    write_tables(tmp_path / "tables", ["01", "02"])
    (tmp_path / "p.tsv").write_text("participant_id\tscore\nsub-A7\t1\nsub-B8\t2\n")
    with pytest.raises(
        InvalidInputError, match=r"labels none of the 2 recordings: its first subject is 'sub-A7'.*'01'"
    ):
        prepare(tmp_path, phenotypes=tmp_path / "p.tsv")
    assert not (tmp_path / "out").exists()
    code = cli(["prepare", str(tmp_path / "tables"), str(tmp_path / "cli"), "--phenotypes", str(tmp_path / "p.tsv")])
    assert code == 2 and not (tmp_path / "cli").exists()


def test_a_validation_split_left_empty_is_reported_with_the_numbers_and_the_fix(tmp_path, capsys):
    # 6 subjects at 0.8 / 0.1 / 0.1: 5 train, 0 validation, 1 test (as in the issue)
    write_tables(tmp_path / "tables", [f"{i:02d}" for i in range(1, 7)])
    argv = [
        "prepare",
        str(tmp_path / "tables"),
        str(tmp_path / "out"),
        "--num-timepoints",
        "20",
        "--shard-multiple",
        "1",
    ]
    assert cli(argv) == 0
    err = capsys.readouterr().err
    assert "brainlm prepare: warning: 6 subjects split as train 5, validation 0, test 1 subjects" in err
    assert "the validation split is empty" in err and "at least 0.17 of the total" in err
    assert not PreparedDataset(tmp_path / "out").shards("validation")


def test_a_split_given_no_fraction_is_not_reported(tmp_path):
    write_tables(tmp_path / "tables", ["01", "02"])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        prepare(tmp_path, splits={"train": 1.0, "validation": 0.0, "test": 0.0})


def test_too_few_train_recordings_for_the_shard_multiple_are_reported(tmp_path, capsys):
    # 5 training recordings with --shard-multiple 8 make 1 shard: a run of 2 processes would be refused
    write_tables(tmp_path / "tables", [f"{i:02d}" for i in range(1, 6)])
    argv = ["prepare", str(tmp_path / "tables"), str(tmp_path / "out"), "--num-timepoints", "20", "--splits", "1", "0",
            "0", "--shard-multiple", "8"]  # fmt: skip
    assert cli(argv) == 0
    err = capsys.readouterr().err
    assert "brainlm prepare: warning: The train split has 5 recordings, too few for --shard-multiple=8" in err
    assert "it is 1 shard" in err and "prepare with --shard-multiple=4" in err
    assert len(PreparedDataset(tmp_path / "out").shards("train")) == 1
    assert cli([*argv[:2], str(tmp_path / "out4"), *argv[3:-1], "4"]) == 0  # the advice holds: 4 shards, no warning
    assert "The train split has" not in capsys.readouterr().err
    assert len(PreparedDataset(tmp_path / "out4").shards("train")) == 4


def test_padded_recordings_are_reported_with_the_share_of_padding(tmp_path, capsys):
    # windows of 20: recordings of 15 and 5 timepoints are padded by 5 + 15 of their 40 window timepoints (50%)
    write_tables(tmp_path / "tables", ["01", "02", "03"], lengths=[40, 15, 5])
    argv = ["prepare", str(tmp_path / "tables"), str(tmp_path / "out"), "--num-timepoints", "20", "--splits", "1", "0",
            "0", "--shard-multiple", "1", "--short-recordings", "pad", "--normalization", "zscore"]  # fmt: skip
    assert cli(argv) == 0
    out = capsys.readouterr().out
    assert (
        "kept to be padded (shorter than 20 timepoints): 2 recordings, padding 50% of their windows' timepoints" in out
    )
