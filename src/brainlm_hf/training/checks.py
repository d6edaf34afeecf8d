# Copyright 2026 The brainlm_hf authors. Licensed under the Apache License, Version 2.0.
"""Checks made before the first training step: a run that cannot work stops at once with one line naming the numbers
and the fix (a `ValueError`; the CLI prints `brainlm pretrain: error: ...` and exits with status 2), instead of
failing at the first step or waiting forever for a batch that cannot come.

* `check_processor_for_model`: the windows a processor makes fit the model (window length a multiple of the patch
  size, or inside the tile square; region coordinates present; regions and coordinates those of a checkpoint's own
  processor). Used by pretraining and fine-tuning.
* `check_pretraining_data`: what the pretraining streams will see: training windows at all, recordings too short for
  a window (counted; skipped), shards for every stream and loader worker, and a full batch per epoch for every one
  of them.
"""

import logging
import math

import numpy as np

from ..configuration_brainlm import BrainLMConfig
from ..data.prepared import read_shapes
from ..errors import InvalidArgumentError, InvalidInputError
from ..feature_extraction_brainlm import BrainLMFeatureExtractor
from ..modeling_brainlm import TileLayout, layout_for

logger = logging.getLogger(__name__)


def check_processor_for_model(
    processor: BrainLMFeatureExtractor,
    config: BrainLMConfig,
    model_processor: BrainLMFeatureExtractor | None = None,
    model_name: str = "the model",
) -> None:
    """
    Refuse a processor (the dataset's) whose windows the model cannot read: a window length that is not a multiple of
    the patch size (`region_window`) or that does not fit the tile square (`tile_2d`), missing or malformed region
    coordinates (`region_window`), or regions / coordinates other than those of `model_processor` (the processor a
    checkpoint was trained with, when it has one), or of another atlas by name.
    """
    length, regions, layout = processor.num_timepoints, processor.num_regions, layout_for(config)
    if isinstance(layout, TileLayout):
        if length > config.image_size or (regions or 0) > config.image_size:
            raise InvalidInputError(
                f"The dataset's windows ({regions or '?'} regions x {length} timepoints) do not fit {model_name}'s "
                f"{config.image_size} x {config.image_size} input square: prepare the dataset with num_timepoints="
                f"{config.image_size} or less and at most {config.image_size} regions.",
                argument="num_timepoints",
            )
    else:
        if length % config.patch_size:
            lower, upper = length - length % config.patch_size, length - length % config.patch_size + config.patch_size
            options = f"{lower} or {upper}" if lower else f"{upper}"
            raise InvalidInputError(
                f"The dataset's windows have {length} timepoints (num_timepoints of its processor), not a multiple of "
                f"{model_name}'s patch_size {config.patch_size}: prepare the dataset with num_timepoints={options}, "
                f"or use a model whose patch_size divides {length}.",
                argument="num_timepoints",
            )
        coordinates = processor.model_coordinates()
        if coordinates is None:
            raise InvalidInputError(
                f"{model_name} (region_window layout) needs region coordinates, but the dataset's processor has none: "
                "prepare the dataset with atlas= (or coordinates= for a parcel table)."
            )
        if coordinates.ndim != 2 or coordinates.shape[1] != 3 or not np.isfinite(coordinates).all():
            raise InvalidInputError(
                f"The dataset's processor has region coordinates of shape {coordinates.shape} with non-finite values "
                f"{not np.isfinite(coordinates).all()}; {model_name} needs finite (regions, 3) MNI coordinates."
            )
    if model_processor is None:
        return
    if model_processor.atlas and processor.atlas and model_processor.atlas != processor.atlas:
        raise InvalidInputError(
            f"{model_name} was trained on recordings of the atlas {model_processor.atlas!r} (its "
            f"preprocessor_config.json) but the dataset's are parcellated with {processor.atlas!r}: the regions "
            "differ even where their count agrees; use a dataset of the same atlas, or start from a preset."
        )
    if model_processor.num_regions is not None and regions is not None and model_processor.num_regions != regions:
        raise InvalidInputError(
            f"{model_name} was trained on {model_processor.num_regions} regions (its preprocessor_config.json) but "
            f"the dataset has {regions}: use a dataset parcellated with the same atlas, or start from a preset."
        )
    if layout.uses_coordinates:
        ours, theirs = processor.model_coordinates(), model_processor.model_coordinates()
        if theirs is not None and ours is not None and ours.shape == theirs.shape:
            difference = np.abs(ours - theirs).max(1)
            if difference.max() > 1e-3:
                raise InvalidInputError(
                    f"The dataset's region coordinates (model order) differ from those {model_name} was trained with "
                    f"by up to {difference.max():.3g} mm (model row {int(difference.argmax())}): use a dataset with "
                    "the same atlas and region order, or start from a preset."
                )


def saved_processor(model: str) -> BrainLMFeatureExtractor | None:
    """The processor saved in a local checkpoint folder (`model`), if any (presets, configs and Hub ids: None)."""
    from pathlib import Path

    if not (Path(model) / "preprocessor_config.json").is_file():
        return None
    return BrainLMFeatureExtractor.from_pretrained(model)


