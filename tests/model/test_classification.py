"""BrainLMForSequenceClassification: pooling, heads, losses, label scaling, frozen encoder, auxiliary loss, loading."""

import pytest
import torch
from huggingface_hub.errors import StrictDataclassError
from torch import nn
from transformers import AutoModelForSequenceClassification

from brainlm_hf import BrainLMConfig, BrainLMForMaskedSignalModeling, BrainLMForSequenceClassification, BrainLMModel
from brainlm_hf.analysis.recording_embeddings import embed_windows
from brainlm_hf.modeling_brainlm import TileLayout


@pytest.fixture
def pretrained(tmp_path, config):
    torch.manual_seed(0)
    model = BrainLMForMaskedSignalModeling(config)
    model.save_pretrained(tmp_path / "pretrained")
    return model, tmp_path / "pretrained"


def classifier(config, **overrides) -> BrainLMForSequenceClassification:
    torch.manual_seed(0)
    return BrainLMForSequenceClassification(BrainLMConfig(**{**config.to_dict(), **overrides})).eval()


def test_encoder_is_carried_over_from_a_pretraining_checkpoint(pretrained, inputs):
    model, path = pretrained
    head, info = AutoModelForSequenceClassification.from_pretrained(
        path, num_labels=2, problem_type="regression", output_loading_info=True
    )
    assert type(head) is BrainLMForSequenceClassification
    # zero missing encoder keys: only the new head is missing (initialised, with a warning), the decoder is dropped
    assert set(info["missing_keys"]) == {"classifier.layers.1.weight", "classifier.layers.1.bias"}
    assert not info["unexpected_keys"] and not info["mismatched_keys"]
    encoder_keys = {k for k in model.state_dict() if k.startswith("brainlm.")}
    assert encoder_keys == {k for k in head.state_dict() if k.startswith("brainlm.")}
    for key in encoder_keys:
        assert torch.equal(head.state_dict()[key], model.state_dict()[key]), key
    expected = BrainLMModel.from_pretrained(path).eval()(**inputs).last_hidden_state[:, 0]
    assert torch.allclose(head.eval().brainlm(**inputs).last_hidden_state[:, 0], expected)


