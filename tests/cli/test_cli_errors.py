"""Every user error of the `brainlm` command: exit code 2, one line `brainlm <command>: error: ...` that names the
file or option at fault, and no traceback.

The cases come from a careless user's mistakes: outputs that already hold files or are files, paths that do not
exist, step checkpoints given as models, files of the wrong kind, and values that cannot be used. They run in-process
through `brainlm_hf.cli.main(argv)` in one module fixture; a few run as real subprocesses (slow) to check the
console script's exit codes end to end.
"""

import contextlib
import errno
import io
import json
import os
import shutil
import subprocess
import sys
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from unittest import mock

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import torch

import brainlm_hf
from brainlm_hf import BrainLMConfig, BrainLMFeatureExtractor, BrainLMForMaskedSignalModeling
from brainlm_hf.cli import main
from brainlm_hf.data import prepare_dataset
from brainlm_hf.data.prepare import split_subjects

from ..conftest import reference_bytes, reference_file

SOURCE = str(Path(brainlm_hf.__file__).resolve().parents[1])  # the code under test, for PYTHONPATH
REGIONS, LENGTH, WINDOW = 5, 40, 20
SUBJECTS = [f"{i:02d}" for i in range(1, 7)]
FRACTIONS = {"train": 4 / 6, "validation": 1 / 6, "test": 1 / 6}


@contextlib.contextmanager
def read_only_folder(read_only: Path):
    """Simulates a read-only folder also for root (where chmod does not stop writes): `os.mkdir` below it fails."""
    real_mkdir, prefix = os.mkdir, os.path.abspath(read_only) + os.sep

    def mkdir(path, *args, **kwargs):
        if os.path.abspath(os.fspath(path)).startswith(prefix):
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), os.fspath(path))
        return real_mkdir(path, *args, **kwargs)

    with mock.patch("os.mkdir", mkdir):
        yield


@dataclass
class Case:
    """One mistake: `argv` (formatted with the workspace `w`), the texts its error line must hold."""

    name: str
    argv: list[str]
    names: list[str]  # the file(s) or option(s) the message must name (formatted with `w`)
    read_only: bool = False  # run with `{w}/read_only` as a read-only folder (`read_only_folder`)
    also: list[str] = field(default_factory=list)  # further texts the message must hold (the fix)


PRETRAIN = ["pretrain", "--dataset", "{w}/prepared", "--output_dir", "{w}/runs/new", "--max_steps", "1"]
PRETRAIN += ["--per_device_train_batch_size", "2", "--eval_windows", "2", "--eval_steps", "0", "--logging_steps", "1"]
FINETUNE = ["finetune", "--dataset", "{w}/prepared", "--model", "{w}/model", "--output_dir", "{w}/runs/ft"]
FINETUNE += ["--max_steps", "1", "--report_to", "none", "--per_device_train_batch_size", "2"]
PREPARE = ["prepare", "--num-timepoints", str(WINDOW)]
EMBED = ["embed", "{w}/model", "{w}/tables", "--output", "{w}/runs/embeddings.parquet", "--quiet"]

