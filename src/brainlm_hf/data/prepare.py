# Copyright 2026 The brainlm_hf authors. Licensed under the Apache License, Version 2.0.
"""Prepared datasets: recordings -> Parquet shards (`prepare_dataset`) -> streamed training windows (`WindowStream`).

Shards hold one row per recording: the raw `(T, V)` parcel series flattened (`series`, float32) with its shape
(`num_timepoints`, `num_regions`), ids (`id`, `subject`, `session`), `repetition_time`, `atlas` and the phenotype
columns. The fitted `BrainLMFeatureExtractor` is saved beside the shards, so the same normalisation applies at
pretraining, fine-tuning and inference time.
"""

import glob
import json
import math
import re
import warnings
import zlib
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch

from ..feature_extraction_brainlm import BrainLMFeatureExtractor
from .parcellation import PARCEL_SERIES_SUFFIXES, load_parcel_series, parcellate, repetition_time

NIFTI_SUFFIXES = (".nii", ".nii.gz")
SPLITS = ("train", "validation", "test")


def find_recordings(inputs) -> list[Path]:
    """Folders (searched recursively), glob patterns and/or files, one or a list -> sorted recording paths."""
    paths = []
    for item in [inputs] if isinstance(inputs, str | Path) else inputs:
        if Path(item).is_dir():
            paths += [p for p in Path(item).rglob("*") if p.is_file()]
        elif glob.has_magic(str(item)):
            paths += [Path(p) for p in glob.glob(str(item), recursive=True)]
        else:
            paths.append(Path(item))
    paths = sorted(p for p in paths if p.name.endswith(NIFTI_SUFFIXES + PARCEL_SERIES_SUFFIXES))
    if not paths:
        raise FileNotFoundError(f"No recordings (NIfTI or parcel tables) found in {inputs}.")
    return paths


def recording_ids(path: Path) -> tuple[str, str, str]:
    """(id, subject, session) from a file name: BIDS `sub-<x>` / `ses-<y>` entities if present, else the stem."""
    stem = path.name
    for suffix in NIFTI_SUFFIXES + PARCEL_SERIES_SUFFIXES:
        stem = stem.removesuffix(suffix)
    subject = re.search(r"sub-([A-Za-z0-9]+)", str(path))
    session = re.search(r"ses-([A-Za-z0-9]+)", str(path))
    return stem, subject.group(1) if subject else stem, session.group(1) if session else ""


def load_recording(path: Path, atlas=None, tr: float | None = None) -> tuple[np.ndarray, float | None]:
    """`(T, V)` float32 series of a NIfTI image (parcellated with `atlas`) or a parcel table, and its TR."""
    if path.name.endswith(NIFTI_SUFFIXES):
        if atlas is None:
            raise ValueError(f"{path} is a NIfTI image: an atlas is needed to parcellate it.")
        import nibabel as nib

        image = nib.load(path)
        return parcellate(image, atlas), tr if tr is not None else repetition_time(image)
    return load_parcel_series(path), tr


def split_subjects(subjects, fractions: dict[str, float], seed: int) -> dict[str, str]:
    """Assign every subject to one split (never a subject in two), deterministically from `seed`."""
    unique = sorted(set(subjects))
    order = np.random.default_rng(seed).permutation(len(unique))
    bounds = np.cumsum([fractions[name] for name in fractions]) / sum(fractions.values())
    assignment = {}
    for rank, index in enumerate(order):
        position = (rank + 0.5) / len(unique)
        assignment[unique[index]] = list(fractions)[int(np.searchsorted(bounds, position))]
    return assignment


