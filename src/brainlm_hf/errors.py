# Copyright 2026 The brainlm_hf authors. Licensed under the Apache License, Version 2.0.
"""The mistakes a caller can make, as exception classes, and the one-line form of any message.

A `UserError` is a mistake of the caller, never a bug: the `brainlm` command line prints it as one line
(`brainlm <command>: error: ...`) and exits with status 2; any other exception is a bug and keeps its traceback.
Each class also derives from the built-in exception that Python code has always caught for it, so
`except ValueError` and `except FileNotFoundError` keep working.

* `InvalidInputError` (`ValueError`): data that cannot be used as given (a wrong shape, NaN, a TR out of range).
* `InvalidArgumentError` (`ValueError`): an argument value or a combination of arguments that cannot work.
* `InvalidFileError` (`ValueError`): a file or folder that exists but cannot be used (damaged, wrong kind, other data).
* `MissingFileError` (`FileNotFoundError`): a file or folder the caller named, or that a dataset needs, is absent.
* `NetworkError` (`ConnectionError`): a file could not be fetched: the host is unreachable or did not answer in
  time, offline mode is on, or it answered with an error status. The message names the host and how to work offline.
* `NotAFolderError` (`InvalidFileError`, `NotADirectoryError`): a file named where a folder is expected.
* `FolderNotEmptyError` (`InvalidArgumentError`, `FileExistsError`): an output folder that holds files, without
  `overwrite`.

`argument` names the Python argument at fault (`"shard_multiple"`); messages name it as Python callers write it,
and the command line names the flag (`--shard-multiple`) instead, through `UserError.describe(flag=...)`.
"""

import re

__all__ = [
    "FolderNotEmptyError",
    "InvalidArgumentError",
    "InvalidFileError",
    "InvalidInputError",
    "MissingFileError",
    "NetworkError",
    "NotAFolderError",
    "UserError",
    "command_line_text",
    "one_line",
]


def one_line(text) -> str:
    """`text` (any object, e.g. an exception) on one line: whitespace runs, newlines included, become one space."""
    return " ".join(str(text).split())


class UserError(Exception):
    """
    A mistake of the caller. `argument` (optional, keyword-only) is the name of the Python argument at fault; the
    message names it as the caller writes it: at its start (`"shard_multiple must be ..."`) or as `name=`
    (`"shard_multiple=0: ..."`, `"prepare it with num_timepoints=200"`), which `describe` can rename to a flag.
    """

    def __init__(self, message: str, *args, argument: str | None = None):
        super().__init__(message, *args)
        self.argument = argument

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else type(self).__name__

    def describe(self, flag=None) -> str:
        """
        The message on one line, with the names of Python arguments renamed for the command line by `flag(name)`
        (a flag such as `--shard-multiple`, or None for a name the command does not take; see `command_line_text`):
        `argument` at the start of the message, and every `name=`.
        """
        return command_line_text(self, flag, leading=self.argument)


def command_line_text(text, flag=None, leading: str | None = None) -> str:
    """
    `text` on one line, with every Python argument written `name=` (`"use shard_multiple=4"`) renamed to
    `flag(name)` where that is not None, and the argument `leading` renamed where the text starts with it
    (`"reader must be ..."`). The same word elsewhere is prose and is kept (`atlas` in `"an atlas is needed
    (atlas=)"`).
    """
    text = one_line(text)
    if flag is None:
        return text

    def rename(match):
        return flag(match.group(0)) or match.group(0)

    if leading and re.match(rf"{re.escape(leading)}\b", text) and flag(leading):
        text = flag(leading) + text[len(leading) :]
    return re.sub(r"(?<![\w.-])[A-Za-z_]\w*(?==)", rename, text)


class InvalidInputError(UserError, ValueError):
    """Data that cannot be used as given: wrong shape or dtype, NaN/Inf, a TR or length out of range."""


class InvalidArgumentError(UserError, ValueError):
    """An argument value, or a combination of arguments, that cannot work."""


class InvalidFileError(UserError, ValueError):
    """A file or folder that exists but cannot be used: damaged, of the wrong kind, holding other data."""


class MissingFileError(UserError, FileNotFoundError):
    """A file or folder that was named, or that a dataset or checkpoint needs, is absent."""


class NotAFolderError(InvalidFileError, NotADirectoryError):
    """A path that names a file where a folder is expected."""


class FolderNotEmptyError(InvalidArgumentError, FileExistsError):
    """An output folder that already holds files, given without `overwrite`."""


class NetworkError(UserError, ConnectionError):
    """A file could not be fetched (host unreachable or silent, offline mode, an error status): names the host and
    how to work offline."""
