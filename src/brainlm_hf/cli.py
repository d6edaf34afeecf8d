# Copyright 2026 The brainlm_hf authors. Licensed under the Apache License, Version 2.0.
"""The `brainlm` command line: `brainlm convert`, `prepare`, `pretrain`, `finetune`, `embed`, `attention`, `publish`.

Each command's arguments are one dataclass, next to what runs it (`ConvertArguments`, `PrepareArguments`,
`PretrainingArguments`, `FinetuningArguments` with `TrainingArguments`, `EmbedArguments`, `AttentionArguments`), read
by `HfArgumentParser`: every flag in both spellings (`--short-recordings`, `--short_recordings`), the positional
arguments as shown by `brainlm <command> -h` (`brainlm prepare INPUTS... OUT`), or all of them from one JSON or YAML
file given alone (`brainlm prepare prepare.yaml`, where the positional arguments are keys too).

`main(argv)` returns the exit code: 0 on success; 2 on a user error, printed as one line `brainlm <command>: error:
...` that names the file or flag at fault: a `brainlm_hf.errors.UserError`, an invalid command line, or an `OSError`
about a path (missing, not a folder, permission denied, full disk, ...). Any other exception is a bug: it propagates
with its traceback (exit code 1). `BRAINLM_DEBUG=1` prints the traceback of user errors too. Warnings of the package
(`warnings.warn` and its loggers' warnings) print as one line, `brainlm <command>: warning: ...`.
"""

import argparse
import dataclasses
import errno
import json
import logging
import os
import re
import sys
import traceback
import warnings
from contextlib import contextmanager
from pathlib import Path

from .errors import InvalidFileError, MissingFileError, UserError, command_line_text, one_line

_PACKAGE = str(Path(__file__).resolve().parent)
_PACKAGE_LOGGER = __name__.rpartition(".")[0]  # "brainlm_hf": the parent of every logger of the package
ARGUMENT_FILES = (".json", ".yaml", ".yml")
# operating-system errors about a path the user gave: user errors (any other OSError is a bug)
_PATH_ERRORS = (FileNotFoundError, FileExistsError, PermissionError, IsADirectoryError, NotADirectoryError)
_PATH_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EFBIG, errno.ENAMETOOLONG, errno.ELOOP}


