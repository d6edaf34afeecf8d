# Copyright 2026 The brainlm_hf authors. Licensed under the Apache License, Version 2.0.
"""
Per-recording embeddings. Every recording is cut into windows by the processor (`BrainLMFeatureExtractor.windows`,
normalised, in model region order) with a window policy:

* `"covering"` (default): non-overlapping windows from the start plus, when the length is not a multiple of the
  window, one window aligned to the end, so that every timepoint is seen;
* `"non_overlapping"`: non-overlapping windows from the start, the remainder dropped (Brainmarks' policy).

Recordings at another TR than the processor's are resampled to it (`repetition_times`); a recording shorter than one
window is an error, or one padded window under the processor's `short_recordings="pad"` (padded timepoints are left
out of `"mean"` pooling; `"tokens"` keeps every token). Each window is embedded by the encoder without masking, in
canonical token order (deterministic), and represented by:

* `layer`: which hidden state. `None` (default): `last_hidden_state`, after the final LayerNorm. An integer `i`:
  `hidden_states[i]` of the encoder, where 0 is the embedded input and `i >= 1` the output of layer `i` before the
  final LayerNorm; `-1` is the last layer before the final LayerNorm (what Brainmarks reads from the 111M/650M).
* `pooling`: `"cls"` (the CLS row) or `"mean"` (the mean over the tokens that hold data: tiles of the 2-D layout made
  only of padding never count), averaged over the recording's windows: one `(H,)` vector per recording; or
  `"tokens"`: every token of every window, kept per window: `(W_r, 1 + K, H)` per recording, row 0 the CLS token,
  then the K tokens that hold data in canonical order (region-window layout: token `v * N + n` is window `n` of
  model row `v`; tile layout: tile `r * G + c` of the padded square, row-major), or all L tokens, padding tiles
  included, with `include_padding_tokens=True` (the region-window layout has no padding tokens). W_r varies with the
  recording's length, so the result is a list (ragged per recording).
"""

import json
import os
import shutil
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..arguments import check_choice, check_positive, positional
from ..configuration_brainlm import POOLINGS as MODEL_POOLINGS
from ..errors import InvalidArgumentError, InvalidInputError, MissingFileError
from ..feature_extraction_brainlm import CONFIG_NAME, SHORT_RECORDINGS, BrainLMFeatureExtractor
from ..inference import average_by_recording, map_windows
from ..modeling_brainlm import BrainLMPreTrainedModel

# the model's poolings (one vector per window), and "tokens": every token's
POOLINGS = (*MODEL_POOLINGS, "tokens")
WINDOW_POLICIES = ("covering", "non_overlapping")
AUTOCAST_DTYPES = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}  # name -> torch.autocast dtype
EMBEDDING_SUFFIXES = (".parquet", ".npz")  # the files `save_embeddings` writes