def prepare_dataset(
    inputs,
    output_dir,
    atlas=None,
    phenotypes=None,
    repetition_time: float | None = None,
    num_timepoints: int = 200,
    normalization: str = "robust",
    splits: dict[str, float] | None = None,
    seed: int = 0,
    shard_multiple: int = 8,
    target_shard_bytes: int = 200 * 2**20,
    coordinates=None,
    region_names: list[str] | None = None,
    atlas_name: str | None = None,
) -> dict:
    """
    Turn recordings into Parquet shards with a subject-level train/validation/test split and a fitted processor.

    Args:
        inputs: folder, glob or list of NIfTI images (parcellated with `atlas`) and/or parcel tables `(T, V)`.
        output_dir: receives `<split>/shard-XXXXX-of-YYYYY.parquet`, `preprocessor_config.json` (fitted on the
            training split) and `README.md` (a dataset card that `datasets.load_dataset(output_dir)` reads).
        atlas (`brainlm_hf.atlas.Atlas`, *optional*): needed for NIfTI inputs; its coordinates and name are stored.
        phenotypes (*optional*): CSV/TSV path or a `pandas.DataFrame` with a `subject` or `id` column (the file
            name without suffix); its other columns are added to every row of the matching recordings.
        num_timepoints (`int`): the window length; shorter recordings are left out and reported.
        splits (`dict`): split fractions by subject, default `{"train": 0.8, "validation": 0.1, "test": 0.1}`.
        shard_multiple (`int`): shard counts are a multiple of this (e.g. GPUs x loader workers) whenever the split
            has that many recordings, so that every rank streams whole shards.
        coordinates, region_names, atlas_name (*optional*): region coordinates `(V, 3)`, names and atlas name for
            parcel tables made without an `Atlas` object (they override the atlas's).

    Holds the parcel series of all recordings in memory (T x V x 4 bytes each). Returns a summary dict.
    """
    import datasets
    import pyarrow.parquet as pq

    splits = splits or {"train": 0.8, "validation": 0.1, "test": 0.1}
    table = _phenotype_table(phenotypes)
    rows, too_short, without_phenotypes = [], [], []
    for path in find_recordings(inputs):
        series, tr = load_recording(path, atlas, repetition_time)
        record_id, subject, session = recording_ids(path)
        bad = ~np.isfinite(series)
        if bad.any():
            raise ValueError(f"{path}: NaN/Inf values in regions {np.flatnonzero(bad.any(0)).tolist()}.")
        if len(series) < num_timepoints:
            too_short.append({"file": str(path), "num_timepoints": len(series)})
            continue
        row = {
            "id": record_id,
            "subject": subject,
            "session": session,
            "series": series,
            "repetition_time": tr,
            "atlas": atlas_name or (atlas.name if atlas is not None else None),
        }
        row.update(_phenotype_row(table, record_id, subject))
        if table is not None and all(row[column] is None for column in table.columns):
            without_phenotypes.append(record_id)
        rows.append(row)
    if not rows:
        raise ValueError(f"No recording has {num_timepoints} timepoints or more ({len(too_short)} too short).")
    num_regions = {r["series"].shape[1] for r in rows}
    if len(num_regions) > 1:
        raise ValueError(f"Recordings have different numbers of regions {sorted(num_regions)}: use one atlas.")

    assignment = split_subjects([r["subject"] for r in rows], splits, seed)
    if coordinates is None and atlas is not None:
        coordinates = atlas.coordinates
    processor = BrainLMFeatureExtractor(
        normalization=normalization,
        coordinates=np.asarray(coordinates, dtype=np.float64).tolist() if coordinates is not None else None,
        region_names=region_names or (atlas.region_names if atlas is not None else None),
        num_timepoints=num_timepoints,
        repetition_time=next((r["repetition_time"] for r in rows if r["repetition_time"]), None),
        atlas=atlas_name or (atlas.name if atlas is not None else None),
    )
    processor.fit([r["series"] for r in rows if assignment[r["subject"]] == "train"])

    output = Path(output_dir)
    features = None
    summary = {
        "splits": {},
        "too_short": too_short,
        "without_phenotypes": without_phenotypes,
        "num_regions": num_regions.pop(),
    }
    if without_phenotypes:
        warnings.warn(
            f"{len(without_phenotypes)} recordings have no row in the phenotype table (their phenotype columns are "
            f"empty): {without_phenotypes[:10]}{' ...' if len(without_phenotypes) > 10 else ''}",
            stacklevel=2,
        )
    for split in splits:
        members = [r for r in rows if assignment[r["subject"]] == split]
        if not members:
            continue
        nbytes = sum(r["series"].nbytes for r in members)
        num_shards = _shard_count(len(members), nbytes, shard_multiple, target_shard_bytes)
        dataset = datasets.Dataset.from_list([_to_record(r) for r in members], features=features)
        features = dataset.features
        (output / split).mkdir(parents=True, exist_ok=True)
        bounds = np.linspace(0, len(dataset), num_shards + 1).astype(int)
        for index in range(num_shards):
            # written by pyarrow from the datasets table (its schema carries the datasets features): plain float
            # encoding without compression reads ~1.6x faster than datasets' dictionary + snappy default
            table = dataset.data.table.slice(bounds[index], bounds[index + 1] - bounds[index])
            path = output / split / f"shard-{index:05d}-of-{num_shards:05d}.parquet"
            pq.write_table(table, path, use_dictionary=["id", "subject", "session", "atlas"], compression="none")
        summary["splits"][split] = {
            "recordings": len(members),
            "subjects": len({r["subject"] for r in members}),
            "shards": num_shards,
        }
    processor.save_pretrained(output)
    (output / "README.md").write_text(_dataset_card(summary, processor, num_timepoints))
    (output / "prepare_summary.json").write_text(json.dumps(summary, indent=2))
    return summary


