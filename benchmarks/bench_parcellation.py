# Copyright 2026 The brainlm_hf authors. Licensed under the Apache License, Version 2.0.
"""Parcellating one 4-D image into A424, side by side: brainlm_hf's `parcellate`, the original toolkit's per-label
loop and nilearn's `NiftiLabelsMasker(strategy="mean")`, each on the same `.nii` and `.nii.gz`; prints a table.

    python benchmarks/bench_parcellation.py --volumes 60 --rounds 1

The image is synthetic, in the A424 grid (91 x 109 x 91, read from --atlas-dir; the tests' stand-in when that is
absent): every atlas voxel holds a baseline plus noise, every other voxel 0, as in a masked image in MNI space
(`--fill all`: noise in every voxel, which gzip can hardly compress: the case where decompression weighs most),
stored as float32 or as int16 with scl_slope/scl_inter (--dtype). Every row runs in a fresh process, which reports
its time and its peak resident memory (VmHWM: the process's own high-water mark; `ru_maxrss` of a child started by
fork can carry its parent's), the best of --rounds; "before work" is the process after imports and the atlas.
The original loop is written here from its description: the whole image by nibabel's `get_fdata()`, then per
label `np.nanmean(data[labels == label], axis=0)`. "gzip fallback" is `parcellate` without the optional ISA-L
decoder. Every row's series is compared with `parcellate`'s on the `.nii`.

`--decoders` times instead the decompression alone of the same `.nii.gz`, front to back into one reused 4 MiB
buffer, by each candidate that is installed: the standard library's gzip, python-isal (`isal.igzip`, and
`isal.igzip_threaded` with one thread), `parcellate`'s own reader (ISA-L's C reader, inflating into the buffer in
place), python-zlib-ng (`zlib_ng.gzip_ng`, `zlib_ng.gzip_ng_threaded`) and `indexed_gzip` (nibabel's choice when
installed); wall and CPU seconds of this process, medians of --rounds taken in turns. Then `parcellate` of the same
file with each of ISA-L's readers in its place: its own, `isal.igzip.open` and `isal.igzip_threaded.open`.

`--chunk-sizes 64 8 ...` times instead `parcellate` of the same `.nii.gz` with each `chunk_size`, in turns for
--rounds, in this process (medians of wall and CPU seconds), and checks that every chunk size gives the same bits.
"""

import argparse
import functools
import importlib
import json
import os
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path
from statistics import median

import numpy as np

METHODS = ["brainlm_hf", "brainlm_hf (gzip fallback)", "original loop", "nilearn"]
# name: (module, how it opens a file for reading)
DECODERS = {
    "gzip": ("gzip", lambda module, path: module.open(path, "rb")),
    "isal.igzip": ("isal.igzip", lambda module, path: module.open(path, "rb")),
    "isal.igzip_threaded": ("isal.igzip_threaded", lambda module, path: module.open(path, "rb", threads=1)),
    "parcellate: isal_zlib._GzipReader": ("brainlm_hf.data.parcellation", lambda mod, path: mod._open_gzip(path)),
    "zlib_ng.gzip_ng": ("zlib_ng.gzip_ng", lambda module, path: module.open(path, "rb")),
    "zlib_ng.gzip_ng_threaded": ("zlib_ng.gzip_ng_threaded", lambda module, path: module.open(path, "rb", threads=1)),
    "indexed_gzip": ("indexed_gzip", lambda module, path: module.IndexedGzipFile(path)),
}


def peak_rss_gib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 2**20
    raise RuntimeError("VmHWM not in /proc/self/status (Linux only)")


def load_atlas(atlas_dir: str):
    from brainlm_hf.data.atlas import load_a424

    if (Path(atlas_dir) / "A424+2mm.nii.gz").is_file():
        return load_a424(atlas_dir)
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from tests.a424_stand_in import write_a424_stand_in

    return load_a424(write_a424_stand_in(Path(tempfile.mkdtemp()) / "a424"))


