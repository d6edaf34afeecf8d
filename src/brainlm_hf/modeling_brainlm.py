# Copyright 2026 The brainlm_hf authors. Licensed under the Apache License, Version 2.0.
"""BrainLM: a masked autoencoder over fMRI parcel time series (Ortega Caro et al., ICLR 2024).

Notation used in shape comments: B batch, V brain regions, T timepoints, L tokens, K kept (visible) tokens,
H = `hidden_size`, Hd = `decoder_hidden_size`. Region-window layout: P = `patch_size`, N = T / P windows per region,
L = V * N. Tile layout: S = `image_size`, p = `patch_size`, G = S / p, L = G * G.

This file only imports from `torch`, `transformers` and its sibling `configuration_brainlm.py`, so that it can be
saved next to a checkpoint and loaded with `trust_remote_code=True` where `brainlm_hf` is not installed.
"""

import itertools
import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn
from transformers import GradientCheckpointingLayer, PreTrainedModel
from transformers import initialization as init
from transformers.activations import ACT2FN
from transformers.modeling_outputs import SequenceClassifierOutput
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS
from transformers.utils import ModelOutput, logging

from .configuration_brainlm import MASK_STRATEGIES, POOLINGS, BrainLMConfig
from .errors import InvalidArgumentError, InvalidFileError, InvalidInputError

logger = logging.get_logger(__name__)


@dataclass
class BrainLMModelOutput(ModelOutput):
    """
    Output of `BrainLMModel`.

    Args:
        last_hidden_state (`torch.FloatTensor` of shape `(B, 1 + K, H)`):
            Encoder output after the final LayerNorm. Row 0 is the CLS token; row `1 + j` is token `ids_shuffle[j]`
            where `ids_shuffle = argsort(ids_restore)` (the canonical token order when nothing is shuffled).
        mask (`torch.FloatTensor`): 1 where masked, 0 where visible. Region-window layout: `(B, V, N)`, one value per
            (region, window) token. Tile layout: `(B, V, T)`, per timepoint. `model.mask_to_signal(mask)` gives
            `(B, V, T)` for both.
        token_mask (`torch.FloatTensor` of shape `(B, L)`): the mask per token, in token order.
        ids_restore (`torch.LongTensor` of shape `(B, L)`): position of each token in the shuffled sequence.
        hidden_states (`tuple(torch.FloatTensor)`, *optional*):
            `hidden_states[0]` is the encoder input, `hidden_states[i]` the output of layer `i` (before the final
            LayerNorm), each `(B, 1 + K, H)`. Returned with `output_hidden_states=True`.
        attentions (`tuple(torch.FloatTensor)`, *optional*):
            Softmax attention of each layer, `(B, heads, 1 + K, 1 + K)`. Returned with `output_attentions=True`
            (eager attention only).
        timepoint_mask (`torch.FloatTensor` of shape `(B, T)`, *optional*): the `timepoint_mask` input (1 = real
            timepoint, 0 = padding), kept for `pool` and the reconstruction loss.
        cls_attentions (`tuple(torch.FloatTensor)`, *optional*):
            The CLS row of each layer's softmax attention, `(B, heads, 1 + K)` (`attentions[i][:, :, 0]`, columns in
            the order of the rows of `last_hidden_state`). Returned with `output_cls_attentions=True`, whatever the
            attention backend: the row is computed beside it without the `(1 + K) x (1 + K)` matrix.
    """

    last_hidden_state: torch.FloatTensor | None = None
    mask: torch.FloatTensor | None = None
    token_mask: torch.FloatTensor | None = None
    ids_restore: torch.LongTensor | None = None
    hidden_states: tuple[torch.FloatTensor, ...] | None = None
    attentions: tuple[torch.FloatTensor, ...] | None = None
    timepoint_mask: torch.FloatTensor | None = None
    cls_attentions: tuple[torch.FloatTensor, ...] | None = None


@dataclass
class BrainLMForMaskedSignalModelingOutput(ModelOutput):
    """
    Output of `BrainLMForMaskedSignalModeling`.

    Args:
        loss (`torch.FloatTensor` of shape `()`, *optional*):
            Reconstruction loss over masked timepoints only; `None` when nothing is masked.
        logits (`torch.FloatTensor` of shape `(B, V, T)`): reconstruction of every timepoint, in the input layout.
        mask, token_mask, ids_restore, last_hidden_state, hidden_states, attentions, cls_attentions: as in
            `BrainLMModelOutput` (of the encoder).
    """

    loss: torch.FloatTensor | None = None
    logits: torch.FloatTensor | None = None
    mask: torch.FloatTensor | None = None
    token_mask: torch.FloatTensor | None = None
    ids_restore: torch.LongTensor | None = None
    last_hidden_state: torch.FloatTensor | None = None
    hidden_states: tuple[torch.FloatTensor, ...] | None = None
    attentions: tuple[torch.FloatTensor, ...] | None = None
    cls_attentions: tuple[torch.FloatTensor, ...] | None = None


def sinusoidal_encoding(num_positions: int, dim: int, device=None) -> torch.Tensor:
    """Sin/cos table `(num_positions, dim)`: `[n, 2i] = sin(n / 10000^(2i/dim))`, `[n, 2i+1] = cos(...)`."""
    position = torch.arange(num_positions, device=device, dtype=torch.float32).unsqueeze(1)
    div_term = torch.exp(torch.arange(0, dim, 2, device=device, dtype=torch.float32) * (-math.log(10000.0) / dim))
    table = torch.zeros(num_positions, dim, device=device)
    table[:, 0::2] = torch.sin(position * div_term)
    table[:, 1::2] = torch.cos(position * div_term)
    return table