def _shard_count(num_rows: int, nbytes: int, multiple: int, target_bytes: int) -> int:
    if num_rows < multiple:
        return 1
    wanted = max(1, math.ceil(nbytes / target_bytes))
    return min(num_rows // multiple, math.ceil(wanted / multiple)) * multiple


def _to_record(row: dict) -> dict:
    series = row["series"]
    record = {k: v for k, v in row.items() if k != "series"}
    record.update(series=series.reshape(-1), num_timepoints=series.shape[0], num_regions=series.shape[1])
    return record


def _phenotype_table(phenotypes):
    if phenotypes is None:
        return None
    import pandas as pd

    table = (
        phenotypes
        if isinstance(phenotypes, pd.DataFrame)
        else pd.read_csv(  # identifiers stay strings: "007" must not become 7
            phenotypes,
            sep="\t" if str(phenotypes).endswith((".tsv", ".txt")) else ",",
            dtype={"id": str, "subject": str},
        )
    )
    key = "id" if "id" in table.columns else "subject"
    if key not in table.columns:
        raise ValueError("The phenotype table needs a 'subject' or an 'id' (file name without suffix) column.")
    table = table.astype({key: str}).set_index(key)
    if not table.index.is_unique:
        raise ValueError(f"The phenotype table has repeated {key} values.")
    return table


def _phenotype_row(table, record_id: str, subject: str) -> dict:
    if table is None:
        return {}
    key = record_id if table.index.name == "id" else subject
    if key not in table.index:
        return {column: None for column in table.columns}
    return {column: (None if _is_missing(v) else v) for column, v in table.loc[key].items()}


def _is_missing(value) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def _dataset_card(summary: dict, processor: BrainLMFeatureExtractor, num_timepoints: int) -> str:
    configs = "\n".join(f"      - split: {split}\n        path: {split}/*.parquet" for split in summary["splits"])
    rows = "\n".join(
        f"| {split} | {s['recordings']} | {s['subjects']} | {s['shards']} |" for split, s in summary["splits"].items()
    )
    skipped = "\n".join(f"- {s['file']} ({s['num_timepoints']} timepoints)" for s in summary["too_short"]) or "none"
    return f"""---
configs:
  - config_name: default
    data_files:
{configs}
tags:
  - fmri
  - brainlm
---

# BrainLM pretraining dataset

Prepared with `brainlm_hf.data.prepare_dataset`: one row per recording, the raw parcel series (`series`, float32,
flattened from `(num_timepoints, num_regions)`), ids, TR, atlas and phenotype columns. Splits are by subject.

| split | recordings | subjects | shards |
| --- | --- | --- | --- |
{rows}

Regions: {summary["num_regions"]}; atlas: {processor.atlas or "not given"}; window: {num_timepoints} timepoints;
normalisation: {processor.normalization} (statistics fitted on the training split, in `preprocessor_config.json`).

Recordings left out for being shorter than one window: {len(summary["too_short"])}
{skipped}
"""


class WindowStream(torch.utils.data.IterableDataset):
    """
    Random training windows streamed from Parquet shards (local paths or URLs), exactly resumable.

    Each epoch permutes the shards with `(seed, epoch)`; rank `r` of `world_size` takes shards `r, r + world_size, ...`
    of that permutation (so every rank reads whole shards; make the shard count a multiple of the world size).
    Recordings are read in order, normalised whole by the feature extractor, and cut into `crops_per_recording`
    windows at offsets drawn from `(seed, epoch, recording id)`; the windows of each block of `block_size`
    recordings are shuffled with `(seed, epoch, shard, block)`. Nothing depends on a shuffle buffer or RNG state,
    so `state_dict()` (epoch, shard, window position) restores the stream exactly. Iterating again after a complete
    pass repeats the epoch; call `set_epoch` for a new order. Recordings shorter than one window are skipped and
    counted in `skipped`.
    Yields dicts with `signal_values` `(V, T)` in model region order (float32 numpy), the recording `id` and the
    `crop` number (`id` and `crop` name a window uniquely within an epoch).
    """

    def __init__(
        self,
        data_files: list[str],
        feature_extractor: BrainLMFeatureExtractor,
        crops_per_recording: int = 4,
        block_size: int = 16,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
    ):
        super().__init__()
        if not data_files:
            raise ValueError("WindowStream needs at least one shard.")
        self.data_files = sorted(str(f) for f in data_files)
        self.feature_extractor = feature_extractor
        self.crops_per_recording = crops_per_recording
        self.block_size = block_size
        self.seed, self.rank, self.world_size = seed, rank, world_size
        self.epoch, self._shard_position, self._window_position = 0, 0, 0
        self.skipped: list[str] = []

    def set_epoch(self, epoch: int) -> None:
        self.epoch, self._shard_position, self._window_position = epoch, 0, 0

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "shard": self._shard_position, "window": self._window_position}

    def load_state_dict(self, state: dict) -> None:
        self.epoch, self._shard_position, self._window_position = state["epoch"], state["shard"], state["window"]

    def shards_for_epoch(self, epoch: int) -> list[str]:
        order = np.random.default_rng([self.seed, epoch]).permutation(len(self.data_files))
        return [self.data_files[i] for i in order][self.rank :: self.world_size]

    def __iter__(self) -> Iterator[dict]:
        shards = self.shards_for_epoch(self.epoch)
        while self._shard_position < len(shards):
            shard = shards[self._shard_position]
            windows = self._shard_windows(shard, self._shard_position)
            for index in range(self._window_position, len(windows)):
                self._window_position = index + 1
                yield windows[index]
            self._shard_position, self._window_position = self._shard_position + 1, 0
        self._shard_position = 0  # a finished pass starts over (same epoch, same order) unless set_epoch is called

    def _shard_windows(self, shard: str, shard_position: int) -> list[dict]:
        """Every window of one shard in its shuffled order (re-derived identically on resume)."""
        records = read_recordings(shard)
        length = self.feature_extractor.num_timepoints
        windows = []
        for block_start in range(0, len(records), self.block_size):
            block = []
            for record in records[block_start : block_start + self.block_size]:
                if len(record["series"]) < length:
                    self.skipped.append(record["id"])
                    continue
                series = self.feature_extractor.normalize(record["series"], f"{shard}: {record['id']}")  # (T, V)
                rng = np.random.default_rng([self.seed, self.epoch, zlib.crc32(record["id"].encode())])
                starts = rng.integers(0, len(series) - length + 1, self.crops_per_recording)
                for crop, start in enumerate(starts):
                    window = self.feature_extractor.to_model_order(series[start : start + length].T)  # (V, T)
                    block.append({"signal_values": np.ascontiguousarray(window), "id": record["id"], "crop": crop})
            rng = np.random.default_rng([self.seed, self.epoch, shard_position, block_start])
            windows += [block[i] for i in rng.permutation(len(block))]
        return windows