def main(argv: list[str] | None = None) -> int:
    """Run `brainlm <command> ...` (`argv`, default `sys.argv[1:]`); returns the exit code (see the module)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or argv[0] not in COMMANDS:
        return _exit_code(lambda: _top_level_parser().parse_args(argv))
    parser, run = command_parser(argv[0])
    return _exit_code(lambda: run(*parser.parse(argv[1:])), argv[0], parser.flag)


def command_parser(command: str) -> tuple["CommandParser", callable]:
    """The parser of `command` and the function that runs it on the parsed dataclasses."""
    types, run = COMMANDS[command][1]()
    return CommandParser(types, command, COMMANDS[command][0]), run


def _exit_code(call, command: str | None = None, flag=None) -> int:
    """
    Run `call()`; 0, or the exit code of `SystemExit`, or 2 after one line for a user error (see the module). Messages
    and warnings of the package name the command's flags (`flag(argument)`) where they name its Python arguments.
    """
    with package_warnings(command, flag):
        try:
            call()
        except SystemExit as exit_:
            return exit_.code if isinstance(exit_.code, int) else 1
        except Exception as error:
            if not is_user_error(error):
                raise
            if os.environ.get("BRAINLM_DEBUG"):
                traceback.print_exception(error)
            sys.stdout.flush()
            print(f"brainlm {command}: error: {describe_error(error, flag)}", file=sys.stderr)
            return 2
    return 0


def is_user_error(error: BaseException) -> bool:
    """A mistake of the user, not a bug: a `UserError`, or an `OSError` about a path (see the module)."""
    if isinstance(error, UserError):
        return True
    return isinstance(error, OSError) and (isinstance(error, _PATH_ERRORS) or error.errno in _PATH_ERRNOS)


def describe_error(error: BaseException, flag=None) -> str:
    """One line: the message (its Python arguments renamed by `flag`), or for an operating-system error `path:
    reason`."""
    if isinstance(error, OSError) and error.strerror and error.filename is not None:
        text = f"{error.filename}: {error.strerror}"
        if error.filename2 is not None:
            text += f" ({error.filename2})"
        return one_line(text)
    if isinstance(error, UserError):
        return error.describe(flag)
    return one_line(str(error) or type(error).__name__)


@contextmanager
def package_warnings(command: str | None, flag=None):
    """
    Print the warnings of the package raised inside, and the warnings logged by its loggers (`brainlm_hf.*`) and by
    transformers' (e.g. its load report of a model's new weights), as `brainlm <command>: warning: ...` (one line,
    naming the command's flags where they name its Python arguments).
    """
    default = warnings.showwarning

    def write(message) -> None:
        from tqdm import tqdm  # its write keeps the line apart from a progress bar being drawn

        tqdm.write(f"brainlm {command}: warning: {command_line_text(log_text(message), flag)}", file=sys.stderr)

    def show(message, category, filename, lineno, file=None, source=None):
        if str(filename).startswith(_PACKAGE):
            write(message)
        else:
            default(message, category, filename, lineno, file, source)

    class OneLine(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            write(record.getMessage())

    handler = OneLine(logging.WARNING)
    package, transformers = logging.getLogger(_PACKAGE_LOGGER), logging.getLogger("transformers")
    own_handlers = list(transformers.handlers)  # transformers' own "[transformers]" handler, replaced meanwhile
    warnings.showwarning = show
    package.addHandler(handler)
    for own in own_handlers:
        transformers.removeHandler(own)
    transformers.addHandler(handler)
    try:
        yield
    finally:
        warnings.showwarning = default
        package.removeHandler(handler)
        transformers.removeHandler(handler)
        for own in own_handlers:
            transformers.addHandler(own)


def log_text(message) -> str:
    """A logged message as text for one line: terminal colour codes and table rules (`---+---`) left out."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(message))
    return "\n".join(row for row in text.splitlines() if not re.fullmatch(r"[-+| ]*", row))


def _top_level_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="brainlm", description="BrainLM on Hugging Face.")
    parser.error = lambda message: _one_line_error(parser, message)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command, (help, _) in COMMANDS.items():
        commands.add_parser(command, help=f"{help} (see `brainlm {command} -h`)")
    return parser


def _one_line_error(parser: argparse.ArgumentParser, message: str):
    parser.exit(2, f"{parser.prog}: error: {one_line(message)} (see `{parser.prog} -h`)\n")


def _hf_argument_parser():
    from transformers import HfArgumentParser

    return HfArgumentParser


