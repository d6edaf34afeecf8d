"""Whole-recording reconstruction (windows, stitching, per-region metrics), forecasting and its baselines, and
forecast fine-tuning through `brainlm pretrain`."""

import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from brainlm_hf import BrainLMConfig, BrainLMFeatureExtractor, BrainLMForMaskedSignalModeling, BrainLMModel
from brainlm_hf.analysis.forecasting import forecast_baselines, forecast_recording, horizon_metrics
from brainlm_hf.analysis.reconstruction import predict_windows, reconstruct_recording, region_metrics, stitch
from brainlm_hf.cli import main
from brainlm_hf.data import prepare_dataset
from brainlm_hf.metrics import masked_reconstruction_metrics

from .expectations import ORDER, interpolated, ordered_and_plain
from .test_analysis import SMALL, tile_config


@pytest.fixture
def recording() -> np.ndarray:
    """One raw recording (27 timepoints, 7 regions): not a multiple of the window, so the last window overlaps."""
    return np.random.default_rng(0).normal(size=(27, 7)).astype(np.float32)


@pytest.fixture
def processor(inputs) -> BrainLMFeatureExtractor:
    return BrainLMFeatureExtractor(normalization="none", coordinates=inputs["coordinates"].tolist(), num_timepoints=10)


def test_window_starts_cover_every_timepoint(processor):
    assert processor.window_starts(20) == [0, 10]
    assert processor.window_starts(25) == [0, 10, 15]
    assert processor.window_starts(25, stride=7) == [0, 7, 14, 15]
    with pytest.raises(ValueError, match="fewer than one window of 10"):
        processor.window_starts(9)
    with pytest.raises(ValueError, match="stride must be a positive"):
        processor.window_starts(20, stride=0)


@pytest.mark.parametrize(("stride", "starts"), [(None, [0, 10, 17]), (4, [0, 4, 8, 12, 16, 17])])
def test_stitching_at_mask_ratio_0_returns_the_identity_reconstruction(config, processor, recording, stride, starts):
    model = BrainLMForMaskedSignalModeling(config).eval()
    result = reconstruct_recording(model, processor, recording, mask_ratio=0.0, stride=stride)
    assert result.starts == starts and not result.mask.any()
    np.testing.assert_array_equal(result.signal, recording.T)
    total, count = np.zeros((7, 27)), np.zeros((7, 27))
    with torch.no_grad():
        for start in result.starts:  # each window reconstructed by the model alone, averaged where windows overlap
            window = torch.from_numpy(recording[start : start + 10].T[None].copy())
            logits = model(window, torch.from_numpy(processor.model_coordinates()), mask_ratio=0.0).logits
            total[:, start : start + 10] += logits[0].numpy()
            count[:, start : start + 10] += 1
    np.testing.assert_allclose(result.prediction, total / count, rtol=1e-5, atol=1e-6)
    in_double = reconstruct_recording(model.double(), processor, recording, mask_ratio=0.0, stride=stride)
    np.testing.assert_allclose(in_double.prediction, result.prediction, rtol=1e-4, atol=1e-5)  # inputs follow dtype


def test_stitching_prefers_the_windows_that_masked_a_timepoint():
    predictions = np.array([[[1.0, 2.0, 3.0, 4.0]], [[10.0, 20.0, 30.0, 40.0]]])  # (W=2, V=1, Tw=4), starts 0, 2
    masks = np.array([[[0, 0, 1, 0]], [[0, 1, 0, 0]]])
    prediction, mask = stitch(predictions, masks, [0, 2], 6)
    # t=2: masked in window 0 only -> 3; t=3: masked in window 1 only -> 20; t=0,1: window 0; t=4,5: window 1
    np.testing.assert_allclose(prediction, [[1.0, 2.0, 3.0, 20.0, 30.0, 40.0]])
    assert mask.tolist() == [[False, False, True, True, False, False]]
    with pytest.raises(ValueError, match="^The windows do not cover every timepoint") as error:
        stitch(predictions, masks, [0, 2], 7)
    assert error.value.argument == "starts"
    both = np.array([[[0, 0, 1, 1]], [[1, 1, 0, 0]]])  # t=2, 3 masked in both windows: the mean of the two
    prediction, mask = stitch(predictions, both, [0, 2], 6)
    np.testing.assert_allclose(prediction, [[1.0, 2.0, 6.5, 12.0, 30.0, 40.0]])
    assert mask.tolist() == [[False, False, True, True, False, False]]


