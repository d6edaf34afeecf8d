# Copyright 2026 The brainlm_hf authors. Licensed under the Apache License, Version 2.0.
"""The Hugging Face Hub: loading the released and other original BrainLM checkpoints by name (converted on load and
cached). Uploading a finished folder is `hub_upload.push_folder`.

`resolve_pretrained` is plugged into `from_pretrained` of `BrainLMModel`, `BrainLMForMaskedSignalModeling`,
`BrainLMForSequenceClassification` and `BrainLMFeatureExtractor` by `brainlm_hf/__init__.py`. What
`from_pretrained(X, subfolder=S, revision=R)` then loads:

* a local folder `X` (with `S` inside it) or a Hub repository in brainlm_hf's format: as transformers does; a
  path-like `X` (see `folders.is_path_like`) that does not exist is "no such folder: X", never a Hub request;
* a short name of the released weights, `"brainlm-13m"`, `"brainlm-111m"` or `"brainlm-650m"` (any letter case), when
  no local folder has that name: `vandijklab/brainlm` with subfolder `old_13M`, `vitmae_111M` or `vitmae_650M`;
* an ORIGINAL BrainLM checkpoint (a `config.json` whose `model_type` is `brainlm_mae` or `vit_mae`, beside
  `model.safetensors` or `pytorch_model.bin`), a local folder or a Hub repository: converted once with
  `brainlm_hf.convert.convert_checkpoint` (the A424 coordinates and BrainLM's UK Biobank statistics downloaded from
  their pinned commits and SHA-256 checked, or the statistics read from `$BRAINLM_UKB_STATISTICS`), and the
  converted folder (weights, config, processor with the pretraining statistics and TR 0.735 s, model card) is
  loaded. It is cached:

  - Hub sources in the repository's folder of the Hugging Face cache,
    `<cache>/models--{owner}--{name}/brainlm_hf-converted-v{N}/{commit}/{subfolder}/converted`, keyed by the commit
    that the revision resolves to: a later load asks the Hub only which commit the revision is (one HEAD request,
    none offline), a new commit converts again, and `hf cache rm` removes the conversions with the repository;
  - local folders in `<HF_HOME>/brainlm_hf/converted-v{N}/{key}/converted`, keyed by the folder's path and the
    sizes and modification times of its `config.json` and weights files.

  `N` (`CONVERSION_VERSION`) changes when the converted output changes, so a new brainlm_hf never reads a stale
  conversion. Concurrent loads (e.g. one per GPU process) convert once: a file lock guards the conversion, written
  to a temporary folder and renamed into place; a cached conversion is read without the lock (a read-only cache
  works) after a cheap check of its files (a damaged entry is an error that says how to convert again).

Network bound: every Hub file is fetched by `hub_file`, which first asks the Hub for the file's metadata once,
without retries, waiting at most `$BRAINLM_NETWORK_TIMEOUT` seconds (default 10). A Hub that is unreachable, silent
or answering a server error (5xx) then gives the cached copy when there is one (and the rest of the load stays in
the cache, `local_files_only=True`), else a `NetworkError` that names the release or repository, the file, the host
and how to work offline; so does offline mode (`HF_HUB_OFFLINE=1`) without a cached copy.
"""

import hashlib
import json
import os
import shutil
from pathlib import Path, PurePosixPath

from transformers.utils import logging

from . import convert
from .convert import hub_source, release_location
from .errors import InvalidFileError, MissingFileError, one_line
from .folders import is_path_like
from .network import hub_file

logger = logging.get_logger(__name__)

CONVERSION_VERSION = 2  # part of the cache paths: bump it when convert_checkpoint writes something else
_WEIGHTS = ("model.safetensors", "pytorch_model.bin")
# from_pretrained options that the download of the source honours
_DOWNLOAD_OPTIONS = ("cache_dir", "force_download", "local_files_only", "token")


