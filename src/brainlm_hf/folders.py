# Copyright 2026 The brainlm_hf authors. Licensed under the Apache License, Version 2.0.
"""Paths the user gives: local folder or Hub id, and output folders written without losing anything.

* `is_path_like(name)`: whether a name the user typed is meant as a local path (it starts with `/`, `./`, `../` or
  `~`, has more than one `/`, or cannot be a Hub repository id) rather than a Hub repository id (`name` or
  `namespace/name`). A path-like name that does not exist is an error ("no such folder: PATH"), never a Hub request.
* `output_folder(...)`: a context manager for commands that write a whole folder (`brainlm prepare`, `brainlm
  convert`). It refuses an output that is a file, or a folder that already holds files unless `overwrite=True`
  (which replaces it whole), and even then a folder that holds an input, the working folder or the home folder.
  Everything is written into a temporary folder beside the output, which replaces the output only once complete: a
  failed or interrupted run leaves the earlier output as it was, and a repeated run never mixes its files with an
  earlier one's.
* `check_model_folder`, `check_output_folder`, `check_output_file`: what a command checks before any work, with
  the argument named (`option`: a flag such as `--output_dir`, or a positional such as `MODEL`).
"""

import errno
import os
import re
import shutil
import uuid
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

from .errors import FolderNotEmptyError, InvalidArgumentError, MissingFileError, NotAFolderError

_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?")


def is_path_like(name) -> bool:
    """True when `name` is meant as a local path rather than a Hub repository id (see the module)."""
    name = os.fspath(name)
    if isinstance(name, bytes):
        name = name.decode()
    if name.startswith(("/", "./", "../", "~", ".\\", "..\\")) or name in (".", ".."):
        return True
    return name.count("/") > 1 or "\\" in name or _HUB_ID.fullmatch(name) is None or ".." in name


def local_folder(name, what: str = "folder") -> Path | None:
    """
    The local folder `name` names, or None for a Hub repository id. A path-like name that does not exist raises
    `MissingFileError("no such folder: NAME")`; a file raises `NotAFolderError`.
    """
    path = Path(os.path.expanduser(os.fspath(name)))
    if path.exists():
        if not path.is_dir():
            raise NotAFolderError(f"{name} is a file, not a {what}.")
        return path
    if is_path_like(name):
        raise MissingFileError(f"no such folder: {name}")
    return None


def folder_listing(folder: Path, limit: int = 5) -> str:
    names = sorted(p.name + ("/" if p.is_dir() else "") for p in folder.iterdir())
    return ", ".join(names[:limit]) + (f", ... ({len(names)} entries)" if len(names) > limit else "")


def _inside(path: Path, folder: Path) -> bool:
    path, folder = Path(os.path.abspath(path)), Path(os.path.abspath(folder))
    return path == folder or folder in path.parents