CASES = [
    # convert: never destroy the user's files, never name a path the user did not give
    Case("convert-into-non-empty", ["convert", "{w}/original", "{w}/notes"], ["{w}/notes"], also=["--overwrite"]),
    Case("convert-onto-source", ["convert", "{w}/original_2", "{w}/original_2"], ["{w}/original_2"]),
    Case("convert-inside-source", ["convert", "{w}/original_3", "{w}/original_3/hf"], ["{w}/original_3/hf"]),
    Case(
        "convert-missing-absolute",
        ["convert", "/nonexistent/ckpt", "{w}/runs/c1"],
        ["no such folder: /nonexistent/ckpt"],
    ),
    Case("convert-missing-relative", ["convert", "./missing_ckpt", "{w}/runs/c2"], ["no such folder: ./missing_ckpt"]),
    Case("convert-no-config", ["convert", "{w}/weights_only", "{w}/runs/c3"], ["{w}/weights_only", "config.json"]),
    Case("convert-bad-config-json", ["convert", "{w}/bad_json", "{w}/runs/c4"], ["{w}/bad_json/config.json"]),
    Case("convert-hub-offline", ["convert", "someone/brainlm", "{w}/runs/c5"], ["someone/brainlm"]),
    Case("convert-output-is-a-file", ["convert", "{w}/original", "{w}/a_file"], ["{w}/a_file"]),
    Case(
        "convert-coordinates-not-a-table",
        ["convert", "{w}/original", "{w}/runs/c6", "--atlas-coordinates", "{w}/recording.dat"],
        ["{w}/recording.dat", "label x y z"],
    ),
    Case(
        "convert-coordinates-missing",
        ["convert", "{w}/original", "{w}/runs/c7", "--atlas-coordinates", "{w}/nowhere.dat"],
        ["{w}/nowhere.dat"],
    ),
    # prepare: never mix runs, name the file at fault
    Case(
        "prepare-into-non-empty",
        [*PREPARE, "{w}/tables", "{w}/prepared_again"],
        ["{w}/prepared_again"],
        also=["--overwrite"],
    ),
    Case(
        "prepare-overwrite-the-working-folder",
        [*PREPARE, "{w}/tables", ".", "--overwrite"],
        ["working folder", "--overwrite"],
    ),
    Case(
        "prepare-overwrite-holds-inputs",
        [*PREPARE, "{w}/tables/sub-01_bold.npy", "{w}/tables", "--overwrite"],
        ["{w}/tables holds the input {w}/tables/sub-01_bold.npy"],
    ),
    Case(
        "prepare-input-missing",
        [*PREPARE, "{w}/tables", "{w}/tabels", "{w}/runs/p0"],
        ["no such file or folder: {w}/tabels"],
    ),
    Case("prepare-output-is-a-file", [*PREPARE, "{w}/tables", "{w}/a_file"], ["{w}/a_file"]),
    Case("prepare-read-only", [*PREPARE, "{w}/tables", "{w}/read_only/out"], ["{w}/read_only"], read_only=True),
    Case("prepare-same-id-twice", [*PREPARE, "{w}/dup", "{w}/runs/p1"], ["{w}/dup/a/rest.csv", "{w}/dup/a/rest.npy"]),
    Case(
        "prepare-phenotype-column-repetition_time",
        [*PREPARE, "{w}/tables", "{w}/runs/p2", "--phenotypes", "{w}/pheno_tr.csv"],
        ["{w}/pheno_tr.csv", "repetition_time"],
    ),
    Case(
        "prepare-phenotype-column-session",
        [*PREPARE, "{w}/tables", "{w}/runs/p3", "--phenotypes", "{w}/pheno_session.csv"],
        ["{w}/pheno_session.csv", "session"],
    ),
    Case(
        "prepare-phenotype-without-key",
        [*PREPARE, "{w}/tables", "{w}/runs/p4", "--phenotypes", "{w}/pheno_nokey.csv"],
        ["{w}/pheno_nokey.csv", "subject"],
    ),
    Case(
        "prepare-phenotypes-missing",
        [*PREPARE, "{w}/tables", "{w}/runs/p5", "--phenotypes", "{w}/nowhere.csv"],
        ["{w}/nowhere.csv"],
    ),
    Case(
        "prepare-shard-multiple-0",
        [*PREPARE, "{w}/tables", "{w}/runs/p6", "--shard-multiple", "0"],
        ["--shard-multiple"],
    ),
    Case(
        "prepare-num-timepoints-0",
        ["prepare", "{w}/tables", "{w}/runs/p7", "--num-timepoints", "0"],
        ["--num-timepoints"],
    ),
    Case("prepare-tr-negative", [*PREPARE, "{w}/tables", "{w}/runs/p8", "--tr", "-1"], ["--tr"]),
    Case("prepare-split-all-zero", [*PREPARE, "{w}/tables", "{w}/runs/p9", "--split", "0", "0", "0"], ["--split"]),
    Case(
        "prepare-3d-image",
        [*PREPARE, "{w}/nifti/image_3d.nii.gz", "{w}/runs/p10", "--atlas", "{w}/nifti/atlas.nii.gz"],
        ["{w}/nifti/image_3d.nii.gz"],
    ),
    Case(
        "prepare-scanner-space",
        [*PREPARE, "{w}/nifti/scanner.nii.gz", "{w}/runs/p11", "--atlas", "{w}/nifti/atlas.nii.gz"],
        ["{w}/nifti/scanner.nii.gz"],
    ),
    Case(
        "prepare-missing-atlas-labels",
        [*PREPARE, "{w}/nifti/partial.nii.gz", "{w}/runs/p12", "--atlas", "{w}/nifti/atlas.nii.gz"],
        ["{w}/nifti/partial.nii.gz"],
    ),
    Case(
        "prepare-truncated-nii-gz",
        [*PREPARE, "{w}/nifti/truncated.nii.gz", "{w}/runs/p13", "--atlas", "{w}/nifti/atlas.nii.gz"],
        ["{w}/nifti/truncated.nii.gz"],
    ),
    Case(
        "prepare-atlas-missing",
        [*PREPARE, "{w}/nifti/good.nii.gz", "{w}/runs/p14", "--atlas", "{w}/nifti/nowhere.nii.gz"],
        ["{w}/nifti/nowhere.nii.gz"],
    ),
    Case("prepare-csv-header-row", [*PREPARE, "{w}/header", "{w}/runs/p15"], ["{w}/header/sub-09_bold.csv"]),
    Case("prepare-other-region-count", [*PREPARE, "{w}/mixed", "{w}/runs/p16"], ["{w}/mixed/sub-09_bold.npy"]),
    Case(
        "prepare-coordinates-not-a-table",
        [*PREPARE, "{w}/tables", "{w}/runs/p17", "--atlas-coordinates", "{w}/recording.dat"],
        ["{w}/recording.dat", "label x y z"],
    ),
    Case(
        "prepare-coordinates-other-region-count",
        [*PREPARE, "{w}/tables", "{w}/runs/p18", "--atlas-coordinates", "{w}/coords_7.dat"],
        ["{w}/coords_7.dat", "7", "5"],
    ),
    Case(
        "prepare-zscore-constant-region",
        [*PREPARE, "{w}/constant", "{w}/runs/p19", "--normalization", "zscore"],
        ["{w}/constant/sub-01_bold.npy", "[2]"],
    ),
    Case(
        "prepare-robust-zero-iqr-region",
        [*PREPARE, "{w}/constant", "{w}/runs/p20", "--split", "1", "0", "0"],
        ["[2]", "--iqr-epsilon"],
    ),
    # embed
    Case(
        "embed-model-without-processor",
        ["embed", "{w}/model_only", "{w}/tables", "--output", "{w}/runs/e1.npz"],
        ["{w}/model_only", "preprocessor_config.json", "--processor"],
    ),  # fmt: skip
    Case(
        "embed-model-missing",
        ["embed", "/nonexistent/model", "{w}/tables", "--output", "{w}/runs/e2.npz"],
        ["no such folder: /nonexistent/model"],
    ),  # fmt: skip
    Case(
        "embed-step-checkpoint",
        ["embed", "{w}/run/checkpoints/checkpoint_100", "{w}/tables", "--output", "{w}/runs/e3.npz"],
        ["{w}/run/checkpoints/checkpoint_100", "final", "resume_from_checkpoint="],
    ),  # fmt: skip
    Case(
        "embed-same-id-twice",
        ["embed", "{w}/model", "{w}/dup", "--output", "{w}/runs/e4.npz"],
        ["{w}/dup/a/rest.csv", "{w}/dup/a/rest.npy"],
    ),  # fmt: skip
    Case(
        "embed-output-suffix",
        ["embed", "{w}/model", "{w}/tables", "--output", "{w}/runs/e5.txt"],
        ["--output", ".txt"],
    ),
    Case(
        "embed-output-under-a-file",
        ["embed", "{w}/model", "{w}/tables", "--output", "{w}/a_file/e.npz"],
        ["{w}/a_file"],
    ),  # fmt: skip
    Case(
        "embed-zscore-constant-region",
        ["embed", "{w}/model_zscore", "{w}/constant", "--output", "{w}/runs/e6.npz"],
        ["{w}/constant/sub-01_bold.npy", "[2]"],
    ),  # fmt: skip
    Case("embed-batch-size-0", [*EMBED, "--batch-size", "0"], ["--batch-size"]),
    Case(
        "embed-atlas-mismatch",
        ["embed", "{w}/model_a424", "{w}/prepared/test", "--output", "{w}/runs/e7.npz"],
        ["A424", "toy", "{w}/model_a424"],
    ),  # fmt: skip
    # attention
    Case(
        "attention-missing",
        ["attention", "/nonexistent/model", "{w}/tables", "{w}/runs/a1"],
        ["no such folder: /nonexistent/model"],
    ),  # fmt: skip
    Case(
        "attention-without-processor",
        ["attention", "{w}/model_only", "{w}/tables", "{w}/runs/a2"],
        ["{w}/model_only", "preprocessor_config.json"],
    ),  # fmt: skip
    Case("attention-stride-0", ["attention", "{w}/model", "{w}/tables", "{w}/runs/a3", "--stride", "0"], ["--stride"]),
    # pretrain
    Case("pretrain-learning-rate-nan", [*PRETRAIN, "--learning_rate", "nan"], ["--learning_rate"]),
    Case("pretrain-learning-rate-negative", [*PRETRAIN, "--learning_rate", "-1"], ["--learning_rate"]),
    Case(
        "pretrain-dataset-missing",
        ["pretrain", "--dataset", "/nonexistent/data", "--output_dir", "{w}/runs/t1"],
        ["no such folder: /nonexistent/data"],
    ),  # fmt: skip
    Case(
        "pretrain-dataset-neither-folder-nor-hub-dataset",
        ["pretrain", "--dataset", "me/no-such-data", "--output_dir", "{w}/runs/t1"],
        ["no such folder: me/no-such-data, and the Hub cannot be asked for the dataset repository me/no-such-data"],
    ),  # fmt: skip
    Case(
        "pretrain-dataset-is-a-file",
        ["pretrain", "--dataset", "{w}/a_file", "--output_dir", "{w}/runs/t2"],
        ["{w}/a_file"],
    ),  # fmt: skip
    Case(
        "pretrain-not-a-prepared-dataset",
        ["pretrain", "--dataset", "{w}/tables", "--output_dir", "{w}/runs/t3"],
        ["{w}/tables", "brainlm prepare"],
    ),  # fmt: skip
    Case(
        "pretrain-model-missing", [*PRETRAIN, "--model", "/nonexistent/model"], ["no such folder: /nonexistent/model"]
    ),
    Case(
        "pretrain-model-step-checkpoint",
        [*PRETRAIN, "--model", "{w}/run/checkpoints/checkpoint_100"],
        ["{w}/run/checkpoints/checkpoint_100", "final", "resume_from_checkpoint="],
    ),  # fmt: skip
    Case("pretrain-output-is-a-file", [*PRETRAIN, "--output_dir", "{w}/a_file"], ["{w}/a_file"]),
    Case("pretrain-output-under-a-file", [*PRETRAIN, "--output_dir", "{w}/a_file/run"], ["{w}/a_file"]),
    Case(
        "pretrain-read-only-output",
        [*PRETRAIN, "--output_dir", "{w}/read_only/run"],
        ["{w}/read_only"],
        read_only=True,
    ),  # fmt: skip
    Case(
        "pretrain-shard-missing",
        [*PRETRAIN, "--dataset", "{w}/prepared_missing_shard"],
        ["shard-00001-of-00002.parquet", "prepare_summary.json"],
    ),  # fmt: skip
    Case(
        "pretrain-leftover-shard",
        [*PRETRAIN, "--dataset", "{w}/prepared_extra_shard"],
        ["shard-00000-of-00004.parquet", "prepare_summary.json"],
    ),  # fmt: skip
    Case(
        "pretrain-zero-iqr-processor",
        [*PRETRAIN, "--dataset", "{w}/prepared_zero_iqr"],
        ["{w}/prepared_zero_iqr", "iqr", "[3]"],
    ),  # fmt: skip
    Case("pretrain-missing-argument", ["pretrain", "--output_dir", "{w}/runs/t4"], ["--dataset"]),
    # finetune
    Case("finetune-missing-label-column", [*FINETUNE, "--label_columns", "nope"], ["nope", "{w}/prepared"]),
    Case(
        "finetune-unseen-class",
        [*FINETUNE, "--label_columns", "group", "--problem_type", "single_label_classification"],
        ["group", "'c'", "{w}/prepared"],
    ),  # fmt: skip
    Case(
        "finetune-model-missing",
        [*FINETUNE[:-4], "--model", "/nonexistent/model", "--label_columns", "score"],
        ["no such folder: /nonexistent/model"],
    ),  # fmt: skip
    Case(
        "finetune-model-step-checkpoint",
        [*FINETUNE, "--model", "{w}/run/checkpoints/checkpoint_100", "--label_columns", "score"],
        ["{w}/run/checkpoints/checkpoint_100", "final"],
    ),  # fmt: skip
    Case(
        "finetune-dataset-missing",
        [*FINETUNE, "--dataset", "/nonexistent/data", "--label_columns", "score"],
        ["no such folder: /nonexistent/data"],
    ),  # fmt: skip
    Case(
        "finetune-output-is-a-file",
        [*FINETUNE, "--output_dir", "{w}/a_file", "--label_columns", "score"],
        ["{w}/a_file"],
    ),  # fmt: skip
]


