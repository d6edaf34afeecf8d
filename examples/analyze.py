# Copyright 2026 The brainlm_hf authors. Licensed under the Apache License, Version 2.0.
"""Interpretation of the README's main-job model on held-out HCP subjects: attention, reconstruction, forecasting.

Reads the output of `examples/pretrain_hcp.py` (`run/final`: checkpoint + processor; `dataset/`: the prepared
splits) and writes PNGs, `metrics.json` and `figures.json` (file -> caption) to `--output-dir`:

1. CLS attention of the held-out test subject per AAL2 region and per lobe (`data.atlas.aal2_lobes`; the AAL2 demo
   atlas has no functional-network table), a glass brain and a region x time heat map (`analysis.analyze_attention`,
   what `brainlm attention` runs).
2. Group comparison: per-region attention of the test subject's windows vs the validation subject's (both held out),
   permutation test + Benjamini-Hochberg. Windows of one subject are not independent recordings: this shows the
   function, it is not a finding.
3. Whole-recording reconstruction of the test subject (mask ratio 0.5, random masks, stitched), masked-timepoint
   metrics per region and overall, against the per-region mean and linear interpolation on the same timepoints.
4. Forecasting: the last window (20 timepoints, 14.4 s) of each window of the test subject from the 180 before it,
   against persistence, AR(4) and the per-region mean, by horizon; first with the pretrained model, then after a
   short forecast fine-tuning (`pretrain` with `mask_strategy="forecast"`, what `brainlm pretrain --model
   CHECKPOINT --mask_strategy forecast` runs).

    python examples/analyze.py --run-dir outputs/hcp --output-dir outputs/analysis
"""

import argparse
import json
from pathlib import Path

import numpy as np

from brainlm_hf import BrainLMFeatureExtractor
from brainlm_hf.analysis.attention_maps import compare_groups, region_scores, window_attention
from brainlm_hf.analysis.attention_report import analyze_attention
from brainlm_hf.analysis.figures import plot_forecast, plot_reconstruction
from brainlm_hf.analysis.forecasting import forecast_recording
from brainlm_hf.analysis.reconstruction import reconstruct_recording
from brainlm_hf.data import load_recordings
from brainlm_hf.data.atlas import aal2_lobes
from brainlm_hf.data.demo import HCP_REPETITION_TIME
from brainlm_hf.metrics import baseline_predictions, masked_reconstruction_metrics
from brainlm_hf.training.pretraining import PretrainingArguments, pretrain

