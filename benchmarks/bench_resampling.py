# Copyright 2026 The brainlm_hf authors. Licensed under the Apache License, Version 2.0.
"""What the processor's linear resampling to the model's TR keeps, and what it costs the data path.

    python benchmarks/bench_resampling.py             # amplitude kept (no data needed)
    python benchmarks/bench_resampling.py --stream    # also: WindowStream windows/s with and without resampling

Amplitude: the RMS amplitude of a unit sine resampled to TR 0.735 s (the released weights') relative to the exact
sine's, for source TRs of clinical and research scans and frequencies within the fMRI band (2,000 frames per case).

Stream: one process, one crop per recording, 128 z-scored synthetic recordings of 424 regions x 490 frames at TR
0.72 s in 4 shards, best of 5 passes taken in turns; the same shards read by processors of other TRs.
"""

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from brainlm_hf import BrainLMFeatureExtractor
from brainlm_hf.data import PreparedDataset, WindowStream, prepare_dataset

TARGET_TR = 0.735
SOURCE_TRS = (0.72 * 3, 2.0, 1.5, 1.0, 0.3)
FREQUENCIES = (0.01, 0.03, 0.05, 0.1)
STREAM_CASES = {
    "processor TR unknown (no TR column read)": None,
    "processor TR 0.72 s = the recordings' (TR column read)": 0.72,
    "processor TR 0.735 s (within 0.1 s: not resampled)": 0.735,
    "processor TR 0.5 s (resampled: 490 -> 705 frames)": 0.5,
}


def kept_amplitude(source_tr: float, frequency: float, frames: int = 2000) -> float:
    processor = BrainLMFeatureExtractor(normalization="none", repetition_time=TARGET_TR)
    time_s = np.arange(frames)[:, None] * source_tr
    resampled = processor.resample(np.sin(2 * np.pi * frequency * time_s).astype(np.float32), source_tr)
    return float(np.sqrt(np.mean(resampled.astype(np.float64) ** 2) / 0.5))


def amplitude_table() -> None:
    print(f"RMS amplitude kept by linear resampling to TR {TARGET_TR} s (1 = all)")
    print("| source TR (s) | " + " | ".join(f"{f} Hz" for f in FREQUENCIES) + " |")
    print("| --- |" + " --- |" * len(FREQUENCIES))
    for tr in SOURCE_TRS:
        print(f"| {tr:g} | " + " | ".join(f"{kept_amplitude(tr, f):.3f}" for f in FREQUENCIES) + " |")


def stream_table(passes: int = 5) -> None:
    root = Path(tempfile.mkdtemp())
    try:
        rng = np.random.default_rng(0)
        for index in range(128):
            np.save(root / f"sub-{index:03d}_bold.npy", rng.normal(size=(490, 424)).astype(np.float32))
        prepare_dataset(
            root / "*.npy", root / "prepared", repetition_time=0.72, normalization="zscore", splits={"train": 1.0},
            shard_multiple=4, coordinates=rng.normal(size=(424, 3)),
        )  # fmt: skip
        dataset = PreparedDataset(root / "prepared")
        print("\nWindowStream, 1 process, 1 crop, recordings at TR 0.72 s")
        print("| processor | windows/s | vs TR unknown |")
        print("| --- | --- | --- |")
        processors = {
            name: BrainLMFeatureExtractor.from_dict({**dataset.processor.to_dict(), "repetition_time": tr})
            for name, tr in STREAM_CASES.items()
        }
        best = dict.fromkeys(STREAM_CASES, 0.0)
        for _ in range(passes):  # the cases take turns, so that none profits from running first
            for name, processor in processors.items():
                stream = WindowStream(dataset.shards("train"), processor, crops_per_recording=1)
                start = time.perf_counter()
                count = sum(1 for _ in stream)
                best[name] = max(best[name], count / (time.perf_counter() - start))
        first = best[next(iter(STREAM_CASES))]
        for name, rate in best.items():
            print(f"| {name} | {rate:.0f} | {rate / first:.2f}x |")
    finally:
        shutil.rmtree(root)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stream", action="store_true", help="also time WindowStream with and without resampling")
    args = parser.parse_args()
    amplitude_table()
    if args.stream:
        stream_table()


if __name__ == "__main__":
    main()
