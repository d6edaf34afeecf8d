# Copyright 2026 The brainlm_hf authors. Licensed under the Apache License, Version 2.0.
"""`prepare_dataset`: recordings (NIfTI images or parcel tables) -> a prepared dataset of Parquet shards.

Shards hold one row per recording: the raw `(T, V)` parcel series flattened (`series`, float32) with its shape
(`num_timepoints`, `num_regions`), ids (`id`, `subject`, `session`), `repetition_time`, `atlas` and the phenotype
columns. The `BrainLMFeatureExtractor` fitted on the training split is saved beside the shards, so the same
normalisation applies at pretraining, fine-tuning and inference time. Read it back with `PreparedDataset`.
"""

import json
import math
import warnings
from pathlib import Path

import numpy as np

from ..feature_extraction_brainlm import BrainLMFeatureExtractor
from .atlas import Atlas
from .recordings import find_recordings, load_recording, recording_ids

SPLITS = {"train": 0.8, "validation": 0.1, "test": 0.1}


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
    atlas: Atlas | None = None,
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
    patch_size: int | None = None,
) -> dict:
    """
    Turn recordings into Parquet shards with a subject-level train/validation/test split and a fitted processor.

    Args:
        inputs: folder, glob or list of NIfTI images (parcellated with `atlas`) and/or parcel tables `(T, V)`.
        output_dir: receives `<split>/shard-XXXXX-of-YYYYY.parquet`, `preprocessor_config.json` (fitted on the
            training split), `prepare_summary.json` and `README.md` (a dataset card that
            `datasets.load_dataset(output_dir)` reads).
        atlas (`Atlas`, *optional*): needed for NIfTI inputs; its coordinates, region names and name are stored.
        phenotypes (*optional*): CSV/TSV path or a `pandas.DataFrame` with a `subject` or `id` column (the file
            name without suffix); its other columns are added to every row of the matching recordings.
        num_timepoints (`int`): the window length; shorter recordings are left out and reported.
        splits (`dict`): split fractions by subject, default `{"train": 0.8, "validation": 0.1, "test": 0.1}`.
        shard_multiple (`int`): shard counts are a multiple of this (e.g. GPUs x loader workers) whenever the split
            has that many recordings, so that every rank streams whole shards.
        coordinates, region_names, atlas_name (*optional*): region coordinates `(V, 3)`, names and atlas name for
            parcel tables made without an `Atlas` object (they override the atlas's).
        patch_size (`int`, *optional*): the patch size of the (region_window) model the dataset is for: a window
            length that is not a multiple of it is refused before anything is read. The dataset card states which
            patch sizes the window length fits either way.

    Holds the parcel series of all recordings in memory (T x V x 4 bytes each). Returns the summary (also written
    to `prepare_summary.json`).
    """
    check_window_length(num_timepoints, patch_size)
    splits = splits or SPLITS
    atlas_name = atlas_name or (atlas.name if atlas is not None else None)
    rows, too_short, without_phenotypes = read_rows(
        inputs, atlas, repetition_time, num_timepoints, _phenotype_table(phenotypes), atlas_name
    )
    assignment = split_subjects([row["subject"] for row in rows], splits, seed)
    processor = BrainLMFeatureExtractor(
        normalization=normalization,
        coordinates=_as_list(coordinates if coordinates is not None else getattr(atlas, "coordinates", None)),
        region_names=region_names or getattr(atlas, "region_names", None),
        num_timepoints=num_timepoints,
        repetition_time=next((row["repetition_time"] for row in rows if row["repetition_time"]), None),
        atlas=atlas_name,
    ).fit([row["series"] for row in rows if assignment[row["subject"]] == "train"])

    output = Path(output_dir)
    summary = {
        "splits": write_splits(rows, assignment, splits, output, shard_multiple, target_shard_bytes),
        "too_short": too_short,
        "without_phenotypes": without_phenotypes,
        "num_regions": rows[0]["series"].shape[1],
    }
    processor.save_pretrained(output)
    (output / "README.md").write_text(_dataset_card(summary, processor, num_timepoints))
    (output / "prepare_summary.json").write_text(json.dumps(summary, indent=2))
    return summary


PRESET_PATCH_SIZE = 20  # the patch size of every region_window preset