FORECAST_MASK_RATIO = 0.1  # the last ceil(0.1 * 10) = 1 window of 20 timepoints


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run-dir", default="outputs/hcp", help="--output-dir of examples/pretrain_hcp.py")
    parser.add_argument("--output-dir", default="outputs/analysis")
    parser.add_argument("--finetune-steps", type=int, default=300, help="forecast fine-tuning steps (0: skip)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    from transformers import AutoModelForPreTraining

    run, output = Path(args.run_dir), Path(args.output_dir)
    output.mkdir(parents=True, exist_ok=True)
    model = AutoModelForPreTraining.from_pretrained(run / "run" / "final").eval()
    processor = BrainLMFeatureExtractor.from_pretrained(run / "run" / "final")
    test = load_recordings([str(run / "dataset" / "test")])
    validation = load_recordings([str(run / "dataset" / "validation")])
    figures, metrics = {}, {"test_subjects": list(test), "validation_subjects": list(validation)}

    report = analyze_attention(model, processor, test, output, networks=aal2_lobes(processor.region_names))
    metrics["attention"] = {k: report[k] for k in ("network_names", "network_scores")}
    metrics["attention"]["top_regions"] = top_regions(report["region_names"], report["region_scores"])
    figures[report["figures"]["networks"]] = "CLS attention per AAL2 lobe (mean region score), test subject"
    figures[report["figures"]["glass_brain"]] = "CLS attention per region, three projections, test subject"
    figures[report["figures"]["heatmap"]] = "CLS attention over regions and time, mean over the test windows"

    metrics["group_comparison"] = compare_subjects(model, processor, test, validation, args.seed)
    metrics["reconstruction"] = reconstruction(model, processor, test, output / "reconstruction_whole.png")
    figures["reconstruction_whole.png"] = "Stitched reconstruction of the test subject (first 288 s), masked shaded"
    models = {"pretrained": model}
    if args.finetune_steps:
        models["finetuned"] = finetune_for_forecasting(run, output, args.finetune_steps, args.seed)
    metrics["forecast"] = {}
    for stage, predictor in models.items():
        metrics["forecast"][stage] = forecast(predictor, processor, test)
        caption = f"Forecast MSE and R^2 by horizon, {stage} model vs the baselines (test subject)"
        path = output / f"forecast_{stage}.png"
        plot_forecast(metrics["forecast"][stage], path, HCP_REPETITION_TIME, caption)
        figures[path.name] = caption

    (output / "metrics.json").write_text(json.dumps(metrics, indent=2))
    (output / "figures.json").write_text(json.dumps(figures, indent=2))
    print_summary(metrics)
    print(f"Figures and metrics in {output}: " + ", ".join(figures))


def top_regions(names, scores, count: int = 5) -> list[tuple[str, float]]:
    order = np.argsort(scores)[::-1][:count]
    return [(names[i], float(scores[i])) for i in order]


def compare_subjects(model, processor, group_a: dict, group_b: dict, seed: int) -> dict:
    """Per-region attention of the windows (stride 100) of one group of recordings vs the other."""
    a, b = (
        np.concatenate([region_scores(window_attention(model, processor, r, stride=100)) for r in g.values()])
        for g in (group_a, group_b)
    )
    diff, p, q = compare_groups(a, b, n_permutations=2000, seed=seed)
    names = processor.region_names
    order = np.argsort(q)[:5]
    return {
        "windows": [len(a), len(b)],
        "regions_q_below_0.05": int((q < 0.05).sum()),
        "strongest": [{"region": names[i], "diff": float(diff[i]), "p": float(p[i]), "q": float(q[i])} for i in order],
    }


def reconstruction(model, processor, test: dict, path: Path) -> dict:
    """Stitched whole-recording reconstruction of the first test subject, with the two baselines on its mask."""
    result = reconstruct_recording(model, processor, next(iter(test.values())), mask_ratio=0.5, seed=0)
    values = result.metrics()
    per_region_r2 = np.asarray(values.pop("per_region")["r2"])
    values["model"] = values.pop("overall")
    for name, prediction in baseline_predictions(result.signal[None], result.mask[None]).items():
        values[name] = masked_reconstruction_metrics(prediction[0], result.signal, result.mask)
    values["per_region_r2"] = {"median": float(np.median(per_region_r2)), "min": float(per_region_r2.min())}
    values["per_region_r2"]["max"] = float(per_region_r2.max())
    span = slice(0, 400)  # the first 288 s, readable
    plot_reconstruction(
        result.signal[:, span],
        result.prediction[:, span],
        result.mask[:, span],
        path,
        regions=(0, 38, 52, 70),
        region_names=processor.region_names,
        repetition_time=HCP_REPETITION_TIME,
        title="Held-out HCP subject, stitched reconstruction (mask ratio 0.5; masked windows shaded)",
    )
    return values


def forecast(model, processor, test: dict) -> dict:
    recording = next(iter(test.values()))
    return forecast_recording(model, processor, recording, mask_ratio=FORECAST_MASK_RATIO, stride=50).metrics()


def finetune_for_forecasting(run: Path, output: Path, steps: int, seed: int):
    from transformers import AutoModelForPreTraining

    pretrain(
        PretrainingArguments(
            dataset=str(run / "dataset"),
            output_dir=str(output / "forecast_finetune"),
            model=str(run / "run" / "final"),
            mask_strategy="forecast",
            mask_ratio=FORECAST_MASK_RATIO,
            per_device_train_batch_size=16,
            learning_rate=5e-4,
            warmup_steps=max(1, steps // 10),
            max_steps=steps,
            save_steps=steps,
            eval_steps=0,
            logging_steps=max(1, steps // 10),
            crops_per_recording=8,
            seed=seed,
        )
    )
    return AutoModelForPreTraining.from_pretrained(output / "forecast_finetune" / "final").eval()


def print_summary(metrics: dict) -> None:
    print("Reconstruction of the held-out subject (masked timepoints):")
    for name in ("model", "region_mean", "linear_interpolation"):
        m = metrics["reconstruction"][name]
        print(f"  {name}: MSE {m['mse']:.3f}  R^2 {m['r2']:.3f}  r {m['pearson_r']:.3f}")
    for stage, values in metrics["forecast"].items():
        print(f"Forecast ({stage}), MSE / R^2 at horizons 1, 5, 10, 20 and overall:")
        for name, m in values.items():
            by = m["by_horizon"]
            cells = "  ".join(f"{by['mse'][h - 1]:.3f}/{by['r2'][h - 1]:.3f}" for h in (1, 5, 10, 20))
            print(f"  {name}: {cells}  overall {m['overall']['mse']:.3f}/{m['overall']['r2']:.3f}")
    lobes = zip(metrics["attention"]["network_names"], metrics["attention"]["network_scores"], strict=True)
    print("Attention per lobe:", ", ".join(f"{name} {score:.4f}" for name, score in lobes))
    print("Group comparison:", json.dumps(metrics["group_comparison"]))


if __name__ == "__main__":
    main()
