# Copyright 2026 The brainlm_hf authors. Licensed under the Apache License, Version 2.0.
"""BrainLM's pretraining normalisation statistics (UK Biobank, A424), read safely.

The original repository (vandijklab/BrainLM, Apache-2.0) held the per-region statistics of its UK Biobank
pretraining data at `toolkit/hastily_generated_normalization_data_1000` in commit `faeea4d` (deleted ten days later).
They are never shipped with brainlm_hf: `load_ukb_statistics` reads a local copy (`path`, else the environment
variable `BRAINLM_UKB_STATISTICS`) or downloads the file on your machine from that pinned commit, checks its SHA-256
and caches it under the cache root of the A424 files (`$BRAINLM_CACHE/statistics`, default
`~/.cache/brainlm_hf/statistics`).

The file is a Python pickle of a dict of float64 `(424,)` vectors in A424 label order. A pickle can run code, so it
is read by an unpickler that admits only numpy's array reconstruction (`ndarray`, `dtype`, `_reconstruct`) and
refuses any other global before anything is called; the values are then checked (keys, shape, dtype, finite,
IQR > 0, low < high). A converted checkpoint stores the numbers in `preprocessor_config.json`, so the pickle is read
once, at conversion.

The original toolkit applied them per region as `clip((x - median) / IQR, p1, p99)`, with `p1` / `p99` the 1st /
99th percentiles of the robust-scaled pretraining data (`_1th/_99th_percentile_per_voxel_robustScaling`).
"""

import hashlib
import io
import os
import pickle
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import InvalidFileError, MissingFileError
from .atlas import _download_verified

UKB_STATISTICS_ENV = "BRAINLM_UKB_STATISTICS"
UKB_STATISTICS_COMMIT = "faeea4da3ffa8d90c8012389bfd372daac2ed684"
UKB_STATISTICS_BASE = f"https://raw.githubusercontent.com/vandijklab/BrainLM/{UKB_STATISTICS_COMMIT}/toolkit/"
UKB_STATISTICS_NAME = "hastily_generated_normalization_data_1000"
# local file name -> (upstream file name, sha256), the layout of `atlas._download_verified`
UKB_STATISTICS_FILES = {
    UKB_STATISTICS_NAME: (
        UKB_STATISTICS_NAME,
        "bbba6afd8c335213a20cb102814fe3ad9794166a76c9cfcdce0b19b6a3330bba",
    ),
}
UKB_STATISTICS_SOURCE = f"uk_biobank (vandijklab/BrainLM@{UKB_STATISTICS_COMMIT[:7]})"
NUM_REGIONS = 424
# the keys of the file: field of `UKBStatistics` -> key
KEYS = {
    "median": "data_median_per_voxel",
    "iqr": "IQR",
    "clip_low": "_1th_percentile_per_voxel_robustScaling",
    "clip_high": "_99th_percentile_per_voxel_robustScaling",
}
_MAX_BYTES = 1 << 20  # the file has 27,758 bytes: anything far larger is not it
_RECONSTRUCT = np.zeros(0).__reduce__()[0]  # numpy's `_reconstruct`, wherever this numpy version keeps it
_ARRAY_GLOBALS = {
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("numpy.core.multiarray", "_reconstruct"): _RECONSTRUCT,
    ("numpy._core.multiarray", "_reconstruct"): _RECONSTRUCT,
}


@dataclass(frozen=True)
class UKBStatistics:
    """
    The per-region statistics BrainLM's pretraining data was normalised with, float64 `(424,)` in A424 label order
    (region `i` is label `i + 1`): `median` and `iqr` of the raw series, and `clip_low` / `clip_high`, the 1st / 99th
    percentiles of the robust-scaled series `(x - median) / iqr`. `path`: the file they were read from.
    """

    median: np.ndarray
    iqr: np.ndarray
    clip_low: np.ndarray
    clip_high: np.ndarray
    path: str

    def processor_fields(self) -> dict:
        """The `BrainLMFeatureExtractor` fields that apply them with `normalization="robust"` (robust scaling, then
        clipping), as plain lists."""
        return {
            "median": self.median.tolist(),
            "iqr": self.iqr.tolist(),
            "clip_low": self.clip_low.tolist(),
            "clip_high": self.clip_high.tolist(),
            "statistics_source": UKB_STATISTICS_SOURCE,
        }


