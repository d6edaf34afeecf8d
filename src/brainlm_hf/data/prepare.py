# Copyright 2026 The brainlm_hf authors. Licensed under the Apache License, Version 2.0.
"""`prepare_dataset`: recordings (NIfTI images or parcel tables) -> a prepared dataset of Parquet shards.

Shards hold one row per recording: the raw `(T, V)` parcel series flattened (`series`, float32) with its shape
(`num_timepoints`, `num_regions`), its per-region mean and std (`series_mean`, `series_std`: `zscore_statistics`,
so that z-scored windows can be cut without reading the whole recording), ids (`id`, `subject`, `session`),
`repetition_time`, `atlas` and the phenotype columns. The `BrainLMFeatureExtractor` fitted on the training split (or
holding BrainLM's UK Biobank pretraining statistics and clip bounds) is saved beside the shards, so the same
normalisation applies at pretraining, fine-tuning and inference time. Read it back with `PreparedDataset`.
"""

import functools
import json
import math
import multiprocessing
import sys
import warnings
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..arguments import check_choice, check_positive, positional
from ..errors import InvalidArgumentError, InvalidFileError, InvalidInputError, MissingFileError
from ..feature_extraction_brainlm import (
    CLIP_WARNING_FRACTION,
    NORMALIZATIONS,
    RESAMPLE_TOLERANCE,
    SHORT_RECORDINGS,
    UNIT_CONVERSIONS,
    BrainLMFeatureExtractor,
    zscore_statistics,
)
from ..folders import output_folder
from ..progress import Progress
from .atlas import atlas_by_name, read_coordinate_table
from .prepare_parts import parse_part, part_paths, read_parts, write_part
from .recordings import find_recordings, load_recording, recording_names

STATISTICS = ("fit", "uk_biobank")  # where the robust-scaling statistics come from
SPLITS = {"train": 0.8, "validation": 0.1, "test": 0.1}
# the columns every row has: a phenotype column may not take one of these names (it would overwrite the field)
DATASET_FIELDS = (
    "id",
    "subject",
    "session",
    "series",
    "series_mean",
    "series_std",
    "repetition_time",
    "atlas",
    "num_timepoints",
    "num_regions",
)


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


