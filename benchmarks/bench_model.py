# Copyright 2026 The brainlm_hf authors. Licensed under the Apache License, Version 2.0.
"""Throughput and peak memory of BrainLM forward passes and training steps; prints a markdown table.

Each row runs in a fresh subprocess so that its peak memory (CPU: peak resident set size; CUDA: peak allocated) is
its own. A training step is forward + backward + AdamW step. `--optim adamw_torch_fused` and `--compile` apply to
the brainlm_hf rows only (the original rows run as the original code did: plain AdamW, eager). Rows:

* `original`: the original 13M-family compute path (`original_equivalent.py`: transformers' `NystromformerLayer`,
  the layer the original runs, with its eager full attention matrix), in the original repository's configuration;
* `original-111m`: the original 111M compute path (transformers' `ViTMAEForPreTraining`, eager attention, the
  3-channel matrix padded to 432 x 432);
* `13m-options`: brainlm_hf with the `original` row's architecture and options (post-LN, value conv, MLP head);
* any preset: `small` (the same widths as `original`, native blocks), `base`, `13m`, `111m`, `650m`, ...

Defaults reproduce the comparison of issue 2: hidden 256, 4 encoder + 2 decoder layers, 4 heads, input 424 x 200,
patch 20, batch 8, mask ratio 0.2, fp32, on whatever device is given (CPU by default).

    python benchmarks/bench_model.py                          # the CPU comparison table
    python benchmarks/bench_model.py --rows original-111m,111m --attn eager,sdpa --mask-ratio 0.75 --batch-size 4
    python benchmarks/bench_model.py --rows base --device cuda --dtype bf16 --batch-size 64 --peak-tflops 989
"""

import argparse
import json
import resource
import subprocess
import sys
import time

import torch

REGIONS, TIMEPOINTS, PATCH = 424, 200, 20
SMALL = {"hidden": 256, "layers": 4, "heads": 4, "mlp": 1024, "decoder_layers": 2}


