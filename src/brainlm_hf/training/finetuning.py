# Copyright 2026 The brainlm_hf authors. Licensed under the Apache License, Version 2.0.
"""
Fine-tuning for clinical variables with `transformers.Trainer`.

* Training samples `windows_per_recording` windows per recording (start offsets drawn once from the seed; Trainer
  shuffles them every epoch), each labelled with its recording's phenotype.
* Evaluation runs every covering window of a recording (`BrainLMFeatureExtractor.windows`) and averages the logits
  per recording; metrics are per recording: MSE / MAE / R^2 / Pearson r for regression (in label units), accuracy /
  balanced accuracy / AUROC for classification. The best epoch is kept by `eval_mse` (regression) or
  `eval_balanced_accuracy` (classification).
* Regression targets are standardised with the training split's mean and std, stored in the config
  (`label_stats`): several clinical variables weigh the same in the loss, and `logits` come back in label
  units.
* Heads and options: see `BrainLMForSequenceClassification` (`pooling`, `classifier_head`, `freeze_encoder`,
  `auxiliary_reconstruction_weight`); `lora_rank > 0` trains LoRA adapters on the attention projections (`peft`),
  merged into the saved model.

Entry points: `brainlm finetune` / `examples/finetune.py` (`FinetuningArguments` + `TrainingArguments`, on a dataset
made by `brainlm prepare --phenotypes ...`), and `finetune_recordings` / `predict_recordings` for arrays in memory.
"""

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from transformers import AutoModelForSequenceClassification, EarlyStoppingCallback, Trainer, TrainingArguments

from ..configuration_brainlm import POOLINGS, PRESETS, BrainLMConfig
from ..data import BrainLMCollator, PreparedDataset
from ..errors import InvalidArgumentError, InvalidInputError, MissingFileError
from ..feature_extraction_brainlm import BrainLMFeatureExtractor
from ..folders import output_folder
from ..hub_upload import push_folder
from ..inference import average_by_recording, map_windows
from ..metrics import classification_metrics, regression_metrics
from ..modeling_brainlm import BrainLMForSequenceClassification
from .checks import check_counts, check_processor_for_model, saved_processor

PROBLEM_TYPES = ("regression", "single_label_classification", "multi_label_classification")


@dataclass
class FinetuningArguments:
    """Arguments of `brainlm finetune` besides `transformers.TrainingArguments`."""

    dataset: str = field(metadata={"help": "prepared dataset folder (brainlm prepare --phenotypes) with train/ etc."})
    model: str = field(metadata={"help": "pretraining or encoder checkpoint (folder or Hub id), or a preset name"})
    label_columns: list[str] = field(metadata={"help": "phenotype column(s) to predict"})
    problem_type: str = field(default="regression", metadata={"help": " / ".join(PROBLEM_TYPES)})
    pooling: str = field(default="cls", metadata={"help": " or ".join(POOLINGS)})
    classifier_head: str = field(default="linear", metadata={"help": "linear or mlp (3 layers)"})
    classifier_dropout: float = 0.0
    freeze_encoder: bool = field(default=False, metadata={"help": "train the head only (linear probe)"})
    lora_rank: int = field(default=0, metadata={"help": "> 0: LoRA adapters of this rank (needs peft)"})
    auxiliary_reconstruction_weight: float = field(default=0.0, metadata={"help": "weight of a masked MSE term"})
    windows_per_recording: int = field(default=8, metadata={"help": "training windows drawn per recording"})
    short_recordings: str | None = field(
        default=None,
        metadata={
            "help": "refuse or pad recordings shorter than one window (pad: one window padded with the per-region "
            "mean, left out of mean pooling); default: the dataset processor's setting"
        },
    )
    early_stopping_patience: int = field(default=0, metadata={"help": "> 0: stop after this many worse evaluations"})
    select_best_model: bool = field(
        default=True,
        metadata={"help": "evaluate every epoch and keep the best by eval_mse / eval_balanced_accuracy"},
    )
    train_split: str = "train"
    validation_split: str = "validation"
    test_split: str = "test"
    overwrite: bool = field(
        default=False,
        metadata={"help": "replace what --output_dir holds, whole (an earlier run is never mixed with this one)"},
    )