def load_ukb_statistics(path=None, cache_dir=None, base_url: str | None = None) -> UKBStatistics:
    """
    The UK Biobank statistics: from `path` (the file, or a folder holding it), else from `$BRAINLM_UKB_STATISTICS`,
    else downloaded from the pinned commit into the cache (SHA-256 checked; `base_url` replaces the upstream
    address, e.g. with a mirror). A local copy whose SHA-256 is not the pinned one is read (safely) with a warning.
    """
    path = path or os.environ.get(UKB_STATISTICS_ENV) or None
    if path is None:
        instead = f"give a local copy of the file instead (ukb_statistics=PATH, or ${UKB_STATISTICS_ENV})"
        folder = _download_verified(
            UKB_STATISTICS_FILES, cache_dir, base_url or UKB_STATISTICS_BASE, "statistics", instead
        )
        return read_ukb_statistics(folder / UKB_STATISTICS_NAME)
    path = Path(path).expanduser()
    if path.is_dir():
        path = path / UKB_STATISTICS_NAME
    if not path.is_file():
        raise MissingFileError(
            f"no such file: {path} (BrainLM's UK Biobank statistics, {UKB_STATISTICS_NAME}; given by "
            f"ukb_statistics= or ${UKB_STATISTICS_ENV})",
            argument="ukb_statistics",
        )
    statistics = read_ukb_statistics(path)
    pinned = UKB_STATISTICS_FILES[UKB_STATISTICS_NAME][1]
    if hashlib.sha256(path.read_bytes()).hexdigest() != pinned:
        warnings.warn(
            f"{path} is not the pinned file (SHA-256 {pinned}); its statistics are used as they are.", stacklevel=2
        )
    return statistics


def read_ukb_statistics(path) -> UKBStatistics:
    """Read and check a statistics file with `safe_unpickle`; every problem is a `ValueError` naming the file."""
    path = Path(path)
    data = path.read_bytes()
    if len(data) > _MAX_BYTES:
        raise InvalidFileError(
            f"{path} has {len(data)} bytes, far more than the statistics file (27,758): not reading it."
        )
    try:
        content = safe_unpickle(data)
    except pickle.UnpicklingError as error:
        raise InvalidFileError(f"{path}: {error}") from error
    if not isinstance(content, dict):
        raise InvalidFileError(f"{path} holds a {type(content).__name__}, not the dict of statistics.")
    missing = [key for key in KEYS.values() if key not in content]
    if missing:
        raise InvalidFileError(f"{path} lacks the keys {missing}: is it {UKB_STATISTICS_NAME}?")
    arrays = {field: _region_vector(content[key], key, path) for field, key in KEYS.items()}
    bad = np.flatnonzero(~(arrays["iqr"] > 0))
    if len(bad):
        raise InvalidFileError(f"{path}: IQR <= 0 in regions {bad[:10].tolist()}; the file is damaged.")
    bad = np.flatnonzero(~(arrays["clip_low"] < arrays["clip_high"]))
    if len(bad):
        raise InvalidFileError(f"{path}: 1st percentile >= 99th percentile in regions {bad[:10].tolist()}; damaged.")
    return UKBStatistics(**arrays, path=str(path))


def safe_unpickle(data: bytes):
    """
    Unpickle `data` admitting only numpy arrays (and the containers and scalars pickle builds without a global):
    any other global (a function, a class, `os.system`, ...) raises `pickle.UnpicklingError` when the pickle names
    it, before it could be called.
    """
    return _ArraysOnlyUnpickler(io.BytesIO(data)).load()


class _ArraysOnlyUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        allowed = _ARRAY_GLOBALS.get((module, name))
        if allowed is None:
            raise pickle.UnpicklingError(
                f"the pickle refers to {module}.{name}; only numpy arrays are admitted in a statistics file, so it "
                "was refused before anything ran (it is not BrainLM's statistics file)."
            )
        return allowed

    def persistent_load(self, pid):
        raise pickle.UnpicklingError("the pickle holds a persistent reference; only numpy arrays are admitted.")


def _region_vector(value, key: str, path: Path) -> np.ndarray:
    """A finite float `(424,)` array, or a `ValueError` that names the key and the file."""
    if not isinstance(value, np.ndarray) or value.dtype.kind != "f" or value.shape != (NUM_REGIONS,):
        described = f"{value.dtype} {value.shape} array" if isinstance(value, np.ndarray) else type(value).__name__
        raise InvalidFileError(
            f"{path}: {key} is a {described}, not a float vector of the {NUM_REGIONS} A424 regions."
        )
    if not np.isfinite(value).all():
        raise InvalidFileError(f"{path}: {key} holds NaN/Inf values.")
    return value.astype(np.float64)
