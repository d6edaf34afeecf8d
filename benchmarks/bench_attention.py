# Copyright 2026 The brainlm_hf authors. Licensed under the Apache License, Version 2.0.
"""CLS attention against the plain encoder forward: time, peak memory and GFLOP/s, with the machine's matmul rate.

Rows (each in a fresh subprocess, so that its peak memory is its own; the rows alternate over `--rounds`):

* `sdpa forward`: `BrainLMModel` forward, nothing masked, the default sdpa backend: the embedding cost;
* `eager, output_attentions`: the same forward returning every layer's full attention matrices (eager attention);
* `cls_attention`: `analysis.attention_maps.cls_attention`, every layer's CLS row computed beside sdpa;
* `original eager`: with `--original-python PY --original-source DIR`, the original BrainLM code (DIR holds its
  `brainlm_mae` package) in its own environment (PY: a Python with transformers 4.28), its `BrainLMModel` forward
  (eager, full attention; nothing masked, `noise` given) on the same configuration (13M-family blocks only);
* `matmul`: the reference line, a square fp32 matrix product timed in the same run (`--matmul-size`).

`--blocks 111m` measures the `brainlm-111m` encoder instead (hidden 768, 12 layers, the 424 x 200 input padded into
729 tiles of 16 x 16). `--profile` prints the top operators of one sdpa forward (torch.profiler, self CPU time and
share); `--kernels` times the attention kernels alone on one layer's shapes: sdpa's, eager's and a blocked
attention through BLAS matrix products (query blocks: scores, softmax, product with the values), against matmul.

Last, `--interleaved N` times the sdpa forward and `cls_attention` alternately N times each in one process on one
model, the ratio least disturbed by other load on a shared machine (best / median of each).

Configuration: the original repository's (hidden 256, 4 layers, 4 heads, MLP 1024, 424 x 200 input, patch 20:
4,240 tokens + CLS), by default with the 13M family's blocks (post-LN, value convolution 65; `--blocks native` for
pre-LN blocks without it), fp32. GFLOP/s counts the encoder's matrix products (per layer `2 S (4 h^2 + 2 h m) +
4 S^2 h` per sample; the value convolution and the O(S) CLS rows are left out), by wall-clock and by the process's
CPU time (`of matmul, CPU time`: the share of the matmul's rate by CPU time, which the other load of a shared machine
disturbs less; with several threads it also counts their waits). Peak memory: CPU peak resident set size above the
process's size once the model and inputs are built (CUDA: peak allocated).

    python benchmarks/bench_attention.py                     # batch 8, as the targets are stated
    python benchmarks/bench_attention.py --batch-size 2      # shorter, while others share the machine
    python benchmarks/bench_attention.py --original-python /work/orig_env/bin/python --original-source /work/orig_src
    python benchmarks/bench_attention.py --rounds 0 --interleaved 0 --kernels 3 --batch-size 1 --threads 1
"""

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time

import torch
from torch import nn

REGIONS, TIMEPOINTS = 424, 200
ROWS = {
    "original": "original eager (full attention)",
    "sdpa": "sdpa forward",
    "eager": "eager, output_attentions",
    "cls": "cls_attention",
}
ORIGINAL = {"hidden": 256, "layers": 4, "heads": 4, "mlp": 1024, "patch": 20}


def build_model(blocks: str, attn: str):
    from brainlm_hf import BrainLMConfig, BrainLMModel

    if blocks == "111m":
        config = BrainLMConfig.from_preset("brainlm-111m", validate_inputs=False)
    else:
        options = {"norm_position": "post", "value_conv_kernel_size": 65} if blocks == "13m" else {}
        config = BrainLMConfig.from_preset("brainlm-small", validate_inputs=False, **options)
    config._attn_implementation = attn
    return BrainLMModel(config).eval()


def build_original(source: str):
    """The original code's `BrainLMModel` at the original repository's configuration, and its FLOP-counting widths."""
    sys.path.insert(0, source)
    from brainlm_mae.configuration_brainlm import BrainLMConfig
    from brainlm_mae.modeling_brainlm import BrainLMModel

    config = BrainLMConfig(
        hidden_size=ORIGINAL["hidden"],
        num_hidden_layers=ORIGINAL["layers"],
        num_attention_heads=ORIGINAL["heads"],
        intermediate_size=ORIGINAL["mlp"],
        num_brain_voxels=REGIONS,
        num_timepoints_per_voxel=TIMEPOINTS,
        timepoint_patching_size=ORIGINAL["patch"],
        mask_ratio=0.0,
    )
    return BrainLMModel(config).eval()


