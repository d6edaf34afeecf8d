"""Prepared shards are not trusted blindly: stored statistics are verified against the series they describe, a
null or mis-sized `series` row is named with its shard and recording, and recordings of another atlas are refused
even where the region count agrees."""

import shutil
import warnings

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from brainlm_hf import BrainLMConfig
from brainlm_hf.data import PreparedDataset, WindowStream, prepare_dataset
from brainlm_hf.data.prepared import read_recordings
from brainlm_hf.errors import InvalidFileError, InvalidInputError
from brainlm_hf.training.checks import check_processor_for_model

REGIONS = 6


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    """Four z-scored recordings of 60 timepoints, parcellated with "atlas-a", two shards."""
    folder = tmp_path_factory.mktemp("recordings")
    rng = np.random.default_rng(0)
    for subject in range(4):
        np.save(folder / f"sub-{subject:02d}_bold.npy", rng.normal(3.0, 2.0, size=(60, REGIONS)).astype(np.float32))
    out = tmp_path_factory.mktemp("dataset") / "prepared"
    coordinates = rng.normal(size=(REGIONS, 3)) * 40
    prepare_dataset(
        str(folder / "*.npy"), out, repetition_time=0.8, num_timepoints=20, normalization="zscore",
        splits={"train": 1.0}, shard_multiple=2, coordinates=coordinates, atlas_name="atlas-a",
    )  # fmt: skip
    return out


def rewritten(dataset, folder, change):
    """A copy of `dataset` whose every shard is rewritten with `change(rows) -> rows` (lists of dicts)."""
    shutil.copytree(dataset, folder)
    for shard in sorted(folder.glob("train/*.parquet")):
        table = pq.read_table(shard)
        changed = pa.Table.from_pylist(change(table.to_pylist()), schema=table.schema)
        pq.write_table(changed, shard, use_dictionary=["id", "subject", "session", "atlas"], compression="none")
    return PreparedDataset(folder)


def stream(prepared, processor=None):
    return WindowStream(prepared.shards("train"), processor or prepared.processor, crops_per_recording=2)


def edit(column, region, factor=None, shift=None):
    def change(rows):
        for row in rows:
            values = np.asarray(row[column], np.float32)
            values[region] = values[region] * factor if factor is not None else values[region] + shift
            row[column] = values.tolist()
        return rows

    return change


@pytest.mark.parametrize(
    ("change", "regions"),
    [
        (edit("series_std", slice(None), factor=10.0), "regions \\[0, 1, 2, 3, 4, 5\\]"),  # the example
        (edit("series_std", 2, factor=0.5), "regions \\[2\\]"),  # one region, the spread doubled
        (edit("series_mean", 4, shift=1.0), "regions \\[4\\]"),  # a shifted mean
    ],
)
def test_edited_stored_statistics_are_refused_naming_shard_recording_and_regions(dataset, tmp_path, change, regions):
    """A shard whose `series_std` was edited (finite, x10) streamed windows with a tenth of the right spread."""
    edited = rewritten(dataset, tmp_path / "edited", change)
    message = "shard-.*parquet: the stored series_mean / series_std of recording 'sub-\\d\\d_bold' are not those of "
    with pytest.raises(InvalidFileError, match=message + f"its series \\({regions}.*prepare the dataset again"):
        list(stream(edited))


def test_true_stored_statistics_stream_unit_spread(dataset):
    windows = np.stack([w["signal_values"] for w in stream(PreparedDataset(dataset))])
    assert len(windows) == 8 and 0.7 < windows.std() < 1.3 and abs(windows.mean()) < 0.3