class CommandParser:
    """
    The arguments of one command: `HfArgumentParser` over its dataclasses, with the fields marked
    `brainlm_hf.arguments.positional` taken without a flag, errors on one line, and `flag(field)`: how the command
    line names a field (`--shard-multiple`, `INPUTS`; `--output_dir` for pretrain and finetune, whose documented flags
    are the underscore ones).
    """

    def __init__(self, types: tuple, command: str, description: str):
        base = _hf_argument_parser()

        class Parser(base):
            @staticmethod
            def _parse_dataclass_field(parser, field):
                if not field.metadata.get("positional"):
                    return base._parse_dataclass_field(parser, field)
                many = getattr(field.type, "__origin__", None) is list
                parser.add_argument(
                    field.name, metavar=field.metadata["metavar"], nargs="+" if many else None,
                    help=field.metadata["help"],
                )  # fmt: skip

            def error(self, message):
                _one_line_error(self, message)

        self.types, self.prog = types, f"brainlm {command}"
        self.separator = "_" if command in ("pretrain", "finetune") else "-"
        self.parser = Parser(types, prog=self.prog, description=description)

    def parse(self, argv: list[str]) -> tuple:
        """Instances of the dataclasses from `argv`, or from the JSON/YAML file that `argv` holds alone."""
        if len(argv) == 1 and argv[0].endswith(ARGUMENT_FILES):
            return self.parse_file(argv[0])
        *parsed, unknown = self.parser.parse_args_into_dataclasses(args=argv, return_remaining_strings=True)
        if unknown:
            self.parser.error(f"unrecognized arguments: {' '.join(unknown)}")
        return tuple(parsed)

    def parse_file(self, path: str) -> tuple:
        """The dataclasses from one JSON or YAML file of `{field: value}` (positional fields included)."""
        file = Path(path).expanduser()
        if not file.is_file():
            raise MissingFileError(f"no such file: {path} (the arguments of {self.prog}, as JSON or YAML)")
        import yaml

        try:
            values = json.loads(file.read_text()) if file.suffix == ".json" else yaml.safe_load(file.read_text())
        except (ValueError, yaml.YAMLError) as error:
            raise InvalidFileError(f"{path} is not valid {file.suffix[1:].upper()}: {one_line(error)}") from error
        if not isinstance(values, dict):
            self.parser.error(f"{path} must hold a mapping of argument name -> value, got {type(values).__name__}")
        fields = [field for dtype in self.types for field in dataclasses.fields(dtype) if field.init]
        unknown = sorted(set(values) - {field.name for field in fields})
        missing = [self.flag(field.name) for field in fields if _required(field) and field.name not in values]
        if unknown or missing:
            problem = f"unknown arguments {', '.join(unknown)}" if unknown else f"no {', '.join(missing)}"
            self.parser.error(f"{path}: {problem} (the keys are the argument names of `{self.prog} -h`)")
        return tuple(self.parser.parse_dict(values))

    def flag(self, name: str) -> str | None:
        """How the command line names the field `name`: its metavar when positional, else its first flag; None for a
        name that is not one of its fields."""
        for dtype in self.types:
            for field in dataclasses.fields(dtype):
                if field.name == name:
                    if field.metadata.get("positional"):
                        return field.metadata["metavar"]
                    aliases = field.metadata.get("aliases") or [f"--{name.replace('_', self.separator)}"]
                    return aliases[0] if isinstance(aliases, list) else aliases
        return None


def _required(field: dataclasses.Field) -> bool:
    return field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING


def _convert():
    from .convert import ConvertArguments, convert_checkpoint

    def run(args: ConvertArguments) -> None:
        model = convert_checkpoint(args)
        print(f"Converted {args.source} ({model.num_parameters() / 1e6:.2f}M parameters) to {args.output_dir}")

    return (ConvertArguments,), run


def _prepare():
    from .data.prepare import PRESET_PATCH_SIZE, PrepareArguments, padding_report, prepare_dataset

    def run(args: PrepareArguments) -> None:
        if args.patch_size is None and args.num_timepoints % PRESET_PATCH_SIZE:
            warnings.warn(
                f"--num-timepoints {args.num_timepoints} is not a multiple of {PRESET_PATCH_SIZE}, the patch size of "
                "the brainlm presets: pretraining them on this dataset will be refused (pass --patch-size with your "
                "model's patch size to check against it).",
                stacklevel=2,
            )
        summary = prepare_dataset(args)
        if args.part is not None:
            print(f"part {summary['part']}: {summary['recordings']} recordings in {summary['file']}")
            return
        for split, numbers in summary["splits"].items():
            counts = f"{numbers['recordings']} recordings, {numbers['subjects']} subjects"
            print(f"{split}: {counts}, {numbers['shards']} shards")
        print(f"left out (shorter than {args.num_timepoints} timepoints): {len(summary['too_short'])}")
        if summary["padded"]:
            lengths = [entry.get("num_timepoints_resampled", entry["num_timepoints"]) for entry in summary["padded"]]
            report = padding_report(lengths, args.num_timepoints)
            print(f"kept to be padded (shorter than {args.num_timepoints} timepoints): {report}")

    return (PrepareArguments,), run


def _pretrain():
    from .training.pretraining import PretrainingArguments, pretrain

    def run(args: PretrainingArguments) -> None:
        _check_pretraining(args)
        metrics = pretrain(args)
        if metrics:
            print(json.dumps(metrics, indent=2))

    return (PretrainingArguments,), run


def _finetune():
    from transformers import TrainingArguments

    from .configuration_brainlm import PRESETS
    from .data import PreparedDataset
    from .folders import check_output_folder
    from .training.checkpoints import check_model_path
    from .training.finetuning import FinetuningArguments, finetune

    def run(args: FinetuningArguments, training_args: TrainingArguments) -> None:
        check_model_path(args.model, "--model", presets=PRESETS)
        PreparedDataset(args.dataset)  # an error that names the folder before any work
        check_output_folder(training_args.output_dir, "--output_dir")
        print(json.dumps(finetune(args, training_args), indent=2))

    return (FinetuningArguments, TrainingArguments), run


