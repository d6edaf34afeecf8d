# Copyright 2026 The brainlm_hf authors. Licensed under the Apache License, Version 2.0.
"""From 4-D BOLD images or ready parcel tables to `(T, V)` float32 region time series.

`parcellate` averages each atlas label's voxels with one segmented sum over voxels sorted by region, reading the
image in chunks of volumes so that memory stays bounded by the chunk, not by the recording. Column `i` is always
atlas region `i`.

Reading. A `.nii` file is memory-mapped one chunk at a time. A `.nii.gz` file is decompressed once, front to back,
one volume at a time into a single reused buffer, keeping only the atlas voxels; decompression is most of the time
of a `.nii.gz`, so it goes through ISA-L's gzip decoder (python-isal, from the `nifti` extra), and through its C
reader (`isal_zlib._GzipReader`, the reader behind `isal.igzip.open`), whose `readinto` inflates straight into the
volume buffer; `igzip.open(...).readinto` inflates into a new bytes object and copies it (7% more CPU time for a
float32 200-volume A424 image). One thread reads: parallel reading is a matter of processes
(`prepare_dataset(num_proc=...)`). ISA-L's read-ahead thread (`isal.igzip_threaded`) made one process 6% faster in
wall time for 26% more CPU time on a 2-core machine, so it is not used: where cores are free, more processes gain
more (`benchmarks/bench_parcellation.py --decoders` for these figures, `benchmarks/bench_prepare.py` for processes).
On 91 x 109 x 91 x 60 images, ISA-L and zlib-ng (`zlib_ng.gzip_ng`) decompress at about the same speed, about twice
the standard library's `gzip` and three times nibabel's `indexed_gzip` path. ISA-L is optional: it has wheels for
x86-64 and ARM64 (Linux, macOS, Windows) but not for every platform Python runs on, and the standard library's
`gzip` is the fallback, through the same code, to the same bytes. Either way the values are nibabel's, bit for bit:
the raw numbers are scaled by `scl_slope`/`scl_inter` with nibabel's own `apply_read_scaling`, then cast to float32,
as `np.asarray(image.dataobj[..., start:stop], dtype=np.float32)` does. Any other image (in memory, or a format
without a plain file behind it) is read through nibabel's proxy.

Chunks. The atlas voxels of `chunk_size` volumes are summed at a time. The default, 8 volumes (4.1 MiB of float32
A424 voxels), keeps the chunk in the processor's cache while it is summed: with 64 (34 MiB) the same file took 1.2
to 1.4 times the CPU time (`benchmarks/bench_parcellation.py --chunk-sizes`). The sums are the same bits for every
chunk size.
"""

import contextlib
import gzip
import warnings
import zlib
from collections.abc import Iterator
from pathlib import Path

import nibabel as nib
import numpy as np
from nibabel.volumeutils import apply_read_scaling

from ..arguments import check_positive_value
from ..errors import InvalidFileError, InvalidInputError, MissingFileError
from .atlas import Atlas, label_volume

try:
    from isal import igzip, isal_zlib
except ImportError:  # optional (the `nifti` extra); the standard library's gzip gives the same bytes, slower
    igzip = isal_zlib = None
_DECODE_ERRORS = (gzip.BadGzipFile, zlib.error) + (() if isal_zlib is None else (isal_zlib.error,))

# NIfTI xform codes: 0 unknown, 1 scanner, 2 aligned, 3 Talairach, 4 MNI. Codes 0 and 1 are not a standard space.
_STANDARD_SPACE_CODES = (2, 3, 4)
PARCEL_SERIES_SUFFIXES = (".npy", ".csv", ".tsv", ".dat", ".txt")


