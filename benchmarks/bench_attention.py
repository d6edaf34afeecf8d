# Copyright 2026 The brainlm_hf authors. Licensed under the Apache License, Version 2.0.
"""CLS attention against the plain encoder forward: time, peak memory and GFLOP/s, with the machine's matmul rate.

Rows (each in a fresh subprocess, so that its peak memory is its own; the rows alternate over `--rounds`):

* `sdpa forward`: `BrainLMModel` forward, nothing masked, the default sdpa backend: the embedding cost;
* `eager, output_attentions`: the same forward returning every layer's full attention matrices (eager attention);
* `cls_attention`: `analysis.attention_maps.cls_attention`, every layer's CLS row computed beside sdpa;
* `matmul`: the reference line, a square fp32 matrix product timed in the same run (`--matmul-size`).

Last, `--interleaved N` times the sdpa forward and `cls_attention` alternately N times each in one process on one
model, the ratio least disturbed by other load on a shared machine (best / median of each).

Configuration: the original repository's (hidden 256, 4 layers, 4 heads, MLP 1024, 424 x 200 input, patch 20:
4,241 tokens), by default with the 13M family's blocks (post-LN, value convolution 65; `--blocks native` for pre-LN
blocks without it), fp32. GFLOP/s counts the encoder's matrix products (per layer `2 S (4 h^2 + 2 h m) + 4 S^2 h`
per sample; the value convolution and the O(S) CLS rows are left out). Peak memory: CPU peak resident set size
above the process's size once the model and inputs are built (CUDA: peak allocated).

    python benchmarks/bench_attention.py                     # batch 8, as the targets are stated
    python benchmarks/bench_attention.py --batch-size 2      # shorter, while others share the machine
"""

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time

import torch

REGIONS, TIMEPOINTS = 424, 200
ROWS = {"sdpa": "sdpa forward", "eager": "eager, output_attentions", "cls": "cls_attention"}


def build_model(blocks: str, attn: str):
    from brainlm_hf import BrainLMConfig, BrainLMModel

    options = {"norm_position": "post", "value_conv_kernel_size": 65} if blocks == "13m" else {}
    config = BrainLMConfig.from_preset("brainlm-small", validate_inputs=False, **options)
    config._attn_implementation = attn
    return BrainLMModel(config).eval()


def encoder_flops(config, tokens: int, batch_size: int) -> float:
    """Matrix-product FLOPs of one encoder forward over `1 + tokens` rows per sample."""
    sequence, hidden, mlp = 1 + tokens, config.hidden_size, config.intermediate_size
    per_layer = 2 * sequence * (4 * hidden**2 + 2 * hidden * mlp) + 4 * sequence**2 * hidden
    return batch_size * config.num_hidden_layers * per_layer


def peak_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # ru_maxrss is in KiB


def worker(spec: dict) -> dict:
    """Seconds per batch (median of `steps` after `warmup`), peak memory and encoder GFLOP/s of one row."""
    from brainlm_hf.analysis.attention_maps import cls_attention

    torch.manual_seed(0)
    device = torch.device(spec["device"])
    model = build_model(spec["blocks"], "eager" if spec["row"] == "eager" else "sdpa").to(device)
    signal = torch.randn(spec["batch_size"], REGIONS, TIMEPOINTS, device=device)
    coordinates = torch.randn(REGIONS, 3, device=device) * 50
    run = {
        "sdpa": lambda: model(signal, coordinates),
        "eager": lambda: model(signal, coordinates, output_attentions=True),
        "cls": lambda: cls_attention(model, signal, coordinates),
    }[spec["row"]]
    before = peak_gib()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    times = []
    with torch.no_grad():
        for step in range(spec["warmup"] + spec["steps"]):
            start = time.perf_counter()
            run()
            if device.type == "cuda":
                torch.cuda.synchronize()
            if step >= spec["warmup"]:
                times.append(time.perf_counter() - start)
    seconds = statistics.median(times)
    flops = encoder_flops(model.config, model.num_tokens(REGIONS, TIMEPOINTS), spec["batch_size"])
    peak = torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else peak_gib() - before
    return {"seconds": seconds, "peak_gib": peak, "gflops": flops / seconds / 1e9}


