# Copyright 2026 The brainlm_hf authors. Licensed under the Apache License, Version 2.0.
"""A prepared dataset (`prepare_dataset`'s output) as one handle: its splits, their Parquet shards and its processor.

Layout: `<root>/<split>/shard-XXXXX-of-YYYYY.parquet` (one row per recording: `id`, `series` (the `(T, V)` float32
series flattened), `num_timepoints`, `num_regions`, ids, TR, atlas, phenotype columns), `preprocessor_config.json`
(the processor fitted on the training split), `prepare_summary.json` and `README.md`. The root is a local folder or
any fsspec URL (e.g. `https://host/dataset`, whose server lists folders), among them a dataset pushed to the Hub,
`hf://datasets/ORG/NAME[@REVISION]`, or its bare repository id `ORG/NAME` when no local path has that name. A Hub
root is pinned on opening: its revision (default `main`) is resolved once to the commit it names, so every later
read, and a run resumed from a checkpoint, reads the same files (`PreparedDataset.commit`).

`PreparedDataset` checks what it hands out: the shards of a split against the list in `prepare_summary.json` (a
missing shard, or one left by another run, is an error that names both), and the processor against the shards'
atlas (a processor made for another atlas is an error that names both atlases).
"""

import json
import os
import tempfile
import warnings
from contextlib import contextmanager
from functools import cached_property
from pathlib import Path

import numpy as np

from ..errors import (
    InvalidArgumentError,
    InvalidFileError,
    MissingFileError,
    NetworkError,
    NotAFolderError,
    UserError,
    one_line,
)
from ..feature_extraction_brainlm import BrainLMFeatureExtractor
from ..folders import is_path_like
from ..network import network_timeout