@dataclass
class PrepareArguments:
    """
    What `prepare_dataset` (and `brainlm prepare`) makes of which recordings. Python callers may also pass an `Atlas`
    as `atlas`, a `pandas.DataFrame` as `phenotypes`, an array `(V, 3)` as `coordinates` and a dict of split name
    -> fraction as `splits`. Invalid values raise `InvalidArgumentError` naming the field.
    """

    inputs: list[str] = positional(
        "a folder, a glob (quoted) or files: 4-D NIfTI images (parcellated with --atlas) or parcel tables (T, V) as "
        ".npy/.csv/.tsv/.dat",
        "INPUTS",
    )
    output_dir: str = positional(
        "the prepared dataset: <split>/shard-*.parquet, the fitted processor, prepare_summary.json and a dataset card "
        "(new or empty, or replaced whole with --overwrite)",
        "OUT",
    )
    atlas: str | None = field(default=None, metadata={"help": "'A424' or a label NIfTI, for NIfTI inputs"})
    atlas_dir: str | None = field(
        default=None, metadata={"help": "folder with the A424 files (default: download and verify them)"}
    )
    coordinates: str | None = field(
        default=None,
        metadata={
            "aliases": ["--atlas-coordinates", "--atlas_coordinates"],
            "help": "region coordinates, a `label x y z` table (one row per region): for a custom label NIfTI atlas, "
            "or for parcel tables (a region-window model needs them)",
        },
    )
    phenotypes: str | None = field(
        default=None,
        metadata={
            "help": "CSV/TSV with an 'id' (recording id), 'subject' or 'participant_id' column (a BIDS "
            "participants.tsv; subjects with or without the sub- prefix); its other columns, which may not be named "
            "like a dataset field (DATASET_FIELDS), are added to the rows of the matching recordings"
        },
    )
    repetition_time: float | None = field(
        default=None,
        metadata={
            "aliases": ["--tr"],
            "help": "repetition time in seconds of every input (default: each NIfTI header; tables have none)",
        },
    )
    num_timepoints: int = field(default=200, metadata={"help": "window length, at the processor's TR"})
    target_repetition_time: float | None = field(
        default=None,
        metadata={
            "aliases": ["--target-tr", "--target_tr"],
            "help": "TR in seconds of the model's windows (0.735 for the released weights): recordings at another TR "
            "are resampled to it (linear) when windows are cut; needed when the recordings' TRs differ",
        },
    )
    short_recordings: str = field(
        default="refuse",
        metadata={
            "choices": SHORT_RECORDINGS,
            "help": "a recording shorter than one window at that TR: left out (refuse), or kept and padded with its "
            "per-region mean when windows are cut (pad; pretraining streams skip it)",
        },
    )
    patch_size: int | None = field(
        default=None,
        metadata={
            "help": "patch size of the region_window model to train (refuse a window length that is not a multiple "
            "of it; without it a window length the presets' patch size 20 does not divide is warned about)"
        },
    )
    normalization: str = field(
        default="robust", metadata={"choices": NORMALIZATIONS, "help": "how the processor scales each region"}
    )
    splits: list[float] = field(
        default_factory=lambda: list(SPLITS.values()),
        metadata={
            "aliases": ["--split"],
            "help": f"fractions of the subjects in the {', '.join(SPLITS)} splits (three numbers)",
        },
    )
    seed: int = field(default=0, metadata={"help": "seed of the subject split"})
    shard_multiple: int = field(
        default=8,
        metadata={
            "help": "shard counts are a multiple of this (e.g. GPUs x loader workers) whenever the split has that "
            "many recordings, so that every rank streams whole shards"
        },
    )
    target_shard_bytes: int = field(default=200 * 2**20, metadata={"help": "size of a shard, in bytes"})
    region_names: list[str] | None = field(
        default=None, metadata={"help": "region names of parcel tables made without an atlas (override the atlas's)"}
    )
    atlas_name: str | None = field(
        default=None, metadata={"help": "atlas name of parcel tables made without an atlas (overrides the atlas's)"}
    )
    overwrite: bool = field(
        default=False,
        metadata={
            "help": "replace what OUT holds, whole (never mixed with it; never a folder that holds an input, the "
            "working folder or the home folder)"
        },
    )
    iqr_epsilon: float | None = field(
        default=None,
        metadata={
            "help": "robust scaling: regions whose training IQR is below this (empty parcels) are scaled by it "
            "instead of an error; they are recorded in the processor"
        },
    )
    statistics: str = field(
        default="fit",
        metadata={
            "choices": STATISTICS,
            "help": "robust scaling statistics: fitted on the training split (fit), or BrainLM's UK Biobank "
            "pretraining statistics with their per-region clip bounds (uk_biobank; A424 recordings only), as the "
            "released weights were pretrained with",
        },
    )
    clip_percentiles: list[float] | None = field(
        default=None,
        metadata={
            "help": "with statistics fit: clip each region to these two percentiles (e.g. 1 99) of the robust-scaled "
            "training data, as BrainLM's pretraining did"
        },
    )
    unit_conversion: str = field(
        default="none",
        metadata={
            "choices": UNIT_CONVERSIONS,
            "help": "bring recordings to the statistics' units first: none, demean (per region), or "
            "grand_mean_scaling (grand mean to 10000, then demean, as FSL scales raw BOLD)",
        },
    )
    clip_warning_fraction: float = field(
        default=CLIP_WARNING_FRACTION,
        metadata={"help": "warn about a recording when more than this fraction of its values is clipped"},
    )
    ukb_statistics: str | None = field(
        default=None,
        metadata={
            "help": "a local copy of BrainLM's statistics file (default: $BRAINLM_UKB_STATISTICS, else the "
            "verified download)"
        },
    )
    license: str | None = field(
        default=None,
        metadata={
            "help": "the licence of your recordings for the dataset card (a Hub licence id, e.g. cc-by-4.0, or "
            "other); needed with --push-to-hub"
        },
    )
    push_to_hub: str | None = field(
        default=None, metadata={"metavar": "REPO", "help": "upload the prepared dataset to this Hub dataset repo"}
    )
    token: str | None = field(default=None, metadata={"help": "Hub token for --push-to-hub (default: saved login)"})
    num_proc: int = field(
        default=1,
        metadata={
            "help": "processes that read and parcellate the recordings, one recording at a time each (the output is "
            "the same for every count)"
        },
    )
    part: str | None = field(
        default=None,
        metadata={
            "help": "I/N: read only part I of N of the recordings (one of N contiguous blocks of the sorted inputs) "
            "into OUT/part-I-of-N.parquet, e.g. on one machine of a batch array; then --combine OUT writes the dataset"
        },
    )
    combine: str | None = field(
        default=None,
        metadata={
            "help": "the folder of the N parts written with --part I/N: write OUT from them, as one run over INPUTS "
            "(the same INPUTS and options) would, byte for byte"
        },
    )
    quiet: bool = field(default=False, metadata={"help": "no progress bar and no summary line on stderr"})

    def __post_init__(self):
        check_positive(self, "num_timepoints", "shard_multiple", "target_shard_bytes", "num_proc", integer=True)
        check_positive(self, "patch_size", integer=True, optional=True)
        check_positive(self, "repetition_time", "target_repetition_time", "iqr_epsilon", optional=True)
        check_choice(self, "normalization", NORMALIZATIONS)
        check_choice(self, "short_recordings", SHORT_RECORDINGS)
        self.split_fractions()
        if self.part is not None:
            parse_part(self.part)
            if self.combine is not None:
                raise InvalidArgumentError(
                    "part and combine are two steps: prepare each part with part='I/N', then combine them in one "
                    "more run with combine=<the parts' folder>.",
                    argument="combine",
                )
        check_window_length(self.num_timepoints, self.patch_size)
        check_choice(self, "statistics", STATISTICS)
        check_choice(self, "unit_conversion", UNIT_CONVERSIONS)
        if self.statistics == "uk_biobank" and (self.normalization != "robust" or self.clip_percentiles is not None):
            raise InvalidArgumentError(
                "statistics='uk_biobank' is BrainLM's robust scaling with its own clip bounds: it takes "
                "normalization='robust' and no clip_percentiles.",
                argument="statistics",
            )
        if self.push_to_hub and not self.license:
            raise InvalidArgumentError(
                "push_to_hub needs the licence of your recordings for the dataset card: pass license= (a Hub "
                "licence id such as cc-by-4.0, or other).",
                argument="license",
            )
        if self.atlas == "A424" and self.coordinates is not None:
            raise InvalidArgumentError(
                "coordinates is for a custom atlas or parcel tables: A424 has its own coordinates.",
                argument="coordinates",
            )

    def split_fractions(self) -> dict[str, float]:
        """`splits` as split name -> fraction (a list gives the fractions of `SPLITS`' names, in order)."""
        splits = self.splits
        if isinstance(splits, list | tuple) and len(splits) == len(SPLITS):
            splits = dict(zip(SPLITS, splits, strict=True))
        if not isinstance(splits, dict) or not splits:
            raise InvalidArgumentError(
                f"splits must be {len(SPLITS)} fractions ({', '.join(SPLITS)}) or a dict of split name -> fraction, "
                f"got {splits!r}.",
                argument="splits",
            )
        fractions = {str(name): float(value) for name, value in splits.items()}
        if not all(math.isfinite(v) and v >= 0 for v in fractions.values()) or sum(fractions.values()) <= 0:
            raise InvalidArgumentError(
                f"splits: the fractions must be finite, >= 0 and not all 0, got {fractions}.", argument="splits"
            )
        return fractions


