"""BrainLM behaves like a model inside transformers: loading semantics, compile and export, offload, input
embeddings for adapters, attentions under any backend, config conventions, and every bad model input named."""

import json
import logging

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from brainlm_hf import (
    BrainLMConfig,
    BrainLMForMaskedSignalModeling,
    BrainLMForSequenceClassification,
    BrainLMModel,
)
from brainlm_hf.modeling_brainlm import MAX_INPUT_MAGNITUDE, WeightsMismatchError

# ----------------------------------------------------------------------------------------------- loading semantics


def test_output_loading_info_returns_the_report_instead_of_raising(pretrained, caplog):
    _, path = pretrained
    weights = load_file(path / "model.safetensors")
    weights["brainlm.extra.weight"] = torch.zeros(1)
    del weights["brainlm.layernorm.bias"]
    save_file(weights, path / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(ValueError, match="brainlm.layernorm.bias"):  # strict by default
        BrainLMForMaskedSignalModeling.from_pretrained(path)
    with caplog.at_level(logging.WARNING):
        model, info = BrainLMForMaskedSignalModeling.from_pretrained(path, output_loading_info=True)
    assert isinstance(model, BrainLMForMaskedSignalModeling)
    assert "brainlm.layernorm.bias" in info["missing_keys"] and "brainlm.extra.weight" in info["unexpected_keys"]
    assert "brainlm.layernorm.bias" in caplog.text and "output_loading_info" in caplog.text


def test_a_complete_checkpoint_reports_nothing_missing(pretrained):
    model, path = pretrained
    loaded, info = BrainLMForMaskedSignalModeling.from_pretrained(path, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"]
    assert all(
        torch.equal(a, b) for a, b in zip(model.state_dict().values(), loaded.state_dict().values(), strict=True)
    )


def test_shape_mismatch_is_a_runtime_error_listing_the_keys(pretrained):
    _, path = pretrained
    weights = load_file(path / "model.safetensors")
    weights["brainlm.layernorm.bias"] = torch.zeros(5)
    save_file(weights, path / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(RuntimeError, match="mismatched_keys.*brainlm.layernorm.bias") as error:
        BrainLMForMaskedSignalModeling.from_pretrained(path)
    assert isinstance(error.value, ValueError) and isinstance(error.value, WeightsMismatchError)


def test_from_pretrained_none_with_config_and_state_dict(pretrained):
    model, _ = pretrained
    loaded = BrainLMForMaskedSignalModeling.from_pretrained(None, config=model.config, state_dict=model.state_dict())
    assert all(
        torch.equal(a, b) for a, b in zip(model.state_dict().values(), loaded.state_dict().values(), strict=True)
    )


def test_weights_of_another_architecture_are_refused_with_their_keys(pretrained):
    """A folder whose weights are not ours (here a ViT-MAE-like state dict) is refused, unless the caller asks for
    the loading report (see test_untrusted_model_inputs)."""
    _, path = pretrained
    save_file(
        {"vit.embeddings.cls_token": torch.zeros(1, 1, 32)}, path / "model.safetensors", metadata={"format": "pt"}
    )
    with pytest.raises(WeightsMismatchError, match="no weight of .*vit.embeddings.cls_token"):
        BrainLMModel.from_pretrained(path)


# ------------------------------------------------------------------------------------------- compile and export


@pytest.mark.slow
def test_compiled_fullgraph_equals_eager_as_docs_model_md_shows():
    """The example of docs/model.md (it is marked illustrative there, and runs here): the default `brainlm-tiny`
    encoder compiled whole by inductor, on 8 recordings of 424 regions x 200 timepoints, equals eager."""
    torch.manual_seed(0)
    model = BrainLMModel(BrainLMConfig.from_preset("brainlm-tiny")).eval()
    assert model.config.validate_inputs  # the default config, input checks on
    compiled = torch.compile(model, fullgraph=True)
    signal, coordinates = torch.randn(8, 424, 200), torch.randn(424, 3) * 50
    with torch.no_grad():
        graph, eager = compiled(signal, coordinates), model(signal, coordinates)
    torch.testing.assert_close(graph.last_hidden_state, eager.last_hidden_state, atol=1e-5, rtol=1e-5)


@pytest.mark.slow
def test_the_masked_model_is_captured_as_one_graph(config, inputs):
    """`fullgraph=True` of the pretraining model with masking (random order from `noise`): no graph break, and the
    captured graph computes eager's logits. AOTAutograd without code generation (`aot_eager`): inductor's numerics
    of this model are tested by training it compiled (tests/training/test_pretraining.py::test_torch_compile)."""
    torch.manual_seed(0)
    model = BrainLMForMaskedSignalModeling(config).eval()
    noise = torch.rand(3, 42)
    compiled = torch.compile(model, fullgraph=True, backend="aot_eager")
    with torch.no_grad():
        graph, eager = compiled(**inputs, noise=noise), model(**inputs, noise=noise)
    torch.testing.assert_close(graph.logits, eager.logits, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(graph.mask, eager.mask)


def test_exported_program_runs_and_matches(config, inputs):
    torch.manual_seed(0)
    model = BrainLMModel(config).eval()
    program = torch.export.export(model, (inputs["signal_values"], inputs["coordinates"]))
    out = program.module()(inputs["signal_values"], inputs["coordinates"])
    torch.testing.assert_close(out.last_hidden_state, model(**inputs).last_hidden_state, atol=1e-5, rtol=1e-5)


# -------------------------------------------------------------------------------------------------------- offload


def test_embeddings_offloaded_to_disk_run(pretrained, inputs, tmp_path):
    """Nothing reads a parameter outside its own module's forward (the CLS token lives in the embeddings')."""
    model, path = pretrained
    device_map = {"brainlm.embeddings": "disk", "brainlm.layers": "cpu", "brainlm.layernorm": "cpu", "decoder": "cpu"}
    offloaded = BrainLMForMaskedSignalModeling.from_pretrained(
        path, device_map=device_map, offload_folder=tmp_path / "offload"
    )
    assert offloaded.brainlm.embeddings.cls_token.device.type == "meta"  # really offloaded
    noise = torch.rand(3, 42)
    with torch.no_grad():
        torch.testing.assert_close(offloaded(**inputs, noise=noise).logits, model(**inputs, noise=noise).logits)


# ------------------------------------------------------------------------------------------- input embeddings


def test_lora_with_reentrant_checkpointing_gives_gradients_to_every_adapter(config, inputs):
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(0)
    config.num_labels = 1
    model = BrainLMForSequenceClassification(config)
    assert model.get_input_embeddings() is model.brainlm.embeddings
    model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": True})
    model.enable_input_require_grads()
    model = get_peft_model(model, LoraConfig(r=4, target_modules=["q_proj", "v_proj"])).train()
    model(**inputs, labels=torch.randn(3)).loss.backward()
    adapters = {name: p.grad for name, p in model.named_parameters() if "lora_" in name}
    assert len(adapters) == 8 and all(grad is not None for grad in adapters.values())
    # at initialisation lora_B is zero, so only its gradients are non-zero
    assert all(grad.abs().sum() > 0 for name, grad in adapters.items() if "lora_B" in name)


# ----------------------------------------------------------------------------------------------------- config


@pytest.mark.parametrize(
    "bad, field",
    [
        ({"num_attention_heads": 0}, "num_attention_heads"),
        ({"decoder_num_attention_heads": 0}, "decoder_num_attention_heads"),
        ({"num_hidden_layers": -1}, "num_hidden_layers"),
        ({"num_hidden_layers": 0}, "num_hidden_layers"),
        ({"decoder_num_hidden_layers": -2}, "decoder_num_hidden_layers"),
        ({"patch_size": 0}, "patch_size"),
        ({"hidden_act": "gleu"}, "hidden_act"),
        ({"hidden_dropout_prob": 1.5}, "hidden_dropout_prob"),
        ({"layer_norm_eps": 0.0}, "layer_norm_eps"),
        ({"intermediate_size": 0}, "intermediate_size"),
    ],
)
def test_impossible_config_values_raise_a_value_error_naming_the_field(bad, field):
    with pytest.raises(ValueError, match=field):
        BrainLMConfig(**bad)


def test_misspelt_keys_are_reported_in_code_and_in_config_json(tmp_path, caplog):
    with caplog.at_level(logging.WARNING):
        BrainLMConfig(mask_ratoi=0.5)
    assert "mask_ratoi (did you mean mask_ratio?)" in caplog.text
    with pytest.raises(ValueError, match="mask_ratoi"):
        BrainLMConfig(mask_ratoi=0.5, reject_unknown_keys=True)
    BrainLMConfig().save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**saved, "hiden_size": 64}))
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        BrainLMConfig.from_pretrained(tmp_path)
    assert "hiden_size (did you mean hidden_size?)" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING):  # a config saved by us has nothing to report
        BrainLMConfig.from_preset("brainlm-tiny", num_labels=3).save_pretrained(tmp_path / "clean")
        BrainLMConfig.from_pretrained(tmp_path / "clean")
    assert "not among its fields" not in caplog.text


