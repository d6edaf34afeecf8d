"""A cohort at any TR and with short runs (issue 14): resampling to the model's TR, padding short recordings, and
the padded timepoints left out of the loss and of mean pooling, in the processor, the models, prepare, streaming,
embed, attention and fine-tuning."""

import json

import numpy as np
import pytest
import torch

from brainlm_hf import (
    BrainLMConfig,
    BrainLMFeatureExtractor,
    BrainLMForMaskedSignalModeling,
    BrainLMForSequenceClassification,
    BrainLMModel,
)
from brainlm_hf.analysis import embed_recordings
from brainlm_hf.cli import main as cli
from brainlm_hf.data import PreparedDataset, WindowStream, prepare_dataset
from brainlm_hf.training.finetuning import RecordingWindowDataset, predict_recordings

from ..conftest import save_region_image, toy_atlas

REGIONS = 4


def sine(frequency: float, tr: float, frames: int, regions: int = REGIONS) -> np.ndarray:
    """`(frames, regions)`: region r holds sin(2 pi f t + r) sampled every `tr` seconds."""
    time = np.arange(frames)[:, None] * tr
    return np.sin(2 * np.pi * frequency * time + np.arange(regions)).astype(np.float32)


def peak_hz(signal: np.ndarray, tr: float) -> float:
    """The frequency in Hz of the largest spectral peak, zero-padded to a fine grid."""
    spectrum = np.abs(np.fft.rfft(signal - signal.mean(), n=1 << 16))
    return float(np.fft.rfftfreq(1 << 16, d=tr)[spectrum.argmax()])


def processor(**overrides) -> BrainLMFeatureExtractor:
    coordinates = np.random.default_rng(0).normal(size=(REGIONS, 3)).tolist()
    settings = {"normalization": "zscore", "num_timepoints": 40, "repetition_time": 0.735, "coordinates": coordinates}
    return BrainLMFeatureExtractor(**{**settings, **overrides})


@pytest.mark.parametrize(("source_tr", "frequency"), [(2.0, 0.05), (2.0, 0.1), (1.5, 0.08), (0.3, 0.04)])
def test_resampling_keeps_the_frequency_in_hertz(source_tr, frequency):
    """A sine of known frequency at TR 2 s (150 frames, as a clinical run) resampled to 0.735 s: same peak in Hz,
    samples on the model's grid, each within the error bound of linear interpolation."""
    recording = sine(frequency, source_tr, 150)
    resampled = processor().resample(recording, source_tr)
    span = 149 * source_tr
    assert len(resampled) == int(span / 0.735) + 1  # every sample k * 0.735 s within the recording's span
    assert peak_hz(resampled[:, 0], 0.735) == pytest.approx(frequency, abs=2e-3)
    assert peak_hz(recording[:, 0], source_tr) == pytest.approx(frequency, abs=2e-3)
    exact = sine(frequency, 0.735, len(resampled))
    bound = (2 * np.pi * frequency * source_tr) ** 2 / 8  # max |f''| h^2 / 8 for a unit sine
    assert np.abs(resampled - exact).max() <= bound + 1e-5
    np.testing.assert_array_equal(resampled[0], recording[0])  # t = 0 is a sample of both grids


def test_close_or_unknown_trs_are_not_resampled_and_the_tolerance_is_a_setting():
    recording = sine(0.05, 0.72, 100)
    assert processor().resample(recording, 0.72) is recording  # |0.72 - 0.735| < 0.1 s
    assert processor().resample(recording, None) is recording
    assert processor(repetition_time=None).resample(recording, 2.0) is recording  # the model's TR is not known
    assert len(processor().resample(recording, 0.835)) == int(99 * 0.835 / 0.735) + 1  # |dTR| = 0.1: resampled
    assert processor(resample_tolerance=0.01).resample(recording, 0.72) is not recording
    with pytest.raises(ValueError, match="resample_tolerance must be a positive finite number"):
        processor(resample_tolerance=0)
    with pytest.raises(ValueError, match="the repetition time of recording must be a positive finite number"):
        processor().resample(recording, -2.0)
    with pytest.raises(ValueError, match="has 1 timepoint: resampling it to another TR needs at least 2"):
        processor().resample(recording[:1], 2.0)


