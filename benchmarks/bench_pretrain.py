# Copyright 2026 The brainlm_hf authors. Licensed under the Apache License, Version 2.0.
"""Is the data path the bottleneck of pretraining? Windows/s of the data alone, the model alone, and the whole loop.

On synthetic 424-region recordings prepared into Parquet shards: (1) `WindowStream` + collator alone, (2) the model's
training step alone (forward + backward + AdamW on a fixed batch), (3) `pretrain` end to end (its logged windows/s,
after a warm-up). Prints a markdown table; the ratio (3)/(2) shows how much of the model's speed the loop keeps.

    python benchmarks/bench_pretrain.py --model brainlm-tiny --batch-size 16 --steps 40
"""

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from brainlm_hf import BrainLMConfig, BrainLMFeatureExtractor, BrainLMForMaskedSignalModeling
from brainlm_hf.data import BrainLMCollator, WindowStream, prepare_dataset
from brainlm_hf.training.pretraining import PretrainingArguments, pretrain


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="brainlm-tiny")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--recordings", type=int, default=64)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        rng = np.random.default_rng(0)
        for i in range(args.recordings):
            series = rng.normal(size=(rng.integers(300, 601), 424)).astype(np.float32)
            np.save(folder / f"sub-{i:04d}_bold.npy", series)
        prepare_dataset(
            folder / "*.npy",
            folder / "prepared",
            normalization="zscore",
            shard_multiple=1,
            splits={"train": 0.9, "validation": 0.1},
            coordinates=rng.normal(size=(424, 3)) * 50,
        )
        processor = BrainLMFeatureExtractor.from_pretrained(folder / "prepared")

        shards = sorted(str(p) for p in (folder / "prepared" / "train").glob("*.parquet"))
        loader = torch.utils.data.DataLoader(
            WindowStream(shards, processor, crops_per_recording=4),
            batch_size=args.batch_size,
            collate_fn=BrainLMCollator(processor),
        )
        start, windows = time.perf_counter(), 0
        for batch in loader:
            windows += len(batch["signal_values"])
        data_rate = windows / (time.perf_counter() - start)

        model = BrainLMForMaskedSignalModeling(BrainLMConfig.from_preset(args.model, validate_inputs=False))
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
        batch = next(iter(loader))
        for step in range(args.steps + 3):
            if step == 3:
                start = time.perf_counter()
            model(**batch).loss.backward()
            optimizer.step()
            optimizer.zero_grad()
        model_rate = args.steps * args.batch_size / (time.perf_counter() - start)

        pretrain(
            PretrainingArguments(
                dataset=str(folder / "prepared"),
                output_dir=str(folder / "run"),
                model=args.model,
                per_device_train_batch_size=args.batch_size,
                max_steps=args.steps + 10,
                logging_steps=10,
                save_steps=10**9,
                eval_steps=0,
                eval_windows=8,
            )
        )
        log = [json.loads(line) for line in (folder / "run" / "log.jsonl").read_text().splitlines()]
        first, last = log[0], log[-1]  # past the first 10 (warm-up) steps
        loop_rate = (last["windows"] - first["windows"]) / (last["elapsed_s"] - first["elapsed_s"])
    print(
        f"\n{args.model}, batch {args.batch_size}, 424 regions x 200 timepoints, {torch.get_num_threads()} threads\n"
    )
    print("| path | windows/s |\n|---|---|")
    print(f"| data only (stream + collate, 4 crops per recording) | {data_rate:.0f} |")
    print(f"| model only (forward + backward + AdamW) | {model_rate:.1f} |")
    print(f"| `pretrain` loop end to end | {loop_rate:.1f} |")
    print(
        f"\nThe loop keeps {loop_rate / model_rate:.0%} of the model's own speed; the data path alone is "
        f"{data_rate / model_rate:.0f}x faster than the model."
    )


if __name__ == "__main__":
    main()
