"""Loading by name over real HTTP (tests/hub_server.py): short names, original repos and folders converted on load and
cached, converted repos through the Auto classes, and `brainlm convert --push-to-hub` to the same server."""

import io
import json
import shutil

import numpy as np
import pytest
import torch
from huggingface_hub import constants
from safetensors.torch import save
from transformers import AutoFeatureExtractor, AutoModel, AutoModelForPreTraining

from brainlm_hf import (
    BrainLMFeatureExtractor,
    BrainLMForMaskedSignalModeling,
    BrainLMForSequenceClassification,
    BrainLMModel,
    convert,
)
from brainlm_hf.analysis.recording_embeddings import load_processor
from brainlm_hf.cli import main
from brainlm_hf.convert import RELEASE_REPO, RELEASES
from brainlm_hf.data import atlas
from brainlm_hf.hub import CONVERSION_VERSION

from ..conftest import pin_a424_downloads, reference_bytes, reference_file, reference_tensors
from ..hub_server import HubServer
from .test_convert_cli import CONVERTED_FILES, RUNS

pytestmark = pytest.mark.slow  # every test talks to the local Hub server over HTTP

# subfolder of the release repository -> (reference case, weights file, seed of the perturbation)
LAYOUT = {
    "old_13M": ("brainlm_small", "pytorch_model.bin", None),
    "vitmae_111M": ("vitmae_pad_small", "model.safetensors", None),
    "vitmae_650M": ("vitmae_pad_small", "pytorch_model.bin", 1),  # other weights, so that the names are told apart
}


def original_files(case: str, weights_file: str, seed: int | None = None, scale: float = 0.05) -> dict[str, bytes]:
    """config.json and the weights of an original checkpoint (the reference fixture, perturbed when `seed` is set)."""
    files = {"config.json": reference_file(case, RUNS[case], "config.json").read_bytes()}
    if seed is None and weights_file == "model.safetensors":
        files[weights_file] = reference_bytes(case, "model.safetensors")
        return files
    tensors = reference_tensors(case, "model.safetensors")
    if seed is not None:
        generator = torch.Generator().manual_seed(seed)
        tensors = {
            name: t + scale * torch.randn(t.shape, generator=generator) if "layer" in name else t  # not fixed tables
            for name, t in tensors.items()
        }
    files[weights_file] = weights_bytes(tensors, weights_file)
    return files


def weights_bytes(tensors: dict[str, torch.Tensor], weights_file: str) -> bytes:
    """The bytes of `model.safetensors` or `pytorch_model.bin` holding `tensors`."""
    if weights_file == "model.safetensors":
        return save(tensors)
    buffer = io.BytesIO()
    torch.save(tensors, buffer)
    return buffer.getvalue()


def release_files(seeds: dict | None = None) -> dict[str, bytes]:
    """The `vandijklab/brainlm` layout: old_13M/, vitmae_111M/, vitmae_650M/ in the released file formats."""
    files = {"README.md": b"# BrainLM (test copy)\n"}
    for subfolder, (case, weights_file, seed) in LAYOUT.items():
        seed = (seeds or {}).get(subfolder, seed)
        for name, data in original_files(case, weights_file, seed).items():
            files[f"{subfolder}/{name}"] = data
    return files


@pytest.fixture
def caches(tmp_path, monkeypatch):
    """Fresh Hugging Face and atlas caches (the defaults users have: no cache_dir argument)."""
    monkeypatch.setattr(constants, "HF_HOME", str(tmp_path / "hf-home"))
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf-home" / "hub"))
    monkeypatch.setenv("BRAINLM_CACHE", str(tmp_path / "brainlm-cache"))
    return tmp_path / "hf-home"


@pytest.fixture
def hub(caches, a424_folder, monkeypatch):
    """The test Hub, online, holding the release repository; the A424 files served at its /static/a424/."""
    with HubServer() as server, server.online():
        for local_name, (remote_name, _) in atlas.A424_FILES.items():
            server.add_static(f"a424/{remote_name.replace('%2B', '+')}", (a424_folder / local_name).read_bytes())
        pin_a424_downloads(atlas.A424_FILES, a424_folder, monkeypatch)
        monkeypatch.setattr(atlas, "_A424_BASE", f"{server.endpoint}/static/a424/")
        server.commit(RELEASE_REPO, release_files(), message="release")
        yield server


@pytest.fixture
def conversions(monkeypatch):
    """The sources that `convert_checkpoint` converted, in order (it still runs)."""
    calls, original = [], convert.convert_checkpoint

    def counted(args, output_dir=None, **kwargs):
        if isinstance(args, convert.ConvertArguments):
            calls.append((args.source, args.subfolder, args.revision))
        else:
            calls.append((args, kwargs.get("subfolder"), kwargs.get("revision")))
        return original(args, output_dir, **kwargs)

    monkeypatch.setattr(convert, "convert_checkpoint", counted)
    return calls