class PreparedDataset:
    """
    Args:
        path (`str` or `Path`): the dataset's root folder or URL, or the id `ORG/NAME` of a Hub dataset repository.

    Example:

    ```python
    >>> dataset = PreparedDataset("prepared")
    >>> dataset.splits, len(dataset.shards("train")), dataset.processor.num_timepoints
    (['test', 'train', 'validation'], 8, 200)
    ```
    """

    def __init__(self, path):
        self.path = str(path).rstrip("/")
        self.commit = None  # the Hub commit a Hub dataset is pinned to
        if _is_hub_id(self.path):
            self.path, self.commit = pin_hub_revision(f"{HUB_PROTOCOL}datasets/{self.path}", bare=self.path)
        elif self.path.startswith(HUB_PROTOCOL):
            self.path, self.commit = pin_hub_revision(self.path)
        self.is_remote = "://" in self.path
        if self.is_remote:
            return
        self.path = os.path.expanduser(self.path)
        folder = Path(self.path)
        if not folder.exists():
            raise MissingFileError(f"no such folder: {self.path} (a dataset made by `brainlm prepare`)")
        if not folder.is_dir():
            raise NotAFolderError(
                f"{self.path} is a file, not a prepared dataset (a folder made by `brainlm prepare`)."
            )
        if not (folder / SUMMARY).is_file():
            raise MissingFileError(
                f"{self.path} is not a prepared dataset: it has no {SUMMARY}. Make one with `brainlm prepare INPUTS "
                f"{self.path}-prepared` and give that folder."
            )

    def __repr__(self) -> str:
        return f"PreparedDataset({self.path!r})"

    @cached_property
    def summary(self) -> dict:
        """`prepare_summary.json`: the splits with their recordings, subjects and shard files."""
        try:
            summary = json.loads(self._read_text(SUMMARY))
        except FileNotFoundError as error:
            raise MissingFileError(f"{self.path}/{SUMMARY} not found: is {self.path} a prepared dataset?") from error
        except ValueError as error:
            raise InvalidFileError(
                f"{self.path}/{SUMMARY} is damaged ({error}): prepare the dataset again."
            ) from error
        if not isinstance(summary, dict) or not isinstance(summary.get("splits"), dict):
            raise InvalidFileError(f"{self.path}/{SUMMARY} has no 'splits': prepare the dataset again.")
        return summary

    @cached_property
    def processor(self) -> BrainLMFeatureExtractor:
        """The processor saved beside the shards (fitted on the training split), checked against the shards' atlas."""
        if not self.is_remote:
            processor = BrainLMFeatureExtractor.from_pretrained(self.path)
        else:
            import fsspec

            with tempfile.TemporaryDirectory() as folder, fsspec.open(f"{self.path}/{PROCESSOR}") as f:
                (Path(folder) / PROCESSOR).write_bytes(f.read())
                try:
                    processor = BrainLMFeatureExtractor.from_pretrained(folder)
                except ValueError as error:
                    message = str(error).replace(str(Path(folder) / PROCESSOR), f"{self.path}/{PROCESSOR}")
                    raise InvalidFileError(message) from error
        self.check_processor(processor, f"{self.path}/{PROCESSOR}")
        return processor

    def recording_atlas(self) -> str | None:
        """The atlas name of the recordings: from the summary, else from the `atlas` column of the first shard."""
        if "atlas" in self.summary:
            return self.summary["atlas"]
        if self.is_remote or not self.splits:
            return None
        return shard_atlas(self.shards(self.splits[0])[0])

    def check_processor(self, processor: BrainLMFeatureExtractor, name: str = "the processor") -> None:
        """Refuse a processor made for another atlas than the recordings' (both named), or another region count."""
        atlas = self.recording_atlas()
        if processor.atlas and atlas and processor.atlas != atlas:
            raise InvalidFileError(
                f"{name} is for the atlas {processor.atlas!r}, but the recordings of {self.path} are parcellated "
                f"with {atlas!r}: use the processor made with this dataset ({self.path}/{PROCESSOR})."
            )
        regions = self.summary.get("num_regions")
        if processor.num_regions is not None and regions is not None and processor.num_regions != regions:
            raise InvalidFileError(
                f"{name} has {processor.num_regions} regions, but the recordings of {self.path} have {regions}."
            )

    @property
    def splits(self) -> list[str]:
        """Names of the splits that hold shards (as `prepare_summary.json` lists them), sorted."""
        return sorted(self.summary["splits"])

    def shards(self, split: str) -> list[str]:
        """
        Paths (or URLs) of the Parquet shards of `split`, sorted; empty when the split does not exist. They must be
        exactly the shards that `prepare_summary.json` lists: a missing shard, or one it does not list (left by
        another run), is an error that names them.
        """
        if not self.is_remote:
            found = sorted(str(p) for p in (Path(self.path) / split).glob("*.parquet"))
        else:
            import fsspec

            filesystem, root = fsspec.core.url_to_fs(self.path)
            found = sorted(f"{self.path}/{split}/{Path(p).name}" for p in filesystem.glob(f"{root}/{split}/*.parquet"))
        listed = self.summary["splits"].get(split)
        if listed is None:
            if found:
                raise InvalidFileError(
                    f"{self.path}/{split}/ holds {len(found)} Parquet shards ({Path(found[0]).name}, ...) that "
                    f"{SUMMARY} does not list: they belong to another run; prepare the dataset again (overwrite=True)."
                )
            return []
        expected = listed.get("files") or [
            f"shard-{index:05d}-of-{listed['shards']:05d}.parquet" for index in range(listed["shards"])
        ]
        names = [Path(p).name for p in found]
        missing, extra = sorted(set(expected) - set(names)), sorted(set(names) - set(expected))
        if missing or extra:
            problems = [f"missing {missing[:5]}" if missing else "", f"not listed {extra[:5]}" if extra else ""]
            error = MissingFileError if missing else InvalidFileError
            raise error(
                f"{self.path}/{split}/ does not hold the {len(expected)} shards that {SUMMARY} lists: "
                f"{'; '.join(p for p in problems if p)} (an incomplete copy, or files of another run): prepare the "
                "dataset again (overwrite=True) or copy it whole."
            )
        return found

    def columns(self, split: str) -> list[str]:
        """Column names of the shards of `split`."""
        import pyarrow.parquet as pq

        first = self.require_shards(split)[0]
        return read_shard(first).schema.names if self.is_remote else pq.read_schema(first).names

    def require_shards(self, split: str) -> list[str]:
        """`shards(split)`, refusing a split without any."""
        shards = self.shards(split)
        if not shards:
            raise MissingFileError(f"{self.path} has no {split}/ split with Parquet shards.")
        return shards

    def recordings(self, split: str, columns: list[str] | None = None) -> list[dict]:
        """Every recording of `split` in shard order, as `read_recordings` gives them (with `columns`)."""
        return [record for shard in self.require_shards(split) for record in read_recordings(shard, columns)]

    def _read_text(self, name: str) -> str:
        if not self.is_remote:
            return (Path(self.path) / name).read_text()
        import fsspec

        with fsspec.open(f"{self.path}/{name}", "rt") as handle:
            return handle.read()


