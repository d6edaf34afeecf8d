# Copyright 2026 The brainlm_hf authors. Licensed under the Apache License, Version 2.0.
"""A small synthetic A424 dataset in Brainmarks' on-disk format, to try the Brainmarks plug-in without real data.

Brainmarks' curation scripts write each dataset with `datasets.DatasetDict.save_to_disk` as
`<root>/<name>.<space>.arrow/{train,validation,test}/*.arrow`. Each row: `bold` `(T, 424)` float16, z-scored per region
over time; its `mean` and `std` `(1, 424)` float32; `tr` float32 (s); `n_frames` int32; string metadata and targets.
Like ADHD-200 there (resampled to TR 2 s, first 150 frames), every recording here has 150 frames at TR 2 s. Class
`gender == "F"` adds one slow shared fluctuation to regions 0-99, which the z-scoring keeps as a correlation.

Brainmarks' ADHD-200 loader reads `$ADHD200_ROOT/adhd200.a424.arrow`, so a probe runs on this data with

    python examples/brainmarks_synthetic_dataset.py --output-dir /tmp/bm-data
    ADHD200_ROOT=/tmp/bm-data BRAINLM_HF_CHECKPOINT=<checkpoint> \\
        python -m brainmarks.main_logistic brainlm_hf cls adhd200_sex --overrides device=cpu num_workers=1 n_trials=5
"""

import argparse
from pathlib import Path

import datasets
import numpy as np

NUM_REGIONS = 424
NUM_FRAMES = 150
REPETITION_TIME = 2.0
SPLIT_SIZES = {"train": 24, "validation": 8, "test": 16}


def synthetic_recording(rng: np.random.Generator, positive: bool) -> np.ndarray:
    """Raw-scale `(150, 424)` signal: per-region baseline and noise, plus a shared slow wave in class F."""
    time = np.arange(NUM_FRAMES) * REPETITION_TIME
    series = 1000 + 50 * rng.standard_normal((NUM_FRAMES, NUM_REGIONS))
    if positive:
        wave = np.sin(2 * np.pi * 0.03 * time + rng.uniform(0, 2 * np.pi))
        series[:, :100] += 60 * wave[:, None]
    return series + rng.uniform(-200, 200, NUM_REGIONS)


def rows(split: str, size: int, seed: int):
    """The `size` rows of one split, half of each class, in Brainmarks' format (z-scored `bold`, `mean`, `std`)."""
    rng = np.random.default_rng(seed)
    for index in range(size):
        positive = index % 2 == 1
        series = synthetic_recording(rng, positive)
        mean, std = series.mean(0, keepdims=True), series.std(0, keepdims=True)
        yield {
            "sub": f"{split}-{index:03d}",
            "gender": "F" if positive else "M",
            "n_frames": NUM_FRAMES,
            "tr": REPETITION_TIME,
            "bold": ((series - mean) / std).astype(np.float16),
            "mean": mean.astype(np.float32),
            "std": std.astype(np.float32),
        }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output-dir", type=Path, required=True, help="the dataset root ($ADHD200_ROOT)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--sizes", type=int, nargs=3, default=list(SPLIT_SIZES.values()), metavar=("TRAIN", "VALIDATION", "TEST")
    )
    args = parser.parse_args(argv)
    features = datasets.Features(
        {
            "sub": datasets.Value("string"),
            "gender": datasets.Value("string"),
            "n_frames": datasets.Value("int32"),
            "tr": datasets.Value("float32"),
            "bold": datasets.Array2D(shape=(None, NUM_REGIONS), dtype="float16"),
            "mean": datasets.Array2D(shape=(1, NUM_REGIONS), dtype="float32"),
            "std": datasets.Array2D(shape=(1, NUM_REGIONS), dtype="float32"),
        }
    )
    splits = {
        split: datasets.Dataset.from_list(list(rows(split, size, args.seed + offset)), features=features)
        for offset, (split, size) in enumerate(zip(SPLIT_SIZES, args.sizes, strict=True))
    }
    folder = args.output_dir / "adhd200.a424.arrow"
    datasets.DatasetDict(splits).save_to_disk(str(folder))
    print(f"wrote {folder}: " + ", ".join(f"{split} {len(data)}" for split, data in splits.items()))


if __name__ == "__main__":
    main()
