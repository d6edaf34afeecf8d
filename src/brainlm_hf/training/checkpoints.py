# Copyright 2026 The brainlm_hf authors. Licensed under the Apache License, Version 2.0.
"""Step checkpoints of a pretraining run: written whole or not at all, read back without running anyone's code.

A step checkpoint `checkpoints/checkpoint_<step>` holds what `Accelerator.save_state` writes for the model
(`model.safetensors`), the optimizer (`optimizer.bin`) and each process's RNG (`random_states_<i>.pkl`), plus
`trainer_state.json`, plain JSON: the step, the LR scheduler's state, every process's stream positions, the
fingerprint of the training data, the stream layout, and the size of every file of the folder.

* Writing: into `<name>.partial`, renamed when complete. A write that fails (a full disk, a quota, a read-only
  folder) removes the partial folder and raises an `OSError` that says what happened ("no space left on the device
  of ...") and which earlier checkpoint to resume from; earlier checkpoints are never touched before a new one is
  complete.
* Reading: nothing is unpickled beyond what `torch.load(weights_only=True)` allows (tensors and plain data: how
  accelerate reads the optimizer and RNG files). accelerate unpickles the objects registered with
  `register_for_checkpointing` (`custom_checkpoint_<i>.pkl`) with `weights_only=False`, so a crafted file would run
  code: brainlm_hf registers nothing, and a checkpoint that holds any pickle other than the optimizer and RNG files is
  refused before anything is read (so are FSDP's `torch.distributed.checkpoint` folders, whose `.metadata` is a
  pickle, unless `trust_pickles=True` for a checkpoint you wrote yourself).
* Checks: a checkpoint whose files differ from the sizes it recorded, or that fails to load, is named as damaged,
  with the previous checkpoint offered; one written for other training data (fingerprint) or another stream layout
  (streams = processes x gradient accumulation steps, batch size, crops per recording, seed) is refused with both
  named.
"""

import errno
import hashlib
import json
import math
import re
import shutil
from pathlib import Path

from ..data.prepared import PreparedDataset
from ..errors import InvalidArgumentError, InvalidFileError, MissingFileError, one_line
from ..folders import check_model_folder, first_existing
from ..version import __version__

TRAINER_STATE = "trainer_state.json"
CHECKPOINT_FORMAT = 1
# pickles that accelerate's `save_state` writes and `load_state` reads with `weights_only=True`
_SAFE_PICKLES = re.compile(r"optimizer(_\d+)?\.bin|random_states_\d+\.pkl|scaler\.pt")
_PICKLE_SUFFIXES = (".pkl", ".pickle", ".bin", ".pt", ".pth", ".metadata")
_LOW_SPACE = 64 * 2**20  # bytes: a write that fails with less free space than this is a full disk


_STEP_PREFIX = "checkpoint_"
# a step checkpoint's folder: `checkpoint_<step>`, `checkpoint_<step>_<name>` (e.g. `_nan`), `.partial` while written
STEP_CHECKPOINT_NAME = re.compile(_STEP_PREFIX + r"(?P<step>\d+)(_\w+)?(\.partial)?")
_STEP_NAME = re.compile(_STEP_PREFIX + r"\d+")  # a complete, regular one (kept `limit` of, resumed from as `latest`)
STEP_CHECKPOINT_FILES = ("trainer_state.json", "optimizer*.bin", "random_states_*.pkl", "custom_*.pkl")


def data_fingerprint(dataset: PreparedDataset) -> dict:
    """
    The training data a run reads, for a checkpoint: its dataset, shard count and a fingerprint of the processor, the
    training split's summary and, for a local dataset, every training shard's name, size and recordings (`id` and
    `num_timepoints` columns; a remote dataset is fingerprinted by its summary and shard names, without a download,
    and a Hub dataset also by the commit it is pinned to, which names its content).
    """
    from ..data.prepared import read_shard

    shards = dataset.shards("train")
    digest = hashlib.sha256(json.dumps(dataset.summary["splits"].get("train"), sort_keys=True).encode())
    digest.update(dataset.processor.to_json_string().encode())
    if dataset.commit:
        digest.update(dataset.commit.encode())
    for shard in shards:
        digest.update(Path(shard).name.encode())
        if not dataset.is_remote:
            table = read_shard(shard, ["id", "num_timepoints"])
            content = [Path(shard).stat().st_size, *table.column("id").to_pylist(), *table.column(1).to_pylist()]
            digest.update(json.dumps(content).encode())
    return {"dataset": dataset.path, "train_shards": len(shards), "fingerprint": digest.hexdigest()[:16]}


