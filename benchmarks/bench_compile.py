# Copyright 2026 The brainlm_hf authors. Licensed under the Apache License, Version 2.0.
"""Forward time of eager vs `torch.compile(model, fullgraph=True)` (default config, input checks on), one table.

    python benchmarks/bench_compile.py                       # tiny and small presets, batch 8, 424 x 200, CPU

The compiled model is warmed up (compilation excluded) and both are timed on the same inputs in the same run;
the first column pair also says how long compilation took.
"""

import argparse
import statistics
import time

import torch

from brainlm_hf import BrainLMConfig, BrainLMModel


def seconds(function, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--presets", nargs="+", default=["brainlm-tiny", "brainlm-small"])
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    torch.manual_seed(0)
    signal, coordinates = torch.randn(args.batch_size, 424, 200), torch.randn(424, 3) * 50
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, batch {args.batch_size}, 424 x 200, forward")
    print("| preset | compile (s) | eager (s) | compiled (s) | speed-up | max abs diff |")
    print("|---|---|---|---|---|---|")
    for preset in args.presets:
        model = BrainLMModel(BrainLMConfig.from_preset(preset)).eval()
        compiled = torch.compile(model, fullgraph=True)
        with torch.no_grad():
            started = time.perf_counter()
            graph_out = compiled(signal, coordinates).last_hidden_state
            compile_seconds = time.perf_counter() - started
            eager_out = model(signal, coordinates).last_hidden_state
            eager = seconds(lambda model=model: model(signal, coordinates), args.repeats)
            fast = seconds(lambda compiled=compiled: compiled(signal, coordinates), args.repeats)
        difference = (graph_out - eager_out).abs().max().item()
        print(
            f"| {preset} | {compile_seconds:.1f} | {eager:.3f} | {fast:.3f} | {eager / fast:.2f}x | {difference:.1e} |"
        )


if __name__ == "__main__":
    main()
