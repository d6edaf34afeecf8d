"""Loading by name when the Hub fails: every network path ends within `BRAINLM_NETWORK_TIMEOUT` with an error that
names the release or repository, the file, the host and how to work offline; the Hub's status is kept; a missing
subfolder, a damaged `config.json` and a damaged conversion cache entry are named."""

import json
import time
from pathlib import Path

import pytest
from huggingface_hub import constants

from brainlm_hf import BrainLMFeatureExtractor, BrainLMForMaskedSignalModeling, BrainLMModel
from brainlm_hf.cli import main
from brainlm_hf.convert import RELEASE_REPO
from brainlm_hf.data import atlas
from brainlm_hf.errors import InvalidArgumentError, InvalidFileError, MissingFileError, NetworkError
from brainlm_hf.network import network_timeout

from ..hub_server import HubServer, online_at, silent_server
from .test_hub_loading import caches, hub, original_files  # noqa: F401 - fixtures

BOUND = 1  # seconds: BRAINLM_NETWORK_TIMEOUT in these tests
LOADERS = [BrainLMForMaskedSignalModeling, BrainLMModel, BrainLMFeatureExtractor]


@pytest.fixture(autouse=True)
def small_bound(monkeypatch):
    monkeypatch.setenv("BRAINLM_NETWORK_TIMEOUT", str(BOUND))


def load_failure(loader, name: str = "brainlm-111m", **kwargs) -> tuple[Exception, float]:
    start = time.monotonic()
    with pytest.raises(Exception) as info:
        loader.from_pretrained(name, **kwargs)
    return info.value, time.monotonic() - start


def assert_names_the_release_and_offline_ways(error: Exception) -> None:
    text = str(error)
    assert isinstance(error, NetworkError), repr(error)
    assert "vitmae_111M/config.json of brainlm-111m (vandijklab/brainlm, subfolder vitmae_111M)" in text
    assert "To work offline" in text and "brainlm convert" in text and "$BRAINLM_CACHE" in text


@pytest.mark.slow
@pytest.mark.parametrize("loader", LOADERS, ids=lambda loader: loader.__name__)
def test_a_hub_that_never_answers_ends_within_the_bound(caches, loader):  # noqa: F811
    with silent_server() as endpoint, online_at(endpoint):
        error, seconds = load_failure(loader)
    assert_names_the_release_and_offline_ways(error)
    assert f"the Hub at {endpoint.removeprefix('http://')} did not answer within {BOUND} s" in str(error)
    assert "BRAINLM_NETWORK_TIMEOUT" in str(error)
    assert seconds < 15 * BOUND


@pytest.mark.slow
def test_brainlm_convert_from_a_silent_hub(caches, tmp_path, capsys):  # noqa: F811
    with silent_server() as endpoint, online_at(endpoint):
        start = time.monotonic()
        assert main(["convert", "brainlm-111m", str(tmp_path / "out")]) == 2
        assert time.monotonic() - start < 15 * BOUND
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines[-1].startswith("brainlm convert: error: could not fetch vitmae_111M/config.json of brainlm-111m")
    assert "did not answer within" in lines[-1]


@pytest.mark.slow
def test_a_hub_answering_500_keeps_the_status(caches):  # noqa: F811
    with HubServer() as server, server.online():
        server.commit(RELEASE_REPO, {"vitmae_111M/config.json": "{}"})
        server.fail_status = 500
        error, seconds = load_failure(BrainLMModel)
        host = server.endpoint.removeprefix("http://")
    assert_names_the_release_and_offline_ways(error)
    assert f"the Hub at {host} answered HTTP 500" in str(error)
    assert seconds < 15 * BOUND


@pytest.mark.slow
@pytest.mark.parametrize("loader", LOADERS, ids=lambda loader: loader.__name__)
def test_offline_mode_without_a_cached_copy(caches, monkeypatch, loader):  # noqa: F811
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    error, _ = load_failure(loader)
    assert_names_the_release_and_offline_ways(error)
    assert "offline mode is on (HF_HUB_OFFLINE=1)" in str(error)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    error, _ = load_failure(loader, "someone/brainlm-custom", local_files_only=True)
    assert isinstance(error, NetworkError) and "config.json of the Hub repository someone/brainlm-custom" in str(error)
    assert "local_files_only=True" in str(error)


@pytest.mark.slow
def test_a_cached_release_loads_while_the_hub_is_silent(hub, tmp_path):  # noqa: F811
    expected = BrainLMFeatureExtractor.from_pretrained("brainlm-111m")  # converted and cached
    with silent_server() as endpoint, online_at(endpoint):
        start = time.monotonic()
        processor = BrainLMFeatureExtractor.from_pretrained("brainlm-111m")
        model = BrainLMModel.from_pretrained("brainlm-111m")
        assert time.monotonic() - start < 15 * BOUND
    assert processor.to_dict() == expected.to_dict()
    assert model.config.token_layout == "tile_2d"


@pytest.mark.slow
def test_a_missing_subfolder_is_named(hub):  # noqa: F811
    hub.commit(RELEASE_REPO, delete=("vitmae_111M",), message="remove the 111M")
    for name in ("brainlm-111m", RELEASE_REPO):
        options = {} if name == "brainlm-111m" else {"subfolder": "vitmae_111M"}
        with pytest.raises(MissingFileError, match=r"has no folder vitmae_111M .*subfolder='vitmae_111M'"):
            BrainLMModel.from_pretrained(name, **options)


