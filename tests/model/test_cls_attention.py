"""CLS attention rows computed beside the attention backend (`output_cls_attentions`) against eager matrices."""

import importlib

import numpy as np
import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from brainlm_hf import (
    BrainLMConfig,
    BrainLMFeatureExtractor,
    BrainLMForMaskedSignalModeling,
    BrainLMModel,
    modeling_brainlm,
)
from brainlm_hf.analysis.attention_maps import (
    attention_maps,
    cls_attention,
    recording_attention,
    region_time_attention,
)
from brainlm_hf.analysis.attention_report import analyze_attention

WIDTHS = {"hidden_size": 32, "num_hidden_layers": 3, "num_attention_heads": 4, "intermediate_size": 64}
maps_module = importlib.import_module(
    "brainlm_hf.analysis.attention_maps"
)  # the package exports a function of its name
LAYOUTS = {
    "region_window": {"patch_size": 5},  # 7 regions x 6 windows = 42 tokens
    "region_window_13m_blocks": {"patch_size": 5, "norm_position": "post", "value_conv_kernel_size": 5},
    "tile_2d": {"token_layout": "tile_2d", "mask_strategy": "predict_last", "image_size": 32, "patch_size": 8},
}


def make_model(layout: str, model_class=BrainLMModel) -> BrainLMModel:
    torch.manual_seed(0)
    model = model_class(BrainLMConfig(**WIDTHS, **LAYOUTS[layout])).eval()
    assert model.config._attn_implementation == "sdpa"
    return model


def padded_inputs(inputs: dict) -> dict:
    """The fixture's batch with the last 12 timepoints of recording 0 and the last 4 of recording 2 padded (zeros)."""
    timepoint_mask = torch.ones(3, 30)
    timepoint_mask[0, 18:] = 0
    timepoint_mask[2, 26:] = 0
    return {
        **inputs,
        "signal_values": inputs["signal_values"] * timepoint_mask[:, None],
        "timepoint_mask": timepoint_mask,
    }