def prepare_dataset(args: PrepareArguments, output_dir=None, **kwargs) -> dict:
    """
    Turn recordings into Parquet shards with a subject-level train/validation/test split and a fitted processor.

    Called with a `PrepareArguments`, or with its fields: `prepare_dataset(inputs, output_dir, num_timepoints=...)`.
    Invalid values raise `InvalidArgumentError` (a `ValueError`) naming the field, before anything is read.

    Args (the fields of `PrepareArguments`):
        inputs: folder, glob or list of NIfTI images (parcellated with `atlas`) and/or parcel tables `(T, V)`.
        output_dir: receives `<split>/shard-XXXXX-of-YYYYY.parquet`, `preprocessor_config.json` (fitted on the
            training split), `prepare_summary.json` (which lists every shard) and `README.md` (a dataset card that
            `datasets.load_dataset(output_dir)` reads). It must be new or empty: everything is written into a
            temporary folder beside it and moved into place once complete.
        atlas (`Atlas` or `str`, *optional*): needed for NIfTI inputs; its coordinates, region names and name are
            stored. A name: `"A424"` (from `atlas_dir`, or its verified download) or the path of a label NIfTI.
        phenotypes (*optional*): CSV/TSV path or a `pandas.DataFrame` with an `id` column (the recording id, see
            `brainlm_hf.data.recordings`), or a `subject` or `participant_id` column (BIDS `participants.tsv`;
            `sub-01` and `01` both name subject `01`); its other columns are added to every row of the matching
            recordings. A column named like a dataset field (`DATASET_FIELDS`: `session`, `repetition_time`, ...)
            is refused: it would overwrite that field. A table that matches no recording is refused.
        repetition_time (`float`, *optional*): the TR in seconds of every input (default: each NIfTI header; tables
            have none). Stored per recording (`repetition_time` column); the series are stored as sampled.
        num_timepoints (`int`): the window length, at the processor's TR.
        target_repetition_time (`float`, *optional*): the processor's TR, e.g. 0.735 for the released weights:
            recordings at another TR (by `resample_tolerance`, 0.1 s) are resampled to it whenever windows are cut
            (streaming, fine-tuning, embedding). Default: the recordings' TR; recordings whose TRs differ by 0.1 s or
            more need it.
        short_recordings (`str`): a recording shorter than one window at the processor's TR is left out and
            reported (`"refuse"`), or kept and padded when windows are cut (`"pad"`, see `BrainLMFeatureExtractor`;
            listed as `padded` in the summary). Pretraining streams skip such recordings either way.
        splits (`dict`): split fractions by subject, default `{"train": 0.8, "validation": 0.1, "test": 0.1}`.
        shard_multiple (`int`): shard counts are a multiple of this (e.g. GPUs x loader workers) whenever the split
            has that many recordings, so that every rank streams whole shards.
        coordinates, region_names, atlas_name (*optional*): region coordinates `(V, 3)` (or the path of a `label x
            y z` table), names and atlas name for parcel tables made without an `Atlas` object (they override the
            atlas's). Without coordinates a warning says that pretraining a region-window model will need them.
        overwrite (`bool`): replace what `output_dir` holds whole (never a folder that holds an input, the working
            folder or the home folder).
        iqr_epsilon (`float`, *optional*): robust scaling of regions whose training IQR is below it (e.g. empty
            parcels) by this value instead of an error (`BrainLMFeatureExtractor.fit`); the regions are recorded.
        patch_size (`int`, *optional*): the patch size of the (region_window) model the dataset is for: a window
            length that is not a multiple of it is refused before anything is read. The dataset card states which
            patch sizes the window length fits either way.
        statistics (`str`): `"fit"` the robust statistics on the training split (`clip_percentiles`, e.g. `(1, 99)`,
            then also sets clip bounds), or `"uk_biobank"`: BrainLM's pretraining statistics and clip bounds (A424
            recordings only; from `ukb_statistics`, a local copy, else `$BRAINLM_UKB_STATISTICS`, else the verified
            download, see `brainlm_hf.data.ukb_statistics`), as the released weights were pretrained with.
        unit_conversion, clip_warning_fraction: fields of the processor (see `BrainLMFeatureExtractor`). With clip
            bounds, every recording whose clipped share passes `clip_warning_fraction` is warned about by name.

        num_proc (`int`): processes that read and parcellate the recordings, each one recording at a time (started
            by fork on Linux); the rows come back in input order, so every file written is the same, byte for byte,
            for every `num_proc`.
        part (`str`, *optional*): `"I/N"`: read only part I of N (one of N contiguous blocks of the sorted inputs,
            ids against all of them) into `output_dir/part-0000I-of-0000N.parquet` (see `prepare_parts`), e.g. as
            task I of a batch array; returns `{"part", "recordings", "file"}`. Phenotypes, the split, the
            statistics and the shards are the combining run's.
        combine (`str`, *optional*): the folder of the N parts: write `output_dir` from them, with the same inputs
            and options as the parts. The rows are those one run would read, so the split, the statistics fitted
            on the training split, the shards, the summary and the card are byte-identical to one run's.
        quiet (`bool`): no progress bar (rate, time left) and no summary line on stderr.

    Memory: the main process holds the parcel series of all recordings (T x V x 4 bytes each); a reading process
    (`num_proc` > 1) holds what `parcellate` holds for one recording (a NIfTI file: one volume and 8 volumes of atlas
    voxels, ~8 MiB for A424 in float32) and its series. Returns the summary (also written to
    `prepare_summary.json`).
    """
    if not isinstance(args, PrepareArguments):
        args = PrepareArguments(args, output_dir, **kwargs)
    elif output_dir is not None or kwargs:
        raise TypeError("prepare_dataset takes a PrepareArguments alone, or inputs, output_dir and keyword fields.")
    return _prepare(args)