def test_masked_reconstruction_uses_the_seeded_masks_and_reports_per_region_metrics(config, processor, recording):
    model = BrainLMForMaskedSignalModeling(config).eval()
    first = reconstruct_recording(model, processor, recording, mask_ratio=0.5, seed=3)
    again = reconstruct_recording(model, processor, recording, mask_ratio=0.5, seed=3)
    np.testing.assert_array_equal(first.mask, again.mask)
    by_default = reconstruct_recording(model, processor, recording, seed=3)  # mask_ratio 0.5 by default
    np.testing.assert_array_equal(by_default.mask, first.mask)
    assert 0.3 < first.mask.mean() < 0.8  # half the tokens of each window; the overlap may add some
    metrics = first.metrics()
    assert metrics["overall"] == masked_reconstruction_metrics(first.prediction, first.signal, first.mask)
    for region in range(7):  # per region = the pooled metrics restricted to that region
        alone = masked_reconstruction_metrics(first.prediction[region], first.signal[region], first.mask[region])
        for key in ("mse", "r2", "pearson_r"):
            assert metrics["per_region"][key][region] == pytest.approx(alone[key], rel=1e-9)
    with pytest.raises(ValueError, match="^Reconstruction needs the decoder") as error:
        reconstruct_recording(BrainLMModel(config), processor, recording)
    assert error.value.argument == "model"
    with pytest.raises(ValueError, match="fewer than one window"):
        reconstruct_recording(model, processor, recording[:9])


def test_region_metrics_mark_regions_without_masked_timepoints():
    target = np.array([[1.0, 2.0, 3.0, 4.0], [1.0, 2.0, 3.0, 4.0]])
    mask = np.array([[1, 1, 1, 0], [0, 0, 0, 1]])
    values = region_metrics(target + 1, target, mask)
    assert values["mse"][0] == 1.0 and values["r2"][0] == pytest.approx(1 - 3 / 2) and values["pearson_r"][0] == 1
    assert all(np.isnan(values[key][1]) for key in ("mse", "r2", "pearson_r"))
    two = region_metrics(target + [[1.0], [2.0]], target, [[1, 1, 0, 0], [0, 0, 1, 1]])  # 2 masked: enough
    assert two["mse"].tolist() == [1.0, 4.0] and two["pearson_r"].tolist() == [1.0, 1.0]


def test_forecast_baselines_by_hand():
    baselines = forecast_baselines(np.array([[1.0, 2.0, 3.0, 4.0, 5.0]]), horizon=3, ar_order=1)
    np.testing.assert_allclose(baselines["persistence"], [[5, 5, 5]])
    np.testing.assert_allclose(baselines["region_mean"], [[3, 3, 3]])
    np.testing.assert_allclose(baselines["autoregressive"], [[6, 7, 8]])  # x_t = 1 + x_{t-1} fits exactly
    fibonacci = np.array([[[1.0, 1, 2, 3, 5, 8, 13, 21]]])  # x_t = x_{t-1} + x_{t-2}
    np.testing.assert_allclose(forecast_baselines(fibonacci, 2, ar_order=2)["autoregressive"], [[[34, 55]]])
    with pytest.raises(ValueError, match="needs at least 5 past timepoints"):
        forecast_baselines(np.ones((1, 4)), 2, ar_order=2)


def test_horizon_metrics_by_hand():
    target = np.array([[[1.0, 0.0]], [[3.0, 2.0]]])  # (W=2, V=1, H=2)
    prediction = np.array([[[2.0, 0.0]], [[3.0, 0.0]]])
    metrics = horizon_metrics(prediction, target)
    np.testing.assert_allclose(metrics["mse"], [0.5, 2.0])
    np.testing.assert_allclose(metrics["r2"], [1 - 1 / 2, 1 - 4 / 2])


