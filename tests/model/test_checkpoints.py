"""Auto registry, save/load round trips, strict loading and Hub remote code."""

import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch
from huggingface_hub.errors import StrictDataclassError
from safetensors.torch import load_file, save_file
from transformers import AutoConfig, AutoModel, AutoModelForPreTraining

from brainlm_hf import BrainLMConfig, BrainLMFeatureExtractor, BrainLMForMaskedSignalModeling, BrainLMModel


def test_model_type_collides_with_no_other_brainlm_code():
    assert BrainLMConfig.model_type == "brainlm_hf"
    assert BrainLMConfig.model_type not in {"vit_mae", "brainlm_mae", "brainlm"}


def test_auto_classes_resolve(pretrained):
    _, path = pretrained
    assert isinstance(AutoConfig.from_pretrained(path), BrainLMConfig)
    assert type(AutoModel.from_pretrained(path)) is BrainLMModel
    assert type(AutoModelForPreTraining.from_pretrained(path)) is BrainLMForMaskedSignalModeling
    assert type(AutoModel.from_config(BrainLMConfig.from_preset("brainlm-tiny"))) is BrainLMModel


def test_saved_folder_is_hub_ready(pretrained):
    _, path = pretrained
    assert sorted(os.listdir(path)) == [
        "config.json",
        "configuration_brainlm.py",
        "errors.py",  # imported by the model files: copied with them for trust_remote_code
        "model.safetensors",
        "modeling_brainlm.py",
    ]
    auto_map = json.loads((path / "config.json").read_text())["auto_map"]
    assert auto_map == {
        "AutoConfig": "configuration_brainlm.BrainLMConfig",
        "AutoModel": "modeling_brainlm.BrainLMModel",
        "AutoModelForPreTraining": "modeling_brainlm.BrainLMForMaskedSignalModeling",
        "AutoModelForSequenceClassification": "modeling_brainlm.BrainLMForSequenceClassification",
    }


