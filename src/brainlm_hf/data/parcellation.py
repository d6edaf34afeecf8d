# Copyright 2026 The brainlm_hf authors. Licensed under the Apache License, Version 2.0.
"""From 4-D BOLD images or ready parcel tables to `(T, V)` float32 region time series.

`parcellate` averages each atlas label's voxels with one segmented sum over voxels sorted by region, reading the
image in chunks of volumes so that memory stays bounded by the chunk, not by the recording. Column `i` is always
atlas region `i`.
"""

import warnings
from pathlib import Path

import nibabel as nib
import numpy as np

from ..errors import InvalidFileError, InvalidInputError, MissingFileError
from .atlas import Atlas, label_volume

# NIfTI xform codes: 0 unknown, 1 scanner, 2 aligned, 3 Talairach, 4 MNI. Codes 0 and 1 are not a standard space.
_STANDARD_SPACE_CODES = (2, 3, 4)
PARCEL_SERIES_SUFFIXES = (".npy", ".csv", ".tsv", ".dat", ".txt")


def parcellate(
    bold,
    atlas: Atlas,
    chunk_size: int = 64,
    allow_empty_labels: bool = False,
    resample: bool = True,
    name=None,
) -> np.ndarray:
    """
    Mean signal of every atlas region over time.

    Args:
        bold: a 4-D NIfTI image or its path (`.nii` / `.nii.gz`) in the atlas's standard space.
        atlas (`Atlas`): the label volume (see `brainlm_hf.data.atlas`).
        chunk_size (`int`): volumes read at a time (memory ~ voxels x chunk_size x 4 bytes).
        allow_empty_labels (`bool`): a region with no voxel in the image grid is an error by default; with `True`
            its column is NaN and a warning names it.
        resample (`bool`): resample the atlas to the image grid (nearest neighbour) when grids differ; `False`
            refuses such images instead.
        name (*optional*): how errors name the image (default: its path, or its file name when it has one).

    Returns:
        `np.ndarray` of shape `(T, V)`, float32; column `i` is region `atlas.labels[i]`.
    """
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

    num_timepoints = image.shape[3]
    series = np.empty((num_timepoints, atlas.num_regions), dtype=np.float32)
    for start in range(0, num_timepoints, chunk_size):
        stop = min(start + chunk_size, num_timepoints)
        volumes = _read_volumes(image, start, stop).reshape(-1, stop - start, order="F").T  # (chunk, voxels)
        # float64 accumulation: a region of identical voxels averages back to exactly their value
        sums = np.add.reduceat(volumes[:, voxels], starts, axis=1, dtype=np.float64)  # (chunk, regions with voxels)
        series[start:stop, present] = sums / counts[present]
    series[:, empty] = np.nan
    return series


def _read_volumes(image: nib.Nifti1Image, start: int, stop: int) -> np.ndarray:
    """
    Volumes `[start, stop)` as `(x, y, z, n)` float32. A plain `.nii` file (no scaling) is memory-mapped for just
    these volumes, so only the pages of atlas voxels are read and nothing stays mapped after the chunk; any other
    image goes through nibabel's proxy, which reads and scales the slice.
    """
    proxy = image.dataobj
    filename = image.get_filename() or ""
    plain = getattr(proxy, "slope", 1.0) == 1.0 and getattr(proxy, "inter", 0.0) == 0.0
    if not (nib.is_proxy(proxy) and filename.endswith(".nii") and plain and getattr(proxy, "order", "F") == "F"):
        return np.asarray(proxy[..., start:stop], dtype=np.float32)
    dtype = proxy.dtype  # the proxy knows where the data starts in the file, and its byte order
    volume_bytes = int(np.prod(image.shape[:3])) * dtype.itemsize
    offset = int(proxy.offset) + start * volume_bytes
    mapped = np.memmap(
        filename, dtype=dtype, mode="r", offset=offset, shape=(*image.shape[:3], stop - start), order="F"
    )
    return mapped if dtype == np.float32 else mapped.astype(np.float32)


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