def parcellate(
    bold,
    atlas: Atlas,
    chunk_size: int = 8,
    allow_empty_labels: bool = False,
    resample: bool = True,
    name=None,
) -> np.ndarray:
    """
    Mean signal of every atlas region over time.

    Args:
        bold: a 4-D NIfTI image or its path (`.nii` / `.nii.gz`) in the atlas's standard space.
        atlas (`Atlas`): the label volume (see `brainlm_hf.data.atlas`).
        chunk_size (`int`): volumes averaged at a time (memory ~ chunk_size x voxels x 4 bytes; for a `.nii` or
            `.nii.gz` file only its atlas voxels are kept, at up to 8 bytes each).
        allow_empty_labels (`bool`): a region with no voxel in the image grid is an error by default; with `True`
            its column is NaN and a warning names it.
        resample (`bool`): resample the atlas to the image grid (nearest neighbour) when grids differ; `False`
            refuses such images instead.
        name (*optional*): how errors name the image (default: its path, or its file name when it has one).

    Returns:
        `np.ndarray` of shape `(T, V)`, float32; column `i` is region `atlas.labels[i]`.
    """
    check_positive_value("chunk_size", chunk_size, integer=True)
    image = nib.load(bold) if isinstance(bold, str | Path) else bold
    name = name or (bold if isinstance(bold, str | Path) else image.get_filename() or "the image")
    if len(image.shape) != 4:
        raise InvalidInputError(
            f"{name} has shape {image.shape}: parcellation needs a 4-D (x, y, z, time) BOLD image."
        )
    _check_standard_space(image, name)
    labels = label_volume(_atlas_on_grid(atlas, image, name, resample)).reshape(-1, order="F")

    region = np.searchsorted(atlas.labels, labels)  # region index of each voxel (valid where labelled)
    inside = (labels != 0) & np.isin(labels, atlas.labels)
    voxels = np.flatnonzero(inside)
    region = region[voxels]
    if len(voxels) == 0:
        raise InvalidInputError(
            f"No voxel of {name} falls in any {atlas.name} region: is it a brain image in atlas space?"
        )
    counts = np.bincount(region, minlength=atlas.num_regions)
    empty = np.flatnonzero(counts == 0)
    if len(empty):
        message = (
            f"{len(empty)} atlas regions have no voxel in the grid of {name}: labels {atlas.labels[empty].tolist()}."
        )
        if not allow_empty_labels:
            raise InvalidInputError(
                message + " Check the image covers the brain, or pass allow_empty_labels=True for NaN columns.",
                argument="allow_empty_labels",
            )
        warnings.warn(message + " Their columns are NaN.", stacklevel=2)
    # voxels sorted by region: each region's mean is one segment of a reduceat
    order = np.argsort(region, kind="stable")
    voxels, region = voxels[order], region[order]
    present = np.flatnonzero(counts)
    starts = np.concatenate([[0], np.cumsum(counts)])[present]  # first voxel of each region that has voxels

    series = np.empty((image.shape[3], atlas.num_regions), dtype=np.float32)
    for start, values in _chunks_at(image, voxels, chunk_size, name):  # values: (chunk, voxels), float32
        # float64 accumulation: a region of identical voxels averages back to exactly their value
        sums = np.add.reduceat(values, starts, axis=1, dtype=np.float64)  # (chunk, regions with voxels)
        series[start : start + len(values), present] = sums / counts[present]
    series[:, empty] = np.nan
    return series


def _chunks_at(image: nib.Nifti1Image, voxels: np.ndarray, chunk_size: int, name) -> Iterator[tuple[int, np.ndarray]]:
    """
    The image's values at `voxels` (indices into the Fortran-order flattened 3-D grid), `chunk_size` volumes at a
    time: `(start, values)` with `values` of shape `(stop - start, len(voxels))`, float32, equal bit for bit to
    `np.asarray(image.dataobj[..., start:stop], dtype=np.float32)` at those voxels.
    """
    proxy = image.dataobj
    if _file_kind(image) is None:
        for start in range(0, image.shape[3], chunk_size):
            stop = min(start + chunk_size, image.shape[3])
            volumes = np.asarray(proxy[..., start:stop], dtype=np.float32).reshape(-1, stop - start, order="F").T
            yield start, volumes[:, voxels]
        return
    for start, raw in _raw_chunks_at(image, voxels, chunk_size, name):
        yield start, np.asarray(apply_read_scaling(raw, proxy.slope, proxy.inter), dtype=np.float32)


def _file_kind(image: nib.Nifti1Image) -> str | None:
    """`.nii` or `.nii.gz` when the image's data are a plain or gzipped file that this module reads itself."""
    proxy, filename = image.dataobj, image.get_filename() or ""
    if not isinstance(proxy, nib.arrayproxy.ArrayProxy) or proxy.order != "F" or proxy.shape != image.shape:
        return None
    return next((suffix for suffix in (".nii", ".nii.gz") if filename.endswith(suffix)), None)