def test_windows_resample_each_recording_by_its_own_tr():
    p = processor()
    recordings = {"a": sine(0.05, 2.0, 60), "b": sine(0.05, 0.735, 90)}
    windows, owners = p.windows(recordings, repetition_times={"a": 2.0, "b": 0.735})
    expected, _ = p.windows({"a": p.resample(recordings["a"], 2.0), "b": recordings["b"]})
    np.testing.assert_array_equal(windows, expected)
    assert list(owners).count(0) == 5  # 161 frames at 0.735 s: windows 0, 40, 80, 120 and one ending at 161
    again, _ = p.windows(list(recordings.values()), repetition_times=[2.0, None])
    np.testing.assert_array_equal(again, windows)
    with pytest.raises(ValueError, match="repetition_times gives 1 values for 2 recordings"):
        p.windows(list(recordings.values()), repetition_times=[2.0])


def test_short_recordings_are_refused_or_padded_with_their_region_means():
    short = sine(0.05, 2.0, 10) * np.arange(1, REGIONS + 1) + 5  # 18 s -> 25 frames at 0.735 s
    with pytest.raises(ValueError, match="has 25 timepoints \\(at the model's TR\\).*short_recordings='pad'"):
        processor().windows({"short": short}, repetition_times=2.0)
    for normalization in ("zscore", "none"):
        padded = processor(short_recordings="pad", normalization=normalization)
        windows, owners, mask = padded.windows([short], repetition_times=2.0, return_timepoint_mask=True)
        assert windows.shape == (1, REGIONS, 40) and list(owners) == [0]
        np.testing.assert_array_equal(mask, [[1] * 25 + [0] * 15])
        real = padded.normalize(padded.resample(short, 2.0))  # (25, V)
        np.testing.assert_allclose(windows[0, :, :25], real.T, atol=1e-6)
        np.testing.assert_allclose(windows[0, :, 25:], np.repeat(real.mean(0)[:, None], 15, 1), atol=1e-5)
    assert np.abs(windows[0, :, 25:]).max() > 1  # "none": the raw means, not zeros
    recordings = [short, sine(0.05, 0.735, 50)]
    features = processor(short_recordings="pad")(recordings, sliding_windows=True, repetition_time=[2.0, 0.735])
    assert features["timepoint_mask"].shape == (2, 40) and features["timepoint_mask"].sum() == 25 + 40
    with pytest.raises(ValueError, match="short_recordings must be one of"):
        processor(short_recordings="crop")