def build(row: str, attn: str, mask_ratio: float):
    """Model for a row, and its widths for FLOP counting. A row is `original`, `original-111m` or a preset name."""
    if row == "original":
        sys.path.insert(0, __file__.rsplit("/", 1)[0])
        from original_equivalent import OriginalEquivalent

        model = OriginalEquivalent(
            SMALL["hidden"], SMALL["layers"], SMALL["heads"], SMALL["mlp"], SMALL["decoder_layers"], PATCH, mask_ratio
        )
        return model, {**SMALL, "tokens": REGIONS * TIMEPOINTS // PATCH}
    if row == "original-111m":
        sys.path.insert(0, __file__.rsplit("/", 1)[0])
        from original_equivalent import OriginalViTMAE

        model = OriginalViTMAE(mask_ratio)
        return model, widths(model.model.config, tokens=(432 // 16) ** 2)
    from brainlm_hf import BrainLMConfig, BrainLMForMaskedSignalModeling

    if row == "13m-options":  # the original repository's configuration with the 13M family's options
        config = BrainLMConfig.from_preset(
            "brainlm-small", norm_position="post", value_conv_kernel_size=65, decoder_head="mlp"
        )
    else:
        config = BrainLMConfig.from_preset(row if row.startswith("brainlm-") else f"brainlm-{row}")
    config.mask_ratio = mask_ratio
    config.validate_inputs = False
    config._attn_implementation = attn
    model = BrainLMForMaskedSignalModeling(config)
    return model, widths(config, tokens=model.num_tokens(REGIONS, TIMEPOINTS))


def widths(config, tokens: int) -> dict:
    """Widths for FLOP counting from a BrainLM or ViT-MAE config (they share these field names)."""
    return {
        "hidden": config.hidden_size,
        "layers": config.num_hidden_layers,
        "mlp": config.intermediate_size,
        "decoder_hidden": config.decoder_hidden_size,
        "decoder_layers": config.decoder_num_hidden_layers,
        "decoder_mlp": config.decoder_intermediate_size,
        "tokens": tokens,
    }


def step_flops(dims: dict, mask_ratio: float, batch_size: int, train: bool) -> float:
    """Matmul FLOPs of one step: per layer 2*S*(4h^2 + 2*h*mlp) + 4*S^2*h; backward counted as 2x forward."""
    tokens = dims["tokens"]
    encoder_tokens = 1 + int(tokens * (1 - mask_ratio))

    def layers(seq, hidden, mlp, count):
        return count * (2 * seq * (4 * hidden**2 + 2 * hidden * mlp) + 4 * seq**2 * hidden)

    forward = layers(encoder_tokens, dims["hidden"], dims["mlp"], dims["layers"])
    forward += layers(
        1 + tokens,
        dims.get("decoder_hidden", dims["hidden"]),
        dims.get("decoder_mlp", dims["mlp"]),
        dims["decoder_layers"],
    )
    return batch_size * forward * (3 if train else 1)


def worker(spec: dict) -> dict:
    torch.manual_seed(0)
    device = torch.device(spec["device"])
    model, dims = build(spec["row"], spec["attn"], spec["mask_ratio"])
    model.to(device)
    signal = torch.randn(spec["batch_size"], REGIONS, TIMEPOINTS, device=device)
    coordinates = torch.randn(spec["batch_size"], REGIONS, 3, device=device) * 50
    ours = not spec["row"].startswith("original")
    fused = ours and spec["optim"] == "adamw_torch_fused"
    train = spec["mode"] == "train"
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=fused or None) if train else None
    forward = torch.compile(model) if ours and spec["compile"] else model
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=spec["dtype"] == "bf16")

    def step():
        if optimizer is None:
            model.eval()
            with torch.no_grad(), autocast:
                forward(signal, coordinates)
        else:
            model.train()
            with autocast:
                out = forward(signal, coordinates)
            loss = out if isinstance(out, torch.Tensor) else out.loss
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
        if device.type == "cuda":
            torch.cuda.synchronize()

    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # GiB (ru_maxrss is in KiB)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    for _ in range(spec["warmup"]):
        step()
    start = time.perf_counter()
    for _ in range(spec["steps"]):
        step()
    seconds = (time.perf_counter() - start) / spec["steps"]
    flops = step_flops(dims, spec["mask_ratio"], spec["batch_size"], spec["mode"] == "train")
    result = {
        "step_s": seconds,
        "samples_per_s": spec["batch_size"] / seconds,
        "tokens_per_s": spec["batch_size"] * dims["tokens"] / seconds,  # input tokens (tiles include padding)
        "tflops": flops / seconds / 1e12,
        "params_m": sum(p.numel() for p in model.parameters()) / 1e6,
    }
    if device.type == "cuda":
        result["peak_gb"] = torch.cuda.max_memory_allocated() / 2**30
    else:
        result["peak_gb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20 - rss_before
    return result


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", default="original,13m-options,small", help="comma list of rows (see above)")
    parser.add_argument("--attn", default="sdpa", help="comma list of attention backends for brainlm_hf rows")
    parser.add_argument("--modes", default="train,forward")
    parser.add_argument("--dtype", default="fp32", help="comma list: fp32, bf16 (autocast)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--mask-ratio", type=float, default=0.2)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--peak-tflops", type=float, default=None, help="device peak for MFU (H100 bf16: 989)")
    parser.add_argument("--optim", default="adamw_torch", choices=["adamw_torch", "adamw_torch_fused"])
    parser.add_argument("--compile", action="store_true", help="torch.compile the brainlm_hf rows")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(json.loads(args.worker))))
        return

    print(
        f"device {args.device}, torch {torch.__version__}, threads {torch.get_num_threads()}, batch "
        f"{args.batch_size}, input {REGIONS}x{TIMEPOINTS}, patch {PATCH}, mask ratio {args.mask_ratio}; brainlm_hf "
        f"rows: {args.optim}{', torch.compile' if args.compile else ', eager'}\n"
    )
    header = "| row | attention | dtype | mode | step (s) | samples/s | tokens/s | TFLOP/s | MFU | peak memory (GiB) |"
    print(header + "\n|" + "---|" * (header.count("|") - 1))
    results = {}
    for mode in args.modes.split(","):
        for row in args.rows.split(","):
            for attn in ["eager"] if row.startswith("original") else args.attn.split(","):
                for dtype in args.dtype.split(","):
                    spec = dict(
                        row=row,
                        attn=attn,
                        dtype=dtype,
                        mode=mode,
                        batch_size=args.batch_size,
                        mask_ratio=args.mask_ratio,
                        device=args.device,
                        warmup=args.warmup,
                        steps=args.steps,
                        optim=args.optim,
                        compile=args.compile,
                    )
                    proc = subprocess.run(
                        [sys.executable, __file__, "--worker", json.dumps(spec)], capture_output=True, text=True
                    )
                    if proc.returncode != 0:
                        print(f"| {row} | {attn} | {dtype} | {mode} | failed: {proc.stderr.strip()[-200:]} |")
                        continue
                    r = json.loads(proc.stdout.strip().splitlines()[-1])
                    results[(row, attn, dtype, mode)] = r
                    mfu = f"{r['tflops'] / args.peak_tflops:.1%}" if args.peak_tflops else "-"
                    print(
                        f"| {row} | {attn} | {dtype} | {mode} | {r['step_s']:.2f} | {r['samples_per_s']:.2f} | "
                        f"{r['tokens_per_s']:.0f} | {r['tflops']:.3f} | {mfu} | {r['peak_gb']:.2f} |",
                        flush=True,
                    )
    ratios = []
    for (row, attn, dtype, mode), r in results.items():
        baseline_row = "original-111m" if "111m" in row else "original"
        baseline = next((b for (n, _, d, m), b in results.items() if (n, d, m) == (baseline_row, dtype, mode)), None)
        if baseline is not None and not row.startswith("original"):
            speed, memory = baseline["step_s"] / r["step_s"], r["peak_gb"] / baseline["peak_gb"]
            ratios.append(f"| {row} | {baseline_row} | {attn} | {dtype} | {mode} | {speed:.2f}x | {memory:.2f} |")
    if ratios:
        print("\nRatios against the original-equivalent row of the same dtype and mode, from this run:\n")
        print("| row | baseline | attention | dtype | mode | speed-up | memory ratio |\n|---|---|---|---|---|---|---|")
        print("\n".join(ratios))


if __name__ == "__main__":
    main()
