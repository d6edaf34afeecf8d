# Copyright 2026 The brainlm_hf authors. Licensed under the Apache License, Version 2.0.
"""A prepared dataset (`prepare_dataset`'s output) as one handle: its splits, their Parquet shards and its processor.

Layout: `<root>/<split>/shard-XXXXX-of-YYYYY.parquet` (one row per recording: `id`, `series` (the `(T, V)` float32
series flattened), `num_timepoints`, `num_regions`, ids, TR, atlas, phenotype columns), `preprocessor_config.json`
(the processor fitted on the training split), `prepare_summary.json` and `README.md`. The root is a local folder or
any fsspec URL (e.g. `https://host/dataset`, whose server lists folders).
"""

import json
import tempfile
import warnings
from functools import cached_property
from pathlib import Path

from ..feature_extraction_brainlm import BrainLMFeatureExtractor


class PreparedDataset:
    """
    Args:
        path (`str` or `Path`): the dataset's root folder or URL.

    Example:

    ```python
    >>> dataset = PreparedDataset("prepared")
    >>> dataset.splits, len(dataset.shards("train")), dataset.processor.num_timepoints
    (['test', 'train', 'validation'], 8, 200)
    ```
    """

    def __init__(self, path):
        self.path = str(path).rstrip("/")
        self.is_remote = "://" in self.path
        if not self.is_remote and not Path(self.path).is_dir():
            raise FileNotFoundError(f"no such folder: {self.path} (a dataset made by `brainlm prepare`)")

    def __repr__(self) -> str:
        return f"PreparedDataset({self.path!r})"

    @cached_property
    def processor(self) -> BrainLMFeatureExtractor:
        """The processor saved beside the shards (fitted on the training split)."""
        if not self.is_remote:
            return BrainLMFeatureExtractor.from_pretrained(self.path)
        import fsspec

        with tempfile.TemporaryDirectory() as folder, fsspec.open(f"{self.path}/preprocessor_config.json") as f:
            (Path(folder) / "preprocessor_config.json").write_bytes(f.read())
            return BrainLMFeatureExtractor.from_pretrained(folder)

    @property
    def splits(self) -> list[str]:
        """Names of the splits that hold shards, sorted."""
        if self.is_remote:
            return sorted(json.loads(self._read_text("prepare_summary.json"))["splits"])
        return sorted(p.name for p in Path(self.path).iterdir() if p.is_dir() and any(p.glob("*.parquet")))

    def shards(self, split: str) -> list[str]:
        """Paths (or URLs) of the Parquet shards of `split`, sorted; empty when the split does not exist."""
        if not self.is_remote:
            return sorted(str(p) for p in (Path(self.path) / split).glob("*.parquet"))
        import fsspec

        filesystem, root = fsspec.core.url_to_fs(self.path)
        return sorted(f"{self.path}/{split}/{Path(p).name}" for p in filesystem.glob(f"{root}/{split}/*.parquet"))

    def columns(self, split: str) -> list[str]:
        """Column names of the shards of `split`."""
        import pyarrow.parquet as pq

        first = self.require_shards(split)[0]
        return read_shard(first).schema.names if self.is_remote else pq.read_schema(first).names

    def require_shards(self, split: str) -> list[str]:
        """`shards(split)`, refusing a split without any."""
        shards = self.shards(split)
        if not shards:
            raise FileNotFoundError(f"{self.path} has no {split}/ split with Parquet shards.")
        return shards

    def recordings(self, split: str, columns: list[str] | None = None) -> list[dict]:
        """Every recording of `split` in shard order, as `read_recordings` gives them (with `columns`)."""
        return [record for shard in self.require_shards(split) for record in read_recordings(shard, columns)]

    def _read_text(self, name: str) -> str:
        import fsspec

        with fsspec.open(f"{self.path}/{name}", "rt") as handle:
            return handle.read()


RECORDING_COLUMNS = ["id", "series", "num_timepoints", "num_regions"]


def read_shard(path: str, columns: list[str] | None = None):
    """
    One Parquet shard as a pyarrow Table (local path or any fsspec URL), with `columns` (default: all). A shard that
    cannot be read raises naming it.
    """
    import fsspec
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        filesystem, location = fsspec.core.url_to_fs(path)
        if filesystem.protocol in ("file", ("file", "local")):
            return pq.read_table(location, columns=columns, memory_map=True)
        data = filesystem.cat_file(location)  # one whole read: no range requests needed from a server
        return pq.read_table(pa.BufferReader(data), columns=columns)
    except Exception as error:  # noqa: BLE001 - any read failure means the shard cannot be used
        raise RuntimeError(f"Could not read the Parquet shard {path}: {error}") from error