@pytest.mark.parametrize(
    ("change", "found"),
    [
        (lambda rows: [{**row, "series": None} if i == 1 else row for i, row in enumerate(rows)],
         "no series \\(null\\)"),
        (lambda rows: [{**row, "series": row["series"][:-3]} if i == 1 else row for i, row in enumerate(rows)],
         "357 values in `series`"),
        (lambda rows: [{**row, "num_timepoints": 61} if i == 0 else row for i, row in enumerate(rows)],
         "360 values in `series`"),
    ],
)  # fmt: skip
def test_a_null_or_mis_sized_series_row_is_named_with_shard_and_recording(dataset, tmp_path, change, found):
    """It gave a raw reshape ValueError after a misleading "compressed" warning, naming neither."""
    damaged = rewritten(dataset, tmp_path / "damaged", change)
    shard = damaged.shards("train")[0]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "compressed" warning first
        for reader in ("auto", "pyarrow"):
            with pytest.raises(InvalidFileError, match=f"shard-00000.*recording 'sub-\\d\\d_bold' \\(row \\d\\) has "
                               f"{found}, but its num_timepoints x num_regions = 6\\d x 6"):  # fmt: skip
                read_recordings(shard, reader=reader)
    with pytest.raises(InvalidFileError, match="recording 'sub-"):
        list(stream(damaged))


def test_recordings_of_another_atlas_with_the_same_region_count_are_refused_when_streamed(dataset):
    prepared = PreparedDataset(dataset)
    other = prepared.processor
    other.atlas = "atlas-b"
    with pytest.raises(InvalidInputError, match="recording 'sub-\\d\\d_bold' is parcellated with the atlas 'atlas-a'.*"
                       "processor is for 'atlas-b'"):  # fmt: skip
        list(stream(prepared, other))
    other.atlas = None  # a processor that names no atlas: nothing to compare
    assert len(list(stream(prepared, other))) == 8


def test_a_model_trained_on_another_atlas_is_refused_for_the_dataset(dataset):
    """pretrain and finetune check the dataset's processor against the model's saved one: same region count and
    coordinates, another atlas name."""
    processor = PreparedDataset(dataset).processor
    config = BrainLMConfig(patch_size=5, hidden_size=16, num_hidden_layers=1, num_attention_heads=2)
    model_processor = PreparedDataset(dataset).processor
    check_processor_for_model(processor, config, model_processor, "the checkpoint")
    model_processor.atlas = "atlas-b"
    with pytest.raises(InvalidInputError, match="the checkpoint was trained on recordings of the atlas 'atlas-b'"):
        check_processor_for_model(processor, config, model_processor, "the checkpoint")


def batch_stream(dataset, parts: int = 2):
    from brainlm_hf.data.streaming import BatchStream

    prepared = PreparedDataset(dataset)
    return BatchStream([stream(prepared)], batch_size=2, parts=parts)


@pytest.mark.parametrize(("workers", "shared_buffers"), [(0, 0), (2, 0), (2, 6)])
def test_a_shard_deleted_while_streaming_is_named_in_one_line(dataset, tmp_path, workers, shared_buffers):
    """It ended the run with a worker's traceback inside the message; now the shard is named, with the fix."""
    copy = tmp_path / "copy"
    shutil.copytree(dataset, copy)
    batches = batch_stream(copy)
    loader = batches.loader(workers, shared_buffers=shared_buffers)
    for shard in (copy / "train").glob("*.parquet"):
        shard.unlink()
    with pytest.raises(
        FileNotFoundError, match="The Parquet shard .*shard-0000[01].* is missing .*deleted or moved"
    ) as error:
        next(iter(loader))
    assert "\n" not in str(error.value) and "Traceback" not in str(error.value)


@pytest.mark.slow
@pytest.mark.parametrize("shared_buffers", [0, 6])
def test_a_loader_worker_killed_says_what_happened_and_how_to_go_on(dataset, monkeypatch, shared_buffers):
    """A worker killed (here by itself, with SIGKILL, as the out-of-memory killer does): the cause and the fix."""
    import os
    import signal

    import torch

    import brainlm_hf.data.streaming as streaming
    from brainlm_hf.data.streaming import LoaderWorkerError

    read = streaming.read_recordings

    def killed_in_workers(*args, **kwargs):
        if torch.utils.data.get_worker_info() is not None:
            os.kill(os.getpid(), signal.SIGKILL)
        return read(*args, **kwargs)

    monkeypatch.setattr(streaming, "read_recordings", killed_in_workers)
    loader = batch_stream(dataset).loader(2, shared_buffers=shared_buffers)
    expected = "DataLoader worker .*(killed by signal|exited unexpectedly)\\. .*out-of-memory killer"
    with pytest.raises(LoaderWorkerError, match=expected):
        next(iter(loader))
