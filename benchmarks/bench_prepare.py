# Copyright 2026 The brainlm_hf authors. Licensed under the Apache License, Version 2.0.
"""`prepare_dataset` with 1 and more reading processes (`num_proc`) on the same NIfTI cohort; prints a table.

    python benchmarks/bench_prepare.py --recordings 8 --volumes 200 --num-proc 1 2 --repeats 5

The cohort is `--recordings` copies of one synthetic `.nii.gz` in the A424 grid (`bench_parcellation.write_image`;
the tests' stand-in atlas when --atlas-dir lacks the real one), each under its own subject id. The rows run in turns
(`--repeats`: 1, 2, 1, 2, ...), each run in a fresh process, and the table gives medians, the speed-up being the
median of each turn's ratio, so that a drift of the shared machine's speed hits every row alike. A run gives the
wall time of the whole `prepare_dataset` call (reading, parcellating, fitting, writing; the modules it imports are
imported before the clock starts, as in any process that prepares more than once), the peak resident memory of the
main process (VmHWM) and the largest of its reading processes (`ru_maxrss` of its children: a child started by fork
counts the pages it shares with its parent, so this includes the parent's memory at the time of the fork), and the
digest of its shards, compared byte for byte with the first row's.
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
from statistics import median

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
    parser.add_argument("--repeats", type=int, default=3, help="turns of all rows (medians are reported)")
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
        print(f"{args.recordings} x {image.name} ({args.volumes} volumes, {size:.0f} MiB)\n")
        print(
            f"{args.repeats} turns of the rows in order; medians (min-max); speed-up: the median of each turn's ratio"
        )
        print(
            "| num_proc | seconds | recordings/s | speed-up | main peak GiB | reading process peak GiB | same bytes |"
        )
        print("|---|---|---|---|---|---|---|")
        rows = {num_proc: [] for num_proc in args.num_proc}
        for repeat in range(args.repeats):  # the rows in turn, so that a drift of the machine's speed hits all alike
            for num_proc in args.num_proc:
                command = [sys.executable, __file__, "--atlas-dir", args.atlas_dir]
                command += ["--row", str(cohort), str(num_proc), str(work / f"out-{num_proc}-{repeat}")]
                rows[num_proc].append(
                    json.loads(subprocess.run(command, check=True, stdout=subprocess.PIPE, text=True).stdout)
                )
                shutil.rmtree(work / f"out-{num_proc}-{repeat}")
        first = rows[args.num_proc[0]]
        for num_proc, runs in rows.items():
            seconds = [run["seconds"] for run in runs]
            ratios = [a["seconds"] / b["seconds"] for a, b in zip(first, runs, strict=True)]  # one ratio per turn
            worker = max(run["worker_peak_gib"] or 0 for run in runs)
            print(
                f"| {num_proc} | {median(seconds):.2f} ({min(seconds):.2f}-{max(seconds):.2f}) | "
                f"{args.recordings / median(seconds):.2f} | "
                f"{median(ratios):.2f}x ({min(ratios):.2f}-{max(ratios):.2f}) | "
                f"{max(run['peak_gib'] for run in runs):.2f} | {f'{worker:.2f}' if worker else '-'} | "
                f"{all(run['digest'] == first[0]['digest'] for run in runs)} |"
            )


if __name__ == "__main__":
    main()