def model_inputs(processor: BrainLMFeatureExtractor) -> dict:
    """Model inputs of two recordings, normalised with the processor's own (pretraining) statistics, no fit."""
    recordings = np.random.default_rng(0).normal(size=(2, 200, 424)).astype(np.float32)
    return dict(processor(list(recordings)))


def outputs(model, inputs: dict) -> torch.Tensor:
    """Deterministic outputs: the reconstruction under fixed noise, or the encoder's hidden states."""
    with torch.no_grad():
        if isinstance(model, BrainLMForMaskedSignalModeling):
            noise = torch.rand(2, model.num_tokens(424, 200), generator=torch.Generator().manual_seed(0))
            return model(**inputs, noise=noise).logits
        return model(**inputs).last_hidden_state


def assert_same_weights(model, expected) -> None:
    ours, theirs = model.state_dict(), expected.state_dict()
    assert ours.keys() == theirs.keys()
    for name in ours:
        assert torch.equal(ours[name], theirs[name]), name


@pytest.mark.parametrize("short_name", sorted(RELEASES))
def test_short_names_and_repo_subfolder_give_what_brainlm_convert_gives(hub, short_name, tmp_path, a424_folder):
    subfolder = RELEASES[short_name]
    converted = tmp_path / "converted"
    assert (
        main(["convert", RELEASE_REPO, str(converted), "--subfolder", subfolder]) == 0
    )  # coordinates downloaded and checked
    expected = BrainLMForMaskedSignalModeling.from_pretrained(converted).eval()
    expected_processor = BrainLMFeatureExtractor.from_pretrained(converted)
    assert expected_processor.repetition_time == 0.735
    assert expected_processor.statistics_source.startswith("uk_biobank") and len(expected_processor.clip_high) == 424
    a424 = np.loadtxt(a424_folder / "A424_Coordinates.dat")[:, 1:4]
    np.testing.assert_array_equal(expected_processor.coordinates, a424)
    tiles = expected.config.token_layout == "tile_2d"  # the 111M/650M family: regions in a stable sort on Y
    assert expected_processor.region_order == (np.argsort(a424[:, 1], kind="stable").tolist() if tiles else None)
    inputs = model_inputs(expected_processor)
    reference = outputs(expected, inputs)
    assert main(["convert", short_name, str(tmp_path / "by-name")]) == 0  # brainlm convert reads the short name too
    assert_same_weights(BrainLMForMaskedSignalModeling.from_pretrained(tmp_path / "by-name"), expected)

    for name, kwargs in [
        (short_name, {}),
        (short_name.upper().replace("BRAINLM", "BrainLM"), {}),  # BrainLM-111M
        (RELEASE_REPO, {"subfolder": subfolder}),
        (RELEASE_REPO, {"subfolder": subfolder, "revision": "main"}),
    ]:
        model = BrainLMForMaskedSignalModeling.from_pretrained(name, **kwargs).eval()
        assert_same_weights(model, expected)
        torch.testing.assert_close(outputs(model, inputs), reference, rtol=0, atol=0)
        processor = BrainLMFeatureExtractor.from_pretrained(name, **kwargs)
        assert processor.to_dict() == expected_processor.to_dict()  # with the UK Biobank statistics
        encoder = BrainLMModel.from_pretrained(name, **kwargs).eval()
        torch.testing.assert_close(outputs(encoder, inputs), outputs(expected.brainlm, inputs), rtol=0, atol=0)
    classifier = BrainLMForSequenceClassification.from_pretrained(short_name, num_labels=3)
    assert_same_weights(classifier.brainlm, expected.brainlm)
    assert classifier.classifier.layers[-1].out_features == 3
    with pytest.raises(ValueError, match="do not also pass subfolder"):
        BrainLMModel.from_pretrained(short_name, subfolder=subfolder)


def test_the_short_names_are_the_three_releases(hub):
    """Each name loads its own subfolder: 111M and 650M hold different weights here."""
    weights = {
        name: BrainLMForMaskedSignalModeling.from_pretrained(name).state_dict()["brainlm.layernorm.weight"]
        for name in ("brainlm-111m", "brainlm-650m")
    }
    assert not torch.equal(weights["brainlm-111m"], weights["brainlm-650m"])
    assert BrainLMModel.from_pretrained("brainlm-13m").config.token_layout == "region_window"
    assert BrainLMModel.from_pretrained("brainlm-111m").config.token_layout == "tile_2d"


