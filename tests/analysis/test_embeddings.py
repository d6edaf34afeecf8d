"""Per-recording embeddings: covering windows, determinism, batch-size invariance, files and `brainlm embed`."""

import re

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from brainlm_hf import BrainLMConfig, BrainLMFeatureExtractor, BrainLMForMaskedSignalModeling, BrainLMModel
from brainlm_hf.analysis.recording_embeddings import embed_recordings, save_embeddings
from brainlm_hf.cli import main as cli

from .expectations import ORDER, interpolated, ordered_and_plain


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
    assert cli(["embed", str(tmp_path / "model"), str(tmp_path / "*.npy"), "--output", str(tmp_path / "out.parquet"),
         "--pooling", "mean", "--quiet"]) == 0  # fmt: skip
    table = pq.read_table(tmp_path / "out.parquet")
    assert table.column("id").to_pylist() == [f"sub-{i:02d}_bold" for i in range(4)]
    expected = embed_recordings(BrainLMModel.from_pretrained(tmp_path / "model"), processor, recordings, "mean")
    np.testing.assert_allclose(np.stack(table.column("embedding").to_numpy(zero_copy_only=False)), expected, atol=1e-6)
    assert cli(["embed", str(tmp_path / "model"), str(tmp_path / "*.npy"), "--output", str(tmp_path / "bf16.parquet"),
         "--pooling", "mean", "--dtype", "bf16", "--quiet"]) == 0  # fmt: skip
    bf16 = np.stack(pq.read_table(tmp_path / "bf16.parquet").column("embedding").to_numpy(zero_copy_only=False))
    assert bf16.dtype == np.float32 and not np.array_equal(bf16, expected)  # computed under bf16 autocast
    assert np.linalg.norm(bf16 - expected) / np.linalg.norm(expected) < 2e-2  # bf16 rounds to 2^-8 relative


def test_cli_embed_ends_with_a_summary_line(tmp_path, config, processor, recordings, capsys):
    BrainLMForMaskedSignalModeling(config).save_pretrained(tmp_path / "model")
    processor.save_pretrained(tmp_path / "model")
    for index, recording in enumerate(recordings):
        np.save(tmp_path / f"sub-{index:02d}_bold.npy", recording)
    assert cli(["embed", str(tmp_path / "model"), str(tmp_path / "*.npy"), "--output", str(tmp_path / "e.npz")]) == 0
    windows = len(processor.windows(recordings)[0])  # what the model ran on
    summary = capsys.readouterr().err.strip().splitlines()[-1]
    assert re.fullmatch(rf"embed: 4 recordings, {windows} windows in [\d.]+ s \([\d.]+ recordings/s\)", summary)


def encoder_states(model, processor, recording, cover_end=True):
    """The unmasked encoder's outputs on the windows of one recording (the expectation, computed directly)."""
    windows, _ = processor.windows([recording], cover_end=cover_end)
    with torch.no_grad():
        return model.base_model(
            torch.from_numpy(windows), torch.from_numpy(processor.model_coordinates()), output_hidden_states=True
        )


@pytest.mark.parametrize("layer", [None, -1, 0, 1, -3])
def test_layer_chooses_the_hidden_state(config, processor, recordings, layer):
    torch.manual_seed(0)
    model = BrainLMModel(config).eval()
    states = encoder_states(model, processor, recordings[2])  # 3 windows
    # None: after the final LayerNorm; i: hidden_states[i] (0 = input embeddings, -1 = last layer before the norm)
    hidden = states.last_hidden_state if layer is None else states.hidden_states[layer]
    if layer == -1:
        torch.testing.assert_close(model.layernorm(hidden), states.last_hidden_state)
    for pooling, expected in [("cls", hidden[:, 0].mean(0)), ("mean", hidden[:, 1:].mean((0, 1)))]:
        got = embed_recordings(model, processor, recordings[2:3], pooling=pooling, layer=layer)[0]
        np.testing.assert_allclose(got, expected.numpy(), atol=1e-5)


def test_a_layer_that_does_not_exist_is_refused(config, processor, recordings):
    model = BrainLMModel(config)  # 2 layers: hidden states 0, 1, 2
    for layer in (3, -4):
        with pytest.raises(ValueError, match=f"layer {layer} does not exist.*0 \\(its input\\) to 2"):
            embed_recordings(model, processor, recordings, layer=layer)
    with pytest.raises(ValueError, match="window_policy must be one of"):
        embed_recordings(model, processor, recordings, window_policy="sliding")