def _raw_chunks_at(
    image: nib.Nifti1Image, voxels: np.ndarray, chunk_size: int, name
) -> Iterator[tuple[int, np.ndarray]]:
    """
    As `_chunks_at`, but the stored numbers (the file's dtype, unscaled); each array is valid until the next one.
    A `.nii` file is memory-mapped for each chunk alone, so only the pages of atlas voxels are read and nothing
    stays mapped.
    """
    if _file_kind(image) == ".nii.gz":
        yield from _gzip_chunks_at(image, voxels, chunk_size, name)
        return
    proxy, num_voxels = image.dataobj, int(np.prod(image.shape[:3]))
    for start in range(0, image.shape[3], chunk_size):
        stop = min(start + chunk_size, image.shape[3])
        offset = int(proxy.offset) + start * num_voxels * proxy.dtype.itemsize
        mapped = np.memmap(
            image.get_filename(), dtype=proxy.dtype, mode="r", offset=offset, shape=(stop - start, num_voxels)
        )
        yield start, mapped[:, voxels]


def _gzip_chunks_at(
    image: nib.Nifti1Image, voxels: np.ndarray, chunk_size: int, name
) -> Iterator[tuple[int, np.ndarray]]:
    """
    `_raw_chunks_at` of a `.nii.gz` file: decompressed once, front to back, one volume at a time into one reused
    buffer (memory: one volume and one chunk of atlas voxels). A file that ends early raises `EOFError`, damaged
    data `OSError` (the CRC is checked at the end); both name the file.
    """
    proxy, num_timepoints = image.dataobj, image.shape[3]
    volume = np.empty(int(np.prod(image.shape[:3])), dtype=proxy.dtype)
    chunk = np.empty((min(chunk_size, num_timepoints), len(voxels)), dtype=proxy.dtype)
    try:
        with _open_gzip(image.get_filename()) as stream:
            _read_exactly(stream, bytearray(int(proxy.offset)))  # the header and extensions
            for start in range(0, num_timepoints, chunk_size):
                rows = chunk[: min(chunk_size, num_timepoints - start)]
                for row in rows:
                    _read_exactly(stream, volume)
                    np.take(volume, voxels, out=row)
                yield start, rows
            stream.read(1)  # at the end of the stream, where the decoder checks the CRC
    except EOFError as error:
        raise EOFError(f"{name} ends before its last volume: is the file complete?") from error
    except _DECODE_ERRORS as error:
        raise OSError(f"{name}: damaged gzip data ({error}).") from error


_ISAL_INPUT_BUFFER = 512 * 1024  # compressed bytes read at a time (`isal.igzip`'s own size)


@contextlib.contextmanager
def _open_gzip(filename: str) -> Iterator:
    """The decompressed file as a binary stream whose `readinto` fills the caller's buffer: ISA-L's C reader, which
    inflates into it in place, when installed, else the standard library's gzip. The C reader is private to
    python-isal (1.7 to 1.9 have it); without it, its public `igzip.open` gives the same bytes through a copy."""
    if isal_zlib is None:
        with gzip.open(filename, "rb") as stream:
            yield stream
    elif not hasattr(isal_zlib, "_GzipReader"):
        with igzip.open(filename, "rb") as stream:
            yield stream
    else:
        with open(filename, "rb") as file:
            yield isal_zlib._GzipReader(file, _ISAL_INPUT_BUFFER)


def _read_exactly(stream, buffer) -> None:
    """Fill `buffer` (any writable buffer) from `stream`; `EOFError` when the stream ends first."""
    view, filled = memoryview(buffer).cast("B"), 0
    while filled < len(view):
        count = stream.readinto(view[filled:])
        if not count:
            raise EOFError(f"the data end after {filled} of {len(view)} bytes")
        filled += count