def stream_layout(num_processes: int, args) -> dict:
    """How a run splits and batches its data (see the module): what a resumed run must keep."""
    return {
        "streams": num_processes * args.gradient_accumulation_steps,
        "processes": num_processes,
        "gradient_accumulation_steps": args.gradient_accumulation_steps,
        "per_device_train_batch_size": args.per_device_train_batch_size,
        "crops_per_recording": args.crops_per_recording,
        "seed": args.seed,
    }


def save_checkpoint(accelerator, output: Path, trainer_state: dict, limit: int, name: str = "") -> Path:
    """
    Write `checkpoints/checkpoint_<step>[_<name>]` (see the module) and keep the newest `limit` step checkpoints;
    `trainer_state` holds `step` and everything else the run resumes from (JSON data). Returns the folder.
    """
    folder = output / "checkpoints" / f"{_STEP_PREFIX}{trainer_state['step']}{'_' + name if name else ''}"
    partial = folder.with_name(folder.name + ".partial")
    if accelerator.is_main_process and partial.exists():  # left by a run killed while saving
        shutil.rmtree(partial)
    accelerator.wait_for_everyone()
    try:
        accelerator.save_state(str(partial))
        accelerator.wait_for_everyone()
        if accelerator.is_main_process:
            files = {p.relative_to(partial).as_posix(): p.stat().st_size for p in partial.rglob("*") if p.is_file()}
            state = {"format": CHECKPOINT_FORMAT, "brainlm_hf": __version__, **trainer_state, "files": files}
            (partial / TRAINER_STATE).write_text(json.dumps(state, indent=1))
    except (OSError, RuntimeError) as error:  # torch reports a full disk as a RuntimeError of its zip writer
        free = _free_bytes(partial)
        if accelerator.is_main_process:
            shutil.rmtree(partial, ignore_errors=True)
        raise _write_failure(folder, error, free, step_checkpoints(output)) from error
    if accelerator.is_main_process:
        if folder.exists() or folder.is_symlink():
            _remove_checkpoint(folder)
        partial.rename(folder)
        if not name:
            for old in step_checkpoints(output)[:-limit]:
                _remove_checkpoint(old)
    accelerator.wait_for_everyone()
    return folder


def _remove_checkpoint(folder: Path) -> None:
    """Delete a step checkpoint; one that is a symbolic link loses the link only (its target is not the run's)."""
    if folder.is_symlink():
        folder.unlink()
    else:
        shutil.rmtree(folder)


def load_checkpoint(accelerator, output: Path, checkpoint: str, expected: dict, trust_pickles: bool = False) -> dict:
    """
    Check the checkpoint `checkpoint` (a folder, or `"latest"`: the newest complete one in `output/checkpoints`),
    restore model, optimizer and RNG into `accelerator`'s prepared objects, and return its trainer state. `expected`
    holds this run's `data` (`data_fingerprint`) and `layout` (`stream_layout`); a checkpoint of other data or
    another layout is refused (see the module).
    """
    from accelerate.utils import load

    folder = checkpoint_path(output, checkpoint)
    state = _trainer_state(folder, output)
    try:
        check_trainer_state(state, _step(folder))
    except ValueError as error:
        raise _damaged(folder, output, f"its {TRAINER_STATE} has {error}") from None
    _check_files(folder, state, output, trust_pickles)
    _check_same_run(folder, state, expected)
    try:
        load(folder / f"random_states_{accelerator.process_index}.pkl")  # accelerate skips an unreadable one silently
        accelerator.load_state(str(folder))
    except Exception as error:  # noqa: BLE001 - safetensors, zip, unpickling and shape errors of a damaged file
        raise _damaged(folder, output, f"it cannot be read ({one_line(error)[:300]})") from error
    return state