@contextmanager
def output_folder(output, overwrite: bool = False, what: str = "the output", inputs: Iterable = ()) -> Iterator[Path]:
    """
    Yield a new temporary folder beside `output`; when the block completes, it becomes `output` (replacing an
    earlier one whole). Refused before anything is written:

    * `output` is a file (`NotAFolderError`);
    * `output` holds files and `overwrite` is False (`FolderNotEmptyError`);
    * with `overwrite`, `output` is the working folder, one above it, or the home folder, or holds one of `inputs`
      (replacing it would delete them; `InvalidArgumentError`).

    On an error inside the block the temporary folder is removed and `output` is left as it was.
    """
    output = Path(os.path.expanduser(os.fspath(output)))
    if output.exists() and not output.is_dir():
        raise NotAFolderError(f"{output} is a file, not a folder: give a new or empty folder for {what}.")
    existing = output.is_dir() and any(output.iterdir())
    if existing:
        if not overwrite:
            raise FolderNotEmptyError(
                f"{output} is not empty ({folder_listing(output)}): give a new or empty folder, or pass "
                f"overwrite=True to replace it whole with {what}.",
                argument="overwrite",
            )
        check_replaceable(output, what, inputs)
    parent = output.parent
    staging = parent / f".{output.name}.partial-{uuid.uuid4().hex[:8]}"
    try:
        parent.mkdir(parents=True, exist_ok=True)
        staging.mkdir()
    except PermissionError as error:
        raise PermissionError(f"cannot write {output}: permission denied in {first_existing(parent)}.") from error
    except OSError as error:
        raise _like(error, f"cannot write {output} in {parent}: {error.strerror or error}.") from error
    try:
        yield staging
        _move_into_place(staging, output)
    except OSError as error:
        shutil.rmtree(staging, ignore_errors=True)
        if not _is_write_failure(error, staging):
            raise
        kept = "left as it was" if existing else "not created"
        reason = error.strerror or " ".join(str(error).split())
        raise _like(error, f"cannot write {output}: {reason}; {output} was {kept}.") from error
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def check_replaceable(output: Path, what: str, inputs: Iterable = ()) -> None:
    """
    Refuse (`InvalidArgumentError`, `argument="overwrite"`) to replace `output` when it is the working folder, one
    above it or the home folder, or holds one of `inputs`: replacing it would delete them.
    """
    if _inside(Path.cwd(), output) or _inside(Path.home(), output):
        where = "the home folder" if _inside(Path.home(), output) else "the working folder"
        raise InvalidArgumentError(
            f"{output} holds {where}: overwrite=True would delete it; write {what} to a folder of its own.",
            argument="overwrite",
        )
    held = [str(path) for path in inputs if _inside(path, output)]
    if held:
        raise InvalidArgumentError(
            f"{output} holds the input {held[0]}: overwrite=True would delete it; write to another folder.",
            argument="overwrite",
        )


RUN_LOCK = ".brainlm-run.lock"


def claim_run_folder(output, resume: bool, overwrite: bool, inputs: Iterable = ()):
    """
    Claim the output folder of a run that writes into it as it goes (`brainlm pretrain`): one run per folder, and
    never an earlier run's folder by accident. Returns the held `filelock.FileLock` on `output/.brainlm-run.lock`
    (an OS lock: released by `release()`, and by the OS when the process ends, so the file a crashed run leaves
    behind blocks nothing). Refused before anything is written:

    * another live run holds the lock (`InvalidArgumentError`, `argument="output_dir"`);
    * `output` holds an earlier run and neither `resume` nor `overwrite` is set (`FolderNotEmptyError`);
    * with `overwrite`, `output` holds the working or home folder or one of `inputs` (see `check_replaceable`).

    With `overwrite` (and not `resume`) the earlier run is deleted by `clear_run_folder`, once the run has passed its
    own checks.
    """
    from filelock import FileLock, Timeout

    output = Path(os.path.expanduser(os.fspath(output)))
    if output.exists() and not output.is_dir():
        raise NotAFolderError(f"{output} is a file, not a folder: give a new or empty output_dir.")
    output.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(output / RUN_LOCK), timeout=0)
    try:
        lock.acquire()
    except Timeout:
        raise InvalidArgumentError(
            f"{output} is in use: another run is writing into it (it holds {output / RUN_LOCK}); wait for that run "
            "to end, or give another output_dir.",
            argument="output_dir",
        ) from None
    earlier = _earlier_run(output)
    if earlier and not resume:
        if not overwrite:
            lock.release()
            raise FolderNotEmptyError(
                f"{output} holds an earlier run ({folder_listing(output)}): continue it with "
                "resume_from_checkpoint='latest', replace it with overwrite=True, or give a new output_dir.",
                argument="output_dir",
            )
        try:
            check_replaceable(output, "the run", inputs)
        except InvalidArgumentError:
            lock.release()
            raise
    return lock


def clear_run_folder(output) -> None:
    """Delete what an earlier run left in `output` (not the lock of the current run): for `overwrite`."""
    for path in _earlier_run(Path(os.path.expanduser(os.fspath(output)))):
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink()


def _earlier_run(output: Path) -> list[Path]:
    return [path for path in output.iterdir() if path.name != RUN_LOCK]


