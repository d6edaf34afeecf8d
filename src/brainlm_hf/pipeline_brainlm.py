# Copyright 2026 The brainlm_hf authors. Licensed under the Apache License, Version 2.0.
"""
`BrainLMPipeline`: recordings in, one embedding per recording out (or the masked reconstruction, or the forecast).

Self-contained so that it travels with a published checkpoint as remote code (`config.custom_pipelines`): it needs
only transformers, torch and numpy, plus brainlm_hf for inputs given as file paths (parcel tables and NIfTI images).

Inputs (one, or a list): a raw `(T, V)` array in atlas order (its TR given with `repetition_time=`), a dict
`{"series": (T, V), "repetition_time": TR}`, or the path of a parcel table or a NIfTI image (parcellated with
`atlas=`, by default the atlas the processor names; the TR read from its header unless `repetition_time=` is given).
Without `feature_extractor=`, the processor saved beside the model is used. Each recording is cut into the
processor's windows (`BrainLMFeatureExtractor.windows`: resampled to the model's TR, normalised as in pretraining,
model region order, the end covered), and the windows of all recordings are run in batches of `batch_size`.

Outputs, per recording:

* `output="embedding"` (default): a float32 `(H,)` array, the mean over the recording's windows of the encoder's
  `pooling` (`"cls"` or `"mean"`) of hidden state `layer` (None: after the final LayerNorm);
* `output="reconstruction"` / `"forecast"`: a dict of float32 `(W, V, Tw)` arrays in atlas order, `"windows"` (the
  normalised input), `"prediction"` and `"mask"` (1 = masked), masking with `mask_ratio` (default: the config's)
  drawn from `seed` (random tokens), or the last `mask_ratio` of every region's time (forecast).
"""

import numpy as np
import torch
from transformers import AutoFeatureExtractor
from transformers.pipelines.base import ChunkPipeline

from .configuration_brainlm import POOLINGS

TASK = "brainlm-feature-extraction"  # the task name registered with transformers' pipeline
OUTPUTS = ("embedding", "reconstruction", "forecast")