@pytest.mark.slow
@pytest.mark.parametrize("damage", ["truncated weights", "emptied folder", "cut config", "config list"])
def test_a_damaged_conversion_cache_entry_is_named(hub, damage):  # noqa: F811
    BrainLMModel.from_pretrained("brainlm-111m")
    [target] = Path(constants.HF_HUB_CACHE).glob(
        "models--vandijklab--brainlm/brainlm_hf-converted-v*/*/vitmae_111M/converted"
    )
    if damage == "truncated weights":
        weights = target / "model.safetensors"
        weights.write_bytes(weights.read_bytes()[:-100])
    elif damage == "emptied folder":
        for path in target.iterdir():
            path.unlink()
    else:
        config = target / "config.json"
        config.write_text(config.read_text()[:40] if damage == "cut config" else "[1, 2]")
    with pytest.raises(InvalidFileError, match=f"the cached conversion {target} is damaged .*force_download=True"):
        BrainLMModel.from_pretrained("brainlm-111m")
    BrainLMModel.from_pretrained("brainlm-111m", force_download=True)  # converted again
    assert BrainLMModel.from_pretrained("brainlm-111m").config.token_layout == "tile_2d"


@pytest.mark.slow
def test_a_cached_local_conversion_needs_no_lock(hub, tmp_path, monkeypatch):  # noqa: F811
    """A read-only cache holding the conversion: the hit takes no lock (writing one would fail)."""
    import filelock

    folder = tmp_path / "original"
    folder.mkdir()
    for name, data in original_files("vitmae_pad_small", "model.safetensors").items():
        (folder / name).write_bytes(data)
    expected = BrainLMModel.from_pretrained(folder)

    def read_only(*args, **kwargs):
        raise PermissionError("[Errno 13] Permission denied: 'converted.lock'")

    monkeypatch.setattr(filelock, "FileLock", read_only)
    assert BrainLMModel.from_pretrained(folder).config.to_dict() == expected.config.to_dict()


@pytest.mark.parametrize("content", ['{"model_type": "vit_mae", "hidden', "[1, 2]"])
def test_a_damaged_config_json_in_a_local_folder_is_named(tmp_path, content):
    (tmp_path / "config.json").write_text(content)
    for loader in LOADERS:
        with pytest.raises(
            InvalidFileError, match=f"{tmp_path / 'config.json'} (is not valid JSON|holds a JSON list)"
        ):
            loader.from_pretrained(tmp_path)


@pytest.mark.parametrize("value", ["soon", "0", "-1", "nan", "inf"])
def test_the_network_bound_must_be_a_positive_number(monkeypatch, value):
    monkeypatch.setenv("BRAINLM_NETWORK_TIMEOUT", value)
    with pytest.raises(InvalidArgumentError, match="BRAINLM_NETWORK_TIMEOUT="):
        network_timeout()
    monkeypatch.setenv("BRAINLM_NETWORK_TIMEOUT", "2.5")
    assert network_timeout() == 2.5


@pytest.mark.slow
def test_the_a424_download_from_a_silent_host_ends_within_the_bound(tmp_path):
    with silent_server() as endpoint:
        start = time.monotonic()
        with pytest.raises(NetworkError) as info:
            atlas.a424_coordinates(cache_dir=tmp_path, base_url=endpoint + "/a424/")
        assert time.monotonic() - start < 15 * BOUND
    text = str(info.value)
    assert f"could not download A424_Coordinates.dat from {endpoint}/a424/" in text
    assert "BRAINLM_NETWORK_TIMEOUT=1 s" in text and "atlas_coordinates=" in text
    assert "$BRAINLM_CACHE/atlases" in text and str(tmp_path / "atlases") in text


@pytest.mark.slow
def test_convert_downloads_only_the_coordinate_table(hub, tmp_path):  # noqa: F811
    hub.reset_log()
    assert main(["convert", "brainlm-13m", str(tmp_path / "out")]) == 0
    fetched = [entry.path for entry in hub.requests if "/static/a424/" in entry.path]
    assert fetched and all(path.endswith("A424_Coordinates.txt") for path in fetched)
    assert json.loads((tmp_path / "out" / "config.json").read_text())["model_type"] == "brainlm_hf"


@pytest.mark.parametrize("name", ["/no/such/folder", "./no/such", "runs/a/final"])
def test_a_path_that_does_not_exist_is_no_hub_request(name):
    for loader in LOADERS:
        with pytest.raises(MissingFileError, match=f"^no such folder: {name}$"):
            loader.from_pretrained(name)


@pytest.mark.slow
def test_convert_without_coordinates_or_network_names_its_own_option(hub, tmp_path, monkeypatch, capsys):  # noqa: F811
    """A local original folder, the A424 host silent and nothing cached: the error names `--atlas-coordinates` (an
    option `convert` has) and the cache folder, within the bound."""
    folder = tmp_path / "original"
    folder.mkdir()
    for name, data in original_files("brainlm_small", "model.safetensors").items():
        (folder / name).write_bytes(data)
    with silent_server() as endpoint:
        monkeypatch.setattr(atlas, "_A424_BASE", endpoint + "/a424/")
        start = time.monotonic()
        assert main(["convert", str(folder), str(tmp_path / "out")]) == 2
        assert time.monotonic() - start < 15 * BOUND
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert line.startswith("brainlm convert: error: could not download A424_Coordinates.dat from")
    assert "--atlas-coordinates" in line and "--atlas-dir" not in line and "$BRAINLM_CACHE/atlases" in line