class RecordingWindowDataset(torch.utils.data.Dataset):
    """
    Windows of recordings with their recording's labels, for `Trainer`.

    Args:
        processor: normalises the recordings and fixes region order, coordinates and window length.
        recordings: raw `(T_i, V)` arrays in atlas order.
        labels (`np.ndarray` of shape `(R,)` or `(R, D)`): one row per recording.
        windows_per_recording (`int`, *optional*): draw this many window starts per recording (seeded); `None`
            takes the covering windows (evaluation).
        repetition_times (*optional*): the recordings' TRs (see `BrainLMFeatureExtractor.windows`: resampled to the
            processor's).

    Items: `{"signal_values": (V, T) float32, "labels": ...}`, plus `"timepoint_mask"` `(T,)` when the processor
    pads short recordings; `recording_index` `(W,)` names each item's recording.
    """

    def __init__(
        self,
        processor: BrainLMFeatureExtractor,
        recordings,
        labels,
        windows_per_recording: int | None = None,
        seed: int = 0,
        repetition_times=None,
    ):
        self.labels = np.asarray(labels)
        if len(self.labels) != len(recordings):
            raise InvalidInputError(f"{len(recordings)} recordings but {len(self.labels)} labels.", argument="labels")
        length, rng = processor.num_timepoints, np.random.default_rng(seed)

        def random_starts(num_timepoints: int) -> np.ndarray:
            processor.window_starts(num_timepoints)  # refuses recordings shorter than one window
            return rng.integers(0, num_timepoints - length + 1, windows_per_recording)

        sampler = random_starts if windows_per_recording is not None else None
        self.windows, self.recording_index, mask = processor.windows(
            recordings, starts=sampler, repetition_times=repetition_times, return_timepoint_mask=True
        )  # (W, V, T), (W,), (W, T)
        self.timepoint_mask = mask if processor.short_recordings == "pad" else None

    def __len__(self) -> int:
        return len(self.windows)

    def __getitem__(self, index: int) -> dict:
        item = {"signal_values": self.windows[index], "labels": self.labels[self.recording_index[index]]}
        if self.timepoint_mask is not None:
            item["timepoint_mask"] = self.timepoint_mask[index]
        return item


def recording_metrics(window_logits, dataset: RecordingWindowDataset, problem_type: str) -> dict[str, float]:
    """Logits of every window of `dataset` `(W, C)` -> averaged per recording -> `score_recordings`."""
    window_logits = np.asarray(window_logits).reshape(len(dataset), -1)
    logits = average_by_recording(window_logits, dataset.recording_index, len(dataset.labels))  # (R, C)
    return score_recordings(logits, dataset.labels, problem_type)


def score_recordings(logits: np.ndarray, labels: np.ndarray, problem_type: str) -> dict[str, float]:
    """Per-recording metrics of `(R, C)` predictions: regression or classification (multi-label: mean per label)."""
    if problem_type == "regression":
        return regression_metrics(predictions=logits, targets=labels)
    if problem_type == "single_label_classification":
        return classification_metrics(scores=logits, labels=labels)
    per_label = [
        classification_metrics(scores=np.stack([np.zeros(len(logits)), logits[:, d]], 1), labels=labels[:, d])
        for d in range(logits.shape[1])
    ]
    return {name: float(np.nanmean([m[name] for m in per_label])) for name in per_label[0]}


def build_classifier(model_name_or_path: str, num_labels: int, problem_type: str, **config_overrides):
    """A `BrainLMForSequenceClassification` from a checkpoint (new head, encoder loaded strictly) or a preset."""
    if problem_type not in PROBLEM_TYPES:
        raise InvalidArgumentError(
            f"problem_type must be one of {PROBLEM_TYPES}, got {problem_type!r}.", argument="problem_type"
        )
    options = {"num_labels": num_labels, "problem_type": problem_type, **config_overrides}
    if model_name_or_path in PRESETS:
        return BrainLMForSequenceClassification(BrainLMConfig.from_preset(model_name_or_path, **options))
    return AutoModelForSequenceClassification.from_pretrained(model_name_or_path, **options)