def check_window_length(num_timepoints: int, patch_size: int | None) -> None:
    """Refuse a window length that a region_window model of `patch_size` cannot cut into patches."""
    if num_timepoints < 1:
        raise ValueError(f"num_timepoints (the window length) must be positive, got {num_timepoints}.")
    if patch_size is not None and (patch_size < 1 or num_timepoints % patch_size):
        lower = num_timepoints - num_timepoints % patch_size if patch_size > 0 else 0
        raise ValueError(
            f"The window length {num_timepoints} is not a multiple of the model's patch size {patch_size}: use "
            f"--num-timepoints {lower or patch_size}{f' or {lower + patch_size}' if lower else ''} (or the patch size "
            "of the model you will train)."
        )


def patch_sizes_statement(num_timepoints: int) -> str:
    """One sentence for the dataset card: which region_window patch sizes the window length fits."""
    fits = [p for p in range(1, num_timepoints + 1) if num_timepoints % p == 0]
    presets = "fits" if num_timepoints % PRESET_PATCH_SIZE == 0 else "does NOT fit"
    return (
        f"a region_window model needs a patch_size dividing {num_timepoints} ({', '.join(map(str, fits))}); this "
        f"{presets} the brainlm presets' patch_size {PRESET_PATCH_SIZE}"
    )


def read_rows(inputs, atlas, repetition_time, num_timepoints: int, phenotypes, atlas_name) -> tuple:
    """
    One row per recording long enough for a window (`id`, `subject`, `session`, `series` `(T, V)`,
    `repetition_time`, `atlas`, phenotype columns), the recordings left out as too short, and the ids without a
    phenotype row (warned about). NaN/Inf values and recordings of different region counts are refused.
    """
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
        row = {"id": record_id, "subject": subject, "session": session, "series": series}
        row.update(repetition_time=tr, atlas=atlas_name, **_phenotype_row(phenotypes, record_id, subject))
        if phenotypes is not None and all(row[column] is None for column in phenotypes.columns):
            without_phenotypes.append(record_id)
        rows.append(row)
    if not rows:
        raise ValueError(f"No recording has {num_timepoints} timepoints or more ({len(too_short)} too short).")
    num_regions = sorted({row["series"].shape[1] for row in rows})
    if len(num_regions) > 1:
        raise ValueError(f"Recordings have different numbers of regions {num_regions}: use one atlas.")
    if without_phenotypes:
        warnings.warn(
            f"{len(without_phenotypes)} recordings have no row in the phenotype table (their phenotype columns are "
            f"empty): {without_phenotypes[:10]}{' ...' if len(without_phenotypes) > 10 else ''}",
            stacklevel=3,
        )
    return rows, too_short, without_phenotypes


def write_splits(
    rows: list[dict], assignment: dict, splits: dict, output: Path, shard_multiple: int, target_shard_bytes: int
) -> dict:
    """Write each split's rows as Parquet shards under `output/<split>/`; returns per-split counts."""
    import datasets
    import pyarrow.parquet as pq

    counts, features = {}, None
    for split in splits:
        members = [row for row in rows if assignment[row["subject"]] == split]
        if not members:
            continue
        nbytes = sum(row["series"].nbytes for row in members)
        num_shards = _shard_count(len(members), nbytes, shard_multiple, target_shard_bytes)
        dataset = datasets.Dataset.from_list([_to_record(row) for row in members], features=features)
        features = dataset.features  # every split gets the schema of the first
        (output / split).mkdir(parents=True, exist_ok=True)
        bounds = np.linspace(0, len(dataset), num_shards + 1).astype(int)
        for index in range(num_shards):
            # written by pyarrow from the datasets table (its schema carries the datasets features): plain float
            # encoding without compression reads ~1.6x faster than datasets' dictionary + snappy default
            table = dataset.data.table.slice(bounds[index], bounds[index + 1] - bounds[index])
            path = output / split / f"shard-{index:05d}-of-{num_shards:05d}.parquet"
            pq.write_table(table, path, use_dictionary=["id", "subject", "session", "atlas"], compression="none")
        counts[split] = {
            "recordings": len(members),
            "subjects": len({row["subject"] for row in members}),
            "shards": num_shards,
        }
    return counts


def _as_list(coordinates) -> list | None:
    return None if coordinates is None else np.asarray(coordinates, dtype=np.float64).tolist()


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

Regions: {summary["num_regions"]}; atlas: {processor.atlas or "not given"}; window: {num_timepoints} timepoints
({patch_sizes_statement(num_timepoints)});
normalisation: {processor.normalization} (statistics fitted on the training split, in `preprocessor_config.json`).

Recordings left out for being shorter than one window: {len(summary["too_short"])}
{skipped}
"""
