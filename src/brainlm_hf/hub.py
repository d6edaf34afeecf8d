# Copyright 2026 The brainlm_hf authors. Licensed under the Apache License, Version 2.0.
"""The Hugging Face Hub: loading the released and other original BrainLM checkpoints by name (converted on load and
cached). Uploading a finished folder is `hub_upload.push_folder`.

`resolve_pretrained` is plugged into `from_pretrained` of `BrainLMModel`, `BrainLMForMaskedSignalModeling`,
`BrainLMForSequenceClassification` and `BrainLMFeatureExtractor` by `brainlm_hf/__init__.py`. What
`from_pretrained(X, subfolder=S, revision=R)` then loads:

* a local folder `X` (with `S` inside it) or a Hub repository in brainlm_hf's format: as transformers does;
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
  to a temporary folder and renamed into place.
"""

import hashlib
import json
import os
import shutil
from pathlib import Path, PurePosixPath

from transformers.utils import logging

from . import convert
from .convert import release_location

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
    if os.path.isdir(name):
        folder = Path(name, subfolder)
        if original_family(folder / "config.json") is None:
            return pretrained_model_name_or_path, kwargs
        target = _local_cache_folder(folder)
        _convert_once(str(folder), target, force=bool(kwargs.get("force_download")))
        return str(target), _without(kwargs, "subfolder", "revision")
    name, subfolder = release_location(name, subfolder)
    if subfolder:
        kwargs["subfolder"] = subfolder
    return _resolve_hub(name, subfolder, kwargs)


def _resolve_hub(repo_id: str, subfolder: str, kwargs: dict) -> tuple:
    """A Hub repository: its converted folder when `config.json` at that revision is an original one."""
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError, HfHubHTTPError, HFValidationError

    options = {key: kwargs[key] for key in _DOWNLOAD_OPTIONS if kwargs.get(key) is not None}
    try:
        config_path = Path(
            hf_hub_download(
                repo_id, "config.json", subfolder=subfolder or None, revision=kwargs.get("revision"), **options
            )
        )
    except (EntryNotFoundError, HfHubHTTPError, HFValidationError):
        return repo_id, kwargs  # not a repository we can read: transformers says why
    # the file is <repo cache>/snapshots/<commit>/<subfolder>/config.json
    snapshot = config_path.parents[len(PurePosixPath(subfolder).parts)]
    storage, commit = snapshot.parent.parent, snapshot.name
    target = storage / f"brainlm_hf-converted-v{CONVERSION_VERSION}" / commit / subfolder / "converted"
    force = bool(kwargs.get("force_download"))
    if target.is_dir() and not force:
        return str(target), _without(kwargs, "subfolder", "revision")
    if original_family(config_path) is None:
        return repo_id, kwargs
    convert_options = {key: options[key] for key in ("cache_dir", "token") if key in options}
    _convert_once(repo_id, target, force, subfolder=subfolder or None, revision=commit, **convert_options)
    return str(target), _without(kwargs, "subfolder", "revision")


def original_family(config_path: Path) -> str | None:
    """The original family (`brainlm_mae` or `vit_mae`) that `config_path` declares, or None (also when missing)."""
    if not config_path.is_file():
        return None
    model_type = json.loads(config_path.read_text()).get("model_type")
    return model_type if model_type in convert.FAMILIES else None


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