def step_checkpoints(output: Path) -> list[Path]:
    """The complete step checkpoints of a run, oldest first."""
    folders = [p for p in (output / "checkpoints").glob(f"{_STEP_PREFIX}*") if _STEP_NAME.fullmatch(p.name)]
    return sorted(folders, key=_step)


def is_step_checkpoint(folder: Path) -> bool:
    """
    Whether `folder` was written by `save_checkpoint` (`checkpoint_<step>[_<name>][.partial]`, or holding its files),
    not a model folder: a folder with `config.json` never is.
    """
    if (folder / "config.json").is_file():
        return False
    if STEP_CHECKPOINT_NAME.fullmatch(folder.name):
        return True
    return any(next(folder.glob(pattern), None) for pattern in STEP_CHECKPOINT_FILES)


def check_model_path(name: str, option: str, presets=(), config_file: bool = False) -> None:
    """
    `folders.check_model_folder`, and before it: refuse a step checkpoint of a training run (use its `final/` model,
    or resume the run from it). `option` names the argument (a flag, or a positional like `MODEL`) in the message.
    """
    path = Path(name).expanduser()
    if name not in presets and path.is_dir() and is_step_checkpoint(path):
        final = path.parent.parent / "final" if path.parent.name == "checkpoints" else Path("RUN") / "final"
        raise InvalidArgumentError(
            f"{option} {name} is a step checkpoint of a training run (optimizer and data-stream state to resume "
            f"from), not a model: give the run's final model ({final}/), or continue the run with "
            f"resume_from_checkpoint='{name}'.",
            argument="resume_from_checkpoint",
        )
    check_model_folder(name, option, presets, config_file)


def checkpoint_path(output: Path, name: str) -> Path:
    """The folder `name` names (`"latest"`: the newest complete step checkpoint of `output`)."""
    if name != "latest":
        folder = Path(name).expanduser()
        if not folder.is_dir():
            raise MissingFileError(
                f"no such folder: {name} (resume_from_checkpoint)", argument="resume_from_checkpoint"
            )
        return folder
    checkpoints = step_checkpoints(output)
    if not checkpoints:
        raise MissingFileError(
            f"No checkpoint to resume from in {output / 'checkpoints'} (resume_from_checkpoint='latest').",
            argument="resume_from_checkpoint",
        )
    return checkpoints[-1]


def _trainer_state(folder: Path, output: Path) -> dict:
    path = folder / TRAINER_STATE
    if not path.is_file():
        old = sorted(p.name for p in folder.glob("custom_checkpoint_*.pkl"))
        if old:
            raise InvalidFileError(
                f"{folder} holds {', '.join(old)}: pickles that accelerate would load with weights_only=False (a "
                f"crafted one runs code), from an earlier brainlm_hf; brainlm_hf does not read them and has no "
                f"{TRAINER_STATE} to resume from. Start the run again (or from a saved model, given as model=)."
            )
        raise _damaged(folder, output, f"it has no {TRAINER_STATE} (not a complete checkpoint of brainlm pretrain)")
    try:
        state = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as error:
        raise _damaged(folder, output, f"its {TRAINER_STATE} is not valid JSON ({error})") from error
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        found = state.get("format") if isinstance(state, dict) else None
        raise _damaged(folder, output, f"its {TRAINER_STATE} is not format {CHECKPOINT_FORMAT} (found {found!r})")
    return state