def test_label_statistics_are_not_named_like_initialiser_scales(tmp_path):
    config = BrainLMConfig(num_labels=2, problem_type="regression", label_stats={"mean": [1.0, 2.0], "std": [3, 4]})
    assert not [name for name in config.to_dict() if name.endswith(("_std", "_mean"))]
    saved = config.to_dict()
    del saved["label_stats"]
    (tmp_path / "config.json").write_text(json.dumps({**saved, "label_mean": [1.0, 2.0], "label_std": [3.0, 4.0]}))
    assert BrainLMConfig.from_pretrained(tmp_path).label_stats == {"mean": [1.0, 2.0], "std": [3.0, 4.0]}


# ------------------------------------------------------------------------------------------- bad model inputs


@pytest.mark.parametrize("dtype", [torch.float64, torch.float16, torch.bfloat16])
def test_floating_inputs_of_another_dtype_are_cast(config, inputs, dtype):
    model = BrainLMForMaskedSignalModeling(config).eval()
    noise = torch.rand(3, 42)
    expected = model(**inputs, noise=noise)
    signal = inputs["signal_values"].to(dtype)
    out = model(signal, inputs["coordinates"].to(dtype), noise=noise)
    assert out.logits.dtype == torch.float32
    reference = model(signal.float(), inputs["coordinates"].to(dtype).float(), noise=noise)
    torch.testing.assert_close(out.logits, reference.logits)
    if dtype == torch.float64:
        torch.testing.assert_close(out.loss, expected.loss)