@dataclass
class EmbedArguments:
    """What `brainlm embed` embeds with which model, how, and where it writes the embeddings."""

    model: str = positional(
        "a brainlm_hf checkpoint folder or Hub id (with its processor), an original BrainLM checkpoint (converted on "
        "load and cached), or a released model's short name (brainlm-13m, brainlm-111m, brainlm-650m)",
        "MODEL",
    )
    inputs: list[str] = positional(
        "parcel tables (T, V) as .npy/.csv/.tsv/.dat, 4-D NIfTI images with --atlas, or prepared Parquet shards; a "
        "folder or a quoted glob",
        "INPUTS",
    )
    output: str = field(
        metadata={
            "help": "OUT, .parquet or .npz: with --pooling cls or mean one (H,) embedding per recording (Parquet: id, "
            "embedding; npz: ids, embeddings); with --pooling tokens every token of every window (Parquet: one row "
            "per window, id, window, tokens (1 + K) x H with the CLS token first; npz: ids, tokens (windows, 1 + K, "
            "H), recording_index)"
        }
    )
    processor: str | None = field(
        default=None, metadata={"help": "processor folder when it is not saved with the model"}
    )
    fit_processor: bool = field(
        default=False,
        metadata={
            "help": "fit the processor's robust scaling (per-region median and IQR) on INPUTS instead of using the "
            "statistics it holds (a converted release holds BrainLM's UK Biobank pretraining statistics)"
        },
    )
    atlas: str | None = field(default=None, metadata={"help": "'A424' or a label NIfTI, for NIfTI inputs"})
    atlas_dir: str | None = field(
        default=None, metadata={"help": "folder with the A424 files (default: download and verify them)"}
    )
    subfolder: str | None = field(
        default=None, metadata={"help": "folder inside a Hub MODEL, e.g. vitmae_111M of vandijklab/brainlm"}
    )
    revision: str | None = field(default=None, metadata={"help": "Hub revision of MODEL"})
    layer: int | None = field(
        default=None,
        metadata={
            "help": "hidden state to read: 0 = input embeddings, i = layer i before the final LayerNorm, -1 = the "
            "last layer before it (Brainmarks' choice for 111M/650M); default: after the final LayerNorm"
        },
    )
    pooling: str = field(
        default="cls", metadata={"choices": POOLINGS, "help": "one embedding per recording (cls, mean) or tokens"}
    )
    include_padding_tokens: bool = field(
        default=False, metadata={"help": "with --pooling tokens: keep tiles made only of padding"}
    )
    window_policy: str = field(
        default="covering",
        metadata={
            "choices": WINDOW_POLICIES,
            "help": "covering: every timepoint, one last window aligned to the end; non_overlapping: remainder "
            "dropped",
        },
    )
    batch_size: int = field(default=16, metadata={"help": "windows per forward pass"})
    repetition_time: float | None = field(
        default=None,
        metadata={
            "aliases": ["--tr"],
            "help": "repetition time in seconds of the image and table INPUTS (default: the NIfTI header; tables: "
            "unknown, used as they are); recordings at another TR than the model's are resampled to it (linear)",
        },
    )
    short_recordings: str | None = field(
        default=None,
        metadata={
            "choices": SHORT_RECORDINGS,
            "help": "a recording shorter than one window (after resampling): an error, or one window padded with its "
            "per-region mean, the padding left out of mean pooling (default: the processor's setting, refuse)",
        },
    )
    device: str | None = field(default=None, metadata={"help": "default: cuda when available, else cpu"})
    dtype: str = field(default="fp32", metadata={"choices": tuple(AUTOCAST_DTYPES), "help": "autocast dtype"})
    quiet: bool = field(default=False, metadata={"help": "no progress bar and no summary line"})
    chunk_size: int = field(
        default=64,
        metadata={
            "help": "recordings per chunk, the unit of work shared among processes and of resuming: finished chunks "
            "wait in OUTPUT.chunks/ until the output is written, and a run started again skips them"
        },
    )
    process: str | None = field(
        default=None,
        metadata={
            "help": "I/N: this process reads and embeds chunks I, I+N, ... (1-based) of N processes started apart "
            "(e.g. a batch array); the one that finds every chunk done writes OUTPUT. Default: the processes of "
            "`accelerate launch` (1/1 outside it)"
        },
    )
    overwrite: bool = field(default=False, metadata={"help": "replace --output when it exists"})

    def __post_init__(self):
        check_positive(self, "batch_size", "chunk_size", integer=True)
        if self.process is not None:
            from ..data.prepare_parts import parse_part

            parse_part(self.process, argument="process")
        check_positive(self, "repetition_time", optional=True)
        check_choice(self, "pooling", POOLINGS)
        check_choice(self, "window_policy", WINDOW_POLICIES)
        check_choice(self, "dtype", tuple(AUTOCAST_DTYPES))
        if self.short_recordings is not None:
            check_choice(self, "short_recordings", SHORT_RECORDINGS)


