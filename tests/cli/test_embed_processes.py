"""`brainlm embed` across processes: chunks of recordings shared by `--process I/N` or `accelerate launch`, one
output equal to one process's, and a run started again after a crash skips the chunks already done."""

import os
import re
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from brainlm_hf import BrainLMFeatureExtractor, BrainLMForMaskedSignalModeling
from brainlm_hf.analysis import recording_embeddings
from brainlm_hf.cli import main
from brainlm_hf.data import recordings

from ..conftest import one_thread

LENGTHS = (30, 47, 90, 61, 35, 120)  # 6 recordings of 7 regions: 1, 2, 3, 3, 2 and 4 covering windows of 30


@pytest.fixture
def workspace(tmp_path, config, inputs):
    torch.manual_seed(0)
    BrainLMForMaskedSignalModeling(config).save_pretrained(tmp_path / "model")
    coordinates = inputs["coordinates"].tolist()
    processor = BrainLMFeatureExtractor(normalization="zscore", coordinates=coordinates, num_timepoints=30)
    processor.save_pretrained(tmp_path / "model")
    rng = np.random.default_rng(0)
    (tmp_path / "tables").mkdir()
    for index, length in enumerate(LENGTHS):
        np.save(tmp_path / "tables" / f"sub-{index:02d}_bold.npy", rng.normal(size=(length, 7)).astype(np.float32))
    return tmp_path


@pytest.fixture
def reads(monkeypatch) -> list[str]:
    """The names of the input files read (`load_recording` calls), in order, cleared by the test as it goes."""
    names, load = [], recordings.load_recording

    def counting(path, *args, **kwargs):
        names.append(os.path.basename(path))
        return load(path, *args, **kwargs)

    monkeypatch.setattr(recordings, "load_recording", counting)
    return names


def tables(*indices) -> list[str]:
    return [f"sub-{i:02d}_bold.npy" for i in indices]


def embed_argv(workspace, output, *flags) -> list[str]:
    tables, model = str(workspace / "tables"), str(workspace / "model")
    return ["embed", model, tables, "--output", str(output), "--chunk-size", "2", "--pooling", "mean", *flags]


def embeddings(path) -> tuple[list, np.ndarray]:
    saved = np.load(path)
    return saved["ids"].tolist(), saved["embeddings"]


def test_two_processes_started_apart_write_the_one_process_output(workspace, capsys, reads):
    assert main(embed_argv(workspace, workspace / "one.npz", "--quiet")) == 0
    assert reads == tables(0, 1, 2, 3, 4, 5)
    out = workspace / "two.npz"
    reads.clear()
    assert main(embed_argv(workspace, out, "--process", "2/2", "--quiet")) == 0
    assert reads == tables(2, 3)  # each process reads the recordings of its chunks only: here chunk 1
    assert not out.exists() and sorted(p.name for p in (workspace / "two.npz.chunks").glob("chunk-*")) == [
        "chunk-00001.npz"
    ]
    reads.clear()
    assert main(embed_argv(workspace, out, "--process", "1/2")) == 0  # the last to finish writes the output
    assert reads == tables(0, 1, 4, 5)  # chunks 0 and 2
    ids, values = embeddings(out)
    one_ids, one = embeddings(workspace / "one.npz")
    assert ids == one_ids == [f"sub-{i:02d}_bold" for i in range(6)]
    np.testing.assert_array_equal(values, one)
    assert not (workspace / "two.npz.chunks").exists()
    # process 1/2 embedded chunks 0 and 2: recordings 0, 1, 4, 5 (1 + 2 + 2 + 4 windows)
    assert "embed: 4 recordings, 9 windows in " in capsys.readouterr().err


def test_a_run_started_again_after_a_crash_skips_the_finished_chunks(workspace, monkeypatch, capsys, reads):
    assert main(embed_argv(workspace, workspace / "one.npz", "--quiet")) == 0
    embed, calls = recording_embeddings.embed_recordings, []

    def crashing(model, processor, chunk, *args, **kwargs):
        calls.append(list(chunk))
        if len(calls) == 2:
            raise KeyboardInterrupt  # the process is stopped while it embeds its second chunk
        return embed(model, processor, chunk, *args, **kwargs)

    monkeypatch.setattr(recording_embeddings, "embed_recordings", crashing)
    out = workspace / "resumed.npz"
    with pytest.raises(KeyboardInterrupt):
        main(embed_argv(workspace, out, "--quiet"))
    assert not out.exists() and [p.name for p in (workspace / "resumed.npz.chunks").glob("chunk-*")] == [
        "chunk-00000.npz"
    ]
    other = embed_argv(workspace, out, "--quiet", "--pooling", "cls")  # chunks of mean pooling are not reused
    assert main(other) == 2 and "(pooling differ)" in capsys.readouterr().err
    reads.clear()
    assert main(embed_argv(workspace, out, "--quiet")) == 0
    assert reads == tables(2, 3, 4, 5)  # the finished chunk 0 is neither read nor embedded again
    names = [[str(workspace / "tables" / f"sub-{i:02d}_bold.npy") for i in pair] for pair in ((0, 1), (2, 3), (4, 5))]
    assert calls == [names[0], names[1], names[1], names[2]]  # chunk 0 once, the crashed chunk 1 again, chunk 2
    np.testing.assert_array_equal(embeddings(out)[1], embeddings(workspace / "one.npz")[1])


@pytest.mark.slow
def test_accelerate_launch_with_two_processes_and_a_killed_run(workspace):
    """Two CPU processes of `accelerate launch`; then a run left with half of its chunks, started again and killed
    (SIGKILL) once it adds one, then started again: both outputs equal the one-process output. Only the launch and
    the killed run need processes of their own; the other runs are in this one."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "ACCELERATE_USE_CPU": "1"}
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2"]
    launch += ["--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "-m", "brainlm_hf.cli"]
    with one_thread():
        assert main(embed_argv(workspace, workspace / "one.npz", "--quiet")) == 0
    two = subprocess.run(
        [*launch, *embed_argv(workspace, workspace / "two.npz")], env=env, timeout=300, capture_output=True, text=True
    )
    assert two.returncode == 0, two.stderr[-3000:]
    # each process embedded its own chunks: 0 and 2 (recordings 0, 1, 4, 5), and 1 (recordings 2, 3)
    assert sorted(re.findall(r"embed: (\d) recordings", two.stderr)) == ["2", "4"]
    np.testing.assert_array_equal(embeddings(workspace / "two.npz")[1], embeddings(workspace / "one.npz")[1])

    argv = embed_argv(workspace, workspace / "killed.npz", "--quiet", "--chunk-size", "1")
    # a run that stops after half of its chunks, deterministically: process 1 of 2 run alone (chunks 0, 2, 4)
    with one_thread():
        assert main([*argv, "--process", "1/2"]) == 0
    chunks = workspace / "killed.npz.chunks"
    assert sorted(p.name for p in chunks.glob("chunk-*.npz")) == [f"chunk-{c:05d}.npz" for c in (0, 2, 4)]
    assert not (workspace / "killed.npz").exists()
    # the whole run again, in a process killed as soon as it wrote a chunk of its own
    process = subprocess.Popen([sys.executable, "-m", "brainlm_hf.cli", *argv], env=env)
    while len(list(chunks.glob("chunk-*.npz"))) == 3 and process.poll() is None:
        time.sleep(0.01)
    process.kill()
    process.wait()
    with one_thread():
        assert main(argv) == 0
    np.testing.assert_array_equal(embeddings(workspace / "killed.npz")[1], embeddings(workspace / "one.npz")[1])
