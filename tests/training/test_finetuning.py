"""Fine-tuning with Trainer: loss goes down, Auto reload, LoRA, `brainlm finetune` on a prepared dataset, metrics."""

import json
import re

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import torch
from torch._dynamo.utils import counters
from transformers import AutoModelForSequenceClassification

from brainlm_hf import BrainLMFeatureExtractor, BrainLMForMaskedSignalModeling, BrainLMForSequenceClassification
from brainlm_hf.cli import main as cli
from brainlm_hf.data import prepare_dataset
from brainlm_hf.metrics import classification_metrics, regression_metrics
from brainlm_hf.training.finetuning import (
    RecordingWindowDataset,
    build_classifier,
    encode_labels,
    finetune_recordings,
    predict_recordings,
)

QUIET = {"disable_tqdm": True, "logging_strategy": "no", "seed": 0}


def cohort(num: int, seed: int = 0):
    """Recordings `(T, 7)` whose mean level is the label (learnable without normalisation)."""
    rng = np.random.default_rng(seed)
    levels = rng.uniform(-1, 1, num)
    lengths = rng.integers(30, 70, num)
    recordings = [rng.normal(size=(n, 7)) * 0.3 + 2 * c for n, c in zip(lengths, levels, strict=True)]
    return [r.astype(np.float32) for r in recordings], levels


@pytest.fixture
def pretrained(tmp_path, config, inputs):
    torch.manual_seed(0)
    BrainLMForMaskedSignalModeling(config).save_pretrained(tmp_path / "pretrained")
    processor = BrainLMFeatureExtractor(
        normalization="none", coordinates=inputs["coordinates"].tolist(), num_timepoints=30
    )
    return tmp_path / "pretrained", processor


@pytest.mark.slow
def test_trainer_reduces_the_loss_and_the_model_reloads_through_auto(pretrained, tmp_path):
    path, processor = pretrained
    recordings, levels = cohort(24)
    torch.manual_seed(0)
    untrained = build_classifier(
        str(path), 1, "regression", label_stats={"mean": [float(levels.mean())], "std": [float(levels.std())]}
    )
    before = regression_metrics(predictions=predict_recordings(untrained, processor, recordings), targets=levels)[
        "mse"
    ]
    model = finetune_recordings(
        str(path), processor, recordings, levels, "regression", str(tmp_path / "run"),
        windows_per_recording=4, num_train_epochs=8, learning_rate=3e-3, **QUIET,
    )  # fmt: skip
    predictions = predict_recordings(model, processor, recordings)
    after = regression_metrics(predictions=predictions, targets=levels)["mse"]
    assert after < 0.5 * before, (before, after)
    assert (
        model.config.label_stats["mean"] == pytest.approx([levels.mean()])
        and model.config.problem_type == "regression"
    )
    model.save_pretrained(tmp_path / "final")
    reloaded = AutoModelForSequenceClassification.from_pretrained(tmp_path / "final")
    assert type(reloaded) is BrainLMForSequenceClassification
    np.testing.assert_allclose(predict_recordings(reloaded, processor, recordings), predictions, atol=1e-6)


@pytest.mark.slow
def test_lora_trains_adapters_and_merges(pretrained, tmp_path):
    path, processor = pretrained
    recordings, levels = cohort(12)
    base = BrainLMForMaskedSignalModeling.from_pretrained(path).state_dict()
    model = finetune_recordings(
        str(path), processor, recordings, levels, "regression", str(tmp_path / "lora"),
        lora_rank=2, num_train_epochs=2, **QUIET,
    )  # fmt: skip
    assert type(model) is BrainLMForSequenceClassification  # adapters merged: a plain model again
    weights = model.state_dict()
    assert not torch.equal(
        weights["brainlm.layers.0.attention.q_proj.weight"], base["brainlm.layers.0.attention.q_proj.weight"]
    )
    for name in ("layers.0.attention.k_proj.weight", "layers.0.mlp.fc1.weight", "embeddings.signal_projection.weight"):
        assert torch.equal(weights[f"brainlm.{name}"], base[f"brainlm.{name}"]), name
    model.save_pretrained(tmp_path / "merged")
    assert type(AutoModelForSequenceClassification.from_pretrained(tmp_path / "merged")) is type(model)


def test_training_windows_are_drawn_per_recording(pretrained):
    _, processor = pretrained
    recordings, levels = cohort(5)
    dataset = RecordingWindowDataset(processor, recordings, levels, windows_per_recording=3, seed=1)
    assert len(dataset) == 15 and dataset.recording_index.tolist() == [i for i in range(5) for _ in range(3)]
    item = dataset[4]
    assert item["signal_values"].shape == (7, 30) and item["labels"] == levels[1]
    series = recordings[1].T  # (V, T): normalization "none"; each window is a slice of its recording
    assert any(np.array_equal(series[:, s : s + 30], item["signal_values"]) for s in range(series.shape[1] - 29))
    again = RecordingWindowDataset(processor, recordings, levels, windows_per_recording=3, seed=1)
    assert all(np.array_equal(again[i]["signal_values"], dataset[i]["signal_values"]) for i in range(15))


