"""The `brainlm` command line as one configuration surface: every command reads its arguments in both flag spellings
(`--shard-multiple`, `--shard_multiple`) or from one JSON or YAML file, and a successful run returns exit code 0."""

import dataclasses
import json

import numpy as np
import pytest
import yaml

from brainlm_hf.cli import COMMANDS, command_parser, main

from .test_cli_errors import build_workspace, tiny_config

# each command's arguments by field name ({w}: the workspace, {o}: a new output folder of the test)
SPECS = {
    "convert": {
        "source": "{w}/original",
        "output_dir": "{o}/converted",
        "atlas_coordinates": "{w}/coords_424.dat",
        "overwrite": True,
    },
    "publish": {
        "source": "{w}/original",
        "repo_id": "me/brainlm-test",
        "output_dir": "{o}/release",
        "atlas_coordinates": "{w}/coords_424.dat",
        "accept_weights_license": True,
    },
    "prepare": {
        "inputs": ["{w}/tables"],
        "output_dir": "{o}/prepared",
        "num_timepoints": 20,
        "shard_multiple": 2,
        "splits": [1.0, 0.0, 0.0],
        "coordinates": "{w}/coords_5.dat",
        "short_recordings": "pad",
    },
    "pretrain": {
        "dataset": "{w}/prepared",
        "output_dir": "{o}/run",
        "model": "{w}/tiny.json",
        "max_steps": 1,
        "per_device_train_batch_size": 2,
        "eval_windows": 2,
        "eval_steps": 0,
        "logging_steps": 1,
    },
    "finetune": {
        "dataset": "{w}/prepared",
        "model": "{w}/model",
        "label_columns": ["score"],
        "output_dir": "{o}/finetuned",
        "max_steps": 1,
        "per_device_train_batch_size": 2,
        "report_to": "none",
    },
    "embed": {
        "model": "{w}/model",
        "inputs": ["{w}/tables"],
        "output": "{o}/embeddings.npz",
        "batch_size": 4,
        "window_policy": "non_overlapping",
        "quiet": True,
    },
    "attention": {"checkpoint": "{w}/model", "inputs": ["{w}/tables"], "output_dir": "{o}/attention", "stride": 20},
}
OUTPUTS = {
    "convert": "converted/config.json",
    "prepare": "prepared/prepare_summary.json",
    "pretrain": "run/final/config.json",
    "finetune": "finetuned/config.json",
    "embed": "embeddings.npz",
    "attention": "attention/attention.json",
    "publish": "release/pipeline_brainlm.py",
}


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    w = tmp_path_factory.mktemp("cli")
    build_workspace(w)
    rng = np.random.default_rng(1)
    np.savetxt(w / "coords_424.dat", np.column_stack([np.arange(1, 425), rng.normal(size=(424, 3)) * 50]))
    np.savetxt(w / "coords_5.dat", np.column_stack([np.arange(1, 6), rng.normal(size=(5, 3)) * 50]))
    tiny_config().to_json_file(w / "tiny.json")
    return w


def values(command: str, w, o) -> dict:
    """The arguments of `command` with the folders filled in."""
    fill = lambda value: value.format(w=w, o=o) if isinstance(value, str) else value  # noqa: E731
    return {
        key: [fill(v) for v in value] if isinstance(value, list) else fill(value)
        for key, value in SPECS[command].items()
    }


def command_line(command: str, arguments: dict, separator: str) -> list[str]:
    """`brainlm COMMAND ...` for `arguments`: positional fields bare, in field order; the others as flags whose
    words are joined by `separator`."""
    parser, _ = command_parser(command)
    positional = [f.name for dtype in parser.types for f in dataclasses.fields(dtype) if f.metadata.get("positional")]
    argv = [command]
    for name in positional:
        value = arguments[name]
        argv += value if isinstance(value, list) else [value]
    for name, value in arguments.items():
        if name in positional:
            continue
        argv.append("--" + name.replace("_", separator))
        if value is not True:
            argv += [str(v) for v in value] if isinstance(value, list) else [str(value)]
    return argv


def parsed(command: str, argv: list[str]) -> tuple:
    parser, _ = command_parser(command)
    return parser.parse(argv[1:])


def as_dicts(instances: tuple) -> list[dict]:
    return [{f.name: getattr(x, f.name) for f in dataclasses.fields(x) if f.init} for x in instances]