def _prepare(args: PrepareArguments) -> dict:
    splits = args.split_fractions()
    atlas = atlas_by_name(args.atlas, args.atlas_dir) if isinstance(args.atlas, str) else args.atlas
    atlas_name = args.atlas_name or (atlas.name if atlas is not None else None)
    coordinates, coordinates_source = args.coordinates, None
    if isinstance(coordinates, str | Path):
        check = {"num_regions": atlas.num_regions, "labels": atlas.labels} if atlas is not None else {}
        coordinates_source, coordinates = coordinates, read_coordinate_table(coordinates, **check)[1]
    paths = find_recordings(args.inputs)
    settings = {"num_recordings": len(paths), "atlas": atlas_name, "repetition_time": args.repetition_time}
    if args.part is not None:
        return _prepare_part(args, paths, atlas, settings)
    phenotype_table = _phenotype_table(args.phenotypes)
    given = [*paths, *(p for p in (args.phenotypes, coordinates_source, args.combine) if isinstance(p, str | Path))]
    progress = Progress("prepare", len(paths), quiet=args.quiet)
    with progress, output_folder(args.output_dir, args.overwrite, "the prepared dataset", inputs=given) as output:
        if args.combine is not None:
            recording_rows = read_parts(args.combine, paths, settings)
            progress.update(len(recording_rows))
        else:
            recording_rows = read_recording_rows(paths, atlas, args.repetition_time, args.num_proc, progress)
        progress.close_bar()
        rows, without_phenotypes = complete_rows(recording_rows, phenotype_table, atlas_name)
        num_regions = rows[0]["series"].shape[1]
        coordinates = coordinates if coordinates is not None else getattr(atlas, "coordinates", None)
        _check_regions(rows, num_regions, atlas, coordinates, coordinates_source, args.region_names)
        processor = BrainLMFeatureExtractor(
            normalization=args.normalization,
            coordinates=_as_list(coordinates),
            region_names=args.region_names or getattr(atlas, "region_names", None),
            num_timepoints=args.num_timepoints,
            repetition_time=args.target_repetition_time or common_repetition_time(rows),
            atlas=atlas_name,
            short_recordings=args.short_recordings,
            unit_conversion=args.unit_conversion,
            clip_warning_fraction=args.clip_warning_fraction,
            **(_ukb_fields(num_regions, args.ukb_statistics) if args.statistics == "uk_biobank" else {}),
        )
        _check_known_repetition_times(rows, processor.repetition_time)
        rows, too_short, padded = _long_enough(rows, processor)
        if args.normalization == "zscore":
            _check_zscore(rows)
        assignment = split_subjects([row["subject"] for row in rows], splits, args.seed)
        train = [row for row in rows if assignment[row["subject"]] == "train"]
        if not train:
            raise InvalidArgumentError(
                f"No recording falls in the training split (splits {splits}, {len(set(assignment))} subjects): "
                "give the train split a larger fraction, or more subjects.",
                argument="splits",
            )
        if args.statistics == "fit":
            processor.fit(
                [row["series"] for row in train],
                iqr_epsilon=args.iqr_epsilon,
                repetition_times=[row["repetition_time"] for row in train],
                clip_percentiles=args.clip_percentiles,
            )
        if processor.clip_low is not None:
            for row in rows:  # warns about each recording mostly clipped (in other units than the statistics)
                processor.normalize(row["series"], f"{row['id']} ({row['file']})")
        if coordinates is None:
            warnings.warn(
                f"{args.output_dir}: no region coordinates. Pretraining a region-window model (the native presets) "
                "needs them: prepare again with coordinates= (a `label x y z` table, one row per region) or atlas=.",
                stacklevel=3,
            )
        shards = write_splits(rows, assignment, splits, output, args.shard_multiple, args.target_shard_bytes)
        _report_splits(shards, splits, len(set(assignment)), args.shard_multiple)
        summary = {
            "splits": shards,
            "too_short": too_short,
            "padded": padded,
            "repetition_time": processor.repetition_time,
            "without_phenotypes": without_phenotypes,
            "num_regions": num_regions,
            "atlas": atlas_name,
        }
        processor.save_pretrained(output)
        (output / "README.md").write_text(_dataset_card(summary, processor, args.num_timepoints, args.license))
        (output / "prepare_summary.json").write_text(json.dumps(summary, indent=2))
        progress.close(windows=sum(_window_count(row, processor) for row in rows))
    if args.push_to_hub:
        push_prepared(args.output_dir, args.push_to_hub, args.token)
    return summary


