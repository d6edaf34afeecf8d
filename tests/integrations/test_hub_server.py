"""The local test Hub (tests/hub_server.py), exercised through `huggingface_hub`'s public API over real HTTP."""

import pytest
import torch
from huggingface_hub import (
    HfApi,
    hf_hub_download,
    list_repo_refs,
    model_info,
    snapshot_download,
    try_to_load_from_cache,
)
from huggingface_hub.errors import EntryNotFoundError, RepositoryNotFoundError, RevisionNotFoundError

from brainlm_hf import BrainLMModel

from ..hub_server import HubServer

pytestmark = pytest.mark.slow  # every test talks to the local Hub server over HTTP
REPO = "brainlm-test/tiny"


@pytest.fixture
def hub():
    """A running test Hub that `huggingface_hub` talks to for the duration of the test."""
    with HubServer() as server, server.online():
        yield server


@pytest.fixture
def cache(tmp_path):
    """A fresh Hugging Face cache folder."""
    return tmp_path / "hf-cache"


def test_subfolder_file_at_two_revisions(hub, cache):
    first = hub.commit(REPO, {"ckpt/config.json": '{"v": 1}', "README.md": "# tiny"})
    second = hub.commit(REPO, {"ckpt/config.json": '{"v": 2}'}, message="bump")
    assert first != second and len(first) == len(second) == 40

    old = hf_hub_download(REPO, "config.json", subfolder="ckpt", revision=first, cache_dir=cache)
    new = hf_hub_download(REPO, "config.json", subfolder="ckpt", cache_dir=cache)  # main
    assert open(old).read() == '{"v": 1}' and open(new).read() == '{"v": 2}'
    assert f"snapshots/{first}/ckpt/config.json" in old and f"snapshots/{second}/ckpt/config.json" in new
    assert (cache / "models--brainlm-test--tiny" / "refs" / "main").read_text() == second
    assert hub.downloads() == ["ckpt/config.json", "ckpt/config.json"]


def test_second_load_is_a_cache_hit_and_a_new_commit_downloads_again(hub, cache):
    hub.commit(REPO, {"ckpt/config.json": '{"v": 1}', "ckpt/notes.txt": "same"})
    path = hf_hub_download(REPO, "config.json", subfolder="ckpt", cache_dir=cache)
    hf_hub_download(REPO, "notes.txt", subfolder="ckpt", cache_dir=cache)
    hub.reset_log()

    assert hf_hub_download(REPO, "config.json", subfolder="ckpt", cache_dir=cache) == path
    assert [(entry.method, entry.status) for entry in hub.requests] == [("HEAD", 200)]  # metadata only, no GET
    assert hub.downloads() == []

    second = hub.commit(REPO, {"ckpt/config.json": '{"v": 2}'})
    changed = hf_hub_download(REPO, "config.json", subfolder="ckpt", cache_dir=cache)
    assert changed != path and open(changed).read() == '{"v": 2}'
    # A file that the new commit left alone keeps its blob: the new snapshot links to it, nothing is downloaded.
    notes = hf_hub_download(REPO, "notes.txt", subfolder="ckpt", cache_dir=cache)
    assert second in notes and open(notes).read() == "same"
    assert hub.downloads() == ["ckpt/config.json"]


def test_a_commit_hash_already_cached_makes_no_request(hub, cache):
    commit = hub.commit(REPO, {"config.json": "{}"})
    hf_hub_download(REPO, "config.json", revision=commit, cache_dir=cache)
    hub.reset_log()
    hf_hub_download(REPO, "config.json", revision=commit, cache_dir=cache)
    assert hub.requests == []


def test_lfs_files_redirect_to_the_cdn(hub, cache):
    weights = bytes(range(256)) * 40
    hub.commit(REPO, {"ckpt/model.safetensors": weights})
    path = hf_hub_download(REPO, "ckpt/model.safetensors", cache_dir=cache)
    assert open(path, "rb").read() == weights
    head, get = hub.requests
    assert (head.method, head.status, head.file) == ("HEAD", 302, None)
    assert (get.method, get.status, get.file) == ("GET", 200, "ckpt/model.safetensors")
    assert get.path.startswith("/lfs/")  # served by the CDN port, reached without following the redirect
    blob_name = (cache / "models--brainlm-test--tiny" / "blobs").iterdir().__next__().name
    assert blob_name == hub.repos[REPO].commits[hub.repos[REPO].branches["main"]].tree["ckpt/model.safetensors"].sha256


def test_missing_file_repo_and_revision_raise_the_hub_errors(hub, cache):
    commit = hub.commit(REPO, {"config.json": "{}"})
    with pytest.raises(EntryNotFoundError):
        hf_hub_download(REPO, "missing.json", cache_dir=cache)
    # The client caches the absence at the commit the 404 named.
    assert try_to_load_from_cache(REPO, "missing.json", cache_dir=cache, revision=commit) is not None
    assert (cache / "models--brainlm-test--tiny" / ".no_exist" / commit / "missing.json").exists()
    with pytest.raises(RepositoryNotFoundError):
        hf_hub_download("brainlm-test/absent", "config.json", cache_dir=cache)
    with pytest.raises(RevisionNotFoundError):
        hf_hub_download(REPO, "config.json", revision="v9", cache_dir=cache)
    with pytest.raises(RepositoryNotFoundError):
        model_info("brainlm-test/absent")
    with pytest.raises(RevisionNotFoundError):
        HfApi().model_info(REPO, revision="0" * 40)
    assert [entry.status for entry in hub.requests] == [404] * 5


