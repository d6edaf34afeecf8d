"""The Brainmarks plug-in (brainlm_hf.integrations.brainmarks): its transform and wrapper on plain-dict samples, and
Brainmarks' own model smoke test (`python -m brainmarks.models.test_models brainlm_hf`) and a logistic probe, run as
Brainmarks runs them, where Brainmarks is installed (`make test` installs it; see the Makefile)."""

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from brainlm_hf import BrainLMConfig, BrainLMFeatureExtractor, BrainLMForMaskedSignalModeling, BrainLMModel
from brainlm_hf.integrations.brainmarks import BrainmarksTransform, BrainmarksWrapper, brainlm_hf

NUM_REGIONS, WINDOW = 7, 30
ROOT = Path(__file__).resolve().parents[2]


def brainmarks_sample(num_frames: int, tr: float, seed: int = 0) -> dict:
    """A sample as Brainmarks' datasets give it: z-scored `bold` (T, V) with its `mean` and `std` (1, V), and `tr`."""
    rng = np.random.default_rng(seed)
    raw = 100 + rng.uniform(1, 5, NUM_REGIONS) * rng.standard_normal((num_frames, NUM_REGIONS))
    mean, std = raw.mean(0, keepdims=True), raw.std(0, keepdims=True)
    bold = ((raw - mean) / std).astype(np.float16)
    return {"bold": torch.from_numpy(bold), "mean": torch.from_numpy(mean), "std": torch.from_numpy(std), "tr": tr}


@pytest.fixture
def processor(inputs) -> BrainLMFeatureExtractor:
    """z-scoring, regions sorted by Y, 30-timepoint windows, trained at TR 0.735 s."""
    return BrainLMFeatureExtractor.sorted_by_y(
        inputs["coordinates"].numpy(), normalization="zscore", num_timepoints=WINDOW, repetition_time=0.735
    )


def test_transform_resamples_to_the_checkpoint_tr_and_covers_the_recording(processor):
    sample = brainmarks_sample(50, tr=2.0)  # 98 s span -> 134 frames at 0.735 s -> windows 0, 30, 60, 90, 104
    out = BrainmarksTransform(processor)({**sample, "target": 1})
    assert set(out) == {"signal_values", "tr", "target"}
    assert out["signal_values"].shape == (5, NUM_REGIONS, WINDOW) and out["signal_values"].dtype == torch.float32
    expected = processor.resample(sample["bold"].float().numpy(), 2.0)  # z-scored bold is the zscore signal
    assert expected.shape == (134, NUM_REGIONS)
    time = np.arange(134) * 0.735 / 2.0  # in source frames: linear interpolation between the two neighbours
    bold = sample["bold"].float().numpy()
    by_hand = np.stack([np.interp(time, np.arange(50), bold[:, region]) for region in range(NUM_REGIONS)], 1)
    np.testing.assert_allclose(expected, by_hand, atol=1e-5)
    np.testing.assert_allclose(out["signal_values"][-1], processor.to_model_order(expected[104:].T), atol=1e-6)
    dropped = BrainmarksTransform(processor, window_policy="non_overlapping")(sample)["signal_values"]
    assert dropped.shape == (4, NUM_REGIONS, WINDOW)  # windows 0, 30, 60, 90: the last 16 frames are dropped
    torch.testing.assert_close(dropped, out["signal_values"][:4])


def test_transform_keeps_a_close_tr_and_pads_short_recordings_with_the_region_means(processor):
    transform = BrainmarksTransform(processor)
    close = brainmarks_sample(45, tr=0.72)  # |0.72 - 0.735| < 0.1 s: not resampled; windows 0 and 15
    assert transform(close)["signal_values"].shape == (2, NUM_REGIONS, WINDOW)
    short = transform(brainmarks_sample(8, tr=0.735))["signal_values"]
    assert short.shape == (1, NUM_REGIONS, WINDOW)
    torch.testing.assert_close(short[0, :, 8:], short[0, :, :8].mean(-1, keepdim=True).expand(-1, WINDOW - 8))


def test_zscore_keeps_regions_that_brainmarks_zeroed(processor):
    sample = brainmarks_sample(30, tr=0.735)
    for key in ("bold", "mean", "std"):  # Brainmarks' nisc.scale zeroes a region without signal in all three
        sample[key][:, 3] = 0
    windows = BrainmarksTransform(processor)(sample)["signal_values"]
    atlas_order = processor.to_atlas_order(windows)[0]
    assert (atlas_order[3] == 0).all() and torch.isfinite(windows).all()