def check_trainer_state(state: dict, step: int | None = None) -> None:
    """
    Check every field of a step checkpoint's trainer state (types, ranges, sizes, stream positions), and `step`
    against the step its folder is named after (None or 2**62: not named so). A `ValueError` names the first field
    that is wrong: `"step = -1 (expected an integer >= 0)"`.
    """
    _expect(state, "", dict)
    _expect(state.get("brainlm_hf"), "brainlm_hf", str)
    _expect(state.get("step"), "step", int, low=0)
    if step is not None and step < 2**62 and state["step"] != step:
        raise ValueError(f"step = {state['step']!r} (expected {step}, the step its folder is named after)")
    scheduler = _expect(state.get("scheduler"), "scheduler", dict)
    _expect(scheduler.get("last_epoch"), "scheduler.last_epoch", int, low=0)
    for name in ("base_lrs", "_last_lr"):
        for index, rate in enumerate(_expect(scheduler.get(name), f"scheduler.{name}", list)):
            _expect(rate, f"scheduler.{name}[{index}]", float, low=0)
    streams = _expect(state.get("streams"), "streams", list, low=1)
    for index, entry in enumerate(streams):
        _check_stream_entry(_expect(entry, f"streams[{index}]", dict), f"streams[{index}]")
    data = _expect(state.get("data"), "data", dict)
    _expect(data.get("fingerprint"), "data.fingerprint", str)
    _expect(data.get("train_shards"), "data.train_shards", int, low=1)
    layout = _expect(state.get("layout"), "layout", dict)
    for key in ("streams", "processes", "gradient_accumulation_steps", "per_device_train_batch_size",
                "crops_per_recording"):  # fmt: skip
        _expect(layout.get(key), f"layout.{key}", int, low=1)
    _expect(layout.get("seed"), "layout.seed", int)
    total = sum(len(entry["batches"]["positions"]) for entry in streams)
    if total != layout["streams"]:
        raise ValueError(f"{total} stream positions in streams (expected layout.streams = {layout['streams']})")
    for name, size in _expect(state.get("files"), "files", dict).items():
        if Path(name).is_absolute() or ".." in Path(name).parts:
            raise ValueError(f"files naming {name!r} (expected a path inside the checkpoint)")
        _expect(size, f"files[{name!r}]", int, low=0)


def _check_stream_entry(entry: dict, where: str) -> None:
    """One process's stream positions (`pretraining._stream_state`): `first_stream` and its `BatchStream` state."""
    _expect(entry.get("first_stream"), f"{where}.first_stream", int, low=0)
    batches = _expect(entry.get("batches"), f"{where}.batches", dict)
    parts = _expect(batches.get("parts"), f"{where}.batches.parts", int, low=1)
    _expect(batches.get("next"), f"{where}.batches.next", int, low=0, high=parts - 1)
    for index, stream in enumerate(_expect(batches.get("positions"), f"{where}.batches.positions", list, low=1)):
        name = f"{where}.batches.positions[{index}]"
        if len(_expect(stream, name, list)) != parts:
            raise ValueError(f"{len(stream)} parts in {name} (expected batches.parts = {parts})")
        for part, position in enumerate(stream):
            for key in ("epoch", "shard", "window"):
                _expect(_expect(position, f"{name}[{part}]", dict).get(key), f"{name}[{part}].{key}", int, low=0)


def _expect(value, name: str, kind: type, low: float | None = None, high: float | None = None):
    """`value` when it is a `kind` (an int for float; never a bool) within `[low, high]` (for a list or dict: its
    length), else a `ValueError` naming `name`."""
    kinds = (int, float) if kind is float else kind
    size = len(value) if isinstance(value, list | dict) else value
    finite = not isinstance(value, float) or math.isfinite(value)
    if (
        isinstance(value, bool)
        or not isinstance(value, kinds)
        or not finite
        or (low is not None and size < low)
        or (high is not None and size > high)
    ):
        bounds = f"in [{low}, {high}]" if high is not None else f">= {low}" if low is not None else ""
        noun = {int: "an integer", float: "a finite number", str: "a string", list: "a list", dict: "an object"}[kind]
        sized = " of length" if kind in (list, dict) and bounds else ""
        field = f"{name} = {value!r}"[:120] if name else f"{value!r}"[:120]
        raise ValueError(f"{field} (expected {noun}{sized}{' ' + bounds if bounds else ''})")
    return value