def encoder_flops(config, tokens: int, batch_size: int) -> float:
    """Matrix-product FLOPs of one encoder forward over `1 + tokens` rows per sample (a BrainLM or original config)."""
    sequence, hidden, mlp = 1 + tokens, config.hidden_size, config.intermediate_size
    per_layer = 2 * sequence * (4 * hidden**2 + 2 * hidden * mlp) + 4 * sequence**2 * hidden
    return batch_size * config.num_hidden_layers * per_layer


def row_call(spec: dict, signal: torch.Tensor, coordinates: torch.Tensor):
    """The model of a row, the call it times, and its token count."""
    if spec["row"] == "original":
        model = build_original(spec["source"])
        noise = torch.rand(len(signal), REGIONS * TIMEPOINTS // ORIGINAL["patch"])
        xyz = coordinates.expand(len(signal), -1, -1)
        return model, lambda: model(signal, xyz, noise=noise), REGIONS * TIMEPOINTS // ORIGINAL["patch"]
    from brainlm_hf.analysis.attention_maps import cls_attention

    model = build_model(spec["blocks"], "eager" if spec["row"] == "eager" else "sdpa").to(signal.device)
    run = {
        "sdpa": lambda: model(signal, coordinates),
        "eager": lambda: model(signal, coordinates, output_attentions=True),
        "cls": lambda: cls_attention(model, signal, coordinates),
    }[spec["row"]]
    return model, run, model.num_tokens(REGIONS, TIMEPOINTS)


def peak_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # ru_maxrss is in KiB


def worker(spec: dict) -> dict:
    """Seconds per batch (median of `steps` after `warmup`), peak memory and encoder GFLOP/s of one row."""
    torch.manual_seed(0)
    torch.set_num_threads(spec["threads"])
    device = torch.device(spec["device"])
    signal = torch.randn(spec["batch_size"], REGIONS, TIMEPOINTS, device=device)
    coordinates = torch.randn(REGIONS, 3, device=device) * 50
    model, run, tokens = row_call(spec, signal, coordinates)
    before = peak_gib()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    with torch.no_grad():
        times = [timed(run, device.type) for _ in range(spec["warmup"] + spec["steps"])][spec["warmup"] :]
    seconds, cpu_seconds = (statistics.median(column) for column in zip(*times, strict=True))
    flops = encoder_flops(model.config, tokens, spec["batch_size"])
    peak = torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else peak_gib() - before
    return {
        "seconds": seconds,
        "peak_gib": peak,
        "gflops": flops / seconds / 1e9,
        "cpu_gflops": flops / cpu_seconds / 1e9,
    }


def timed(call, device_type: str) -> tuple[float, float]:
    """Wall-clock and process CPU seconds of `call()` (CPU time: what a shared machine's other load does not add)."""
    wall, cpu = time.perf_counter(), time.process_time()
    call()
    if device_type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - wall, time.process_time() - cpu


def matmul_gflops(size: int, repeats: int, device: str) -> tuple[float, float]:
    """GFLOP/s of a `size x size` fp32 matrix product (wall-clock, CPU time), medians of `repeats` after a warm-up."""
    a, b = torch.randn(size, size, device=device), torch.randn(size, size, device=device)
    times = [timed(lambda: torch.mm(a, b), torch.device(device).type) for _ in range(repeats + 1)][1:]
    return tuple(2 * size**3 / statistics.median(column) / 1e9 for column in zip(*times, strict=True))


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
    python = spec["python"] if spec["row"] == "original" else sys.executable
    proc = subprocess.run([python, __file__, "--worker", json.dumps(spec)], capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"row {spec['row']} failed: {proc.stderr.strip()[-400:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def profile_forward(spec: dict, top: int) -> str:
    """Top `top` operators of one sdpa forward (after a warm-up) by self CPU time, with their share of the total."""
    from torch.profiler import ProfilerActivity, profile

    torch.manual_seed(0)
    model = build_model(spec["blocks"], "sdpa")
    signal, coordinates = torch.randn(spec["batch_size"], REGIONS, TIMEPOINTS), torch.randn(REGIONS, 3) * 50
    with torch.no_grad():
        model(signal, coordinates)
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            model(signal, coordinates)
    events = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
    total = sum(e.self_cpu_time_total for e in events)
    lines = ["| operator | calls | self CPU s | share |", "|---|---|---|---|"]
    for event in events[:top]:
        share = event.self_cpu_time_total / total
        lines.append(f"| {event.key} | {event.count} | {event.self_cpu_time_total / 1e6:.3f} | {share:.1%} |")
    return "\n".join(lines)


def blocked_attention(query, key, value, scaling: float, block: int) -> torch.Tensor:
    """
    Softmax attention `(B, heads, S, D)` -> `(B, heads, S, D)` by query blocks of `block` rows through BLAS products:
    scores, in-place exponent of the scores less their row maximum, product with the values, division by the sums.
    """
    batch, heads, length, dim = query.shape
    queries = (query * scaling).reshape(batch * heads, length, dim)
    keys = key.reshape(batch * heads, length, dim).transpose(1, 2).contiguous()
    values = value.reshape(batch * heads, length, dim)
    output = torch.empty_like(queries)
    for start in range(0, length, block):
        scores = torch.bmm(queries[:, start : start + block], keys)  # (B * heads, block, S)
        scores.sub_(scores.amax(-1, keepdim=True)).exp_()
        rows = output[:, start : start + block]
        torch.bmm(scores, values, out=rows)
        rows.div_(scores.sum(-1, keepdim=True))
    return output.view(batch, heads, length, dim)


def kernel_rates(spec: dict, matmul_size: int, repeats: int) -> str:
    """
    GFLOP/s (`4 S^2 h` per sample) of one layer's attention kernels on the encoder's shapes, best of `repeats`
    alternating calls, with the matmul rate timed between them; the largest difference to sdpa's output.
    """
    model = build_model(spec["blocks"], "sdpa")
    config, length = model.config, 1 + model.num_tokens(REGIONS, TIMEPOINTS)
    heads, dim = config.num_attention_heads, config.hidden_size // config.num_attention_heads
    shape = (spec["batch_size"], length, heads, dim)  # the layout the projections give
    query, key, value = (torch.randn(shape).transpose(1, 2) for _ in range(3))
    scaling = dim**-0.5
    kernels = {
        "sdpa (flash, CPU)": lambda: nn.functional.scaled_dot_product_attention(query, key, value, scale=scaling),
        "eager (matmul, softmax, matmul)": lambda: torch.matmul(
            torch.softmax(torch.matmul(query, key.transpose(2, 3)) * scaling, -1), value
        ),
    }
    for block in (256, 512, 1024):
        kernels[f"blocked BLAS, {block}-row query blocks"] = lambda b=block: blocked_attention(
            query, key, value, scaling, b
        )
    best, matmul = dict.fromkeys(kernels, float("inf")), []
    reference = kernels["sdpa (flash, CPU)"]()
    with torch.no_grad():
        for _ in range(repeats):
            matmul.append(matmul_gflops(matmul_size, 1, "cpu")[0])
            for name, kernel in kernels.items():
                start = time.perf_counter()
                kernel()
                best[name] = min(best[name], time.perf_counter() - start)
    rate = max(matmul)
    flops = 4 * spec["batch_size"] * length**2 * config.hidden_size
    lines = [f"| kernel ({length} rows, {heads} heads of {dim}) | GFLOP/s | of matmul | max abs diff to sdpa |"]
    lines.append("|---|---|---|---|")
    for name, kernel in kernels.items():
        difference = (kernel() - reference).abs().max().item()
        lines.append(
            f"| {name} | {flops / best[name] / 1e9:.1f} | {flops / best[name] / 1e9 / rate:.0%} | {difference:.1e} |"
        )
    lines.append(f"| matmul {matmul_size}^3 (reference, best) | {rate:.1f} | 100% | - |")
    return "\n".join(lines)


def timed_rows(rows: list[str], spec: dict, rounds: int, matmul_size: int) -> str:
    """Table of the rows, each in its own process, alternating over `rounds`, with the matmul rate of each round."""
    results = {row: [] for row in rows}
    matmul = []
    for _ in range(rounds):
        matmul.append(matmul_gflops(matmul_size, 5, spec["device"]))
        for row in rows:
            results[row].append(run_row({**spec, "row": row}))
    reference, cpu_reference = (statistics.median(column) for column in zip(*matmul, strict=True))
    lines = [
        "| path | s per batch (per round) | peak memory (GiB) | encoder GFLOP/s | of matmul | of matmul, CPU time "
        "| time / sdpa forward |",
        "|---|---|---|---|---|---|---|",
    ]
    base = [r["seconds"] for r in results["sdpa"]] if "sdpa" in results else None
    for row, runs in results.items():
        seconds = " / ".join(f"{r['seconds']:.2f}" for r in runs)
        peak = max(r["peak_gib"] for r in runs)
        gflops = statistics.median(r["gflops"] for r in runs)
        cpu_share = statistics.median(r["cpu_gflops"] for r in runs) / cpu_reference
        ratio = "-"
        if base:
            ratio = " / ".join(f"{r['seconds'] / b:.2f}x" for r, b in zip(runs, base, strict=True))
        lines.append(
            f"| {ROWS[row]} | {seconds} | {peak:.2f} | {gflops:.1f} | {gflops / reference:.0%} | {cpu_share:.0%} "
            f"| {ratio} |"
        )
    rates = " / ".join(f"{wall:.1f}" for wall, _ in matmul)
    cpu_rates = " / ".join(f"{cpu:.1f}" for _, cpu in matmul)
    lines.append(
        f"| matmul {matmul_size}^3 fp32 (reference) | - | - | {rates} (CPU time: {cpu_rates}) | 100% | 100% | - |"
    )
    return "\n".join(lines)


def configuration_line(args) -> str:
    if args.blocks == "111m":
        model = "brainlm-111m (hidden 768, 12 layers, 12 heads), 424 x 200 padded to 432 x 432, 729 tiles + CLS"
    else:
        model = f"{args.blocks} blocks, hidden 256, 4 layers, 4 heads, {REGIONS} x {TIMEPOINTS}, patch 20"
        model += f" ({REGIONS * TIMEPOINTS // ORIGINAL['patch']:,} tokens + CLS)"
    return (
        f"device {args.device}, torch {torch.__version__}, threads {torch.get_num_threads()}, {model}, "
        f"batch {args.batch_size}, mask ratio 0, fp32; {args.rounds} alternating rounds, each row {args.warmup} "
        f"warm-up + {args.steps} timed"
    )


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", default="sdpa,eager,cls", help=f"comma list of {list(ROWS)}")
    parser.add_argument("--blocks", default="13m", choices=["13m", "native", "111m"])
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=2, help="alternating rounds over the rows (0: no rows)")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--steps", type=int, default=1)
    parser.add_argument("--matmul-size", type=int, default=2048)
    parser.add_argument("--interleaved", type=int, default=3, help="alternating repeats for the ratio (0: none)")
    parser.add_argument("--original-python", help="a Python with the original's environment: adds its row")
    parser.add_argument("--original-source", help="folder holding the original's `brainlm_mae` package")
    parser.add_argument("--profile", type=int, default=0, help="print the top N operators of one sdpa forward")
    parser.add_argument("--kernels", type=int, default=0, help="time the attention kernels alone, N alternations")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads(), help="torch threads of every row")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(json.loads(args.worker))))
        return
    if bool(args.original_python) != bool(args.original_source) or (args.original_python and args.blocks != "13m"):
        parser.error("--original-python and --original-source go together, with --blocks 13m")

    torch.set_num_threads(args.threads)
    rows = (["original"] if args.original_python else []) + args.rows.split(",")
    spec = {"blocks": args.blocks, "batch_size": args.batch_size, "device": args.device, "threads": args.threads}
    spec.update(warmup=args.warmup, steps=args.steps, python=args.original_python, source=args.original_source)
    print(configuration_line(args) + "\n")
    if args.rounds:
        print(timed_rows(rows, spec, args.rounds, args.matmul_size))
    if args.interleaved:
        best, median = interleaved_ratio(spec, args.interleaved)
        print(
            f"\ncls_attention / sdpa forward, {args.interleaved} alternating calls each in one process: {best:.3f}x "
            f"(best over best), {median:.3f}x (median over median)"
        )
    if args.profile:
        print(
            f"\nsdpa forward, top {args.profile} operators by self CPU time:\n\n{profile_forward(spec, args.profile)}"
        )
    if args.kernels:
        print(f"\nattention kernels alone, one layer:\n\n{kernel_rates(spec, args.matmul_size, args.kernels)}")


if __name__ == "__main__":
    main()
