# Copyright 2026 The brainlm_hf authors. Licensed under the Apache License, Version 2.0.
"""Conversion of checkpoints written by the original BrainLM code into brainlm_hf checkpoints.

Supported so far: the "13M" family (`model_type="brainlm_mae"`, class `BrainLMForPretraining`). The conversion is
exact: every original key is either renamed or dropped by an explicit rule, and anything else raises.
"""

import re

import torch

from .configuration_brainlm import BrainLMConfig

# original key pattern -> brainlm_hf key (applied in order, all matching rules apply)
_BRAINLM_MAE_RENAMES = [
    (r"^vit\.embeddings\.signal_embedding_projection\.", "brainlm.embeddings.signal_projection."),
    (r"^vit\.embeddings\.xyz_embedding_projection\.", "brainlm.embeddings.coordinate_projection."),
    (r"^vit\.embeddings\.cls_token$", "brainlm.embeddings.cls_token"),
    (r"^vit\.encoder\.layer\.", "brainlm.layers."),
    (r"^vit\.layernorm\.", "brainlm.layernorm."),
    (r"^decoder\.decoder_layers\.", "decoder.layers."),
    (r"^decoder\.decoder_xyz_projection\.", "decoder.coordinate_projection."),
    (r"^decoder\.decoder_pred1\.", "decoder.decoder_pred.0."),
    (r"^decoder\.decoder_pred2\.", "decoder.decoder_pred.2."),
    (r"\.attention\.self\.query\.", ".attention.q_proj."),
    (r"\.attention\.self\.key\.", ".attention.k_proj."),
    (r"\.attention\.self\.value\.", ".attention.v_proj."),
    (r"\.attention\.self\.conv\.", ".attention.value_conv."),
    (r"\.attention\.output\.dense\.", ".attention.o_proj."),
    (r"\.attention\.output\.LayerNorm\.", ".attention_norm."),
    (r"\.intermediate\.dense\.", ".mlp.fc1."),
    (r"\.output\.dense\.", ".mlp.fc2."),
    (r"\.output\.LayerNorm\.", ".mlp_norm."),
]
# Keys of the original that carry no information for brainlm_hf, each dropped for a stated reason.
_BRAINLM_MAE_DROPS = {
    r"^(vit\.embeddings|decoder)\.pos_embedding\.pe$": "fixed sin/cos table, recomputed (checked equal on conversion)",
    r"^decoder\.decoder_pred\.(weight|bias)$": "created by the ViTMAEDecoder superclass, never used in forward",
}
# Keys that exist in the original decoder-only pretraining class and that are not matched above are errors.
_BRAINLM_MAE_KEY = re.compile(r"^(vit|decoder)\.")


def brainlm_mae_config(original: dict, **overrides) -> BrainLMConfig:
    """Translate an original `brainlm_mae` config dict (its `config.json`) into a `BrainLMConfig`."""
    if original.get("model_type") != "brainlm_mae":
        raise ValueError(f"Expected an original 'brainlm_mae' config, got model_type={original.get('model_type')!r}.")
    if original.get("num_landmarks") != original.get("segment_means_seq_len"):
        raise ValueError(
            "Only num_landmarks == segment_means_seq_len (exact softmax attention) is supported, as in every released "
            f"checkpoint; got {original.get('num_landmarks')} and {original.get('segment_means_seq_len')}."
        )
    return BrainLMConfig(
        patch_size=original["timepoint_patching_size"],
        hidden_size=original["hidden_size"],
        num_hidden_layers=original["num_hidden_layers"],
        num_attention_heads=original["num_attention_heads"],
        intermediate_size=original["intermediate_size"],
        hidden_act=original["hidden_act"],
        hidden_dropout_prob=original["hidden_dropout_prob"],
        attention_probs_dropout_prob=original["attention_probs_dropout_prob"],
        initializer_range=original["initializer_range"],
        layer_norm_eps=original["layer_norm_eps"],
        qkv_bias=original["qkv_bias"],
        norm_position="post",
        value_conv_kernel_size=original["conv_kernel_size"],
        decoder_hidden_size=original["decoder_hidden_size"],
        decoder_num_hidden_layers=original["decoder_num_hidden_layers"],
        decoder_num_attention_heads=original["decoder_num_attention_heads"],
        decoder_intermediate_size=original["decoder_intermediate_size"],
        decoder_head="mlp",
        mask_ratio=original["mask_ratio"],
        reconstruction_loss=original.get("loss_fn", "mse"),
        **overrides,
    )


def convert_brainlm_mae_state_dict(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename an original `BrainLMForPretraining` state dict to `BrainLMForMaskedSignalModeling` keys."""
    from .modeling_brainlm import sinusoidal_encoding

    converted, unknown = {}, []
    for key, tensor in state_dict.items():
        if any(re.search(pattern, key) for pattern in _BRAINLM_MAE_DROPS):
            if key.endswith("pos_embedding.pe") and not torch.allclose(
                tensor.float(), sinusoidal_encoding(*tensor.shape), atol=1e-6
            ):
                raise ValueError(
                    f"{key} is not the standard sin/cos table; this checkpoint cannot be converted exactly."
                )
            continue
        if not _BRAINLM_MAE_KEY.match(key):
            unknown.append(key)
            continue
        new_key = key
        for pattern, replacement in _BRAINLM_MAE_RENAMES:
            new_key = re.sub(pattern, replacement, new_key)
        converted[new_key] = tensor
    if unknown:
        raise ValueError(f"Unknown keys in the original checkpoint: {unknown}.")
    return converted