def _check_standard_space(image: nib.Nifti1Image, name) -> None:
    sform_code = int(image.header["sform_code"]) if "sform_code" in image.header else 0
    qform_code = int(image.header["qform_code"]) if "qform_code" in image.header else 0
    if sform_code not in _STANDARD_SPACE_CODES and qform_code not in _STANDARD_SPACE_CODES:
        raise InvalidInputError(
            f"{name} is not in a standard space (sform_code {sform_code}, qform_code {qform_code}: scanner or unknown "
            "coordinates). Register it to MNI space first (e.g. with fMRIPrep), then parcellate."
        )


def _atlas_on_grid(atlas: Atlas, image: nib.Nifti1Image, name, resample: bool) -> nib.Nifti1Image:
    """The atlas in the image's voxel grid: as is when grids match, else resampled with nearest neighbour."""
    grid, affine = image.shape[:3], image.affine
    if atlas.image.shape == grid and np.allclose(atlas.image.affine, affine, atol=1e-4):
        return atlas.image
    if not _boxes_overlap(atlas.image, image):
        raise InvalidInputError(
            f"{name} does not overlap the {atlas.name} atlas in world space: it is not in the atlas's space "
            "(register it to MNI space first)."
        )
    if not resample:
        raise InvalidInputError(
            f"{name} has another voxel grid than the {atlas.name} atlas and resample=False.", argument="resample"
        )
    from nibabel.processing import resample_from_to  # needs scipy (the `nifti` extra)

    return resample_from_to(atlas.image, (grid, affine), order=0, mode="constant", cval=0)


def _boxes_overlap(a: nib.Nifti1Image, b: nib.Nifti1Image) -> bool:
    def box(image):
        corners = np.array(
            [
                [i, j, k]
                for i in (0, image.shape[0] - 1)
                for j in (0, image.shape[1] - 1)
                for k in (0, image.shape[2] - 1)
            ]
        )
        world = nib.affines.apply_affine(image.affine, corners)
        return world.min(0), world.max(0)

    (a_low, a_high), (b_low, b_high) = box(a), box(b)
    return bool(np.all(a_low <= b_high) and np.all(b_low <= a_high))


def load_parcel_series(path, delimiter: str | None = None) -> np.ndarray:
    """
    A ready parcel table `(T, V)` from `.npy`, `.csv`, `.tsv`, `.dat` or `.txt` (whitespace, tab or comma separated;
    no header), as float32.
    """
    path = Path(path)
    if path.suffix not in PARCEL_SERIES_SUFFIXES:
        raise InvalidFileError(
            f"{path}: unsupported parcel table; use one of {PARCEL_SERIES_SUFFIXES} or a NIfTI image."
        )
    if not path.is_file():
        raise MissingFileError(f"no such file: {path}")
    if path.suffix == ".npy":
        try:
            series = np.asarray(np.load(path, allow_pickle=False), dtype=np.float32)
        except (ValueError, TypeError, OSError, EOFError) as error:
            raise InvalidFileError(
                f"{path}: cannot read it as a .npy array of numbers ({' '.join(str(error).split())}); is the file "
                "complete?"
            ) from error
    else:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # an empty file: refused below by its shape
                series = np.loadtxt(
                    path, delimiter=delimiter or ("," if path.suffix == ".csv" else None), dtype=np.float32
                )
        except ValueError as error:
            raise InvalidFileError(
                f"{path} is not a table of numbers ({' '.join(str(error).split())}); parcel tables have no header "
                "row: remove it."
            ) from error
        except (OSError, UnicodeDecodeError) as error:
            raise InvalidFileError(
                f"{path}: cannot read it as a text table ({' '.join(str(error).split())})."
            ) from error
    if series.ndim != 2:
        raise InvalidFileError(f"{path} holds an array of shape {series.shape}; expected (timepoints, regions).")
    return series


def repetition_time(image: nib.Nifti1Image) -> float | None:
    """TR in seconds from a NIfTI header (the 4th zoom, converted from ms if the unit says so; rounded to the
    microsecond, which drops the float32 digits of the header: 0.72, not 0.7200000286), or None."""
    if len(image.shape) != 4:
        return None
    tr = float(image.header.get_zooms()[3])
    unit = image.header.get_xyzt_units()[1]
    if unit == "msec":
        tr /= 1000.0
    elif unit == "usec":
        tr /= 1e6
    return round(tr, 6) if tr > 0 else None