def test_non_overlapping_windows_drop_the_remainder(config, processor, recordings):
    torch.manual_seed(0)
    model = BrainLMModel(config).eval()
    # 47 timepoints: covering windows start at 0 and 17, non-overlapping ones at 0 only
    covering = embed_recordings(model, processor, recordings[1:2])[0]
    dropped = embed_recordings(model, processor, recordings[1:2], window_policy="non_overlapping")[0]
    states = encoder_states(model, processor, recordings[1])
    np.testing.assert_allclose(covering, states.last_hidden_state[:, 0].mean(0).numpy(), atol=1e-5)
    np.testing.assert_allclose(dropped, states.last_hidden_state[0, 0].numpy(), atol=1e-5)
    tokens = embed_recordings(model, processor, recordings, pooling="tokens", window_policy="non_overlapping")
    assert [len(t) for t in tokens] == [1, 1, 3, 2]  # 30, 47, 90, 61 timepoints


def test_tokens_are_every_token_of_every_window_ragged_per_recording(config, processor, recordings):
    torch.manual_seed(0)
    model = BrainLMModel(config).eval()
    tokens = embed_recordings(model, processor, recordings, pooling="tokens", layer=-1, batch_size=3)
    num_tokens = 7 * 30 // config.patch_size  # region-window layout: every token holds data
    assert [t.shape for t in tokens] == [(n, 1 + num_tokens, config.hidden_size) for n in (1, 2, 3, 3)]
    assert all(t.dtype == np.float32 for t in tokens)
    states = encoder_states(model, processor, recordings[3])  # 61 timepoints: windows at 0, 30, 31
    np.testing.assert_allclose(tokens[3], states.hidden_states[-1].numpy(), atol=1e-5)  # CLS first, canonical order
    padded = embed_recordings(model, processor, recordings, pooling="tokens", include_padding_tokens=True)
    assert [t.shape for t in padded] == [(n, 1 + num_tokens, config.hidden_size) for n in (1, 2, 3, 3)]


def test_tile_tokens_and_mean_leave_out_tiles_of_padding_only():
    config = BrainLMConfig(
        token_layout="tile_2d", patch_size=4, image_size=16, hidden_size=16, num_hidden_layers=1,
        num_attention_heads=2, intermediate_size=32,
    )  # fmt: skip
    torch.manual_seed(0)
    model = BrainLMModel(config).eval()
    processor = BrainLMFeatureExtractor(normalization="zscore", num_timepoints=4)
    recording = np.random.default_rng(1).normal(size=(8, 7)).astype(np.float32)  # 2 windows of 7 x 4
    # 7 x 4 centred in the 16 x 16 square: rows 4-10 and columns 6-9, i.e. tiles (1, 1), (1, 2), (2, 1), (2, 2)
    data_tiles = [5, 6, 9, 10]
    windows, _ = processor.windows([recording])
    with torch.no_grad():
        hidden = model(torch.from_numpy(windows)).last_hidden_state  # (2, 1 + 16, H)
    tokens = embed_recordings(model, processor, [recording], pooling="tokens")[0]
    np.testing.assert_allclose(tokens, hidden[:, [0] + [1 + t for t in data_tiles]].numpy(), atol=1e-6)
    everything = embed_recordings(model, processor, [recording], pooling="tokens", include_padding_tokens=True)[0]
    np.testing.assert_allclose(everything, hidden.numpy(), atol=1e-6)
    mean = embed_recordings(model, processor, [recording], pooling="mean")[0]
    np.testing.assert_allclose(mean, hidden[:, [1 + t for t in data_tiles]].mean((0, 1)).numpy(), atol=1e-6)


def test_save_tokens(tmp_path):
    tokens = [np.arange(2 * 3 * 4, dtype=np.float32).reshape(2, 3, 4), -np.ones((1, 3, 4), dtype=np.float32)]
    saved = np.load(save_embeddings(tmp_path / "t.npz", ["a", "b"], tokens))
    assert saved["ids"].tolist() == ["a", "b"] and saved["recording_index"].tolist() == [0, 0, 1]
    np.testing.assert_array_equal(saved["tokens"], np.concatenate(tokens))
    table = pq.read_table(save_embeddings(tmp_path / "t.parquet", ["a", "b"], tokens)).to_pydict()
    assert table["id"] == ["a", "a", "b"] and table["window"] == [0, 1, 0]
    np.testing.assert_array_equal(np.asarray(table["tokens"], dtype=np.float32), np.concatenate(tokens))