def test_label_encoding():
    (train, test), config = encode_labels("single_label_classification", ["b", "a", "b"], ["a"])
    assert train.tolist() == [1, 0, 1] and test.tolist() == [0] and config["id2label"] == {0: "a", 1: "b"}
    assert config["num_labels"] == 2
    with pytest.raises(ValueError, match=r"\['c'\] do not occur in the training split"):
        encode_labels("single_label_classification", ["a", "b"], ["c"])
    with pytest.raises(ValueError, match="missing"):
        encode_labels("regression", [1.0, np.nan, 2.0])
    with pytest.raises(ValueError, match="constant"):
        encode_labels("regression", [[1.0, 2.0], [1.0, 3.0]])
    (train,), config = encode_labels("regression", [[1.0, 2.0], [3.0, 6.0]])
    assert train.shape == (2, 2) and config == {
        "num_labels": 2,
        "label_stats": {"mean": [2.0, 4.0], "std": [1.0, 2.0]},
    }


def test_metrics_match_scikit_learn():
    from sklearn.metrics import accuracy_score, balanced_accuracy_score, mean_squared_error, r2_score, roc_auc_score

    rng = np.random.default_rng(0)
    labels = rng.integers(0, 3, 40)
    logits = rng.normal(size=(40, 3)) + np.eye(3)[labels]
    ours = classification_metrics(scores=logits, labels=labels)
    probabilities = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    assert ours["accuracy"] == pytest.approx(accuracy_score(labels, logits.argmax(1)))
    assert ours["balanced_accuracy"] == pytest.approx(balanced_accuracy_score(labels, logits.argmax(1)))
    one_vs_rest = np.mean([roc_auc_score(labels == c, logits[:, c]) for c in range(3)])
    assert ours["auroc"] == pytest.approx(one_vs_rest)
    binary = np.round(rng.normal(size=(40, 2)), 1)  # rounded: ties must count half
    assert classification_metrics(scores=binary, labels=labels % 2)["auroc"] == pytest.approx(
        roc_auc_score(labels % 2, binary[:, 1] - binary[:, 0])
    )
    assert probabilities.shape == (40, 3)
    targets, predictions = rng.normal(size=(40, 2)), rng.normal(size=(40, 2))
    ours = regression_metrics(predictions=predictions, targets=targets)
    assert ours["mse"] == pytest.approx(mean_squared_error(targets, predictions))
    assert ours["r2"] == pytest.approx(r2_score(targets, predictions))
    assert ours["r2_1"] == pytest.approx(r2_score(targets[:, 1], predictions[:, 1]))
    assert ours["pearson_r_0"] == pytest.approx(np.corrcoef(targets[:, 0], predictions[:, 0])[0, 1])


@pytest.fixture
def phenotype_dataset(tmp_path, inputs):
    recordings, levels = cohort(20, seed=1)
    for index, recording in enumerate(recordings):
        np.save(tmp_path / f"sub-{index:02d}_bold.npy", recording)
    groups = np.where(levels > 0, "high", "low")
    pd.DataFrame({"subject": [f"{i:02d}" for i in range(20)], "level": levels, "group": groups}).to_csv(
        tmp_path / "phenotypes.csv", index=False
    )
    prepare_dataset(
        sorted(tmp_path.glob("*.npy")), tmp_path / "dataset", phenotypes=tmp_path / "phenotypes.csv",
        num_timepoints=30, normalization="none", splits={"train": 0.6, "validation": 0.2, "test": 0.2},
        shard_multiple=1, coordinates=inputs["coordinates"].numpy(),
    )  # fmt: skip
    return tmp_path / "dataset"


@pytest.mark.slow
@pytest.mark.parametrize(
    "column, problem_type, metric",
    [("level", "regression", "test_mse"), ("group", "single_label_classification", "test_balanced_accuracy")],
)
def test_cli_finetune(phenotype_dataset, pretrained, tmp_path, column, problem_type, metric):
    path, _ = pretrained
    output = tmp_path / f"finetuned-{column}"
    assert cli(["finetune", "--dataset", str(phenotype_dataset), "--model", str(path), "--label_columns", column,
         "--problem_type", problem_type, "--output_dir", str(output), "--num_train_epochs", "12",
         "--learning_rate", "3e-3", "--per_device_train_batch_size", "8", "--report_to", "none", "--disable_tqdm",
         "true", "--early_stopping_patience", "3", "--pooling", "mean", "--classifier_head", "mlp"]) == 0  # fmt: skip
    results = json.loads((output / "test_results.json").read_text())
    train, test = (pq.read_table(phenotype_dataset / split).to_pandas() for split in ("train", "test"))
    if problem_type == "regression":  # chance: the training mean predicted for every test subject
        assert results[metric] < ((test["level"] - train["level"].mean()) ** 2).mean() / 2
    else:  # chance balanced accuracy is 0.5; the groups are separated by the recordings' mean level
        assert set(test["group"]) == {"high", "low"} and results[metric] > 0.5
    model = AutoModelForSequenceClassification.from_pretrained(output)
    assert model.config.problem_type == problem_type and model.config.classifier_head == "mlp"
    if problem_type == "single_label_classification":
        assert model.config.id2label == {0: "high", 1: "low"}
    assert BrainLMFeatureExtractor.from_pretrained(output).num_regions == 7