CASES_BY_NAME = {case.name: case for case in CASES}


def tiny_config() -> BrainLMConfig:
    return BrainLMConfig(
        patch_size=5, hidden_size=32, num_hidden_layers=1, num_attention_heads=4, intermediate_size=64,
        decoder_hidden_size=16, decoder_num_hidden_layers=1, decoder_num_attention_heads=2,
        decoder_intermediate_size=32,
    )  # fmt: skip


def nifti(data, affine, code=4, zooms=None):
    image = nib.Nifti1Image(np.asarray(data, dtype=np.float32), affine)
    image.header.set_sform(affine, code=code)
    image.header.set_qform(affine, code=code)
    if zooms:
        image.header.set_zooms(zooms)
    return image


def build_workspace(w: Path) -> None:
    """Every file the cases read (only public API that predates the fixes, so the cases also run on old code)."""
    rng = np.random.default_rng(0)
    (w / "runs").mkdir()
    (w / "tables").mkdir()
    for subject in SUBJECTS:
        np.save(w / "tables" / f"sub-{subject}_bold.npy", rng.normal(size=(LENGTH, REGIONS)).astype(np.float32))
    assignment = split_subjects(SUBJECTS, FRACTIONS, 0)
    train = [s for s in SUBJECTS if assignment[s] == "train"]
    groups = {subject: "ab"[index % 2] for index, subject in enumerate(train)}  # validation "a", test "c": unseen
    groups.update({s: "c" if assignment[s] == "test" else "a" for s in SUBJECTS if s not in groups})
    pd.DataFrame({"subject": SUBJECTS, "group": [groups[s] for s in SUBJECTS], "score": rng.normal(size=6)}).to_csv(
        w / "phenotypes.csv", index=False
    )
    coordinates = rng.normal(size=(REGIONS, 3)) * 50
    common = dict(num_timepoints=WINDOW, splits=FRACTIONS, shard_multiple=2, coordinates=coordinates)
    prepare_dataset(w / "tables", w / "prepared", phenotypes=w / "phenotypes.csv", atlas_name="toy", **common)
    assert len(list((w / "prepared" / "train").glob("*.parquet"))) == 2
    shutil.copytree(w / "prepared", w / "prepared_again")
    shutil.copytree(w / "prepared", w / "prepared_missing_shard")
    (w / "prepared_missing_shard" / "train" / "shard-00001-of-00002.parquet").unlink()
    shutil.copytree(w / "prepared", w / "prepared_extra_shard")  # an earlier run's shard left beside these
    shutil.copy(
        w / "prepared" / "train" / "shard-00000-of-00002.parquet",
        w / "prepared_extra_shard" / "train" / "shard-00000-of-00004.parquet",
    )
    shutil.copytree(w / "prepared", w / "prepared_zero_iqr")
    config_file = w / "prepared_zero_iqr" / "preprocessor_config.json"
    settings = json.loads(config_file.read_text())
    settings["iqr"][3] = 0.0  # tampered
    config_file.write_text(json.dumps(settings))

    torch.manual_seed(0)
    model = BrainLMForMaskedSignalModeling(tiny_config())
    processor = BrainLMFeatureExtractor.from_pretrained(w / "prepared")
    for name in ("model", "model_only", "model_zscore", "model_a424"):
        model.save_pretrained(w / name)
    processor.save_pretrained(w / "model")
    zscore = processor.to_dict()
    zscore.update(normalization="zscore", median=None, iqr=None)
    (w / "model_zscore" / "preprocessor_config.json").write_text(json.dumps(zscore))
    a424 = processor.to_dict()
    a424["atlas"] = "A424"
    (w / "model_a424" / "preprocessor_config.json").write_text(json.dumps(a424))
    step = w / "run" / "checkpoints" / "checkpoint_100"  # what save_state writes: weights, no config.json
    step.mkdir(parents=True)
    shutil.copy(w / "model" / "model.safetensors", step / "model.safetensors")
    (step / "optimizer.bin").write_bytes(b"")
    (step / "random_states_0.pkl").write_bytes(b"")

    (w / "original").mkdir()
    shutil.copy(reference_file("brainlm_small", "mask_ratio_0.20", "config.json"), w / "original" / "config.json")
    (w / "original" / "model.safetensors").write_bytes(reference_bytes("brainlm_small", "model.safetensors"))
    for copy in ("original_2", "original_3"):
        shutil.copytree(w / "original", w / copy)
    (w / "weights_only").mkdir()
    shutil.copy(w / "original" / "model.safetensors", w / "weights_only" / "model.safetensors")
    shutil.copytree(w / "original", w / "bad_json")
    (w / "bad_json" / "config.json").write_text("{not json")
    (w / "notes").mkdir()
    (w / "notes" / "README.md").write_text("my notes\n")
    (w / "notes" / "config.json").write_text("{}")
    (w / "a_file").write_text("not a folder\n")
    (w / "read_only").mkdir()
    np.savetxt(w / "recording.dat", rng.normal(size=(30, 424)))  # a recording, not a coordinate table
    np.savetxt(w / "coords_7.dat", np.column_stack([np.arange(1, 8), rng.normal(size=(7, 3))]))

    (w / "dup" / "a").mkdir(parents=True)  # two files of one recording id
    series = rng.normal(size=(LENGTH, REGIONS)).astype(np.float32)
    np.save(w / "dup" / "a" / "rest.npy", series)
    np.savetxt(w / "dup" / "a" / "rest.csv", series, delimiter=",")
    pd.DataFrame({"subject": SUBJECTS, "repetition_time": 99.0}).to_csv(w / "pheno_tr.csv", index=False)
    pd.DataFrame({"subject": SUBJECTS, "session": "x"}).to_csv(w / "pheno_session.csv", index=False)
    pd.DataFrame({"participant": SUBJECTS, "age": 30}).to_csv(w / "pheno_nokey.csv", index=False)
    (w / "header").mkdir()
    np.save(w / "header" / "sub-01_bold.npy", series)
    np.savetxt(w / "header" / "sub-09_bold.csv", series, delimiter=",", header="r1,r2,r3,r4,r5", comments="")
    (w / "mixed").mkdir()
    np.save(w / "mixed" / "sub-01_bold.npy", series)
    np.save(w / "mixed" / "sub-02_bold.npy", series)
    np.save(w / "mixed" / "sub-09_bold.npy", rng.normal(size=(LENGTH, REGIONS + 1)).astype(np.float32))
    (w / "constant").mkdir()
    np.save(w / "constant" / "sub-01_bold.npy", series)
    constant = rng.normal(size=(LENGTH, REGIONS)).astype(np.float32)
    constant[:, 2] = 0.0  # an empty parcel
    np.save(w / "constant" / "sub-09_bold.npy", constant)
    one = series.copy()
    one[:, 2] = 0.0
    np.save(w / "constant" / "sub-01_bold.npy", one)  # the region is empty in every recording (zero IQR)

    folder = w / "nifti"
    folder.mkdir()
    labels = np.zeros((6, 6, 6), dtype=np.int16)
    labels[:3], labels[3:, :3], labels[3:, 3:] = 1, 2, 3
    affine = np.diag([3.0, 3.0, 3.0, 1.0])
    nib.save(nib.Nifti1Image(labels, affine), folder / "atlas.nii.gz")
    bold = rng.normal(size=(6, 6, 6, 30))
    nib.save(nifti(bold, affine, zooms=(3.0, 3.0, 3.0, 1.5)), folder / "good.nii.gz")
    nib.save(nifti(bold[..., 0], affine), folder / "image_3d.nii.gz")
    nib.save(nifti(bold, affine, code=1), folder / "scanner.nii.gz")
    nib.save(nifti(bold[:3], affine), folder / "partial.nii.gz")  # covers label 1 only
    data = (folder / "good.nii.gz").read_bytes()
    (folder / "truncated.nii.gz").write_bytes(data[: len(data) // 2])


@dataclass
class Result:
    """What a command left: its exit code and what it printed (a bug's traceback is in `stderr`)."""

    returncode: int
    stdout: str
    stderr: str


def run_case(case: Case, w: Path) -> Result:
    """`main(argv)` in-process in the workspace, as the console script would run it (bugs recorded, not raised)."""
    argv = [part.format(w=w) for part in case.argv]
    out, err = io.StringIO(), io.StringIO()
    read_only = read_only_folder(w / "read_only") if case.read_only else contextlib.nullcontext()
    with contextlib.chdir(w), contextlib.redirect_stdout(out), contextlib.redirect_stderr(err), read_only:
        try:
            code = main(argv)
        except Exception:  # noqa: BLE001 - a bug: its traceback is what the test shows
            traceback.print_exc(file=err)
            code = 1
    return Result(code, out.getvalue(), err.getvalue())


def run_subprocess(argv: list[str], cwd: Path, **env) -> subprocess.CompletedProcess:
    """`python -m brainlm_hf.cli ARGV` in a fresh process."""
    env = {**os.environ, "PYTHONPATH": SOURCE, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", **env}
    if "BRAINLM_DEBUG" not in env or not env["BRAINLM_DEBUG"]:
        env.pop("BRAINLM_DEBUG", None)
    command = [sys.executable, "-m", "brainlm_hf.cli", *argv]
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> Path:
    w = tmp_path_factory.mktemp("careless_user")
    build_workspace(w)
    return w


@pytest.fixture(scope="module")
def results(workspace) -> dict[str, Result]:
    return {case.name: run_case(case, workspace) for case in CASES}


def error_line(result, command: str) -> str:
    """The one `brainlm <command>: error:` line of stderr, after checking there is exactly one and no traceback."""
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    lines = [line for line in result.stderr.splitlines() if line.startswith(f"brainlm {command}: error: ")]
    assert len(lines) == 1, result.stderr[-3000:]
    assert result.stderr.rstrip().endswith(lines[0]), result.stderr[-3000:]  # the last thing printed
    return lines[0]


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_user_error_exits_2_with_one_line_naming_the_file(case, results, workspace):
    result = results[case.name]
    assert result.returncode == 2, f"exit {result.returncode}\n{result.stdout[-1500:]}\n{result.stderr[-3000:]}"
    line = error_line(result, case.argv[0])
    for text in case.names + case.also:
        assert text.format(w=workspace) in line, line
    assert "/nonexistent/config.json" not in line  # never a path the user did not give


def test_nothing_was_overwritten_or_mixed(results, workspace):
    """The refused cases left the user's folders as they were."""
    assert (workspace / "notes" / "README.md").read_text() == "my notes\n"
    assert (workspace / "notes" / "config.json").read_text() == "{}"
    for source in ("original", "original_2", "original_3"):
        assert sorted(p.name for p in (workspace / source).iterdir()) == ["config.json", "model.safetensors"]
    train = sorted(p.name for p in (workspace / "prepared_again" / "train").iterdir())
    assert train == ["shard-00000-of-00002.parquet", "shard-00001-of-00002.parquet"]
    assert (workspace / "a_file").read_text() == "not a folder\n"
    train = sorted(p.name for p in (workspace / "prepared" / "train").iterdir())
    assert train == ["shard-00000-of-00002.parquet", "shard-00001-of-00002.parquet"]
    assert (workspace / "tables").is_dir() and len(list((workspace / "tables").iterdir())) == len(SUBJECTS)
    left = [p.name for pattern in (".*.partial-*", ".*.replaced-*") for p in workspace.rglob(pattern)]
    assert not left, f"temporary folders were left behind: {left}"


def test_prepare_of_tables_without_coordinates_warns_in_one_line(workspace):
    """A warning, not an error: the dataset is made, and the user learns that pretraining will need coordinates."""
    argv = [*PREPARE, "{w}/tables", "{w}/runs/warned", "--split", "1", "0", "0", "--shard-multiple", "1"]
    case = Case("prepare-warning", argv, [])  # one shard multiple that 6 recordings serve: no warning about it
    result = run_case(case, workspace)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    (line,) = [line for line in result.stderr.splitlines() if line.startswith("brainlm prepare: warning: ")]
    assert "no region coordinates" in line and "--atlas-coordinates" in line and str(workspace / "runs/warned") in line


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes through permissions: read_only_folder cases cover it")
def test_a_read_only_folder_by_its_permissions(workspace, tmp_path):
    read_only = tmp_path / "locked"
    read_only.mkdir()
    read_only.chmod(0o555)
    try:
        case = Case("read-only", [*PREPARE, "{w}/tables", str(read_only / "out")], [])
        result = run_case(case, workspace)
    finally:
        read_only.chmod(0o755)
    assert result.returncode == 2 and str(read_only) in error_line(result, "prepare")


def test_debug_shows_the_traceback(workspace, monkeypatch, capsys):
    """BRAINLM_DEBUG=1 keeps the traceback of a user error, for bug reports."""
    monkeypatch.setenv("BRAINLM_DEBUG", "1")
    argv = ["embed", str(workspace / "model"), str(workspace / "tables"), "--output", str(workspace / "runs/x.txt")]
    assert main(argv) == 2
    assert "Traceback" in capsys.readouterr().err


def test_a_bug_keeps_its_traceback_and_is_not_exit_2(workspace, monkeypatch):
    """An exception that is not a user error (here a ValueError from inside numpy) propagates from `main`."""

    def broken(*args, **kwargs):
        raise ValueError("operands could not be broadcast together")

    monkeypatch.setattr("brainlm_hf.data.prepare.split_subjects", broken)
    with pytest.raises(ValueError, match="broadcast"):
        main([*PREPARE, str(workspace / "tables"), str(workspace / "runs" / "bug")])


@pytest.mark.slow
def test_console_script_user_error_exits_2_in_one_line(workspace):
    """The real process: exit status 2 and one line, for a value (argparse-level) and a path (while running)."""
    for case in (CASES_BY_NAME["embed-batch-size-0"], CASES_BY_NAME["prepare-input-missing"]):
        result = run_subprocess([part.format(w=workspace) for part in case.argv], workspace)
        assert result.returncode == 2, result.stderr[-3000:]
        line = error_line(result, case.argv[0])
        assert all(text.format(w=workspace) in line for text in case.names), line


@pytest.mark.slow
def test_console_script_success_exits_0(workspace):
    """A successful command exits with status 0 (nothing of its result reaches `sys.exit`)."""
    argv = [*FINETUNE, "--label_columns", "score", "--output_dir", str(workspace / "runs" / "ft_process")]
    result = run_subprocess([part.format(w=workspace) for part in argv], workspace)
    assert result.returncode == 0, result.stderr[-3000:]
    assert json.loads(result.stdout[result.stdout.rindex("{\n") :])  # the metrics, printed last on stdout