def test_a_second_load_uses_the_cache_and_a_new_commit_converts_again(hub, conversions, caches):
    first_commit = hub.repos[RELEASE_REPO].branches["main"]
    first = BrainLMForMaskedSignalModeling.from_pretrained("brainlm-111m").state_dict()
    BrainLMFeatureExtractor.from_pretrained("brainlm-111m")
    assert conversions == [(RELEASE_REPO, "vitmae_111M", first_commit)]
    cached = caches / "hub" / "models--vandijklab--brainlm" / f"brainlm_hf-converted-v{CONVERSION_VERSION}"
    assert {p.name for p in (cached / first_commit / "vitmae_111M" / "converted").iterdir()} == CONVERTED_FILES

    hub.reset_log()
    for load in (BrainLMModel, BrainLMForMaskedSignalModeling, BrainLMFeatureExtractor):
        load.from_pretrained("brainlm-111m")
        load.from_pretrained(RELEASE_REPO, subfolder="vitmae_111M")
    assert len(conversions) == 1 and hub.downloads() == []  # only HEAD requests: which commit is main?
    assert {entry.method for entry in hub.requests} == {"HEAD"}

    with pytest.MonkeyPatch.context() as offline:  # offline, the cached conversion needs no request at all
        offline.setattr(constants, "HF_HUB_OFFLINE", True)
        hub.reset_log()
        torch.testing.assert_close(BrainLMForMaskedSignalModeling.from_pretrained("brainlm-111m").state_dict(), first)
        assert hub.requests == []

    files = release_files(seeds={"vitmae_111M": 7})
    second_commit = hub.commit(RELEASE_REPO, {k: v for k, v in files.items() if k.startswith("vitmae_111M/")})
    hub.reset_log()
    second = BrainLMForMaskedSignalModeling.from_pretrained("brainlm-111m").state_dict()
    assert conversions[1:] == [(RELEASE_REPO, "vitmae_111M", second_commit)]
    assert "vitmae_111M/model.safetensors" in hub.downloads()
    assert not torch.equal(second["brainlm.layernorm.weight"], first["brainlm.layernorm.weight"])

    again = BrainLMForMaskedSignalModeling.from_pretrained("brainlm-111m", revision=first_commit).state_dict()
    assert len(conversions) == 2  # the first commit's conversion is still cached
    for name in first:
        assert torch.equal(again[name], first[name]), name
    BrainLMModel.from_pretrained("brainlm-111m", force_download=True)
    assert conversions[2:] == [(RELEASE_REPO, "vitmae_111M", second_commit)]


@pytest.mark.parametrize("weights_file", ["model.safetensors", "pytorch_model.bin"])
@pytest.mark.parametrize("case", sorted(RUNS))
def test_an_original_local_folder_is_converted_on_load_and_cached(
    hub, conversions, case, weights_file, tmp_path, caches
):
    clone = tmp_path / "brainlm-clone"  # a local copy of the release repository, read with subfolder=
    folder = clone / "release"
    folder.mkdir(parents=True)
    for name, data in original_files(case, weights_file).items():
        (folder / name).write_bytes(data)
    converted = tmp_path / "converted"
    convert.convert_checkpoint(str(folder), str(converted))
    expected = BrainLMForMaskedSignalModeling.from_pretrained(converted)
    conversions.clear()

    for name, kwargs in [(folder, {}), (str(folder) + "/", {}), (str(clone), {"subfolder": "release"})]:
        model = BrainLMForMaskedSignalModeling.from_pretrained(name, **kwargs)
        assert_same_weights(model, expected)
        assert BrainLMFeatureExtractor.from_pretrained(name, **kwargs).to_dict() == (
            BrainLMFeatureExtractor.from_pretrained(converted).to_dict()
        )
    assert [source for source, *_ in conversions] == [str(folder)]  # one conversion for the three spellings
    assert str(caches / "brainlm_hf" / f"converted-v{CONVERSION_VERSION}") in str(
        BrainLMModel.from_pretrained(folder).name_or_path
    )
    assert all(entry.path.startswith("/static/a424/") for entry in hub.requests)  # local: only the A424 download

    tensors = reference_tensors(case, "model.safetensors")
    tensors = {name: 1.5 * t if name == "vit.layernorm.weight" else t for name, t in tensors.items()}
    (folder / weights_file).write_bytes(weights_bytes(tensors, weights_file))
    changed = BrainLMForMaskedSignalModeling.from_pretrained(folder).state_dict()
    assert len(conversions) == 2  # new file contents: converted again
    torch.testing.assert_close(
        changed["brainlm.layernorm.weight"], 1.5 * expected.state_dict()["brainlm.layernorm.weight"]
    )


def test_a_local_folder_named_like_a_release_wins(hub, tmp_path, monkeypatch, config):
    monkeypatch.chdir(tmp_path)
    BrainLMForMaskedSignalModeling(config).save_pretrained("brainlm-111m")
    hub.reset_log()
    model = BrainLMForMaskedSignalModeling.from_pretrained("brainlm-111m")
    assert model.config.hidden_size == config.hidden_size and hub.requests == []