def check_counts(**least: tuple[int, int]) -> None:
    """Refuse counts below their least value, e.g. `check_counts(crops_per_recording=(0, 1))`, naming the argument."""
    for name, (value, minimum) in least.items():
        if value < minimum:
            why = ": every recording gives that many training windows per epoch" if "crops" in name else ""
            raise InvalidArgumentError(f"{name} must be at least {minimum}, got {value}{why}.", argument=name)


def check_pretraining_data(
    shards: list[str],
    processor: BrainLMFeatureExtractor,
    crops_per_recording: int,
    batch_size: int,
    num_processes: int,
    accumulation: int,
    parts: int,
    validation_shards: list[str] = (),
) -> dict:
    """
    Refuse pretraining data that cannot give every stream (one per process and accumulation step, each split over
    `parts` loader workers) a full batch in every epoch, and count the training recordings too short for one window
    (skipped, logged; refused when none is left). Each stream part reads whole shards, drawn afresh every epoch, so
    the smallest part's epoch is the `shards // (streams x parts)` shards with the fewest windows. Returns the
    counts (`recordings`, `too_short`, `windows`, `least_windows`).
    """
    length, crops = processor.num_timepoints, crops_per_recording
    if not shards:
        raise InvalidInputError("No training windows: the dataset has no train/ split with Parquet shards.")
    shapes = [read_shapes(shard, processor) for shard in shards]  # lengths at the processor's TR
    found = sorted({regions for shard in shapes for _, regions in shard})
    if processor.num_regions is not None and found and found != [processor.num_regions]:
        raise InvalidInputError(
            f"The training shards hold recordings of {found} regions but the dataset's processor has "
            f"{processor.num_regions} (its preprocessor_config.json): prepare the dataset again with one atlas."
        )
    recordings = sum(len(shard) for shard in shapes)
    usable = [sum(timepoints >= length for timepoints, _ in shard) for shard in shapes]
    too_short = recordings - sum(usable)
    if not sum(usable):
        longest = max((t for shard in shapes for t, _ in shard), default=0)
        raise InvalidInputError(
            f"No training windows: all {recordings} training recordings are shorter than one window of {length} "
            f"timepoints (the longest has {longest}): prepare the dataset with a shorter num_timepoints= (a "
            "multiple of the model's patch size) or add longer recordings.",
            argument="num_timepoints",
        )
    if too_short:
        logger.warning(
            f"{too_short} of {recordings} training recordings are shorter than one window of {length} timepoints and "
            "are skipped."
        )
    streams = num_processes * accumulation
    per_part = len(shards) // (streams * parts)
    if not per_part:
        raise InvalidArgumentError(
            f"{_n(len(shards), 'training shard')} cannot feed {streams * parts} stream parts "
            f"({_n(num_processes, 'process')} x {_n(accumulation, 'gradient accumulation step')} x "
            f"{_n(parts, 'loader worker')}), each of which reads whole shards: "
            f"prepare the dataset with shard_multiple={streams * parts}, or use fewer processes, accumulation steps "
            "or workers.",
            argument="shard_multiple",
        )
    fewest = sum(sorted(usable)[:per_part])
    least = fewest * crops
    if least < batch_size:
        raise InvalidArgumentError(
            _too_few_windows(least, fewest, crops, batch_size, per_part, len(shards), streams, parts)
        )
    if validation_shards:
        lengths = [t for shard in validation_shards for t, _ in read_shapes(shard, processor)]
        if not any(t >= length for t in lengths):
            raise InvalidInputError(
                f"The validation split has no window: its {len(lengths)} recordings are all shorter than {length} "
                "timepoints; prepare the dataset again or pick another validation_split=.",
                argument="validation_split",
            )
    return {"recordings": recordings, "too_short": too_short, "windows": sum(usable) * crops, "least_windows": least}


def _too_few_windows(least, fewest, crops, batch_size, per_part, num_shards, streams, parts) -> str:
    if streams * parts == 1:
        where = f"One epoch holds {_n(least, 'training window')} ({_n(fewest, 'recording')} x {_n(crops, 'crop')})"
    else:
        where = (
            f"Each of the {streams * parts} stream parts (processes x gradient accumulation steps x loader workers) "
            f"reads {per_part} of the {num_shards} shards per epoch, as few as {_n(least, 'window')} "
            f"({_n(fewest, 'recording')} x {_n(crops, 'crop')})"
        )
    fixes = [f"lower per_device_train_batch_size={least}"] if least else []
    if fewest:
        fixes.append(f"raise crops_per_recording={math.ceil(batch_size / fewest)}")
    if streams * parts > 1:
        fixes.append("use fewer processes, accumulation steps or workers")
    return f"{where}, fewer than one batch of {batch_size}: {', '.join(fixes)} or add recordings."


def _n(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 'es' if noun.endswith('ss') else 's'}"
