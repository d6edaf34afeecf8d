"""The exception kinds of user mistakes (`brainlm_hf.errors`), and that library calls raise them with messages that
name Python arguments (the command line renames them to flags through `UserError.describe`)."""

import ast
import pickle
import re
from pathlib import Path

import numpy as np
import pytest

import brainlm_hf
from brainlm_hf import BrainLMFeatureExtractor
from brainlm_hf.data.prepare import prepare_dataset
from brainlm_hf.data.prepared import (
    PreparedDataset,
    UnreadableShardError,
    read_recordings,
    read_shapes,
    read_shard,
    reading_shard,
    shard_atlas,
    shard_columns,
)
from brainlm_hf.errors import (
    FolderNotEmptyError,
    InvalidArgumentError,
    InvalidFileError,
    InvalidInputError,
    MissingFileError,
    NotAFolderError,
    UserError,
    one_line,
)
from brainlm_hf.folders import output_folder
from brainlm_hf.training.checks import check_counts


def flag(argument: str) -> str | None:
    """How a command line that takes these arguments names them (None: not one of its arguments)."""
    known = {"shard_multiple", "atlas", "repetition_time", "overwrite", "num_timepoints"}
    return "--" + argument.replace("_", "-") if argument in known else None


@pytest.mark.parametrize(
    "kind, builtins",
    [
        (InvalidInputError, (ValueError,)),
        (InvalidArgumentError, (ValueError,)),
        (InvalidFileError, (ValueError,)),
        (MissingFileError, (FileNotFoundError, OSError)),
        (NotAFolderError, (InvalidFileError, NotADirectoryError, OSError)),
        (FolderNotEmptyError, (InvalidArgumentError, FileExistsError, OSError)),
        (UnreadableShardError, (InvalidFileError, RuntimeError, ValueError)),
    ],
)
def test_each_kind_is_a_user_error_and_the_builtin_callers_catch(kind, builtins):
    error = kind("x.parquet is damaged", argument="data_files")
    assert isinstance(error, UserError) and all(isinstance(error, builtin) for builtin in builtins)
    assert str(error) == "x.parquet is damaged" and error.argument == "data_files"
    copy = pickle.loads(pickle.dumps(error))  # as an error crosses from a DataLoader worker
    assert type(copy) is kind and str(copy) == str(error) and copy.argument == "data_files"


def test_a_user_error_is_not_a_value_error_by_itself():
    assert not issubclass(UserError, ValueError | OSError)
    assert not issubclass(InvalidInputError, OSError) and not issubclass(MissingFileError, ValueError)


def test_describe_gives_one_line_and_renames_only_the_argument_as_the_message_names_it():
    error = InvalidArgumentError(
        "shard_multiple must be a positive integer, got 0;\n  an atlas\tneeds shard_multiple=8 (not\n"
        "my_shard_multiple=1).",
        argument="shard_multiple",
    )
    assert error.describe() == (
        "shard_multiple must be a positive integer, got 0; an atlas needs shard_multiple=8 (not my_shard_multiple=1)."
    )
    assert error.describe(flag) == (
        "--shard-multiple must be a positive integer, got 0; an atlas needs --shard-multiple=8 (not "
        "my_shard_multiple=1)."
    )
    prose = InvalidArgumentError(
        "x.nii is a NIfTI image: an atlas is needed to parcellate it (atlas=).", argument="atlas"
    )
    assert prose.describe(flag) == "x.nii is a NIfTI image: an atlas is needed to parcellate it (--atlas=)."
    assert InvalidInputError("a\nb").describe(flag) == "a b"  # no argument: nothing renamed


def test_one_line_joins_every_whitespace_run():
    assert one_line(ValueError("a\n  b\tc \r\n")) == "a b c"
    assert one_line("") == ""


# ------------------------------------------------------------------------------------------- library calls


@pytest.mark.parametrize("value", [-1.0, 0, float("nan"), "2"])
def test_a_bad_repetition_time_is_an_invalid_argument_named_as_in_python(value):
    with pytest.raises(InvalidArgumentError) as caught:
        BrainLMFeatureExtractor(num_timepoints=20, repetition_time=value)
    assert caught.value.argument == "repetition_time"
    assert str(caught.value) == f"repetition_time must be a positive finite number, got {value!r}."
    assert caught.value.describe(flag).startswith("--repetition-time must be a positive finite number")


