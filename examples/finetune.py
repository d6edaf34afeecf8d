# Copyright 2026 The brainlm_hf authors. Licensed under the Apache License, Version 2.0.
"""Fine-tune BrainLM for phenotype columns with `Trainer`: the same code as `brainlm finetune`.

    brainlm prepare scans/ data/ --atlas A424 --phenotypes participants.tsv --normalization robust
    python examples/finetune.py --dataset data --model outputs/hcp/run/final --label_columns age \\
        --problem_type regression --output_dir finetuned-age --num_train_epochs 20 --learning_rate 1e-4 \\
        --per_device_train_batch_size 16 --early_stopping_patience 5 --report_to none

Every `transformers.TrainingArguments` option is accepted (`--bf16`, `--push_to_hub --hub_model_id org/name`, ...),
plus the `FinetuningArguments` of `brainlm_hf.training.finetuning` (`--pooling mean`, `--classifier_head mlp`,
`--freeze_encoder`, `--lora_rank 8`, `--auxiliary_reconstruction_weight 0.1`, `--windows_per_recording 8`). A single
JSON or YAML file with all of them works too.
"""

import sys

from brainlm_hf.cli import main

if __name__ == "__main__":
    sys.exit(main(["finetune", *sys.argv[1:]]))
