# Copyright 2026 The brainlm_hf authors. Licensed under the Apache License, Version 2.0.
"""Finding and reading input recordings: 4-D NIfTI images, parcel tables and prepared Parquet shards.

Every reader returns `(T, V)` float32 series (timepoints x regions, atlas order).

Recording ids are unique by construction: the path of the file relative to the common folder of all the inputs,
without its suffix (`site1/rest`, `site2/rest`; for inputs in one folder, the file name without suffix). Subjects
and sessions come from BIDS entities (`sub-<label>`, `ses-<label>`) of the file name or, failing that, of its
folders; inputs from several sites (folders above the `sub-` folders, e.g. `site1/sub-01/...` and
`site2/sub-01/...`) keep their subjects apart as `site1/01` and `site2/01`. A file without a `sub-` entity is its
own subject (its id). Two files that would give one id (`a/rest.npy` and `a/rest.csv`) are refused, both named.
"""

import glob
import os
import re
import zlib
from pathlib import Path
from typing import NamedTuple

import numpy as np

from ..errors import InvalidArgumentError, InvalidFileError, InvalidInputError, MissingFileError, one_line
from ..feature_extraction_brainlm import check_repetition_time
from .atlas import Atlas
from .parcellation import PARCEL_SERIES_SUFFIXES, load_parcel_series, parcellate, repetition_time
from .prepared import read_recordings, read_shard, tr_columns

NIFTI_SUFFIXES = (".nii", ".nii.gz")
RAW_SUFFIXES = NIFTI_SUFFIXES + PARCEL_SERIES_SUFFIXES
SHARD_SUFFIXES = (".parquet",)
_ENTITY = r"(?:^|_){}-([A-Za-z0-9]+)(?=_|$)"
_BIDS_FOLDERS = r"ses-[A-Za-z0-9]+|func|anat|dwi|fmap|perf|beh|pet|eeg|meg|ieeg|nirs"


def find_recordings(inputs, suffixes: tuple[str, ...] = RAW_SUFFIXES) -> list[Path]:
    """
    Folders (searched recursively), glob patterns and/or files, one or a list -> sorted paths of the files whose
    name ends with one of `suffixes` (default: NIfTI images and parcel tables). Nothing given is dropped silently:
    a file or folder that does not exist, a pattern that matches no file and a file given by name with another
    suffix are errors that name it.
    """
    paths = []
    for item in [inputs] if isinstance(inputs, str | Path) else inputs:
        if Path(item).is_dir():
            paths += [p for p in Path(item).rglob("*") if p.is_file()]
        elif glob.has_magic(str(item)):
            matches = [Path(p) for p in glob.glob(str(item), recursive=True)]
            if not matches:
                raise MissingFileError(f"no file matches {item}", argument="inputs")
            paths += matches
        elif not Path(item).exists():
            raise MissingFileError(f"no such file or folder: {item}", argument="inputs")
        elif not str(item).endswith(suffixes):
            raise InvalidFileError(
                f"{item} is not a recording: give files ending in {', '.join(suffixes)}, or folders."
            )
        else:
            paths.append(Path(item))
    paths = sorted(p for p in paths if p.name.endswith(suffixes))
    if not paths:
        raise MissingFileError(f"No recordings ({', '.join(suffixes)}) found in {inputs}.")
    return paths


def _stem(name: str) -> str:
    for suffix in RAW_SUFFIXES + SHARD_SUFFIXES:
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


def _entity(key: str, name: str, folders: tuple[str, ...]) -> str | None:
    """The label of BIDS entity `key` in the file name, else of the nearest folder named `key-<label>`."""
    found = re.search(_ENTITY.format(key), name)
    if found:
        return found.group(1)
    for folder in reversed(folders):
        found = re.fullmatch(f"{key}-([A-Za-z0-9]+)", folder)
        if found:
            return found.group(1)
    return None


def recording_ids(path: Path, root: Path | None = None) -> tuple[str, str, str]:
    """
    `(id, subject, session)` of a recording file, `root` being the common folder of all the inputs (default: the
    file's own folder): see the module docstring.
    """
    path = Path(os.path.abspath(path))
    root = Path(os.path.abspath(root)) if root is not None else path.parent
    *folders, name = path.relative_to(root).parts
    record_id = "/".join([*folders, _stem(name)])
    subject = _entity("sub", name, path.parent.parts)
    session = _entity("ses", name, path.parent.parts) or ""
    if subject is None:
        return record_id, record_id, session
    # the site: folders below the root and above the subject's folder (none when that folder holds every input)
    subject_folders = [i for i, folder in enumerate(folders) if re.fullmatch(r"sub-[A-Za-z0-9]+", folder)]
    if subject_folders:
        site = folders[: subject_folders[0]]
    elif any(re.fullmatch(r"sub-[A-Za-z0-9]+", folder) for folder in root.parts):
        site = []
    else:  # the subject is named by the file only: every folder but session and BIDS data-type ones
        site = list(folders)
        while site and re.fullmatch(_BIDS_FOLDERS, site[-1]):
            site.pop()
    return record_id, "/".join([*site, subject]), session


def recording_names(paths: list[Path]) -> dict[Path, tuple[str, str, str]]:
    """`recording_ids` of every path against their common folder, refusing two paths that give one id."""
    if not paths:
        return {}
    absolute = [os.path.abspath(p) for p in paths]
    root = Path(os.path.commonpath([os.path.dirname(p) for p in absolute]))
    names, owners = {}, {}
    for path in paths:
        names[path] = recording_ids(path, root)
        record_id = names[path][0]
        if record_id in owners:
            raise InvalidInputError(
                f"Two inputs give the recording id {record_id!r}: {owners[record_id]} and {path}; keep one of them, "
                "or rename one."
            )
        owners[record_id] = path
    return names