def test_the_reconstruction_loss_leaves_out_padded_timepoints(config, inputs):
    torch.manual_seed(0)
    model = BrainLMForMaskedSignalModeling(config).eval()
    signal, xyz = inputs["signal_values"], inputs["coordinates"]
    mask = torch.ones(3, 30)
    mask[0, 12:] = 0  # recording 0: 12 real timepoints, then padding
    noise = torch.rand(3, model.num_tokens(7, 30), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        masked = model(signal, xyz, noise=noise, timepoint_mask=mask)
        plain = model(signal, xyz, noise=noise)
    torch.testing.assert_close(masked.logits, plain.logits)  # the encoder and decoder see the same input
    counted = model.mask_to_signal(plain.mask) * mask[:, None, :]
    expected = ((plain.logits - signal).square() * counted).sum() / counted.sum()
    torch.testing.assert_close(masked.loss, expected)
    assert not torch.isclose(masked.loss, plain.loss)
    everything_padded = torch.zeros(3, 30)
    with torch.no_grad():
        assert model(signal, xyz, noise=noise, timepoint_mask=everything_padded).loss == 0  # never NaN
    with pytest.raises(ValueError, match="timepoint_mask must have shape \\(batch, timepoints\\) = \\(3, 30\\)"):
        model(signal, xyz, noise=noise, timepoint_mask=torch.ones(3, 7))


def test_mean_pooling_leaves_out_tokens_made_only_of_padding(config, inputs):
    torch.manual_seed(0)
    model = BrainLMModel(config).eval()
    signal, xyz = inputs["signal_values"], inputs["coordinates"]
    mask = np.ones((3, 30), dtype=bool)
    mask[1, 12:] = False  # windows of 5: tokens 0, 1 real, token 2 half real (kept), 3..5 only padding
    with torch.no_grad():
        outputs = model(signal, xyz, timepoint_mask=mask)  # numpy booleans are accepted
    pooled = model.pool(outputs, 7, 30, "mean")
    tokens = outputs.last_hidden_state[1, 1:].view(7, 6, -1)  # (V, N, H): token v * N + n
    torch.testing.assert_close(pooled[1], tokens[:, :3].reshape(-1, tokens.shape[-1]).mean(0))
    torch.testing.assert_close(pooled[0], outputs.last_hidden_state[0, 1:].mean(0))


def test_mean_pooling_with_padding_in_the_tile_layout():
    config = BrainLMConfig(
        token_layout="tile_2d", patch_size=4, image_size=16, hidden_size=16, num_hidden_layers=1,
        num_attention_heads=2, intermediate_size=32, mask_strategy="predict_last",
    )  # fmt: skip
    torch.manual_seed(0)
    model = BrainLMModel(config).eval()
    signal = torch.randn(1, 10, 16)  # rows 3..12 of the square hold regions; every column holds time
    mask = torch.ones(1, 16)
    mask[0, 9:] = 0  # columns 9..15 padding: tile columns 0, 1, 2 hold real timepoints, column 3 none
    with torch.no_grad():
        outputs = model(signal, timepoint_mask=mask)
    hidden = outputs.last_hidden_state[0, 1:].view(4, 4, -1)  # (tile row, tile column, H)
    rows_with_regions = [0, 1, 2, 3]  # rows 0..3 cover square rows 0..15; regions fill rows 3..12
    expected = hidden[rows_with_regions][:, :3].reshape(-1, hidden.shape[-1]).mean(0)
    torch.testing.assert_close(model.pool(outputs, 10, 16, "mean")[0], expected)


def test_embeddings_of_a_padded_recording(config):
    """A short run embedded with padding: mean pooling equals the mean over the tokens of its real timepoints."""
    torch.manual_seed(0)
    model = BrainLMModel(config).eval()
    p = processor(num_timepoints=30, short_recordings="pad", coordinates=np.random.default_rng(1).normal(size=(7, 3)))
    short = sine(0.05, 2.0, 8, regions=7)  # 14 s -> 20 frames at 0.735 s: tokens 0..3 real, 4..5 padding
    embedded = embed_recordings(model, p, [short], pooling="mean", repetition_times=[2.0])
    window, _ = p.windows([short], repetition_times=2.0)
    with torch.no_grad():
        hidden = model(torch.from_numpy(window), torch.from_numpy(p.model_coordinates())).last_hidden_state
    tokens = hidden[0, 1:].view(7, 6, -1)[:, :4].reshape(-1, hidden.shape[-1])
    np.testing.assert_allclose(embedded[0], tokens.mean(0).numpy(), atol=1e-5)


@pytest.fixture
def cohort(tmp_path):
    """Six subjects: four runs at TR 2 s (100 frames: 270 at 0.735 s), two short runs (12 frames: 30)."""
    folder = tmp_path / "cohort"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for index in range(6):
        frames = 100 if index < 4 else 12
        series = sine(0.03 + 0.01 * index, 2.0, frames, regions=7) + 0.1 * rng.normal(size=(frames, 7))
        np.save(folder / f"sub-{index:02d}_bold.npy", series.astype(np.float32))
    (folder / "participants.csv").write_text("subject,age\n" + "".join(f"{i:02d},{20 + 3 * i}\n" for i in range(6)))
    return folder


def prepared(cohort, out, **options):
    coordinates = np.random.default_rng(1).normal(size=(7, 3))
    return prepare_dataset(
        cohort / "*.npy", out, repetition_time=2.0, num_timepoints=40, normalization="zscore",
        splits={"train": 1.0}, coordinates=coordinates, shard_multiple=1, phenotypes=cohort / "participants.csv",
        **options,
    )  # fmt: skip


def test_prepare_chooses_the_tr_of_the_windows_and_keeps_or_leaves_out_short_runs(cohort, tmp_path):
    summary = prepared(cohort, tmp_path / "refuse", target_repetition_time=0.735)
    assert summary["repetition_time"] == 0.735 and summary["splits"]["train"]["recordings"] == 4
    assert [s["num_timepoints_resampled"] for s in summary["too_short"]] == [30, 30] and summary["padded"] == []
    dataset = PreparedDataset(tmp_path / "refuse")
    assert dataset.processor.repetition_time == 0.735 and dataset.processor.short_recordings == "refuse"
    assert {r["repetition_time"] for r in dataset.recordings("train", ["repetition_time"])} == {2.0}  # as sampled
    card = (tmp_path / "refuse" / "README.md").read_text()
    assert "TR of the windows: 0.735 s" in card and "Recordings left out for being shorter than one window: 2" in card

    summary = prepared(cohort, tmp_path / "pad", target_repetition_time=0.735, short_recordings="pad")
    assert summary["splits"]["train"]["recordings"] == 6 and len(summary["padded"]) == 2
    assert PreparedDataset(tmp_path / "pad").processor.short_recordings == "pad"

    native = prepared(cohort, tmp_path / "native")  # no target: the recordings' own TR, nothing resampled
    assert native["repetition_time"] == 2.0 and native["splits"]["train"]["recordings"] == 4
    assert [s["num_timepoints"] for s in native["too_short"]] == [12, 12]


def test_recordings_of_different_trs_need_a_target_tr(tmp_path):
    """NIfTI runs at TR 2 s and 0.72 s (headers): refused without a target TR, resampled to it with one."""
    atlas, labels = toy_atlas(tmp_path, 4)
    for subject, (tr, frames) in {"01": (2.0, 60), "02": (0.72, 170)}.items():
        save_region_image(tmp_path / f"sub-{subject}_bold.nii.gz", labels, sine(0.05, tr, frames, regions=3), tr)
    options = {"atlas": atlas, "num_timepoints": 40, "normalization": "zscore", "splits": {"train": 1.0}}
    with pytest.raises(ValueError, match="different TRs: .*sub-02_bold.nii.gz 0.72 s.*sub-01_bold.nii.gz 2 s"):
        prepare_dataset(tmp_path / "sub-*_bold.nii.gz", tmp_path / "out", **options)
    summary = prepare_dataset(tmp_path / "sub-*_bold.nii.gz", tmp_path / "out", target_repetition_time=0.72, **options)
    assert summary["repetition_time"] == 0.72 and summary["splits"]["train"]["recordings"] == 2
    dataset = PreparedDataset(tmp_path / "out")
    stream = WindowStream(dataset.shards("train"), dataset.processor, crops_per_recording=1)
    assert len(list(stream)) == 2  # the 2 s run streams at 0.72 s: 164 frames


def test_streaming_resamples_each_recording_to_the_processor_tr(cohort, tmp_path):
    prepared(cohort, tmp_path / "out", target_repetition_time=0.735, short_recordings="pad")
    dataset = PreparedDataset(tmp_path / "out")
    stream = WindowStream(dataset.shards("train"), dataset.processor, crops_per_recording=2, seed=3)
    windows = list(stream)
    assert len(windows) == 4 * 2  # the short runs are skipped by pretraining
    assert sorted(stream.skipped) == ["sub-04_bold", "sub-05_bold"]
    records = {r["id"]: r for r in dataset.recordings("train", ["repetition_time"])}
    for window in windows:
        resampled = dataset.processor.resample(records[window["id"]]["series"], 2.0)  # (270, V)
        normalised = dataset.processor.to_model_order(dataset.processor.normalize(resampled).T)  # (V, 270)
        starts = [s for s in range(270 - 40 + 1) if np.allclose(normalised[:, s : s + 40], window["signal_values"])]
        assert len(starts) == 1, window["id"]
    from brainlm_hf.training.checks import check_pretraining_data

    counts = check_pretraining_data(dataset.shards("train"), dataset.processor, 2, 2, 1, 1, 1)
    assert counts["too_short"] == 2 and counts["windows"] == 8


def test_finetuning_with_resampled_and_padded_recordings(cohort, tmp_path, config):
    prepared(cohort, tmp_path / "out", target_repetition_time=0.735, short_recordings="pad")
    dataset = PreparedDataset(tmp_path / "out")
    processor = dataset.processor
    records = dataset.recordings("train", ["repetition_time", "age"])
    recordings, trs = [r["series"] for r in records], [r["repetition_time"] for r in records]
    windows = RecordingWindowDataset(processor, recordings, np.zeros(6), 3, seed=0, repetition_times=trs)
    items = [windows[i] for i in range(len(windows))]
    assert len(items) == 4 * 3 + 2  # three crops of each long run, one padded window of each short run
    assert [int(item["timepoint_mask"].sum()) for item in items][-2:] == [30, 30]
    from brainlm_hf.data import BrainLMCollator

    batch = BrainLMCollator(processor)(items[-3:])
    assert batch["timepoint_mask"].shape == (3, 40)
    torch.manual_seed(0)
    model = BrainLMForSequenceClassification(BrainLMConfig(**{**config.to_dict(), "num_labels": 1, "pooling": "mean"}))
    predictions = predict_recordings(model.eval(), processor, recordings, repetition_times=trs)
    short, _ = processor.windows([recordings[-1]], repetition_times=2.0)
    mask = torch.zeros(1, 40)
    mask[0, :30] = 1
    with torch.no_grad():
        by_hand = model(torch.from_numpy(short), torch.from_numpy(processor.model_coordinates()), timepoint_mask=mask)
        unmasked = model(torch.from_numpy(short), torch.from_numpy(processor.model_coordinates()))
    np.testing.assert_allclose(predictions[-1], by_hand.logits[0].numpy(), atol=1e-5)
    assert not np.allclose(predictions[-1], unmasked.logits[0].numpy(), atol=1e-5)


@pytest.mark.slow
def test_the_command_line_resamples_and_pads(cohort, tmp_path, config, capsys):
    """`brainlm embed --tr 2.0 --short-recordings pad` = `embed_recordings` with those TRs; `brainlm attention`
    reads the TR of prepared shards."""
    p = processor(num_timepoints=40, coordinates=np.random.default_rng(1).normal(size=(7, 3)))
    model = BrainLMForMaskedSignalModeling(BrainLMConfig(**{**config.to_dict(), "patch_size": 10}))
    model.save_pretrained(tmp_path / "model")
    p.save_pretrained(tmp_path / "model")
    out = tmp_path / "embeddings.npz"
    assert cli(["embed", str(tmp_path / "model"), str(cohort / "*.npy"), "--output", str(out), "--tr", "2.0",
         "--short-recordings", "pad", "--pooling", "mean", "--quiet"]) == 0  # fmt: skip
    assert "6 recordings resampled to the model's TR of 0.735 s (linear)" in capsys.readouterr().out
    saved = np.load(out)
    recordings = [np.load(path) for path in sorted(cohort.glob("*.npy"))]
    p.short_recordings = "pad"
    encoder = BrainLMModel.from_pretrained(tmp_path / "model")
    expected = embed_recordings(encoder, p, recordings, pooling="mean", repetition_times=2.0)
    np.testing.assert_allclose(saved["embeddings"], expected, atol=1e-5)
    # without --short-recordings pad: the short runs are refused
    assert cli(["embed", str(tmp_path / "model"), str(cohort / "*.npy"), "--output", str(tmp_path / "x.npz"), "--tr",
                "2.0", "--quiet"]) == 2  # fmt: skip
    assert "sub-04_bold.npy has 30 timepoints (at the model's TR)" in capsys.readouterr().err
    prepared(cohort, tmp_path / "out", target_repetition_time=0.735)
    assert (
        cli(["attention", str(tmp_path / "model"), str(tmp_path / "out" / "train"), str(tmp_path / "attention")]) == 0
    )
    report = json.loads((tmp_path / "attention" / "attention.json").read_text())
    assert len(report["recordings"]) == 4 and np.isfinite(report["region_scores"]).all()


@pytest.mark.slow
def test_brainlm_finetune_pads_short_runs_as_the_dataset_says_or_refuses_them(cohort, tmp_path, config, capsys):
    prepare_dataset(
        cohort / "*.npy", tmp_path / "out", repetition_time=2.0, num_timepoints=40, normalization="zscore",
        splits={"train": 0.5, "validation": 0.17, "test": 0.33},
        coordinates=np.random.default_rng(1).normal(size=(7, 3)), shard_multiple=1,
        phenotypes=cohort / "participants.csv", target_repetition_time=0.735, short_recordings="pad",
    )  # fmt: skip
    model = BrainLMForMaskedSignalModeling(BrainLMConfig(**{**config.to_dict(), "patch_size": 10}))
    model.save_pretrained(tmp_path / "model")
    arguments = ["finetune", "--dataset", str(tmp_path / "out"), "--model", str(tmp_path / "model"), "--label_columns",
                 "age", "--output_dir", str(tmp_path / "ft"), "--num_train_epochs", "1", "--report_to", "none",
                 "--disable_tqdm", "true", "--windows_per_recording", "2", "--pooling", "mean"]  # fmt: skip
    assert cli(arguments) == 0
    out = capsys.readouterr().out
    results = json.loads(out[out.rindex("{\n") :])  # the metrics, printed last
    assert np.isfinite(results["test_mse"])
    assert cli([*arguments[:-2], "--short_recordings", "refuse", "--output_dir", str(tmp_path / "ft2")]) == 2
    assert "has 30 timepoints (at the model's TR), fewer than one window of 40" in capsys.readouterr().err
