# Copyright 2026 The brainlm_hf authors. Licensed under the Apache License, Version 2.0.
"""Parts of one `prepare_dataset` run, read on several machines (`part="I/N"`) and combined into the dataset.

Part I of N holds the recordings `I` of `N` contiguous blocks of the sorted inputs, as `read_recording_rows` reads
them (raw series, their per-recording statistics, ids, TR, file), in `<folder>/part-0000I-of-0000N.parquet`. The
combining run (`combine=<folder>`, same inputs and options) reads the N parts back in order: the rows are then the
very rows one run would have read, so the split, the statistics fitted on the training split, the shards, the
summary and the card are the same, byte for byte. Each part records its files and the options that shape its rows;
the combining run refuses parts of other inputs or options, and names missing ones.
"""

import json
import os
from pathlib import Path

import numpy as np

from ..errors import InvalidArgumentError, InvalidFileError, MissingFileError
from .prepared import _list_rows

PART_METADATA = b"brainlm_prepare_part"
ID_COLUMNS = ("id", "subject", "session", "file")
LIST_COLUMNS = ("series", "series_mean", "series_std")


def parse_part(part: str, argument: str = "part") -> tuple[int, int]:
    """`"I/N"` -> `(I, N)`, with `1 <= I <= N`; an error names `argument`."""
    index, _, count = str(part).partition("/")
    if not (index.strip().isdigit() and count.strip().isdigit()) or not 1 <= int(index) <= int(count):
        raise InvalidArgumentError(
            f"{argument} must be I/N with 1 <= I <= N (I of N, e.g. 2/8 or $SLURM_ARRAY_TASK_ID/8), got {part!r}.",
            argument=argument,
        )
    return int(index), int(count)


def part_paths(paths: list, index: int, count: int) -> list:
    """The recordings of part `index` (1-based) of `count`: one of `count` contiguous blocks of `paths`, their sizes
    differing by one at most."""
    return paths[len(paths) * (index - 1) // count : len(paths) * index // count]


def part_name(index: int, count: int) -> str:
    return f"part-{index:05d}-of-{count:05d}.parquet"


def write_part(folder, index: int, count: int, rows: list[dict], settings: dict, overwrite: bool = False) -> Path:
    """
    Write the rows of part `index` of `count` (`read_recording_rows`' rows) to `folder` (made when missing), with
    `settings` (the options that shape the rows) and the part's files. An existing part is kept unless `overwrite`;
    the file appears whole or not at all.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    folder = Path(folder)
    path = folder / part_name(index, count)
    if path.exists() and not overwrite:
        raise InvalidArgumentError(
            f"{path} exists: part {index}/{count} was prepared already; pass overwrite=True to prepare it again.",
            argument="part",
        )
    folder.mkdir(parents=True, exist_ok=True)
    columns = {name: pa.array([row[name] for row in rows], pa.string()) for name in ID_COLUMNS}
    columns.update({name: _large_list([row[name] for row in rows]) for name in LIST_COLUMNS})
    for axis, name in enumerate(("num_timepoints", "num_regions")):
        columns[name] = pa.array([row["series"].shape[axis] for row in rows], pa.int64())
    columns["repetition_time"] = pa.array([row["repetition_time"] for row in rows], pa.float64())
    metadata = {"part": index, "num_parts": count, "settings": settings, "files": [row["file"] for row in rows]}
    table = pa.table(columns).replace_schema_metadata({PART_METADATA: json.dumps(metadata).encode()})
    partial = folder / f".{path.name}.{os.getpid()}.tmp"
    pq.write_table(table, partial, compression="none")
    os.replace(partial, path)
    return path


def read_parts(folder, paths: list, settings: dict) -> list[dict]:
    """
    The rows of all the parts in `folder`, in part order: those of one run over `paths` with `settings`. Parts
    missing, of another part count, of other files or other settings are refused with what differs.
    """
    folder = Path(folder)
    found = sorted(folder.glob("part-*-of-*.parquet")) if folder.is_dir() else []
    if not found:
        raise MissingFileError(
            f"{folder} holds no parts (part-I-of-N.parquet): prepare them first with part='I/N' and output_dir "
            f"{folder}.",
            argument="combine",
        )
    counts = sorted({name.stem.rsplit("-of-", 1)[1] for name in found})
    if len(counts) > 1:
        raise InvalidFileError(
            f"{folder} holds parts of {len(counts)} different part counts ({', '.join(counts)}): keep the parts of "
            "one run only.",
            argument="combine",
        )
    count = int(counts[0])
    missing = [f"{index}/{count}" for index in range(1, count + 1) if not (folder / part_name(index, count)).exists()]
    if missing:
        raise MissingFileError(
            f"{folder} lacks parts {', '.join(missing[:10])} of {count}: prepare them (part='I/{count}') first.",
            argument="combine",
        )
    rows = []
    for index in range(1, count + 1):
        rows += _read_part(folder / part_name(index, count), part_paths(paths, index, count), settings)
    return rows


def _read_part(path: Path, paths: list, settings: dict) -> list[dict]:
    import pyarrow.parquet as pq

    table = pq.read_table(path)
    metadata = json.loads((table.schema.metadata or {}).get(PART_METADATA, b"{}"))
    if metadata.get("files") != [str(p) for p in paths]:
        raise InvalidFileError(
            f"{path} was prepared from other recordings than part {path.stem[5:].replace('-of-', '/')} of these "
            "inputs: combine with the inputs the parts were prepared from, or prepare the parts again.",
            argument="combine",
        )
    stored = metadata.get("settings", {})
    differing = [key for key in settings if stored.get(key) != settings[key]]
    if differing:
        key = differing[0]
        raise InvalidFileError(
            f"{path} was prepared with {key}={stored.get(key)!r}, this run has {key}={settings[key]!r}: combine "
            "with the options the parts were prepared with.",
            argument="combine",
        )
    identifiers = {name: table.column(name).to_pylist() for name in ID_COLUMNS}
    lists = {name: _list_rows(table.column(name)) for name in LIST_COLUMNS}
    shapes = zip(table.column("num_timepoints").to_pylist(), table.column("num_regions").to_pylist(), strict=True)
    trs = table.column("repetition_time").to_pylist()
    rows = []
    for row, (shape, tr) in enumerate(zip(shapes, trs, strict=True)):
        series = lists["series"][row].reshape(shape)
        entry = {name: identifiers[name][row] for name in ("id", "subject", "session")}
        entry.update(series=series, series_mean=lists["series_mean"][row], series_std=lists["series_std"][row])
        rows.append({**entry, "repetition_time": tr, "file": identifiers["file"][row]})
    return rows


def _large_list(arrays: list[np.ndarray]):
    """Arrays -> a `large_list<float32>` column (64-bit offsets: a part may hold more than 2**31 values)."""
    import pyarrow as pa

    sizes = np.array([array.size for array in arrays], dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
    values = np.concatenate([np.ravel(array) for array in arrays]) if arrays else np.empty(0, np.float32)
    return pa.LargeListArray.from_arrays(pa.array(offsets), pa.array(values.astype(np.float32, copy=False)))
