# Copyright 2026 The brainlm_hf authors. Licensed under the Apache License, Version 2.0.
"""How much of a sine's amplitude the processor's linear resampling keeps, per source TR and frequency.

    python benchmarks/bench_resampling.py

Prints the RMS amplitude of a unit sine resampled to TR 0.735 s (the released weights') relative to the exact sine's,
for source TRs of clinical and research scans and frequencies within the fMRI band. 2,000 frames per case.
"""

import numpy as np

from brainlm_hf import BrainLMFeatureExtractor

TARGET_TR = 0.735
SOURCE_TRS = (0.72 * 3, 2.0, 1.5, 1.0, 0.3)
FREQUENCIES = (0.01, 0.03, 0.05, 0.1)


def kept_amplitude(source_tr: float, frequency: float, frames: int = 2000) -> float:
    processor = BrainLMFeatureExtractor(normalization="none", repetition_time=TARGET_TR)
    time = np.arange(frames)[:, None] * source_tr
    resampled = processor.resample(np.sin(2 * np.pi * frequency * time).astype(np.float32), source_tr)
    return float(np.sqrt(np.mean(resampled.astype(np.float64) ** 2) / 0.5))


def main() -> None:
    print(f"RMS amplitude kept by linear resampling to TR {TARGET_TR} s (1 = all)")
    print("| source TR (s) | " + " | ".join(f"{f} Hz" for f in FREQUENCIES) + " |")
    print("| --- |" + " --- |" * len(FREQUENCIES))
    for tr in SOURCE_TRS:
        print(f"| {tr:g} | " + " | ".join(f"{kept_amplitude(tr, f):.3f}" for f in FREQUENCIES) + " |")


if __name__ == "__main__":
    main()
