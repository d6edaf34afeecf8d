"""Every input the model cannot read gets a ValueError that names the problem and the fix."""

import pytest
import torch

from brainlm_hf import BrainLMForMaskedSignalModeling, BrainLMModel


@pytest.fixture
def model(config):
    return BrainLMForMaskedSignalModeling(config).eval()


@pytest.mark.parametrize(
    "signal_shape, coord_shape, message",
    [
        ((7, 30), (7, 3), "shape \\(batch, regions, timepoints\\).*signal_values\\[None\\]"),
        ((1, 3, 7, 30), (7, 3), "shape \\(batch, regions, timepoints\\)"),
        ((3, 7, 32), (7, 3), "32.*multiple of patch_size \\(5\\).*crop the recording to 30"),
        ((3, 7, 30), (6, 3), "coordinates must have shape \\(7, 3\\) or \\(3, 7, 3\\)"),
        ((3, 7, 30), (7, 2), "coordinates must have shape"),
        ((3, 7, 30), (2, 7, 3), "coordinates batch size 2"),
    ],
)
def test_shape_errors(model, signal_shape, coord_shape, message):
    with pytest.raises(ValueError, match=message):
        model(torch.zeros(signal_shape), torch.zeros(coord_shape))


def test_missing_coordinates(model, inputs):
    with pytest.raises(ValueError, match="coordinates of shape \\(regions, 3\\)"):
        model(inputs["signal_values"])


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
@pytest.mark.parametrize("field", ["signal_values", "coordinates"])
def test_non_finite_values(model, inputs, bad, field):
    inputs[field][1, 2] = bad
    with pytest.raises(ValueError, match=f"{field} contains NaN or Inf"):
        model(**inputs)


def test_validation_can_be_switched_off(config, inputs):
    config.validate_inputs = False
    inputs["signal_values"][0, 0, 0] = float("nan")
    out = BrainLMModel(config)(**inputs)  # no host-syncing check: the NaN propagates
    assert torch.isnan(out.last_hidden_state).any()


@pytest.mark.parametrize("mask_ratio", [-0.1, 1.0, 1.5])
def test_mask_ratio_outside_the_unit_interval(model, inputs, mask_ratio):
    with pytest.raises(ValueError, match="mask_ratio must be in \\[0, 1\\)"):
        model(**inputs, mask_ratio=mask_ratio)


def test_noise_of_the_wrong_shape(model, inputs):
    with pytest.raises(ValueError, match="noise must have shape \\(3, 42\\)"):
        model(**inputs, noise=torch.rand(3, 40))


def test_unknown_mask_strategy(model, inputs):
    with pytest.raises(
        ValueError,
        match="mask_strategy must be one of \\('random', 'forecast'\\) for the region_window layout, got 'blocks'",
    ):
        model(**inputs, mask_strategy="blocks")