def _window_count(row: dict, processor: BrainLMFeatureExtractor) -> int:
    """Non-overlapping windows of the processor's length in a recording (one, padded, for a short recording)."""
    return max(1, processor.resampled_length(len(row["series"]), row["repetition_time"]) // processor.num_timepoints)


def _prepare_part(args: PrepareArguments, paths: list[Path], atlas, settings: dict) -> dict:
    """Read part `args.part` of the recordings into `args.output_dir` (see `prepare_parts`); returns its summary."""
    index, count = parse_part(args.part)
    chosen = part_paths(paths, index, count)
    with Progress(f"prepare part {index}/{count}", len(chosen), quiet=args.quiet) as progress:
        names = recording_names(paths)
        rows = read_recording_rows(chosen, atlas, args.repetition_time, args.num_proc, progress, names)
        path = write_part(args.output_dir, index, count, rows, settings, args.overwrite)
    return {"part": args.part, "recordings": len(rows), "file": str(path)}


def push_prepared(folder, repo_id: str, token: str | None = None) -> str:
    """
    Upload a prepared dataset (its split folders of shards, processor, summary and dataset card) to the Hub dataset
    repository `repo_id` in one commit; returns the repository id. `datasets.load_dataset(repo_id)` reads its splits
    through the card's `configs`.
    """
    from ..hub_upload import push_folder
    from .prepared import PreparedDataset

    dataset = PreparedDataset(folder)  # refuses a folder that is not a prepared dataset
    shards = [f"{split}/{Path(shard).name}" for split in dataset.splits for shard in dataset.shards(split)]
    message = f"Upload the prepared dataset {folder}"
    return push_folder(folder, repo_id, message, token, repo_type="dataset", extra=shards)


def _ukb_fields(num_regions: int, path) -> dict:
    """The processor fields of BrainLM's UK Biobank statistics, for recordings of the 424 A424 regions."""
    from .ukb_statistics import NUM_REGIONS, load_ukb_statistics

    if num_regions != NUM_REGIONS:
        raise InvalidInputError(
            f"statistics='uk_biobank' are those of the {NUM_REGIONS} A424 regions, but the recordings have "
            f"{num_regions} regions: parcellate with A424, or fit the statistics (statistics='fit')."
        )
    return load_ukb_statistics(path).processor_fields()


def _statistics_statement(processor: BrainLMFeatureExtractor) -> str:
    source = processor.statistics_source
    where = "fitted on the training split" if source == "fit" else (source or "none")
    return f"{where}; {'clipped to per-region bounds' if processor.clip_low is not None else 'no clipping'}"


PRESET_PATCH_SIZE = 20  # the patch size of every region_window preset


def padding_report(lengths: list[int], window: int) -> str:
    """`"2 recordings, padding 45% of their windows' timepoints"`: recordings of `lengths` (< `window`) timepoints,
    each one window padded to `window`."""
    share = 1 - sum(lengths) / (len(lengths) * window)
    return f"{len(lengths)} recordings, padding {share:.0%} of their windows' timepoints"


def check_window_length(num_timepoints: int, patch_size: int | None) -> None:
    """Refuse a window length that a region_window model of `patch_size` cannot cut into patches."""
    if num_timepoints < 1:
        raise InvalidArgumentError(
            f"num_timepoints (the window length) must be positive, got {num_timepoints}.", argument="num_timepoints"
        )
    if patch_size is not None and (patch_size < 1 or num_timepoints % patch_size):
        lower = num_timepoints - num_timepoints % patch_size if patch_size > 0 else 0
        raise InvalidArgumentError(
            f"The window length {num_timepoints} is not a multiple of the model's patch size {patch_size}: use "
            f"num_timepoints={lower or patch_size}{f' or {lower + patch_size}' if lower else ''} (or the patch size "
            "of the model you will train).",
            argument="num_timepoints",
        )


def patch_sizes_statement(num_timepoints: int) -> str:
    """One sentence for the dataset card: which region_window patch sizes the window length fits."""
    fits = [p for p in range(1, num_timepoints + 1) if num_timepoints % p == 0]
    presets = "fits" if num_timepoints % PRESET_PATCH_SIZE == 0 else "does NOT fit"
    return (
        f"a region_window model needs a patch_size dividing {num_timepoints} ({', '.join(map(str, fits))}); this "
        f"{presets} the brainlm presets' patch_size {PRESET_PATCH_SIZE}"
    )


def _check_regions(rows, num_regions: int, atlas, coordinates, coordinates_source, region_names) -> None:
    """The region count of the recordings against the atlas, the coordinates and the region names."""
    first = rows[0]["file"]
    if atlas is not None and atlas.num_regions != num_regions:
        raise InvalidInputError(
            f"{first} has {num_regions} regions but the atlas {atlas.name} has {atlas.num_regions}: parcellate with "
            "that atlas (is the table transposed? tables are (timepoints, regions))."
        )
    if coordinates is not None and np.shape(coordinates) != (num_regions, 3):
        source = coordinates_source or "coordinates"
        raise InvalidArgumentError(
            f"{source} gives {np.shape(coordinates)[0]} region coordinates, but the recordings ({first}, ...) have "
            f"{num_regions} regions (is the table transposed? tables are (timepoints, regions)).",
            argument="coordinates",
        )
    if region_names is not None and len(region_names) != num_regions:
        raise InvalidArgumentError(
            f"{len(region_names)} region_names for recordings of {num_regions} regions ({first})."
        )


def _check_zscore(rows) -> None:
    """z-scoring divides each recording by its own per-region std: a constant region cannot be used."""
    constant = [(row["file"], np.flatnonzero(row["series_std"] == 0)) for row in rows]
    constant = [(file, regions) for file, regions in constant if len(regions)]
    if constant:
        file, regions = constant[0]
        more = f" (and {len(constant) - 1} more recordings)" if len(constant) > 1 else ""
        raise InvalidInputError(
            f"{file}: regions {regions.tolist()} are constant{more}; z-scoring cannot scale them: drop the "
            "recording, or use normalization='robust' (with iqr_epsilon= for empty parcels).",
            argument="normalization",
        )


def common_repetition_time(rows: list[dict], tolerance: float = RESAMPLE_TOLERANCE) -> float | None:
    """The TR of the recordings (the first known one), refusing TRs that differ by `tolerance` seconds or more."""
    known = [(row["repetition_time"], row["file"]) for row in rows if row["repetition_time"]]
    if not known:
        return None
    low, high = min(known), max(known)
    if high[0] - low[0] >= tolerance:
        raise InvalidInputError(
            f"The recordings have different TRs: {low[1]} {low[0]:g} s, {high[1]} {high[0]:g} s: choose the TR of the "
            "windows with target_repetition_time= (0.735 for the released BrainLM weights); recordings at another TR "
            "are resampled to it.",
            argument="target_repetition_time",
        )
    return known[0][0]


def _check_known_repetition_times(rows: list[dict], repetition_time: float | None) -> None:
    """Refuse recordings of unknown TR (parcel tables) when the windows have a TR (`repetition_time`): they would be
    windowed as if sampled at it. Names them and the fix."""
    unknown = [row["file"] for row in rows if row["repetition_time"] is None]
    if repetition_time is None or not unknown:
        return
    shown = ", ".join(unknown[:3]) + (f" and {len(unknown) - 3} more" if len(unknown) > 3 else "")
    raise InvalidInputError(
        f"The TR of {len(unknown)} of {len(rows)} recordings is unknown ({shown}; parcel tables hold none), but the "
        f"windows are cut at a TR of {repetition_time:g} s: give their TR with repetition_time= (every input), or "
        "prepare them apart from the NIfTI images and without target_repetition_time= if they are sampled as they "
        "should be windowed.",
        argument="repetition_time",
    )


def _long_enough(rows: list[dict], processor: BrainLMFeatureExtractor) -> tuple[list[dict], list[dict], list[dict]]:
    """The rows to keep, those left out as shorter than one window at the processor's TR, and those kept to be
    padded (`short_recordings="pad"`)."""
    kept, too_short, padded = [], [], []
    for row in rows:
        length = processor.resampled_length(len(row["series"]), row["repetition_time"])
        if length >= processor.num_timepoints:
            kept.append(row)
            continue
        entry = {"file": row["file"], "num_timepoints": len(row["series"])}
        if length != len(row["series"]):
            entry["num_timepoints_resampled"] = length
        if processor.short_recordings == "pad":
            padded.append(entry)
            kept.append(row)
        else:
            too_short.append(entry)
    if not kept:
        raise InvalidInputError(
            f"No recording has {processor.num_timepoints} timepoints or more at the TR of the windows "
            f"({len(too_short)} too short): use a shorter num_timepoints= or short_recordings='pad'.",
            argument="num_timepoints",
        )
    return kept, too_short, padded


def read_recording_rows(
    paths: list[Path], atlas, repetition_time, num_proc: int = 1, progress: Progress | None = None, names=None
) -> list[dict]:
    """
    One row per recording of `paths` (in their order): `id`, `subject`, `session` (`names`, default
    `recording_names(paths)`: ids against the common folder of `paths`),
    `series` `(T, V)` float32, `series_mean` and `series_std` `(V,)`, `repetition_time` and `file`. Read by
    `num_proc` processes, one recording at a time each (in memory bounded by `parcellate`'s chunk); the rows are the
    same for every `num_proc`. NaN/Inf values are refused with the file named.
    """
    names = names or recording_names(paths)
    jobs = [(path, names[path]) for path in paths]
    if num_proc == 1:
        read = functools.partial(_read_recording, atlas=atlas, repetition_time=repetition_time)
        return _collect(map(read, jobs), progress)
    context = multiprocessing.get_context("fork" if sys.platform == "linux" else None)
    initargs = (atlas, repetition_time)
    with ProcessPoolExecutor(num_proc, mp_context=context, initializer=_start_reader, initargs=initargs) as pool:
        return _collect(pool.map(_read_in_worker, jobs), progress)


def _collect(rows, progress: Progress | None) -> list[dict]:
    collected = []
    for row in rows:
        collected.append(row)
        if progress is not None:
            progress.update()
    return collected


_READER = {}  # the atlas and repetition time of `_read_recording` in a reading process, set once when it starts


def _start_reader(atlas, repetition_time) -> None:
    _READER.update(atlas=atlas, repetition_time=repetition_time)


def _read_in_worker(job: tuple[Path, tuple[str, str, str]]) -> dict:
    return _read_recording(job, **_READER)


def _read_recording(job: tuple[Path, tuple[str, str, str]], atlas, repetition_time) -> dict:
    """The row of one recording: `job` is its path and its (id, subject, session)."""
    path, (record_id, subject, session) = job
    series, tr = load_recording(path, atlas, repetition_time)
    bad = ~np.isfinite(series)
    if bad.any():
        raise InvalidInputError(f"{path}: NaN/Inf values in regions {np.flatnonzero(bad.any(0)).tolist()}.")
    series = np.ascontiguousarray(series)  # as stored: its statistics are those of this layout
    mean, std = zscore_statistics(series)
    row = {"id": record_id, "subject": subject, "session": session, "series": series}
    row.update(series_mean=mean, series_std=std, repetition_time=tr, file=str(path))
    return row


def complete_rows(recording_rows: list[dict], phenotypes, atlas_name) -> tuple[list[dict], list[str]]:
    """
    The rows of `read_recording_rows` with `atlas` and the phenotype columns, and the ids without a phenotype row
    (warned about). Recordings of different region counts are refused with the files named.
    """
    rows, without_phenotypes = [], []
    for recording in recording_rows:
        row = {key: value for key, value in recording.items() if key != "file"}
        row.update(atlas=atlas_name, **_phenotype_row(phenotypes, row["id"], row["subject"]))
        if phenotypes is not None and all(row[column] is None for column in phenotypes.columns):
            without_phenotypes.append(row["id"])
        rows.append({**row, "file": recording["file"]})
    counts = Counter(row["series"].shape[1] for row in rows)
    if len(counts) > 1:
        usual = counts.most_common(1)[0][0]
        other = next(row for row in rows if row["series"].shape[1] != usual)
        example = next(row for row in rows if row["series"].shape[1] == usual)
        raise InvalidInputError(
            f"{other['file']} has {other['series'].shape[1]} regions, but {example['file']} and "
            f"{counts[usual] - 1} other recordings have {usual}: use one atlas for all (is it transposed? tables are "
            "(timepoints, regions))."
        )
    _check_phenotypes_match(phenotypes, rows, without_phenotypes)
    return rows, without_phenotypes


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
            "files": [f"shard-{index:05d}-of-{num_shards:05d}.parquet" for index in range(num_shards)],
        }
    return counts


