"""The 2-D tile layout (the released 111M/650M family) as an option of the same model."""

import pytest
import torch

from brainlm_hf import BrainLMConfig, BrainLMForMaskedSignalModeling, BrainLMModel
from brainlm_hf.modeling_brainlm import TileLayout, sincos_2d_encoding


@pytest.fixture
def tile_config(config):
    """The small test config with the tile layout: 4 x 4 tiles in a 24 x 24 square (G = 6, 36 tiles)."""
    config.token_layout, config.patch_size, config.image_size = "tile_2d", 4, 24
    return config


def test_tiles_round_trip_and_padding(tile_config):
    signal = torch.randn(2, 21, 10)
    layout = TileLayout(tile_config)
    tiles = layout.signal_to_tokens(signal)
    assert tiles.shape == (2, 36, 16)
    assert torch.equal(layout.tokens_to_signal(tiles, 21, 10), signal)
    # the signal sits at rows 1..21 and columns 7..16 of the 24 x 24 square, the rest is padding_value
    square = tiles.view(2, 6, 6, 4, 4).transpose(2, 3).reshape(2, 24, 24)
    assert torch.equal(square[:, 1:22, 7:17], signal)
    assert (square[:, 0] == -1).all() and (square[:, 22:] == -1).all() and (square[:, :, :7] == -1).all()
    # tile r * G + c holds rows 4r..4r+3, columns 4c..4c+3, row-major
    assert torch.equal(tiles[:, 2 * 6 + 3].view(2, 4, 4), square[:, 8:12, 12:16])


def test_2d_positions_follow_mae(tile_config):
    table = sincos_2d_encoding(6, 8)
    r, c = 2, 5
    row = table[r * 6 + c]
    omega = 1.0 / 10000 ** (torch.arange(2, dtype=torch.float64) / 2)
    expected = torch.cat([torch.sin(c * omega), torch.cos(c * omega), torch.sin(r * omega), torch.cos(r * omega)])
    torch.testing.assert_close(row, expected.float())


def test_outputs_have_the_tile_contract(tile_config):
    model = BrainLMForMaskedSignalModeling(tile_config).eval()
    signal = torch.randn(2, 21, 10)
    noise = torch.rand(2, 36)
    out = model(signal, noise=noise)
    assert out.logits.shape == (2, 21, 10)
    assert out.mask.shape == (2, 21, 10)  # per timepoint
    assert out.token_mask.shape == (2, 36) and out.ids_restore.shape == (2, 36)
    assert out.last_hidden_state.shape == (2, 1 + 18, 32)  # padding tiles included
    assert torch.equal(model.mask_to_signal(out.mask), out.mask)
    # the timepoint mask is the token mask spread over each tile's pixels, cropped
    expected = TileLayout(tile_config).tokens_to_signal(out.token_mask[..., None].expand(-1, -1, 16), 21, 10)
    assert torch.equal(out.mask, expected)
    # the loss is the mean squared error over masked timepoints
    expected_loss = ((out.logits - signal) ** 2 * out.mask).sum() / out.mask.sum()
    torch.testing.assert_close(out.loss, expected_loss)
    # coordinates are accepted and unused
    with_xyz = model(signal, torch.randn(21, 3), noise=noise)
    assert torch.equal(with_xyz.logits, out.logits)


def test_mask_to_signal_of_the_region_window_layout(config, inputs):
    model = BrainLMForMaskedSignalModeling(config).eval()
    out = model(**inputs)
    per_timepoint = model.mask_to_signal(out.mask)
    assert per_timepoint.shape == (3, 7, 30)
    assert torch.equal(per_timepoint[:, :, ::5], out.mask) and torch.equal(per_timepoint[:, :, 4::5], out.mask)


@pytest.mark.parametrize("num_timepoints, mask_ratio", [(10, 0.2), (12, 0.5), (16, 0.25), (20, 0.6)])
def test_predict_last_reproduces_the_original_column_rule(tile_config, num_timepoints, mask_ratio):
    """The rule, restated from the reference README: columns up to the one holding the last timepoint, back to
    the one holding timepoint T - int(mask_ratio * T), plus one extra column when that start is not tile-aligned."""
    model = BrainLMModel(tile_config).eval()
    out = model(torch.randn(1, 21, num_timepoints), mask_ratio=mask_ratio, mask_strategy="predict_last")
    left = (24 - num_timepoints) // 2
    end = left + num_timepoints
    patch_end = -(-end // 4) * 4
    start_pixel = end - int(mask_ratio * num_timepoints)
    count = (patch_end - start_pixel) // 4 + (1 if start_pixel % 4 else 0)
    masked_columns = set(range(patch_end // 4 - count, patch_end // 4))
    expected = torch.tensor([float(k % 6 in masked_columns) for k in range(36)])
    assert torch.equal(out.token_mask[0], expected)
    # visible tiles stay in canonical order
    kept = torch.argsort(out.ids_restore[0])[: int((1 - expected).sum())]
    assert torch.equal(kept, torch.sort(kept).values)


def test_the_fixture_geometry_masks_the_last_28_timepoints():
    """Reference README: patch 16, 432 square, T = 200, mask ratio 0.1 -> tile columns 18-19, last 28 timepoints."""
    config = BrainLMConfig(
        token_layout="tile_2d",
        patch_size=16,
        image_size=432,
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        decoder_hidden_size=16,
        decoder_num_hidden_layers=1,
        decoder_num_attention_heads=2,
        decoder_intermediate_size=16,
    )
    out = BrainLMModel(config)(torch.randn(1, 424, 200), mask_ratio=0.1, mask_strategy="predict_last")
    assert out.mask[0].sum(0).nonzero().flatten().tolist() == list(range(172, 200))


def test_signal_larger_than_the_square_is_refused(tile_config):
    model = BrainLMModel(tile_config)
    with pytest.raises(ValueError, match="does not fit in the 24 x 24 square.*at most 24 regions and 24 timepoints"):
        model(torch.randn(1, 25, 10))
    with pytest.raises(ValueError, match="does not fit"):
        model(torch.randn(1, 10, 30))


def test_tile_layout_refuses_region_window_strategies(tile_config):
    with pytest.raises(ValueError, match="for the tile_2d layout"):
        BrainLMModel(tile_config)(torch.randn(1, 10, 10), mask_ratio=0.5, mask_strategy="forecast")


def test_save_and_reload_tile_model(tile_config, tmp_path):
    model = BrainLMForMaskedSignalModeling(tile_config).eval()
    model.save_pretrained(tmp_path)
    reloaded = BrainLMForMaskedSignalModeling.from_pretrained(tmp_path).eval()
    signal, noise = torch.randn(2, 21, 10), torch.rand(2, 36)
    assert torch.equal(model(signal, noise=noise).logits, reloaded(signal, noise=noise).logits)
