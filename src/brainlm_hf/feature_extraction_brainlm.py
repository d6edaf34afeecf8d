# Copyright 2026 The brainlm_hf authors. Licensed under the Apache License, Version 2.0.
"""Turns parcel time series into BrainLM model inputs, and model outputs back into atlas order.

The feature extractor is saved next to a checkpoint as `preprocessor_config.json` and loads with
`AutoFeatureExtractor.from_pretrained`. It holds what the model expects of its input beyond the signal itself:

* `coordinates`: region xyz (MNI mm) in atlas order, `(V, 3)`;
* `region_order`: model row `i` is atlas region `region_order[i]` (the released 111M/650M weights expect regions
  sorted by a stable sort on the Y coordinate); `None` means atlas order;
* `input_scale`: the signal is divided by it (the tutorials of the released 111M/650M weights use 5.6430855).

Normalisation of raw recordings is not part of this class yet: pass signal already normalised the way the model
expects (see the model card).
"""

import numpy as np
import torch
from transformers import BatchFeature, FeatureExtractionMixin


class BrainLMFeatureExtractor(FeatureExtractionMixin):
    """
    Args:
        coordinates (`list[list[float]]`, *optional*): region xyz in atlas order, `(V, 3)`.
        region_order (`list[int]`, *optional*): atlas index of each model row; `None` keeps atlas order.
        input_scale (`float`, defaults to 1.0): divisor applied to the signal.
        region_names (`list[str]`, *optional*): names of the regions in atlas order.
        repetition_time (`float`, *optional*): TR in seconds of the data the model was trained on.
    """

    model_input_names = ["signal_values", "coordinates"]

    def __init__(
        self,
        coordinates: list[list[float]] | None = None,
        region_order: list[int] | None = None,
        input_scale: float = 1.0,
        region_names: list[str] | None = None,
        repetition_time: float | None = None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        num_regions = len(coordinates) if coordinates is not None else None
        if region_order is not None:
            region_order = [int(i) for i in region_order]
            if sorted(region_order) != list(range(len(region_order))):
                raise ValueError("region_order must be a permutation of 0 .. V - 1.")
            if num_regions is not None and len(region_order) != num_regions:
                raise ValueError(f"region_order has {len(region_order)} entries for {num_regions} coordinates.")
        if input_scale <= 0:
            raise ValueError(f"input_scale must be positive, got {input_scale}.")
        self.coordinates = coordinates
        self.region_order = region_order
        self.input_scale = float(input_scale)
        self.region_names = region_names
        self.repetition_time = repetition_time

    @classmethod
    def sorted_by_y(cls, coordinates, **kwargs) -> "BrainLMFeatureExtractor":
        """A feature extractor whose model order is a stable sort of the regions by their Y coordinate."""
        coordinates = np.asarray(coordinates, dtype=np.float64)
        region_order = np.argsort(coordinates[:, 1], kind="stable").tolist()
        return cls(coordinates=coordinates.tolist(), region_order=region_order, **kwargs)

    @property
    def inverse_order(self) -> list[int] | None:
        """Model row of each atlas region (`inverse_order[region_order[i]] == i`)."""
        if self.region_order is None:
            return None
        return np.argsort(self.region_order).tolist()

    def __call__(self, recordings, return_tensors: str | None = "pt") -> BatchFeature:
        """
        Args:
            recordings: one recording `(T, V)` in atlas order, a list of them with equal T, or an array `(B, T, V)`.

        Returns a `BatchFeature` with `signal_values` `(B, V, T)` (model region order, divided by `input_scale`)
        and, when known, `coordinates` `(V, 3)` in model order.
        """
        if isinstance(recordings, list):
            signal = np.stack([np.asarray(r, dtype=np.float32) for r in recordings])
        else:
            signal = np.asarray(recordings, dtype=np.float32)
        if signal.ndim == 2:
            signal = signal[None]
        if signal.ndim != 3:
            raise ValueError(f"Expected recordings of shape (timepoints, regions), got {signal.shape[1:]}.")
        num_regions = signal.shape[2]
        if self.coordinates is not None and num_regions != len(self.coordinates):
            raise ValueError(
                f"The recordings have {num_regions} regions but this feature extractor's atlas has "
                f"{len(self.coordinates)}: parcellate with the same atlas."
            )
        signal = signal.transpose(0, 2, 1) / self.input_scale  # (B, V, T)
        data = {"signal_values": self.to_model_order(signal)}
        if self.coordinates is not None:
            data["coordinates"] = self.to_model_order(np.asarray(self.coordinates, dtype=np.float32))
        return BatchFeature(data=data, tensor_type=return_tensors)

    def to_model_order(self, values):
        """Reorder the region axis of `(..., V, T)` signal or `(V, 3)` coordinates from atlas to model order."""
        return values if self.region_order is None else _take(values, self.region_order)

    def to_atlas_order(self, values):
        """Reorder model outputs `(..., V, T)` (or `(V, 3)`) back to atlas order."""
        return values if self.region_order is None else _take(values, self.inverse_order)


def _take(values, order: list[int]):
    """Reorder the region axis, the second to last: `(..., V, T)` signal or `(V, 3)` coordinates."""
    axis = values.ndim - 2
    if isinstance(values, torch.Tensor):
        return values.index_select(axis, torch.as_tensor(order, device=values.device))
    return np.take(values, order, axis=axis)
