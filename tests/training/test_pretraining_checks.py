"""Issue 16: a pretraining run that cannot work stops before its first step with one line naming the numbers and the
fix (exit status 2), and no loop waits forever on data."""

import contextlib
import json
import logging
import os
import shutil
import signal
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from brainlm_hf import BrainLMConfig, BrainLMFeatureExtractor, BrainLMForMaskedSignalModeling
from brainlm_hf.cli import main
from brainlm_hf.data import prepare_dataset
from brainlm_hf.training.checks import check_pretraining_data

from ..conftest import one_thread
from ..forked import run_brainlm

REGIONS = 10


def make(folder: Path, lengths, coordinates=True, **options) -> Path:
    """A prepared dataset of `len(lengths)` random recordings (`REGIONS` regions), all in the training split."""
    rng = np.random.default_rng(0)
    raw = folder.with_name(folder.name + "_raw")
    raw.mkdir(parents=True)
    for i, length in enumerate(lengths):
        np.save(raw / f"sub-{i:02d}_bold.npy", rng.normal(size=(length, REGIONS)).astype(np.float32))
    prepare_dataset(
        raw / "*.npy",
        folder,
        normalization="zscore",
        splits={"train": 1.0},
        coordinates=rng.normal(size=(REGIONS, 3)) * 50 if coordinates else None,
        **{"shard_multiple": 1, **options},
    )
    return folder


def edit_summary(folder: Path, edit) -> None:
    """Change `prepare_summary.json` as `edit(splits)` says (the shards it lists are what the dataset holds)."""
    path = folder / "prepare_summary.json"
    summary = json.loads(path.read_text())
    edit(summary["splits"])
    path.write_text(json.dumps(summary))


def edit_processor(folder: Path, **changes) -> None:
    path = folder / "preprocessor_config.json"
    config = json.loads(path.read_text())
    config.update(changes)
    path.write_text(json.dumps(config))


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("checks")
    sets = {
        "one": make(root / "one", [250]),
        "two_shards": make(root / "two_shards", [250, 250], shard_multiple=2),
        "mixed": make(root / "mixed", [250, 450, 460]),
        "no_coordinates": make(root / "no_coordinates", [250, 250], coordinates=False),
        "window_30": make(root / "window_30", [250, 250], num_timepoints=30),
    }
    sets["too_short"] = root / "too_short"
    shutil.copytree(sets["one"], sets["too_short"])
    edit_processor(sets["too_short"], num_timepoints=400)
    sets["skipping"] = root / "skipping"
    shutil.copytree(sets["mixed"], sets["skipping"])
    edit_processor(sets["skipping"], num_timepoints=300)
    sets["five_coordinates"] = root / "five_coordinates"
    shutil.copytree(sets["one"], sets["five_coordinates"])
    edit_processor(sets["five_coordinates"], coordinates=np.ones((5, 3)).tolist())
    sets["no_train"] = root / "no_train"
    shutil.copytree(sets["one"], sets["no_train"])
    (sets["no_train"] / "train").rename(sets["no_train"] / "validation")
    edit_summary(sets["no_train"], lambda splits: splits.update(validation=splits.pop("train")))
    sets["short_validation"] = root / "short_validation"
    shutil.copytree(sets["skipping"], sets["short_validation"])
    (sets["short_validation"] / "validation").mkdir()
    for shard in (sets["one"] / "train").glob("*.parquet"):  # its one recording has 250 < 300 timepoints
        shutil.copy(shard, sets["short_validation"] / "validation" / shard.name)
    one = json.loads((sets["one"] / "prepare_summary.json").read_text())["splits"]["train"]
    edit_summary(sets["short_validation"], lambda splits: splits.update(validation=one))
    return sets


