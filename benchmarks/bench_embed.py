# Copyright 2026 The brainlm_hf authors. Licensed under the Apache License, Version 2.0.
"""Embedding throughput (`analysis.recording_embeddings.embed_windows`, no masking) by preset and dtype; a table.

Random weights and random 424 x 200 windows: throughput does not depend on the values. bf16 runs under autocast.

    python benchmarks/bench_embed.py                                     # CPU, brainlm-tiny and brainlm-small
    python benchmarks/bench_embed.py --presets base,111m --device cuda --windows 2048 --batch-size 128
"""

import argparse
import time

import numpy as np
import torch

from brainlm_hf import BrainLMConfig, BrainLMModel
from brainlm_hf.analysis.recording_embeddings import embed_windows

DTYPES = {"fp32": None, "bf16": torch.bfloat16}


def measure(preset: str, dtype: str, args) -> float:
    """Windows per second of one preset and dtype (after one warm-up pass over a batch)."""
    config = BrainLMConfig.from_preset(f"brainlm-{preset}", validate_inputs=False)
    model = BrainLMModel(config).to(args.device).eval()
    rng = np.random.default_rng(0)
    windows = rng.standard_normal((args.windows, 424, 200), dtype=np.float32)
    coordinates = rng.standard_normal((424, 3)).astype(np.float32) * 50
    embed_windows(model, windows[: args.batch_size], coordinates, "cls", args.batch_size, args.device, DTYPES[dtype])
    if args.device.startswith("cuda"):
        torch.cuda.synchronize()
    started = time.perf_counter()
    embed_windows(model, windows, coordinates, "cls", args.batch_size, args.device, DTYPES[dtype])
    if args.device.startswith("cuda"):
        torch.cuda.synchronize()
    return args.windows / (time.perf_counter() - started)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--presets", default="tiny,small")
    parser.add_argument("--dtype", default="fp32,bf16")
    parser.add_argument("--windows", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    dtypes = args.dtype.split(",")
    print(
        f"device {args.device}, torch {torch.__version__}, {args.windows} windows 424 x 200, batch {args.batch_size}"
    )
    print("\n| preset | " + " | ".join(f"{d} windows/s" for d in dtypes) + " | speed-up over the first |")
    print("|---|" + "---|" * (len(dtypes) + 1))
    for preset in args.presets.split(","):
        rates = [measure(preset, dtype, args) for dtype in dtypes]
        ratios = ", ".join(f"{r / rates[0]:.2f}x" for r in rates[1:]) or "-"
        print(f"| {preset} | " + " | ".join(f"{r:.1f}" for r in rates) + f" | {ratios} |")


if __name__ == "__main__":
    main()