def test_numpy_inputs_are_converted(config, inputs):
    model = BrainLMModel(config).eval()
    out = model(inputs["signal_values"].double().numpy(), inputs["coordinates"].numpy())  # numpy's float64 default
    torch.testing.assert_close(out.last_hidden_state, model(**inputs).last_hidden_state)


@pytest.mark.parametrize("dtype", [torch.int64, torch.int32, torch.bool, torch.complex64])
def test_integer_and_complex_inputs_are_refused(config, inputs, dtype):
    model = BrainLMModel(config)
    with pytest.raises(ValueError, match=f"signal_values has dtype {dtype}"):
        model(inputs["signal_values"].to(dtype), inputs["coordinates"])
    with pytest.raises(ValueError, match="coordinates has dtype"):
        model(inputs["signal_values"], inputs["coordinates"].to(dtype))


def test_something_that_is_no_array_is_a_type_error(config):
    with pytest.raises(TypeError, match="pass a torch tensor"):
        BrainLMModel(config)("not a signal", None)


def test_a_transposed_input_is_named(config):
    model = BrainLMModel(config)  # patch_size 5
    signal = torch.randn(2, 7, 30).transpose(1, 2)  # (B, T, V) = (2, 30, 7): T would be 7, V 30
    with pytest.raises(ValueError, match="is the input transposed.*transpose\\(1, 2\\)"):
        model(signal, torch.randn(30, 3))


