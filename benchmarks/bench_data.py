# Copyright 2026 The brainlm_hf authors. Licensed under the Apache License, Version 2.0.
"""Data-path throughput: streamed training windows and NIfTI parcellation; prints markdown tables.

1. Streaming: synthetic 424-region recordings (T uniform in [300, 600]) prepared into Parquet shards by
   `prepare_dataset`, then `WindowStream` + `BrainLMCollator` in a `DataLoader` (one process, no workers) delivering
   batches of 424 x 200 float32 windows, for several crops per recording.
2. Parcellation: a synthetic 91 x 109 x 91 x T float32 image in the A424 grid (A424 read from --atlas-dir, never
   shipped), `.nii` and `.nii.gz`, timed in a fresh subprocess each, with its peak resident memory.

    python benchmarks/bench_data.py --atlas-dir ../shared/atlases
"""

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def bench_stream(folder: Path, recordings: int, crops: list[int], batch_size: int) -> None:
    import torch

    from brainlm_hf import BrainLMFeatureExtractor
    from brainlm_hf.data import BrainLMCollator, WindowStream, prepare_dataset

    rng = np.random.default_rng(0)
    for i in range(recordings):
        np.save(folder / f"sub-{i:04d}_bold.npy", rng.normal(size=(rng.integers(300, 601), 424)).astype(np.float32))
    start = time.perf_counter()
    summary = prepare_dataset(folder / "*.npy", folder / "prepared", splits={"train": 1.0}, normalization="zscore")
    print(
        f"prepare_dataset: {recordings} recordings -> {summary['splits']['train']['shards']} shards in "
        f"{time.perf_counter() - start:.1f} s\n"
    )
    processor = BrainLMFeatureExtractor.from_pretrained(folder / "prepared")
    shards = sorted(str(p) for p in (folder / "prepared" / "train").glob("*.parquet"))
    print("| crops per recording | windows | seconds | windows/s |\n|---|---|---|---|")
    for crops_per_recording in crops:
        stream = WindowStream(shards, processor, crops_per_recording=crops_per_recording)
        loader = torch.utils.data.DataLoader(stream, batch_size=batch_size, collate_fn=BrainLMCollator(processor))
        start, windows = time.perf_counter(), 0
        for batch in loader:
            windows += batch["signal_values"].shape[0]
        seconds = time.perf_counter() - start
        print(f"| {crops_per_recording} | {windows} | {seconds:.2f} | {windows / seconds:.0f} |")


def parcellate_worker(image_path: str, atlas_dir: str) -> dict:
    from brainlm_hf.data.atlas import load_a424
    from brainlm_hf.data.parcellation import parcellate

    atlas = load_a424(atlas_dir)
    before = _memory_kib("VmRSS")
    start = time.perf_counter()
    series = parcellate(image_path, atlas)
    seconds = time.perf_counter() - start
    peak = _memory_kib("VmHWM")  # this process's own high-water mark (ru_maxrss would include the parent's)
    return {"seconds": seconds, "peak_gb": peak / 2**20, "step_gb": (peak - before) / 2**20, "shape": series.shape}


def _memory_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status (Linux only)")


def bench_parcellation(folder: Path, atlas_dir: str, num_volumes: int) -> None:
    import nibabel as nib

    atlas = nib.load(Path(atlas_dir) / "A424+2mm.nii.gz")
    shape = atlas.shape + (num_volumes,)
    data = np.random.default_rng(0).standard_normal(size=shape, dtype=np.float32)
    image = nib.Nifti1Image(data, atlas.affine)
    image.header.set_sform(atlas.affine, code=4)
    print(f"\nParcellation of a {' x '.join(map(str, shape))} float32 image into A424 (fresh process each):\n")
    print("| file | size (GB) | seconds | peak RSS of the process (GB) | added by parcellate (GB) |")
    print("|---|---|---|---|---|")
    for suffix in (".nii", ".nii.gz"):
        path = folder / f"bold{suffix}"
        nib.save(image, path)
        proc = subprocess.run(
            [sys.executable, __file__, "--parcellate-worker", str(path), atlas_dir],
            capture_output=True,
            text=True,
            check=True,
        )
        r = json.loads(proc.stdout.strip().splitlines()[-1])
        size = path.stat().st_size / 2**30
        print(f"| {suffix} | {size:.2f} | {r['seconds']:.2f} | {r['peak_gb']:.2f} | {r['step_gb']:.2f} |", flush=True)
        path.unlink()
    del image, data


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--atlas-dir", default=str(Path(__file__).resolve().parents[2] / "shared" / "atlases"))
    parser.add_argument("--recordings", type=int, default=256)
    parser.add_argument("--crops", default="1,4,8")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--volumes", type=int, default=490)
    parser.add_argument("--only", choices=["stream", "parcellation"], help="run one of the two benchmarks")
    parser.add_argument("--parcellate-worker", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.parcellate_worker:
        print(json.dumps(parcellate_worker(*args.parcellate_worker), default=list))
        return
    with tempfile.TemporaryDirectory() as tmp:
        if args.only != "parcellation":
            bench_stream(Path(tmp), args.recordings, [int(c) for c in args.crops.split(",")], args.batch_size)
        if args.only != "stream":
            bench_parcellation(Path(tmp), args.atlas_dir, args.volumes)


if __name__ == "__main__":
    main()
