# Copyright 2026 The brainlm_hf authors. Licensed under the Apache License, Version 2.0.
"""The device paths of the downstream tools on a GPU, checked against the CPU: prints one line per check.

    python benchmarks/check_gpu_paths.py            # CUDA; about a minute (`... cpu` runs the same on the CPU)

* embeddings on CUDA in fp32 and bf16 (autocast) vs the CPU in fp32;
* Trainer fine-tuning on CUDA with `bf16=True` (loss before/after, per-recording MSE before/after);
* CLS attention on CUDA (rows sum to 1, same as the CPU) and a whole-recording reconstruction at mask ratio 0.
"""

import tempfile

import numpy as np
import torch

from brainlm_hf import BrainLMConfig, BrainLMFeatureExtractor, BrainLMForMaskedSignalModeling
from brainlm_hf.analysis.attention_maps import cls_attention
from brainlm_hf.analysis.reconstruction import reconstruct_recording
from brainlm_hf.analysis.recording_embeddings import embed_recordings
from brainlm_hf.metrics import regression_metrics
from brainlm_hf.training.finetuning import build_classifier, finetune_recordings, predict_recordings


def main(device: str = "cuda"):
    rng = np.random.default_rng(0)
    regions, length = 94, 200
    levels = rng.uniform(-1, 1, 48)
    recordings = [(rng.normal(size=(400, regions)) * 0.3 + 2 * c).astype(np.float32) for c in levels]
    processor = BrainLMFeatureExtractor(
        normalization="none", coordinates=(rng.normal(size=(regions, 3)) * 50).tolist(), num_timepoints=length
    )
    torch.manual_seed(0)
    config = BrainLMConfig.from_preset("brainlm-small", mask_ratio=0.5)
    model = BrainLMForMaskedSignalModeling(config).eval()
    folder = tempfile.mkdtemp()
    model.save_pretrained(folder)

    reference = embed_recordings(model, processor, recordings[:8], device="cpu")
    for dtype in (None, torch.bfloat16):
        on_gpu = embed_recordings(model, processor, recordings[:8], device=device, dtype=dtype)
        name = "bf16" if dtype else "fp32"
        print(f"embeddings {device} {name} vs cpu fp32: max |diff| {np.abs(on_gpu - reference).max():.2e}")

    untrained = build_classifier(
        folder, 1, "regression", label_stats={"mean": [float(levels.mean())], "std": [1.0]}
    ).to(device)
    before = regression_metrics(predictions=predict_recordings(untrained, processor, recordings), targets=levels)[
        "mse"
    ]
    trained = finetune_recordings(
        folder, processor, recordings, levels, "regression", tempfile.mkdtemp(), num_train_epochs=3,
        bf16=device == "cuda", use_cpu=device == "cpu", learning_rate=1e-3, disable_tqdm=True, logging_strategy="no",
    )  # fmt: skip
    after = regression_metrics(predictions=predict_recordings(trained, processor, recordings), targets=levels)["mse"]
    print(f"fine-tuning on {trained.device} with bf16: per-recording MSE {before:.4f} -> {after:.4f}")

    window = torch.from_numpy(np.stack([r[:length].T for r in recordings[:4]]))
    coordinates = torch.from_numpy(processor.model_coordinates())
    gpu_model = model.to(device)
    rows = cls_attention(gpu_model, window, coordinates)
    cpu_rows = cls_attention(model.to("cpu"), window, coordinates)
    print(
        f"CLS attention on {device}: row sums within {(rows.sum(-1) - 1).abs().max().item():.1e} of 1, "
        f"max |device - cpu| {(rows.cpu() - cpu_rows).abs().max().item():.1e}; implementation restored: "
        f"{gpu_model.config._attn_implementation}"
    )
    stitched = reconstruct_recording(model.to(device), processor, recordings[0], mask_ratio=0.0)
    with torch.no_grad():
        direct = model(window[:1].to(device), coordinates.to(device), mask_ratio=0.0).logits[0].cpu().numpy()
    error = np.abs(stitched.prediction[:, :length] - direct).max()
    print(f"reconstruction at mask 0 on {device}: first window equals the model's output within {error:.1e}")


if __name__ == "__main__":
    import sys

    main(sys.argv[1] if len(sys.argv) > 1 else "cuda")