def test_forecast_recording_predicts_the_last_windows_from_the_past(config, inputs, recording):
    model = BrainLMForMaskedSignalModeling(config).eval()
    processor = BrainLMFeatureExtractor(
        normalization="none", coordinates=inputs["coordinates"].tolist(), num_timepoints=20
    )
    forecast = forecast_recording(model, processor, recording, mask_ratio=0.3)  # ceil(0.3 * 4) = 2 windows of 5
    assert forecast.starts == [0, 7] and forecast.past.shape == (2, 7, 10) and forecast.target.shape == (2, 7, 10)
    np.testing.assert_array_equal(forecast.target[1], recording[17:27].T)
    np.testing.assert_array_equal(forecast.past[1], recording[7:17].T)
    with torch.no_grad():
        window = torch.from_numpy(recording[7:27].T[None].copy())
        xyz = torch.from_numpy(processor.model_coordinates())
        out = model(window, xyz, mask_ratio=0.3, mask_strategy="forecast")
    np.testing.assert_allclose(forecast.prediction[1], out.logits[0, :, 10:], rtol=1e-5, atol=1e-6)
    metrics = forecast.metrics(ar_order=2)
    assert set(metrics) == {"model", "persistence", "autoregressive", "region_mean"}
    persistence = np.broadcast_to(forecast.past[..., -1:], forecast.target.shape)
    assert metrics["persistence"]["by_horizon"] == horizon_metrics(persistence, forecast.target)
    assert len(metrics["model"]["by_horizon"]["mse"]) == 10


def test_forecast_with_converted_tile_models_uses_predict_last(recording):
    config = tile_config(image_size=16, patch_size=4, num_hidden_layers=1)  # 7 regions x 10 timepoints in 16 x 16
    model = BrainLMForMaskedSignalModeling(config).eval()
    processor = BrainLMFeatureExtractor(normalization="none", num_timepoints=10)
    forecast = forecast_recording(model, processor, recording, mask_ratio=0.3)
    # left padding 3: signal columns 3..12; int(0.3 * 10) = 3 timepoints from column 10 -> tile columns 2..3 (8..15)
    assert forecast.target.shape == (3, 7, 5) and forecast.past.shape == (3, 7, 5)
    with pytest.raises(ValueError, match="does not hide a final block"):
        forecast_recording(model, processor, recording, mask_ratio=0.0)


@pytest.mark.slow
def test_forecast_fine_tuning_through_brainlm_pretrain(tmp_path):
    rng = np.random.default_rng(0)
    for subject in range(4):
        np.save(tmp_path / f"sub-{subject}_bold.npy", rng.normal(size=(60, 6)).astype(np.float32))
    prepare_dataset(
        tmp_path / "*.npy",
        tmp_path / "prepared",
        num_timepoints=40,
        normalization="zscore",
        shard_multiple=1,
        splits={"train": 0.5, "validation": 0.25, "test": 0.25},
        coordinates=rng.normal(size=(6, 3)) * 40,
    )
    checkpoint = tmp_path / "checkpoint"
    BrainLMForMaskedSignalModeling(BrainLMConfig(patch_size=20, **SMALL)).save_pretrained(checkpoint)
    arguments = {
        "model": checkpoint,
        "mask_strategy": "forecast",
        "mask_ratio": 0.3,
        "dataset": tmp_path / "prepared",
        "output_dir": tmp_path / "run",
        "max_steps": 2,
        "per_device_train_batch_size": 2,
        "learning_rate": 1e-2,
        "warmup_steps": 1,
        "eval_steps": 0,
        "eval_windows": 2,
        "logging_steps": 1,
        "save_steps": 2,
    }
    assert main(["pretrain", *(item for key, value in arguments.items() for item in (f"--{key}", str(value)))]) == 0
    final = tmp_path / "run" / "final"
    assert json.loads((final / "config.json").read_text())["mask_strategy"] == "forecast"
    assert len((tmp_path / "run" / "log.jsonl").read_text().splitlines()) == 2
    before, after = load_file(checkpoint / "model.safetensors"), load_file(final / "model.safetensors")
    assert any(not torch.equal(before[name], after[name]) for name in before)
    # validation used forecast masks: ceil(0.3 * 2) = 1 window of 20 in each of the 6 regions of the 2 windows
    # (random masking would hide 12 - int(12 * 0.7) = 4 tokens per window: 160 timepoints)
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["model"]["num_masked"] == 2 * 6 * 20