def run_method(method: str, image_path: str, atlas_dir: str, output: str) -> dict:
    """One row, in this (fresh) process: the series goes to `output`, time and memory are returned."""
    import nibabel as nib

    from brainlm_hf.data import parcellation

    atlas = load_atlas(atlas_dir)
    before = peak_rss_gib()
    start = time.perf_counter()
    if method.startswith("brainlm_hf"):
        if "fallback" in method:
            parcellation.isal_zlib = None
        series = parcellation.parcellate(image_path, atlas)
    elif method == "original loop":
        data = nib.load(image_path).get_fdata()
        labels = np.asarray(atlas.image.dataobj)
        series = np.stack([np.nanmean(data[labels == label], axis=0) for label in atlas.labels], axis=1)
    else:
        from nilearn.maskers import NiftiLabelsMasker

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # about its own defaults
            series = NiftiLabelsMasker(atlas.image, strategy="mean").fit_transform(image_path)
    seconds = time.perf_counter() - start
    np.save(output, series)
    return {"seconds": seconds, "peak_gib": peak_rss_gib(), "before_gib": before}


def in_turns(cases: dict, rounds: int) -> tuple[dict, dict]:
    """Run every case (a callable) once per round, the cases in turn, so that a drift of the shared machine's speed
    hits them alike. Returns each case's `[(seconds, CPU seconds), ...]`, one per round, and its last result."""
    times, results = {name: [] for name in cases}, {}
    for _ in range(rounds):
        for name, case in cases.items():
            start, cpu = time.perf_counter(), time.process_time()
            results[name] = case()
            times[name].append((time.perf_counter() - start, time.process_time() - cpu))
    return times, results


def medians(runs: list[tuple[float, float]]) -> tuple[float, float]:
    """The median seconds and median CPU seconds of `in_turns`' runs of one case."""
    return median(run[0] for run in runs), median(run[1] for run in runs)


def decompress(open_stream, path: Path, buffer: bytearray) -> int:
    """Decompress `path`, opened by `open_stream`, front to back into `buffer`; returns the decompressed size."""
    size = 0
    with open_stream(str(path)) as stream:
        while count := stream.readinto(buffer):
            size += count
    return size


def bench_decoders(path: Path, rounds: int) -> None:
    print(f"\nDecompressing {path.name} ({path.stat().st_size / 2**20:.0f} MiB), medians of {rounds} in turns:\n")
    print("| decoder | seconds | CPU seconds | decompressed MiB/s |")
    print("|---|---|---|---|")
    buffer, cases = bytearray(4 * 2**20), {}
    for name, (module_name, open_file) in DECODERS.items():
        try:
            opener = functools.partial(open_file, importlib.import_module(module_name))
        except ImportError:
            print(f"| {name} | not installed | | |")
            continue
        cases[name] = functools.partial(decompress, opener, path, buffer)
    times, sizes = in_turns(cases, rounds)
    for name, runs in times.items():
        seconds, cpu = medians(runs)
        print(f"| {name} | {seconds:.2f} | {cpu:.2f} | {sizes[name] / 2**20 / seconds:.0f} |")


def bench_readers(path: Path, atlas, rounds: int) -> None:
    """`parcellate` of `path` with each of ISA-L's readers in its place, in turns: wall and CPU seconds."""
    from brainlm_hf.data import parcellation

    def parcellate_with(reader):
        def case():
            parcellation._open_gzip = reader
            return parcellation.parcellate(path, atlas)

        return case

    def decoder(name):
        module_name, open_file = DECODERS[name]
        return functools.partial(open_file, importlib.import_module(module_name))

    used = parcellation._open_gzip
    cases = {
        "isal_zlib._GzipReader, inflating into the volume buffer (used)": parcellate_with(used),
        "isal.igzip.open: inflating into a new bytes object, then copied": parcellate_with(decoder("isal.igzip")),
        "isal.igzip_threaded.open(threads=1): the same, in a read-ahead thread": (
            parcellate_with(decoder("isal.igzip_threaded"))
        ),
    }
    try:
        times = in_turns(cases, rounds)[0]
    finally:
        parcellation._open_gzip = used
    print(f"\nparcellate({path.name}) with each ISA-L reader, medians of {rounds} in turns, in one process:\n")
    print("| reader | seconds | CPU seconds |")
    print("|---|---|---|")
    for name, runs in times.items():
        seconds, cpu = medians(runs)
        print(f"| {name} | {seconds:.3f} | {cpu:.3f} |")