def _like(error: OSError, message: str) -> OSError:
    """An error of the kind and `errno` of `error` (a full disk stays `ENOSPC`), whose text is `message`."""
    failure = type(error)(message)
    failure.errno = error.errno
    return failure


_WRITE_ERRORS = (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EFBIG, errno.EACCES, errno.EPERM)


def _is_write_failure(error: OSError, staging: Path) -> bool:
    """An error of writing the output (full disk, quota, read-only, ...), not of reading an input."""
    if error.filename is not None and str(staging) in str(error.filename):
        return True
    return (error.errno in _WRITE_ERRORS and error.filename is None) or "No space left on device" in str(error)


def first_existing(path: Path) -> Path:
    """`path`, or its nearest folder above it that exists."""
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def _move_into_place(staging: Path, output: Path) -> None:
    """`staging` becomes `output`; an earlier `output` is moved aside first and deleted only afterwards."""
    if not output.exists():
        staging.rename(output)
        return
    if not any(output.iterdir()):  # an empty folder stays (its permissions, a link to it): the files move in
        for path in staging.iterdir():
            path.rename(output / path.name)
        staging.rmdir()
        return
    replaced = output.parent / f".{output.name}.replaced-{uuid.uuid4().hex[:8]}"
    output.rename(replaced)
    try:
        staging.rename(output)
    except BaseException:
        replaced.rename(output)
        raise
    shutil.rmtree(replaced, ignore_errors=True)


def check_model_folder(name: str, option: str, presets=(), config_file: bool = False) -> None:
    """
    Refuse, before any loading, a model path that cannot be a model: a path-like name that does not exist
    (`FileNotFoundError`, "no such folder"), a file (`NotADirectoryError`, unless `config_file` and a `.json`), or a
    folder without `config.json` (`FileNotFoundError`, pointing to the run's `final/` model when there is one). A name
    in `presets`, or one that is not path-like (a Hub id), is left to the loader.
    """
    if name in presets:
        return
    path = Path(os.path.expanduser(name))
    if path.is_file():
        if config_file and name.endswith(".json"):
            return
        raise NotADirectoryError(f"{option} {name} is a file: give a model folder (config.json + model.safetensors).")
    if path.is_dir():
        if not (path / "config.json").is_file():
            final = path / "final"
            hint = f" (the final model of this run is {final}/)" if (final / "config.json").is_file() else ""
            raise FileNotFoundError(f"{option} {name} has no config.json: it is not a model folder{hint}.")
        return
    if config_file and name.endswith(".json"):
        raise FileNotFoundError(f"no such file: {name} ({option})")
    if is_path_like(name):
        raise FileNotFoundError(f"no such folder: {name} ({option})")


def check_output_folder(path, option: str) -> None:
    """
    An output folder a command creates or writes into: refuse a file in its place or on its way
    (`NotADirectoryError`), and a folder that cannot be written as far as the permissions tell (`PermissionError`;
    the write itself names the folder otherwise).
    """
    folder = Path(os.path.expanduser(path))
    existing = next(p for p in (folder, *folder.absolute().parents) if p.exists())
    if not existing.is_dir():
        where = "" if existing == folder else f": {existing} is a file"
        raise NotADirectoryError(f"{option} {path} is not a folder{where or ' but a file'}.")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise PermissionError(f"{option} {path}: {existing} is not writable (permission denied).")


def check_output_file(path, option: str, suffixes: tuple[str, ...] = ()) -> None:
    """
    An output file: refuse a name without one of `suffixes` (when given; `InvalidArgumentError`), a folder in its
    place (`IsADirectoryError`), or a file where one of its folders should be (`NotADirectoryError`).
    """
    file = Path(os.path.expanduser(path))
    if suffixes and file.suffix not in suffixes:
        raise InvalidArgumentError(f"{option} {path}: the file name must end in {' or '.join(suffixes)}.")
    if file.is_dir():
        raise IsADirectoryError(f"{option} {path} is a folder: give a file name.")
    parent = first_existing(file.parent)
    if not parent.is_dir():
        raise NotADirectoryError(f"{option} {path}: {parent} is a file, not a folder.")