@pytest.mark.parametrize("command", list(COMMANDS))
def test_both_flag_spellings_give_the_same_arguments(command, workspace, tmp_path):
    arguments = values(command, workspace, tmp_path)
    dashes = parsed(command, command_line(command, arguments, "-"))
    underscores = parsed(command, command_line(command, arguments, "_"))
    assert as_dicts(dashes) == as_dicts(underscores)
    ours = [instance for instance in dashes if type(instance).__module__.startswith("brainlm_hf")]
    given = {key: value for instance in as_dicts(ours) for key, value in instance.items() if key in arguments}
    assert given == {key: arguments[key] for key in given} and given  # the values reached their fields, typed


@pytest.mark.parametrize("suffix", [".json", ".yaml"])
@pytest.mark.parametrize("command", list(COMMANDS))
def test_an_argument_file_gives_the_same_arguments_as_the_command_line(command, suffix, workspace, tmp_path):
    arguments = values(command, workspace, tmp_path)
    file = tmp_path / f"{command}{suffix}"
    file.write_text(json.dumps(arguments) if suffix == ".json" else yaml.safe_dump(arguments))
    from_file = parsed(command, [command, str(file)])
    assert as_dicts(from_file) == as_dicts(parsed(command, command_line(command, arguments, "-")))


@pytest.mark.parametrize("command", list(COMMANDS))
def test_every_command_runs_from_one_file_and_returns_0(command, workspace, tmp_path, capsys):
    """A successful run returns 0 (never its result); the file is JSON for half the commands, YAML for the others."""
    arguments = values(command, workspace, tmp_path)
    json_file = list(COMMANDS).index(command) % 2 == 0
    file = tmp_path / f"{command}.{'json' if json_file else 'yaml'}"
    file.write_text(json.dumps(arguments) if json_file else yaml.safe_dump(arguments))
    assert main([command, str(file)]) == 0, capsys.readouterr().err[-3000:]
    assert (tmp_path / OUTPUTS[command]).is_file()
    assert "error" not in capsys.readouterr().err


def test_an_argument_file_with_an_unknown_or_a_missing_key_is_a_user_error(workspace, tmp_path, capsys):
    arguments = values("prepare", workspace, tmp_path)
    file = tmp_path / "prepare.yaml"
    file.write_text(yaml.safe_dump({**arguments, "shard_multipel": 2}))
    assert main(["prepare", str(file)]) == 2
    assert f"brainlm prepare: error: {file}: unknown arguments shard_multipel" in capsys.readouterr().err
    del arguments["output_dir"]
    file.write_text(yaml.safe_dump(arguments))
    assert main(["prepare", str(file)]) == 2
    assert f"brainlm prepare: error: {file}: no OUT" in capsys.readouterr().err
    assert main(["prepare", str(tmp_path / "nowhere.json")]) == 2
    assert f"no such file: {tmp_path / 'nowhere.json'}" in capsys.readouterr().err
    (tmp_path / "broken.json").write_text('{"inputs": ')
    assert main(["prepare", str(tmp_path / "broken.json")]) == 2
    assert f"brainlm prepare: error: {tmp_path / 'broken.json'} is not valid JSON: " in capsys.readouterr().err


def test_a_value_checked_by_the_dataclass_is_named_by_its_flag(workspace, tmp_path, capsys):
    """`InvalidArgumentError(argument="shard_multiple")` reads `--shard-multiple` on the command line."""
    assert main(["prepare", str(workspace / "tables"), str(tmp_path / "p"), "--shard_multiple", "0"]) == 2
    assert capsys.readouterr().err.strip() == (
        "brainlm prepare: error: --shard-multiple must be a positive integer, got 0."
    )
    assert main(["prepare", str(workspace / "tables"), str(tmp_path / "p"), "--tr", "0"]) == 2
    assert capsys.readouterr().err.strip() == "brainlm prepare: error: --tr must be a positive finite number, got 0.0."


def test_help_is_generated_from_the_fields(capsys):
    assert main(["prepare", "-h"]) == 0
    help = capsys.readouterr().out
    assert "INPUTS" in help and "OUT" in help and "--short-recordings" in help and "{refuse,pad}" in help
    assert "--tr" in help and "fractions of the subjects" in help
