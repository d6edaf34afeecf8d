# Copyright 2026 The brainlm_hf authors. Licensed under the Apache License, Version 2.0.
"""Training: masked-signal pretraining with Accelerate and fine-tuning with `Trainer` (scored by `brainlm_hf.metrics`).

* `pretraining`: `pretrain(PretrainingArguments)`, streamed, multi-process, exactly resumable (`brainlm pretrain`).
* `checkpoints`: its step checkpoints, written whole or not at all and read back without unpickling code.
* `checks`: what a run must satisfy before its first step (one line naming the numbers otherwise).
* `finetuning`: `finetune` on a prepared dataset (`brainlm finetune`), `finetune_recordings` / `predict_recordings`
  on arrays in memory.
"""

from .finetuning import FinetuningArguments, finetune, finetune_recordings, predict_recordings
from .pretraining import PretrainingArguments, pretrain

__all__ = [
    "FinetuningArguments",
    "PretrainingArguments",
    "finetune",
    "finetune_recordings",
    "predict_recordings",
    "pretrain",
]
