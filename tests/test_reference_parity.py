"""The 13M-family configuration reproduces the original BrainLM code's outputs (../shared/reference fixtures)."""

import json

import pytest
import torch
from safetensors.torch import load_file

from brainlm_hf import BrainLMForMaskedSignalModeling
from brainlm_hf.convert import brainlm_mae_config, convert_brainlm_mae_state_dict

from .conftest import shared_path

RUNS = ["mask_ratio_0.20", "mask_ratio_0.75", "mask_ratio_0.00_identity_order"]


@pytest.fixture(scope="module")
def converted():
    original = json.loads(shared_path("reference", "brainlm_small", "mask_ratio_0.20", "config.json").read_text())
    model = BrainLMForMaskedSignalModeling(brainlm_mae_config(original)).eval()
    state_dict = convert_brainlm_mae_state_dict(
        load_file(shared_path("reference", "brainlm_small", "model.safetensors"))
    )
    model.load_state_dict(state_dict, strict=True)
    return model


@pytest.mark.parametrize("attn_implementation", ["eager", "sdpa"])
@pytest.mark.parametrize("run", RUNS)
def test_outputs_match_the_original(converted, run, attn_implementation):
    folder = ("reference", "brainlm_small", run)
    inputs = load_file(shared_path(*folder, "inputs.safetensors"))
    expected = load_file(shared_path(*folder, "outputs.safetensors"))
    mask_ratio = json.loads(shared_path(*folder, "config.json").read_text())["mask_ratio"]
    converted.set_attn_implementation(attn_implementation)
    with torch.no_grad():
        out = converted(inputs["signal_vectors"], inputs["xyz_vectors"], noise=inputs["noise"], mask_ratio=mask_ratio)

    assert torch.equal(out.mask, expected["mask"])
    assert torch.equal(out.token_mask, expected["token_mask"])
    assert torch.equal(out.ids_restore, expected["ids_restore"])
    tolerance = {"atol": 1e-4, "rtol": 1e-4}  # the reference README's recommendation (float32 vs float64: 2.3e-5)
    torch.testing.assert_close(out.logits, expected["logits"].flatten(2), **tolerance)
    torch.testing.assert_close(out.last_hidden_state, expected["last_hidden_state"], **tolerance)
    torch.testing.assert_close(out.last_hidden_state[:, 0], expected["cls_embedding"], **tolerance)
    if mask_ratio == 0:
        assert out.loss is None and torch.isnan(expected["loss"])  # the original divides 0 by 0
    else:
        torch.testing.assert_close(out.loss, expected["loss"], atol=0, rtol=1e-5)


def test_intermediate_hidden_states_match(converted):
    folder = ("reference", "brainlm_small", "mask_ratio_0.20")
    inputs = load_file(shared_path(*folder, "inputs.safetensors"))
    expected = load_file(shared_path(*folder, "intermediates.safetensors"))
    with torch.no_grad():
        out = converted.brainlm(
            inputs["signal_vectors"],
            inputs["xyz_vectors"],
            noise=inputs["noise"],
            mask_ratio=0.2,
            output_hidden_states=True,
        )
    torch.testing.assert_close(out.hidden_states[0][:1], expected["embedding_output_sample0"], atol=1e-4, rtol=1e-4)
    for i in (1, 2):
        torch.testing.assert_close(
            out.hidden_states[i][:1], expected[f"encoder_hidden_states_{i}_sample0"], atol=1e-4, rtol=1e-4
        )


def test_unknown_original_keys_are_refused():
    state_dict = load_file(shared_path("reference", "brainlm_small", "model.safetensors"))
    state_dict["classifier.weight"] = torch.zeros(1)
    with pytest.raises(ValueError, match="Unknown keys.*classifier.weight"):
        convert_brainlm_mae_state_dict(state_dict)
