# Copyright 2026 The brainlm_hf authors. Licensed under the Apache License, Version 2.0.
"""Is the data path the bottleneck of pretraining? Windows/s of the data alone, the model alone and the whole loop,
plus eager vs compiled training steps. Prints markdown tables, every row from this one run.

On synthetic 424-region recordings (`--timepoints`, default 490) prepared into Parquet shards, for a micro config
(a model much cheaper than `brainlm-tiny`: patch 200, width 8, one layer each) and for `--model` (default
`brainlm-tiny`), and for each `--workers` count:

1. data alone: the pretraining loader (`BatchStream`, batches and masking noise made in the loader workers, fed
   through the loop's `DataFeed`), consumed without a model;
2. model alone: the training step (forward + backward + gradient clipping + fused AdamW) on a fixed batch;
3. the `pretrain` loop end to end (its logged windows/s, after the first logging interval).

A last row runs the loop with a step that costs nothing (`train_step` replaced by one that only moves the batch to
the device and counts it): no model of this architecture steps faster than the data path on a small CPU, so this
is the limiting case that shows what the loop itself costs when the data path is the bottleneck.

The ratios say how much of the slower of (1) and (2) the loop keeps. Then the training step of `--compile-models`
(default tiny and small presets) eager and under `torch.compile` (inductor), after warm-up (the compile time is
printed apart), and the optimizer step of those models with `--optim adamw_torch_fused` (the default) and
`adamw_torch`. `--sections` runs some of the three tables (loop, compile, optimizer).

    python benchmarks/bench_pretrain.py --model brainlm-tiny --batch-size 16 --steps 30
"""

import argparse
import contextlib
import functools
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from brainlm_hf import BrainLMConfig, BrainLMForMaskedSignalModeling
from brainlm_hf.data import PreparedDataset, WindowStream, prepare_dataset
from brainlm_hf.data.streaming import BatchStream
from brainlm_hf.training import pretraining
from brainlm_hf.training.pretraining import DataFeed, PretrainingArguments, pretrain, window_noise

MICRO = {
    "patch_size": 200,
    "hidden_size": 8,
    "num_hidden_layers": 1,
    "num_attention_heads": 1,
    "intermediate_size": 8,
    "decoder_hidden_size": 8,
    "decoder_num_hidden_layers": 1,
    "decoder_num_attention_heads": 1,
    "decoder_intermediate_size": 8,
}


def make_dataset(folder: Path, recordings: int, timepoints: int) -> Path:
    rng = np.random.default_rng(0)
    for i in range(recordings):
        np.save(folder / f"sub-{i:04d}_bold.npy", rng.normal(size=(timepoints, 424)).astype(np.float32))
    prepare_dataset(
        folder / "*.npy",
        folder / "prepared",
        normalization="zscore",
        shard_multiple=4,
        splits={"train": 0.95, "validation": 0.05},
        coordinates=rng.normal(size=(424, 3)) * 50,
    )
    return folder / "prepared"


def config_of(model: str) -> BrainLMConfig:
    return BrainLMConfig(**MICRO) if model == "micro" else BrainLMConfig.from_preset(model)


def data_rate(prepared: Path, model: str, batch_size: int, crops: int, workers: int, steps: int) -> float:
    """Windows/s of the pretraining loader alone (as `pretrain` builds it), after one warm-up batch per worker."""
    dataset = PreparedDataset(prepared)
    stream = WindowStream(dataset.shards("train"), dataset.processor, crops_per_recording=crops)
    num_tokens = BrainLMForMaskedSignalModeling(config_of(model)).num_tokens(424, dataset.processor.num_timepoints)
    noise = functools.partial(window_noise, 0, num_tokens=num_tokens)
    batches = BatchStream([stream], batch_size, parts=max(1, workers), noise=noise)
    feed = DataFeed(batches.loader(workers, shared_buffers=6), "benchmark")
    for _ in range(max(1, workers)):
        next(feed)
    start = time.perf_counter()
    for _ in range(steps):
        batches.advance(next(feed))
    seconds = time.perf_counter() - start
    feed.close()
    return steps * batch_size / seconds