def resolve_pretrained(pretrained_model_name_or_path, kwargs: dict) -> tuple:
    """
    The `(pretrained_model_name_or_path, kwargs)` that transformers' `from_pretrained` should receive for what the
    user passed (see the module docstring): unchanged for brainlm_hf checkpoints, the converted folder (without
    `subfolder` and `revision`) for original ones. A source that cannot be read is passed on unchanged, so that
    transformers raises its usual error for it.
    """
    if pretrained_model_name_or_path is None:  # from_pretrained(None, config=..., state_dict=...)
        return pretrained_model_name_or_path, kwargs
    name, kwargs = str(pretrained_model_name_or_path), dict(kwargs)
    subfolder = kwargs.get("subfolder") or ""
    if not os.path.exists(os.path.expanduser(name)) and is_path_like(name):
        raise MissingFileError(f"no such folder: {name}")
    if os.path.isdir(name):
        folder = Path(name, subfolder)
        if original_family(folder / "config.json") is None:
            return pretrained_model_name_or_path, kwargs
        target = _local_cache_folder(folder)
        _cached_or_convert(str(folder), target, force=bool(kwargs.get("force_download")))
        return str(target), _without(kwargs, "subfolder", "revision")
    repo_id, subfolder = release_location(name, subfolder)
    if subfolder:
        kwargs["subfolder"] = subfolder
    return _resolve_hub(repo_id, subfolder, kwargs, hub_source(repo_id, subfolder))


def _resolve_hub(repo_id: str, subfolder: str, kwargs: dict, what: str) -> tuple:
    """A Hub repository: its converted folder when `config.json` at that revision is an original one."""
    from huggingface_hub.errors import EntryNotFoundError, HfHubHTTPError, HFValidationError

    options = {key: kwargs[key] for key in _DOWNLOAD_OPTIONS if kwargs.get(key) is not None}
    revision = kwargs.get("revision")
    try:
        config_path, reachable = hub_file(repo_id, "config.json", subfolder, revision, what=what, **options)
    except EntryNotFoundError:
        _check_subfolder(repo_id, subfolder, revision, what, options.get("token"))
        return repo_id, kwargs  # no config.json (e.g. a processor alone): transformers reads what is there
    except (HfHubHTTPError, HFValidationError):
        return repo_id, kwargs  # not a repository we can read: transformers says why
    if not reachable:  # the Hub did not answer: the rest of the load reads the cache only
        kwargs["local_files_only"] = options["local_files_only"] = True
    # the file is <repo cache>/snapshots/<commit>/<subfolder>/config.json
    snapshot = config_path.parents[len(PurePosixPath(subfolder).parts)]
    storage, commit = snapshot.parent.parent, snapshot.name
    target = storage / f"brainlm_hf-converted-v{CONVERSION_VERSION}" / commit / subfolder / "converted"
    force = bool(kwargs.get("force_download"))
    if not (target.is_dir() and not force) and original_family(config_path) is None:
        return repo_id, kwargs
    convert_options = {key: options[key] for key in ("cache_dir", "token") if key in options}
    _cached_or_convert(repo_id, target, force, subfolder=subfolder or None, revision=commit, **convert_options)
    return str(target), _without(kwargs, "subfolder", "revision")


def _check_subfolder(repo_id: str, subfolder: str, revision: str | None, what: str, token) -> None:
    """Raise `MissingFileError` naming `subfolder` when the repository has no such folder at `revision`."""
    from huggingface_hub import HfApi
    from huggingface_hub.errors import EntryNotFoundError

    if not subfolder:
        return
    try:
        next(iter(HfApi().list_repo_tree(repo_id, path_in_repo=subfolder, revision=revision, token=token)), None)
    except EntryNotFoundError:
        at = f" at revision {revision}" if revision else ""
        raise MissingFileError(
            f"{what}: the repository has no folder {subfolder}{at} (subfolder={subfolder!r}); it may have been "
            f"moved or removed by a newer commit: pass the revision that holds it, or another subfolder.",
            argument="subfolder",
        ) from None


def original_family(config_path: Path) -> str | None:
    """The original family (`brainlm_mae` or `vit_mae`) that `config_path` declares, or None (also when missing).
    A `config.json` that is not a JSON object is an `InvalidFileError` naming it."""
    if not config_path.is_file():
        return None
    model_type = _json_object(config_path, "a model config").get("model_type")
    return model_type if model_type in convert.FAMILIES else None


