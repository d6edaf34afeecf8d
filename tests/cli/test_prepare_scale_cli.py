"""`brainlm prepare --part I/N`, `--combine`, `--num-proc`: the flags, the progress summary line and `--quiet`."""

import re

import numpy as np
import pytest

from brainlm_hf.cli import main

SUMMARY_LINE = re.compile(r"^prepare: 6 recordings, (\d+) windows in [\d.]+ s \([\d.]+ recordings/s\)$", re.M)


@pytest.fixture
def tables(tmp_path):
    """Six parcel tables of 4 regions, 30 to 80 timepoints: 1 + 1 + 2 + 2 + 3 + 3 windows of 25."""
    rng = np.random.default_rng(0)
    for subject, length in enumerate((30, 40, 50, 60, 75, 80), start=1):
        np.save(tmp_path / f"sub-{subject:02d}_bold.npy", rng.normal(size=(length, 4)).astype(np.float32))
    return tmp_path


def prepare(tables, out, *flags) -> int:
    common = ["--tr", "1.0", "--num-timepoints", "25", "--shard-multiple", "1", "--patch-size", "5"]
    return main(["prepare", str(tables / "*.npy"), str(out), *common, *flags])


def test_parts_then_combine_on_the_command_line(tables, tmp_path, capsys):
    for index in (1, 2):
        assert prepare(tables, tmp_path / "parts", "--part", f"{index}/2", "--quiet") == 0
        assert f"part {index}/2: 3 recordings in " in capsys.readouterr().out
    assert prepare(tables, tmp_path / "out", "--combine", str(tmp_path / "parts")) == 0
    captured = capsys.readouterr()
    assert "train:" in captured.out
    assert [int(n) for n in SUMMARY_LINE.findall(captured.err)] == [12]


def test_quiet_prints_no_progress(tables, tmp_path, capsys):
    assert prepare(tables, tmp_path / "out") == 0
    assert "prepare: 100%" in capsys.readouterr().err  # the bar, at its end
    assert prepare(tables, tmp_path / "quiet", "--quiet") == 0
    assert "recording" not in capsys.readouterr().err  # no bar, no summary line (warnings remain)


def test_part_and_combine_together_are_refused(tables, tmp_path, capsys):
    assert prepare(tables, tmp_path / "out", "--part", "1/2", "--combine", str(tmp_path)) == 2
    assert "--part" in capsys.readouterr().err


@pytest.mark.slow
def test_num_proc_on_the_command_line(tables, tmp_path, capsys):
    assert prepare(tables, tmp_path / "one") == 0
    assert prepare(tables, tmp_path / "two", "--num-proc", "2") == 0
    one, two = (sorted((tmp_path / name).rglob("*.parquet")) for name in ("one", "two"))
    assert [p.read_bytes() for p in one] == [p.read_bytes() for p in two] and one
    assert len(SUMMARY_LINE.findall(capsys.readouterr().err)) == 2
