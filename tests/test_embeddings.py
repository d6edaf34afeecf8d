"""Per-recording embeddings: covering windows, determinism, batch-size invariance, files and `brainlm embed`."""

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from brainlm_hf import BrainLMFeatureExtractor, BrainLMForMaskedSignalModeling, BrainLMModel
from brainlm_hf.analysis.recording_embeddings import embed_recordings, save_embeddings
from brainlm_hf.cli import main as cli


@pytest.fixture
def processor(inputs):
    return BrainLMFeatureExtractor(
        normalization="zscore", coordinates=inputs["coordinates"].tolist(), num_timepoints=30
    )


@pytest.fixture
def recordings():
    rng = np.random.default_rng(0)
    return [rng.normal(size=(length, 7)).astype(np.float32) for length in (30, 47, 90, 61)]


def test_covering_windows(processor):
    assert processor.window_starts(90) == [0, 30, 60]
    assert processor.window_starts(100) == [0, 30, 60, 70]  # the last window is aligned to the end
    assert processor.window_starts(100, cover_end=False) == [0, 30, 60]  # the remainder is dropped
    assert processor.window_starts(30) == [0]
    with pytest.raises(ValueError, match="fewer than one window"):
        processor.window_starts(29)


def test_windows_are_normalised_whole_recordings_in_model_order(inputs, recordings):
    processor = BrainLMFeatureExtractor(
        normalization="zscore", coordinates=inputs["coordinates"].tolist(), region_order=[6, 5, 4, 3, 2, 1, 0],
        num_timepoints=30,
    )  # fmt: skip
    windows, owners = processor.windows(recordings)
    assert owners.tolist() == [0, 1, 1, 2, 2, 2, 3, 3, 3]
    normalised = (recordings[1] - recordings[1].mean(0)) / recordings[1].std(0)  # the whole recording, not a window
    np.testing.assert_allclose(windows[2], normalised[17:47, ::-1].T, atol=1e-5)


def test_embeddings_are_deterministic_and_batch_size_invariant(config, processor, recordings):
    torch.manual_seed(0)
    model = BrainLMModel(config)
    first = embed_recordings(model, processor, recordings, batch_size=2)
    assert first.shape == (4, config.hidden_size) and first.dtype == np.float32
    np.testing.assert_array_equal(first, embed_recordings(model, processor, recordings, batch_size=2))
    np.testing.assert_allclose(first, embed_recordings(model, processor, recordings, batch_size=9), atol=1e-5)
    np.testing.assert_allclose(first, embed_recordings(model, processor, recordings, batch_size=1), atol=1e-5)


def test_embedding_is_the_mean_over_windows_of_the_unmasked_encoder(config, processor, recordings):
    torch.manual_seed(0)
    model = BrainLMForMaskedSignalModeling(config).eval()  # any BrainLM model: its encoder is used, never masked
    windows, _ = processor.windows(recordings[2:3])  # 3 windows
    with torch.no_grad():
        hidden = model.brainlm(torch.from_numpy(windows), torch.from_numpy(processor.model_coordinates()))
    np.testing.assert_allclose(
        embed_recordings(model, processor, recordings[2:3], pooling="cls")[0],
        hidden.last_hidden_state[:, 0].mean(0).numpy(),
        atol=1e-6,
    )
    np.testing.assert_allclose(
        embed_recordings(model, processor, recordings[2:3], pooling="mean")[0],
        hidden.last_hidden_state[:, 1:].mean((0, 1)).numpy(),
        atol=1e-6,
    )


def test_bad_inputs(config, processor, recordings):
    model = BrainLMModel(config)
    with pytest.raises(ValueError, match="fewer than one window"):
        embed_recordings(model, processor, [recordings[0][:20]])
    with pytest.raises(ValueError, match="has 5 regions"):
        embed_recordings(model, processor, [recordings[0][:, :5]])
    with pytest.raises(ValueError, match="pooling"):
        embed_recordings(model, processor, recordings, pooling="max")


def test_save_embeddings(tmp_path):
    values = np.arange(6, dtype=np.float32).reshape(2, 3)
    table = pq.read_table(save_embeddings(tmp_path / "e.parquet", ["a", "b"], values))
    assert table.column("id").to_pylist() == ["a", "b"]
    np.testing.assert_array_equal(np.stack(table.column("embedding").to_numpy(zero_copy_only=False)), values)
    saved = np.load(save_embeddings(tmp_path / "e.npz", ["a", "b"], values))
    assert saved["ids"].tolist() == ["a", "b"] and np.array_equal(saved["embeddings"], values)
    with pytest.raises(ValueError, match=".parquet or .npz"):
        save_embeddings(tmp_path / "e.csv", ["a", "b"], values)


def test_cli_embed(tmp_path, config, processor, recordings):
    torch.manual_seed(0)
    model = BrainLMForMaskedSignalModeling(config)
    model.save_pretrained(tmp_path / "model")
    processor.save_pretrained(tmp_path / "model")
    for index, recording in enumerate(recordings):
        np.save(tmp_path / f"sub-{index:02d}_bold.npy", recording)
    cli(["embed", str(tmp_path / "model"), str(tmp_path / "*.npy"), "--output", str(tmp_path / "out.parquet"),
         "--pooling", "mean", "--quiet"])  # fmt: skip
    table = pq.read_table(tmp_path / "out.parquet")
    assert table.column("id").to_pylist() == [f"sub-{i:02d}_bold" for i in range(4)]
    expected = embed_recordings(BrainLMModel.from_pretrained(tmp_path / "model"), processor, recordings, "mean")
    np.testing.assert_allclose(np.stack(table.column("embedding").to_numpy(zero_copy_only=False)), expected, atol=1e-6)