def encode_labels(problem_type: str, train_labels, *others) -> tuple[list[np.ndarray], dict]:
    """
    Raw labels -> model targets for the train split and `others`, and the config entries they imply (`num_labels`
    and): regression `(R, D)` float32 + `label_stats` (mean and std); single-label class indices (classes sorted
    from the train split) + `id2label`; multi-label `(R, D)` float 0/1. Missing values and unseen classes raise.
    """
    splits = [np.asarray(labels, dtype=object) for labels in (train_labels, *others)]
    if problem_type == "single_label_classification":
        splits = [[str(v) for v in labels.reshape(len(labels), -1)[:, 0]] for labels in splits]
        classes = sorted(set(splits[0]))
        if len(classes) < 2:
            raise InvalidInputError(f"Classification needs at least two classes in the training split, got {classes}.")
        unseen = sorted({v for labels in splits[1:] for v in labels} - set(classes))
        if unseen:
            raise InvalidInputError(
                f"Labels {unseen} do not occur in the training split; the head cannot predict them."
            )
        index = {name: i for i, name in enumerate(classes)}
        encoded = [np.array([index[v] for v in labels], dtype=np.int64) for labels in splits]
        return encoded, {"num_labels": len(classes), "id2label": dict(enumerate(classes)), "label2id": index}
    encoded = [labels.reshape(len(labels), -1).astype(np.float32) for labels in splits]
    for labels in encoded:
        if not np.isfinite(labels).all():
            raise InvalidInputError("Some labels are missing (NaN): drop those recordings or impute the labels first.")
    if problem_type == "multi_label_classification":
        return encoded, {"num_labels": encoded[0].shape[1]}
    std = encoded[0].std(0)
    if (std == 0).any():
        raise InvalidInputError(f"Targets {np.flatnonzero(std == 0).tolist()} are constant in the training split.")
    scaling = {"label_stats": {"mean": encoded[0].mean(0).tolist(), "std": std.tolist()}}
    return encoded, {"num_labels": encoded[0].shape[1], **scaling}


def train_classifier(
    model: BrainLMForSequenceClassification,
    processor: BrainLMFeatureExtractor,
    train_dataset: RecordingWindowDataset,
    eval_dataset: RecordingWindowDataset | None,
    training_args: TrainingArguments,
    lora_rank: int = 0,
    early_stopping_patience: int = 0,
):
    """Run `Trainer` (optionally with LoRA adapters and early stopping); returns the trained model (LoRA merged)."""
    problem_type = model.config.problem_type
    if lora_rank > 0:
        model = _with_lora(model, lora_rank)
    callbacks = [EarlyStoppingCallback(early_stopping_patience)] if early_stopping_patience > 0 else []
    trainer = Trainer(
        model=model,
        args=training_args,
        train_dataset=train_dataset,
        eval_dataset=eval_dataset,
        data_collator=BrainLMCollator(processor),
        compute_metrics=(lambda p: recording_metrics(p.predictions, eval_dataset, problem_type))
        if eval_dataset is not None
        else None,
        callbacks=callbacks,
    )
    trainer.train()
    return model.merge_and_unload() if lora_rank > 0 else model


def best_model_arguments(problem_type: str, has_eval: bool, **overrides) -> dict:
    """`TrainingArguments` entries for per-epoch evaluation and best-model selection on a per-recording metric."""
    if not has_eval:
        return {"eval_strategy": "no", "save_strategy": "no", **overrides}
    metric = "mse" if problem_type == "regression" else "balanced_accuracy"
    return {
        "eval_strategy": "epoch",
        "save_strategy": "epoch",
        "load_best_model_at_end": True,
        "metric_for_best_model": metric,
        "greater_is_better": metric != "mse",
        "save_total_limit": 1,
        **overrides,
    }