def test_cli_finetune_names_a_missing_label_column(phenotype_dataset, pretrained, tmp_path, capsys):
    path, _ = pretrained
    assert cli(["finetune", "--dataset", str(phenotype_dataset), "--model", str(path), "--label_columns", "age",
                "--output_dir", str(tmp_path / "x"), "--report_to", "none"]) == 2  # fmt: skip
    assert re.search(
        r"brainlm finetune: error: Label columns \['age'\] are not in .*'level', 'group'", capsys.readouterr().err
    )


@pytest.mark.parametrize(
    "options, message",
    [
        (["--windows_per_recording", "0"], "--windows_per_recording must be at least 1, got 0"),
        (
            ["--model", "brainlm-tiny"],
            "The dataset's windows have 30 timepoints (num_timepoints of its processor), not a multiple of "
            "brainlm-tiny's patch_size 20",
        ),
    ],
)
def test_cli_finetune_refuses_data_the_model_cannot_read(
    phenotype_dataset, pretrained, tmp_path, capsys, options, message
):
    path, _ = pretrained
    assert cli(["finetune", "--dataset", str(phenotype_dataset), "--model", str(path), "--label_columns", "level",
                "--output_dir", str(tmp_path / "x"), "--report_to", "none", *options]) == 2  # fmt: skip
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert error.startswith("brainlm finetune: error: ") and message in error, error


@pytest.mark.slow
def test_trainer_torch_compile_trains_our_model(pretrained, tmp_path):
    """Trainer's own `torch_compile=True` with a tiny config: Trainer compiles our model, trains it, and returns the
    plain model. The backend is AOTAutograd without code generation (`aot_eager`: the graph capture, forward and
    backward, where a model's code can break compilation); inductor's code of a compiled training step is tested
    by tests/training/test_pretraining.py::test_torch_compile."""
    path, processor = pretrained
    recordings, levels = cohort(8)
    before = BrainLMForMaskedSignalModeling.from_pretrained(path).state_dict()
    torch._dynamo.reset()
    counters.clear()
    model = finetune_recordings(
        str(path), processor, recordings, levels, "regression", str(tmp_path / "compiled"), windows_per_recording=2,
        max_steps=3, per_device_train_batch_size=4, torch_compile=True, torch_compile_backend="aot_eager", **QUIET,
    )  # fmt: skip
    assert counters["stats"]["unique_graphs"] >= 1 and not counters["graph_break"]  # compiled, as one graph
    assert type(model) is BrainLMForSequenceClassification
    name = "brainlm.layers.0.attention.q_proj.weight"
    assert not torch.equal(model.state_dict()[name], before[name])
    assert np.isfinite(predict_recordings(model, processor, recordings)).all()


@pytest.mark.slow
def test_cli_finetune_pushes_to_a_hub_over_http(phenotype_dataset, pretrained, tmp_path):
    from ..hub_server import HubServer

    path, _ = pretrained
    with HubServer() as hub, hub.online():
        assert cli(["finetune", "--dataset", str(phenotype_dataset), "--model", str(path), "--label_columns", "level",
             "--output_dir", str(tmp_path / "pushed"), "--num_train_epochs", "1", "--report_to", "none",
             "--disable_tqdm", "true", "--push_to_hub", "--hub_model_id", "me/brainlm-level"]) == 0  # fmt: skip
        repo = hub.repos["me/brainlm-level"]
        head = repo.commits[repo.branches["main"]]
        model = BrainLMForSequenceClassification.from_pretrained("me/brainlm-level", cache_dir=tmp_path / "cache")
    uploaded = ["model.safetensors", "config.json", "preprocessor_config.json", "test_results.json"]
    for name in [*uploaded, "modeling_brainlm.py", "configuration_brainlm.py"]:  # the final folder, remote code too
        assert head.tree[name].data == (tmp_path / "pushed" / name).read_bytes(), name
    assert not any(name.startswith("checkpoint-") for name in head.tree)  # no Trainer checkpoint folders
    reference = BrainLMForSequenceClassification.from_pretrained(tmp_path / "pushed")
    for name, value in reference.state_dict().items():
        assert torch.equal(model.state_dict()[name], value), name
