# Copyright 2026 The brainlm_hf authors. Licensed under the Apache License, Version 2.0.
"""Network access within a bound: `$BRAINLM_NETWORK_TIMEOUT` seconds (default 10), for the Hub and downloads.

A leaf module: `hub_file` fetches one file of a Hub repository within the bound (or from the cache, or a
`NetworkError` naming the host and how to work offline); `hub`, `convert` and `data.atlas` (the pinned A424 and
statistics downloads) read the bound here, so that every network path of the package ends within it.
"""

import math
import os
from pathlib import Path
from urllib.parse import urlsplit

from .errors import InvalidArgumentError, NetworkError, one_line

DEFAULT_NETWORK_TIMEOUT = 10.0  # seconds; $BRAINLM_NETWORK_TIMEOUT overrides it


def network_timeout() -> float:
    """Seconds a request to the Hub or a download host may wait for an answer: `$BRAINLM_NETWORK_TIMEOUT`, else 10."""
    value = os.environ.get("BRAINLM_NETWORK_TIMEOUT", "")
    if not value:
        return DEFAULT_NETWORK_TIMEOUT
    try:
        seconds = float(value)
    except ValueError:
        seconds = math.nan
    if not (math.isfinite(seconds) and seconds > 0):
        raise InvalidArgumentError(f"BRAINLM_NETWORK_TIMEOUT={value!r}: give a number of seconds above 0 (e.g. 10).")
    return seconds


def hub_file(
    repo_id: str, filename: str, subfolder: str | None = None, revision: str | None = None, *, what: str, **options
) -> tuple[Path, bool]:
    """
    `(path, reachable)`: `filename` of `repo_id` (in `subfolder`, at `revision`) through the Hugging Face cache, and
    whether the Hub answered. Bounded (see the module): one metadata request without retries first, waiting at most
    `network_timeout()` s. A silent, unreachable or failing (5xx) Hub gives the cached copy (`reachable` False) or a
    `NetworkError` naming `what`, the file, the host and how to work offline; offline mode (`HF_HUB_OFFLINE=1` or
    `local_files_only`) too. The Hub's answers about the repository (no such file, repository or revision) are raised
    as `huggingface_hub` raises them. `options`: `cache_dir`, `force_download`, `local_files_only`, `token`.
    """
    from huggingface_hub import constants, get_hf_file_metadata, hf_hub_download, hf_hub_url
    from huggingface_hub.errors import HfHubHTTPError, HFValidationError, LocalEntryNotFoundError

    def cached(reason: str) -> Path:
        try:
            offline = {**options, "local_files_only": True, "force_download": False}
            return Path(hf_hub_download(repo_id, filename, **where, **offline))
        except LocalEntryNotFoundError:
            raise NetworkError(_offline_message(what, filename, subfolder, reason)) from None

    where = {"subfolder": subfolder or None, "revision": revision}
    if constants.HF_HUB_OFFLINE or options.get("local_files_only"):
        flag = "HF_HUB_OFFLINE=1" if constants.HF_HUB_OFFLINE else "local_files_only=True"
        return cached(f"offline mode is on ({flag}) and it is not in the Hugging Face cache"), False
    url = hf_hub_url(repo_id, filename, **where)
    seconds = network_timeout()
    try:
        get_hf_file_metadata(url, token=options.get("token"), timeout=seconds)
    except HfHubHTTPError as error:
        status = error.response.status_code if error.response is not None else None
        if status is not None and status < 500:
            raise
        return cached(f"{_host()} answered HTTP {status} ({one_line(error)[:200]})"), False
    except HFValidationError:
        raise
    except Exception as error:  # noqa: BLE001 - the HTTP client's timeouts and connection errors
        silent = "Timeout" in type(error).__name__
        reason = (
            f"{_host()} did not answer within {seconds:g} s (BRAINLM_NETWORK_TIMEOUT)"
            if silent
            else f"{_host()} is unreachable ({one_line(error)[:200] or type(error).__name__})"
        )
        return cached(reason), False
    options = {"etag_timeout": seconds, **options}
    return Path(hf_hub_download(repo_id, filename, **where, **options)), True


def _host() -> str:
    from huggingface_hub import constants

    return f"the Hub at {urlsplit(constants.ENDPOINT).netloc or constants.ENDPOINT}"


def _offline_message(what: str, filename: str, subfolder: str | None, reason: str) -> str:
    path = f"{subfolder}/{filename}" if subfolder else filename
    return (
        f"could not fetch {path} of {what}: {reason}. To work offline, load it once with the network (it is cached "
        f"in $HF_HOME), or convert it where the Hub is reachable (brainlm convert NAME OUT) and load the folder OUT; "
        f"the A424 atlas files are read from $BRAINLM_CACHE/atlases (see docs/hub.md)."
    )
