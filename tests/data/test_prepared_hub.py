"""Prepared datasets on the Hub: `prepare --push-to-hub` uploads every shard, the processor, the summary and a
dataset card (with the licence the user sets) as a dataset repository in one commit (the upload is mocked)."""

from unittest import mock

import datasets
import numpy as np
import pytest
import yaml
from huggingface_hub import HfApi
from huggingface_hub.hf_api import RepoUrl

from brainlm_hf.cli import main
from brainlm_hf.data import PreparedDataset
from brainlm_hf.data.prepare import PrepareArguments
from brainlm_hf.errors import InvalidArgumentError


def tables(folder, subjects: int = 6) -> str:
    """`subjects` parcel tables of 60 timepoints x 5 regions; returns their glob."""
    generator = np.random.default_rng(0)
    for subject in range(subjects):
        np.save(folder / f"sub-{subject}_bold.npy", generator.normal(size=(60, 5)).astype(np.float32))
    return str(folder / "*.npy")


def test_prepare_pushes_the_whole_dataset_with_its_card(tmp_path):
    coordinates = tmp_path / "coordinates.dat"
    np.savetxt(coordinates, np.column_stack([np.arange(1, 6), np.random.default_rng(1).normal(size=(5, 3))]))
    commits = []
    with (
        mock.patch.object(
            HfApi, "create_repo", return_value=RepoUrl("https://huggingface.co/datasets/me/fmri")
        ) as create,
        mock.patch.object(HfApi, "upload_folder", side_effect=lambda **kw: commits.append(kw)),
    ):
        assert main(["prepare", tables(tmp_path), str(tmp_path / "prepared"), "--num-timepoints", "20",
                     "--normalization", "zscore", "--coordinates", str(coordinates), "--push-to-hub", "me/fmri",
                     "--license", "cc-by-4.0"]) == 0  # fmt: skip
    assert create.call_args.kwargs["repo_type"] == "dataset" and create.call_args.args == ("me/fmri",)
    (commit,) = commits
    dataset = PreparedDataset(tmp_path / "prepared")
    shards = sorted(f"{split}/{s.split('/')[-1]}" for split in dataset.splits for s in dataset.shards(split))
    top = [path.name for path in (tmp_path / "prepared").iterdir() if path.is_file()]
    assert {"README.md", "prepare_summary.json", "preprocessor_config.json"} <= set(top)
    assert commit["repo_type"] == "dataset" and sorted(commit["allow_patterns"]) == sorted(top + shards)
    assert commit["folder_path"] == str(tmp_path / "prepared")

    card = (tmp_path / "prepared" / "README.md").read_text()
    header = yaml.safe_load(card.split("---\n")[1])
    assert header["license"] == "cc-by-4.0"
    streamed = datasets.load_dataset(str(tmp_path / "prepared"), streaming=True)  # what the Hub's card says
    assert sorted(streamed) == dataset.splits
    counts = {split: sum(1 for _ in streamed[split]) for split in streamed}
    assert counts == {split: numbers["recordings"] for split, numbers in dataset.summary["splits"].items()}


def test_pushing_needs_the_licence_of_the_recordings(tmp_path):
    with pytest.raises(InvalidArgumentError, match="license=") as error:
        PrepareArguments([tables(tmp_path)], str(tmp_path / "prepared"), push_to_hub="me/fmri")
    assert error.value.argument == "license"


def test_a_card_without_a_licence_says_so(tmp_path):
    assert main(["prepare", tables(tmp_path), str(tmp_path / "prepared"), "--num-timepoints", "20",
                 "--normalization", "zscore"]) == 0  # fmt: skip
    card = (tmp_path / "prepared" / "README.md").read_text()
    assert yaml.safe_load(card.split("---\n")[1])["license"] == "unknown" and "set `license`" in card