def sincos_2d_encoding(grid_size: int, dim: int, device=None) -> torch.Tensor:
    """
    MAE's fixed 2-D table `(grid_size**2, dim)` for tile `r * G + c`: the first half of the channels encodes the
    column c, the second half the row r, each as `[sin(pos * w), cos(pos * w)]` with `w_i = 10000^(-i / (dim / 4))`.
    Computed in float64 like the original, then cast to float32.
    """
    omega = 1.0 / 10000 ** (torch.arange(dim // 4, device=device, dtype=torch.float64) / (dim / 4))
    position = torch.arange(grid_size, device=device, dtype=torch.float64)
    rows, cols = position.repeat_interleave(grid_size), position.repeat(grid_size)  # token r * G + c

    def encode(pos):
        angles = pos[:, None] * omega[None]
        return torch.cat([angles.sin(), angles.cos()], dim=1)

    return torch.cat([encode(cols), encode(rows)], dim=1).float()


class RegionWindowLayout:
    """
    Token geometry of the region-window layout: token `v * N + n` is window `n` (timepoints `[n * P, (n + 1) * P)`)
    of region `v`. Every token holds signal; positions are the window index (sinusoid) plus the region's coordinates.
    """

    name = "region_window"
    uses_coordinates = True
    forecast_strategy = "forecast"

    def __init__(self, config: BrainLMConfig):
        self.patch_size = config.patch_size
        self.values_per_token = config.patch_size
        self.mask_strategies = MASK_STRATEGIES[config.token_layout]

    def num_tokens(self, num_regions: int, num_timepoints: int) -> int:
        return num_regions * (num_timepoints // self.patch_size)

    def check_signal(self, num_regions: int, num_timepoints: int) -> None:
        """Raise an `InvalidInputError` for a signal shape this layout cannot cut into tokens."""
        if num_timepoints % self.patch_size != 0:
            if num_regions % self.patch_size == 0:
                raise InvalidInputError(
                    f"The number of timepoints ({num_timepoints}) is not a multiple of patch_size "
                    f"({self.patch_size}) but the number of regions ({num_regions}) is: is the input transposed? "
                    "signal_values must be (batch, regions, timepoints); use signal_values.transpose(1, 2).",
                    argument="signal_values",
                )
            raise InvalidInputError(
                f"The number of timepoints ({num_timepoints}) must be a multiple of patch_size ({self.patch_size});"
                f" crop the recording to {num_timepoints - num_timepoints % self.patch_size} timepoints or use the "
                "processor's sliding windows.",
                argument="signal_values",
            )

    def signal_to_tokens(self, signal_values: torch.Tensor) -> torch.Tensor:
        """`(B, V, T)` -> `(B, L, P)`, token `v * N + n`."""
        batch_size, num_regions, num_timepoints = signal_values.shape
        return signal_values.reshape(batch_size, num_regions * (num_timepoints // self.patch_size), self.patch_size)

    def tokens_to_signal(self, values: torch.Tensor, num_regions: int, num_timepoints: int) -> torch.Tensor:
        """`(B, L, P)` -> `(B, V, T)`."""
        return values.reshape(-1, num_regions, num_timepoints)

    def add_positions(
        self, tokens: torch.Tensor, num_regions: int, num_timepoints: int, per_region: torch.Tensor | None = None
    ) -> torch.Tensor:
        """
        `tokens` `(B, L, D)` + the sinusoid of each token's window index, to which a value per region `per_region`
        `(B or 1, V, D)` (projected coordinates) is added first when given.
        """
        batch_size, _, dim = tokens.shape
        num_windows = num_timepoints // self.patch_size
        positions = sinusoidal_encoding(num_windows, dim, tokens.device)  # (N, D)
        if per_region is not None:
            positions = per_region.unsqueeze(2) + positions  # (B or 1, V, N, D)
        return (tokens.view(batch_size, num_regions, num_windows, dim) + positions.to(tokens.dtype)).flatten(1, 2)

    def build_embeddings(self, config: BrainLMConfig) -> nn.Module:
        return BrainLMRegionWindowEmbeddings(config, self)

    def data_tokens(self, num_regions: int, num_timepoints: int, device) -> torch.Tensor:
        """Which tokens hold signal, `(L,)` bool: all of them in this layout."""
        return torch.ones(self.num_tokens(num_regions, num_timepoints), dtype=torch.bool, device=device)

    def forecast_pattern(self, num_regions: int, num_timepoints: int, mask_ratio: float, device) -> torch.Tensor:
        """`forecast`: the last `ceil(mask_ratio * N)` windows of every region, `(L,)` bool (True = masked)."""
        num_windows = num_timepoints // self.patch_size
        num_masked = math.ceil(mask_ratio * num_windows)
        if num_masked >= num_windows:
            raise InvalidArgumentError(
                f"mask_ratio {mask_ratio} with the forecast strategy masks all {num_windows} windows of each region; "
                "lower it so that at least one window per region stays visible.",
                argument="mask_ratio",
            )
        return (torch.arange(num_regions * num_windows, device=device) % num_windows) >= num_windows - num_masked

    def token_index(self, num_regions: int, num_timepoints: int) -> torch.Tensor:
        """The token that covers each cell of the signal, `(V, T)` int64: `v * N + t // P`."""
        self.check_signal(num_regions, num_timepoints)
        regions, times = torch.arange(num_regions), torch.arange(num_timepoints)
        return regions[:, None] * (num_timepoints // self.patch_size) + (times // self.patch_size)[None, :]

    def output_mask(self, token_mask: torch.Tensor, num_regions: int, num_timepoints: int) -> torch.Tensor:
        """The `mask` output: `(B, L)` -> one value per token, `(B, V, N)`."""
        return token_mask.view(token_mask.shape[0], num_regions, -1)

    def mask_to_signal(self, mask: torch.Tensor) -> torch.Tensor:
        """The `mask` output `(B, V, N)` -> per timepoint `(B, V, T)`."""
        return mask.repeat_interleave(self.patch_size, dim=-1)


class TileLayout:
    """
    Token geometry of the 2-D tile layout: the region x time matrix is padded with `padding_value` to an `S x S`
    square (centred) and cut into `p x p` tiles, token `r * G + c` (row-major, G = S / p), with fixed 2-D sin-cos
    positions. Tiles made only of padding are tokens too; coordinates are not used.
    """

    name = "tile_2d"
    uses_coordinates = False
    forecast_strategy = "predict_last"

    def __init__(self, config: BrainLMConfig):
        self.patch_size, self.image_size, self.padding_value = (
            config.patch_size,
            config.image_size,
            config.padding_value,
        )
        self.grid_size = config.image_size // config.patch_size
        self.values_per_token = config.patch_size**2
        self.mask_strategies = MASK_STRATEGIES[config.token_layout]

    def num_tokens(self, num_regions: int, num_timepoints: int) -> int:
        return self.grid_size**2

    def check_signal(self, num_regions: int, num_timepoints: int) -> None:
        if num_regions > self.image_size or num_timepoints > self.image_size:
            raise InvalidInputError(
                f"A signal of {num_regions} regions x {num_timepoints} timepoints does not fit in the "
                f"{self.image_size} x {self.image_size} square of this model: use at most {self.image_size} regions "
                f"and {self.image_size} timepoints (crop the recording or use the processor's sliding windows).",
                argument="signal_values",
            )

    def padding(self, num_regions: int, num_timepoints: int) -> tuple[int, int]:
        """Rows above and columns left of the signal in the padded square (the rest goes below / right)."""
        return (self.image_size - num_regions) // 2, (self.image_size - num_timepoints) // 2

    def signal_to_tokens(self, signal_values: torch.Tensor) -> torch.Tensor:
        """`(B, V, T)` -> the padded `(S, S)` square cut into tiles `(B, G * G, p * p)`, row-major."""
        batch_size, num_regions, num_timepoints = signal_values.shape
        size, patch, grid = self.image_size, self.patch_size, self.grid_size
        top, left = self.padding(num_regions, num_timepoints)
        padding = (left, size - num_timepoints - left, top, size - num_regions - top)
        square = nn.functional.pad(signal_values, padding, value=self.padding_value)  # (B, S, S)
        tiles = square.view(batch_size, grid, patch, grid, patch).transpose(2, 3)  # (B, G, G, p, p)
        return tiles.reshape(batch_size, grid * grid, patch * patch)

    def tokens_to_signal(self, values: torch.Tensor, num_regions: int, num_timepoints: int) -> torch.Tensor:
        """Inverse of `signal_to_tokens`: `(B, G * G, p * p)` -> square, cropped to `(B, V, T)`."""
        size, patch, grid = self.image_size, self.patch_size, self.grid_size
        square = values.reshape(-1, grid, grid, patch, patch).transpose(2, 3).reshape(-1, size, size)
        top, left = self.padding(num_regions, num_timepoints)
        return square[:, top : top + num_regions, left : left + num_timepoints]

    def add_positions(
        self, tokens: torch.Tensor, num_regions: int, num_timepoints: int, per_region: torch.Tensor | None = None
    ) -> torch.Tensor:
        """`tokens` `(B, G * G, D)` + the fixed 2-D sin-cos position of each tile; `per_region` is not used."""
        return tokens + sincos_2d_encoding(self.grid_size, tokens.shape[-1], tokens.device).to(tokens.dtype)

    def build_embeddings(self, config: BrainLMConfig) -> nn.Module:
        return BrainLMTileEmbeddings(config, self)

    def data_tokens(self, num_regions: int, num_timepoints: int, device) -> torch.Tensor:
        """Which tiles hold at least one real value (not only padding), `(G * G,)` bool."""
        top, left = self.padding(num_regions, num_timepoints)
        cells = torch.arange(self.grid_size, device=device) * self.patch_size  # first row/column of each tile
        rows = (cells + self.patch_size > top) & (cells < top + num_regions)
        columns = (cells + self.patch_size > left) & (cells < left + num_timepoints)
        return (rows[:, None] & columns[None, :]).flatten()

    def forecast_pattern(self, num_regions: int, num_timepoints: int, mask_ratio: float, device) -> torch.Tensor:
        """`predict_last`: the original code's tile columns `[start, end)` in every tile row, `(L,)` bool."""
        patch = self.patch_size
        signal_end = self.padding(num_regions, num_timepoints)[1] + num_timepoints
        columns_end = math.ceil(signal_end / patch)
        mask_start = signal_end - int(mask_ratio * num_timepoints)
        num_columns = (columns_end * patch - mask_start) // patch + (1 if mask_start % patch else 0)
        columns = torch.arange(self.grid_size**2, device=device) % self.grid_size
        return (columns >= columns_end - num_columns) & (columns < columns_end)

    def token_index(self, num_regions: int, num_timepoints: int) -> torch.Tensor:
        """The tile that holds each cell of the signal, `(V, T)` int64: `r * G + c` in the padded square."""
        self.check_signal(num_regions, num_timepoints)
        top, left = self.padding(num_regions, num_timepoints)
        rows = (torch.arange(num_regions) + top) // self.patch_size
        columns = (torch.arange(num_timepoints) + left) // self.patch_size
        return rows[:, None] * self.grid_size + columns[None, :]

    def output_mask(self, token_mask: torch.Tensor, num_regions: int, num_timepoints: int) -> torch.Tensor:
        """The `mask` output: `(B, L)` -> per timepoint `(B, V, T)`."""
        tiles = token_mask.unsqueeze(-1).expand(-1, -1, self.values_per_token)
        return self.tokens_to_signal(tiles, num_regions, num_timepoints)

    def mask_to_signal(self, mask: torch.Tensor) -> torch.Tensor:
        """The `mask` output is already per timepoint, `(B, V, T)`."""
        return mask


TokenLayout = RegionWindowLayout | TileLayout


# the layout object of each name of `configuration_brainlm.TOKEN_LAYOUTS`, in that order
LAYOUTS = {layout.name: layout for layout in (RegionWindowLayout, TileLayout)}


def layout_for(config: BrainLMConfig) -> TokenLayout:
    """The token geometry that `config.token_layout` names."""
    return LAYOUTS[config.token_layout](config)


MAX_INPUT_MAGNITUDE = 1e15  # beyond it squared errors and LayerNorm variances overflow float32 (max 3.4e38)


def as_model_input(name: str, value, dtype: torch.dtype) -> torch.Tensor | None:
    """
    `value` as a floating-point tensor of the model's `dtype`: float64 (numpy's default), float16 and bfloat16
    inputs are cast, numpy arrays converted; integer, boolean or complex values are refused.
    """
    if value is None:
        return None
    if not isinstance(value, torch.Tensor):
        try:
            value = torch.as_tensor(value)
        except (TypeError, ValueError, RuntimeError) as error:
            raise TypeError(
                f"{name} must be a torch tensor, got {type(value).__name__}; pass a torch tensor."
            ) from error
    if value.is_complex() or not value.is_floating_point():
        raise InvalidInputError(
            f"{name} has dtype {value.dtype}; BrainLM reads real floating-point values: convert them with "
            f"{name}.float() (and check that they are the signal you mean to pass).",
            argument=name,
        )
    return value.to(dtype)


def validate_signal(layout: TokenLayout, signal_values: torch.Tensor, coordinates: torch.Tensor | None) -> None:
    """Raise an `InvalidInputError` naming the problem and the fix for inputs the model cannot read."""
    if signal_values.dim() != 3:
        raise InvalidInputError(
            f"signal_values must have shape (batch, regions, timepoints), got {tuple(signal_values.shape)}; "
            "add a batch dimension with signal_values[None] for a single recording.",
            argument="signal_values",
        )
    batch_size, num_regions, num_timepoints = signal_values.shape
    if 0 in signal_values.shape:
        raise InvalidInputError(
            f"signal_values {tuple(signal_values.shape)} is empty: every batch needs at least one recording, one "
            "region and one window of timepoints.",
            argument="signal_values",
        )
    layout.check_signal(num_regions, num_timepoints)
    if not layout.uses_coordinates:
        coordinates = None  # any value is accepted and ignored
    elif coordinates is None:
        raise InvalidInputError(
            "coordinates of shape (regions, 3) or (batch, regions, 3) are required (MNI mm).", argument="coordinates"
        )
    elif coordinates.shape[-2:] != (num_regions, 3) or coordinates.dim() not in (2, 3):
        raise InvalidInputError(
            f"coordinates must have shape ({num_regions}, 3) or ({batch_size}, {num_regions}, 3) to match "
            f"signal_values {tuple(signal_values.shape)}, got {tuple(coordinates.shape)}.",
            argument="coordinates",
        )
    elif coordinates.dim() == 3 and coordinates.shape[0] not in (1, batch_size):
        raise InvalidInputError(
            f"coordinates batch size {coordinates.shape[0]} does not match signal_values ({batch_size}).",
            argument="coordinates",
        )
    for name, tensor in (("signal_values", signal_values), ("coordinates", coordinates)):
        if tensor is not None:
            check_values(name, tensor, "regions/timepoints")


def checked_timepoint_mask(timepoint_mask, signal_values: torch.Tensor) -> torch.Tensor | None:
    """
    `timepoint_mask` `(B, T)` (1 = real timepoint, 0 = padding: booleans, integers or floats) as a tensor of the
    signal's dtype; its shape and dtype are checked, and its values are 0 or 1 (one host sync, skipped in compiled and
    exported graphs): NaN or a weight such as 0.5 would scale the loss and the pooled mean silently.
    """
    if timepoint_mask is None:
        return None
    timepoint_mask = torch.as_tensor(timepoint_mask)  # bool, integer or float 0/1
    if timepoint_mask.is_complex():
        raise InvalidInputError(
            f"timepoint_mask must hold 0/1 (booleans, integers or floats), got dtype {timepoint_mask.dtype}.",
            argument="timepoint_mask",
        )
    batch_size, _, num_timepoints = signal_values.shape
    if tuple(timepoint_mask.shape) != (batch_size, num_timepoints):
        raise InvalidInputError(
            f"timepoint_mask must have shape (batch, timepoints) = ({batch_size}, {num_timepoints}) to match "
            f"signal_values {tuple(signal_values.shape)}, got {tuple(timepoint_mask.shape)}.",
            argument="timepoint_mask",
        )
    if not torch.compiler.is_compiling() and bool(((timepoint_mask != 0) & (timepoint_mask != 1)).any()):
        values = timepoint_mask[(timepoint_mask != 0) & (timepoint_mask != 1)].unique()[:5].tolist()
        raise InvalidInputError(
            f"timepoint_mask must hold only 0 (padding) and 1 (real timepoint), got {values}: give the mask of "
            "BrainLMFeatureExtractor (return_timepoint_mask=True), or build it from the recordings' lengths.",
            argument="timepoint_mask",
        )
    return timepoint_mask.to(device=signal_values.device, dtype=signal_values.dtype)


def check_values(name: str, tensor: torch.Tensor, where: str) -> None:
    """
    Refuse NaN/Inf, and magnitudes above `MAX_INPUT_MAGNITUDE`, in `tensor` with one host sync (skipped in compiled
    and exported graphs, which cannot sync).
    """
    if torch.compiler.is_compiling():
        return
    magnitude = tensor.detach().abs().amax().item() if tensor.numel() else 0.0  # NaN propagates through amax
    if not math.isfinite(magnitude):
        raise InvalidInputError(
            f"{name} contains NaN or Inf values; interpolate or drop the affected {where} first.", argument=name
        )
    if magnitude > MAX_INPUT_MAGNITUDE:
        raise InvalidInputError(
            f"{name} holds values up to {magnitude:.3g}, beyond {MAX_INPUT_MAGNITUDE:.0e}: the loss and LayerNorm "
            "would overflow to NaN. Normalise the recordings first (BrainLMFeatureExtractor).",
            argument=name,
        )


def batched_coordinates(coordinates: torch.Tensor | None, dtype: torch.dtype) -> torch.Tensor | None:
    """Coordinates `(V, 3)` or `(B, V, 3)` -> `(1 or B, V, 3)` in `dtype`."""
    if coordinates is None:
        return None
    coordinates = coordinates.to(dtype)
    return coordinates.unsqueeze(0) if coordinates.dim() == 2 else coordinates


def mask_tokens(
    masked_pattern: torch.Tensor | None,
    noise: torch.Tensor | None,
    len_keep: int,
    batch_size: int,
    num_tokens: int,
    device: torch.device,
) -> tuple[torch.Tensor | None, torch.Tensor, torch.Tensor]:
    """
    Choose the visible tokens: by a fixed `masked_pattern` `(L,)` (True = masked; visible tokens keep canonical
    order) or else by ascending `noise` `(B, L)` (MAE: the `len_keep` smallest, in that order; drawn if None).

    Returns `ids_keep` `(B, K)` (None when every token is kept in canonical order), `token_mask` `(B, L)` (1 =
    masked) and `ids_restore` `(B, L)`.
    """
    if len_keep == num_tokens:  # nothing masked: canonical order, no shuffle
        ids_restore = torch.arange(num_tokens, device=device).expand(batch_size, -1)
        return None, torch.zeros(batch_size, num_tokens, device=device), ids_restore
    if masked_pattern is not None:
        ids_shuffle = torch.argsort(masked_pattern.to(torch.int8), stable=True).expand(batch_size, -1)
    else:
        if noise is None:
            noise = torch.rand(batch_size, num_tokens, device=device)
        elif noise.shape != (batch_size, num_tokens):
            raise InvalidArgumentError(
                f"noise must have shape ({batch_size}, {num_tokens}) (batch, tokens), got {tuple(noise.shape)}.",
                argument="noise",
            )
        else:
            check_values("noise", noise, "tokens (draw it with torch.rand)")
        ids_shuffle = torch.argsort(noise.to(device), dim=1)  # (B, L), ascending noise = visible first
    ids_restore = torch.argsort(ids_shuffle, dim=1)  # (B, L)
    token_mask = (ids_restore >= len_keep).to(torch.float32)  # masked iff its shuffled position is past len_keep
    return ids_shuffle[:, :len_keep], token_mask, ids_restore


def keep_tokens(tokens: torch.Tensor, ids_keep: torch.Tensor | None) -> torch.Tensor:
    """The visible tokens `(B, K, H)` of `tokens` `(B, L, H)`, in the order of `ids_keep` `(B, K)` (None: all)."""
    if ids_keep is None:
        return tokens
    return torch.gather(tokens, 1, ids_keep.unsqueeze(-1).expand(-1, -1, tokens.shape[-1]))


class BrainLMRegionWindowEmbeddings(nn.Module):
    """Region-window tokens: window projection + projection of the scaled region xyz + sinusoid of the window index."""

    def __init__(self, config: BrainLMConfig, layout: RegionWindowLayout):
        super().__init__()
        self.layout, self.coordinate_scale = layout, config.coordinate_scale
        self.signal_projection = nn.Linear(config.patch_size, config.hidden_size)
        self.coordinate_projection = nn.Linear(3, config.hidden_size)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, config.hidden_size))

    def forward(
        self, signal_values: torch.Tensor, coordinates: torch.Tensor, ids_keep: torch.Tensor | None = None
    ) -> torch.Tensor:
        """
        `(B, V, T)`, `(B or 1, V, 3)`, visible tokens `(B, K)` (None: all, canonical order) -> encoder input
        `(B, 1 + K, H)`, CLS first.
        """
        _, num_regions, num_timepoints = signal_values.shape
        embeddings = self.signal_projection(self.layout.signal_to_tokens(signal_values))  # (B, L, H)
        xyz = self.coordinate_projection(coordinates * self.coordinate_scale)  # (B or 1, V, H)
        embeddings = self.layout.add_positions(embeddings, num_regions, num_timepoints, per_region=xyz)
        embeddings = keep_tokens(embeddings, ids_keep)  # (B, K, H)
        return torch.cat([self.cls_token.to(embeddings.dtype).expand(len(embeddings), -1, -1), embeddings], dim=1)


class BrainLMTileEmbeddings(nn.Module):
    """2-D tile tokens: the projection of each tile of the padded square + fixed 2-D sin-cos positions."""

    def __init__(self, config: BrainLMConfig, layout: TileLayout):
        super().__init__()
        self.layout = layout
        self.tile_projection = nn.Linear(layout.values_per_token, config.hidden_size)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, config.hidden_size))

    def forward(
        self,
        signal_values: torch.Tensor,
        coordinates: torch.Tensor | None = None,
        ids_keep: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """`(B, V, T)`, visible tokens `(B, K)` -> encoder input `(B, 1 + K, H)`; `coordinates` is not used."""
        _, num_regions, num_timepoints = signal_values.shape
        embeddings = self.tile_projection(self.layout.signal_to_tokens(signal_values))  # (B, G * G, H)
        embeddings = keep_tokens(self.layout.add_positions(embeddings, num_regions, num_timepoints), ids_keep)
        return torch.cat([self.cls_token.to(embeddings.dtype).expand(len(embeddings), -1, -1), embeddings], dim=1)


def eager_attention_forward(
    module: nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float,
    dropout: float = 0.0,
    **kwargs,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Softmax attention on `(B, heads, S, D)` tensors; returns `(B, S, heads, D)` and the weights."""
    attn_weights = torch.matmul(query, key.transpose(2, 3)) * scaling
    if attention_mask is not None:
        attn_weights = attn_weights + attention_mask
    attn_weights = nn.functional.softmax(attn_weights, dim=-1, dtype=torch.float32).to(query.dtype)
    attn_weights = nn.functional.dropout(attn_weights, p=dropout, training=module.training)
    attn_output = torch.matmul(attn_weights, value).transpose(1, 2).contiguous()
    return attn_output, attn_weights


def cls_attention_weights(query: torch.Tensor, key: torch.Tensor, scaling: float) -> torch.Tensor:
    """
    Row 0 (the CLS query) of softmax attention on `(B, heads, S, D)` tensors, `(B, heads, S)`, computed as
    `eager_attention_forward` computes its weights (no mask, float32 softmax; before attention dropout) at O(S) cost
    instead of O(S^2).
    """
    scores = torch.matmul(query[:, :, :1], key.transpose(2, 3)) * scaling  # (B, heads, 1, S)
    return nn.functional.softmax(scores, dim=-1, dtype=torch.float32).to(query.dtype).squeeze(2)


class BrainLMAttention(nn.Module):
    """Bidirectional multi-head attention through transformers' attention interface (eager, sdpa, flex, flash)."""

    def __init__(self, config: BrainLMConfig, hidden_size: int, num_heads: int):
        super().__init__()
        self.config = config
        self.head_dim = hidden_size // num_heads
        self.scaling = self.head_dim**-0.5
        self.is_causal = False  # sdpa/flash default to causal without it
        self.q_proj = nn.Linear(hidden_size, hidden_size, bias=config.qkv_bias)
        self.k_proj = nn.Linear(hidden_size, hidden_size, bias=config.qkv_bias)
        self.v_proj = nn.Linear(hidden_size, hidden_size, bias=config.qkv_bias)
        self.o_proj = nn.Linear(hidden_size, hidden_size)
        kernel = config.value_conv_kernel_size
        self.value_conv = (
            nn.Conv2d(num_heads, num_heads, (kernel, 1), padding=(kernel // 2, 0), groups=num_heads, bias=False)
            if kernel
            else None
        )

    def forward(
        self,
        hidden_states: torch.Tensor,
        output_attentions: bool = False,
        output_cls_attentions: bool = False,
        **kwargs,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """
        `(B, S, hidden)` -> `(B, S, hidden)` and the attention weights: with `output_attentions`, the whole matrix
        `(B, heads, S, S)`, which only eager attention computes, so this call then uses eager attention whatever the
        configured backend; else with `output_cls_attentions`, only its CLS row `(B, heads, S)`, computed beside the
        configured backend (`cls_attention_weights`); else `None`.
        """
        input_shape = hidden_states.shape[:-1]
        hidden_shape = (*input_shape, -1, self.head_dim)
        query = self.q_proj(hidden_states).view(hidden_shape).transpose(1, 2)  # (B, heads, S, D)
        key = self.k_proj(hidden_states).view(hidden_shape).transpose(1, 2)
        values = self.v_proj(hidden_states)  # (B, S, heads * D)
        value = values.view(hidden_shape).transpose(1, 2)

        implementation = "eager" if output_attentions else self.config._attn_implementation
        attention_interface: Callable = ALL_ATTENTION_FUNCTIONS.get_interface(implementation, eager_attention_forward)
        attn_output, attn_weights = attention_interface(
            self,
            query,
            key,
            value,
            None,
            dropout=self.config.attention_probs_dropout_prob if self.training else 0.0,
            scaling=self.scaling,
            **kwargs,
        )  # (B, S, heads, D)
        if output_cls_attentions and not output_attentions:
            attn_weights = cls_attention_weights(query, key, self.scaling)
        attn_output = attn_output.reshape(*input_shape, -1)
        if self.value_conv is not None:
            attn_output = attn_output + self.convolve_values(values)
        return self.o_proj(attn_output), attn_weights

    def convolve_values(self, values: torch.Tensor) -> torch.Tensor:
        """
        `value_conv` (each head's kernel along the tokens, the same for the head's D channels) on the values
        `(B, S, heads * D)`, returned in that layout. Computed as a depthwise convolution over `heads * D` channels
        on the values' own memory, viewed as a channels-last `(B, heads * D, S, 1)` image (its output comes back
        channels-last too): no transposing copies.
        """
        weight = self.value_conv.weight.repeat_interleave(self.head_dim, dim=0)  # (heads * D, 1, kernel, 1)
        image = values.unsqueeze(2).permute(0, 3, 1, 2)  # (B, heads * D, S, 1), channels-last strides
        convolved = nn.functional.conv2d(image, weight, padding=self.value_conv.padding, groups=len(weight))
        return convolved.permute(0, 2, 3, 1).squeeze(2)


class BrainLMMLP(nn.Module):
    def __init__(self, config: BrainLMConfig, hidden_size: int, intermediate_size: int):
        super().__init__()
        self.fc1 = nn.Linear(hidden_size, intermediate_size)
        self.activation_fn = ACT2FN[config.hidden_act]
        self.fc2 = nn.Linear(intermediate_size, hidden_size)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.activation_fn(self.fc1(hidden_states)))


class BrainLMLayer(GradientCheckpointingLayer):
    """Pre-LayerNorm transformer block (ViT): `x + attention(norm(x))`, then `x + mlp(norm(x))`."""

    def __init__(self, config: BrainLMConfig, hidden_size: int, num_heads: int, intermediate_size: int):
        super().__init__()
        self.attention = BrainLMAttention(config, hidden_size, num_heads)
        self.attention_norm = nn.LayerNorm(hidden_size, eps=config.layer_norm_eps)
        self.mlp = BrainLMMLP(config, hidden_size, intermediate_size)
        self.mlp_norm = nn.LayerNorm(hidden_size, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, hidden_states: torch.Tensor, **kwargs) -> tuple[torch.Tensor, torch.Tensor | None]:
        """`(B, S, hidden)` -> `(B, S, hidden)` and the attention weights."""
        update, attn_weights = self.attention(self.attention_norm(hidden_states), **kwargs)
        hidden_states = hidden_states + self.dropout(update)
        hidden_states = hidden_states + self.dropout(self.mlp(self.mlp_norm(hidden_states)))
        return hidden_states, attn_weights


class BrainLMPostNormLayer(BrainLMLayer):
    """
    Post-LayerNorm transformer block (BERT, the released 13M checkpoint): `norm(x + attention(x))`, then
    `norm(x + mlp(x))`. Same parameters as `BrainLMLayer`.
    """

    def forward(self, hidden_states: torch.Tensor, **kwargs) -> tuple[torch.Tensor, torch.Tensor | None]:
        update, attn_weights = self.attention(hidden_states, **kwargs)
        hidden_states = self.attention_norm(hidden_states + self.dropout(update))
        hidden_states = self.mlp_norm(hidden_states + self.dropout(self.mlp(hidden_states)))
        return hidden_states, attn_weights


def transformer_layers(config: BrainLMConfig, hidden_size: int, num_heads: int, intermediate_size: int, depth: int):
    """`depth` blocks of the kind `config.norm_position` names."""
    layer_class = BrainLMPostNormLayer if config.norm_position == "post" else BrainLMLayer
    return nn.ModuleList(layer_class(config, hidden_size, num_heads, intermediate_size) for _ in range(depth))


def run_layers(
    layers: nn.ModuleList,
    hidden_states: torch.Tensor,
    output_hidden_states: bool = False,
    output_attentions: bool = False,
    output_cls_attentions: bool = False,
    **kwargs,
) -> tuple[torch.Tensor, tuple | None, tuple | None, tuple | None]:
    """
    Apply `layers`; returns the last output and, each when asked for (else `None`), the input and each layer's
    output, each layer's attention weights `(B, heads, S, S)` and their CLS rows `(B, heads, S)`.
    """
    all_hidden_states = (hidden_states,) if output_hidden_states else None
    all_attentions = () if output_attentions else None
    all_cls_attentions = () if output_cls_attentions else None
    for layer in layers:
        hidden_states, attn_weights = layer(
            hidden_states, output_attentions=output_attentions, output_cls_attentions=output_cls_attentions, **kwargs
        )
        if output_hidden_states:
            all_hidden_states += (hidden_states,)
        if output_attentions:
            all_attentions += (attn_weights,)
        if output_cls_attentions:
            all_cls_attentions += (attn_weights[:, :, 0] if output_attentions else attn_weights,)
    return hidden_states, all_hidden_states, all_attentions, all_cls_attentions


class BrainLMPreTrainedModel(PreTrainedModel):
    config: BrainLMConfig
    config_class = BrainLMConfig
    base_model_prefix = "brainlm"
    main_input_name = "signal_values"
    input_modalities = ("time",)
    supports_gradient_checkpointing = True
    _no_split_modules = [
        "BrainLMRegionWindowEmbeddings",
        "BrainLMTileEmbeddings",
        "BrainLMLayer",
        "BrainLMPostNormLayer",
    ]
    _supports_sdpa = True
    _supports_flash_attn = True
    _supports_flex_attn = True
    _supports_attention_backend = True

    def _init_weights(self, module):
        super()._init_weights(module)
        if isinstance(module, BrainLMTileEmbeddings):  # MAE: the tile projection is initialised like a conv
            init.xavier_uniform_(module.tile_projection.weight)
        if isinstance(module, (BrainLMRegionWindowEmbeddings, BrainLMTileEmbeddings)):
            init.normal_(module.cls_token, std=self.config.initializer_range)
        elif isinstance(module, BrainLMDecoder):
            init.normal_(module.mask_token, std=self.config.initializer_range)

    # parts that a checkpoint may lack as a whole (a new task head, or a decoder when pretraining continues from an
    # encoder or classification checkpoint): initialised with a warning that names them; a partly present one is an
    # error like any other missing key
    _new_part_prefixes: tuple[str, ...] = ()
    # `(pretrained_model_name_or_path, kwargs) -> (what to load, kwargs)`, called first by `from_pretrained` when set:
    # the installed package sets it (brainlm_hf.hub.resolve_pretrained: short names, original checkpoints converted
    # on load); it stays None in the copy of this file saved beside a checkpoint for remote code.
    _resolve_pretrained: Callable | None = None

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *args, **kwargs):
        """
        `PreTrainedModel.from_pretrained`, made strict: a missing, unexpected or shape-mismatched key raises a
        `WeightsMismatchError` (an `InvalidFileError`, so a `ValueError`, and a `RuntimeError` as transformers raises)
        that lists it, instead of a silently re-initialised weight. Let through: the decoder's keys when an encoder
        model is loaded from a pretraining checkpoint, a part the checkpoint lacks as a whole (`_new_part_prefixes`:
        a new classification head, a new decoder), initialised with a warning that names it, and shape mismatches
        when `ignore_mismatched_sizes=True` is passed explicitly.

        With `output_loading_info=True` the caller asked for transformers' loading report: `(model, info)` is
        returned and any problem is a warning instead of an error, weights that share no key with the model (a
        checkpoint of another architecture) included. `from_pretrained(None, config=config, state_dict={})` asks for
        no weight: the model is built and every weight initialised by `_init_weights`, as transformers does.

        Weights that hold NaN or Inf are an error that names the tensors, whatever else is asked (one pass over the
        weights, see `check_finite_weights`).

        With brainlm_hf installed, `pretrained_model_name_or_path` may also be an original BrainLM checkpoint (a
        folder, or a Hub id with `subfolder`), converted on load and cached, or a released model's short name
        (`"brainlm-13m"`, `"brainlm-111m"`, `"brainlm-650m"`): see `brainlm_hf.hub.resolve_pretrained`.
        """
        if cls._resolve_pretrained is not None:
            pretrained_model_name_or_path, kwargs = cls._resolve_pretrained(pretrained_model_name_or_path, kwargs)
        report = kwargs.pop("output_loading_info", False)
        checked = ["missing_keys", "unexpected_keys"]
        if not kwargs.get("ignore_mismatched_sizes", False):  # report shape mismatches ourselves, listing them
            checked.append("mismatched_keys")
            kwargs["ignore_mismatched_sizes"] = True
        no_weights_asked = pretrained_model_name_or_path is None and kwargs.get("state_dict") == {}
        model, info = super().from_pretrained(pretrained_model_name_or_path, *args, output_loading_info=True, **kwargs)
        check_finite_weights(model, pretrained_model_name_or_path)
        if no_weights_asked:
            return (model, info) if report else model
        problems = {name: sorted(map(str, info[name])) for name in checked}
        model_keys = set(model.state_dict())
        if model_keys and set(problems["missing_keys"]) >= model_keys:
            message = (
                f"The checkpoint holds no weight of {cls.__name__}: it is not a brainlm_hf checkpoint (its keys: "
                f"{problems['unexpected_keys'][:8]}{' ...' if len(problems['unexpected_keys']) > 8 else ''}). "
                "Convert an original BrainLM checkpoint with `brainlm convert` (brainlm_hf.convert) first."
            )
            if not report:
                raise WeightsMismatchError(message)
            logger.warning(message + " Returned anyway, as output_loading_info=True asks; the keys are in `info`.")
            return model, info
        problems["missing_keys"] = cls._new_parts(problems["missing_keys"], model_keys)
        problems = {name: keys for name, keys in problems.items() if keys}
        if problems:
            details = "; ".join(f"{name}: {keys}" for name, keys in problems.items())
            message = (
                f"Loading {cls.__name__} did not match the checkpoint's weights ({details}). Check that the "
                "checkpoint was saved by this architecture, or convert it first (see brainlm_hf.convert)."
            )
            if not report:
                raise WeightsMismatchError(message)
            logger.warning(message + " Returned anyway, as output_loading_info=True asks; the keys are in `info`.")
        return (model, info) if report else model

    @classmethod
    def _new_parts(cls, missing: list[str], model_keys: set[str]) -> list[str]:
        """`missing` without the parts (`_new_part_prefixes`) that are missing as a whole, each warned about."""
        for prefix in cls._new_part_prefixes:
            part = {key for key in model_keys if key.startswith(prefix)}
            if part and part <= set(missing):
                missing = sorted(set(missing) - part)
                logger.warning(
                    f"{cls.__name__}: the checkpoint has no `{prefix}` weights; these {len(part)} weights were newly "
                    f"initialised ({sorted(part)[:4]}{' ...' if len(part) > 4 else ''}): train them before use."
                )
        return missing

    @property
    def layout(self) -> TokenLayout:
        """The token geometry of this model (`RegionWindowLayout` or `TileLayout`)."""
        return self.base_model.embeddings.layout

    def num_tokens(self, num_regions: int, num_timepoints: int) -> int:
        """Number of tokens L (CLS excluded) of a `(V, T)` input: the width of `noise` and `token_mask`."""
        return self.layout.num_tokens(num_regions, num_timepoints)

    def mask_to_signal(self, mask: torch.Tensor) -> torch.Tensor:
        """The `mask` output of either layout as a per-timepoint mask `(B, V, T)` (1 = masked)."""
        return self.layout.mask_to_signal(mask)

    def _model_inputs(self, signal_values, coordinates) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Inputs as tensors of the model's dtype (see `as_model_input`)."""
        return as_model_input("signal_values", signal_values, self.dtype), as_model_input(
            "coordinates", coordinates, self.dtype
        )


class BrainLMModel(BrainLMPreTrainedModel):
    """
    The BrainLM encoder. Without `mask_ratio` or `noise` it embeds every token in canonical order (deterministic).
    """

    _keys_to_ignore_on_load_unexpected = [r"^decoder\."]

    def __init__(self, config: BrainLMConfig):
        super().__init__(config)
        self.embeddings = layout_for(config).build_embeddings(config)
        self.layers = transformer_layers(
            config, config.hidden_size, config.num_attention_heads, config.intermediate_size, config.num_hidden_layers
        )
        self.layernorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.post_init()

    def forward(
        self,
        signal_values: torch.Tensor,
        coordinates: torch.Tensor | None = None,
        noise: torch.Tensor | None = None,
        mask_ratio: float | None = None,
        mask_strategy: str | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        timepoint_mask: torch.Tensor | None = None,
        output_cls_attentions: bool = False,
        **kwargs,
    ) -> BrainLMModelOutput | tuple:
        r"""
        Args:
            signal_values (`torch.FloatTensor` of shape `(B, V, T)`): parcel time series.
            coordinates (`torch.FloatTensor` of shape `(V, 3)` or `(B, V, 3)`):
                Region xyz (MNI mm). Required by the region-window layout, ignored by the tile layout.
            noise (`torch.FloatTensor` of shape `(B, L)`, *optional*):
                Random-masking noise (small = visible), for reproducible masks. Giving it turns masking on with
                `config.mask_ratio` unless `mask_ratio` is also given.
            mask_ratio (`float`, *optional*):
                Fraction of tokens to mask; default 0 (no masking) unless `noise` is given. 0 never masks nor
                shuffles, whatever the strategy.
            mask_strategy (`str`, *optional*): defaults to `config.mask_strategy`.
            timepoint_mask (`torch.FloatTensor` of shape `(B, T)`, *optional*): 1 = real timepoint, 0 = padding of a
                short recording (the processor's `short_recordings="pad"`). The encoder sees the padding as signal;
                the mask is returned for `pool` (mean pooling leaves out tokens made only of padding) and the
                reconstruction loss (padded timepoints are left out).
            output_cls_attentions (`bool`, defaults to `False`):
                Return `cls_attentions`, the CLS row of each layer's attention, computed beside the configured
                attention backend (which keeps running) at O(tokens) extra cost per layer: what attention analyses
                need, without the `(1 + K) x (1 + K)` matrices of `output_attentions`.
        """
        output_attentions = output_attentions if output_attentions is not None else self.config.output_attentions
        output_hidden_states = (
            output_hidden_states if output_hidden_states is not None else self.config.output_hidden_states
        )
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        if output_attentions and self.config._attn_implementation != "eager":
            logger.warning_once(
                f"output_attentions=True: the {self.config._attn_implementation!r} attention backend cannot return "
                "attention weights, so the calls that ask for them use eager attention (the backend stays set)."
            )
        signal_values, coordinates = self._model_inputs(signal_values, coordinates)
        if self.config.validate_inputs:
            validate_signal(self.layout, signal_values, coordinates)
        timepoint_mask = checked_timepoint_mask(timepoint_mask, signal_values)
        if mask_ratio is None:
            mask_ratio = self.config.mask_ratio if noise is not None else 0.0

        batch_size, num_regions, num_timepoints = signal_values.shape
        ids_keep, token_mask, ids_restore = self._choose_visible_tokens(
            batch_size, num_regions, num_timepoints, mask_ratio, mask_strategy, noise, signal_values.device
        )
        coordinates = batched_coordinates(coordinates, signal_values.dtype)  # (1 or B, V, 3)
        embeddings = self.embeddings(signal_values, coordinates, ids_keep)  # (B, 1 + K, H)
        hidden_states, all_hidden_states, all_attentions, all_cls_attentions = run_layers(
            self.layers, embeddings, output_hidden_states, output_attentions, output_cls_attentions, **kwargs
        )
        output = BrainLMModelOutput(
            last_hidden_state=self.layernorm(hidden_states),
            mask=self.layout.output_mask(token_mask, num_regions, num_timepoints),
            token_mask=token_mask,
            ids_restore=ids_restore,
            hidden_states=all_hidden_states,
            attentions=all_attentions,
            timepoint_mask=timepoint_mask,
            cls_attentions=all_cls_attentions,
        )
        return output if return_dict else output.to_tuple()

    def get_input_embeddings(self) -> nn.Module:
        """The module that embeds the signal (and prepends the CLS token): its output is the encoder's input."""
        return self.embeddings

    def set_input_embeddings(self, value: nn.Module) -> None:
        """Replace the input embeddings by `value`, called like them and carrying the token geometry `layout`."""
        if not isinstance(getattr(value, "layout", None), TokenLayout):
            raise InvalidArgumentError(
                f"set_input_embeddings: {type(value).__name__} has no token `layout`, which the model reads from its "
                "input embeddings: set `layout` on it (e.g. `value.layout = model.get_input_embeddings().layout`).",
                argument="value",
            )
        self.embeddings = value

    def pool(
        self,
        outputs: BrainLMModelOutput,
        num_regions: int,
        num_timepoints: int,
        pooling: str,
        layer: int | None = None,
    ) -> torch.Tensor:
        """
        One embedding per sample, `(B, H)`, from the output of `forward` on a `(B, V, T)` input: `"cls"` takes the
        CLS row, `"mean"` averages the visible tokens that hold signal (tiles made only of padding never count, nor
        tokens whose timepoints are all padding by `outputs.timepoint_mask`; when masking leaves no such token
        visible, the CLS row is used instead, never NaN). `layer` pools
        `outputs.hidden_states[layer]` (`forward` with `output_hidden_states=True`; `-1` is the last layer's output
        before the final LayerNorm) instead of `last_hidden_state`.
        """
        hidden = outputs.last_hidden_state if layer is None else outputs.hidden_states[layer]  # (B, 1 + K, H)
        if pooling == "cls":
            return hidden[:, 0]
        if pooling not in POOLINGS:
            raise InvalidArgumentError(f"pooling must be one of {POOLINGS}, got {pooling!r}.", argument="pooling")
        data = self.layout.data_tokens(num_regions, num_timepoints, hidden.device)  # (L,) in canonical order
        if outputs.timepoint_mask is not None:
            data = data & self._tokens_with_real_timepoints(outputs.timepoint_mask, num_regions)  # (B, L)
        visible = torch.argsort(outputs.ids_restore, dim=1)[:, : hidden.shape[1] - 1]  # (B, K): token of each row
        weights = torch.gather(data.expand(len(visible), -1), 1, visible).to(hidden.dtype).unsqueeze(-1)  # (B, K, 1)
        count = weights.sum(1)  # (B, 1); 0 when masking left no visible token that holds data
        mean = (hidden[:, 1:] * weights).sum(1) / count.clamp_min(1)
        return torch.where(count > 0, mean, hidden[:, 0])  # no data token visible: the CLS row, never NaN

    def _tokens_with_real_timepoints(self, timepoint_mask: torch.Tensor, num_regions: int) -> torch.Tensor:
        """`(B, L)` bool: the tokens that cover at least one real timepoint of `timepoint_mask` `(B, T)`."""
        index = self.layout.token_index(num_regions, timepoint_mask.shape[1]).to(timepoint_mask.device)  # (V, T)
        values = timepoint_mask[:, None, :].expand(-1, num_regions, -1).flatten(1)  # (B, V * T)
        tokens = timepoint_mask.new_zeros(len(timepoint_mask), self.layout.num_tokens(*index.shape))
        return tokens.scatter_reduce(1, index.flatten().expand(len(values), -1), values, "amax") > 0

    def _choose_visible_tokens(self, batch_size, num_regions, num_timepoints, mask_ratio, strategy, noise, device):
        strategy = strategy or self.config.mask_strategy
        if not 0.0 <= mask_ratio < 1.0:
            raise InvalidArgumentError(f"mask_ratio must be in [0, 1), got {mask_ratio}.", argument="mask_ratio")
        allowed = self.layout.mask_strategies
        if strategy not in allowed:
            raise InvalidArgumentError(
                f"mask_strategy must be one of {allowed} for the {self.layout.name} layout, got {strategy!r}.",
                argument="mask_strategy",
            )
        num_tokens = self.layout.num_tokens(num_regions, num_timepoints)
        pattern = None
        if mask_ratio == 0:
            len_keep = num_tokens
        elif strategy == "random":
            len_keep = int(num_tokens * (1 - mask_ratio))
        else:  # a fixed pattern; its size is computed on the host from Python integers, no device sync
            pattern = self.layout.forecast_pattern(num_regions, num_timepoints, mask_ratio, "cpu")
            len_keep = num_tokens - int(pattern.sum())
            pattern = pattern.to(device)
        return mask_tokens(pattern, noise, len_keep, batch_size, num_tokens, device)


class BrainLMDecoder(nn.Module):
    """
    MAE decoder: project, append mask tokens, unshuffle, add positions (region-window layout: region xyz projection
    + window-index sinusoid; tile layout: fixed 2-D sin-cos), transformer blocks, predict every token's values.
    """

    def __init__(self, config: BrainLMConfig, layout: TokenLayout):
        super().__init__()
        self.layout, self.coordinate_scale = layout, config.coordinate_scale
        hidden = config.decoder_hidden_size
        self.decoder_embed = nn.Linear(config.hidden_size, hidden)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, hidden))
        self.coordinate_projection = nn.Linear(3, hidden) if layout.uses_coordinates else None
        self.layers = transformer_layers(
            config, hidden, config.decoder_num_attention_heads, config.decoder_intermediate_size,
            config.decoder_num_hidden_layers,
        )  # fmt: skip
        self.decoder_norm = nn.LayerNorm(hidden, eps=config.layer_norm_eps)
        if config.decoder_head == "mlp":
            self.decoder_pred = nn.Sequential(
                nn.Linear(hidden, hidden // 2), nn.LeakyReLU(0.1), nn.Linear(hidden // 2, layout.values_per_token)
            )
        else:
            self.decoder_pred = nn.Linear(hidden, layout.values_per_token)

    def forward(
        self, latent: torch.Tensor, ids_restore: torch.Tensor, coordinates: torch.Tensor | None, signal_shape, **kwargs
    ) -> torch.Tensor:
        """Encoder output `(B, 1 + K, H)` -> reconstruction `(B, V, T)` (`signal_shape`)."""
        batch_size, num_regions, num_timepoints = signal_shape
        hidden_states = self.decoder_embed(latent)  # (B, 1 + K, Hd)
        num_tokens, hidden = ids_restore.shape[1], hidden_states.shape[2]
        mask_tokens = self.mask_token.to(hidden_states.dtype).expand(batch_size, num_tokens + 1 - latent.shape[1], -1)
        tokens = torch.cat([hidden_states[:, 1:], mask_tokens], dim=1)  # (B, L, Hd), shuffled order
        tokens = torch.gather(tokens, 1, ids_restore.unsqueeze(-1).expand(-1, -1, hidden))  # canonical order
        xyz = None
        if self.coordinate_projection is not None:
            coordinates = batched_coordinates(coordinates, self.coordinate_projection.weight.dtype)
            xyz = self.coordinate_projection(coordinates * self.coordinate_scale)  # (B or 1, V, Hd)
        tokens = self.layout.add_positions(tokens, num_regions, num_timepoints, per_region=xyz)
        hidden_states = torch.cat([hidden_states[:, :1], tokens], dim=1)  # (B, 1 + L, Hd)

        hidden_states = run_layers(self.layers, hidden_states, **kwargs)[0]
        values = self.decoder_pred(self.decoder_norm(hidden_states[:, 1:]))  # (B, L, P or p * p)
        return self.layout.tokens_to_signal(values, num_regions, num_timepoints)


def masked_reconstruction_loss(
    model: BrainLMPreTrainedModel, logits: torch.Tensor, signal_values: torch.Tensor, outputs: BrainLMModelOutput
) -> torch.Tensor | None:
    """
    Masked MSE (or MAE) of the reconstruction `(B, V, T)` over the masked timepoints that are not padding
    (`outputs.timepoint_mask`); `None` when nothing is masked, 0 when every masked timepoint is padding.
    """
    if outputs.last_hidden_state.shape[1] - 1 == outputs.ids_restore.shape[1]:
        return None
    mask = model.mask_to_signal(outputs.mask)  # (B, V, T)
    if outputs.timepoint_mask is not None:
        mask = mask * outputs.timepoint_mask[:, None, :]
    error = logits - signal_values
    error = error.abs() if model.config.reconstruction_loss == "mae" else error.square()
    return (error * mask).sum() / mask.sum().clamp_min(1)


class BrainLMForMaskedSignalModeling(BrainLMPreTrainedModel):
    """
    BrainLM encoder + decoder trained to reconstruct masked signal (masking with `config.mask_ratio`). Loading an
    encoder or classification checkpoint creates a new decoder (with a warning).
    """

    _new_part_prefixes = ("decoder.",)

    def __init__(self, config: BrainLMConfig):
        super().__init__(config)
        self.brainlm = BrainLMModel(config)
        self.decoder = BrainLMDecoder(config, self.brainlm.layout)
        self.post_init()

    def forward(
        self,
        signal_values: torch.Tensor,
        coordinates: torch.Tensor | None = None,
        noise: torch.Tensor | None = None,
        mask_ratio: float | None = None,
        mask_strategy: str | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        return_loss: bool = True,
        timepoint_mask: torch.Tensor | None = None,
        output_cls_attentions: bool = False,
        **kwargs,
    ) -> BrainLMForMaskedSignalModelingOutput | tuple:
        r"""
        Args:
            signal_values (`torch.FloatTensor` of shape `(B, V, T)`): parcel time series; also the target.
            coordinates (`torch.FloatTensor` of shape `(V, 3)` or `(B, V, 3)`): region xyz (MNI mm); region-window
                layout only.
            noise (`torch.FloatTensor` of shape `(B, L)`, *optional*): random-masking noise (small = visible).
            mask_ratio (`float`, *optional*): overrides `config.mask_ratio`.
            mask_strategy (`str`, *optional*): overrides `config.mask_strategy`.
            return_loss (`bool`, defaults to `True`): compute the loss (lets `Trainer` report `eval_loss`).
            timepoint_mask (`torch.FloatTensor` of shape `(B, T)`, *optional*): 1 = real timepoint, 0 = padding,
                left out of the loss.
            output_cls_attentions (`bool`, defaults to `False`): return the encoder's `cls_attentions` (see
                `BrainLMModel`).

        Returns `loss` (masked timepoints only; `None` when nothing is masked) and `logits` `(B, V, T)`.
        """
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        signal_values, coordinates = self._model_inputs(signal_values, coordinates)
        outputs = self.brainlm(
            signal_values,
            coordinates,
            noise=noise,
            mask_ratio=self.config.mask_ratio if mask_ratio is None else mask_ratio,
            mask_strategy=mask_strategy,
            output_attentions=output_attentions,
            output_hidden_states=output_hidden_states,
            return_dict=True,
            timepoint_mask=timepoint_mask,
            output_cls_attentions=output_cls_attentions,
            **kwargs,
        )
        logits = self.decoder(
            outputs.last_hidden_state, outputs.ids_restore, coordinates, signal_values.shape, **kwargs
        )  # (B, V, T)
        loss = masked_reconstruction_loss(self, logits, signal_values, outputs) if return_loss else None

        output = BrainLMForMaskedSignalModelingOutput(
            loss=loss,
            logits=logits,
            mask=outputs.mask,
            token_mask=outputs.token_mask,
            ids_restore=outputs.ids_restore,
            last_hidden_state=outputs.last_hidden_state,
            hidden_states=outputs.hidden_states,
            attentions=outputs.attentions,
            cls_attentions=outputs.cls_attentions,
        )
        return output if return_dict else output.to_tuple()


class BrainLMClassificationHead(nn.Module):
    """`linear`: dropout, `Linear(H -> labels)`. `mlp`: 3 layers, `H -> H/2 -> H/4 -> labels`, GELU, dropout."""

    def __init__(self, config: BrainLMConfig):
        super().__init__()
        hidden = config.hidden_size
        widths = [hidden] if config.classifier_head == "linear" else [hidden, hidden // 2, hidden // 4]
        layers = []
        for width_in, width_out in itertools.pairwise(widths):
            layers += [nn.Dropout(config.classifier_dropout), nn.Linear(width_in, width_out), nn.GELU()]
        layers += [nn.Dropout(config.classifier_dropout), nn.Linear(widths[-1], config.num_labels)]
        self.layers = nn.Sequential(*layers)

    def forward(self, pooled: torch.Tensor) -> torch.Tensor:
        return self.layers(pooled)  # (B, H) -> (B, num_labels)


class BrainLMForSequenceClassification(BrainLMPreTrainedModel):
    """
    BrainLM encoder + a head on the pooled embedding (`config.pooling`, `config.classifier_head`) for regression
    (one or several targets), single-label or multi-label classification (`config.problem_type`; the losses and the
    inference of an unset `problem_type` are transformers' `ForSequenceClassification` loss).

    Regression targets are standardised with `config.label_stats` (mean, std) when set: the loss is taken on
    that scale (every target weighs the same) and `logits` are returned in label units.

    The encoder sees every token in canonical order unless masking is asked for, or unless
    `config.auxiliary_reconstruction_weight > 0`, which keeps the decoder and, in training, masks `config.mask_ratio`
    of the tokens and adds the weighted masked-reconstruction loss (the head then pools the visible tokens).
    `config.freeze_encoder` trains the head only. Loading a pretraining or encoder checkpoint creates a new head.
    """

    _keys_to_ignore_on_load_unexpected = [r"^decoder\."]
    _new_part_prefixes = ("classifier.", "decoder.")

    def __init__(self, config: BrainLMConfig):
        super().__init__(config)
        self.brainlm = BrainLMModel(config)
        self.decoder = BrainLMDecoder(config, self.brainlm.layout) if config.auxiliary_reconstruction_weight else None
        self.classifier = BrainLMClassificationHead(config)
        self.post_init()
        if config.freeze_encoder:
            self.brainlm.requires_grad_(False)

    def forward(
        self,
        signal_values: torch.Tensor,
        coordinates: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        noise: torch.Tensor | None = None,
        mask_ratio: float | None = None,
        mask_strategy: str | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        timepoint_mask: torch.Tensor | None = None,
        **kwargs,
    ) -> SequenceClassifierOutput | tuple:
        r"""
        Args:
            signal_values (`torch.FloatTensor` of shape `(B, V, T)`): parcel time series.
            coordinates (`torch.FloatTensor` of shape `(V, 3)` or `(B, V, 3)`): region xyz (region-window layout).
            labels (`torch.Tensor`, *optional*): `(B,)` or `(B, num_labels)` float targets (regression), `(B,)`
                class indices (single-label) or `(B, num_labels)` 0/1 (multi-label).
            noise, mask_ratio, mask_strategy: masking of the encoder input, as in `BrainLMModel` (default: none, or
                `config.mask_ratio` in training with an auxiliary reconstruction loss).
            timepoint_mask (`torch.FloatTensor` of shape `(B, T)`, *optional*): 1 = real timepoint, 0 = padding (left
                out of mean pooling and of the auxiliary loss).

        Returns `SequenceClassifierOutput` with `logits` `(B, num_labels)` (regression: in label units) and `loss`.
        """
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        signal_values, coordinates = self._model_inputs(signal_values, coordinates)
        if mask_ratio is None:
            mask_ratio = self.config.mask_ratio if self.decoder is not None and self.training else None
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.config.freeze_encoder):
            outputs = self.brainlm(
                signal_values,
                coordinates,
                noise=noise,
                mask_ratio=mask_ratio,
                mask_strategy=mask_strategy,
                output_attentions=output_attentions,
                output_hidden_states=output_hidden_states,
                return_dict=True,
                timepoint_mask=timepoint_mask,
                **kwargs,
            )
        pooled = self.brainlm.pool(outputs, *signal_values.shape[1:], self.config.pooling)  # (B, H)
        scores = self.classifier(pooled)  # (B, num_labels), standardised scale for regression
        mean, std = self._label_scaling(scores)
        loss = None
        if labels is not None:
            loss = self._label_loss(scores, labels, mean, std)
        if loss is not None and self.decoder is not None:
            reconstruction = self.decoder(
                outputs.last_hidden_state, outputs.ids_restore, coordinates, signal_values.shape
            )  # (B, V, T)
            extra = masked_reconstruction_loss(self, reconstruction, signal_values, outputs)
            if extra is not None:
                loss = loss + self.config.auxiliary_reconstruction_weight * extra

        output = SequenceClassifierOutput(
            loss=loss, logits=scores * std + mean, hidden_states=outputs.hidden_states, attentions=outputs.attentions
        )
        return output if return_dict else output.to_tuple()

    def _label_scaling(self, scores: torch.Tensor) -> tuple:
        """`config.label_stats` as tensors like `scores` `(num_labels,)`: `(mean, std)`, or `(0, 1)` when unset."""
        if self.config.label_stats is None:
            return 0.0, 1.0
        return scores.new_tensor(self.config.label_stats["mean"]), scores.new_tensor(self.config.label_stats["std"])

    def _label_loss(self, scores: torch.Tensor, labels: torch.Tensor, mean, std) -> torch.Tensor:
        """transformers' sequence-classification loss (and its `problem_type` inference), on standardised targets
        for regression; labels of the wrong shape or outside `[0, num_labels)` are refused."""
        labels = torch.as_tensor(labels, device=scores.device)
        problem_type = self.config.problem_type
        if problem_type is None and self.config.num_labels > 1:  # transformers' rule: integer labels are classes
            is_integer = labels.dtype in (torch.long, torch.int)
            problem_type = "single_label_classification" if is_integer else "multi_label_classification"
        elif problem_type is None:
            problem_type = "regression"
        check_labels(labels, problem_type, scores.shape)
        if problem_type == "regression":
            labels = (labels.to(scores.dtype).reshape(scores.shape) - mean) / std
        elif problem_type == "multi_label_classification":
            labels = labels.to(scores.dtype)
        return self.loss_function(labels, scores, self.config)


def check_labels(labels: torch.Tensor, problem_type: str, scores_shape: torch.Size) -> None:
    """Refuse labels that would give a silently wrong loss or a raw torch error, naming the expected shape."""
    batch_size, num_labels = scores_shape
    if problem_type == "single_label_classification":
        if labels.shape not in ((batch_size,), (batch_size, 1)):
            raise InvalidInputError(
                f"single-label classification needs labels of shape ({batch_size},), got {tuple(labels.shape)}.",
                argument="labels",
            )
        if labels.is_floating_point() or labels.is_complex():
            raise InvalidInputError(
                f"single-label classification needs integer class indices, got dtype {labels.dtype}.",
                argument="labels",
            )
        if (
            not torch.compiler.is_compiling()
            and labels.numel()
            and not 0 <= int(labels.min()) <= int(labels.max()) < num_labels
        ):
            raise InvalidInputError(
                f"labels must be class indices in [0, num_labels) = [0, {num_labels}), got values from "
                f"{int(labels.min())} to {int(labels.max())}; set num_labels to the number of classes.",
                argument="labels",
            )
        return
    expected = [(batch_size, num_labels)] + ([(batch_size,)] if num_labels == 1 else [])
    if tuple(labels.shape) not in expected:
        raise InvalidInputError(
            f"{problem_type} needs labels of shape {' or '.join(map(str, expected))} (batch, targets), got "
            f"{tuple(labels.shape)}" + (" (transposed?)" if labels.shape == (num_labels, batch_size) else "") + ".",
            argument="labels",
        )


def check_finite_weights(model: nn.Module, source) -> None:
    """
    Refuse a model whose loaded weights or buffers hold NaN or Inf (a damaged or diverged checkpoint: it gives
    NaN outputs and losses), naming the tensors and `source`. One sum per tensor and one host sync in all; the
    tensors are looked at one by one only when a sum is not finite (a sum can overflow where no value does).
    Weights not in memory (meta device, offloaded) are skipped.
    """
    tensors = {
        name: tensor
        for name, tensor in model.state_dict().items()
        if tensor.is_floating_point() and tensor.device.type != "meta" and tensor.numel()
    }
    if not tensors:
        return
    sums = [tensor.detach().sum(dtype=torch.float32) for tensor in tensors.values()]
    sums = torch.stack([value.to(sums[0].device) for value in sums])
    if bool(sums.isfinite().all()):
        return
    bad = [name for name, tensor in tensors.items() if not bool(tensor.detach().isfinite().all())]
    if bad:
        raise InvalidFileError(
            f"The weights loaded from {source} hold NaN or Inf values in {len(bad)} tensors ({bad[:8]}"
            f"{' ...' if len(bad) > 8 else ''}): the checkpoint is damaged or its training diverged; load an earlier "
            "checkpoint, or download or convert it again."
        )


class WeightsMismatchError(InvalidFileError, RuntimeError):
    """A checkpoint whose weights do not match the model (raised with the keys listed); also the `RuntimeError`
    transformers raises for shape mismatches."""


__all__ = [
    "BrainLMClassificationHead",
    "BrainLMForMaskedSignalModeling",
    "BrainLMForMaskedSignalModelingOutput",
    "BrainLMForSequenceClassification",
    "BrainLMModel",
    "BrainLMModelOutput",
    "BrainLMPreTrainedModel",
    "RegionWindowLayout",
    "TileLayout",
    "WeightsMismatchError",
]
