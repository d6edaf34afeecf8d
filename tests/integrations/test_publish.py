"""`brainlm publish`: the release content (files, config, model card, byte-identical re-runs), and loading a
published repository over HTTP (tests/hub_server.py) through `Auto*` and `pipeline` in a process without brainlm_hf."""

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
import yaml
from transformers import pipeline

from brainlm_hf import BrainLMFeatureExtractor, BrainLMForMaskedSignalModeling, BrainLMModel, BrainLMPipeline
from brainlm_hf.cli import main
from brainlm_hf.convert import RELEASE_REPO, RELEASES
from brainlm_hf.pipeline_brainlm import TASK

from ..conftest import CASES_WITH_COORDINATES, has_real, reference_tensors
from . import test_hub_loading
from .test_convert_cli import CONVERTED_FILES, RUNS, coordinates_file, original_folder

pytestmark = pytest.mark.slow  # the local Hub server, subprocesses
caches, hub = test_hub_loading.caches, test_hub_loading.hub  # the fixtures: fresh caches, the test Hub online

RELEASE_FILES = CONVERTED_FILES | {"pipeline_brainlm.py"}
# one short name per family
FAMILIES = {"brainlm-13m": "region_window", "brainlm-111m": "tile_2d"}
CASES = {"brainlm-13m": "brainlm_small", "brainlm-111m": "vitmae_pad_small"}  # the fixtures the test Hub serves

# Run in a fresh interpreter where brainlm_hf cannot be imported (its editable install is refused by a finder placed
# first on sys.meta_path): load REPO through the Auto classes and the pipeline, save the outputs to OUT.
NO_BRAINLM = """
import sys

class Refuse:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] == "brainlm_hf":
            raise ModuleNotFoundError(f"No module named {name!r} (refused for this test)")

sys.meta_path.insert(0, Refuse())
try:
    import brainlm_hf
except ModuleNotFoundError:
    pass
else:
    raise SystemExit("brainlm_hf is importable")

import numpy as np
import torch
from transformers import AutoFeatureExtractor, AutoModel, AutoModelForPreTraining, pipeline

repo, recordings, reference, out = sys.argv[1], np.load(sys.argv[2]), np.load(sys.argv[3]), sys.argv[4]
processor = AutoFeatureExtractor.from_pretrained(repo, trust_remote_code=True)
encoder = AutoModel.from_pretrained(repo, trust_remote_code=True).eval()
model = AutoModelForPreTraining.from_pretrained(repo, trust_remote_code=True).eval()
inputs = processor(recordings[:, :200])
noise = torch.rand(len(recordings), model.num_tokens(*inputs["signal_values"].shape[1:]),
                   generator=torch.Generator().manual_seed(0))
with torch.no_grad():
    hidden = encoder(**inputs).last_hidden_state
    logits = model(**inputs, noise=noise).logits
    reference_logits = model(*(torch.from_numpy(reference[k]) for k in ("signal_vectors", "xyz_vectors")),
                             noise=torch.from_numpy(reference["noise"])).logits
embed = pipeline(model=repo, trust_remote_code=True, batch_size=3)
embeddings = np.stack(embed(list(recordings), repetition_time=0.735))
forecast = embed(recordings[0], repetition_time=0.735, output="forecast", mask_ratio=0.2)
np.savez(out, hidden=hidden.numpy(), logits=logits.numpy(), embeddings=embeddings, classes=np.array(
    [type(x).__module__.split(".")[0] + "." + type(x).__name__ for x in (processor, encoder, model, embed)]),
    forecast=forecast["prediction"], reference_logits=reference_logits.numpy())
"""


def recordings(count: int = 2, length: int = 260) -> np.ndarray:
    """Raw A424 recordings `(count, length, 424)` in atlas order, on the scale of the release statistics."""
    return np.random.default_rng(0).normal(size=(count, length, 424)).astype(np.float32)


@pytest.mark.parametrize("short_name", sorted(FAMILIES))
def test_publish_writes_the_release_and_rewrites_the_same_bytes(hub, short_name, tmp_path):
    first, second = tmp_path / "first", tmp_path / "second"
    for folder in (first, second):
        assert main(["publish", short_name, "me/" + short_name, "--output-dir", str(folder)]) == 0
    assert {p.name for p in first.iterdir()} == RELEASE_FILES
    for name in RELEASE_FILES:
        assert (first / name).read_bytes() == (second / name).read_bytes(), name

    config = json.loads((first / "config.json").read_text())
    assert set(config["auto_map"]) == {
        "AutoConfig", "AutoModel", "AutoModelForPreTraining", "AutoModelForSequenceClassification",
        "AutoFeatureExtractor",
    }  # fmt: skip
    for reference in config["auto_map"].values():
        assert (first / (reference.split(".")[0] + ".py")).is_file(), reference
    assert config["custom_pipelines"][TASK]["impl"] == "pipeline_brainlm.BrainLMPipeline"
    assert config["token_layout"] == FAMILIES[short_name]
    processor = BrainLMFeatureExtractor.from_pretrained(first)
    assert processor.statistics_source.startswith("uk_biobank") and processor.repetition_time == 0.735

    card = (first / "README.md").read_text()
    header, body = card.split("---\n")[1:3]
    body = " ".join(body.split())  # the facts, whatever the line breaks
    metadata = yaml.safe_load(header)
    assert metadata["license"] == "cc-by-nc-nd-4.0" and metadata["library_name"] == "transformers"
    assert metadata["pipeline_tag"] == "feature-extraction" and metadata["base_model"] == RELEASE_REPO
    assert "brainlm" in metadata["tags"]
    commit = hub.repos[RELEASE_REPO].branches["main"]
    assert f"`{RELEASE_REPO}/{RELEASES[short_name]}` (commit `{commit}`)" in body
    model = BrainLMForMaskedSignalModeling.from_pretrained(first)
    assert f"({model.num_parameters():,} parameters)" in body
    assert f"({model.base_model.num_parameters():,} parameters)" in body
    assert "within 1e-4" in body and "CC BY-NC-ND 4.0" in body and "me/" + short_name in body