def test_robust_processor_is_fitted_on_the_training_samples_in_raw_units():
    robust = BrainLMFeatureExtractor(normalization="robust", num_timepoints=WINDOW, input_scale=2.0)
    transform = BrainmarksTransform(robust)
    train = [brainmarks_sample(40, tr=0.735, seed=seed) for seed in range(3)]
    raws = [sample["bold"].float().numpy() * sample["std"].numpy() + sample["mean"].numpy() for sample in train]
    transform.fit(train)
    np.testing.assert_allclose(robust.median, np.median(np.concatenate(raws), axis=0), rtol=1e-5)
    np.testing.assert_allclose(
        transform(train[0])["signal_values"][0], robust.normalize(raws[0])[:WINDOW].T, atol=1e-5
    )


def test_robust_fit_scales_regions_that_brainmarks_zeroed_by_the_epsilon():
    robust = BrainLMFeatureExtractor(normalization="robust", num_timepoints=WINDOW)
    train = [brainmarks_sample(40, tr=0.735, seed=seed) for seed in range(3)]
    for sample in train:
        for key in ("bold", "mean", "std"):
            sample[key][:, 3] = 0
    with pytest.warns(UserWarning, match="Regions \\[3\\] have an inter-quartile range below iqr_epsilon=1e-06"):
        BrainmarksTransform(robust).fit(train)
    assert robust.iqr_epsilon_regions == [3] and robust.iqr[3] == pytest.approx(1e-6)
    with pytest.raises(ValueError, match="Regions \\[3\\] have zero inter-quartile range"):
        BrainmarksTransform(
            BrainLMFeatureExtractor(normalization="robust", num_timepoints=WINDOW), iqr_epsilon=None
        ).fit(train)


@pytest.mark.parametrize("layer", [None, -1])
def test_wrapper_returns_brainmarks_embeddings(config, processor, layer):
    torch.manual_seed(0)
    model = BrainLMModel(config).eval()
    wrapper = BrainmarksWrapper(model, processor.model_coordinates(), layer, batch_size=3)
    transform = BrainmarksTransform(processor)
    batch = {
        "signal_values": torch.stack(
            [transform(brainmarks_sample(60, 0.735, seed))["signal_values"] for seed in (0, 1)]
        )
    }
    cls_embeds, reg_embeds, patch_embeds = wrapper(batch)
    num_tokens = NUM_REGIONS * WINDOW // config.patch_size
    assert cls_embeds.shape == (2, 1, config.hidden_size) and reg_embeds is None
    assert patch_embeds.shape == (2, 2 * num_tokens, config.hidden_size)
    with torch.no_grad():
        outputs = model(batch["signal_values"][1], torch.from_numpy(wrapper.coordinates), output_hidden_states=True)
    hidden = outputs.last_hidden_state if layer is None else outputs.hidden_states[-1]
    torch.testing.assert_close(cls_embeds[1, 0], hidden[:, 0].mean(0))
    torch.testing.assert_close(patch_embeds[1, num_tokens:], hidden[1, 1:])  # second window, canonical order
    torch.testing.assert_close(wrapper(batch)[0], cls_embeds, rtol=0, atol=0)  # no random masking or shuffling


def test_tile_layout_leaves_out_tiles_of_padding_only():
    config = BrainLMConfig(
        token_layout="tile_2d", patch_size=4, image_size=16, hidden_size=16, num_hidden_layers=1,
        num_attention_heads=2, intermediate_size=32,
    )  # fmt: skip
    model = BrainLMModel(config).eval()
    signal = torch.randn(2, 3, NUM_REGIONS, 4)  # 7 x 4 in the 16 x 16 square: rows 4-10, columns 6-9: 2 x 2 tiles
    _, _, patch_embeds = BrainmarksWrapper(model, None)({"signal_values": signal})
    assert patch_embeds.shape == (2, 3 * 4, 16)


def tiny_checkpoint(folder: Path, coordinates: np.ndarray) -> Path:
    """brainlm-tiny (random weights) with a z-scoring, Y-sorted A424 processor at TR 0.735 s."""
    torch.manual_seed(0)
    BrainLMForMaskedSignalModeling(BrainLMConfig.from_preset("brainlm-tiny")).save_pretrained(folder)
    BrainLMFeatureExtractor.sorted_by_y(
        coordinates, normalization="zscore", repetition_time=0.735, atlas="A424"
    ).save_pretrained(folder)
    return folder


