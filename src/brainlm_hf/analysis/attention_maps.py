# Copyright 2026 The brainlm_hf authors. Licensed under the Apache License, Version 2.0.
"""CLS attention of a BrainLM encoder, mapped back to regions and time, grouped by network, compared between groups.

Notation: B windows, V regions, T timepoints, L tokens (CLS excluded), K networks.

The CLS token's attention to the other tokens (one softmax row per layer and head) is what the model returns with
`output_cls_attentions=True`: computed beside the configured attention backend (sdpa by default), without the
tokens x tokens matrices that `output_attentions=True` builds with eager attention. Each token's share is
spread evenly over the (region, timepoint) cells of the signal it covers: a region-window token over its
`patch_size` timepoints, a 2-D tile over the cells of the signal inside it (padding cells take nothing, so the
attention a tile of pure padding receives is dropped). The result, `(..., V, T)`, sums to the attention on signal
tokens; summed over time it is the attention each region receives (`region_scores`).
"""

from collections.abc import Sequence

import numpy as np
import torch

from ..errors import InvalidArgumentError, InvalidInputError
from ..feature_extraction_brainlm import BrainLMFeatureExtractor
from ..inference import map_windows
from ..modeling_brainlm import BrainLMPreTrainedModel


@torch.no_grad()
def cls_attention(
    model: BrainLMPreTrainedModel,
    signal_values: torch.Tensor,
    coordinates: torch.Tensor | None = None,
    layers: Sequence[int] | None = None,
) -> torch.Tensor:
    """
    CLS-to-token attention of every chosen layer and head, nothing masked.

    Args:
        model: a `BrainLMModel` or `BrainLMForMaskedSignalModeling` (its encoder is used).
        signal_values (`torch.Tensor` of shape `(B, V, T)`), coordinates (`(V, 3)`; ignored by the tile layout):
            moved to the model's device and dtype.
        layers (`list[int]`, *optional*): encoder layers (negative indices count from the last); default all.

    Returns `(B, len(layers), heads, 1 + L)`: softmax rows, column 0 is the CLS token itself, column `1 + i` token
    `i` in canonical order (region-window: `v * N + n`; tiles: `r * G + c`). Each row sums to 1.
    """
    encoder = getattr(model, "brainlm", model)
    layers = _layer_indices(layers, encoder.config.num_hidden_layers)
    signal_values = signal_values.to(encoder.device, encoder.dtype)
    coordinates = None if coordinates is None else coordinates.to(encoder.device, encoder.dtype)
    outputs = encoder(signal_values, coordinates, mask_ratio=0.0, output_cls_attentions=True)
    return torch.stack([outputs.cls_attentions[i] for i in layers], dim=1)


def _layer_indices(layers: Sequence[int] | None, num_layers: int) -> list[int]:
    if layers is None:
        return list(range(num_layers))
    if not layers or any(not -num_layers <= i < num_layers for i in layers):
        raise InvalidArgumentError(
            f"layers must be a non-empty list of encoder layers in [-{num_layers}, {num_layers}).", argument="layers"
        )
    return [i % num_layers for i in layers]


def region_time_attention(token_attention, token_index: np.ndarray) -> np.ndarray:
    """
    Spread token attention over the signal cells each token covers.

    Args:
        token_attention (array of shape `(..., 1 + L)`): CLS rows as returned by `cls_attention` (column 0 = CLS).
        token_index (`(V, T)` int): the token covering each cell, `model.layout.token_index(V, T)`.

    Returns `(..., V, T)`: cell `(v, t)` holds its token's attention divided by the number of cells of that token.
    """
    tokens = np.asarray(token_attention, dtype=np.float64)[..., 1:]  # (..., L), CLS self-attention dropped
    token_index = np.asarray(token_index)
    cells = np.bincount(token_index.ravel(), minlength=tokens.shape[-1])  # (L,), 0 for pure padding tiles
    if len(cells) != tokens.shape[-1]:
        raise InvalidArgumentError(
            f"token_index points past the {tokens.shape[-1]} tokens of token_attention.", argument="token_index"
        )
    return tokens[..., token_index] / cells[token_index]


def attention_maps(
    model: BrainLMPreTrainedModel,
    signal_values: np.ndarray,
    coordinates: np.ndarray | None = None,
    layers: Sequence[int] | None = None,
    batch_size: int = 8,
) -> np.ndarray:
    """
    Region x time CLS attention of each window `(W, V, T)` (normalised, model order), averaged over the chosen layers
    and all heads: `(W, V, T)` in the model's region order (`processor.to_atlas_order` maps it back), `batch_size`
    windows at a time.
    """

    def mean_cls_rows(batch, xyz, rows):
        return cls_attention(model, batch, xyz, layers).mean(dim=(1, 2))  # (b, 1 + L)

    rows = map_windows(model, signal_values, coordinates, mean_cls_rows, batch_size)  # (W, 1 + L)
    return region_time_attention(rows, model.layout.token_index(*signal_values.shape[1:]).numpy())