HUB_PROTOCOL = "hf://"


def _is_hub_id(path: str) -> bool:
    """Whether `path` is read as a Hub dataset id: `ORG/NAME` (see `folders.is_path_like`) with no such local path."""
    return "/" in path and not is_path_like(path) and not os.path.exists(path)


def pin_hub_revision(url: str, bare: str | None = None) -> tuple[str, str]:
    """
    `(pinned, commit)`: the Hub URL `url` (`hf://datasets/ORG/NAME[@REVISION][/FOLDER]`) at the commit its revision
    (default `main`) names now, `hf://datasets/ORG/NAME@COMMIT[/FOLDER]`. A malformed URL raises
    `InvalidArgumentError`; the errors of `_hub_commit` name `url`, or `bare` (the id the user gave, read as a Hub
    id) also as the folder it is not.
    """
    from huggingface_hub import constants
    from huggingface_hub.utils import parse_hf_uri

    try:
        parsed = parse_hf_uri(url)
    except ValueError as failure:
        raise InvalidArgumentError(
            f"{url} is no Hub URL ({one_line(failure)[:200]}): write hf://datasets/ORG/NAME[@REVISION][/FOLDER]."
        ) from None
    try:
        commit = _hub_commit(parsed)
    except (MissingFileError, NetworkError) as problem:
        message = (
            f"{url}: {problem}. Check the name, or push the dataset (brainlm prepare --push-to-hub)."
            if bare is None
            else f"no such folder: {bare}, and {problem}. Give the folder made by `brainlm prepare`, or the id of a "
            "dataset pushed to the Hub."
        )
        raise type(problem)(message) from None
    prefix = constants.REPO_TYPES_URL_PREFIXES.get(parsed.type, "")
    folder = f"/{parsed.path_in_repo}" if parsed.path_in_repo else ""
    return f"{HUB_PROTOCOL}{prefix}{parsed.id}@{commit}{folder}", commit


def _hub_commit(parsed) -> str:
    """
    The commit that the revision of `parsed` (a `huggingface_hub` `HfUri`) names, asked once within
    `network_timeout()`. A repository or revision the Hub does not have raises `MissingFileError`, an unreachable
    Hub or offline mode `NetworkError`.
    """
    from huggingface_hub import HfApi, constants
    from huggingface_hub.errors import HFValidationError, RepositoryNotFoundError, RevisionNotFoundError

    repo = f"{parsed.type} repository {parsed.id}"
    if constants.HF_HUB_OFFLINE:
        raise NetworkError(f"the Hub cannot be asked for the {repo}: offline mode is on (HF_HUB_OFFLINE=1)")
    try:
        info = HfApi().repo_info(parsed.id, repo_type=parsed.type, revision=parsed.revision, timeout=network_timeout())
    except RepositoryNotFoundError:
        raise MissingFileError(f"the Hub ({constants.ENDPOINT}) has no {repo} (or it is private)") from None
    except RevisionNotFoundError:
        raise MissingFileError(f"the {repo} has no revision {parsed.revision!r}") from None
    except HFValidationError as failure:
        raise MissingFileError(f"{parsed.id!r} is no Hub repository id ({one_line(failure)[:200]})") from None
    except Exception as failure:  # noqa: BLE001 - the HTTP client's timeouts, connection and server errors
        reason = one_line(failure)[:200] or type(failure).__name__
        raise NetworkError(f"the Hub ({constants.ENDPOINT}) could not be asked for the {repo}: {reason}") from None
    return info.sha


def shard_atlas(path: str) -> str | None:
    """The atlas name of a local prepared shard (its `atlas` column's first value), or None when it has none."""
    import pyarrow.parquet as pq

    with reading_shard(path):
        if "atlas" not in pq.read_schema(path).names:
            return None
    return next((name for name in read_shard(path, ["atlas"]).column("atlas").to_pylist() if name), None)


class UnreadableShardError(InvalidFileError, RuntimeError):
    """A Parquet shard that cannot be read (damaged, cut short, not Parquet); also the `RuntimeError` that shard
    read failures raise to code that catches those."""


