"""`brainlm convert`: original folders in, Hub-ready brainlm_hf folders out, optional (mocked) upload. Hub sources, the
A424 download and real uploads: tests/integrations/test_hub_loading.py."""

import json
import os
import re
import shutil
from importlib.metadata import entry_points
from unittest import mock

import numpy as np
import pytest
import torch
from huggingface_hub import HfApi, ModelCard
from huggingface_hub.hf_api import RepoUrl
from safetensors.torch import load_file
from transformers import AutoFeatureExtractor, AutoModel, AutoModelForPreTraining

from brainlm_hf.cli import main
from brainlm_hf.convert import convert_checkpoint, model_from_original, render_model_card

from ..conftest import reference_bytes, reference_file, reference_marks, reference_tensors
from ..forked import run_brainlm

RUNS = {"brainlm_small": "mask_ratio_0.20", "vitmae_pad_small": "auto_encode_mask_ratio_0.75"}
CONVERTED_FILES = {
    "README.md",
    "config.json",
    "model.safetensors",
    "configuration_brainlm.py",
    "modeling_brainlm.py",
    "feature_extraction_brainlm.py",
    "errors.py",  # imported by the three model files: copied with them for trust_remote_code
    "preprocessor_config.json",
}


def original_folder(tmp_path, case, weights_format="safetensors"):
    """An original Trainer checkpoint folder: config.json, weights, and Trainer files that must be ignored."""
    folder = tmp_path / f"original_{case}"
    folder.mkdir()
    shutil.copy(reference_file(case, RUNS[case], "config.json"), folder / "config.json")
    if weights_format == "safetensors":
        (folder / "model.safetensors").write_bytes(reference_bytes(case, "model.safetensors"))
    else:
        torch.save(reference_tensors(case, "model.safetensors"), folder / "pytorch_model.bin")
    (folder / "optimizer.pt").write_bytes(b"not read")
    (folder / "trainer_state.json").write_text("{}")
    return folder


def coordinates_file(a424_folder):
    return str(a424_folder / "A424_Coordinates.dat")