def _report_splits(counts: dict, fractions: dict, num_subjects: int, shard_multiple: int) -> None:
    """
    Warn about splits asked for (fraction > 0) that received no subject, with the numbers and the fix (without a
    validation split, pretraining and fine-tuning evaluate nothing), and about a train split of fewer shards than
    `shard_multiple` (a run of that many processes x accumulation steps x loader workers will be refused).
    """
    empty = [name for name, fraction in fractions.items() if fraction > 0 and name not in counts]
    if empty:
        given = ", ".join(f"{name} {counts[name]['subjects'] if name in counts else 0}" for name in fractions)
        warnings.warn(
            f"{num_subjects} subjects split as {given} subjects: the {' and '.join(empty)} split"
            f"{'s are' if len(empty) > 1 else ' is'} empty (each split takes whole subjects), so nothing will be "
            "evaluated there. Add subjects, or raise the split's fraction in splits= to at least "
            f"{1 / num_subjects:.2g} of the total.",
            stacklevel=4,
        )
    train = counts.get("train")
    if train and train["shards"] < shard_multiple:
        fewer = 2 ** int(math.log2(train["recordings"]))
        warnings.warn(
            f"The train split has {train['recordings']} recordings, too few for shard_multiple={shard_multiple}: it "
            f"is {train['shards']} shard, so a pretraining run reading it with more than {train['shards']} stream "
            f"part (processes x accumulation steps x loader workers) will be refused. Use at most {fewer} processes "
            f"x steps x workers and prepare with shard_multiple={fewer}, or add recordings.",
            stacklevel=4,
        )