@contextmanager
def reading_shard(path: str):
    """
    Turn any failure of the block, which reads the shard `path`, into an `UnreadableShardError` that names the shard
    and the fix. A `UserError` raised inside (by a nested read) passes through unchanged.
    """
    try:
        yield
    except UserError:
        raise
    except FileNotFoundError as error:
        raise MissingFileError(
            f"The Parquet shard {path} is missing ({one_line(error)[:200]}): was it deleted or moved while in use? "
            "Restore it (or prepare the dataset again); a run resumes from its latest checkpoint."
        ) from error
    except Exception as error:  # noqa: BLE001 - any read failure means the shard cannot be used
        raise UnreadableShardError(
            f"Could not read the Parquet shard {path}: {one_line(error)[:300]}. Prepare the dataset again, or copy "
            "it again whole if this shard was copied."
        ) from error


SUMMARY, PROCESSOR = "prepare_summary.json", "preprocessor_config.json"
RECORDING_COLUMNS = ["id", "series", "num_timepoints", "num_regions"]
STATISTICS_COLUMNS = ["series_mean", "series_std"]  # per recording (`zscore_statistics`); older shards lack them


def read_shard(path: str, columns: list[str] | None = None):
    """
    One Parquet shard as a pyarrow Table (local path or any fsspec URL), with `columns` (default: all). A shard that
    cannot be read raises naming it.
    """
    import fsspec
    import pyarrow as pa
    import pyarrow.parquet as pq

    with reading_shard(path):
        filesystem, location = fsspec.core.url_to_fs(path)
        if filesystem.protocol in ("file", ("file", "local")):
            return pq.read_table(location, columns=columns, memory_map=True)
        data = filesystem.cat_file(location)  # one whole read: no range requests needed from a server
        return pq.read_table(pa.BufferReader(data), columns=columns)


def read_recordings(
    path: str, columns: list[str] | None = None, reader: str = "auto", statistics: bool = False
) -> list[dict]:
    """
    Every row of a prepared shard as `{"id", "series": (T, V) float32 read-only array, **columns}`, in shard order
    (`columns`: extra columns such as phenotypes). A shard that cannot be read raises naming it. With `statistics`,
    each record also has `"statistics"`: its stored `(series_mean, series_std)` `(V,)` float32, or None for a shard
    prepared before they were stored (`BrainLMFeatureExtractor.windows(..., statistics=)` then computes them).

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
        raise InvalidArgumentError(f"reader must be 'auto' or 'pyarrow', got {reader!r}.", argument="reader")
    with reading_shard(path):
        data = _shard_buffer(path)
        parquet = pq.ParquetFile(pa.BufferReader(data))
        stored = statistics and set(STATISTICS_COLUMNS) <= set(parquet.schema_arrow.names)
        others = [c for c in RECORDING_COLUMNS if c != "series"] + list(columns or [])
        others += STATISTICS_COLUMNS if stored else []
        table = parquet.read(columns=others if reader == "auto" else others + ["series"])
        columns_of = table.column
        shapes = list(
            zip(columns_of("num_timepoints").to_pylist(), columns_of("num_regions").to_pylist(), strict=True)
        )
        flat = series_values(data, parquet.metadata) if reader == "auto" else None
        if flat is None or [len(v) for v in flat] != [t * v for t, v in shapes]:
            table = table if "series" in table.column_names else parquet.read(columns=others + ["series"])
            _check_series(path, table, shapes)
            if reader == "auto" and flat is None:
                warnings.warn(
                    f"{path} stores `series` compressed or dictionary-encoded: it is decoded by pyarrow, several "
                    "times slower than a shard written by `brainlm prepare` (prepare it again to speed up).",
                    stacklevel=2,
                )
            flat = _list_rows(table.column("series"))
    extras = {name: table.column(name).to_pylist() for name in columns or []}
    if statistics:
        extras["statistics"] = _statistics(table) if stored else [None] * len(table)
    return [
        {"id": record_id, "series": values.reshape(shape), **{name: extra[row] for name, extra in extras.items()}}
        for row, (record_id, shape, values) in enumerate(
            zip(table.column("id").to_pylist(), shapes, flat, strict=True)
        )
    ]


def _check_series(path: str, table, shapes: list[tuple[int, int]]) -> None:
    """Refuse a shard whose `series` row is null, or holds another number of values than its `num_timepoints` x
    `num_regions` say, naming the shard and the recording."""
    column = table.column("series")
    lengths = column.combine_chunks().value_lengths().to_numpy(zero_copy_only=False)
    for row, (record_id, valid, length, shape) in enumerate(
        zip(table.column("id").to_pylist(), column.is_valid().to_numpy(), lengths, shapes, strict=True)
    ):
        if not valid or length != shape[0] * shape[1]:
            found = "no series (null)" if not valid else f"{length} values in `series`"
            raise InvalidFileError(
                f"{path}: recording {record_id!r} (row {row}) has {found}, but its num_timepoints x num_regions = "
                f"{shape[0]} x {shape[1]}: the shard was damaged or written by other code; prepare the dataset "
                "again, or copy the shard again whole."
            )


def _list_rows(column) -> list[np.ndarray]:
    """The rows of a `list<float32>` column as numpy views."""
    column = column.combine_chunks()
    offsets, values = column.offsets.to_numpy(), column.values.to_numpy(zero_copy_only=False)
    return [values[offsets[row] : offsets[row + 1]] for row in range(len(column))]


def _statistics(table) -> list[tuple | None]:
    """Each row's stored `(series_mean, series_std)`, or None where either is null."""
    columns = [table.column(name) for name in STATISTICS_COLUMNS]
    valid = np.logical_and(*(column.is_valid().to_numpy() for column in columns))
    pairs = zip(*(_list_rows(column) for column in columns), strict=True)
    return [pair if known else None for pair, known in zip(pairs, valid, strict=True)]


