# Copyright 2026 The brainlm_hf authors. Licensed under the Apache License, Version 2.0.
"""What a trained model says about recordings (whole recordings in, numpy out; the processor does the windowing).

* `recording_embeddings`: one embedding per recording (`embed_recordings`), writing them (`save_embeddings`), and
  `brainlm embed` (`embed_cohort(EmbedArguments)`).
* `attention_maps`: CLS attention mapped to regions x time, per region and network, group comparisons.
* `attention_report`: the `brainlm attention` report (tables, JSON, figures in a folder):
  `report_attention(AttentionArguments)`.
* `reconstruction`: masked windows slid over a recording and stitched back (`reconstruct_recording`).
* `forecasting`: the end of every window from its beginning, against persistence, AR(p) and the mean.
* `figures`: the PNG figures of these analyses (matplotlib).
"""

from .attention_maps import attention_maps, cls_attention, compare_groups, network_scores, region_scores
from .attention_report import AttentionArguments, analyze_attention, report_attention
from .forecasting import forecast_recording
from .reconstruction import reconstruct_recording
from .recording_embeddings import EmbedArguments, embed_cohort, embed_recordings, save_embeddings

__all__ = [
    "AttentionArguments",
    "EmbedArguments",
    "analyze_attention",
    "attention_maps",
    "cls_attention",
    "compare_groups",
    "embed_cohort",
    "embed_recordings",
    "forecast_recording",
    "network_scores",
    "reconstruct_recording",
    "region_scores",
    "report_attention",
    "save_embeddings",
]