@pytest.mark.parametrize("layout", list(LAYOUTS))
@pytest.mark.parametrize("mask_ratio", [0.0, 0.5])
def test_cls_rows_equal_the_cls_rows_of_eager_attention_matrices(layout, mask_ratio, inputs):
    """Every layer's row, from the sdpa forward, equals row 0 of eager attention's matrix on that layer's input."""
    model = make_model(layout)
    batch = padded_inputs(inputs)
    noise = torch.rand(3, model.num_tokens(7, 30), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        out = model(**batch, noise=noise, mask_ratio=mask_ratio, output_hidden_states=True, output_cls_attentions=True)
        assert out.attentions is None and len(out.cls_attentions) == 3
        for layer, rows, layer_input in zip(model.layers, out.cls_attentions, out.hidden_states, strict=False):
            _, matrix = layer(layer_input, output_attentions=True)  # eager, (B, heads, S, S)
            assert rows.shape == matrix.shape[:3] == (3, 4, out.last_hidden_state.shape[1])
            torch.testing.assert_close(rows, matrix[:, :, 0], rtol=1e-6, atol=1e-9)
            torch.testing.assert_close(rows.sum(-1), torch.ones(3, 4))


@pytest.mark.parametrize("layout", ["region_window", "tile_2d"])
def test_cls_rows_of_an_sdpa_forward_equal_an_eager_forward_in_float64(layout, inputs):
    """Whole forwards, each on its own backend: in float64 (the softmax stays float32, as eager's does) the sdpa and
    eager paths agree to float32 precision."""
    model = make_model(layout).double()
    batch = {name: value.double() for name, value in padded_inputs(inputs).items()}
    with torch.no_grad():
        rows = model(**batch, output_cls_attentions=True).cls_attentions
        model.set_attn_implementation("eager")
        full = model(**batch, output_attentions=True).attentions
    for ours, matrix in zip(rows, full, strict=True):
        torch.testing.assert_close(ours, matrix[:, :, 0], rtol=1e-6, atol=1e-9)


def test_both_flags_return_rows_equal_to_the_matrices_row_zero(inputs):
    model = make_model("region_window", BrainLMForMaskedSignalModeling)
    with torch.no_grad():
        out = model(**inputs, mask_ratio=0.0, output_attentions=True, output_cls_attentions=True)
        alone = model(**inputs, mask_ratio=0.0, output_cls_attentions=True)
    for rows, matrix, other in zip(out.cls_attentions, out.attentions, alone.cls_attentions, strict=True):
        assert torch.equal(rows, matrix[:, :, 0])
        torch.testing.assert_close(other, rows, rtol=1e-5, atol=1e-6)  # other backend (sdpa), other rounding
    assert model(**inputs).cls_attentions is None


class TrailingShapes(TorchDispatchMode):
    """Records the last two dimensions of every tensor that an op returns."""

    def __init__(self):
        super().__init__()
        self.shapes = set()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        result = func(*args, **(kwargs or {}))
        for value in result if isinstance(result, (tuple, list)) else (result,):
            if isinstance(value, torch.Tensor) and value.dim() >= 2:
                self.shapes.add(tuple(value.shape[-2:]))
        return result


@pytest.mark.parametrize("layout", ["region_window_13m_blocks", "tile_2d"])
def test_cls_attention_keeps_sdpa_and_builds_no_tokens_by_tokens_matrix(layout, inputs, monkeypatch):
    model = make_model(layout)
    batch = padded_inputs(inputs)
    batch.pop("timepoint_mask")
    sequence = 1 + model.num_tokens(7, 30)
    calls = []

    def spy(*args, **kwargs):
        calls.append((kwargs.get("output_attentions"), kwargs.get("output_cls_attentions")))
        return original_forward(*args, **kwargs)

    original_forward = modeling_brainlm.BrainLMModel.forward
    monkeypatch.setattr(modeling_brainlm.BrainLMModel, "forward", spy)
    monkeypatch.setattr(modeling_brainlm, "eager_attention_forward", None)  # eager would fail: not callable
    with TrailingShapes() as sdpa_pass:
        rows = cls_attention(model, batch["signal_values"], batch["coordinates"])
    assert calls == [(None, True)] and model.config._attn_implementation == "sdpa"
    assert rows.shape == (3, 3, 4, sequence)
    assert (1, sequence) in sdpa_pass.shapes and (sequence, sequence) not in sdpa_pass.shapes
    monkeypatch.undo()
    with torch.no_grad(), TrailingShapes() as eager_pass:  # the check sees the matrix where there is one
        model(**batch, output_attentions=True)
    assert (sequence, sequence) in eager_pass.shapes


@pytest.mark.parametrize("layout", ["region_window", "tile_2d"])
def test_cls_attention_and_attention_maps_equal_the_eager_full_matrix_path(layout, inputs):
    model = make_model(layout, BrainLMForMaskedSignalModeling)
    signal, coordinates = inputs["signal_values"], inputs["coordinates"]
    maps = attention_maps(model, signal.numpy(), coordinates.numpy(), layers=[0, -1], batch_size=2)
    rows = cls_attention(model, signal, coordinates, layers=[-1, 1])
    model.set_attn_implementation("eager")
    with torch.no_grad():
        full = model.brainlm(signal, coordinates, output_attentions=True).attentions
    expected_rows = torch.stack([full[2][:, :, 0], full[1][:, :, 0]], dim=1)
    torch.testing.assert_close(rows, expected_rows)
    mean_rows = torch.stack([full[0][:, :, 0], full[2][:, :, 0]], dim=1).mean(dim=(1, 2))  # (B, 1 + L)
    expected_maps = region_time_attention(mean_rows.numpy(), model.layout.token_index(7, 30).numpy())
    np.testing.assert_allclose(maps, expected_maps, rtol=1e-5, atol=1e-8)


def eager_cls_rows(model, signal_values, coordinates=None, layers=None):
    """The CLS rows read from eager attention's full matrices (`output_attentions=True`), `(B, layers, heads, S)`."""
    outputs = model(signal_values, coordinates, mask_ratio=0.0, output_attentions=True)
    layers = range(len(outputs.attentions)) if layers is None else layers
    return torch.stack([outputs.attentions[i][:, :, 0] for i in layers], dim=1)


def test_recording_attention_and_the_report_are_unchanged(inputs, tmp_path, monkeypatch):
    """`recording_attention` and `analyze_attention` on the CLS-row path equal them on the eager full-matrix path."""
    model = make_model("region_window_13m_blocks")
    coordinates = inputs["coordinates"].numpy()
    processor = BrainLMFeatureExtractor(normalization="zscore", coordinates=coordinates.tolist(), num_timepoints=30)
    rng = np.random.default_rng(2)
    recordings = {"a": rng.normal(size=(45, 7)).astype(np.float32), "b": rng.normal(size=(30, 7)).astype(np.float32)}
    scores, mean_map = recording_attention(model, processor, recordings, layers=[-1], stride=15, batch_size=2)
    report = analyze_attention(model, processor, recordings, tmp_path / "rows", stride=15)
    monkeypatch.setattr(maps_module, "cls_attention", eager_cls_rows)
    expected_scores, expected_map = recording_attention(model, processor, recordings, [-1], 15, 2)
    expected = analyze_attention(model, processor, recordings, tmp_path / "eager", stride=15)
    assert scores.shape == (2, 7) and mean_map.shape == (7, 30)
    np.testing.assert_allclose(scores, expected_scores, rtol=1e-5)
    np.testing.assert_allclose(mean_map, expected_map, rtol=1e-5)
    np.testing.assert_allclose(report["region_scores"], expected["region_scores"], rtol=1e-5)
    assert report.keys() == expected.keys()


def test_value_convolution_on_the_token_layout_equals_the_convolution_over_heads():
    """`convolve_values` on `(B, S, heads * D)` equals `value_conv` on `(B, heads, S, D)`, and shifts as its kernel."""
    attention = make_model("region_window_13m_blocks").layers[0].attention  # 4 heads of 8 channels, kernel 5
    values = torch.randn(2, 43, 32, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        by_heads = attention.value_conv(values.view(2, 43, 4, 8).transpose(1, 2)).transpose(1, 2).reshape(2, 43, 32)
        torch.testing.assert_close(attention.convolve_values(values), by_heads)
        attention.value_conv.weight.zero_()
        attention.value_conv.weight[:, 0, :, 0] = torch.eye(4, 5)  # head h: tap h, i.e. token s takes token s + h - 2
        shifted = attention.convolve_values(values).view(2, 43, 4, 8)
    heads = values.view(2, 43, 4, 8)
    for head in range(4):
        offset = head - 2
        rows = range(max(0, -offset), min(43, 43 - offset))
        torch.testing.assert_close(shifted[:, rows, head], heads[:, [s + offset for s in rows], head], rtol=0, atol=0)
