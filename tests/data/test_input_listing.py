"""Listing inputs without reading them (`list_inputs`), then reading some of them (`load_inputs`): the ids and order
of `read_inputs`, and for any subset the very recordings `read_inputs` gives, reading nothing else."""

import os

import numpy as np
import pytest

from brainlm_hf.data import list_inputs, load_inputs, prepare_dataset, read_inputs
from brainlm_hf.data import prepared as prepared_module
from brainlm_hf.data import recordings as recordings_module
from brainlm_hf.errors import InvalidInputError


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> list[str]:
    """Two prepared shards of two recordings each (TR 0.8 s), then three parcel tables of other subjects."""
    rng = np.random.default_rng(0)
    raw, tables = tmp_path_factory.mktemp("raw"), tmp_path_factory.mktemp("tables")
    for subject in range(4):
        np.save(raw / f"sub-{subject:02d}_bold.npy", rng.normal(size=(40 + subject, 5)).astype(np.float32))
    for subject in range(4, 7):
        np.save(tables / f"sub-{subject:02d}_bold.npy", rng.normal(size=(50 + subject, 5)).astype(np.float32))
    out = tmp_path_factory.mktemp("dataset") / "prepared"
    prepare_dataset(
        str(raw / "*.npy"), out, repetition_time=0.8, num_timepoints=20, normalization="zscore",
        splits={"train": 1.0}, shard_multiple=2, coordinates=rng.normal(size=(5, 3)) * 40,
    )  # fmt: skip
    assert len(list((out / "train").glob("*.parquet"))) == 2
    return [str(out / "train"), str(tables)]


@pytest.fixture
def reads(monkeypatch) -> list[str]:
    """The files read, in order: tables (`load_recording`) and shards (`read_recordings`) by name."""
    names = []
    for module, name in ((recordings_module, "load_recording"), (recordings_module, "read_recordings")):
        original = getattr(module, name)

        def counting(path, *args, original=original, **kwargs):
            names.append(os.path.basename(path))
            return original(path, *args, **kwargs)

        monkeypatch.setattr(module, name, counting)
    return names


def test_listing_gives_the_ids_and_order_of_read_inputs_and_reads_no_data(inputs, reads, monkeypatch):
    everything = read_inputs(inputs)
    reads.clear()
    monkeypatch.setattr(prepared_module, "_shard_buffer", None)  # no shard's series may be read either
    listed = list_inputs(inputs)
    assert reads == []
    assert [(item.id, item.source) for item in listed] == [(r.id, r.source) for r in everything]
    assert [item.id for item in listed][-3:] == ["sub-04_bold", "sub-05_bold", "sub-06_bold"]
    assert sorted(item.id for item in listed[:4]) == [f"sub-{i:02d}_bold" for i in range(4)]
    assert [item.row for item in listed] == [0, 1, 0, 1, None, None, None]


def test_loading_a_subset_reads_only_its_files_and_equals_read_inputs(inputs, reads):
    everything = read_inputs(inputs)
    listed = list_inputs(inputs)
    reads.clear()
    chosen = [1, 3, 5]  # the second row of each shard, and the second table
    loaded = load_inputs([listed[i] for i in chosen])
    shards = [listed[i].path.name for i in (1, 3)]
    assert reads == [shards[0], shards[1], "sub-05_bold.npy"]  # each file once, the other table not at all
    for recording, index in zip(loaded, chosen, strict=True):
        expected = everything[index]
        assert (recording.id, recording.source, recording.repetition_time) == (
            expected.id, expected.source, expected.repetition_time,
        )  # fmt: skip
        np.testing.assert_array_equal(recording.series, expected.series)
    assert loaded[0].repetition_time == pytest.approx(0.8) and loaded[2].repetition_time is None


def test_two_inputs_with_one_id_are_refused_before_any_read(inputs, tmp_path, reads):
    np.save(tmp_path / "sub-02_bold.npy", np.zeros((50, 5), np.float32))  # the id of a recording of the shards
    with pytest.raises(InvalidInputError, match="Two inputs give the recording id 'sub-02_bold'"):
        list_inputs([inputs[0], str(tmp_path / "sub-02_bold.npy")])
    assert reads == []
