# Copyright 2026 The brainlm_hf authors. Licensed under the Apache License, Version 2.0.
"""Pretrain BrainLM on prepared shards (`brainlm prepare`), on one process or many:

    python examples/pretrain.py --dataset prepared --output_dir runs/a --model brainlm-small --max_steps 1000
    accelerate launch --config_file examples/accelerate_configs/multi_gpu.yaml examples/pretrain.py \\
        --dataset prepared --output_dir runs/a --model brainlm-base --mixed_precision bf16
    python examples/pretrain.py config.yaml            # the same arguments from a YAML or JSON file

Equivalent to `brainlm pretrain ...`; see brainlm_hf/training/pretraining.py for the arguments and the design.
"""

import sys

from brainlm_hf.cli import main

if __name__ == "__main__":
    sys.exit(main(["pretrain", *sys.argv[1:]]))