def read_shard(path: str, extra_columns: list[str] | None = None):
    """
    One Parquet shard as a pyarrow Table (local path or any fsspec URL) with the recording columns and
    `extra_columns` (e.g. phenotypes); a corrupt shard raises naming it.
    """
    import fsspec
    import pyarrow as pa
    import pyarrow.parquet as pq

    columns = ["id", "series", "num_timepoints", "num_regions", *(extra_columns or [])]
    try:
        filesystem, location = fsspec.core.url_to_fs(path)
        if filesystem.protocol in ("file", ("file", "local")):
            return pq.read_table(location, columns=columns, memory_map=True)
        data = filesystem.cat_file(location)  # one whole read: no range requests needed from a server
        return pq.read_table(pa.BufferReader(data), columns=columns)
    except Exception as error:  # noqa: BLE001 - any read failure means the shard cannot be used
        raise RuntimeError(f"Could not read the Parquet shard {path}: {error}") from error


def read_recordings(path: str, extra_columns: list[str] | None = None) -> list[dict]:
    """
    Every row of a prepared shard (`read_shard`) as `{"id", "series": (T, V) float32 view, **extra_columns}`,
    in shard order.
    """
    table = read_shard(path, extra_columns)
    column = table.column("series").combine_chunks()
    offsets, values = column.offsets.to_numpy(), column.values.to_numpy(zero_copy_only=False)
    shapes = zip(table.column("num_timepoints").to_pylist(), table.column("num_regions").to_pylist(), strict=True)
    extras = {name: table.column(name).to_pylist() for name in extra_columns or []}
    return [
        {
            "id": record_id,
            "series": values[offsets[row] : offsets[row + 1]].reshape(shape),
            **{name: extra[row] for name, extra in extras.items()},
        }
        for row, (record_id, shape) in enumerate(zip(table.column("id").to_pylist(), shapes, strict=True))
    ]


class BrainLMCollator:
    """
    Stacks window items into model inputs: `signal_values` `(B, V, T)`, `coordinates` `(V, 3)` and, when the items
    have them, `labels` `(B, ...)`.
    """

    def __init__(self, feature_extractor: BrainLMFeatureExtractor):
        coordinates = feature_extractor.model_coordinates()
        self.coordinates = torch.from_numpy(coordinates) if coordinates is not None else None

    def __call__(self, items: list[dict]) -> dict:
        batch = {"signal_values": torch.from_numpy(np.stack([item["signal_values"] for item in items]))}
        if "labels" in items[0]:
            batch["labels"] = torch.from_numpy(np.stack([item["labels"] for item in items]))
        if self.coordinates is not None:
            batch["coordinates"] = self.coordinates
        return batch