def bench_chunk_sizes(path: Path, atlas, chunk_sizes: list[int], rounds: int) -> None:
    from brainlm_hf.data.parcellation import parcellate

    cases = {size: functools.partial(parcellate, path, atlas, chunk_size=size) for size in chunk_sizes}
    times, series = in_turns(cases, rounds)
    first = chunk_sizes[0]
    print(f"\nparcellate({path.name}, chunk_size=...), medians of {rounds} in turns, in one process:\n")
    print(f"| chunk_size | seconds | CPU seconds | vs chunk_size={first} (CPU) | same bits |")
    print("|---|---|---|---|---|")
    for size, runs in times.items():
        seconds, cpu = medians(runs)
        ratio = median(a[1] / b[1] for a, b in zip(times[first], runs, strict=True))
        same = np.array_equal(series[size].view(np.uint32), series[first].view(np.uint32))
        print(f"| {size} | {seconds:.3f} | {cpu:.3f} | {ratio:.2f}x | {same} |")


def write_image(folder: Path, atlas, num_volumes: int, dtype: str, fill: str) -> list[Path]:
    import nibabel as nib

    inside = np.asarray(atlas.image.dataobj) > 0 if fill == "brain" else np.ones(atlas.image.shape, dtype=bool)
    rng = np.random.default_rng(0)
    data = np.zeros(inside.shape + (num_volumes,), dtype=np.float32)
    data[inside] = rng.uniform(5000, 15000, size=(inside.sum(), 1)) + rng.normal(
        scale=100, size=(inside.sum(), num_volumes)
    )
    image = nib.Nifti1Image(data, atlas.image.affine)
    if dtype == "int16":
        image = nib.Nifti1Image(np.round((data - 0.5) / 0.5).astype(np.int16), atlas.image.affine)
        image.header.set_slope_inter(0.5, 0.5)
    image.header.set_sform(atlas.image.affine, code=4)
    paths = [folder / "bold.nii", folder / "bold.nii.gz"]
    for path in paths:
        nib.save(image, path)
    return paths


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--atlas-dir", default=str(Path(__file__).resolve().parents[2] / "shared" / "atlases"))
    parser.add_argument("--volumes", type=int, default=60)
    parser.add_argument("--rounds", type=int, default=1, help="runs per row; the fastest is shown")
    parser.add_argument("--dtype", choices=["float32", "int16"], default="float32")
    parser.add_argument("--fill", choices=["brain", "all"], default="brain", help="voxels that hold a signal")
    parser.add_argument("--decoders", action="store_true", help="time the gzip decoders alone instead")
    parser.add_argument("--chunk-sizes", type=int, nargs="+", help="time parcellate's chunk sizes instead")
    parser.add_argument("--run-method", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.run_method:
        print(json.dumps(run_method(*args.run_method)))
        return
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        atlas = load_atlas(args.atlas_dir)
        paths = write_image(folder, atlas, args.volumes, args.dtype, args.fill)
        if args.decoders:
            bench_decoders(paths[1], args.rounds)
            bench_readers(paths[1], atlas, args.rounds)
            return
        if args.chunk_sizes:
            bench_chunk_sizes(paths[1], atlas, args.chunk_sizes, args.rounds)
            return
        rows = []
        for path in paths:
            for method in METHODS:
                if "fallback" in method and path.suffix != ".gz":
                    continue
                output = folder / f"{len(rows)}.npy"
                command = [sys.executable, __file__, "--run-method", method, str(path), args.atlas_dir, str(output)]
                runs = [json.loads(subprocess.check_output(command).splitlines()[-1]) for _ in range(args.rounds)]
                rows.append((path, method, min(runs, key=lambda run: run["seconds"]), np.load(output)))
        reference = next(series for path, method, _, series in rows if method == "brainlm_hf")
        print(
            f"\nParcellation of a 91 x 109 x 91 x {args.volumes} {args.dtype} image (signal in voxels: {args.fill}) "
            f"into A424 ({os.cpu_count()} CPUs, "
            f"1-minute load {os.getloadavg()[0]:.1f} at the end; best of {args.rounds}; a fresh process per row):\n"
        )
        print("| file | method | seconds | vs original loop | peak RSS (GiB) | before work (GiB) | max abs diff |")
        print("|---|---|---|---|---|---|---|")
        for path, method, run, series in rows:
            loop = next(r for p, m, r, _ in rows if p == path and m == "original loop")["seconds"]
            difference = np.abs(series - reference).max()
            print(
                f"| {path.name} ({path.stat().st_size / 2**20:.0f} MiB) | {method} | {run['seconds']:.2f} | "
                f"{loop / run['seconds']:.2f}x | {run['peak_gib']:.2f} | {run['before_gib']:.2f} | {difference:.1e} |"
            )


if __name__ == "__main__":
    main()
