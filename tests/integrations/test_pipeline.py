"""`BrainLMPipeline` through transformers' `pipeline`: every kind of input, batching, the embedding options, the
reconstruction and forecast outputs, each against brainlm_hf's own functions on the same model and processor."""

import numpy as np
import pytest
import torch
from transformers import pipeline

from brainlm_hf import BrainLMFeatureExtractor, BrainLMForMaskedSignalModeling, BrainLMPipeline
from brainlm_hf.analysis import embed_recordings
from brainlm_hf.analysis.reconstruction import predict_windows
from brainlm_hf.pipeline_brainlm import TASK

from ..conftest import save_region_image, toy_atlas

TR = 2.0


@pytest.fixture
def release(tmp_path, config):
    """A small pretraining checkpoint of 3 regions with its processor (windows of 30 timepoints at TR 2 s)."""
    torch.manual_seed(0)
    model = BrainLMForMaskedSignalModeling(config).eval()
    coordinates = np.random.default_rng(0).normal(scale=40, size=(3, 3))
    processor = BrainLMFeatureExtractor(
        normalization="zscore", coordinates=coordinates.tolist(), num_timepoints=30, repetition_time=TR
    )
    model.save_pretrained(tmp_path / "ckpt")
    processor.save_pretrained(tmp_path / "ckpt")
    return model, processor, tmp_path / "ckpt"


def recordings(lengths=(70, 45, 30)) -> list[np.ndarray]:
    generator = np.random.default_rng(1)
    return [generator.normal(size=(length, 3)).astype(np.float32) for length in lengths]


def test_arrays_one_or_many_in_batches_give_embed_recordings(release):
    model, processor, folder = release
    data = recordings()
    expected = embed_recordings(model, processor, data, repetition_times=TR)  # (3, H)
    embed = pipeline(TASK, model=str(folder))
    assert isinstance(embed, BrainLMPipeline)
    one = embed(data[0], repetition_time=TR)
    assert one.shape == (model.config.hidden_size,) and one.dtype == np.float32
    np.testing.assert_allclose(one, expected[0], atol=1e-5)
    for batch_size in (1, 4):
        batched = embed(data, repetition_time=TR, batch_size=batch_size)
        np.testing.assert_allclose(np.stack(batched), expected, atol=1e-5)
    by_dict = embed([{"series": r, "repetition_time": TR} for r in data])
    np.testing.assert_allclose(np.stack(by_dict), expected, atol=1e-5)


def test_pooling_and_layer_options(release):
    model, processor, folder = release
    data = recordings()
    embed = pipeline(TASK, model=str(folder))
    expected = embed_recordings(model, processor, data, pooling="mean", layer=-1, repetition_times=TR)
    ours = embed(data, repetition_time=TR, pooling="mean", layer=-1)
    np.testing.assert_allclose(np.stack(ours), expected, atol=1e-5)
    with pytest.raises(ValueError, match="pooling must be one of"):
        embed(data[0], pooling="max")


def test_another_tr_is_resampled(release):
    model, processor, folder = release
    recording = recordings((90,))[0]
    embed = pipeline(TASK, model=str(folder))
    expected = embed_recordings(model, processor, [recording], repetition_times=1.0)[0]
    np.testing.assert_allclose(embed(recording, repetition_time=1.0), expected, atol=1e-5)
    assert not np.allclose(embed(recording, repetition_time=TR), expected, atol=1e-3)


def test_parcel_tables_and_nifti_images(release, tmp_path):
    model, processor, folder = release
    recording = recordings((60,))[0]
    embed = pipeline(TASK, model=str(folder))
    expected = embed(recording, repetition_time=TR)
    np.save(tmp_path / "sub-1.npy", recording)
    np.savetxt(tmp_path / "sub-2.csv", recording, delimiter=",")
    tables = embed([str(tmp_path / "sub-1.npy"), str(tmp_path / "sub-2.csv")], repetition_time=TR)
    for table in tables:
        np.testing.assert_allclose(table, expected, atol=1e-5)

    _, labels = toy_atlas(tmp_path, 6)
    save_region_image(tmp_path / "sub-3_bold.nii.gz", labels, recording, TR)
    from_image = embed(str(tmp_path / "sub-3_bold.nii.gz"), atlas=str(tmp_path / "toy_atlas.nii.gz"))  # header TR
    np.testing.assert_allclose(from_image, expected, atol=1e-4)


def test_reconstruction_and_forecast_outputs(release):
    model, processor, folder = release
    recording = recordings((70,))[0]
    run = pipeline(TASK, model=str(folder))
    starts = processor.window_starts(70)
    for output, strategy in [("reconstruction", "random"), ("forecast", "forecast")]:
        result = run(recording, repetition_time=TR, output=output, mask_ratio=0.4, seed=3)
        windows, prediction, mask = predict_windows(model, processor, recording, starts, 0.4, strategy, seed=3)
        np.testing.assert_allclose(result["windows"], windows, atol=1e-6)
        np.testing.assert_allclose(result["prediction"], prediction, atol=1e-5)
        np.testing.assert_array_equal(result["mask"], mask)
    forecast = run(recording, repetition_time=TR, output="forecast", mask_ratio=0.4)["mask"]  # (W, V, T)
    assert (forecast[..., -15:] == 1).all() and (forecast[..., :15] == 0).all()  # the last ceil(0.4 * 6) patches


def test_a_model_instance_uses_its_saved_processor(release):
    model, processor, folder = release
    loaded = BrainLMForMaskedSignalModeling.from_pretrained(folder)
    embed = pipeline(TASK, model=loaded)
    assert embed.feature_extractor.to_dict() == processor.to_dict()
    recording = recordings((30,))[0]
    np.testing.assert_allclose(
        embed(recording, repetition_time=TR), embed_recordings(model, processor, [recording])[0], atol=1e-5
    )
    with pytest.raises(ValueError, match="pass feature_extractor="):
        pipeline(TASK, model=BrainLMForMaskedSignalModeling(model.config))


def test_dtype_and_device_as_transformers_pipelines_take_them(release):
    model, processor, folder = release
    data = recordings()
    expected = embed_recordings(model, processor, data, repetition_times=TR)
    embed = pipeline(TASK, model=str(folder), dtype=torch.bfloat16, device="cpu")
    assert embed.model.dtype == torch.bfloat16 and embed.device == torch.device("cpu")
    ours = np.stack(embed(data, repetition_time=TR, batch_size=2))
    assert ours.dtype == np.float32
    np.testing.assert_allclose(ours, expected, atol=0.1)  # bfloat16 keeps about 3 significant digits
    assert not np.array_equal(ours, expected)  # the weights did run in bfloat16