@pytest.mark.parametrize("weights_format", ["safetensors", "bin"])
@pytest.mark.parametrize("case", [pytest.param(case, marks=reference_marks(case)) for case in RUNS])
def test_converted_folder_loads_strictly_and_reproduces_the_original(tmp_path, case, weights_format, a424_folder):
    source = original_folder(tmp_path, case, weights_format)
    out = tmp_path / "converted"
    convert_checkpoint(str(source), str(out), atlas_coordinates=coordinates_file(a424_folder))
    assert {p.name for p in out.iterdir()} == CONVERTED_FILES
    model, info = AutoModelForPreTraining.from_pretrained(out, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"]
    encoder, info = AutoModel.from_pretrained(out, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"]  # the decoder's keys are the only ones let through

    original_config = json.loads((source / "config.json").read_text())
    inputs = reference_tensors(case, RUNS[case], "inputs.safetensors", a424=a424_folder)
    expected = reference_tensors(case, RUNS[case], "outputs.safetensors")
    with torch.no_grad():
        out_logits = model.eval()(inputs["signal_vectors"], inputs["xyz_vectors"], noise=inputs["noise"]).logits
    torch.testing.assert_close(out_logits, expected["logits"].reshape(out_logits.shape), atol=1e-4, rtol=1e-4)
    reference = model_from_original(reference_tensors(case, "model.safetensors"), original_config)
    for (name, a), (_, b) in zip(model.state_dict().items(), reference.state_dict().items(), strict=True):
        assert torch.equal(a, b), name
    assert torch.equal(encoder.embeddings.cls_token, model.brainlm.embeddings.cls_token)


def test_released_family_processor_holds_the_y_order_and_scale(tmp_path, a424_folder):
    out = tmp_path / "converted"
    convert_checkpoint(
        str(original_folder(tmp_path, "vitmae_pad_small")), str(out), atlas_coordinates=coordinates_file(a424_folder)
    )
    extractor = AutoFeatureExtractor.from_pretrained(out)
    coordinates = np.loadtxt(coordinates_file(a424_folder))[:, 1:4]
    assert extractor.region_order == np.argsort(coordinates[:, 1], kind="stable").tolist()
    assert extractor.input_scale == 5.6430855
    y = np.asarray(extractor.to_model_order(np.asarray(extractor.coordinates)))[:, 1]
    assert (np.diff(y) >= 0).all()
    recordings = np.random.default_rng(0).normal(size=(3, 200, 424)).astype(np.float32)
    assert extractor.normalization == "robust" and extractor.statistics_source.startswith("uk_biobank")
    assert len(extractor.median) == len(extractor.clip_low) == 424  # the pretraining statistics (tests/test_ukb_*)
    with pytest.warns(UserWarning, match="no longer clips"):
        extractor.fit(list(recordings))  # fitting on a cohort stays possible: it replaces them, without clipping
    assert extractor.statistics_source == "fit" and extractor.clip_low is None
    signal = extractor(recordings[0])["signal_values"]
    median, iqr = np.asarray(extractor.median), np.asarray(extractor.iqr)
    restored = extractor.to_atlas_order(signal)[0].T.numpy() * 5.6430855 * iqr + median
    np.testing.assert_allclose(restored, recordings[0], atol=1e-4)


def test_model_card_is_rendered(tmp_path, a424_folder):
    out = tmp_path / "converted"
    source = original_folder(tmp_path, "brainlm_small")
    convert_checkpoint(str(source), str(out), atlas_coordinates=coordinates_file(a424_folder))
    card = (out / "README.md").read_text()
    assert card.startswith("---\n") and "license:" not in card.split("---")[1]  # custom architecture: no license
    assert str(source) in card and "$" not in card


@pytest.mark.parametrize("case, preset", [("brainlm_small", "brainlm-111m"), ("vitmae_pad_small", "brainlm-13m")])
def test_a_checkpoint_offered_as_another_release_is_refused(tmp_path, case, preset, a424_folder):
    with pytest.raises(ValueError, match=f"architecture is not {preset}"):
        convert_checkpoint(
            str(original_folder(tmp_path, case)),
            str(tmp_path / "out"),
            atlas_coordinates=coordinates_file(a424_folder),
            expected_preset=preset,
        )


def test_push_needs_the_license_and_uploads_the_exact_files(tmp_path, a424_folder):
    source = original_folder(tmp_path, "vitmae_pad_small")
    coordinates = coordinates_file(a424_folder)
    with pytest.raises(ValueError, match="CC BY-NC-ND 4.0"):
        convert_checkpoint(str(source), str(tmp_path / "a"), atlas_coordinates=coordinates, push_to_hub="me/x")
    commits = []
    with (
        mock.patch.object(HfApi, "create_repo", return_value=RepoUrl("https://huggingface.co/me/brainlm")) as create,
        mock.patch.object(HfApi, "upload_folder", side_effect=lambda **kw: commits.append(kw)),
    ):
        convert_checkpoint(
            str(source),
            str(tmp_path / "b"),
            atlas_coordinates=coordinates,
            push_to_hub="me/brainlm",
            accept_weights_license=True,
        )
    create.assert_called_once()
    assert create.call_args.args[0] == "me/brainlm"
    (commit,) = commits  # one upload_folder call, of exactly the converted files
    assert commit["repo_id"] == "me/brainlm" and commit["folder_path"] == str(tmp_path / "b")
    assert set(commit["allow_patterns"]) == CONVERTED_FILES == {p.name for p in (tmp_path / "b").iterdir()}
    assert commit["commit_message"].startswith(f"Convert {source}")


@pytest.mark.slow  # the fork server (tests/forked.py)
def test_cli(tmp_path, capsys, a424_folder):
    assert "brainlm = brainlm_hf.cli:main" in {f"{e.name} = {e.value}" for e in entry_points(group="console_scripts")}
    out = tmp_path / "cli_out"
    source = original_folder(tmp_path, "brainlm_small")
    assert main(["convert", str(source), str(out), "--atlas-coordinates", coordinates_file(a424_folder)]) == 0
    assert "Converted" in capsys.readouterr().out and (out / "model.safetensors").is_file()
    result = run_brainlm(["convert", str(tmp_path / "missing"), str(tmp_path / "x")], tmp_path, dict(os.environ), 120)
    assert result.returncode == 2
    assert "brainlm convert: error" in result.stderr


def test_cli_shows_progress_and_one_summary_line_unless_quiet(tmp_path, capsys, a424_folder):
    source = original_folder(tmp_path, "vitmae_pad_small")
    argv = ["convert", str(source), str(tmp_path / "out"), "--atlas-coordinates", coordinates_file(a424_folder)]
    assert main(argv) == 0
    captured = capsys.readouterr()
    summary = captured.err.strip().splitlines()[-1]
    read = reference_tensors("vitmae_pad_small", "model.safetensors")
    written = load_file(tmp_path / "out" / "model.safetensors")
    parameters = sum(tensor.numel() for tensor in written.values())
    megabytes = sum(tensor.numel() * tensor.element_size() for tensor in written.values()) / 1e6
    expected = (
        f"convert: {len(read)} tensors read, {len(written)} written ({parameters / 1e6:.2f}M parameters, "
        f"{megabytes:.1f} MB) in "
    )
    assert summary.startswith(expected), summary
    assert re.fullmatch(r".* in [0-9]+\.[0-9] s \([0-9]+\.[0-9] MB/s\)", summary), summary
    assert f"{len(read)}/{len(read)}" in captured.err  # the bar, finished, on stderr
    assert "convert:" not in captured.out and "Converted" in captured.out

    assert main([*argv[:2], str(tmp_path / "quiet"), *argv[3:], "--quiet"]) == 0
    captured = capsys.readouterr()
    assert [line for line in captured.err.splitlines() if not line.startswith("brainlm convert: warning:")] == []
    assert "Converted" in captured.out  # the warning (a custom architecture) stays; the bar and the summary go


@pytest.mark.parametrize("preset", ["brainlm-13m", "brainlm-111m", "brainlm-650m", "brainlm-custom"])
def test_packaged_model_cards_have_valid_metadata(preset):
    card = ModelCard(render_model_card(preset, "vandijklab/brainlm", "sub", "vit_mae"))
    assert card.data.library_name == "transformers" and "brainlm" in card.data.tags
    if preset != "brainlm-custom":
        assert card.data.license == "cc-by-nc-nd-4.0"
        for fact in ("UK Biobank", "6,700 hours", "A424", "0.735", "faeea4d", "Akiki", "Nemati", "ICLR 2024"):
            assert fact in card.text, fact