def finetune_recordings(
    model_name_or_path: str,
    processor: BrainLMFeatureExtractor,
    train_recordings,
    train_labels,
    problem_type: str = "regression",
    output_dir: str = "finetuned",
    eval_recordings=None,
    eval_labels=None,
    windows_per_recording: int = 8,
    lora_rank: int = 0,
    early_stopping_patience: int = 0,
    head_options: dict | None = None,
    repetition_times=None,
    eval_repetition_times=None,
    **training_arguments,
):
    """
    Fine-tune on arrays in memory: raw `(T_i, V)` recordings (atlas order) and their labels (`(R,)` or `(R, D)`;
    class names or indices for classification). `head_options` go to the config (`pooling`, `classifier_head`,
    `classifier_dropout`, `freeze_encoder`, `auxiliary_reconstruction_weight`); `training_arguments` to
    `TrainingArguments` (defaults: 10 epochs, batch 16, lr 1e-3, no reporting). `repetition_times` and
    `eval_repetition_times`: the recordings' TRs (resampled to the processor's). Returns the trained model.
    """
    has_eval = eval_recordings is not None
    labels, label_config = encode_labels(problem_type, train_labels, *([eval_labels] if has_eval else []))
    model = build_classifier(model_name_or_path, problem_type=problem_type, **label_config, **(head_options or {}))
    defaults = {
        "num_train_epochs": 10,
        "per_device_train_batch_size": 16,
        "learning_rate": 1e-3,
        "report_to": "none",
        "dataloader_pin_memory": torch.cuda.is_available(),
    }
    args = TrainingArguments(
        output_dir=output_dir,
        **best_model_arguments(problem_type, has_eval, **{**defaults, **training_arguments}),
    )
    train = RecordingWindowDataset(
        processor, train_recordings, labels[0], windows_per_recording, args.seed, repetition_times
    )
    evaluation = None
    if has_eval:
        evaluation = RecordingWindowDataset(
            processor, eval_recordings, labels[1], repetition_times=eval_repetition_times
        )
    return train_classifier(model, processor, train, evaluation, args, lora_rank, early_stopping_patience)


def predict_recordings(
    model: BrainLMForSequenceClassification,
    processor: BrainLMFeatureExtractor,
    recordings,
    batch_size: int = 16,
    repetition_times=None,
) -> np.ndarray:
    """
    Per-recording predictions `(R, num_labels)`: the logits of the covering windows, averaged (label units).
    `repetition_times`: the recordings' TRs (resampled to the processor's).
    """
    windows, owners, mask = processor.windows(
        recordings, repetition_times=repetition_times, return_timepoint_mask=True
    )  # (W, V, T), (W,), (W, T)

    def predict(batch, xyz, rows):
        return model(batch, xyz, timepoint_mask=torch.as_tensor(mask[rows])).logits

    logits = map_windows(model, windows, processor.model_coordinates(), predict, batch_size)  # (W, num_labels)
    return average_by_recording(logits, owners, len(recordings))


def finetune(args: FinetuningArguments, training_args: TrainingArguments) -> dict:
    """
    `brainlm finetune`: read the prepared splits with their label columns, fine-tune, keep the best epoch by the
    validation split, save model + processor to `training_args.output_dir`, evaluate the test split per recording
    (`test_results.json`). The output folder must be new or empty (`FolderNotEmptyError` before any work), or is
    replaced whole with `args.overwrite`: the run writes into a temporary folder beside it (Trainer's checkpoints
    included) that becomes the output once complete. With `--push_to_hub` (and `--hub_model_id`, `--hub_token`,
    `--hub_private_repo`), Trainer pushes its checkpoints as it does by itself (`--hub_strategy`; the repository is
    named after the output folder unless `--hub_model_id`), and the final folder is uploaded in one commit at the end
    (with LoRA, the merged model rather than the adapters).
    """
    final = Path(training_args.output_dir)
    hub_model_id = training_args.hub_model_id or final.name
    hub = {"hub_model_id": hub_model_id} if training_args.push_to_hub else {}
    with output_folder(final, args.overwrite, "the fine-tuned model") as output:
        results = _finetune_into(args, dataclasses.replace(training_args, output_dir=str(output), **hub))
    if training_args.push_to_hub:
        push_folder(
            final,
            hub_model_id,
            "brainlm finetune: final model, processor and test results",
            token=training_args.hub_token,
            private=training_args.hub_private_repo,
            exclude=("training_args.bin",),
        )
    return results


