# Copyright 2026 The brainlm_hf authors. Licensed under the Apache License, Version 2.0.
"""`prepare_dataset` with 1 and more reading processes (`num_proc`) on the same NIfTI cohort; prints a table.

    python benchmarks/bench_prepare.py --recordings 8 --volumes 60 --num-proc 1 2

The cohort is `--recordings` copies of one synthetic `.nii.gz` in the A424 grid (`bench_parcellation.write_image`;
the tests' stand-in atlas when --atlas-dir lacks the real one), each under its own subject id. Every row runs in a
fresh process: the wall time of the whole `prepare_dataset` call (reading, parcellating, fitting, writing; the
modules it imports are imported before the clock starts, as in any process that prepares more than once), its rate,
the speed-up over the first row, the peak resident memory of the main process (VmHWM) and the largest of its reading
processes (`ru_maxrss` of its children: a child started by fork counts the pages it shares with its parent, so this
includes the parent's memory at the time of the fork). Every row's shards are compared byte for byte with the
first's.
"""

import argparse
import hashlib
import json
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_parcellation import load_atlas, peak_rss_gib, write_image  # noqa: E402


def run_prepare(folder: str, atlas_dir: str, num_proc: int, output: str) -> dict:
    """One row, in this (fresh) process."""
    import datasets  # noqa: F401  (imported by the writing step; a process pays it once, not per call)

    from brainlm_hf.data import prepare_dataset

    atlas = load_atlas(atlas_dir)
    start = time.perf_counter()
    prepare_dataset(
        f"{folder}/*.nii.gz",
        output,
        atlas=atlas,
        num_timepoints=20,
        splits={"train": 1.0},
        short_recordings="pad",
        num_proc=num_proc,
        quiet=True,
    )
    seconds = time.perf_counter() - start
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 2**20 if num_proc > 1 else None
    digest = hashlib.sha256(b"".join(p.read_bytes() for p in sorted(Path(output).rglob("*.parquet")))).hexdigest()
    return {"seconds": seconds, "peak_gib": peak_rss_gib(), "worker_peak_gib": children, "digest": digest}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--atlas-dir", default=str(Path(__file__).resolve().parents[2] / "shared" / "atlases"))
    parser.add_argument("--recordings", type=int, default=8)
    parser.add_argument("--volumes", type=int, default=60)
    parser.add_argument("--num-proc", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--row", nargs=3, help=argparse.SUPPRESS)  # internal: folder num_proc output
    args = parser.parse_args()
    if args.row:
        folder, num_proc, output = args.row
        print(json.dumps(run_prepare(folder, args.atlas_dir, int(num_proc), output)))
        return
    with tempfile.TemporaryDirectory() as work:
        work = Path(work)
        image = write_image(work, load_atlas(args.atlas_dir), args.volumes, "float32", "brain")[1]
        cohort = work / "cohort"
        cohort.mkdir()
        for index in range(args.recordings):
            shutil.copy(image, cohort / f"sub-{index:03d}_bold.nii.gz")
        size = image.stat().st_size / 2**20
        print(f"{args.recordings} x {image.name} ({args.volumes} volumes, {size:.0f} MiB), one run per row:\n")
        print(
            "| num_proc | seconds | recordings/s | speed-up | main peak GiB | reading process peak GiB | same bytes |"
        )
        print("|---|---|---|---|---|---|---|")
        first = None
        for num_proc in args.num_proc:
            command = [sys.executable, __file__, "--atlas-dir", args.atlas_dir]
            command += ["--row", str(cohort), str(num_proc), str(work / f"out-{num_proc}")]
            row = json.loads(subprocess.run(command, check=True, stdout=subprocess.PIPE, text=True).stdout)
            first = first or row
            worker = f"{row['worker_peak_gib']:.2f}" if row["worker_peak_gib"] is not None else "-"
            print(
                f"| {num_proc} | {row['seconds']:.1f} | {args.recordings / row['seconds']:.2f} | "
                f"{first['seconds'] / row['seconds']:.2f}x | {row['peak_gib']:.2f} | {worker} | "
                f"{row['digest'] == first['digest']} |"
            )


if __name__ == "__main__":
    main()
