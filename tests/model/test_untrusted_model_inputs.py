"""Inputs and files the models cannot trust: a `timepoint_mask` that is no 0/1 mask and weights holding NaN/Inf
are refused with the problem named; and two loading conventions of transformers: the loading report of a
checkpoint that shares no key, and `from_pretrained(None, config=config, state_dict={})`."""

import logging

import pytest
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from brainlm_hf import BrainLMForMaskedSignalModeling, BrainLMForSequenceClassification, BrainLMModel
from brainlm_hf.errors import InvalidFileError, InvalidInputError
from brainlm_hf.modeling_brainlm import BrainLMDecoder, BrainLMRegionWindowEmbeddings


def padded_mask(batch: int = 3, timepoints: int = 30, real: int = 20) -> torch.Tensor:
    mask = torch.ones(batch, timepoints)
    mask[:, real:] = 0
    return mask


@pytest.mark.parametrize("bad", [float("nan"), 0.5, 2.0, -1.0, float("inf")])
@pytest.mark.parametrize("model_class", [BrainLMModel, BrainLMForMaskedSignalModeling])
def test_a_timepoint_mask_that_is_no_0_1_mask_is_refused(config, inputs, model_class, bad):
    """A NaN in the mask gave a NaN loss; 0.5 or 2 silently weighed timepoints in the loss and the pooled mean."""
    mask = padded_mask()
    mask[1, 3] = bad
    with pytest.raises(InvalidInputError, match="timepoint_mask must hold only 0.*and 1"):
        model_class(config).eval()(**inputs, timepoint_mask=mask)


def test_a_timepoint_mask_that_is_no_0_1_mask_is_refused_by_the_classifier(config, inputs):
    mask = padded_mask()
    mask[0, 0] = float("nan")
    model = BrainLMForSequenceClassification(config).eval()
    with pytest.raises(InvalidInputError, match="timepoint_mask"):
        model(**inputs, timepoint_mask=mask, labels=torch.zeros(3))


@pytest.mark.parametrize("dtype", [torch.bool, torch.int64, torch.uint8, torch.float16, torch.float64])
def test_a_0_1_mask_of_any_real_dtype_gives_the_loss_of_the_float_mask(config, inputs, dtype):
    torch.manual_seed(0)
    model = BrainLMForMaskedSignalModeling(config).eval()
    noise = torch.rand(3, model.num_tokens(7, 30))
    expected = model(**inputs, noise=noise, timepoint_mask=padded_mask()).loss
    loss = model(**inputs, noise=noise, timepoint_mask=padded_mask().to(dtype)).loss
    assert torch.isfinite(loss) and torch.equal(loss, expected)


def test_a_complex_mask_is_refused(config, inputs):
    with pytest.raises(InvalidInputError, match="dtype|complex"):
        BrainLMModel(config)(**inputs, timepoint_mask=padded_mask().to(torch.complex64))


@pytest.mark.parametrize(
    ("key", "value"),
    [("brainlm.layers.0.attention.q_proj.weight", float("inf")), ("decoder.decoder_norm.weight", float("nan"))],
)
def test_weights_holding_nan_or_inf_are_refused_at_load_naming_the_tensors(pretrained, key, value):
    """One Inf in an encoder weight loaded silently and `brainlm embed` wrote all-NaN embeddings; a NaN weight gave
    a NaN loss. Every model class that loads the tensor refuses it; the other tensors are not named."""
    _, path = pretrained
    weights = load_file(path / "model.safetensors")
    if key not in weights:
        key = next(name for name in weights if name.startswith(key.split(".")[0]) and name.endswith("weight"))
    weights[key] = weights[key].clone()
    weights[key].view(-1)[1] = value
    save_file(weights, path / "model.safetensors", metadata={"format": "pt"})
    classes = [BrainLMForMaskedSignalModeling] + ([BrainLMModel] if key.startswith("brainlm.") else [])
    for model_class in classes:
        name = key.removeprefix("brainlm.") if model_class is BrainLMModel else key  # as the model names it
        for kwargs in ({}, {"output_loading_info": True}):
            with pytest.raises(
                InvalidFileError, match=f"NaN or Inf values in 1 tensors \\(\\['{name}'\\]\\)"
            ) as error:
                model_class.from_pretrained(path, **kwargs)
            assert str(path) in str(error.value) and "earlier checkpoint" in str(error.value)


def test_large_finite_weights_whose_sum_overflows_are_not_refused(pretrained, inputs):
    """The check sums each tensor first: a float16 tensor whose sum overflows but whose values are finite loads."""
    model, path = pretrained
    weights = load_file(path / "model.safetensors")
    key = "decoder.decoder_pred.weight" if "decoder.decoder_pred.weight" in weights else next(iter(weights))
    weights[key] = torch.full_like(weights[key], 60000.0)
    save_file(weights, path / "model.safetensors", metadata={"format": "pt"})
    loaded = BrainLMForMaskedSignalModeling.from_pretrained(path, dtype=torch.float16)
    assert torch.isfinite(loaded.state_dict()[key]).all()


def test_the_loading_report_of_a_checkpoint_sharing_no_key_is_returned(pretrained, caplog):
    """As transformers: a caller who asks for the report gets it (everything missing, the foreign keys
    unexpected), with a warning; without it the checkpoint is refused."""
    _, path = pretrained
    save_file(
        {"vit.embeddings.cls_token": torch.zeros(1, 1, 32)}, path / "model.safetensors", metadata={"format": "pt"}
    )
    with pytest.raises(InvalidFileError, match="no weight of BrainLMModel.*vit.embeddings.cls_token"):
        BrainLMModel.from_pretrained(path)
    with caplog.at_level(logging.WARNING):
        model, info = BrainLMModel.from_pretrained(path, output_loading_info=True)
    assert isinstance(model, BrainLMModel)
    assert set(info["missing_keys"]) == set(model.state_dict())
    assert set(info["unexpected_keys"]) == {"vit.embeddings.cls_token"}
    assert "no weight of BrainLMModel" in caplog.text and "output_loading_info" in caplog.text


@pytest.mark.parametrize(
    "model_class", [BrainLMModel, BrainLMForMaskedSignalModeling, BrainLMForSequenceClassification]
)
def test_from_pretrained_none_with_an_empty_state_dict_initialises_every_weight(config, model_class):
    """How transformers tests meta-device initialisation: the model is built and `_init_weights` sets every
    weight (normal(0, initializer_range) for linear layers and tokens, 1 and 0 for layer norms, the fixed
    positional tables as a model made directly)."""
    torch.manual_seed(0)
    model = model_class.from_pretrained(None, config=config, state_dict={})
    reference = model_class(config)
    std = config.initializer_range
    for name, module in model.named_modules():
        if isinstance(module, nn.Linear):
            assert module.weight.std().item() == pytest.approx(std, rel=0.5), name
            assert module.bias is None or not module.bias.any(), name
        elif isinstance(module, nn.LayerNorm):
            assert (module.weight == 1).all() and not module.bias.any(), name
        elif isinstance(module, BrainLMRegionWindowEmbeddings):
            assert 0 < module.cls_token.std().item() < 3 * std, name
        elif isinstance(module, BrainLMDecoder):
            assert 0 < module.mask_token.std().item() < 3 * std, name
    for name, buffer in reference.named_buffers():
        assert torch.equal(model.get_buffer(name), buffer), name
    assert all(torch.isfinite(value).all() for value in model.state_dict().values())