@pytest.mark.parametrize("shape", [(0, 7, 30), (2, 7, 0), (2, 0, 30)])
def test_empty_inputs_are_refused(config, shape):
    with pytest.raises(ValueError, match="is empty"):
        BrainLMModel(config)(torch.randn(shape), torch.randn(shape[1], 3))


def test_huge_finite_values_are_refused_instead_of_a_silent_nan_loss(config, inputs):
    model = BrainLMForMaskedSignalModeling(config)
    signal = inputs["signal_values"].clone()
    signal[1, 3, 7] = 1e30
    with pytest.raises(ValueError, match="values up to 1e\\+30.*overflow"):
        model(signal, inputs["coordinates"])
    signal[1, 3, 7] = MAX_INPUT_MAGNITUDE  # the largest accepted magnitude still gives a finite loss
    assert torch.isfinite(model(signal, inputs["coordinates"]).loss)


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_noise_with_nan_or_inf_is_refused(config, inputs, bad):
    noise = torch.rand(3, 42)
    noise[0, 5] = bad
    with pytest.raises(ValueError, match="noise contains NaN or Inf"):
        BrainLMForMaskedSignalModeling(config)(**inputs, noise=noise)


def test_mean_pooling_with_no_visible_data_token_is_never_nan(config):
    config.num_labels, config.pooling = 1, "mean"
    model = BrainLMForSequenceClassification(config).eval()
    signal, coordinates = torch.randn(2, 1, 10), torch.randn(1, 3)  # 2 tokens; mask 0.6 keeps int(0.8) = 0
    out = model(signal, coordinates, mask_ratio=0.6)
    assert torch.isfinite(out.logits).all()
    encoder = model.brainlm(signal, coordinates, mask_ratio=0.6)
    torch.testing.assert_close(model.brainlm.pool(encoder, 1, 10, "mean"), encoder.last_hidden_state[:, 0])


def test_class_labels_outside_the_range_name_num_labels(config, inputs):
    config.num_labels, config.problem_type = 3, "single_label_classification"
    model = BrainLMForSequenceClassification(config)
    with pytest.raises(ValueError, match=r"\[0, num_labels\) = \[0, 3\)"):
        model(**inputs, labels=torch.tensor([0, 3, 1]))
    with pytest.raises(ValueError, match=r"\[0, num_labels\)"):
        model(**inputs, labels=torch.tensor([0, -1, 1]))
    with pytest.raises(ValueError, match="integer class indices"):
        model(**inputs, labels=torch.tensor([0.0, 1.5, 1.0]))


def test_regression_labels_of_the_wrong_shape_are_refused(config, inputs):
    config.num_labels, config.problem_type = 2, "regression"
    model = BrainLMForSequenceClassification(config)
    with pytest.raises(ValueError, match="shape \\(3, 2\\).*got \\(2, 3\\) \\(transposed\\?\\)"):
        model(**inputs, labels=torch.randn(2, 3))
    with pytest.raises(ValueError, match="shape \\(3, 2\\)"):
        model(**inputs, labels=torch.randn(6))
    assert torch.isfinite(model(**inputs, labels=torch.randn(3, 2)).loss)


def test_float_labels_without_problem_type_follow_the_transformers_rule(config, inputs):
    config.num_labels = 3
    model = BrainLMForSequenceClassification(config)
    labels = torch.tensor([[0.0, 1.0, 1.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    out = model(**inputs, labels=labels)  # float labels with num_labels > 1: multi-label
    assert model.config.problem_type == "multi_label_classification"
    expected = torch.nn.functional.binary_cross_entropy_with_logits(out.logits, labels)
    torch.testing.assert_close(out.loss, expected)


def test_inputs_as_numpy_give_the_same_loss_as_tensors(config, inputs):
    model = BrainLMForMaskedSignalModeling(config).eval()
    noise = torch.rand(3, 42)
    as_numpy = model(np.asarray(inputs["signal_values"]), np.asarray(inputs["coordinates"]), noise=noise)
    torch.testing.assert_close(as_numpy.loss, model(**inputs, noise=noise).loss)