def model_rate(
    config: BrainLMConfig, batch_size: int, steps: int, compiled: bool = False, device: str = "cpu", bf16: bool = False
) -> tuple[float, float]:
    """(windows/s of the training step on a fixed batch after 3 warm-up steps, seconds of those warm-up steps)."""
    torch.manual_seed(0)
    config.validate_inputs = False
    model = BrainLMForMaskedSignalModeling(config).to(device)
    forward = torch.compile(model) if compiled else model
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=True)  # `pretrain`'s default optim
    batch = {
        "signal_values": torch.randn(batch_size, 424, 200, device=device),
        "coordinates": torch.randn(424, 3, device=device) * 50,
    }
    autocast = torch.autocast(torch.device(device).type, dtype=torch.bfloat16, enabled=bf16)
    start = time.perf_counter()
    for step in range(steps + 3):
        if step == 3:
            _synchronize(device)
            warm_up, start = time.perf_counter() - start, time.perf_counter()
        with autocast:
            loss = forward(**batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)  # as `pretrain` does (--max_grad_norm 1)
        optimizer.step()
        optimizer.zero_grad()
    _synchronize(device)
    return steps * batch_size / (time.perf_counter() - start), warm_up


@contextlib.contextmanager
def _free_steps():
    """`pretrain` with a training step that only moves each batch to the device and counts it (no model runs)."""

    def free_step(run, forward, batches, meter):
        for batch in batches:
            batch["signal_values"].to(run.accelerator.device, non_blocking=True)
            meter.add(len(batch["window_ids"]), batch["noise"].shape[1])
        return torch.zeros((), device=run.accelerator.device)

    real, pretraining.PretrainingRun.train_step = pretraining.PretrainingRun.train_step, free_step
    try:
        yield
    finally:
        pretraining.PretrainingRun.train_step = real


def _synchronize(device: str) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def loop_rate(
    prepared: Path, folder: Path, model: str, batch_size: int, crops: int, workers: int, steps: int, args, tag=""
) -> float:
    """Windows/s of `pretrain` end to end, from its log, past the first logging interval (10 steps)."""
    if model == "micro":
        config_of(model).to_json_file(folder / "micro.json")
        model = str(folder / "micro.json")
    output = folder / f"run-{Path(model).stem}-{workers}{tag}"
    pretrain(
        PretrainingArguments(
            dataset=str(prepared),
            output_dir=str(output),
            model=model,
            per_device_train_batch_size=batch_size,
            crops_per_recording=crops,
            dataloader_num_workers=workers,
            max_steps=steps + 10,
            logging_steps=10,
            save_steps=10**9,
            eval_steps=0,
            eval_windows=0,
            mixed_precision=args.mixed_precision,
            torch_compile=args.torch_compile,
        )
    )
    log = [json.loads(line) for line in (output / "log.jsonl").read_text().splitlines()]
    first, last = log[0], log[-1]
    return (last["windows"] - first["windows"]) / (last["elapsed_s"] - first["elapsed_s"])


def optimizer_table(models: list[str], steps: int = 50) -> None:
    """Milliseconds per AdamW step (random gradients), fused and torch's default implementation, side by side."""
    print("\n| model | parameters | adamw_torch_fused (ms) | adamw_torch (ms) | speed-up |\n|---|---|---|---|---|")
    for name in models:
        model = BrainLMForMaskedSignalModeling(config_of(name))
        for parameter in model.parameters():
            parameter.grad = torch.randn_like(parameter)
        times = {}
        for fused in (True, False):
            optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=fused)
            optimizer.step()  # state allocated
            start = time.perf_counter()
            for _ in range(steps):
                optimizer.step()
            times[fused] = (time.perf_counter() - start) / steps * 1e3
        size = sum(p.numel() for p in model.parameters())
        print(f"| {name} | {size:,} | {times[True]:.2f} | {times[False]:.2f} | {times[False] / times[True]:.2f}x |")