class BrainLMPipeline(ChunkPipeline):
    """Embeddings, reconstructions or forecasts of fMRI recordings with a BrainLM model (see the module docstring)."""

    _load_tokenizer = False
    _load_image_processor = False
    _load_processor = False
    _load_feature_extractor = None  # optional: without one, the processor saved with the model is read

    def __init__(self, model, feature_extractor=None, **kwargs):
        if feature_extractor is None:
            try:
                feature_extractor = AutoFeatureExtractor.from_pretrained(model.name_or_path)
            except (OSError, ValueError) as error:
                raise ValueError(
                    f"No processor found beside the model {model.name_or_path!r}: pass feature_extractor= (e.g. "
                    "BrainLMFeatureExtractor.from_pretrained of the same checkpoint)."
                ) from error
        super().__init__(model, feature_extractor=feature_extractor, **kwargs)

    def _sanitize_parameters(
        self,
        repetition_time=None,
        output=None,
        pooling=None,
        layer=None,
        mask_ratio=None,
        seed=None,
        atlas=None,
        **kwargs,
    ):
        if kwargs:
            raise TypeError(f"BrainLMPipeline got unknown arguments {sorted(kwargs)}.")
        if output is not None and output not in OUTPUTS:
            raise ValueError(f"output must be one of {OUTPUTS}, got {output!r}.")
        if pooling is not None and pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {POOLINGS}, got {pooling!r}.")
        if output in ("reconstruction", "forecast") and not hasattr(self.model, "decoder"):
            raise ValueError(
                f"output={output!r} needs the decoder: load the pipeline from a pretraining checkpoint "
                "(AutoModelForPreTraining)."
            )
        preprocess = {"repetition_time": repetition_time, "seed": seed or 0, "atlas": atlas}
        forward = {"output": output or "embedding", "pooling": pooling or "cls", "layer": layer}
        forward["mask_ratio"] = mask_ratio
        return preprocess, forward, {"output": forward["output"]}

    def preprocess(self, inputs, repetition_time=None, seed=0, atlas=None):
        series, tr = self._read(inputs, repetition_time, atlas)
        windows, _, timepoint_mask = self.feature_extractor.windows(
            [series], repetition_times=tr, return_timepoint_mask=True
        )  # (W, V, Tw) normalised, model order; (W, Tw)
        generator = torch.Generator().manual_seed(seed)
        for index, window in enumerate(windows):
            yield {
                "signal_values": window[None],
                "timepoint_mask": timepoint_mask[index : index + 1],
                "noise": torch.rand(1, self.model.num_tokens(*window.shape), generator=generator).numpy(),
                "is_last": index == len(windows) - 1,
            }

    def _read(self, inputs, repetition_time, atlas=None):
        """The raw `(T, V)` series of one input and its TR (None: unknown, used as it is); NIfTI images are
        parcellated with `atlas` (a brainlm_hf `Atlas` or its label image), by default the processor's (A424)."""
        if isinstance(inputs, dict):
            return inputs["series"], inputs.get("repetition_time", repetition_time)
        if isinstance(inputs, np.ndarray | torch.Tensor):
            return np.asarray(inputs, dtype=np.float32), repetition_time
        try:  # inside try: transformers does not require it of remote code
            from brainlm_hf.data.atlas import Atlas, load_a424, load_atlas
            from brainlm_hf.data.recordings import load_recording
        except ImportError as error:
            raise ImportError(
                f"Reading {inputs!r} needs brainlm_hf (`pip install brainlm_hf`); or pass the (T, V) array itself."
            ) from error
        if atlas is None and self.feature_extractor.atlas == "A424":
            atlas = load_a424()
        elif atlas is not None and not isinstance(atlas, Atlas):
            atlas = load_atlas(atlas)
        return load_recording(inputs, atlas, repetition_time)

    def _forward(self, inputs, output="embedding", pooling="cls", layer=None, mask_ratio=None):
        signal = _batch(inputs["signal_values"]).to(self.device, self.model.dtype)  # (b, V, Tw)
        timepoint_mask = _batch(inputs["timepoint_mask"]).to(self.device)  # (b, Tw)
        coordinates = self.feature_extractor.model_coordinates()
        if coordinates is not None:
            coordinates = torch.as_tensor(coordinates).to(self.device, self.model.dtype)
        if timepoint_mask.min() == 1:
            timepoint_mask = None
        if output == "embedding":
            encoder = self.model.base_model
            hidden = encoder(
                signal, coordinates, output_hidden_states=layer is not None, timepoint_mask=timepoint_mask
            )
            result = {"embedding": encoder.pool(hidden, *signal.shape[1:], pooling, layer)}  # (b, H)
        else:
            noise = _batch(inputs["noise"]).to(self.device)
            out = self.model(
                signal,
                coordinates,
                noise=noise,
                mask_ratio=mask_ratio,
                mask_strategy=self.model.layout.forecast_strategy if output == "forecast" else "random",
                timepoint_mask=timepoint_mask,
            )
            result = {"windows": signal, "prediction": out.logits, "mask": self.model.mask_to_signal(out.mask)}
        return {**result, "is_last": inputs["is_last"]}

    def postprocess(self, outputs, output="embedding"):
        if output == "embedding":
            return np.mean([o["embedding"][0].float().cpu().numpy() for o in outputs], axis=0, dtype=np.float32)
        return {
            key: self.feature_extractor.to_atlas_order(
                np.concatenate([o[key].float().cpu().numpy() for o in outputs]).astype(np.float32)
            )
            for key in ("windows", "prediction", "mask")
        }


def _batch(rows) -> torch.Tensor:
    """The rows of a batch as one tensor: an array with a leading batch axis, or a list of them (batch_size > 1)."""
    return torch.as_tensor(np.concatenate(rows) if isinstance(rows, list) else rows)