def test_a_recording_with_nan_is_invalid_input():
    processor = BrainLMFeatureExtractor(num_timepoints=4, normalization="none")
    recording = np.zeros((8, 3), np.float32)
    recording[2, 1] = np.nan
    with pytest.raises(InvalidInputError, match=r"recording 0 has NaN/Inf values in regions \[1\]"):
        processor.windows([recording])


def test_a_missing_dataset_folder_is_a_missing_file(tmp_path):
    with pytest.raises(MissingFileError, match=f"no such folder: {tmp_path / 'nowhere'} "):
        PreparedDataset(tmp_path / "nowhere")
    (tmp_path / "file").write_text("x")
    with pytest.raises(NotAFolderError, match="is a file, not a prepared dataset"):
        PreparedDataset(tmp_path / "file")
    (tmp_path / "raw").mkdir()
    with pytest.raises(MissingFileError, match="raw is not a prepared dataset: it has no prepare_summary.json"):
        PreparedDataset(tmp_path / "raw")


@pytest.mark.parametrize(
    "read",
    [read_recordings, read_shard, read_shapes, shard_columns, shard_atlas],
    ids=lambda f: f.__name__,
)
@pytest.mark.parametrize("content", [b"PAR1 this is not parquet", b""])
def test_every_shard_reader_names_a_damaged_shard_and_the_fix(tmp_path, read, content):
    shard = tmp_path / "shard-00000-of-00001.parquet"
    shard.write_bytes(content)
    with pytest.raises(UnreadableShardError) as caught:
        read(str(shard))
    message = str(caught.value)
    assert message.startswith(f"Could not read the Parquet shard {shard}: ") and "\n" not in message
    assert message.endswith("Prepare the dataset again, or copy it again whole if this shard was copied.")
    assert caught.value.__cause__ is not None  # the reader's own error stays attached


def test_reading_shard_lets_a_user_error_of_a_nested_read_through():
    inner = InvalidArgumentError("reader must be 'auto' or 'pyarrow', got 'x'.", argument="reader")
    with pytest.raises(InvalidArgumentError) as caught, reading_shard("outer.parquet"):
        raise inner
    assert caught.value is inner


def test_a_bad_shard_multiple_is_refused_before_anything_is_written(tmp_path):
    with pytest.raises(InvalidArgumentError) as caught:
        prepare_dataset(tmp_path / "inputs", tmp_path / "out", shard_multiple=0)
    assert caught.value.argument == "shard_multiple"
    assert str(caught.value) == "shard_multiple must be a positive integer, got 0."
    assert caught.value.describe(flag) == "--shard-multiple must be a positive integer, got 0."
    assert not (tmp_path / "out").exists()


def test_a_count_below_its_least_value_names_the_python_argument():
    with pytest.raises(InvalidArgumentError) as caught:
        check_counts(crops_per_recording=(0, 1))
    assert caught.value.argument == "crops_per_recording"
    assert str(caught.value).startswith("crops_per_recording must be at least 1, got 0")


def test_a_non_empty_output_names_overwrite_as_a_python_argument(tmp_path):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "notes.txt").write_text("mine")
    with pytest.raises(FolderNotEmptyError) as caught, output_folder(tmp_path / "out"):
        pass
    assert "pass overwrite=True to replace it whole" in str(caught.value) and caught.value.argument == "overwrite"
    assert "pass --overwrite=True to replace it whole" in caught.value.describe(flag)


# ------------------------------------------------------------------------------------------- messages


def _raised_strings(path: Path) -> list[tuple[int, str]]:
    """The string parts of every `raise` statement of a module, with their line numbers."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Raise) and node.exc is not None:
            found += [
                (part.lineno, part.value)
                for part in ast.walk(node.exc)
                if isinstance(part, ast.Constant) and isinstance(part.value, str)
            ]
    return found


def test_library_messages_name_python_arguments_not_command_line_flags():
    package = Path(brainlm_hf.__file__).parent
    flags = [
        f"{path.relative_to(package)}:{line}: {text}"
        for path in sorted(package.rglob("*.py"))
        if path.name != "cli.py"
        for line, text in _raised_strings(path)
        if re.search(r"(?<![\w-])--[a-z]", text) and "pip install" not in text
    ]
    assert not flags, "\n".join(flags)