def loop_table(args) -> None:
    device = "cuda" if torch.cuda.is_available() else "cpu"  # the device `pretrain` (Accelerate) picks
    workers = [int(w) for w in args.workers.split(",")]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        prepared = make_dataset(folder, args.recordings, args.timepoints)
        bf16 = args.mixed_precision == "bf16"
        for model in ("micro", args.model):
            steps = args.steps * (10 if model == "micro" else 1)
            alone, _ = model_rate(config_of(model), args.batch_size, steps, args.torch_compile, device, bf16)
            for count in workers:
                data = data_rate(prepared, model, args.batch_size, args.crops, count, steps)
                loop = loop_rate(prepared, folder, model, args.batch_size, args.crops, count, steps, args)
                rows.append((model, count, data, alone, loop))
        for count in workers:  # the loop with a free step: the data path is the bottleneck
            data = data_rate(prepared, "micro", args.batch_size, args.crops, count, args.steps * 10)
            with _free_steps():
                loop = loop_rate(
                    prepared, folder, "micro", args.batch_size, args.crops, count, args.steps * 10, args, "-free"
                )
            rows.append(("zero-cost step", count, data, None, loop))  # no model alone
    print(
        f"\nBatch {args.batch_size}, {args.crops} crops per recording, 424 regions x 200 timepoints, "
        f"{torch.get_num_threads()} torch threads, device {device}, mixed precision {args.mixed_precision}, "
        f"{'compiled' if args.torch_compile else 'eager'}\n"
    )
    print("| model | loader workers | data alone | model alone | `pretrain` loop | loop / data | loop / model |")
    print("|---|---|---|---|---|---|---|")
    for model, count, data, alone, loop in rows:
        alone_column, ratio = ("-", "-") if alone is None else (f"{alone:.1f}", f"{loop / alone:.0%}")
        print(f"| {model} | {count} | {data:.0f} | {alone_column} | {loop:.1f} | {loop / data:.0%} | {ratio} |")
    print("\n(windows/s; micro: " + ", ".join(f"{k}={v}" for k, v in MICRO.items()) + ")\n")


def compile_table(args) -> None:
    print("| model | batch | eager step (s) | compiled step (s) | speed-up | compile + 3 warm-up steps (s) |")
    print("|---|---|---|---|---|---|")
    for model in args.compile_models.split(","):
        eager, _ = model_rate(config_of(model), args.compile_batch_size, args.compile_steps)
        compiled, warm_up = model_rate(config_of(model), args.compile_batch_size, args.compile_steps, compiled=True)
        b = args.compile_batch_size
        print(f"| {model} | {b} | {b / eager:.3f} | {b / compiled:.3f} | {compiled / eager:.2f}x | {warm_up:.0f} |")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="brainlm-tiny")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--steps", type=int, default=30, help="timed steps of the tiny rows (micro: 10x)")
    parser.add_argument("--crops", type=int, default=4)
    parser.add_argument("--workers", default="0,2")
    parser.add_argument("--recordings", type=int, default=128)
    parser.add_argument("--timepoints", type=int, default=490)
    parser.add_argument("--compile-models", default="brainlm-tiny,brainlm-small")
    parser.add_argument("--compile-batch-size", type=int, default=8)
    parser.add_argument("--compile-steps", type=int, default=3)
    parser.add_argument("--sections", default="loop,compile,optimizer")
    parser.add_argument("--mixed-precision", default="no", choices=["no", "bf16"], help="of the loop table")
    parser.add_argument("--torch-compile", action="store_true", help="compile the model in the loop table")
    args = parser.parse_args()
    sections = args.sections.split(",")
    if "loop" in sections:
        loop_table(args)
    if "compile" in sections:
        compile_table(args)
    if "optimizer" in sections:
        optimizer_table(args.compile_models.split(","))


if __name__ == "__main__":
    main()
