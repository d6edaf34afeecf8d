# Copyright 2026 The brainlm_hf authors. Licensed under the Apache License, Version 2.0.
"""Finding and reading input recordings: 4-D NIfTI images, parcel tables and prepared Parquet shards.

Every reader returns `(T, V)` float32 series (timepoints x regions, atlas order).
"""

import glob
import re
from pathlib import Path

import numpy as np

from .atlas import Atlas
from .parcellation import PARCEL_SERIES_SUFFIXES, load_parcel_series, parcellate, repetition_time
from .prepared import read_recordings

NIFTI_SUFFIXES = (".nii", ".nii.gz")
RAW_SUFFIXES = NIFTI_SUFFIXES + PARCEL_SERIES_SUFFIXES
SHARD_SUFFIXES = (".parquet",)


def find_recordings(inputs, suffixes: tuple[str, ...] = RAW_SUFFIXES) -> list[Path]:
    """
    Folders (searched recursively), glob patterns and/or files, one or a list -> sorted paths of the files whose
    name ends with one of `suffixes` (default: NIfTI images and parcel tables).
    """
    paths = []
    for item in [inputs] if isinstance(inputs, str | Path) else inputs:
        if Path(item).is_dir():
            paths += [p for p in Path(item).rglob("*") if p.is_file()]
        elif glob.has_magic(str(item)):
            paths += [Path(p) for p in glob.glob(str(item), recursive=True)]
        else:
            paths.append(Path(item))
    paths = sorted(p for p in paths if p.name.endswith(suffixes))
    if not paths:
        raise FileNotFoundError(f"No recordings ({', '.join(suffixes)}) found in {inputs}.")
    return paths


def recording_ids(path: Path) -> tuple[str, str, str]:
    """(id, subject, session) from a file name: BIDS `sub-<x>` / `ses-<y>` entities if present, else the stem."""
    stem = path.name
    for suffix in RAW_SUFFIXES + SHARD_SUFFIXES:
        stem = stem.removesuffix(suffix)
    subject = re.search(r"sub-([A-Za-z0-9]+)", str(path))
    session = re.search(r"ses-([A-Za-z0-9]+)", str(path))
    return stem, subject.group(1) if subject else stem, session.group(1) if session else ""


def load_recording(path: Path, atlas: Atlas | None = None, tr: float | None = None) -> tuple[np.ndarray, float | None]:
    """`(T, V)` float32 series of a NIfTI image (parcellated with `atlas`) or a parcel table, and its TR."""
    if path.name.endswith(NIFTI_SUFFIXES):
        if atlas is None:
            raise ValueError(f"{path} is a NIfTI image: an atlas is needed to parcellate it (--atlas).")
        import nibabel as nib

        image = nib.load(path)
        return parcellate(image, atlas), tr if tr is not None else repetition_time(image)
    return load_parcel_series(path), tr


def load_recordings(inputs, atlas: Atlas | None = None) -> dict[str, np.ndarray]:
    """
    Recording id -> `(T, V)` series of every input: NIfTI images (parcellated with `atlas`) and parcel tables (id =
    file name without suffix), and prepared Parquet shards or the split folders that hold them (ids from the
    shards). Folders are searched recursively. Two inputs with the same id are an error.
    """
    recordings = {}
    for path in find_recordings(inputs, RAW_SUFFIXES + SHARD_SUFFIXES):
        if path.suffix == ".parquet":
            found = [(record["id"], record["series"]) for record in read_recordings(str(path))]
        else:
            found = [(recording_ids(path)[0], load_recording(path, atlas)[0])]
        for name, series in found:
            if name in recordings:
                raise ValueError(f"Two inputs give the recording id {name!r}; rename one of them.")
            recordings[name] = series
    return recordings
