"""Behaviour of the native BrainLM model: shapes, masking, determinism, backends, outputs, loss."""

import logging
import math

import pytest
import torch

from brainlm_hf import BrainLMConfig, BrainLMForMaskedSignalModeling, BrainLMModel
from brainlm_hf.modeling_brainlm import sinusoidal_encoding


def make(model_class, config, seed=0):
    torch.manual_seed(seed)
    return model_class(config).eval()


def test_shapes_of_the_pretraining_outputs(config, inputs):
    model = make(BrainLMForMaskedSignalModeling, config)
    out = model(**inputs, output_hidden_states=True)
    num_tokens = 7 * 6
    num_kept = int(num_tokens * (1 - 0.5))
    assert out.logits.shape == (3, 7, 30)
    assert out.mask.shape == (3, 7, 6)
    assert out.token_mask.shape == (3, num_tokens)
    assert out.ids_restore.shape == (3, num_tokens)
    assert out.last_hidden_state.shape == (3, 1 + num_kept, 32)
    assert len(out.hidden_states) == config.num_hidden_layers + 1
    assert all(h.shape == (3, 1 + num_kept, 32) for h in out.hidden_states)
    assert out.loss.shape == ()


def test_any_number_of_regions_and_windows(config):
    model = make(BrainLMModel, config)
    for num_regions, num_timepoints in [(1, 5), (424, 20), (11, 55)]:
        out = model(torch.randn(2, num_regions, num_timepoints), torch.randn(2, num_regions, 3))
        assert out.last_hidden_state.shape == (2, 1 + num_regions * num_timepoints // 5, 32)


def test_token_embedding_is_window_plus_xyz_plus_window_index_sinusoid(config, inputs):
    model = make(BrainLMModel, config)
    emb = model.embeddings
    signal, xyz = inputs["signal_values"], inputs["coordinates"]
    tokens = emb(signal, xyz[None])  # (B, 1 + L, H): CLS, then every token in canonical order
    assert torch.equal(tokens[:, 0], emb.cls_token[0].expand(3, -1))
    # token k = v * N + n (row 1 + k) holds region v, timepoints [5n, 5n + 5)
    v, n = 4, 3
    expected = (
        emb.signal_projection(signal[:, v, 5 * n : 5 * n + 5])
        + emb.coordinate_projection(xyz[v] * config.coordinate_scale)
        + sinusoidal_encoding(6, 32)[n]
    )
    torch.testing.assert_close(tokens[:, 1 + v * 6 + n], expected)


def test_sinusoid_matches_the_textbook_formula():
    table = sinusoidal_encoding(7, 8)
    for n in range(7):
        for i in range(4):
            assert table[n, 2 * i].item() == pytest.approx(math.sin(n / 10000 ** (2 * i / 8)), abs=1e-6)
            assert table[n, 2 * i + 1].item() == pytest.approx(math.cos(n / 10000 ** (2 * i / 8)), abs=1e-6)


@pytest.mark.parametrize("mask_ratio", [0.1, 0.5, 0.75, 0.9])
def test_random_mask_fraction_and_kept_order(config, inputs, mask_ratio):
    model = make(BrainLMModel, config)
    noise = torch.rand(3, 42)
    out = model(**inputs, noise=noise, mask_ratio=mask_ratio)
    num_kept = int(42 * (1 - mask_ratio))
    assert (out.token_mask.sum(1) == 42 - num_kept).all()
    assert out.last_hidden_state.shape[1] == 1 + num_kept
    # the kept tokens are the smallest-noise ones, presented in ascending-noise order
    ids_shuffle = torch.argsort(out.ids_restore, dim=1)
    torch.testing.assert_close(ids_shuffle, torch.argsort(noise, dim=1), rtol=0, atol=0)
    assert (out.token_mask.gather(1, ids_shuffle[:, :num_kept]) == 0).all()
    torch.testing.assert_close(out.mask.flatten(1), out.token_mask)


def test_forecast_masks_the_last_windows_in_canonical_order(config, inputs):
    model = make(BrainLMModel, config)
    out = model(**inputs, mask_ratio=0.3, mask_strategy="forecast", noise=torch.rand(3, 42))
    # k = ceil(0.3 * 6) = 2 last windows of every region are masked, the noise is ignored
    expected = torch.zeros(3, 7, 6)
    expected[:, :, 4:] = 1
    torch.testing.assert_close(out.mask, expected)
    # the visible tokens keep canonical order: region-major, windows 0..3
    ids_shuffle = torch.argsort(out.ids_restore, dim=1)[:, : 7 * 4]
    expected_ids = torch.tensor([v * 6 + n for v in range(7) for n in range(4)])
    assert (ids_shuffle == expected_ids).all()
    # and equal the unmasked model's tokens when the encoder is a single embedding (check through hidden_states[0])
    full = model(**inputs, output_hidden_states=True).hidden_states[0]
    part = model(**inputs, mask_ratio=0.3, mask_strategy="forecast", output_hidden_states=True).hidden_states[0]
    torch.testing.assert_close(part[:, 1:], full[:, 1 + expected_ids])


def test_forecast_that_masks_everything_is_refused(config, inputs):
    with pytest.raises(ValueError, match="masks all 6 windows"):
        make(BrainLMModel, config)(**inputs, mask_ratio=0.9, mask_strategy="forecast")


def test_noise_makes_masking_deterministic(config, inputs):
    model = make(BrainLMForMaskedSignalModeling, config)
    noise = torch.rand(3, 42)
    a, b = model(**inputs, noise=noise), model(**inputs, noise=noise)
    assert torch.equal(a.logits, b.logits) and torch.equal(a.mask, b.mask) and torch.equal(a.loss, b.loss)
    c = model(**inputs)  # fresh random noise: a different mask
    assert not torch.equal(a.mask, c.mask)


@pytest.mark.parametrize("value_conv_kernel_size", [0, 5])
def test_no_masking_is_deterministic_and_in_canonical_order(config, inputs, value_conv_kernel_size):
    config.value_conv_kernel_size = value_conv_kernel_size  # 5: an order-dependent encoder
    model = make(BrainLMModel, config)
    plain = model(**inputs)
    assert torch.equal(plain.ids_restore, torch.arange(42).expand(3, -1))
    assert plain.mask.sum() == 0
    assert torch.equal(plain.last_hidden_state, model(**inputs).last_hidden_state)
    # mask_ratio=0 never shuffles, whatever the noise
    shuffled_noise = model(**inputs, noise=torch.rand(3, 42), mask_ratio=0.0)
    assert torch.equal(plain.last_hidden_state, shuffled_noise.last_hidden_state)
    assert plain.last_hidden_state.shape == (3, 43, 32)


def test_base_model_does_not_mask_by_default_but_the_pretraining_model_does(config, inputs):
    assert make(BrainLMModel, config)(**inputs).mask.sum() == 0
    out = make(BrainLMForMaskedSignalModeling, config)(**inputs)
    assert out.mask.sum() == 3 * (42 - int(42 * 0.5))


def test_loss_is_none_when_nothing_is_masked(config, inputs):
    out = make(BrainLMForMaskedSignalModeling, config)(**inputs, mask_ratio=0.0)
    assert out.loss is None
    assert out.logits.shape == (3, 7, 30)


@pytest.mark.parametrize("reconstruction_loss", ["mse", "mae"])
def test_loss_is_the_mean_error_over_masked_tokens_only(config, inputs, reconstruction_loss):
    config.reconstruction_loss = reconstruction_loss
    model = make(BrainLMForMaskedSignalModeling, config)
    out = model(**inputs, noise=torch.rand(3, 42))
    errors, count = 0.0, 0
    for b in range(3):
        for v in range(7):
            for n in range(6):
                if out.mask[b, v, n] == 1:
                    diff = out.logits[b, v, 5 * n : 5 * n + 5] - inputs["signal_values"][b, v, 5 * n : 5 * n + 5]
                    errors += (diff.abs() if reconstruction_loss == "mae" else diff**2).sum().item()
                    count += 5
    assert out.loss.item() == pytest.approx(errors / count, rel=1e-5)


def test_eager_and_sdpa_agree(config, inputs):
    model = make(BrainLMForMaskedSignalModeling, config)
    noise = torch.rand(3, 42)
    model.set_attn_implementation("eager")
    eager = model(**inputs, noise=noise)
    model.set_attn_implementation("sdpa")
    sdpa = model(**inputs, noise=noise)
    assert (eager.logits - sdpa.logits).abs().max() <= 1e-5
    assert (eager.last_hidden_state - sdpa.last_hidden_state).abs().max() <= 1e-5


def test_attention_maps_are_row_stochastic_under_eager(config, inputs):
    model = make(BrainLMModel, config)
    model.set_attn_implementation("eager")
    out = model(**inputs, output_attentions=True)
    assert len(out.attentions) == 2
    for attn in out.attentions:
        assert attn.shape == (3, 4, 43, 43)
        torch.testing.assert_close(attn.sum(-1), torch.ones(3, 4, 43))


def test_attention_maps_under_sdpa_use_eager_for_that_call(config, inputs, caplog):
    """A backend that cannot return attentions computes them with eager attention for the call (one warning) and
    stays set; the outputs are the eager ones."""
    model = make(BrainLMModel, config)
    model.set_attn_implementation("eager")
    eager = model(**inputs, output_attentions=True)
    model.set_attn_implementation("sdpa")
    plain = model(**inputs)
    logging.Logger.warning_once.cache_clear()  # once per process: forget what earlier tests printed
    with caplog.at_level("WARNING"):
        out = model(**inputs, output_attentions=True)
        model(**inputs, output_attentions=True)
    assert sum("use eager attention" in record.message for record in caplog.records) == 1
    assert model.config._attn_implementation == "sdpa"
    for ours, reference in zip(out.attentions, eager.attentions, strict=True):
        torch.testing.assert_close(ours, reference)
    torch.testing.assert_close(out.last_hidden_state, plain.last_hidden_state, atol=1e-5, rtol=1e-5)


def test_hidden_states_are_layer_outputs_before_the_final_norm(config, inputs):
    model = make(BrainLMModel, config)
    out = model(**inputs, output_hidden_states=True)
    torch.testing.assert_close(model.layernorm(out.hidden_states[-1]), out.last_hidden_state)
    expected = model.layers[0](out.hidden_states[0])[0]
    torch.testing.assert_close(out.hidden_states[1], expected)


def test_gradient_checkpointing_gives_the_same_gradients(config, inputs):
    noise = torch.rand(3, 42)

    def grads(checkpointing):
        model = make(BrainLMForMaskedSignalModeling, config).train()
        if checkpointing:
            model.activation_checkpointing_enable()
        model(**inputs, noise=noise).loss.backward()
        return {name: p.grad for name, p in model.named_parameters()}

    plain, checkpointed = grads(False), grads(True)
    assert plain.keys() == checkpointed.keys()
    for name in plain:
        torch.testing.assert_close(plain[name], checkpointed[name], rtol=0, atol=1e-7, msg=name)
    assert all(g is not None and g.abs().sum() > 0 for n, g in plain.items() if "cls_token" not in n)


def test_tuple_and_dataclass_outputs_agree(config, inputs):
    model = make(BrainLMForMaskedSignalModeling, config)
    noise = torch.rand(3, 42)
    as_dict = model(**inputs, noise=noise)
    as_tuple = model(**inputs, noise=noise, return_dict=False)
    assert isinstance(as_tuple, tuple)
    assert len(as_tuple) == len(as_dict.to_tuple()) == 6  # loss, logits, mask, token_mask, ids_restore, last_hidden
    for a, b in zip(as_tuple, as_dict.to_tuple(), strict=True):
        assert torch.equal(a, b)
    base = make(BrainLMModel, config)
    assert torch.equal(base(**inputs, return_dict=False)[0], base(**inputs).last_hidden_state)


def test_batched_coordinates_equal_shared_coordinates(config, inputs):
    model = make(BrainLMForMaskedSignalModeling, config)
    noise = torch.rand(3, 42)
    shared = model(**inputs, noise=noise)
    batched = model(inputs["signal_values"], inputs["coordinates"].expand(3, 7, 3), noise=noise)
    torch.testing.assert_close(shared.logits, batched.logits)


def test_bf16_autocast_matches_fp32(config, inputs):
    """Under bf16 autocast (8 mantissa bits: relative rounding 2^-8 per operation) the outputs are computed in bf16
    and stay within 2% (relative norm) of the fp32 outputs for the same mask; the loss within 1%."""
    model = make(BrainLMForMaskedSignalModeling, config)
    noise = torch.rand(3, 42, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        fp32 = model(**inputs, noise=noise)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            bf16 = model(**inputs, noise=noise)
    assert bf16.logits.dtype == bf16.last_hidden_state.dtype == torch.bfloat16
    torch.testing.assert_close(bf16.mask, fp32.mask)
    for name in ("logits", "last_hidden_state"):
        error = (getattr(bf16, name).float() - getattr(fp32, name)).norm() / getattr(fp32, name).norm()
        assert error < 2e-2, name
    assert bf16.loss.item() == pytest.approx(fp32.loss.item(), rel=1e-2)


def test_dropout_is_active_in_training_only(inputs):
    config = BrainLMConfig.from_preset("brainlm-tiny", patch_size=5, hidden_dropout_prob=0.5)
    model = make(BrainLMModel, config)
    assert torch.equal(model(**inputs).last_hidden_state, model(**inputs).last_hidden_state)
    model.train()
    assert not torch.equal(model(**inputs).last_hidden_state, model(**inputs).last_hidden_state)


def test_presets():
    tiny = BrainLMConfig.from_preset("brainlm-tiny")
    assert tiny.mask_ratio > 0 and tiny.patch_size == 20
    with torch.device("meta"):  # the count needs no weights
        base = BrainLMModel(BrainLMConfig.from_preset("brainlm-base"))
    assert 85e6 < base.num_parameters() < 87e6  # ViT-B encoder
    assert BrainLMConfig.from_preset("brainlm-small", mask_ratio=0.2).mask_ratio == 0.2
    with pytest.raises(ValueError, match="Available presets"):
        BrainLMConfig.from_preset("brainlm-xxl")


def test_post_norm_blocks_are_their_own_layer_class_with_the_same_parameter_names(config):
    from brainlm_hf.modeling_brainlm import BrainLMLayer, BrainLMPostNormLayer

    pre = BrainLMForMaskedSignalModeling(config)
    config.norm_position = "post"
    post = BrainLMForMaskedSignalModeling(config)
    assert {type(layer) for layer in [*pre.brainlm.layers, *pre.decoder.layers]} == {BrainLMLayer}
    assert {type(layer) for layer in [*post.brainlm.layers, *post.decoder.layers]} == {BrainLMPostNormLayer}
    assert list(pre.state_dict()) == list(post.state_dict())  # checkpoints unchanged
    # a post-LN block normalises after each residual sum: its output rows have zero mean (LayerNorm bias 0 at init)
    hidden = torch.randn(2, 5, config.hidden_size)
    out, _ = post.brainlm.layers[0](hidden)
    torch.testing.assert_close(out.mean(-1), torch.zeros(2, 5), atol=1e-5, rtol=0)


class _Shifted(torch.nn.Module):
    """Input embeddings that add `shift` `(H,)` to those of `embeddings` (a vector: LayerNorm removes a constant)."""

    def __init__(self, embeddings: torch.nn.Module, shift: torch.Tensor):
        super().__init__()
        self.embeddings, self.shift, self.layout = embeddings, shift, getattr(embeddings, "layout", None)

    def forward(self, *args, **kwargs):
        embedded = self.embeddings(*args, **kwargs)
        return (embedded[0] + self.shift, *embedded[1:]) if isinstance(embedded, tuple) else embedded + self.shift


def test_set_input_embeddings_replaces_the_module_the_encoder_reads(config, inputs):
    model = make(BrainLMModel, config)
    original, shift = model.get_input_embeddings(), torch.linspace(-1, 1, config.hidden_size)
    with torch.no_grad():
        handle = original.register_forward_hook(
            lambda module, args, output: _Shifted(torch.nn.Identity(), shift)(output)
        )
        expected = model(**inputs).last_hidden_state  # the original embeddings, shifted by a hook
        handle.remove()
        plain = model(**inputs).last_hidden_state
        model.set_input_embeddings(_Shifted(original, shift))
        assert isinstance(model.get_input_embeddings(), _Shifted)
        torch.testing.assert_close(model(**inputs).last_hidden_state, expected)
    assert not torch.allclose(plain, expected, atol=1e-3)
    with pytest.raises(ValueError, match="has no token `layout`"):
        model.set_input_embeddings(torch.nn.Identity())