def embed_windows(
    model: BrainLMPreTrainedModel,
    signal_values: np.ndarray,
    coordinates: np.ndarray | None,
    pooling: str = "cls",
    batch_size: int = 16,
    device: str | torch.device | None = None,
    dtype: torch.dtype | None = None,
    progress: bool = False,
    *,
    layer: int | None = None,
    include_padding_tokens: bool = False,
    timepoint_mask: np.ndarray | None = None,
) -> np.ndarray:
    """
    Windows `(W, V, T)` (normalised, model order) -> embeddings, float32, without masking: `(W, H)` for `"cls"` and
    `"mean"`, `(W, 1 + K, H)` for `"tokens"` (CLS first, then the tokens that hold data, or all L tokens with
    `include_padding_tokens`); `layer` chooses the hidden state (see the module docstring). `timepoint_mask`
    `(W, T)` (1 = real, 0 = padding) leaves padded timepoints out of `"mean"` pooling.

    `model` is any BrainLM model (its encoder is used). `device` defaults to the model's; `dtype` (e.g.
    `torch.bfloat16`) runs the encoder under autocast on that device.
    """
    if pooling not in POOLINGS:
        raise InvalidArgumentError(f"pooling must be one of {POOLINGS}, got {pooling!r}.", argument="pooling")
    encoder = model.base_model
    depth = encoder.config.num_hidden_layers
    if layer is not None and not -(depth + 1) <= layer <= depth:
        raise InvalidArgumentError(
            f"layer {layer} does not exist: this encoder has hidden states 0 (its input) to {depth} (layer "
            f"{depth}, before the final LayerNorm), or -{depth + 1} to -1 from the end; None reads the final "
            "LayerNorm's output.",
            argument="layer",
        )
    num_regions, num_timepoints = signal_values.shape[1:]
    kept = None
    if pooling == "tokens":
        data = encoder.layout.data_tokens(num_regions, num_timepoints, "cpu")  # (L,)
        kept = torch.cat([torch.ones(1, dtype=torch.bool), torch.ones_like(data) if include_padding_tokens else data])

    def embed(batch, xyz, rows):
        mask = None if timepoint_mask is None else torch.as_tensor(timepoint_mask[rows])
        outputs = encoder(batch, xyz, output_hidden_states=layer is not None, timepoint_mask=mask)
        if pooling != "tokens":
            return encoder.pool(outputs, num_regions, num_timepoints, pooling, layer)  # (b, H)
        hidden = outputs.last_hidden_state if layer is None else outputs.hidden_states[layer]  # (b, 1 + L, H)
        return hidden[:, kept.to(hidden.device)]  # (b, 1 + K, H)

    return map_windows(encoder, signal_values, coordinates, embed, batch_size, device, dtype, progress)


def embed_recordings(
    model: BrainLMPreTrainedModel,
    processor: BrainLMFeatureExtractor,
    recordings: Sequence[np.ndarray] | Mapping[str, np.ndarray],
    pooling: str = "cls",
    batch_size: int = 16,
    device: str | torch.device | None = None,
    dtype: torch.dtype | None = None,
    progress: bool = False,
    *,
    layer: int | None = None,
    include_padding_tokens: bool = False,
    window_policy: str = "covering",
    repetition_times=None,
) -> np.ndarray | list[np.ndarray]:
    """
    Embeddings of whole recordings (see the module docstring for `layer`, `pooling` and `window_policy`):

    * `"cls"`, `"mean"`: `(R, H)` float32, the mean over each recording's windows of the pooled encoder output;
    * `"tokens"`: a list of R float32 arrays `(W_r, 1 + K, H)`, one per recording, windows in time order.

    `recordings` are raw `(T_i, V)` arrays in atlas order (a list, or a dict whose values are taken in order and
    whose keys name them in errors); `repetition_times` their TRs in seconds (one number, or one per recording;
    see `BrainLMFeatureExtractor.windows`). `processor` resamples and normalises them and sets the region order,
    coordinates and window length. Deterministic, and independent of `batch_size` up to float rounding.
    """
    if window_policy not in WINDOW_POLICIES:
        raise InvalidArgumentError(
            f"window_policy must be one of {WINDOW_POLICIES}, got {window_policy!r}.", argument="window_policy"
        )
    named = dict(recordings) if isinstance(recordings, Mapping) else None  # keys name recordings in errors
    recordings = list(named.values()) if named is not None else list(recordings)
    if not recordings:
        raise InvalidInputError("embed_recordings needs at least one recording.", argument="recordings")
    windows, owners, mask = processor.windows(
        named if named is not None else recordings,
        cover_end=window_policy == "covering",
        repetition_times=repetition_times,
        return_timepoint_mask=True,
    )  # (W, V, T), (W,), (W, T)
    embedded = embed_windows(
        model, windows, processor.model_coordinates(), pooling, batch_size, device, dtype, progress,
        layer=layer, include_padding_tokens=include_padding_tokens, timepoint_mask=mask if mask.min() < 1 else None,
    )  # fmt: skip
    if pooling == "tokens":
        return [embedded[owners == index] for index in range(len(recordings))]
    return average_by_recording(embedded, owners, len(recordings))