def test_round_trip_is_bit_exact(pretrained, inputs):
    model, path = pretrained
    reloaded, info = BrainLMForMaskedSignalModeling.from_pretrained(path, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"]
    for (name, a), (_, b) in zip(model.state_dict().items(), reloaded.state_dict().items(), strict=True):
        assert torch.equal(a, b), name
    noise = torch.rand(3, 42)
    assert torch.equal(model(**inputs, noise=noise).logits, reloaded.eval()(**inputs, noise=noise).logits)


def test_encoder_loads_from_a_pretraining_checkpoint(pretrained, inputs):
    model, path = pretrained
    encoder = BrainLMModel.from_pretrained(path).eval()
    assert torch.equal(encoder(**inputs).last_hidden_state, model.brainlm(**inputs).last_hidden_state)


def test_pretraining_model_from_an_encoder_checkpoint_gets_a_new_decoder(pretrained, tmp_path, caplog):
    """A decoder absent as a whole is created with a warning naming it; a partly present one stays an error."""
    model, path = pretrained
    model.brainlm.save_pretrained(tmp_path / "encoder")
    with caplog.at_level("WARNING"):
        loaded = BrainLMForMaskedSignalModeling.from_pretrained(tmp_path / "encoder")
    assert "no `decoder.` weights" in caplog.text and "decoder.decoder_embed.weight" in caplog.text
    for name, value in model.brainlm.state_dict().items():
        assert torch.equal(loaded.brainlm.state_dict()[name], value), name
    weights = load_file(path / "model.safetensors")
    del weights["decoder.decoder_norm.bias"]
    save_file(weights, path / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(ValueError, match="missing_keys.*decoder.decoder_norm.bias"):
        BrainLMForMaskedSignalModeling.from_pretrained(path)


def test_missing_and_unexpected_keys_raise_and_are_listed(pretrained):
    _, path = pretrained
    weights = load_file(path / "model.safetensors")
    weights["brainlm.extra.weight"] = torch.zeros(1)
    del weights["brainlm.layernorm.bias"]
    save_file(weights, path / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(ValueError) as error:
        BrainLMForMaskedSignalModeling.from_pretrained(path)
    assert "brainlm.layernorm.bias" in str(error.value) and "brainlm.extra.weight" in str(error.value)


def test_mismatched_shapes_raise(pretrained):
    _, path = pretrained
    weights = load_file(path / "model.safetensors")
    weights["brainlm.layernorm.bias"] = torch.zeros(5)
    save_file(weights, path / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(ValueError, match="mismatched_keys.*layernorm.bias"):
        BrainLMForMaskedSignalModeling.from_pretrained(path)


@pytest.mark.slow
def test_remote_code_loads_without_the_package(pretrained, inputs, tmp_path):
    """A fresh interpreter where `import brainlm_hf` fails loads the folder with trust_remote_code, same outputs."""
    model, path = pretrained
    BrainLMFeatureExtractor(coordinates=inputs["coordinates"].tolist(), input_scale=2.0).save_pretrained(path)
    noise = torch.rand(3, 42)
    torch.save({**inputs, "noise": noise}, tmp_path / "inputs.pt")
    expected_logits = model(**inputs, noise=noise).logits
    script = textwrap.dedent(
        f"""
        import sys
        sys.modules["brainlm_hf"] = None  # the package is not importable here
        import torch
        from transformers import AutoModel, AutoModelForPreTraining
        model = AutoModelForPreTraining.from_pretrained({str(path)!r}, trust_remote_code=True).eval()
        encoder = AutoModel.from_pretrained({str(path)!r}, trust_remote_code=True).eval()
        assert type(model).__module__.startswith("transformers_modules"), type(model).__module__
        assert type(encoder).__name__ == "BrainLMModel"
        from transformers import AutoModelForSequenceClassification
        head = AutoModelForSequenceClassification.from_pretrained(
            {str(path)!r}, trust_remote_code=True, num_labels=3, problem_type="single_label_classification"
        )
        assert type(head).__name__ == "BrainLMForSequenceClassification"
        assert torch.equal(head.brainlm.layers[0].mlp.fc1.weight, encoder.layers[0].mlp.fc1.weight)
        from transformers import AutoFeatureExtractor
        extractor = AutoFeatureExtractor.from_pretrained({str(path)!r}, trust_remote_code=True)
        assert type(extractor).__module__.startswith("transformers_modules") and extractor.input_scale == 2.0
        inputs = torch.load({str(tmp_path / "inputs.pt")!r})
        with torch.no_grad():
            torch.save(model(**inputs).logits, {str(tmp_path / "logits.pt")!r})
        """
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_MODULES_CACHE": str(tmp_path / "modules")}
    result = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert torch.equal(torch.load(tmp_path / "logits.pt"), expected_logits)


def test_config_round_trip_and_validation(tmp_path):
    config = BrainLMConfig.from_preset("brainlm-tiny", mask_strategy="forecast", reconstruction_loss="mae")
    config.save_pretrained(tmp_path)
    reloaded = BrainLMConfig.from_pretrained(tmp_path)
    assert reloaded.to_dict() == config.to_dict()
    for bad in [
        {"mask_ratio": 1.0},
        {"mask_ratio": -0.1},
        {"mask_strategy": "block"},
        {"norm_position": "middle"},
        {"value_conv_kernel_size": 4},
        {"hidden_size": 30, "num_attention_heads": 4},
    ]:
        with pytest.raises(StrictDataclassError, match=next(iter(bad))):
            BrainLMConfig(**bad)
    config.mask_ratio = 1.5  # assignment runs type checks only; the forward pass refuses the value
    with pytest.raises(ValueError, match="mask_ratio must be in"):
        BrainLMForMaskedSignalModeling(BrainLMConfig.from_preset("brainlm-tiny"))(
            torch.zeros(1, 2, 20), torch.zeros(2, 3), mask_ratio=config.mask_ratio
        )


@pytest.mark.slow
def test_trainer_reports_eval_loss_for_the_self_supervised_head(config, tmp_path):
    from datasets import Dataset
    from transformers import Trainer, TrainingArguments

    generator = torch.Generator().manual_seed(0)
    rows = [
        {
            "signal_values": torch.randn(7, 30, generator=generator),
            "coordinates": torch.randn(7, 3, generator=generator),
        }
        for _ in range(8)
    ]
    dataset = Dataset.from_list([{k: v.tolist() for k, v in row.items()} for row in rows]).with_format("torch")
    args = TrainingArguments(
        output_dir=str(tmp_path),
        per_device_train_batch_size=4,
        per_device_eval_batch_size=4,
        max_steps=2,
        use_cpu=True,
        report_to="none",
        disable_tqdm=True,
        save_strategy="no",
    )
    trainer = Trainer(
        model=BrainLMForMaskedSignalModeling(config), args=args, train_dataset=dataset, eval_dataset=dataset
    )
    trainer.train()
    metrics = trainer.evaluate()
    assert "eval_loss" in metrics and metrics["eval_loss"] > 0