def models(root: Path) -> dict:
    """A checkpoint trained (here: saved) with 12 regions, one with other coordinates, a small tile-layout config."""
    config = BrainLMConfig.from_preset("brainlm-tiny")
    rng = np.random.default_rng(1)
    made = {}
    for name, regions in (("twelve_regions", 12), ("other_coordinates", REGIONS)):
        BrainLMForMaskedSignalModeling(config).save_pretrained(root / name)
        BrainLMFeatureExtractor(coordinates=rng.normal(size=(regions, 3)).tolist()).save_pretrained(root / name)
        made[name] = root / name
    sizes = {"hidden_size": 32, "intermediate_size": 64, "decoder_hidden_size": 32, "decoder_intermediate_size": 64}
    tiles = BrainLMConfig(
        token_layout="tile_2d", patch_size=16, image_size=32, num_hidden_layers=1, num_attention_heads=4,
        decoder_num_hidden_layers=1, decoder_num_attention_heads=4, **sizes,
    )  # fmt: skip
    tiles.to_json_file(root / "tiles.json")
    made["tiles"] = root / "tiles.json"
    return made


def pretrain_cli(dataset: Path, output: Path, *options: str, **values) -> list[str]:
    arguments = {"max_steps": 1, "eval_steps": 0, "save_steps": 1, "logging_steps": 1, **values}
    return ["pretrain", "--dataset", str(dataset), "--output_dir", str(output), *options] + [
        item for key, value in arguments.items() for item in (f"--{key}", str(value))
    ]


@contextlib.contextmanager
def time_limit(seconds: int, what: str):
    """Fails the test when the code inside runs longer than `seconds`: SIGALRM interrupts it, a spinning loop too."""

    def expire(signum, frame):
        pytest.fail(f"{what} still runs after {seconds} s", pytrace=False)

    previous = signal.signal(signal.SIGALRM, expire)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