def window_attention(
    model: BrainLMPreTrainedModel,
    processor: BrainLMFeatureExtractor,
    recording: np.ndarray,
    layers: Sequence[int] | None = None,
    stride: int | None = None,
    batch_size: int = 8,
    repetition_time: float | None = None,
) -> np.ndarray:
    """
    Region x time CLS attention `(W, V, Tw)` (atlas order) of the windows of one raw `(T, V)` recording, placed by
    `processor.window_starts`, averaged over the chosen layers and all heads. A recording whose `repetition_time`
    differs from the processor's is resampled to it first (`processor.windows`).
    """
    windows, _ = processor.windows([recording], stride=stride, repetition_times=repetition_time)  # (W, V, Tw)
    maps = attention_maps(model, windows, processor.model_coordinates(), layers, batch_size)
    return processor.to_atlas_order(maps)


def recording_attention(
    model: BrainLMPreTrainedModel,
    processor: BrainLMFeatureExtractor,
    recordings: dict[str, np.ndarray],
    layers: Sequence[int] | None = None,
    stride: int | None = None,
    batch_size: int = 8,
    repetition_times: dict[str, float | None] | None = None,
    progress=None,
) -> tuple[np.ndarray, np.ndarray]:
    """
    Region scores per recording `(R, V)` (mean over its windows, see `window_attention`) and the region x time map
    `(V, Tw)` averaged over all windows of all recordings, both in atlas order. `repetition_times`: the TR of each
    recording (by key; missing = unknown). `progress` (a `brainlm_hf.progress.Progress`) counts each recording done
    and its windows.
    """
    trs = repetition_times or {}
    maps = []
    for name, recording in recordings.items():
        maps.append(window_attention(model, processor, recording, layers, stride, batch_size, trs.get(name)))
        if progress is not None:
            progress.update(windows=len(maps[-1]))
    scores = np.stack([region_scores(m).mean(0) for m in maps])
    return scores, np.concatenate(maps).mean(0)


def region_scores(attention_map) -> np.ndarray:
    """`(..., V, T)` -> `(..., V)`: the CLS attention each region receives, summed over its timepoints."""
    return np.asarray(attention_map).sum(-1)


def network_scores(scores, networks: Sequence[str]) -> tuple[list[str], np.ndarray]:
    """
    Mean region score of each network.

    Args:
        scores (array of shape `(..., V)`): region scores in atlas order.
        networks (`list[str]` of length V): the network of each region, e.g. `atlas.load_a424_networks()` or
            `brainlm_hf.data.atlas.aal2_lobes(names)`.

    Returns the network names (in order of first appearance) and `(..., K)` scores.
    """
    scores = np.asarray(scores, dtype=np.float64)
    if len(networks) != scores.shape[-1]:
        raise InvalidArgumentError(
            f"The network table lists {len(networks)} regions but the scores have {scores.shape[-1]}: use the "
            "table of the model's atlas, in atlas order.",
            argument="networks",
        )
    names = list(dict.fromkeys(networks))
    members = np.asarray(networks)[None, :] == np.asarray(names)[:, None]  # (K, V)
    return names, scores @ members.T / members.sum(1)


def compare_groups(a, b, n_permutations: int = 1000, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """
    Per-region difference of mean scores between two groups, with a two-sided permutation test and FDR correction.

    Args:
        a, b (arrays of shape `(n_a, V)`, `(n_b, V)`): one row of region scores per recording.
        n_permutations (`int`): random relabellings of the pooled rows.

    Returns `diff` `(V,)` (mean a - mean b), `p` `(V,)` (`(1 + #{|permuted diff| >= |diff|}) / (1 + n_permutations)`)
    and `q` `(V,)` (Benjamini-Hochberg adjusted p).
    """
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1] or min(len(a), len(b)) < 2:
        raise InvalidInputError(
            f"compare_groups needs two (recordings, regions) arrays with the same regions and at least 2 recordings "
            f"each, got {a.shape} and {b.shape}."
        )
    pooled, rng = np.concatenate([a, b]), np.random.default_rng(seed)
    observed = np.abs(a.mean(0) - b.mean(0))
    exceed = np.zeros(a.shape[1])
    for _ in range(n_permutations):
        order = rng.permutation(len(pooled))
        permuted = np.abs(pooled[order[: len(a)]].mean(0) - pooled[order[len(a) :]].mean(0))
        exceed += permuted >= observed - 1e-12  # a relabelling equal to the observed one up to rounding counts
    p = (1 + exceed) / (1 + n_permutations)
    return a.mean(0) - b.mean(0), p, benjamini_hochberg(p)


def benjamini_hochberg(p) -> np.ndarray:
    """Benjamini-Hochberg adjusted p-values (false discovery rate), same shape as `p` `(V,)`."""
    p = np.asarray(p, dtype=np.float64)
    order = np.argsort(p)
    ranked = p[order] * len(p) / np.arange(1, len(p) + 1)
    adjusted = np.minimum.accumulate(ranked[::-1])[::-1]  # q_(i) = min over j >= i of p_(j) m / j
    q = np.empty_like(p)
    q[order] = np.minimum(adjusted, 1.0)
    return q