def _check_pretraining(args) -> None:
    """What `brainlm pretrain` can check before starting: the model, the dataset (its shards, its processor, and
    coordinates for a region-window model) and the output folder."""
    from .configuration_brainlm import PRESETS, BrainLMConfig
    from .data import PreparedDataset
    from .errors import InvalidInputError, MissingFileError
    from .folders import check_output_folder
    from .modeling_brainlm import layout_for
    from .training.checkpoints import check_model_path

    check_model_path(args.model, "--model", presets=PRESETS, config_file=True)
    dataset = PreparedDataset(args.dataset)
    if dataset.commit:  # a Hub dataset, pinned to the commit its revision names now: the run reads that commit
        args.dataset = dataset.path
    if not dataset.shards("train"):
        raise MissingFileError(f"{args.dataset} has no train/ split to pretrain on (--dataset).")
    if dataset.processor.coordinates is None:
        if args.model in PRESETS:
            config = BrainLMConfig.from_preset(args.model)
        elif args.model.endswith(".json"):
            config = BrainLMConfig.from_json_file(args.model)
        else:
            config = BrainLMConfig.from_pretrained(args.model)
        if layout_for(config).uses_coordinates:
            raise InvalidInputError(
                f"{args.dataset} has no region coordinates, which a region-window model ({args.model}) embeds: "
                "prepare it again with --atlas-coordinates FILE (label x y z) or --atlas."
            )
    check_output_folder(args.output_dir, "--output_dir")


def _embed():
    from .analysis.recording_embeddings import EMBEDDING_SUFFIXES, EmbedArguments, embed_cohort

    def run(args: EmbedArguments) -> None:
        from .folders import check_output_file
        from .training.checkpoints import check_model_path

        check_model_path(args.model, "MODEL")
        if args.processor:
            check_model_path(args.processor, "--processor")
        check_output_file(args.output, "--output", EMBEDDING_SUFFIXES)
        embed_cohort(args)

    return (EmbedArguments,), run


def _attention():
    from .analysis.attention_report import AttentionArguments, report_attention

    def run(args: AttentionArguments) -> None:
        from .folders import check_output_folder
        from .training.checkpoints import check_model_path

        check_model_path(args.checkpoint, "CHECKPOINT")
        check_output_folder(args.output_dir, "OUT")
        report = report_attention(args)
        if "network_scores" in report:
            ranked = sorted(zip(report["network_names"], report["network_scores"], strict=True), key=lambda x: -x[1])
            print("networks: " + ", ".join(f"{name} {score:.4f}" for name, score in ranked))
        print(f"Wrote region_scores.csv, attention.json and {len(report['figures'])} figures to {args.output_dir}")

    return (AttentionArguments,), run


def _publish():
    from .publish import PublishArguments, publish

    def run(args: PublishArguments) -> None:
        where = publish(args)
        print(f"Wrote the release of {args.source} to {where}" if args.output_dir else f"Published to {where}")

    return (PublishArguments,), run


# command -> (one line of help, a function returning its argument dataclasses and the function that runs it)
COMMANDS = {
    "convert": (
        "convert an original BrainLM checkpoint (13M, 111M, 650M families) into a brainlm_hf folder",
        _convert,
    ),
    "prepare": ("turn NIfTI images or parcel tables into Parquet shards with a fitted processor", _prepare),
    "pretrain": ("pretrain with Accelerate on prepared shards", _pretrain),
    "finetune": ("fine-tune for phenotype columns with Trainer", _finetune),
    "embed": (
        "per-recording embeddings (no masking; windows of each recording pooled and averaged, or all tokens)",
        _embed,
    ),
    "attention": ("CLS attention per region and network of a checkpoint on recordings, with figures", _attention),
    "publish": ("the Hub release of a checkpoint: weights, remote code, processor, pipeline, model card", _publish),
}


if __name__ == "__main__":
    sys.exit(main())
