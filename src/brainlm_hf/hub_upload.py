# Copyright 2026 The brainlm_hf authors. Licensed under the Apache License, Version 2.0.
"""Uploading a finished folder (a converted or fine-tuned checkpoint) to the Hugging Face Hub in one commit.

A leaf: `convert` and `training` upload through it without importing `hub` (which loads through `convert`).
"""

from pathlib import Path

from .errors import MissingFileError


def push_folder(
    folder,
    repo_id: str,
    commit_message: str,
    token: str | None = None,
    private: bool | None = None,
    exclude: tuple[str, ...] = (),
    repo_type: str = "model",
    extra: list[str] | tuple[str, ...] = (),
) -> str:
    """
    Create `repo_id` (of `repo_type`) if needed and upload the files at the top of `folder` (not its subfolders, nor
    the names in `exclude`), and the paths `extra` inside it, in one commit with `HfApi.upload_folder`. Returns the
    repository id.
    """
    from huggingface_hub import HfApi

    files = sorted(p.name for p in Path(folder).iterdir() if p.is_file() and p.name not in exclude)
    if not files:
        raise MissingFileError(f"{folder} holds no files to upload.", argument="folder")
    api = HfApi(token=token)
    repo = api.create_repo(repo_id, private=private, exist_ok=True, repo_type=repo_type).repo_id
    api.upload_folder(
        repo_id=repo,
        folder_path=str(folder),
        allow_patterns=[*files, *extra],
        commit_message=commit_message,
        repo_type=repo_type,
    )
    return repo