def matmul_gflops(size: int, repeats: int, device: str) -> float:
    """GFLOP/s of a `size x size` fp32 matrix product, median of `repeats` after one warm-up."""
    a, b = torch.randn(size, size, device=device), torch.randn(size, size, device=device)
    times = []
    for _ in range(repeats + 1):
        start = time.perf_counter()
        torch.mm(a, b)
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return 2 * size**3 / statistics.median(times[1:]) / 1e9


def interleaved_ratio(spec: dict, repeats: int) -> tuple[float, float]:
    """`cls_attention` time over sdpa forward time, alternating on one model: (best over best, median over median)."""
    from brainlm_hf.analysis.attention_maps import cls_attention

    torch.manual_seed(0)
    model = build_model(spec["blocks"], "sdpa").to(spec["device"])
    signal = torch.randn(spec["batch_size"], REGIONS, TIMEPOINTS, device=spec["device"])
    coordinates = torch.randn(REGIONS, 3, device=spec["device"]) * 50
    times = {"sdpa": [], "cls": []}
    with torch.no_grad():
        model(signal, coordinates)
        for _ in range(repeats):
            for name, run in [
                ("sdpa", lambda: model(signal, coordinates)),
                ("cls", lambda: cls_attention(model, signal, coordinates)),
            ]:
                start = time.perf_counter()
                run()
                times[name].append(time.perf_counter() - start)
    best = min(times["cls"]) / min(times["sdpa"])
    return best, statistics.median(times["cls"]) / statistics.median(times["sdpa"])


def run_row(spec: dict) -> dict:
    proc = subprocess.run([sys.executable, __file__, "--worker", json.dumps(spec)], capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"row {spec['row']} failed: {proc.stderr.strip()[-400:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", default="sdpa,eager,cls", help=f"comma list of {list(ROWS)}")
    parser.add_argument("--blocks", default="13m", choices=["13m", "native"])
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=2, help="alternating rounds over the rows")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--steps", type=int, default=1)
    parser.add_argument("--matmul-size", type=int, default=2048)
    parser.add_argument("--interleaved", type=int, default=3, help="alternating repeats for the ratio (0: none)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(json.loads(args.worker))))
        return

    rows = args.rows.split(",")
    spec = {"blocks": args.blocks, "batch_size": args.batch_size, "device": args.device}
    spec.update(warmup=args.warmup, steps=args.steps)
    results = {row: [] for row in rows}
    matmul = []
    for _ in range(args.rounds):
        matmul.append(matmul_gflops(args.matmul_size, 5, args.device))
        for row in rows:
            results[row].append(run_row({**spec, "row": row}))
    reference = statistics.median(matmul)
    print(
        f"device {args.device}, torch {torch.__version__}, threads {torch.get_num_threads()}, {args.blocks} blocks, "
        f"hidden 256, 4 layers, {REGIONS} x {TIMEPOINTS}, patch 20 (4,241 tokens + CLS), batch {args.batch_size}, "
        f"mask ratio 0, fp32; {args.rounds} alternating rounds, each row {args.warmup} warm-up + {args.steps} timed\n"
    )
    print("| path | s per batch (per round) | peak memory (GiB) | encoder GFLOP/s | of matmul | time / sdpa forward |")
    print("|---|---|---|---|---|---|")
    base = [r["seconds"] for r in results["sdpa"]] if "sdpa" in results else None
    for row, runs in results.items():
        seconds = " / ".join(f"{r['seconds']:.2f}" for r in runs)
        peak = max(r["peak_gib"] for r in runs)
        gflops = statistics.median(r["gflops"] for r in runs)
        ratio = "-"
        if base:
            ratio = " / ".join(f"{r['seconds'] / b:.2f}x" for r, b in zip(runs, base, strict=True))
        print(f"| {ROWS[row]} | {seconds} | {peak:.2f} | {gflops:.1f} | {gflops / reference:.0%} | {ratio} |")
    rates = " / ".join(f"{r:.1f}" for r in matmul)
    print(f"| matmul {args.matmul_size}^3 fp32 (reference) | - | - | {rates} | 100% | - |")
    if args.interleaved:
        best, median = interleaved_ratio(spec, args.interleaved)
        print(
            f"\ncls_attention / sdpa forward, {args.interleaved} alternating calls each in one process: {best:.3f}x "
            f"(best over best), {median:.3f}x (median over median)"
        )


if __name__ == "__main__":
    main()