def test_model_info_refs_and_revision_lookups(hub):
    first = hub.commit(REPO, {"ckpt/config.json": "1", "ckpt/model.safetensors": b"\0" * 64})
    second = hub.commit(REPO, {"ckpt/config.json": "2"}, branch="v2")
    api = HfApi()

    info = api.model_info(REPO)
    assert info.sha == first and info.id == REPO
    assert sorted(sibling.rfilename for sibling in info.siblings) == ["ckpt/config.json", "ckpt/model.safetensors"]
    assert api.model_info(REPO, revision="v2").sha == second
    assert api.model_info(REPO, revision=first).sha == first
    detailed = {sibling.rfilename: sibling for sibling in api.model_info(REPO, files_metadata=True).siblings}
    assert detailed["ckpt/model.safetensors"].lfs.size == 64 and detailed["ckpt/config.json"].lfs is None

    assert api.resolve_revision(REPO, revision="v2").resolved == second
    refs = list_repo_refs(REPO)
    assert {ref.name: ref.target_commit for ref in refs.branches} == {"main": first, "v2": second}
    assert api.file_exists(REPO, "ckpt/config.json") and not api.file_exists(REPO, "config.json")
    assert not api.repo_exists("brainlm-test/absent")
    tree = api.list_repo_tree(REPO, recursive=False)
    assert [(entry.path, type(entry).__name__) for entry in tree] == [("ckpt", "RepoFolder")]


def test_snapshot_download_of_one_revision(hub, cache):
    first = hub.commit(REPO, {"ckpt/config.json": "1", "ckpt/model.safetensors": b"w1", "README.md": "r"})
    hub.commit(REPO, {"ckpt/config.json": "2"})
    folder = snapshot_download(REPO, revision=first, allow_patterns=["ckpt/*"], cache_dir=cache)
    assert folder.endswith(first)
    assert sorted(hub.downloads()) == ["ckpt/config.json", "ckpt/model.safetensors"]
    assert open(f"{folder}/ckpt/config.json").read() == "1"


def test_create_repo_and_upload_folder_round_trip(hub, cache, tmp_path):
    folder = tmp_path / "upload"
    (folder / "ckpt").mkdir(parents=True)
    (folder / "ckpt" / "config.json").write_text('{"hidden_size": 8}')
    (folder / "ckpt" / "model.safetensors").write_bytes(bytes(range(200)))
    (folder / "README.md").write_text("---\nlicense: apache-2.0\n---\n# tiny\n")
    api = HfApi()

    url = api.create_repo(REPO)
    assert url.repo_id == REPO and url.endpoint == hub.endpoint
    assert api.create_repo(REPO, exist_ok=True).repo_id == REPO
    commit = api.upload_folder(repo_id=REPO, folder_path=folder, commit_message="upload")
    assert commit.oid == api.model_info(REPO).sha

    downloaded = snapshot_download(REPO, cache_dir=cache)
    for name in ("ckpt/config.json", "ckpt/model.safetensors", "README.md"):
        assert (folder / name).read_bytes() == open(f"{downloaded}/{name}", "rb").read()

    # Unchanged files are skipped by the client (preupload returned their oid): no new commit.
    again = api.upload_folder(repo_id=REPO, folder_path=folder, commit_message="again")
    assert again.oid == commit.oid
    (folder / "ckpt" / "config.json").write_text('{"hidden_size": 16}')
    (folder / "README.md").unlink()
    changed = api.upload_folder(repo_id=REPO, folder_path=folder, commit_message="bump", delete_patterns=["*.md"])
    assert changed.oid != commit.oid
    assert sorted(hub.repos[REPO].commits[changed.oid].tree) == ["ckpt/config.json", "ckpt/model.safetensors"]


def test_transformers_from_pretrained_through_the_hub(hub, cache, tmp_path, config):
    torch.manual_seed(0)
    BrainLMModel(config).save_pretrained(tmp_path / "ckpt")
    commit = hub.commit(REPO, tmp_path / "ckpt")

    model = BrainLMModel.from_pretrained(REPO, cache_dir=cache)
    expected = BrainLMModel.from_pretrained(tmp_path / "ckpt")
    for (name, value), (expected_name, expected_value) in zip(
        model.state_dict().items(), expected.state_dict().items(), strict=True
    ):
        assert name == expected_name and torch.equal(value, expected_value)
    assert {"config.json", "model.safetensors"} <= set(hub.downloads())

    hub.reset_log()
    BrainLMModel.from_pretrained(REPO, cache_dir=cache, revision=commit)
    assert hub.downloads() == []