def _as_list(coordinates) -> list | None:
    return None if coordinates is None else np.asarray(coordinates, dtype=np.float64).tolist()


def _shard_count(num_rows: int, nbytes: int, multiple: int, target_bytes: int) -> int:
    if num_rows < multiple:
        return 1
    wanted = max(1, math.ceil(nbytes / target_bytes))
    return min(num_rows // multiple, math.ceil(wanted / multiple)) * multiple


def _to_record(row: dict) -> dict:
    series = row["series"]
    record = {k: v for k, v in row.items() if k not in ("series", "file")}
    record.update(series=series.reshape(-1), num_timepoints=series.shape[0], num_regions=series.shape[1])
    return record


PHENOTYPE_KEYS = ("id", "subject", "participant_id")  # the column that names the recording or subject of a row


def _phenotype_table(phenotypes):
    """
    The phenotype table indexed by recording id (`id`) or by subject (`subject`, or BIDS' `participant_id`, the
    `sub-` prefix dropped from each part: `sub-01` and `01` name subject `01`); `attrs` keep its name and first key.
    """
    if phenotypes is None:
        return None
    import pandas as pd

    name = "The phenotype table" if isinstance(phenotypes, pd.DataFrame) else str(phenotypes)
    if isinstance(phenotypes, pd.DataFrame):
        table = phenotypes
    elif not Path(phenotypes).is_file():
        raise MissingFileError(f"no such file: {phenotypes} (the phenotype table, CSV or TSV)", argument="phenotypes")
    else:
        try:
            table = pd.read_csv(  # identifiers stay strings: "007" must not become 7
                phenotypes,
                sep="\t" if str(phenotypes).endswith((".tsv", ".txt")) else ",",
                dtype=dict.fromkeys(PHENOTYPE_KEYS, str),
            )
        except (ValueError, UnicodeDecodeError, pd.errors.ParserError) as error:
            message = " ".join(str(error).split())
            raise InvalidFileError(f"{phenotypes}: cannot read it as a CSV/TSV table ({message}).") from error
    key = next((k for k in PHENOTYPE_KEYS if k in table.columns), None)
    if key is None:
        raise InvalidFileError(
            f"{name} needs an 'id' (recording id), a 'subject' or a 'participant_id' column; its columns are "
            f"{list(table.columns)}."
        )
    clashes = [c for c in table.columns if c != key and str(c).strip().lower() in DATASET_FIELDS]
    if clashes:
        raise InvalidFileError(
            f"{name}: columns {clashes} are named like fields of the prepared dataset {list(DATASET_FIELDS)} and "
            "would overwrite them; rename them (e.g. 'phenotype_" + str(clashes[0]).strip() + "'), or give the "
            "repetition time with repetition_time=."
        )
    keys = table[key].astype(str)
    first = keys.iloc[0] if len(keys) else None
    if key != "id":
        keys, key = keys.map(_subject_label), "subject"
    table = table.drop(columns=keys.name).set_index(keys.rename(key))
    if not table.index.is_unique:
        repeated = table.index[table.index.duplicated()].unique().tolist()
        raise InvalidFileError(f"{name} has repeated {key} values: {repeated[:10]}.")
    table.attrs.update(name=name, first=first)
    return table


def _subject_label(value: str) -> str:
    """A subject as `recording_ids` names it: `sub-01` -> `01`, `site1/sub-01` -> `site1/01`."""
    return "/".join(part.removeprefix("sub-") for part in value.split("/"))


def _phenotype_row(table, record_id: str, subject: str) -> dict:
    if table is None:
        return {}
    key = record_id if table.index.name == "id" else subject
    if key not in table.index:
        return {column: None for column in table.columns}
    return {column: (None if _is_missing(v) else v) for column, v in table.loc[key].items()}


def _check_phenotypes_match(table, rows: list[dict], without_phenotypes: list[str]) -> None:
    """Refuse a phenotype table that labels none of the recordings, naming both sides' first ids; warn about
    recordings without a row."""
    if table is None or not without_phenotypes:
        return
    if len(without_phenotypes) == len(rows):
        key = table.index.name
        raise InvalidInputError(
            f"{table.attrs['name']} labels none of the {len(rows)} recordings: its first {key} is "
            f"{table.attrs['first']!r}, the first recording's is {rows[0][key]!r} ({rows[0]['file']}). Match its "
            "column to the recordings: 'id' holds recording ids, 'subject' or 'participant_id' subjects (with or "
            "without sub-).",
            argument="phenotypes",
        )
    warnings.warn(
        f"{len(without_phenotypes)} recordings have no row in the phenotype table (their phenotype columns are "
        f"empty): {without_phenotypes[:10]}{' ...' if len(without_phenotypes) > 10 else ''}",
        stacklevel=4,
    )


def _is_missing(value) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def _dataset_card(summary: dict, processor: BrainLMFeatureExtractor, num_timepoints: int, license=None) -> str:
    configs = "\n".join(f"      - split: {split}\n        path: {split}/*.parquet" for split in summary["splits"])
    rows = "\n".join(
        f"| {split} | {s['recordings']} | {s['subjects']} | {s['shards']} |" for split, s in summary["splits"].items()
    )
    skipped = "\n".join(f"- {s['file']} ({s['num_timepoints']} timepoints)" for s in summary["too_short"]) or "none"
    padded = "\n".join(f"- {s['file']} ({s['num_timepoints']} timepoints)" for s in summary["padded"]) or "none"
    rate = f"{processor.repetition_time} s" if processor.repetition_time else "not known"
    return f"""---
configs:
  - config_name: default
    data_files:
{configs}
license: {license or "unknown"}
tags:
  - fmri
  - brainlm
---

# BrainLM pretraining dataset

Licence of the recordings: {license or "not set (set `license` in this card's header before sharing)"}.

Prepared with `brainlm_hf.data.prepare_dataset`: one row per recording, the raw parcel series (`series`, float32,
flattened from `(num_timepoints, num_regions)`), its per-region mean and standard deviation (`series_mean`,
`series_std`, float32), ids, TR, atlas and phenotype columns. Splits are by subject.

| split | recordings | subjects | shards |
| --- | --- | --- | --- |
{rows}

Regions: {summary["num_regions"]}; atlas: {processor.atlas or "not given"}; window: {num_timepoints} timepoints
({patch_sizes_statement(num_timepoints)});
normalisation: {processor.normalization} (statistics: {_statistics_statement(processor)}, in
`preprocessor_config.json`).
TR of the windows: {rate}; the series are stored as sampled (column `repetition_time`) and resampled to it (linear)
when windows are cut, when they differ by {processor.resample_tolerance} s or more.

Recordings left out for being shorter than one window: {len(summary["too_short"])}
{skipped}

Recordings shorter than one window kept, to be padded with their per-region mean (`short_recordings="pad"`;
pretraining streams skip them): {len(summary["padded"])}
{padded}
"""
