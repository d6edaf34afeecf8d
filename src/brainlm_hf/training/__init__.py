# Copyright 2026 The brainlm_hf authors. Licensed under the Apache License, Version 2.0.
"""Training: masked-signal pretraining with Accelerate, fine-tuning with `Trainer`, and their metrics.

* `pretraining`: `pretrain(PretrainingArguments)`, streamed, multi-process, exactly resumable (`brainlm pretrain`).
* `checkpoints`: its step checkpoints, written whole or not at all and read back without unpickling code.
* `checks`: what a run must satisfy before its first step (one line naming the numbers otherwise).
* `finetuning`: `finetune` on a prepared dataset (`brainlm finetune`), `finetune_recordings` / `predict_recordings`
  on arrays in memory.
* `metrics`: masked-reconstruction, regression and classification metrics (keyword-only arguments), and the
  `evaluate` module that wraps them (`metrics.EVALUATE_MODULE`).
"""

from .finetuning import FinetuningArguments, finetune, finetune_recordings, predict_recordings
from .metrics import classification_metrics, masked_reconstruction_metrics, regression_metrics
from .pretraining import PretrainingArguments, pretrain

__all__ = [
    "FinetuningArguments",
    "PretrainingArguments",
    "classification_metrics",
    "finetune",
    "finetune_recordings",
    "masked_reconstruction_metrics",
    "predict_recordings",
    "pretrain",
    "regression_metrics",
]
