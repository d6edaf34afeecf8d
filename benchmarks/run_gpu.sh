#!/usr/bin/env bash
# The GPU measurements of the README, in one go (about 8 minutes on one H100): model throughput and memory against
# the original compute paths (issues 2 and 3), MFU of brainlm-base in bf16, embedding throughput, and issue 15's
# targets: brainlm-base MFU and 111M vs the original with fused AdamW and torch.compile, and the pretrain loop vs
# the model alone (bf16, 0 and 4 loader workers).
# Run from the repository root on a CUDA machine with torch and transformers installed; PYTHONPATH=src is enough.
set -euo pipefail
export PYTHONPATH="${PYTHONPATH:+$PYTHONPATH:}$PWD/src" PYTHONUNBUFFERED=1
PEAK=${PEAK_TFLOPS:-989}  # H100 SXM dense bf16
PY=${PYTHON:-python3}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
$PY -c "import torch, transformers; print('torch', torch.__version__, 'transformers', transformers.__version__)"
B="$PY benchmarks/bench_model.py --device cuda --warmup 3 --steps 10 --peak-tflops $PEAK"
echo "## issue 2: original 13M-family path vs brainlm_hf (hidden 256, 4+2 layers), batch 8, mask 0.2"
$B --rows original,13m-options,small --dtype fp32,bf16 --modes train,forward --batch-size 8
echo "## issue 3: original 111M path (ViTMAE, eager) vs brainlm_hf 111m (sdpa), batch 32, mask 0.75"
$B --rows original-111m,111m --attn sdpa --dtype bf16 --modes train,forward --batch-size 32 --mask-ratio 0.75
echo "## brainlm-base pretraining step, bf16, batch 64, mask 0.75"
$B --rows base --attn sdpa --dtype bf16 --modes train --batch-size 64 --mask-ratio 0.75
echo "## embeddings"
$PY benchmarks/bench_embed.py --presets base,111m --device cuda --windows 1024 --batch-size 128
echo "## issue 15: fused AdamW + torch.compile, bf16: brainlm-base MFU (target >= 40%), 111M vs the original (>= 3x)"
$B --rows base --attn sdpa --dtype bf16 --modes train --batch-size 64 --mask-ratio 0.75 --optim adamw_torch_fused --compile
$B --rows original-111m,111m --attn sdpa --dtype bf16 --modes train --batch-size 32 --mask-ratio 0.75 \
  --optim adamw_torch_fused --compile
echo "## issue 15: pretrain loop vs the model alone, 111M, bf16 (target: loop within 5% of the model alone)"
$PY benchmarks/bench_pretrain.py --sections loop --model brainlm-111m --batch-size 32 --mixed-precision bf16 \
  --workers 0,4 --steps 30 --recordings 256