def test_converted_repos_load_through_the_auto_classes(hub, tmp_path, conversions):
    converted = tmp_path / "converted"
    assert main(["convert", RELEASE_REPO, str(converted), "--subfolder", "vitmae_111M"]) == 0
    hub.commit("someone/brainlm-111m-converted", converted)
    conversions.clear()
    for auto, expected_class in [(AutoModel, BrainLMModel), (AutoModelForPreTraining, BrainLMForMaskedSignalModeling)]:
        model = auto.from_pretrained("someone/brainlm-111m-converted")
        assert type(model) is expected_class
        assert_same_weights(model, expected_class.from_pretrained(converted))
    processor = AutoFeatureExtractor.from_pretrained("someone/brainlm-111m-converted")
    assert type(processor) is BrainLMFeatureExtractor and processor.repetition_time == 0.735
    assert BrainLMModel.from_pretrained("someone/brainlm-111m-converted").config.token_layout == "tile_2d"
    assert conversions == []  # already brainlm_hf's format: loaded as is

    # what transformers does with the original repository: its own ViT-MAE, not BrainLM (see the README)
    original = AutoModel.from_pretrained(RELEASE_REPO, subfolder="vitmae_111M")
    assert type(original).__name__ == "ViTMAEModel"


def test_brainlm_convert_pushes_to_the_hub(hub, tmp_path):
    converted = tmp_path / "pushed"
    assert main(["convert", RELEASE_REPO, str(converted), "--subfolder", "old_13M", "--push-to-hub", "me/brainlm-13m",
          "--accept-weights-license"]) == 0  # fmt: skip
    commit = hub.repos["me/brainlm-13m"].commits[hub.repos["me/brainlm-13m"].branches["main"]]
    assert set(commit.tree) == CONVERTED_FILES
    for name in CONVERTED_FILES:
        assert commit.tree[name].data == (converted / name).read_bytes(), name
    card = commit.tree["README.md"].data.decode()
    assert f"{RELEASE_REPO}/old_13M" in card
    model = BrainLMModel.from_pretrained("me/brainlm-13m")
    assert_same_weights(model, BrainLMModel.from_pretrained(converted))
    config = json.loads(commit.tree["config.json"].data)
    assert config["model_type"] == "brainlm_hf" and "AutoModel" in config["auto_map"]


def test_convert_refuses_a424_coordinates_that_fail_the_pinned_hash(hub, tmp_path):
    hub.add_static("a424/A424_Coordinates.txt", b"1 0 0 0\n")  # tampered upstream file
    shutil.rmtree(tmp_path / "brainlm-cache", ignore_errors=True)
    with pytest.raises(ValueError, match="does not have the pinned SHA-256"):
        BrainLMModel.from_pretrained("brainlm-111m")


def test_the_processor_of_an_original_local_folder_is_its_conversion(hub, tmp_path):
    """`load_processor` (`brainlm embed`, `brainlm attention`): an original folder has no preprocessor_config.json
    but is converted with one; a brainlm_hf folder without one is refused with the fix given."""
    clone = tmp_path / "brainlm-clone"
    folder = clone / "release"
    folder.mkdir(parents=True)
    for name, data in original_files("brainlm_small", "model.safetensors").items():
        (folder / name).write_bytes(data)
    converted = tmp_path / "converted"
    convert.convert_checkpoint(str(folder), str(converted))
    expected = BrainLMFeatureExtractor.from_pretrained(converted).to_dict()
    assert load_processor(str(folder), "model", "FIX").to_dict() == expected
    assert load_processor(str(clone), "model", "FIX", subfolder="release").to_dict() == expected
    (converted / "preprocessor_config.json").unlink()
    with pytest.raises(FileNotFoundError, match=r"converted has no preprocessor_config.json .*: FIX$"):
        load_processor(str(converted), "model", "FIX")


def test_brainlm_embed_reads_a_short_name(hub, tmp_path):
    from brainlm_hf.analysis import embed_recordings

    recordings = np.random.default_rng(0).normal(size=(2, 260, 424)).astype(np.float32)
    for index, recording in enumerate(recordings):
        np.save(tmp_path / f"sub-{index}.npy", recording)
    assert main(["embed", "brainlm-13m", str(tmp_path / "*.npy"), "--output", str(tmp_path / "e.npz"),
                 "--fit-processor", "--quiet"]) == 0  # fmt: skip
    processor = BrainLMFeatureExtractor.from_pretrained("brainlm-13m").fit(list(recordings))
    expected = embed_recordings(BrainLMModel.from_pretrained("brainlm-13m"), processor, list(recordings))
    np.testing.assert_allclose(np.load(tmp_path / "e.npz")["embeddings"], expected, atol=1e-6)