CASES = {
    "crops_zero": ("one", {"crops_per_recording": 0}, "--crops_per_recording must be at least 1, got 0"),
    "crops_negative": ("one", {"crops_per_recording": -1}, "--crops_per_recording must be at least 1, got -1"),
    "batch_zero": (
        "one",
        {"per_device_train_batch_size": 0},
        "--per_device_train_batch_size must be at least 1, got 0",
    ),
    "accumulation_zero": (
        "one",
        {"gradient_accumulation_steps": 0},
        "--gradient_accumulation_steps must be at least 1",
    ),
    "workers_negative": ("one", {"dataloader_num_workers": -1}, "--dataloader_num_workers must be at least 0, got -1"),
    "logging_zero": ("one", {"logging_steps": 0}, "--logging_steps must be at least 1, got 0"),
    "fewer_windows_than_a_batch": (
        "one",
        {},
        "One epoch holds 4 training windows (1 recording x 4 crops), fewer than one batch of 8: lower "
        "--per_device_train_batch_size=4, raise --crops_per_recording=8 or add recordings.",
    ),
    "fewer_windows_per_accumulation_stream": (
        "two_shards",
        {"gradient_accumulation_steps": 2, "per_device_train_batch_size": 6},
        "Each of the 2 stream parts (processes x gradient accumulation steps x loader workers) reads 1 of the 2 "
        "shards per epoch, as few as 4 windows (1 recording x 4 crops), fewer than one batch of 6: lower "
        "--per_device_train_batch_size=4, raise --crops_per_recording=6, use fewer processes, accumulation "
        "steps or workers or add recordings.",
    ),
    "more_workers_than_shards": (
        "two_shards",
        {"dataloader_num_workers": 4, "per_device_train_batch_size": 2},
        "2 training shards cannot feed 4 stream parts (1 process x 1 gradient accumulation step x 4 loader workers)",
    ),
    "all_recordings_too_short": (
        "too_short",
        {},
        "No training windows: all 1 training recordings are shorter than one window of 400 timepoints (the longest "
        "has 250)",
    ),
    "window_not_a_multiple_of_the_patch_size": (
        "window_30",
        {},
        "The dataset's windows have 30 timepoints (num_timepoints of its processor), not a multiple of "
        "brainlm-tiny's patch_size 20: prepare the dataset with num_timepoints=20 or 40",
    ),
    "no_coordinates": (
        "no_coordinates",
        {},
        "no_coordinates has no region coordinates, which a region-window model (brainlm-tiny) embeds: prepare it "
        "again with --atlas-coordinates FILE (label x y z) or --atlas.",
    ),
    "regions_unlike_the_processor": (
        "five_coordinates",
        {"per_device_train_batch_size": 4},
        "five_coordinates/preprocessor_config.json has 5 regions, but the recordings of",
    ),
    "no_training_split": ("no_train", {}, "no_train has no train/ split to pretrain on (--dataset)."),
    "validation_without_windows": (
        "short_validation",
        {"per_device_train_batch_size": 2},
        "The validation split has no window: its 1 recordings are all shorter than 300 timepoints",
    ),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_a_run_that_cannot_work_is_refused_with_one_line(data, tmp_path, capsys, case):
    """Within 30 s (a run that spins fails the test), as the two mistakes that used to spin forever (issue 16)."""
    name, values, message = CASES[case]
    with time_limit(30, f"the run of case {case}"):
        assert main(pretrain_cli(data[name], tmp_path / "out", **values)) == 2
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert error.startswith("brainlm pretrain: error: ") and message in error, error
    assert not (tmp_path / "out" / "checkpoints").exists()


@pytest.mark.parametrize(
    "model, message",
    [
        ("twelve_regions", "was trained on 12 regions (its preprocessor_config.json) but the dataset has 10"),
        ("other_coordinates", "The dataset's region coordinates (model order) differ from those"),
        ("tiles", "The dataset's windows (10 regions x 200 timepoints) do not fit"),
    ],
)
def test_a_model_that_does_not_match_the_data_is_refused(data, tmp_path, capsys, model, message):
    path = models(tmp_path)[model]
    assert main(pretrain_cli(data["one"], tmp_path / "out", model=path, per_device_train_batch_size=4)) == 2
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert error.startswith("brainlm pretrain: error: ") and message in error, error


def test_recordings_shorter_than_a_window_are_counted_and_skipped(data, tmp_path, caplog):
    with caplog.at_level(logging.WARNING):
        assert (
            main(pretrain_cli(data["skipping"], tmp_path / "out", per_device_train_batch_size=4, eval_windows=0)) == 0
        )
    assert "1 of 3 training recordings are shorter than one window of 300 timepoints and are skipped." in caplog.text
    assert (tmp_path / "out" / "final" / "model.safetensors").is_file()


@pytest.mark.slow  # the fork server (tests/forked.py)
def test_the_runs_that_used_to_spin_forever_exit_within_seconds(data, tmp_path):
    """The mistake that made `brainlm pretrain` spin at 100 % CPU with no log line (issue 16) that gets furthest
    into a run (fewer windows than a batch: past the model and the accelerator), as a process of its own (a fork
    of this one, killed after 120 s) with its exit status and streams; it and the other one (`crops_zero`) are
    among the cases above, in this process with a time limit."""
    with one_thread():
        result = run_brainlm(pretrain_cli(data["one"], tmp_path / "out"), tmp_path, dict(os.environ), timeout=120)
    assert result.returncode == 2, result.stderr[-2000:]
    lines = result.stderr.strip().splitlines()
    assert lines[-1].startswith("brainlm pretrain: error: ") and "4 training windows" in lines[-1]


def test_check_counts_each_stream_part_per_process(data):
    """Two processes with one stream each: the check is per stream part, not over the whole dataset."""
    shards = sorted(str(p) for p in (data["two_shards"] / "train").glob("*.parquet"))
    processor = BrainLMFeatureExtractor.from_pretrained(data["two_shards"])
    counts = check_pretraining_data(shards, processor, 4, 8, num_processes=1, accumulation=1, parts=1)
    assert counts == {"recordings": 2, "too_short": 0, "windows": 8, "least_windows": 8}
    with pytest.raises(
        ValueError, match="Each of the 2 stream parts .* as few as 4 windows .* fewer than one batch of 8"
    ):
        check_pretraining_data(shards, processor, 4, 8, num_processes=2, accumulation=1, parts=1)


def test_a_wait_for_data_is_logged(caplog):
    """A loader that stalls does not leave the training loop silent: every `patience` seconds it says so."""
    from brainlm_hf.training.pretraining import DataFeed

    def slow():
        time.sleep(0.35)
        yield "batch"
        raise ValueError("the loader broke")

    feed = DataFeed(slow(), "a test loader", patience=0.1)
    with caplog.at_level(logging.WARNING):
        assert next(feed) == "batch"
        with pytest.raises(ValueError, match="the loader broke"):
            next(feed)
    assert "Waited 0.1 s for the next training batch (a test loader)." in caplog.text
    assert "Waited 0.3 s" in caplog.text
    feed.close()


def test_closing_the_data_feed_waits_for_the_item_in_hand():
    """`close` returns once the feeding thread has stopped: it finishes the item it is making, makes no other."""
    from brainlm_hf.training.pretraining import DataFeed

    made = []

    def endless():
        while True:
            time.sleep(0.2)  # the item in hand when `close` is called
            made.append(len(made))
            yield made[-1]

    feed = DataFeed(endless(), "an endless loader", size=1)
    assert next(feed) == 0
    feed.close()
    assert not feed._thread.is_alive()
    count = len(made)
    time.sleep(0.5)
    assert len(made) == count  # nothing made after close


def test_the_loss_is_read_without_a_sync_per_step_and_the_first_bad_step_is_kept():
    from brainlm_hf.training.pretraining import _LossWatch

    class Single:  # one process on a device where a read would be a host sync
        device = torch.device("cpu")

        @staticmethod
        def reduce(tensor, reduction):
            return tensor

    watch = _LossWatch(Single(), every_step=False)
    for step, loss in enumerate([1.0, 3.0, float("nan"), float("inf"), 2.0], start=1):
        watch.add(torch.tensor(loss), step)
        assert watch.due(False) is False
    mean, bad = watch.read()
    assert np.isnan(mean) and bad[0] == 3 and np.isnan(bad[1])
    watch = _LossWatch(Single(), every_step=False)
    watch.add(torch.tensor(1.0), 1)
    watch.add(torch.tensor(2.0), 2)
    assert watch.read() == (1.5, None)


def test_prepare_checks_the_window_length_against_the_patch_size(tmp_path, capsys):
    rng = np.random.default_rng(0)
    np.save(tmp_path / "sub-1_bold.npy", rng.normal(size=(80, 4)).astype(np.float32))
    inputs = str(tmp_path / "sub-1_bold.npy")
    assert main(["prepare", inputs, str(tmp_path / "a"), "--num-timepoints", "30", "--patch-size", "20"]) == 2
    assert "The window length 30 is not a multiple of the model's patch size 20: use --num-timepoints=20 or 40" in (
        capsys.readouterr().err
    )
    assert not (tmp_path / "a").exists()
    assert main(["prepare", inputs, str(tmp_path / "b"), "--num-timepoints", "30", "--split", "1", "0", "0"]) == 0
    assert (
        "--num-timepoints 30 is not a multiple of 20, the patch size of the brainlm presets" in capsys.readouterr().err
    )
    card = (tmp_path / "b" / "README.md").read_text()
    assert "a region_window model needs a patch_size dividing 30 (1, 2, 3, 5, 6, 10, 15, 30)" in card
    assert "does NOT fit the brainlm presets' patch_size 20" in card
    assert (
        main(
            [
                "prepare",
                inputs,
                str(tmp_path / "c"),
                "--num-timepoints",
                "30",
                "--patch-size",
                "10",
                "--split",
                "1",
                "0",
                "0",
            ]
        )
        == 0
    )
    assert "not a multiple" not in capsys.readouterr().err


def test_stream_positions_are_dealt_again_on_resume():
    from brainlm_hf.training.pretraining import stream_state_for

    position = lambda epoch, shard, window: {"epoch": epoch, "shard": shard, "window": window}  # noqa: E731
    two_processes = [
        {"first_stream": 2, "batches": {"parts": 2, "next": 1, "positions": [[position(1, 0, 3), position(1, 1, 0)]]}},
        {"first_stream": 0, "batches": {"parts": 2, "next": 1, "positions": [[position(0, 2, 5), position(1, 0, 0)]]}},
    ]
    two_processes.insert(1, {**two_processes[1], "first_stream": 1})  # three processes' entries, in any order
    one = stream_state_for(two_processes, 0, 1, 3)
    assert one["parts"] == 2 and one["next"] == 1
    assert [p[0]["window"] for p in one["positions"]] == [5, 5, 3]  # streams 0, 1, 2
    assert stream_state_for(two_processes, 2, 3, 1)["positions"] == [[position(1, 0, 3), position(1, 1, 0)]]
    with pytest.raises(ValueError, match="The checkpoint's data is 3 streams .* but this run has 4 \\(2 x 2\\)"):
        stream_state_for(two_processes, 0, 2, 2)