def _processor(coordinates, **kwargs) -> BrainLMFeatureExtractor:
    return BrainLMFeatureExtractor(normalization="zscore", coordinates=np.asarray(coordinates).tolist(), **kwargs)


def test_reconstruction_with_a_region_order_is_the_atlas_order_model_permuted(config, inputs, recording):
    """A region-ordered processor (111M/650M family): the model sees rows in model order, the results come back in
    atlas order, equal to running a processor without order on the recording permuted into model order."""
    model = BrainLMForMaskedSignalModeling(config).eval()
    coordinates = inputs["coordinates"].numpy()
    ordered_processor, plain_processor = ordered_and_plain(coordinates, num_timepoints=10)
    ordered = reconstruct_recording(model, ordered_processor, recording, mask_ratio=0.5, seed=1)
    plain = reconstruct_recording(model, plain_processor, recording[:, ORDER], mask_ratio=0.5, seed=1)  # model order
    inverse = np.argsort(ORDER)
    np.testing.assert_allclose(ordered.prediction, plain.prediction[inverse], rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(ordered.mask, plain.mask[inverse])
    np.testing.assert_allclose(ordered.signal, plain.signal[inverse], rtol=1e-6, atol=1e-6)
    assert not np.array_equal(ordered.mask, plain.mask)  # the order is visible in the masks


def test_forecast_with_a_region_order_is_in_atlas_order(config, inputs, recording):
    model = BrainLMForMaskedSignalModeling(config).eval()
    coordinates = inputs["coordinates"].numpy()
    ordered_processor, plain_processor = ordered_and_plain(coordinates, num_timepoints=20)
    ordered = forecast_recording(model, ordered_processor, recording, mask_ratio=0.3)
    plain = forecast_recording(model, plain_processor, recording[:, ORDER], 0.3)
    inverse = np.argsort(ORDER)
    for name in ("past", "target", "prediction"):
        np.testing.assert_allclose(getattr(ordered, name), getattr(plain, name)[:, inverse], rtol=1e-5, atol=1e-6)
    normalised = (recording - recording.mean(0)) / recording.std(0)  # atlas order, as the recording is given
    np.testing.assert_allclose(ordered.target[1], normalised[17:27].T, atol=1e-5)


def test_reconstruction_and_forecast_resample_a_foreign_tr_to_the_model_tr(config, inputs, recording):
    """A recording at TR 0.8 s for a model at 0.5 s: 27 samples span 20.8 s -> 42 timepoints on the model's grid."""
    model = BrainLMForMaskedSignalModeling(config).eval()
    processor = _processor(inputs["coordinates"], region_order=ORDER, num_timepoints=10, repetition_time=0.5)
    resampled = interpolated(recording, 0.8, 0.5)
    assert resampled.shape == (42, 7)
    foreign = reconstruct_recording(model, processor, recording, mask_ratio=0.5, seed=2, repetition_time=0.8)
    native = reconstruct_recording(model, processor, resampled, mask_ratio=0.5, seed=2, repetition_time=0.5)
    assert foreign.prediction.shape == (7, 42) and foreign.starts == [0, 10, 20, 30, 32]
    np.testing.assert_allclose(foreign.signal, ((resampled - resampled.mean(0)) / resampled.std(0)).T, atol=1e-5)
    np.testing.assert_allclose(foreign.prediction, native.prediction, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(foreign.mask, native.mask)
    processor = _processor(inputs["coordinates"], region_order=ORDER, num_timepoints=20, repetition_time=0.5)
    forecast = forecast_recording(model, processor, recording, mask_ratio=0.3, repetition_time=0.8)
    expected = forecast_recording(model, processor, resampled, mask_ratio=0.3)
    assert forecast.starts == [0, 20, 22]
    np.testing.assert_allclose(forecast.prediction, expected.prediction, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(forecast.target, expected.target, atol=1e-6)


@pytest.mark.parametrize("batch_size", [1, 2, 8])  # 3 windows: one at a time, a batch that does not divide, one batch
def test_reconstruction_does_not_depend_on_the_batch_boundaries(config, processor, recording, batch_size):
    model = BrainLMForMaskedSignalModeling(config).eval()
    whole = reconstruct_recording(model, processor, recording, mask_ratio=0.5, seed=4, batch_size=3)
    batched = reconstruct_recording(model, processor, recording, mask_ratio=0.5, seed=4, batch_size=batch_size)
    np.testing.assert_array_equal(batched.mask, whole.mask)
    np.testing.assert_allclose(batched.prediction, whole.prediction, rtol=1e-5, atol=1e-6)
    forecast = forecast_recording(model, processor, recording, mask_ratio=0.3, batch_size=batch_size)
    np.testing.assert_allclose(
        forecast.prediction, forecast_recording(model, processor, recording, 0.3, batch_size=3).prediction, atol=1e-6
    )


@pytest.mark.parametrize(("mask_ratio", "masked_tokens"), [(0.3, 5), (0.5, 7), (0.75, 11)])
def test_each_window_masks_the_token_count_its_ratio_gives(config, processor, recording, mask_ratio, masked_tokens):
    """14 tokens per window (7 regions x 2 patches of 5): 14 - int(14 * (1 - ratio)) are masked, whole patches."""
    _, _, masks = predict_windows(
        BrainLMForMaskedSignalModeling(config).eval(), processor, recording, [0, 10, 17], mask_ratio
    )
    assert masks.shape == (3, 7, 10)
    np.testing.assert_array_equal(masks.sum((1, 2)), [5 * masked_tokens] * 3)
    patches = masks.reshape(3, 7, 2, 5)
    assert (patches.min(-1) == patches.max(-1)).all()


@pytest.mark.parametrize(("mask_ratio", "horizon"), [(0.3, 10), (0.55, 15), (0.76, 20)])
def test_forecast_horizon_rounds_the_window_count_up(config, inputs, recording, mask_ratio, horizon):
    """4 windows of 5 per region: ceil(ratio * 4) windows are forecast (0.3 -> 2, 0.55 -> 3, 0.76 -> 4)."""
    if horizon == 20:
        with pytest.raises(ValueError, match="masks all 4 windows of each region"):
            forecast_recording(
                BrainLMForMaskedSignalModeling(config).eval(), _processor(inputs["coordinates"], num_timepoints=20),
                recording, mask_ratio,
            )  # fmt: skip
        return
    forecast = forecast_recording(
        BrainLMForMaskedSignalModeling(config).eval(), _processor(inputs["coordinates"], num_timepoints=20),
        recording, mask_ratio,
    )  # fmt: skip
    assert forecast.target.shape == (2, 7, horizon) and forecast.past.shape == (2, 7, 20 - horizon)


def test_reconstruction_with_the_forecast_strategy_masks_the_end_of_every_window(config, processor, recording):
    """`mask_strategy` reaches the model: ceil(0.5 * 2) = 1 window of 5 at the end of each of the windows at 0, 10,
    17 -> timepoints 5-9, 15-19 and 22-26 masked in every region."""
    model = BrainLMForMaskedSignalModeling(config).eval()
    result = reconstruct_recording(model, processor, recording, mask_ratio=0.5, mask_strategy="forecast")
    expected = np.zeros(27, bool)
    for start in (5, 15, 22):
        expected[start : start + 5] = True
    np.testing.assert_array_equal(result.mask, np.broadcast_to(expected, (7, 27)))