def test_cli_embed_tokens_layer_and_window_policy(tmp_path, config, processor, recordings):
    torch.manual_seed(0)
    BrainLMForMaskedSignalModeling(config).save_pretrained(tmp_path / "model")
    processor.save_pretrained(tmp_path / "model")
    for index, recording in enumerate(recordings):
        np.save(tmp_path / f"sub-{index:02d}_bold.npy", recording)
    model = BrainLMModel.from_pretrained(tmp_path / "model")
    options = {"layer": -1, "window_policy": "non_overlapping"}
    expected = embed_recordings(model, processor, recordings, pooling="tokens", **options)
    for suffix in ("npz", "parquet"):
        assert cli(["embed", str(tmp_path / "model"), str(tmp_path / "*.npy"), "--output",
                    str(tmp_path / f"t.{suffix}"), "--pooling", "tokens", "--layer", "-1", "--window-policy",
                    "non_overlapping", "--quiet"]) == 0  # fmt: skip
    saved = np.load(tmp_path / "t.npz")
    assert saved["ids"].tolist() == [f"sub-{i:02d}_bold" for i in range(4)]
    np.testing.assert_allclose(saved["tokens"], np.concatenate(expected), atol=1e-6)
    table = pq.read_table(tmp_path / "t.parquet").to_pydict()
    np.testing.assert_allclose(np.asarray(table["tokens"], dtype=np.float32), np.concatenate(expected), atol=1e-6)
    assert cli(["embed", str(tmp_path / "model"), str(tmp_path / "*.npy"), "--output", str(tmp_path / "m.npz"),
         "--pooling", "mean", "--layer", "-1", "--quiet"]) == 0  # fmt: skip
    np.testing.assert_allclose(
        np.load(tmp_path / "m.npz")["embeddings"],
        embed_recordings(model, processor, recordings, pooling="mean", layer=-1),
        atol=1e-6,
    )


def test_cli_embed_fits_an_unfitted_robust_processor_only_when_asked(tmp_path, capsys, config, inputs, recordings):
    torch.manual_seed(0)
    BrainLMForMaskedSignalModeling(config).save_pretrained(tmp_path / "model")
    robust = BrainLMFeatureExtractor(
        normalization="robust", coordinates=inputs["coordinates"].tolist(), num_timepoints=30
    )
    robust.save_pretrained(tmp_path / "model")  # like a converted release: robust scaling without statistics
    for index, recording in enumerate(recordings):
        np.save(tmp_path / f"sub-{index:02d}_bold.npy", recording)
    command = [
        "embed",
        str(tmp_path / "model"),
        str(tmp_path / "*.npy"),
        "--output",
        str(tmp_path / "e.npz"),
        "--quiet",
    ]
    assert cli(command) == 2
    error = capsys.readouterr().err
    assert "holds no statistics" in error and "--fit-processor" in error
    assert cli([*command, "--fit-processor"]) == 0
    expected = embed_recordings(BrainLMModel.from_pretrained(tmp_path / "model"), robust.fit(recordings), recordings)
    np.testing.assert_allclose(np.load(tmp_path / "e.npz")["embeddings"], expected, atol=1e-6)


@pytest.mark.parametrize("pooling", ["cls", "mean"])
def test_embeddings_of_region_ordered_recordings_at_their_own_trs(config, inputs, recordings, pooling):
    """A region-ordered processor at TR 0.5 s and recordings at 0.8 s, unknown, 0.5 s and 1.0 s: the same embeddings
    as a processor without order given each recording resampled by np.interp and permuted into model order."""
    coordinates = inputs["coordinates"].numpy()
    processor, plain = ordered_and_plain(coordinates, num_timepoints=30, repetition_time=0.5)
    trs = [0.8, None, 0.5, 1.0]
    resampled = [r if tr is None else interpolated(r, tr, 0.5) for r, tr in zip(recordings, trs, strict=True)]
    assert [len(r) for r in resampled] == [47, 47, 90, 121]  # floor((T - 1) * tr / 0.5) + 1
    torch.manual_seed(0)
    model = BrainLMModel(config).eval()
    embedded = embed_recordings(model, processor, recordings, pooling=pooling, batch_size=3, repetition_times=trs)
    expected = embed_recordings(model, plain, [r[:, ORDER] for r in resampled], pooling=pooling, batch_size=3)
    np.testing.assert_allclose(embedded, expected, rtol=1e-5, atol=1e-6)
    named = dict(zip("abcd", recordings, strict=True))
    by_name = embed_recordings(
        model, processor, named, pooling=pooling, repetition_times=dict(zip("abcd", trs, strict=True))
    )
    np.testing.assert_allclose(by_name, expected, rtol=1e-5, atol=1e-6)
    unordered = embed_recordings(model, plain, [r[:, ORDER] for r in recordings], pooling=pooling)
    assert not np.allclose(embedded[0], unordered[0], atol=1e-3)  # the TR of recording 0 matters