def _shard_buffer(path: str):
    """The whole shard as a `pyarrow.Buffer`: memory-mapped for a local file, read in one request for a URL."""
    import fsspec
    import pyarrow as pa

    filesystem, location = fsspec.core.url_to_fs(path)
    if filesystem.protocol in ("file", ("file", "local")):
        with pa.memory_map(location, "r") as mapped:
            return mapped.read_buffer()
    return pa.py_buffer(filesystem.cat_file(location))


def read_shapes(path: str, processor=None) -> list[tuple[int, int]]:
    """
    `(num_timepoints, num_regions)` of every row of a prepared shard, reading only those columns (a URL is read by
    range requests when its server allows them, else whole). With a `processor`, `num_timepoints` is the length at
    the processor's TR (`resampled_length`, from the shard's `repetition_time` column). A shard that cannot be read
    raises naming it.
    """
    names = ["num_timepoints", "num_regions"]
    if processor is not None and processor.repetition_time is not None:
        shapes, trs = _read_shape_columns(path, names + ["repetition_time"], with_tr=True)
        return [(processor.resampled_length(t, tr), v) for (t, v), tr in zip(shapes, trs, strict=True)]
    return _read_shape_columns(path, names)[0]


def _read_shape_columns(path: str, names: list[str], with_tr: bool = False) -> tuple[list, list]:
    import fsspec
    import pyarrow.parquet as pq

    if with_tr and not tr_columns(path):  # an early shard without TRs: unknown
        names = names[:2]
    with reading_shard(path):
        filesystem, location = fsspec.core.url_to_fs(path)
        if filesystem.protocol in ("file", ("file", "local")):
            table = pq.read_table(location, columns=names, memory_map=True)
        else:
            try:
                with filesystem.open(location) as handle:
                    table = pq.read_table(handle, columns=names)
            except ValueError:  # a server without range requests
                table = read_shard(path, names)
    shapes = list(zip(table.column(names[0]).to_pylist(), table.column(names[1]).to_pylist(), strict=True))
    trs = table.column("repetition_time").to_pylist() if "repetition_time" in names else [None] * len(shapes)
    return shapes, trs


def tr_columns(path: str) -> list[str]:
    """`["repetition_time"]` when the shard has that column (every shard `brainlm prepare` writes), else `[]`: the
    `columns` that `read_recordings` should add to give each recording its TR."""
    return ["repetition_time"] if "repetition_time" in shard_columns(path) else []


def shard_columns(path: str) -> list[str]:
    """The column names of a prepared shard (local path or URL), read from its footer."""
    import fsspec
    import pyarrow.parquet as pq

    with reading_shard(path):
        filesystem, location = fsspec.core.url_to_fs(path)
        try:
            with filesystem.open(location) as handle:
                return pq.read_schema(handle).names
        except ValueError:  # a server without range requests
            return read_shard(path).schema.names