def _finetune_into(args: FinetuningArguments, training_args: TrainingArguments) -> dict:
    """`finetune` into the folder `training_args.output_dir`, without pushing; returns the test metrics."""
    dataset = PreparedDataset(args.dataset)
    processor = dataset.processor
    if args.short_recordings is not None:
        processor.short_recordings = args.short_recordings
    splits = labelled_splits(dataset, args)
    names = list(splits)
    try:
        labels, label_config = encode_labels(args.problem_type, *(splits[n].labels for n in names))
    except ValueError as error:  # name the columns and the dataset
        message = f"label_columns={args.label_columns} of {args.dataset}: {error}"
        raise InvalidInputError(message, argument="label_columns") from error
    labels = dict(zip(names, labels, strict=True))
    model = build_classifier(args.model, problem_type=args.problem_type, **label_config, **_head_options(args))
    check_counts(windows_per_recording=(args.windows_per_recording, 1))
    check_processor_for_model(processor, model.config, saved_processor(args.model), args.model)
    train = RecordingWindowDataset(
        processor, splits["train"].recordings, labels["train"], args.windows_per_recording, training_args.seed,
        splits["train"].repetition_times,
    )  # fmt: skip
    evaluation = None
    if "eval" in splits:
        evaluation = RecordingWindowDataset(
            processor, splits["eval"].recordings, labels["eval"], repetition_times=splits["eval"].repetition_times
        )
    if args.select_best_model and evaluation is not None:
        training_args = dataclasses.replace(training_args, **best_model_arguments(args.problem_type, True))
    model = train_classifier(
        model, processor, train, evaluation, training_args, args.lora_rank, args.early_stopping_patience
    )
    output = Path(training_args.output_dir)
    model.save_pretrained(output)
    processor.save_pretrained(output)
    results = {}
    if "test" in splits:
        test = splits["test"]
        predictions = predict_recordings(model, processor, test.recordings, repetition_times=test.repetition_times)
        metrics = score_recordings(predictions, labels["test"], args.problem_type)
        results = {f"test_{name}": value for name, value in metrics.items()}
        (output / "test_results.json").write_text(json.dumps(results, indent=2))
    return results


class LabelledSplit(NamedTuple):
    """A split's raw recordings `(T_i, V)`, their labels `(R, D)` (objects) and TRs (None: unknown)."""

    recordings: list
    labels: np.ndarray
    repetition_times: list


def labelled_splits(dataset: PreparedDataset, args: FinetuningArguments) -> dict[str, LabelledSplit]:
    """`{"train", "eval", "test"}` (those present) -> `LabelledSplit`."""
    splits = {
        name: split
        for name, split in (("train", args.train_split), ("eval", args.validation_split), ("test", args.test_split))
        if dataset.shards(split)
    }
    if "train" not in splits:
        raise MissingFileError(f"{args.dataset} has no {args.train_split}/ split.", argument="train_split")
    available = dataset.columns(splits["train"])
    missing = [c for c in args.label_columns if c not in available]
    if missing:
        raise InvalidArgumentError(
            f"Label columns {missing} are not in {args.dataset}; its columns are {available}. Add them: prepare "
            "the dataset with phenotypes=.",
            argument="label_columns",
        )
    extra = (
        ["repetition_time"] if "repetition_time" in available and "repetition_time" not in args.label_columns else []
    )
    result = {}
    for name, split in splits.items():
        records = dataset.recordings(split, args.label_columns + extra)
        labels = [[np.nan if record[c] is None else record[c] for c in args.label_columns] for record in records]
        result[name] = LabelledSplit(
            [record["series"] for record in records],
            np.array(labels, dtype=object),
            [record.get("repetition_time") for record in records],
        )
    return result


def _head_options(args: FinetuningArguments) -> dict:
    return {
        "pooling": args.pooling,
        "classifier_head": args.classifier_head,
        "classifier_dropout": args.classifier_dropout,
        "freeze_encoder": args.freeze_encoder,
        "auxiliary_reconstruction_weight": args.auxiliary_reconstruction_weight,
    }


def _with_lora(model, rank: int):
    try:
        from peft import LoraConfig, get_peft_model
    except ImportError as error:
        raise ImportError("lora_rank > 0 needs peft: pip install 'brainlm_hf[peft]'.") from error
    config = LoraConfig(
        r=rank, lora_alpha=2 * rank, target_modules=["q_proj", "v_proj"], modules_to_save=["classifier"]
    )
    return get_peft_model(model, config)