def load_recording(path: Path, atlas: Atlas | None = None, tr: float | None = None) -> tuple[np.ndarray, float | None]:
    """`(T, V)` float32 series of a NIfTI image (parcellated with `atlas`) or a parcel table, and its TR (`tr`, else
    the image's header, which must hold a TR of fMRI: see `check_repetition_time`). Any file that cannot be read
    raises an error that names it."""
    path = Path(path)
    if not path.name.endswith(NIFTI_SUFFIXES):
        return load_parcel_series(path), tr
    if atlas is None:
        raise InvalidArgumentError(
            f"{path} is a NIfTI image: an atlas is needed to parcellate it (atlas=).", argument="atlas"
        )
    import nibabel as nib

    if not path.is_file():
        raise MissingFileError(f"no such file: {path}")
    try:
        image = nib.load(path)
        header_tr = repetition_time(image)
    except Exception as error:  # noqa: BLE001 - nibabel raises several types for an unreadable file
        raise InvalidFileError(f"{path}: cannot read it as a NIfTI image ({one_line(error)}).") from error
    try:
        series = parcellate(image, atlas, name=path)
    except (OSError, EOFError, zlib.error) as error:  # the data, read in chunks, ends early or is corrupt
        raise InvalidFileError(
            f"{path}: cannot read the image data ({one_line(error)}); is the file complete (an interrupted copy "
            "or download)?"
        ) from error
    return series, tr if tr is not None else _header_repetition_time(header_tr, path)


def _header_repetition_time(value: float | None, path: Path) -> float | None:
    """The TR read from the header of `path`, refused (naming the file and the fix) outside the range of fMRI."""
    try:
        return check_repetition_time(value, f"{path}: the repetition time in its header", error=InvalidFileError)
    except InvalidFileError as error:
        raise InvalidFileError(
            f"{error} Correct the header (pixdim[4] and its xyzt_units), or give the TR in seconds (repetition_time=)."
        ) from None


class InputRecording(NamedTuple):
    """One recording of `read_inputs`: its id, where it comes from, its `(T, V)` series and its TR (None: unknown)."""

    id: str
    source: str
    series: np.ndarray
    repetition_time: float | None


class ListedInput(NamedTuple):
    """One recording of `list_inputs`, not read yet: its id, where it comes from, its file and its row in that file
    (a prepared shard's; None for an image or a table, which holds one recording)."""

    id: str
    source: str
    path: Path
    row: int | None


def read_inputs(inputs, atlas: Atlas | None = None, repetition_time: float | None = None) -> list[InputRecording]:
    """
    Every input, in order: NIfTI images (parcellated with `atlas`; TR from the header) and parcel tables (ids as in
    the module docstring; `source` is the file; TR unknown), and the recordings of prepared Parquet shards or of the
    split folders that hold them (ids and TRs from the shards; `source` is `shard: id`). `repetition_time` gives
    the TR of the images and tables (it wins over a header). Two inputs with the same id are an error that names
    both. `load_inputs(list_inputs(inputs)[i:j], ...)` reads some of them only, identically.
    """
    return load_inputs(list_inputs(inputs), atlas, repetition_time)


def list_inputs(inputs) -> list[ListedInput]:
    """
    The recordings of `read_inputs(inputs)`, in its order, without reading their data: the ids of images and tables
    come from their paths, those of shards from their `id` column alone. Two inputs with the same id are an error
    that names both.
    """
    paths = find_recordings(inputs, RAW_SUFFIXES + SHARD_SUFFIXES)
    names = recording_names([p for p in paths if not p.name.endswith(SHARD_SUFFIXES)])
    listed, sources = [], {}
    for path in paths:
        if path.name.endswith(SHARD_SUFFIXES):
            ids = read_shard(str(path), ["id"]).column("id").to_pylist()
            items = [ListedInput(record_id, f"{path}: {record_id}", path, row) for row, record_id in enumerate(ids)]
        else:
            items = [ListedInput(names[path][0], str(path), path, None)]
        for item in items:
            if item.id in sources:
                raise InvalidInputError(
                    f"Two inputs give the recording id {item.id!r}: {sources[item.id]} and {item.source}; keep one "
                    "of them, or rename one."
                )
            sources[item.id] = item.source
        listed += items
    return listed


def load_inputs(
    listed: list[ListedInput], atlas: Atlas | None = None, repetition_time: float | None = None
) -> list[InputRecording]:
    """The recordings `listed` (by `list_inputs`, any of them), read as `read_inputs` reads them, in that order;
    each shard is read once (memory-mapped: only the rows used are touched)."""
    shards = {}
    found = []
    for item in listed:
        if item.row is None:
            series, tr = load_recording(item.path, atlas, repetition_time)
        else:
            if item.path not in shards:
                shards[item.path] = read_recordings(str(item.path), tr_columns(str(item.path)))
            record = shards[item.path][item.row]
            series, tr = record["series"], record.get("repetition_time")
        found.append(InputRecording(item.id, item.source, series, tr))
    return found


def load_recordings(inputs, atlas: Atlas | None = None) -> dict[str, np.ndarray]:
    """
    Recording id -> `(T, V)` series of every input (`read_inputs`): NIfTI images (parcellated with `atlas`) and
    parcel tables (ids as in the module docstring), and prepared Parquet shards or the split folders that hold them
    (ids from the shards). Folders are searched recursively. Two inputs with the same id are an error.
    """
    return {recording.id: recording.series for recording in read_inputs(inputs, atlas)}
