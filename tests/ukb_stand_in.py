"""A synthetic stand-in for BrainLM's UK Biobank statistics file, for test runs without `../shared`.

`write_ukb_stand_in(folder)` writes `hastily_generated_normalization_data_1000` with the real structure: a pickle
(protocol 4) of a dict of the eight float64 `(424,)` vectors under the real keys, in ranges like the real file's
(medians near 0, IQRs 18-305, 1st/99th percentiles of the robust-scaled data around -4..-1.6 and 1.6..4.6). The
numbers come from a seeded random generator: nothing here is derived from the real file.
"""

import pickle
from pathlib import Path

import numpy as np

from brainlm_hf.data.ukb_statistics import UKB_STATISTICS_NAME

NUM_REGIONS = 424


def stand_in_statistics(seed: int = 0) -> dict[str, np.ndarray]:
    """The eight vectors of the statistics file, synthetic."""
    rng = np.random.default_rng(seed)

    def uniform(low: float, high: float) -> np.ndarray:
        return rng.uniform(low, high, NUM_REGIONS)

    std = uniform(14.0, 147.0)
    return {
        "data_std_per_voxel": std,
        "data_mean_per_voxel": uniform(-0.2, 0.4),
        "data_median_per_voxel": uniform(-2.0, 0.7),
        "_99th_percentile_per_voxel_robustScaling": uniform(1.66, 4.58),
        "_1th_percentile_per_voxel_robustScaling": uniform(-4.2, -1.63),
        "_99th_percentile_per_voxel_zscore": uniform(3.3, 9.4),
        "_1th_percentile_per_voxel_zscore": uniform(-9.3, -3.3),
        "IQR": std * uniform(1.2, 2.0),
    }


def write_ukb_stand_in(folder: Path, seed: int = 0) -> Path:
    """Write the stand-in file into `folder` and return its path."""
    path = Path(folder) / UKB_STATISTICS_NAME
    path.write_bytes(pickle.dumps(stand_in_statistics(seed), protocol=4))
    return path