def _json_object(path: Path, what: str) -> dict:
    """The JSON object in `path`; `InvalidFileError` naming the file when it is cut, not JSON or not an object."""
    try:
        value = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as error:
        raise InvalidFileError(f"{path} is not valid JSON ({one_line(error)}): it is damaged or cut.") from error
    if not isinstance(value, dict):
        raise InvalidFileError(f"{path} holds a JSON {type(value).__name__}, not {what} (a JSON object).")
    return value


def _local_cache_folder(folder: Path) -> Path:
    """Where the conversion of the local original checkpoint `folder` is cached (see the module docstring)."""
    from huggingface_hub import constants

    folder = folder.resolve()
    stamp = [str(folder)]
    for name in ("config.json", *_WEIGHTS):
        if (folder / name).is_file():
            status = (folder / name).stat()
            stamp.append(f"{name}:{status.st_size}:{status.st_mtime_ns}")
    key = hashlib.sha256("\n".join(stamp).encode()).hexdigest()[:32]
    return Path(constants.HF_HOME) / "brainlm_hf" / f"converted-v{CONVERSION_VERSION}" / key / "converted"


def _cached_or_convert(source: str, target: Path, force: bool = False, **options) -> None:
    """The cached conversion `target` when it is there (checked, no lock: a read-only cache works), else convert."""
    if target.is_dir() and not force:
        _check_conversion(target)
        return
    _convert_once(source, target, force, **options)


def _check_conversion(target: Path) -> None:
    """
    A cheap check of a cached conversion (no weights read): its JSON files parse, and `model.safetensors` is as long
    as its header says. A damaged entry (cut, emptied) is an `InvalidFileError` that says how to convert again.
    """
    try:
        for name in ("config.json", "preprocessor_config.json"):
            if not (target / name).is_file():
                raise InvalidFileError(f"{name} is missing")
            _json_object(target / name, name)
        _check_safetensors(target / "model.safetensors")
    except InvalidFileError as error:
        raise InvalidFileError(
            f"the cached conversion {target} is damaged ({error}): load again with force_download=True to convert "
            "it again (or delete that folder)."
        ) from None


def _check_safetensors(path: Path) -> None:
    """`path` holds a safetensors header and as many bytes as its tensors' offsets say (`InvalidFileError`)."""
    if not path.is_file():
        raise InvalidFileError(f"{path.name} is missing")
    size = path.stat().st_size
    with path.open("rb") as handle:
        prefix = handle.read(8)
        length = int.from_bytes(prefix, "little") if len(prefix) == 8 else -1
        header = handle.read(length) if 0 < length <= size - 8 else b""
    try:
        tensors = json.loads(header)
        end = max((entry["data_offsets"][1] for key, entry in tensors.items() if key != "__metadata__"), default=0)
    except (ValueError, UnicodeDecodeError, KeyError, TypeError, AttributeError):
        raise InvalidFileError(f"{path.name} has no readable safetensors header") from None
    if 8 + length + end != size:
        raise InvalidFileError(f"{path.name} holds {size} bytes where its header needs {8 + length + end}")


def _convert_once(source: str, target: Path, force: bool = False, **options) -> None:
    """Convert `source` into `target` unless it is there (or `force`), once across processes (file lock)."""
    from filelock import FileLock

    target.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(target) + ".lock"):
        if target.is_dir() and not force:
            return  # another process converted it while we waited
        where = f"{source}{'/' + options['subfolder'] if options.get('subfolder') else ''}"
        logger.warning(f"Converting the original BrainLM checkpoint {where} into {target} (once; cached).")
        staging = target.with_name(f".{target.name}-{os.getpid()}")
        shutil.rmtree(staging, ignore_errors=True)
        try:
            convert.convert_checkpoint(source, str(staging), **options)
            if target.is_dir():
                shutil.rmtree(target)
            staging.rename(target)
        finally:
            shutil.rmtree(staging, ignore_errors=True)


def _without(kwargs: dict, *names: str) -> dict:
    return {key: value for key, value in kwargs.items() if key not in names}