def count_windows(
    processor: BrainLMFeatureExtractor, recordings: Sequence[np.ndarray], repetition_times, window_policy: str
) -> int:
    """How many windows `embed_recordings` cuts from `recordings` (raw `(T_i, V)`, with their TRs, one per
    recording): a recording shorter than one window gives one (padded, with `short_recordings="pad"`)."""
    total = 0
    for series, tr in zip(recordings, repetition_times, strict=True):
        length = processor.resampled_length(len(series), tr)
        starts = (
            processor.window_starts(length, cover_end=window_policy == "covering")
            if length >= processor.num_timepoints
            else [0]
        )
        total += len(starts)
    return total


def embed_in_chunks(
    embed_chunk: Callable[[range], np.ndarray | list[np.ndarray]],
    num_recordings: int,
    chunk_size: int,
    folder,
    process_index: int = 0,
    num_processes: int = 1,
    progress=None,
    settings: dict | None = None,
) -> bool:
    """
    Embed the chunks of `chunk_size` recordings (in input order) that fall to process `process_index` (0-based) of
    `num_processes` (chunk c to process c % num_processes) into `folder/chunk-XXXXX.npz`, skipping the chunks already
    there: a run started again after a crash recomputes only unfinished chunks. `embed_chunk(indices)` returns
    `embed_recordings`' result for the recordings `indices`; each chunk file appears whole or not at all. Every
    process embeds the same chunks in the same batches as one process would, so the gathered embeddings equal one
    process's. `progress` (a `Progress`) counts the recordings embedded. `settings` (JSON-able: what the embeddings
    depend on) are kept in `folder/settings.json`: chunks left by a run with other settings are refused, never mixed
    in. Returns whether every chunk is done.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    _check_chunk_settings(folder, {"chunk_size": chunk_size, "num_recordings": num_recordings, **(settings or {})})
    for chunk, indices in unfinished_chunks(num_recordings, chunk_size, folder, process_index, num_processes):
        path = folder / _chunk_name(chunk)
        embedded = embed_chunk(indices)
        arrays = {"embeddings": embedded} if isinstance(embedded, np.ndarray) else _token_arrays(embedded)
        partial = folder / f".{path.stem}.{os.getpid()}.tmp.npz"
        np.savez(partial, **arrays)
        os.replace(partial, path)
        if progress is not None:
            progress.update(len(indices))
    return not unfinished_chunks(num_recordings, chunk_size, folder)


def unfinished_chunks(
    num_recordings: int, chunk_size: int, folder, process_index: int = 0, num_processes: int = 1
) -> list[tuple[int, range]]:
    """
    `(chunk, indices)` of the chunks of `chunk_size` recordings (in input order) that fall to process
    `process_index` (0-based) of `num_processes` (chunk c to process c % num_processes) and are not yet in `folder`
    (see `embed_in_chunks`). They depend on the number of recordings alone, so a process can read just the
    recordings of its chunks (`brainlm_hf.data.recordings.list_inputs`, then `load_inputs`).
    """
    starts = range(0, num_recordings, chunk_size)
    return [
        (chunk, range(start, min(start + chunk_size, num_recordings)))
        for chunk, start in enumerate(starts)
        if chunk % num_processes == process_index and not (Path(folder) / _chunk_name(chunk)).exists()
    ]


def gather_chunks(folder, num_recordings: int, chunk_size: int) -> np.ndarray | list[np.ndarray]:
    """The embeddings of all the chunks `embed_in_chunks` wrote to `folder`, in recording order."""
    parts = [np.load(Path(folder) / _chunk_name(c)) for c in range(-(-num_recordings // chunk_size))]
    if "embeddings" in parts[0]:
        return np.concatenate([part["embeddings"] for part in parts])
    tokens = [np.split(part["tokens"], np.cumsum(part["windows"])[:-1]) for part in parts]
    return [recording for chunk in tokens for recording in chunk]


def _check_chunk_settings(folder: Path, settings: dict) -> None:
    """Write `settings` to `folder/settings.json`, or refuse a folder whose chunks were made with other settings."""
    path, text = folder / "settings.json", json.dumps(settings, indent=2, sort_keys=True, default=str)
    if not path.exists():
        partial = folder / f".settings.{os.getpid()}.tmp"
        partial.write_text(text)
        os.replace(partial, path)
    stored = json.loads(path.read_text())
    differing = sorted(key for key in {*stored, *json.loads(text)} if stored.get(key) != json.loads(text).get(key))
    if differing:
        raise InvalidArgumentError(
            f"{folder} holds the chunks of an unfinished run with other settings ({', '.join(differing)} differ): "
            "run again with that run's settings to finish it, or delete the folder to start over.",
            argument="output",
        )


def _chunk_name(chunk: int) -> str:
    return f"chunk-{chunk:05d}.npz"


def _token_arrays(embedded: list[np.ndarray]) -> dict:
    """A chunk's token embeddings `(W_r, 1 + K, H)` as one array and the window count of each recording."""
    return {"tokens": np.concatenate(embedded), "windows": np.array([len(tokens) for tokens in embedded])}


