"""No command replaces or mixes an earlier output without `--overwrite` (`brainlm attention`, `embed`, `finetune`),
nor does the Python API (`analyze_attention`, `save_embeddings`, `finetune`); with it, the output is replaced
whole: no file of the earlier run stays beside the new ones. And `brainlm embed` reports the recordings it pads."""

import numpy as np
import pytest
import torch

from brainlm_hf import BrainLMFeatureExtractor, BrainLMModel
from brainlm_hf.analysis.attention_report import analyze_attention
from brainlm_hf.analysis.recording_embeddings import save_embeddings
from brainlm_hf.cli import main as cli
from brainlm_hf.errors import FolderNotEmptyError, InvalidArgumentError

from .test_cli_errors import REGIONS, build_workspace


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    w = tmp_path_factory.mktemp("outputs")
    build_workspace(w)
    return w


def listing(folder) -> dict:
    """Every file under `folder` -> its bytes."""
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def refused(capsys, code: int, command: str) -> None:
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and err[-1].startswith(f"brainlm {command}: error: ") and "--overwrite" in err[-1], err


def test_attention_into_an_earlier_report_is_refused_and_overwrite_replaces_it_whole(workspace, tmp_path, capsys):
    argv = [
        "attention",
        str(workspace / "model"),
        str(workspace / "tables"),
        str(tmp_path / "report"),
        "--stride",
        "20",
    ]
    assert cli(argv) == 0
    first = listing(tmp_path / "report")
    (tmp_path / "report" / "network_scores.csv").write_text("an earlier run's table\n")  # as from --networks
    refused(capsys, cli(argv), "attention")
    assert listing(tmp_path / "report") == {**first, "network_scores.csv": b"an earlier run's table\n"}
    assert cli([*argv, "--overwrite"]) == 0
    assert set(listing(tmp_path / "report")) == set(first)  # the leftover table is gone


def test_analyze_attention_refuses_a_folder_with_files_and_overwrite_drops_the_earlier_network_files(
    workspace, tmp_path
):
    model = BrainLMModel.from_pretrained(workspace / "model").eval()
    processor = BrainLMFeatureExtractor.from_pretrained(workspace / "model")
    recordings = {"a": np.random.default_rng(0).normal(size=(40, REGIONS)).astype(np.float32)}
    networks = ["N1", "N1", "N2", "N2", "N2"]
    report = analyze_attention(model, processor, recordings, tmp_path / "report", networks, stride=20)
    written = listing(tmp_path / "report")
    assert {"network_scores.csv", report["figures"]["networks"]} <= set(written)
    with pytest.raises(FolderNotEmptyError, match="overwrite=True"):
        analyze_attention(model, processor, recordings, tmp_path / "report", stride=20)
    assert listing(tmp_path / "report") == written
    report = analyze_attention(model, processor, recordings, tmp_path / "report", stride=20, overwrite=True)
    kept = set(listing(tmp_path / "report"))
    assert "network_scores.csv" not in kept and "attention_networks.png" not in kept and "networks" not in report
    assert kept == {"region_scores.csv", "attention.json", *report["figures"].values()}


def test_embed_onto_an_existing_file_is_refused_and_overwrite_replaces_it(workspace, tmp_path, capsys):
    output = tmp_path / "embeddings.npz"
    argv = ["embed", str(workspace / "model"), str(workspace / "tables"), "--output", str(output), "--quiet"]
    output.write_bytes(b"not to be lost")
    refused(capsys, cli(argv), "embed")
    assert output.read_bytes() == b"not to be lost"
    assert cli([*argv, "--overwrite"]) == 0
    assert len(np.load(output)["ids"]) == len(list((workspace / "tables").iterdir()))


def test_save_embeddings_refuses_an_existing_file_unless_overwrite(tmp_path):
    path = save_embeddings(tmp_path / "e.parquet", ["a"], np.ones((1, 2)))
    before = path.read_bytes()
    with pytest.raises(InvalidArgumentError, match=r"e\.parquet exists.*overwrite=True"):
        save_embeddings(path, ["b"], np.zeros((1, 2)))
    assert path.read_bytes() == before
    save_embeddings(path, ["b"], np.zeros((1, 2)), overwrite=True)
    assert path.read_bytes() != before


def test_finetune_into_a_folder_with_files_is_refused_and_overwrite_replaces_it_whole(workspace, tmp_path, capsys):
    output = tmp_path / "finetuned"
    output.mkdir()
    (output / "notes.txt").write_text("an earlier run")
    argv = ["finetune", "--dataset", str(workspace / "prepared"), "--model", str(workspace / "model"),
            "--label_columns", "score", "--output_dir", str(output), "--max_steps", "1",
            "--per_device_train_batch_size", "2", "--report_to", "none"]  # fmt: skip
    torch.manual_seed(0)
    refused(capsys, cli(argv), "finetune")
    assert listing(output) == {"notes.txt": b"an earlier run"}
    assert cli([*argv, "--overwrite"]) == 0
    warned = [line for line in capsys.readouterr().err.splitlines() if "newly initialised" in line]  # the new head
    assert len(warned) == 1 and warned[0].startswith("brainlm finetune: warning: "), warned
    files = listing(output)
    assert "notes.txt" not in files and "config.json" in files and "preprocessor_config.json" in files
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary folder left


def test_embed_reports_the_recordings_it_pads(workspace, tmp_path, capsys):
    # windows of 20: recordings of 15 and 5 timepoints are padded by 5 + 15 of their 40 window timepoints (50%)
    rng = np.random.default_rng(0)
    for name, length in (("long", 40), ("short", 15), ("shorter", 5)):
        np.save(tmp_path / f"{name}.npy", rng.normal(size=(length, REGIONS)).astype(np.float32))
    argv = ["embed", str(workspace / "model"), str(tmp_path / "*.npy"), "--output", str(tmp_path / "e.npz"),
            "--short-recordings", "pad", "--pooling", "mean", "--quiet"]  # fmt: skip
    assert cli(argv) == 0
    out = capsys.readouterr().out
    assert "padded (shorter than one window of 20 timepoints): 2 recordings, padding 50% of their windows'" in out