def test_publish_refuses_to_upload_without_the_licence_confirmation(hub, capsys):
    assert main(["publish", "brainlm-111m", "me/brainlm-111m"]) == 2
    assert "--accept-weights-license" in capsys.readouterr().err
    assert "me/brainlm-111m" not in hub.repos


def test_publish_refuses_a_repo_name_without_owner(hub, capsys, tmp_path):
    assert main(["publish", "brainlm-111m", "brainlm-111m", "--output-dir", str(tmp_path / "out")]) == 2
    assert "ORG/NAME" in capsys.readouterr().err


@pytest.mark.parametrize("short_name", sorted(FAMILIES))
def test_a_published_repo_loads_and_runs_without_brainlm_hf(hub, short_name, tmp_path, a424_folder):
    repo = f"me/{short_name}"
    assert main(["publish", short_name, repo, "--accept-weights-license"]) == 0
    assert set(hub.repos[repo].commits[hub.repos[repo].branches["main"]].tree) == RELEASE_FILES

    data = recordings(count=3)
    np.save(tmp_path / "recordings.npy", data)
    case = CASES[short_name]
    reference_inputs = reference_tensors(case, RUNS[case], "inputs.safetensors", a424=a424_folder)
    np.savez(tmp_path / "reference.npz", **{name: tensor.numpy() for name, tensor in reference_inputs.items()})
    environment = {
        "HF_ENDPOINT": hub.endpoint, "HF_HUB_OFFLINE": "0", "HF_HOME": str(tmp_path / "fresh-hf-home"),
        "HF_MODULES_CACHE": str(tmp_path / "modules"), "PATH": "/usr/bin:/bin",
    }  # fmt: skip
    files = [str(tmp_path / name) for name in ("recordings.npy", "reference.npz", "o.npz")]
    script = [sys.executable, "-I", "-c", NO_BRAINLM, repo, *files]
    run = subprocess.run(script, env=environment, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    remote = np.load(tmp_path / "o.npz")
    assert all(not name.startswith("brainlm_hf.") for name in remote["classes"])
    assert [name.split(".")[-1] for name in remote["classes"]] == [
        "BrainLMFeatureExtractor", "BrainLMModel", "BrainLMForMaskedSignalModeling", "BrainLMPipeline",
    ]  # fmt: skip

    if case not in CASES_WITH_COORDINATES or has_real("atlas"):  # else the inputs hold stand-in coordinates
        original = reference_tensors(case, RUNS[case], "outputs.safetensors")["logits"].numpy()  # the original's
        ours = remote["reference_logits"]
        np.testing.assert_allclose(ours, original.reshape(ours.shape), atol=1e-4)

    processor = BrainLMFeatureExtractor.from_pretrained(short_name)
    encoder = BrainLMModel.from_pretrained(short_name).eval()
    model = BrainLMForMaskedSignalModeling.from_pretrained(short_name).eval()
    inputs = processor(data[:, :200])
    num_tokens = model.num_tokens(*inputs["signal_values"].shape[1:])
    noise = torch.rand(3, num_tokens, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        np.testing.assert_allclose(remote["hidden"], encoder(**inputs).last_hidden_state.numpy(), atol=1e-4)
        np.testing.assert_allclose(remote["logits"], model(**inputs, noise=noise).logits.numpy(), atol=1e-4)
    from brainlm_hf.analysis import embed_recordings

    expected = embed_recordings(encoder, processor, list(data), repetition_times=0.735)
    np.testing.assert_allclose(remote["embeddings"], expected, atol=1e-4)
    local = pipeline(TASK, model=BrainLMForMaskedSignalModeling.from_pretrained(short_name))  # the documented form
    assert isinstance(local, BrainLMPipeline) and local.feature_extractor.to_dict() == processor.to_dict()
    np.testing.assert_allclose(np.stack(local(list(data), repetition_time=0.735)), expected, atol=1e-5)
    forecast = local(data[0], repetition_time=0.735, output="forecast", mask_ratio=0.2)
    np.testing.assert_allclose(remote["forecast"], forecast["prediction"], atol=1e-4)


def test_a_converted_folder_publishes_the_same_content_as_its_original(tmp_path, a424_folder):
    original = original_folder(tmp_path, "vitmae_pad_small")
    coordinates = coordinates_file(a424_folder)
    assert main(["convert", str(original), str(tmp_path / "converted"), "--atlas-coordinates", coordinates]) == 0
    from_original, from_converted = tmp_path / "from-original", tmp_path / "from-converted"
    assert main(["publish", str(original), "me/x", "--output-dir", str(from_original),
                 "--atlas-coordinates", coordinates]) == 0  # fmt: skip
    assert main(["publish", str(tmp_path / "converted"), "me/x", "--output-dir", str(from_converted)]) == 0
    assert {p.name for p in from_converted.iterdir()} == RELEASE_FILES
    for name in RELEASE_FILES - {"README.md"}:  # the card names its source
        assert (from_converted / name).read_bytes() == (from_original / name).read_bytes(), name
    card = " ".join((from_converted / "README.md").read_text().split())
    assert f"`{tmp_path / 'converted'}` (a local folder)" in card
    assert "base_model" not in card.split("---")[1]  # not read from the release repository
