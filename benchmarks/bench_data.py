# Copyright 2026 The brainlm_hf authors. Licensed under the Apache License, Version 2.0.
"""Data-path throughput: the shard reader, streamed training windows and NIfTI parcellation; prints markdown tables.

1. Reader: synthetic 424-region recordings (`--timepoints`, default 490) prepared into Parquet shards by
   `prepare_dataset`; every recording read by `read_recordings` with pyarrow's decoder (the reader before) and
   without decoding (`series_column`, the reader now), with one pass over the values.
2. Streaming, in one run side by side: windows/s of `WindowStream` batched by `BrainLMCollator` in a `DataLoader`
   (0 or 2 workers) and of the pretraining loader (`BatchStream`, batches made in the workers), at 1 and 4 crops per
   recording, with the reader and windowing before (pyarrow reader, whole recording normalised then cut) and now
   (z-scoring: with the statistics the shards store, and, as for a shard prepared before they were stored, without).
   Every row is timed over `--epochs` passes over the data after one warm-up pass (workers persistent: their
   start-up is not timed), best of `--repeat` runs (the machine may be shared: the load average is printed).
3. Parcellation: a synthetic 91 x 109 x 91 x T float32 image in the A424 grid (A424 read from --atlas-dir, never
   shipped), `.nii` and `.nii.gz`, timed in a fresh subprocess each, with its peak resident memory.

    python benchmarks/bench_data.py --atlas-dir ../shared/atlases
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def make_dataset(folder: Path, recordings: int, timepoints: str, normalization: str = "zscore") -> Path:
    from brainlm_hf.data import prepare_dataset

    low, _, high = timepoints.partition("-")
    rng = np.random.default_rng(0)
    for i in range(recordings):
        length = int(low) if not high else int(rng.integers(int(low), int(high) + 1))
        np.save(folder / f"sub-{i:04d}_bold.npy", rng.normal(size=(length, 424)).astype(np.float32))
    start = time.perf_counter()
    summary = prepare_dataset(
        folder / "*.npy", folder / "prepared", splits={"train": 1.0}, normalization=normalization
    )
    for path in folder.glob("*.npy"):
        path.unlink()
    print(
        f"prepare_dataset: {recordings} recordings of 424 regions x {timepoints} timepoints, {normalization} -> "
        f"{summary['splits']['train']['shards']} shards in {time.perf_counter() - start:.1f} s\n"
    )
    return folder / "prepared"


def bench_reader(prepared: Path) -> None:
    from brainlm_hf.data.prepared import read_recordings

    shards = sorted(str(p) for p in (prepared / "train").glob("*.parquet"))
    print("| reader | ms per recording | MB/s | x |\n|---|---|---|---|")
    rates = {}
    for name, reader in (("pyarrow decoder (before)", "pyarrow"), ("no decoding (now)", "auto")):
        best = float("inf")
        for _ in range(3):
            start, count, nbytes = time.perf_counter(), 0, 0
            for shard in shards:
                for record in read_recordings(shard, reader=reader):
                    record["series"].sum()  # touch every value once
                    count, nbytes = count + 1, nbytes + record["series"].nbytes
            best = min(best, time.perf_counter() - start)
        rates[name] = nbytes / best / 1e6
        x = rates[name] / next(iter(rates.values()))
        print(f"| {name} | {best / count * 1e3:.3f} | {rates[name]:.0f} | {x:.1f} |")
    print()


class _OldRecordingWindows:
    """The windowing before: the whole recording normalised (`normalize`), then the windows cut and reordered (in
    place of `BrainLMFeatureExtractor.recording_windows`, which the stream calls)."""

    def __init__(self, processor, recording, name="recording", repetition_time=None, statistics=None):
        self.processor, self.series = processor, processor.normalize(recording, name)
        self.num_timepoints = len(self.series)

    def cut(self, starts, out=None):
        length = self.processor.num_timepoints
        windows = np.stack([self.processor.to_model_order(self.series[s : s + length].T) for s in starts])
        if out is None:
            return windows
        out[...] = windows
        return out


def bench_stream(
    prepared: Path, crops: list[int], workers: list[int], batch_size: int, epochs: int, repeat: int
) -> None:
    import torch

    from brainlm_hf import BrainLMFeatureExtractor
    from brainlm_hf.data import BrainLMCollator, WindowStream, streaming
    from brainlm_hf.data.prepared import read_recordings
    from brainlm_hf.data.streaming import BatchStream

    processor = BrainLMFeatureExtractor.from_pretrained(prepared)
    shards = sorted(str(p) for p in (prepared / "train").glob("*.parquet"))
    total = sum(len(read_recordings(s, columns=[])) for s in shards)

    def plain(crops_per_recording, num_workers):
        """Windows/s over `epochs` passes, after a first pass (persistent workers: their start-up is not timed)."""
        stream = WindowStream(shards, processor, crops_per_recording=crops_per_recording)
        loader = torch.utils.data.DataLoader(
            stream,
            batch_size=batch_size,
            num_workers=num_workers,
            collate_fn=BrainLMCollator(processor),
            persistent_workers=num_workers > 0,
        )
        for _ in loader:  # warm-up pass
            pass
        start, count = time.perf_counter(), 0
        for _ in range(epochs):
            count += sum(len(batch["signal_values"]) for batch in loader)
        return count / (time.perf_counter() - start)

    def batched(crops_per_recording, num_workers):
        """The same for the pretraining loader (endless): `epochs` passes' worth of batches after a warm-up."""
        stream = WindowStream(shards, processor, crops_per_recording=crops_per_recording)
        batches = BatchStream([stream], batch_size, parts=max(1, num_workers))
        loader = iter(batches.loader(num_workers, shared_buffers=6))
        wanted = epochs * total * crops_per_recording // batch_size
        for _ in range(total * crops_per_recording // batch_size):  # warm-up: a pass
            batches.advance(next(loader))
        start = time.perf_counter()
        for _ in range(wanted):
            batches.advance(next(loader))
        return wanted * batch_size / (time.perf_counter() - start)

    original = (streaming.read_recordings, BrainLMFeatureExtractor.recording_windows)
    before = (  # pyarrow's decoder, no stored statistics, the whole recording normalised then cut
        lambda path, columns=None, statistics=False: read_recordings(path, columns, reader="pyarrow"),
        lambda self, *args, **kwargs: _OldRecordingWindows(self, *args, **kwargs),
    )
    without_statistics = (  # a shard prepared before the statistics were stored: computed from the recording
        lambda path, columns=None, statistics=False: read_recordings(path, columns),
        BrainLMFeatureExtractor.recording_windows,
    )
    variants = [("before", before), ("now, shards without statistics", without_statistics), ("now", original)]
    rows = []
    for path, make in (("DataLoader(WindowStream)", plain), ("BatchStream loader", batched)):
        for crops_per_recording in crops:
            for num_workers in workers:
                for label, (reader, windows) in variants:
                    if label != "now" and (path != "DataLoader(WindowStream)" or num_workers):
                        continue
                    streaming.read_recordings, BrainLMFeatureExtractor.recording_windows = reader, windows
                    try:
                        rate = max(make(crops_per_recording, num_workers) for _ in range(repeat))
                    finally:
                        streaming.read_recordings, BrainLMFeatureExtractor.recording_windows = original
                    rows.append((path, label, crops_per_recording, num_workers, rate))
    print(f"Streaming {total} recordings, batch {batch_size}, {torch.get_num_threads()} threads:\n")
    print("| loader | reader + windowing | crops per recording | workers | windows/s | vs before | vs 0 workers |")
    print("|---|---|---|---|---|---|---|")
    for path, label, crops_per_recording, num_workers, rate in rows:
        base = next(r[4] for r in rows if r[1] == "before" and r[2] == crops_per_recording)
        alone = next(r[4] for r in rows if r[:3] == (path, label, crops_per_recording) and r[3] == 0)
        print(
            f"| {path} | {label} | {crops_per_recording} | {num_workers} | {rate:.0f} | {rate / base:.2f}x | "
            f"{rate / alone:.2f}x |"
        )


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
    parser.add_argument("--recordings", type=int, default=512)
    parser.add_argument("--timepoints", default="490", help="timepoints per recording, or a range such as 300-600")
    parser.add_argument("--crops", default="1,4")
    parser.add_argument(
        "--normalization", default="zscore", choices=["zscore", "robust"], help="zscore: statistics per recording"
    )
    parser.add_argument("--workers", default="0,2")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--epochs", type=int, default=2, help="timed passes over the data per row, after one more")
    parser.add_argument("--repeat", type=int, default=3, help="rows are the best of this many runs")
    parser.add_argument("--volumes", type=int, default=490)
    parser.add_argument("--only", choices=["stream", "parcellation"], help="run one of the benchmarks")
    parser.add_argument("--parcellate-worker", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.parcellate_worker:
        print(json.dumps(parcellate_worker(*args.parcellate_worker), default=list))
        return
    with tempfile.TemporaryDirectory() as tmp:
        if args.only != "parcellation":
            prepared = make_dataset(Path(tmp), args.recordings, args.timepoints, args.normalization)
            bench_reader(prepared)
            crops, workers = ([int(c) for c in value.split(",")] for value in (args.crops, args.workers))
            load = os.getloadavg()[0]
            bench_stream(prepared, crops, workers, args.batch_size, args.epochs, args.repeat)
            print(
                f"\n(1-minute load average: {load:.2f} before, {os.getloadavg()[0]:.2f} after; {os.cpu_count()} CPUs)"
            )
        if args.only != "stream":
            bench_parcellation(Path(tmp), args.atlas_dir, args.volumes)


if __name__ == "__main__":
    main()