def read_recordings(path: str, columns: list[str] | None = None, reader: str = "auto") -> list[dict]:
    """
    Every row of a prepared shard as `{"id", "series": (T, V) float32 read-only array, **columns}`, in shard order
    (`columns`: extra columns such as phenotypes). A shard that cannot be read raises naming it.

    `reader="auto"` reads `series` without decoding it when the shard stores it PLAIN and uncompressed (every
    prepared shard does; `series_column`): each recording is then a view of the memory-mapped file (or of the
    downloaded bytes for a URL), valid while the file is unchanged. Other layouts, e.g. shards written by
    `datasets.Dataset.to_parquet`, are decoded by pyarrow, as `reader="pyarrow"` always does; both give identical
    arrays.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    from .series_column import series_values

    if reader not in ("auto", "pyarrow"):
        raise ValueError(f"reader must be 'auto' or 'pyarrow', got {reader!r}.")
    try:
        data = _shard_buffer(path)
        parquet = pq.ParquetFile(pa.BufferReader(data))
        others = [c for c in RECORDING_COLUMNS if c != "series"] + list(columns or [])
        table = parquet.read(columns=others if reader == "auto" else others + ["series"])
        columns_of = table.column
        shapes = list(
            zip(columns_of("num_timepoints").to_pylist(), columns_of("num_regions").to_pylist(), strict=True)
        )
        flat = series_values(data, parquet.metadata) if reader == "auto" else None
        if flat is None or [len(v) for v in flat] != [t * v for t, v in shapes]:
            if reader == "auto":
                warnings.warn(
                    f"{path} stores `series` compressed, dictionary-encoded or with nulls: it is decoded by pyarrow, "
                    "several times slower than a shard written by `brainlm prepare` (prepare it again to speed up).",
                    stacklevel=2,
                )
            table = table if "series" in table.column_names else parquet.read(columns=others + ["series"])
            column = table.column("series").combine_chunks()
            offsets, values = column.offsets.to_numpy(), column.values.to_numpy(zero_copy_only=False)
            flat = [values[offsets[row] : offsets[row + 1]] for row in range(len(table))]
    except Exception as error:  # noqa: BLE001 - any read failure means the shard cannot be used
        raise RuntimeError(f"Could not read the Parquet shard {path}: {error}") from error
    extras = {name: table.column(name).to_pylist() for name in columns or []}
    return [
        {"id": record_id, "series": values.reshape(shape), **{name: extra[row] for name, extra in extras.items()}}
        for row, (record_id, shape, values) in enumerate(
            zip(table.column("id").to_pylist(), shapes, flat, strict=True)
        )
    ]


def _shard_buffer(path: str):
    """The whole shard as a `pyarrow.Buffer`: memory-mapped for a local file, read in one request for a URL."""
    import fsspec
    import pyarrow as pa

    filesystem, location = fsspec.core.url_to_fs(path)
    if filesystem.protocol in ("file", ("file", "local")):
        with pa.memory_map(location, "r") as mapped:
            return mapped.read_buffer()
    return pa.py_buffer(filesystem.cat_file(location))


def read_shapes(path: str) -> list[tuple[int, int]]:
    """
    `(num_timepoints, num_regions)` of every row of a prepared shard, reading only those two columns (a URL is read
    by range requests when its server allows them, else whole). A shard that cannot be read raises naming it.
    """
    import fsspec
    import pyarrow.parquet as pq

    names = ["num_timepoints", "num_regions"]
    try:
        filesystem, location = fsspec.core.url_to_fs(path)
        if filesystem.protocol in ("file", ("file", "local")):
            table = pq.read_table(location, columns=names, memory_map=True)
        else:
            try:
                with filesystem.open(location) as handle:
                    table = pq.read_table(handle, columns=names)
            except ValueError:  # a server without range requests
                table = read_shard(path, names)
    except RuntimeError:
        raise
    except Exception as error:  # noqa: BLE001 - any read failure means the shard cannot be used
        raise RuntimeError(f"Could not read the Parquet shard {path}: {error}") from error
    return list(zip(table.column(names[0]).to_pylist(), table.column(names[1]).to_pylist(), strict=True))
