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
    "NotAFolderError",
    "UserError",
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
        The message on one line; `flag(argument) -> str` renames the Python argument for the command line where the
        message names it: at its start (`"reader must be ..."`) or as `argument=` (`"use shard_multiple=4"`). The
        same word elsewhere is prose and is kept (`atlas` in `"an atlas is needed (atlas=)"`).
        """
        text = one_line(self)
        if self.argument and flag is not None:
            name, renamed = re.escape(self.argument), flag(self.argument)
            text = re.sub(rf"^{name}\b|(?<![\w.-]){name}(?==)", lambda _: renamed, text)
        return text


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