def check_embeddings_file(path, overwrite: bool = False) -> Path:
    """`path` as a `Path`, refusing an existing file unless `overwrite` (`InvalidArgumentError`)."""
    path = Path(path)
    if path.exists() and not overwrite:
        raise InvalidArgumentError(
            f"{path} exists: give a new file name, or pass overwrite=True to replace it.", argument="overwrite"
        )
    return path


def save_embeddings(
    path, ids: Sequence[str], embeddings: np.ndarray | Sequence[np.ndarray], overwrite: bool = False
) -> Path:
    """
    Write embeddings with their recording ids, `.parquet` or `.npz` (an existing `path` is refused unless
    `overwrite`, see `check_embeddings_file`):

    * `(R, H)` (pooled): Parquet columns `id`, `embedding`; npz arrays `ids`, `embeddings`.
    * a list of R token arrays `(W_r, 1 + K, H)` (`pooling="tokens"`): one Parquet row per window, columns `id`,
      `window` (its index in the recording) and `tokens` (`1 + K` lists of H floats); npz arrays `ids` `(R,)`,
      `tokens` `(sum W_r, 1 + K, H)` (the recordings' windows one after the other) and `recording_index`
      `(sum W_r,)` (the row of `ids` of each window).
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = Path(path)
    if len(ids) != len(embeddings):
        raise InvalidArgumentError(f"{len(ids)} ids for {len(embeddings)} embeddings.", argument="ids")
    if path.suffix not in (".parquet", ".npz"):
        raise InvalidArgumentError(
            f"Unknown embedding file type {path.suffix!r}: use .parquet or .npz.", argument="path"
        )
    check_embeddings_file(path, overwrite)
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(embeddings, np.ndarray):
        embeddings = np.asarray(embeddings, dtype=np.float32)
        if path.suffix == ".npz":
            np.savez(path, ids=np.asarray(ids), embeddings=embeddings)
        else:
            values = pa.array(list(embeddings), type=pa.list_(pa.float32()))
            pq.write_table(pa.table({"id": list(ids), "embedding": values}), path)
        return path
    tokens = np.concatenate([np.asarray(t, dtype=np.float32) for t in embeddings])  # (sum W_r, 1 + K, H)
    recording_index = np.concatenate([np.full(len(t), index) for index, t in enumerate(embeddings)])
    if path.suffix == ".npz":
        np.savez(path, ids=np.asarray(ids), tokens=tokens, recording_index=recording_index)
        return path
    num_tokens, hidden = tokens.shape[1:]
    rows = pa.FixedSizeListArray.from_arrays(pa.array(tokens.reshape(-1)), hidden)
    table = {
        "id": [ids[index] for index in recording_index],
        "window": np.concatenate([np.arange(len(t)) for t in embeddings]),
        "tokens": pa.FixedSizeListArray.from_arrays(rows, num_tokens),
    }
    pq.write_table(pa.table(table), path)
    return path


def embed_cohort(args: EmbedArguments) -> Path | None:
    """
    What `brainlm embed` runs: the embeddings of the recordings `args.inputs` by the model `args.model`, written to
    `args.output` (`.parquet` or `.npz`, see `save_embeddings`); returns its path, or None in a process that leaves
    the writing to another (see `embed_in_chunks`). First the processor (saved with the model, or `args.processor`;
    checked against the inputs' atlas, fitted on them with `fit_processor=True`). An existing `output` is refused
    unless `overwrite=True`, a processor without statistics for robust scaling unless `fit_processor=True`, and
    shards of another atlas than the processor's (errors name the argument as `name=`).
    """
    from ..data.atlas import atlas_by_name
    from ..data.prepared import shard_atlas
    from ..data.recordings import RAW_SUFFIXES, SHARD_SUFFIXES, find_recordings, list_inputs, load_inputs
    from ..modeling_brainlm import BrainLMModel
    from ..progress import Progress

    check_embeddings_file(args.output, args.overwrite)
    fix = (
        "pass processor=FOLDER with a folder that holds one."
        if args.processor
        else "pass the folder that holds it as processor=FOLDER (e.g. the prepared dataset the model was trained on)."
    )
    location = {key: value for key, value in (("subfolder", args.subfolder), ("revision", args.revision)) if value}
    if args.processor:
        processor = load_processor(args.processor, "processor", fix)
    else:
        processor = load_processor(args.model, "model", fix, **location)
    for shard in find_recordings(args.inputs, RAW_SUFFIXES + SHARD_SUFFIXES):
        atlas = shard_atlas(str(shard)) if shard.name.endswith(SHARD_SUFFIXES) else None
        if processor.atlas and atlas and atlas != processor.atlas:
            raise InvalidInputError(
                f"the processor of {args.processor or args.model} is for the atlas {processor.atlas!r}, but {shard} "
                f"holds recordings parcellated with {atlas!r}: embed them with a model and processor of that atlas."
            )
    atlas = atlas_by_name(args.atlas, args.atlas_dir)
    listed = list_inputs(args.inputs)  # ids and files, no data
    index, count, state = _embed_process(args)
    folder = Path(args.output).with_name(Path(args.output).name + ".chunks")
    mine = [i for _, chunk in unfinished_chunks(len(listed), args.chunk_size, folder, index, count) for i in chunk]
    read = range(len(listed)) if args.fit_processor else mine  # this process's share, unless fitting on all
    share = load_inputs([listed[i] for i in read], atlas, args.repetition_time)
    recordings = dict(zip(read, _cohort(processor, args, share), strict=True))  # index in listed -> recording
    if args.fit_processor:
        processor.fit([r.series for r in share], repetition_times=[r.repetition_time for r in share])
    elif processor.normalization == "robust" and processor.median is None:
        raise InvalidArgumentError(
            "The processor uses BrainLM's robust scaling but holds no statistics: pass fit_processor=True to fit "
            "them on the inputs, or processor=FOLDER with a fitted processor (a converted release holds BrainLM's "
            "own).",
            argument="fit_processor",
        )
    model = BrainLMModel.from_pretrained(args.model, **location)
    device = args.device or (state.device if state else "cuda" if torch.cuda.is_available() else "cpu")

    def embed_chunk(indices: range):
        chunk = {recordings[i].source: recordings[i].series for i in indices}  # errors name the file
        return embed_recordings(
            model, processor, chunk, args.pooling, args.batch_size, device, AUTOCAST_DTYPES[args.dtype],
            layer=args.layer, include_padding_tokens=args.include_padding_tokens, window_policy=args.window_policy,
            repetition_times=[recordings[i].repetition_time for i in indices],
        )  # fmt: skip

    with Progress("embed", len(mine), quiet=args.quiet) as progress:
        settings = {k: v for k, v in asdict(args).items() if k not in ("quiet", "process", "output")}
        settings["ids"] = [r.id for r in listed]
        done = embed_in_chunks(embed_chunk, len(listed), args.chunk_size, folder, index, count, progress, settings)
        series, trs = [recordings[i].series for i in mine], [recordings[i].repetition_time for i in mine]
        progress.close(windows=count_windows(processor, series, trs, args.window_policy))
    if state is not None:  # accelerate launch: the main process writes, once all are done
        state.wait_for_everyone()
        done = state.is_main_process
    if not done:
        print(
            f"process {index + 1}/{count}: its chunks are in {folder}; the last process to finish writes {args.output}"
        )
        return None
    embeddings = gather_chunks(folder, len(listed), args.chunk_size)
    partial = Path(args.output).with_name(f".{Path(args.output).stem}.{os.getpid()}.tmp{Path(args.output).suffix}")
    os.replace(save_embeddings(partial, [r.id for r in listed], embeddings), args.output)
    shutil.rmtree(folder, ignore_errors=True)
    what = f"{embeddings[0].shape[-1]}-d {args.pooling}"
    print(f"{len(listed)} recordings -> {what} embeddings ({args.window_policy} windows) in {args.output}")
    return Path(args.output)


def load_processor(name: str, argument: str, fix: str, **location) -> BrainLMFeatureExtractor:
    """
    The processor saved in `name` (a folder, Hub id or short name; `location`: `subfolder`, `revision`). A local
    folder without one (nor an original checkpoint, converted with one) is a `MissingFileError` that names the
    missing file and ends with `fix`; a path that does not exist names `argument`.
    """
    from ..folders import check_model_folder

    path = Path(os.path.expanduser(name))
    if path.is_dir():
        resolve = BrainLMFeatureExtractor._resolve_pretrained  # an original checkpoint: its converted folder
        folder, options = resolve(name, dict(location)) if resolve else (name, location)
        if Path(folder).is_dir() and not Path(folder, options.get("subfolder") or "", CONFIG_NAME).is_file():
            raise MissingFileError(
                f"{name} has no {CONFIG_NAME} (the processor: normalisation statistics, region coordinates and "
                f"order): {fix}"
            )
    if not path.exists():
        check_model_folder(name, argument)
    return BrainLMFeatureExtractor.from_pretrained(name, **location)


def _cohort(processor, args, recordings: list) -> list:
    """Apply `short_recordings` to the processor; warn about recordings of unknown TR when the model has one."""
    from ..data.prepare import padding_report

    if args.short_recordings:
        processor.short_recordings = args.short_recordings
    unknown = [r.source for r in recordings if r.repetition_time is None]
    if processor.repetition_time is not None and unknown:
        warnings.warn(
            f"{len(unknown)} of {len(recordings)} inputs have no known TR ({unknown[0]}, ...): they are used as "
            f"sampled at the model's TR, {processor.repetition_time} s; pass repetition_time=SECONDS to resample "
            "them.",
            stacklevel=2,
        )
    resampled = sum(processor.needs_resampling(r.repetition_time) for r in recordings)
    if resampled:
        print(f"{resampled} recordings resampled to the model's TR of {processor.repetition_time} s (linear)")
    if processor.short_recordings == "pad":
        lengths = [processor.resampled_length(len(r.series), r.repetition_time) for r in recordings]
        padded = [length for length in lengths if length < processor.num_timepoints]
        if padded:
            print(
                f"padded (shorter than one window of {processor.num_timepoints} timepoints): "
                f"{padding_report(padded, processor.num_timepoints)}"
            )
    return recordings


def _embed_process(args) -> tuple:
    """
    This process's 0-based index, the process count and accelerate's `PartialState` when `accelerate launch` started
    several processes (else None): from `process` (`"I/N"`), else from accelerate (on the CPU when `device="cpu"` or
    without CUDA), else `(0, 1, None)`.
    """
    if args.process is not None:
        from ..data.prepare_parts import parse_part

        index, count = parse_part(args.process, argument="process")
        return index - 1, count, None
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        from accelerate import PartialState

        state = PartialState(cpu=args.device == "cpu" or not torch.cuda.is_available())
        return state.process_index, state.num_processes, state
    return 0, 1, None


__all__ = [
    "AUTOCAST_DTYPES",
    "EMBEDDING_SUFFIXES",
    "POOLINGS",
    "WINDOW_POLICIES",
    "EmbedArguments",
    "count_windows",
    "embed_in_chunks",
    "unfinished_chunks",
    "check_embeddings_file",
    "embed_cohort",
    "embed_recordings",
    "gather_chunks",
    "load_processor",
    "embed_windows",
    "save_embeddings",
]