def _check_files(folder: Path, state: dict, output: Path, trust_pickles: bool) -> None:
    """Refuse unexpected pickles, then files whose sizes differ from those recorded."""
    for path in sorted(folder.rglob("*")):
        name = path.relative_to(folder).as_posix()
        if path.is_file() and path.name.endswith(_PICKLE_SUFFIXES) and not _SAFE_PICKLES.fullmatch(name):
            written = name in state.get("files", {})  # e.g. the .metadata of FSDP's torch.distributed.checkpoint
            if trust_pickles and written:
                continue
            fix = "pass trust_checkpoint_pickles=True if you wrote it yourself" if written else "remove the file"
            raise InvalidFileError(
                f"{folder} holds {name}, a pickle that brainlm_hf does not load: unpickling it could run code (a step "
                "checkpoint holds pickles only in optimizer.bin and random_states_<i>.pkl, read with "
                f"weights_only=True). If you trust where it came from, {fix}.",
                argument="trust_checkpoint_pickles" if written else None,
            )
    for name, size in state.get("files", {}).items():
        path = folder / name
        if not path.is_file():
            raise _damaged(folder, output, f"{name} is missing")
        if path.stat().st_size != size:
            raise _damaged(folder, output, f"{name} has {path.stat().st_size} bytes where {size} were written")


def _check_same_run(folder: Path, state: dict, expected: dict) -> None:
    data, layout = state.get("data", {}), state.get("layout", {})
    if data.get("fingerprint") != expected["data"]["fingerprint"]:
        raise InvalidArgumentError(
            f"{folder} was written for other training data: {data.get('dataset')} ({data.get('train_shards')} "
            f"training shards, fingerprint {data.get('fingerprint')}); this run reads {expected['data']['dataset']} "
            f"({expected['data']['train_shards']} training shards, fingerprint {expected['data']['fingerprint']}). "
            "Resume with the dataset the run started with, or start a new run (another output_dir).",
            argument="output_dir",
        )
    keys = ("streams", "per_device_train_batch_size", "crops_per_recording", "seed")
    now = expected["layout"]
    differ = {key: (layout.get(key), now[key]) for key in keys if layout.get(key) != now[key]}
    if differ:
        described = "; ".join(f"{key} {a} in the checkpoint, {b} in this run" for key, (a, b) in differ.items())
        streams = (
            f" (streams = processes x gradient accumulation steps: {layout.get('processes')} x "
            f"{layout.get('gradient_accumulation_steps')} when it was written)"
            if "streams" in differ
            else ""
        )
        raise InvalidArgumentError(
            f"{folder} was written by a run that splits its data otherwise: {described}{streams}. Resume with the "
            "same settings (another process count is fine when processes x accumulation stays the same)."
        )


def _damaged(folder: Path, output: Path, reason: str) -> InvalidFileError:
    earlier = [p for p in step_checkpoints(output) if p.resolve() != folder.resolve() and _step(p) < _step(folder)]
    offer = (
        f"resume from the previous checkpoint instead: resume_from_checkpoint={str(earlier[-1])!r}"
        if earlier
        else "no earlier checkpoint of this run is left: start it again"
    )
    return InvalidFileError(
        f"The checkpoint {folder} is damaged: {reason}; {offer}.", argument="resume_from_checkpoint"
    )


def _write_failure(folder: Path, error: BaseException, free: int, earlier: list[Path]) -> OSError:
    full = (isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT)) or free < _LOW_SPACE
    if full:
        reason = f"no space left on the device ({free // 2**20} MiB free)"
    else:
        reason = one_line(error)[:300]
    if earlier:
        kept = f"the earlier checkpoint {earlier[-1]} is intact: resume from it with resume_from_checkpoint='latest'"
    else:
        kept = "no earlier checkpoint exists"
    code = errno.ENOSPC if full else getattr(error, "errno", None) or errno.EIO
    message = f"could not write the checkpoint: {reason}; nothing of it was kept and {kept}"
    return OSError(code, message + (" once space is free" if full else ""), str(folder))


def _free_bytes(path: Path) -> int:
    return shutil.disk_usage(first_existing(path)).free


def _step(folder: Path) -> int:
    match = STEP_CHECKPOINT_NAME.fullmatch(folder.name)
    return int(match.group("step")) if match else 2**62
