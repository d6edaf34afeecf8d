"""Conversion refuses what it cannot convert exactly, and names the problem."""

import pytest
import torch

from brainlm_hf import BrainLMConfig, BrainLMForMaskedSignalModeling
from brainlm_hf.convert import (
    convert_state_dict,
    detect_family,
    model_from_original,
    original_config_to_brainlm,
    rename_key,
)

from ..conftest import reference_json, reference_tensors

CASES = {"brainlm_small": "mask_ratio_0.20", "vitmae_pad_small": "auto_encode_mask_ratio_0.75"}


def original(case):
    return reference_tensors(case, "model.safetensors"), reference_json(case, CASES[case], "config.json")


@pytest.mark.parametrize(
    "weights_case, config_case", [("brainlm_small", "vitmae_pad_small"), ("vitmae_pad_small", "brainlm_small")]
)
def test_a_checkpoint_offered_as_the_other_family_is_refused(weights_case, config_case):
    weights, _ = original(weights_case)
    _, config = original(config_case)
    with pytest.raises(ValueError, match="weights belong to the"):
        model_from_original(weights, config)


@pytest.mark.parametrize("case", CASES)
def test_a_renamed_key_is_refused_and_listed(case):
    weights, config = original(case)
    weights["vit.layernorm.scale"] = weights.pop("vit.layernorm.weight")
    with pytest.raises(ValueError) as error:
        model_from_original(weights, config)
    assert "brainlm.layernorm.weight" in str(error.value)  # missing
    assert "brainlm.layernorm.scale" in str(error.value)  # no place in the model


@pytest.mark.parametrize("case", CASES)
def test_a_foreign_key_is_refused_and_listed(case):
    weights, config = original(case)
    weights["classifier.weight"] = torch.zeros(2)
    with pytest.raises(ValueError, match="Unknown keys.*classifier.weight"):
        convert_state_dict(weights, config)


def test_the_dead_decoder_head_of_the_13m_family_is_dropped_explicitly():
    weights, config = original("brainlm_small")
    converted = convert_state_dict(weights, config)
    assert not any("decoder_pred.weight" == k.split("decoder.")[-1] for k in converted)
    assert {"decoder.decoder_pred.0.weight", "decoder.decoder_pred.2.weight"} <= set(converted)
    # every original key is accounted for: renamed, or one of the explicitly dropped tables / dead head
    dropped = {k for k in weights if k.endswith("pos_embedding.pe") or k.startswith("decoder.decoder_pred.")}
    assert len(converted) == len(weights) - len(dropped)


@pytest.mark.parametrize("case", CASES)
def test_a_modified_fixed_position_table_is_refused(case):
    weights, config = original(case)
    name = "vit.embeddings.pos_embedding.pe" if case == "brainlm_small" else "vit.embeddings.position_embeddings"
    weights[name] = weights[name] + 0.01
    with pytest.raises(ValueError, match="not the standard fixed sin/cos table"):
        convert_state_dict(weights, config)


@pytest.mark.parametrize(
    "change, message",
    [
        ({"model_type": "bert"}, "Unknown original model_type 'bert'"),
        ({"norm_pix_loss": True}, "norm_pix_loss=True is not implemented"),
        ({"train_mode": "predict_last_pixel"}, "train_mode 'predict_last_pixel' is not implemented"),
        ({"image_size": [432, 400]}, "Only square images"),
    ],
)
def test_unsupported_original_options_are_refused_by_name(change, message):
    _, config = original("vitmae_pad_small")
    with pytest.raises(ValueError, match=message):
        original_config_to_brainlm({**config, **change})


def test_the_13m_tanh_decoder_option_is_refused():
    _, config = original("brainlm_small")
    with pytest.raises(ValueError, match="use_tanh_decoder=True is not implemented"):
        original_config_to_brainlm({**config, "use_tanh_decoder": True})


def test_channel_folding_keeps_the_tile_projection_exact():
    weights, config = original("vitmae_pad_small")
    converted = convert_state_dict(weights, config)
    tiles = torch.randn(5, 16, 16)
    conv = torch.nn.functional.conv2d(
        tiles[:, None].repeat(1, 3, 1, 1), weights["vit.embeddings.patch_embeddings.projection.weight"]
    )
    linear = tiles.flatten(1) @ converted["brainlm.embeddings.tile_projection.weight"].T
    torch.testing.assert_close(linear, conv.flatten(1), atol=1e-5, rtol=1e-5)


def test_config_translation_keeps_the_pretraining_defaults():
    _, config = original("vitmae_pad_small")
    ours = original_config_to_brainlm({**config, "train_mode": "predict_last", "mask_ratio": 0.1})
    assert (ours.token_layout, ours.image_size, ours.patch_size) == ("tile_2d", 432, 16)
    assert (ours.mask_strategy, ours.mask_ratio) == ("predict_last", 0.1)
    _, config = original("brainlm_small")
    ours = original_config_to_brainlm(config)
    assert (ours.norm_position, ours.value_conv_kernel_size, ours.decoder_head) == ("post", 65, "mlp")
    assert (ours.patch_size, ours.mask_ratio, ours.reconstruction_loss) == (20, 0.2, "mse")


MANIFESTS = {
    "brainlm-13m": "brainlm_13m_hidden512_inferred.json",
    "brainlm-111m": "vitmae_111M_base_dims.json",
    "brainlm-650m": "vitmae_650M_huge_dims.json",
}


@pytest.mark.parametrize("preset", MANIFESTS)
def test_presets_build_the_released_architectures_and_every_manifest_key_is_accounted_for(preset):
    manifest = reference_json("manifests", MANIFESTS[preset])
    config = BrainLMConfig.from_preset(preset)
    translated = original_config_to_brainlm(manifest["config"])
    assert translated.to_diff_dict() == config.to_diff_dict()
    with torch.device("meta"):
        model = BrainLMForMaskedSignalModeling(config)
    expected = {name: tuple(tensor.shape) for name, tensor in model.state_dict().items()}
    family = detect_family(manifest["config"])
    renamed = {}
    for key, shape in manifest["state_dict"].items():
        new_key = rename_key(key, family)
        if new_key is not None:
            renamed[new_key] = tuple(shape)
    if family == "vit_mae":  # the three input channels are folded into one
        weight = renamed["brainlm.embeddings.tile_projection.weight"]
        renamed["brainlm.embeddings.tile_projection.weight"] = (weight[0], weight[2] * weight[3])
        for name in ("decoder.decoder_pred.weight", "decoder.decoder_pred.bias"):
            renamed[name] = (renamed[name][0] // 3, *renamed[name][1:])
    assert renamed == expected
    dropped = {key for key in manifest["state_dict"] if rename_key(key, family) is None}
    kept = len(manifest["state_dict"]) - len(dropped)
    assert kept == len(expected)
    # parameter counts derived by hand from the manifests: the 13M loses its dead 768-wide head (768 * 513);
    # the ViT-MAE family loses its frozen position tables and two of three input/output channels
    released = {
        "brainlm-13m": manifest["num_parameters"] - 768 * (512 + 1),
        "brainlm-111m": manifest["num_trainable_parameters"] - 768 * 2 * 16 * 16 - (2 * 16 * 16) * (512 + 1),
        "brainlm-650m": manifest["num_trainable_parameters"] - 1280 * 2 * 14 * 14 - (2 * 14 * 14) * (512 + 1),
    }
    assert model.num_parameters() == released[preset]