def test_a_partly_missing_head_or_another_label_count_is_refused(pretrained, tmp_path):
    _, path = pretrained
    head = AutoModelForSequenceClassification.from_pretrained(path, num_labels=3)
    head.save_pretrained(tmp_path / "finetuned")
    with pytest.raises(ValueError, match="mismatched_keys.*classifier"):
        AutoModelForSequenceClassification.from_pretrained(tmp_path / "finetuned", num_labels=5)
    from safetensors.torch import load_file, save_file

    weights = load_file(tmp_path / "finetuned" / "model.safetensors")
    del weights["classifier.layers.1.bias"]
    save_file(weights, tmp_path / "finetuned" / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(ValueError, match="classifier.layers.1.bias"):
        AutoModelForSequenceClassification.from_pretrained(tmp_path / "finetuned")


def test_cls_and_mean_pooling(config, inputs):
    model = classifier(config, pooling="mean", num_labels=1)
    outputs = model.brainlm(**inputs)
    hidden = outputs.last_hidden_state
    assert torch.equal(model.brainlm.pool(outputs, 7, 30, "cls"), hidden[:, 0])
    mean = model.brainlm.pool(outputs, 7, 30, "mean")
    assert torch.allclose(mean, hidden[:, 1:].mean(1), atol=1e-6)


def test_mean_pooling_of_tiles_excludes_padding_tiles():
    config = BrainLMConfig(
        token_layout="tile_2d", patch_size=4, image_size=16, hidden_size=16, num_hidden_layers=1,
        num_attention_heads=2, intermediate_size=32, decoder_hidden_size=8, decoder_num_hidden_layers=1,
        decoder_num_attention_heads=2, decoder_intermediate_size=16,
    )  # fmt: skip
    model = BrainLMModel(config).eval()
    signal = torch.randn(2, 5, 6)  # 5 regions x 6 timepoints in a 16 x 16 square: most tiles are padding
    # independent expectation: a tile holds data iff some value in it is not the padding value
    marked = TileLayout(config).signal_to_tokens(torch.full((1, 5, 6), config.padding_value + 2.0))[
        0
    ]  # (G * G, p * p)
    is_data = (marked != config.padding_value).any(-1)
    assert 0 < is_data.sum() < len(is_data)
    assert torch.equal(model.layout.data_tokens(5, 6, "cpu"), is_data)
    outputs = model(signal)
    expected = outputs.last_hidden_state[:, 1:][:, is_data].mean(1)
    assert torch.allclose(model.pool(outputs, 5, 6, "mean"), expected, atol=1e-6)
    # under masking, only the visible data tiles count
    noise = torch.rand(2, 16)
    masked = model(signal, noise=noise, mask_ratio=0.5)
    visible = torch.argsort(masked.ids_restore, 1)[:, :8]
    for b in range(2):
        rows = [j for j in range(8) if is_data[visible[b, j]]]
        expected = masked.last_hidden_state[b, 1:][rows].mean(0)
        assert torch.allclose(model.pool(masked, 5, 6, "mean")[b], expected, atol=1e-6)


def test_heads(config):
    linear = classifier(config, num_labels=3).classifier.layers
    assert [type(m) for m in linear] == [nn.Dropout, nn.Linear]
    mlp = classifier(config, num_labels=3, classifier_head="mlp", classifier_dropout=0.1).classifier.layers
    widths = [(m.in_features, m.out_features) for m in mlp if isinstance(m, nn.Linear)]
    assert widths == [(32, 16), (16, 8), (8, 3)]
    assert sum(isinstance(m, nn.Dropout) and m.p == 0.1 for m in mlp) == 3


def test_losses_match_the_standard_definitions(config, inputs):
    model = classifier(config, num_labels=3, problem_type="single_label_classification")
    labels = torch.tensor([0, 2, 1])
    out = model(**inputs, labels=labels)
    assert out.logits.shape == (3, 3)
    assert torch.allclose(out.loss, nn.functional.cross_entropy(out.logits, labels))

    model = classifier(config, num_labels=2, problem_type="multi_label_classification")
    labels = torch.tensor([[0.0, 1.0], [1.0, 1.0], [0.0, 0.0]])
    out = model(**inputs, labels=labels)
    assert torch.allclose(out.loss, nn.functional.binary_cross_entropy_with_logits(out.logits, labels))

    model = classifier(config, num_labels=1)  # problem_type inferred: regression
    out = model(**inputs, labels=torch.tensor([0.5, -1.0, 2.0]))
    assert model.config.problem_type == "regression"
    assert torch.allclose(out.loss, ((out.logits[:, 0] - torch.tensor([0.5, -1.0, 2.0])) ** 2).mean())


def test_multi_target_regression_scales_labels(config, inputs):
    mean, std = [10.0, -3.0], [2.0, 0.5]
    scaled = classifier(config, num_labels=2, problem_type="regression", label_stats={"mean": mean, "std": std})
    plain = classifier(config, num_labels=2, problem_type="regression")
    labels = torch.tensor([[12.0, -3.5], [8.0, -2.0], [10.0, -3.0]])
    out, raw = scaled(**inputs, labels=labels), plain(**inputs)  # same weights (same seed)
    z = raw.logits
    assert torch.allclose(out.logits, z * torch.tensor(std) + torch.tensor(mean), atol=1e-6)  # label units
    standardised = (labels - torch.tensor(mean)) / torch.tensor(std)
    assert torch.allclose(out.loss, ((z - standardised) ** 2).mean(), atol=1e-6)  # loss on the standardised scale
    with pytest.raises(StrictDataclassError, match="one mean and one std per target"):
        BrainLMConfig(num_labels=2, label_stats={"mean": [0.0], "std": [1.0]})
    with pytest.raises(StrictDataclassError, match="both"):
        BrainLMConfig(num_labels=1, label_stats={"mean": [0.0]})
    # configs saved with the former `label_mean` / `label_std` keys load into `label_stats`
    legacy = BrainLMConfig(num_labels=2, problem_type="regression", label_mean=mean, label_std=std)
    assert legacy.label_stats == {"mean": mean, "std": std} and not hasattr(legacy, "label_mean")


def test_frozen_encoder_trains_only_the_head(config, inputs):
    model = classifier(config, num_labels=1, freeze_encoder=True).train()
    encoder_before = {k: v.clone() for k, v in model.brainlm.state_dict().items()}
    head_before = model.classifier.layers[1].weight.clone()
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    model(**inputs, labels=torch.randn(3)).loss.backward()
    optimizer.step()
    assert all(p.grad is None for p in model.brainlm.parameters())
    assert all(torch.equal(v, encoder_before[k]) for k, v in model.brainlm.state_dict().items())
    assert not torch.equal(model.classifier.layers[1].weight, head_before)
    with pytest.raises(StrictDataclassError, match="freeze_encoder"):
        BrainLMConfig(freeze_encoder=True, auxiliary_reconstruction_weight=0.5)


def test_auxiliary_reconstruction_loss(config, inputs):
    model = classifier(config, num_labels=1, auxiliary_reconstruction_weight=0.5).train()
    assert model.decoder is not None
    labels, noise = torch.randn(3), torch.rand(3, 42)
    out = model(**inputs, labels=labels, noise=noise)  # masks config.mask_ratio (0.5) in training
    encoded = model.brainlm(**inputs, noise=noise, mask_ratio=0.5)
    reconstruction = model.decoder(
        encoded.last_hidden_state, encoded.ids_restore, inputs["coordinates"][None], inputs["signal_values"].shape
    )
    mask = model.mask_to_signal(encoded.mask)
    expected_reconstruction = (((reconstruction - inputs["signal_values"]) ** 2) * mask).sum() / mask.sum()
    expected_label = ((model.classifier(encoded.last_hidden_state[:, 0])[:, 0] - labels) ** 2).mean()
    assert torch.allclose(out.loss, expected_label + 0.5 * expected_reconstruction, atol=1e-6)
    model.eval()  # evaluation: no masking, the label loss only
    out = model(**inputs, labels=labels)
    full = model.brainlm(**inputs).last_hidden_state[:, 0]
    assert torch.allclose(out.loss, ((model.classifier(full)[:, 0] - labels) ** 2).mean(), atol=1e-6)


@pytest.mark.parametrize("case", ["brainlm_small", "vitmae_pad_small"])
def test_converted_checkpoints_of_both_families_get_a_head(case, tmp_path):
    from brainlm_hf.convert import model_from_original

    from ..integrations.test_convert import original

    converted = model_from_original(*original(case))
    converted.save_pretrained(tmp_path / "converted")
    head, info = AutoModelForSequenceClassification.from_pretrained(
        tmp_path / "converted", num_labels=2, pooling="mean", output_loading_info=True
    )
    assert {k.split(".")[0] for k in info["missing_keys"]} == {"classifier"} and not info["unexpected_keys"]
    for key, value in converted.brainlm.state_dict().items():
        assert torch.equal(head.brainlm.state_dict()[key], value), key
    config = head.config
    regions = 6 if config.token_layout == "tile_2d" else 7
    signal = torch.randn(2, regions, config.patch_size * 2 if config.token_layout == "region_window" else 10)
    coordinates, labels = torch.randn(regions, 3) * 50, torch.tensor([0, 1])
    out = head.eval()(signal, coordinates, labels=labels)
    # the head reads the converted encoder's mean-pooled output, as embeddings of the converted model give it
    pooled = embed_windows(converted, signal.numpy(), coordinates.numpy(), pooling="mean")
    with torch.no_grad():
        expected = head.classifier(torch.from_numpy(pooled))
    assert out.logits.shape == (2, 2)
    torch.testing.assert_close(out.logits, expected, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(out.loss, torch.nn.functional.cross_entropy(expected, labels), rtol=1e-5, atol=1e-6)
