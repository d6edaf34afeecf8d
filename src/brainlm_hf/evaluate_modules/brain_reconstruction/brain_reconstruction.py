# Copyright 2026 The brainlm_hf authors. Licensed under the Apache License, Version 2.0.
"""`evaluate` metric: masked-timepoint MSE, R^2 and Pearson r of BrainLM reconstructions (a wrapper of
`masked_reconstruction_metrics`)."""

import datasets
import evaluate
import numpy as np

from brainlm_hf.metrics import masked_reconstruction_metrics

_DESCRIPTION = """Scores reconstructions of fMRI parcel time series on masked timepoints only. Inputs are one
recording window per example, each flattened from (regions, timepoints); all masked values are pooled."""


class BrainReconstruction(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="Ortega Caro et al., BrainLM: A foundation model for brain activity recordings, ICLR 2024.",
            inputs_description="predictions, references, mask: lists of flattened (regions * timepoints) floats.",
            features=datasets.Features(
                {
                    "predictions": datasets.Sequence(datasets.Value("float32")),
                    "references": datasets.Sequence(datasets.Value("float32")),
                    "mask": datasets.Sequence(datasets.Value("float32")),
                }
            ),
        )

    def _compute(self, predictions, references, mask):
        flat = [
            np.concatenate([np.asarray(x, dtype=np.float64) for x in values])
            for values in (predictions, references, mask)
        ]
        return masked_reconstruction_metrics(*flat)