def test_constructor_loads_a_checkpoint_folder(tmp_path, monkeypatch):
    coordinates = np.random.default_rng(0).normal(0, 50, (424, 3))
    checkpoint = tiny_checkpoint(tmp_path / "ckpt", coordinates)
    monkeypatch.setenv("BRAINLM_HF_CHECKPOINT", str(checkpoint))
    transform, wrapper = brainlm_hf(layer=-1, window_policy="non_overlapping")
    assert wrapper.__space__ == "a424" and not any(p.requires_grad for p in wrapper.parameters())
    assert not wrapper.training and transform.processor.repetition_time == 0.735
    assert wrapper.layer == -1 and transform.window_policy == "non_overlapping"
    np.testing.assert_array_equal(
        wrapper.coordinates, BrainLMFeatureExtractor.from_pretrained(checkpoint).model_coordinates()
    )
    BrainLMFeatureExtractor(coordinates=coordinates[:400].tolist()).save_pretrained(checkpoint)
    with pytest.raises(ValueError, match="400 regions"):
        brainlm_hf()


def brainmarks_command(*args: str, env: dict, cwd: Path) -> subprocess.CompletedProcess:
    """Run a Brainmarks module in a fresh interpreter in `cwd` (where it writes its output/), as its users do."""
    return subprocess.run(
        [sys.executable, "-m", *args], capture_output=True, text=True, env={**os.environ, **env}, cwd=cwd, timeout=600
    )


needs_brainmarks = pytest.mark.skipif(
    importlib.util.find_spec("brainmarks.models.registry") is None,  # not only brainlm_hf's portion of the namespace
    reason="Brainmarks is not installed (make test installs it: see the Makefile)",
)


@pytest.mark.slow
@needs_brainmarks
def test_brainmarks_model_smoke_test_passes(tmp_path, a424_folder):
    coordinates = np.loadtxt(a424_folder / "A424_Coordinates.dat")[:, 1:4]
    checkpoint = tiny_checkpoint(tmp_path / "ckpt", coordinates)
    result = brainmarks_command(
        "brainmarks.models.test_models", "brainlm_hf", env={"BRAINLM_HF_CHECKPOINT": str(checkpoint)}, cwd=tmp_path
    )
    print(result.stdout[-3000:], result.stderr[-3000:])
    assert result.returncode == 0
    assert "2 passed" in result.stdout  # the short (16 frames) and long (160 frames) inputs


@pytest.mark.slow
@needs_brainmarks
def test_brainmarks_logistic_probe_runs_on_a_synthetic_dataset(tmp_path, a424_folder):
    coordinates = np.loadtxt(a424_folder / "A424_Coordinates.dat")[:, 1:4]
    checkpoint = tiny_checkpoint(tmp_path / "ckpt", coordinates)
    script = ROOT / "examples" / "brainmarks_synthetic_dataset.py"
    example = importlib.util.spec_from_file_location("synthetic", script)
    synthetic = importlib.util.module_from_spec(example)
    example.loader.exec_module(synthetic)
    synthetic.main(["--output-dir", str(tmp_path / "data"), "--sizes", "8", "4", "8"])  # in this process
    env = {
        "ADHD200_ROOT": str(tmp_path / "data"),
        "BRAINLM_HF_CHECKPOINT": str(checkpoint),
        "HF_DATASETS_CACHE": str(tmp_path / "datasets-cache"),
    }
    result = brainmarks_command(
        "brainmarks.main_logistic", "brainlm_hf", "cls", "adhd200_sex", "--overrides", "device=cpu", "num_workers=1",
        "n_trials=0", "batch_size=8", "amp=false", env=env, cwd=tmp_path,
    )  # fmt: skip
    print(result.stdout[-5000:], result.stderr[-3000:])
    assert result.returncode == 0
    assert "train features: (8, 64)" in result.stdout and "test features: (8, 64)" in result.stdout
    assert "done!" in result.stdout


@pytest.mark.parametrize("value", ["/no/such/folder", "./runs/missing/final", "~/no-such-brainlm/final"])
def test_a_checkpoint_variable_naming_no_folder_is_named(monkeypatch, value):
    monkeypatch.setenv("BRAINLM_HF_CHECKPOINT", value)
    with pytest.raises(FileNotFoundError, match=rf"^\$BRAINLM_HF_CHECKPOINT={re.escape(value)}: no such folder: "):
        brainlm_hf()
    with pytest.raises(FileNotFoundError, match=rf"^no such folder: {re.escape(value)}$"):
        brainlm_hf(checkpoint=value)  # given as an argument: named as given
