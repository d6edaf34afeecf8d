# Copyright 2026 The brainlm_hf authors. Licensed under the Apache License, Version 2.0.
"""The original BrainLM (13M family) compute path, rebuilt for benchmarking from the layer it runs on.

The original `BrainLMForPretraining` (transformers 4.28) stacks transformers' `NystromformerLayer`s with
`num_landmarks == segment_means_seq_len`, which takes the exact branch: it materialises the full softmax attention
matrix `(B, heads, S, S)` in eager PyTorch, and adds a depthwise convolution of the values. This module wires the
same `NystromformerLayer` class (still in transformers 5) into the original's embedding, masking, decoder and loss,
so that its time and memory stand for the original's at the same configuration. It is not the original code; its
outputs are not compared here (`tests/test_reference_parity.py` compares brainlm_hf with the original's recorded
outputs).
"""

import math

import torch
from torch import nn
from transformers import NystromformerConfig
from transformers.models.nystromformer.modeling_nystromformer import NystromformerLayer


def _sinusoid(num_positions: int, dim: int) -> torch.Tensor:
    position = torch.arange(num_positions).unsqueeze(1)
    div_term = torch.exp(torch.arange(0, dim, 2) * (-math.log(10000.0) / dim))
    table = torch.zeros(num_positions, dim)
    table[:, 0::2], table[:, 1::2] = torch.sin(position * div_term), torch.cos(position * div_term)
    return table


class OriginalEquivalent(nn.Module):
    """Encoder + decoder of the original 13M family with `NystromformerLayer` blocks and the original's dropouts."""

    def __init__(self, hidden_size, num_layers, num_heads, intermediate_size, decoder_layers, patch_size, mask_ratio):
        super().__init__()
        layer_config = NystromformerConfig(
            hidden_size=hidden_size,
            num_attention_heads=num_heads,
            intermediate_size=intermediate_size,
            num_landmarks=64,
            segment_means_seq_len=64,
            conv_kernel_size=65,
            hidden_dropout_prob=0.0,
            attention_probs_dropout_prob=0.1,
            layer_norm_eps=1e-12,
        )
        self.patch_size, self.mask_ratio = patch_size, mask_ratio
        self.signal_projection = nn.Linear(patch_size, hidden_size)
        self.xyz_projection = nn.Linear(3, hidden_size)
        self.register_buffer("pe", _sinusoid(5000, hidden_size))
        self.embedding_dropout = nn.Dropout(0.1)  # hard-coded inside the original's PositionalEncoding
        self.cls_token = nn.Parameter(torch.zeros(1, 1, hidden_size))
        self.encoder = nn.ModuleList(NystromformerLayer(layer_config) for _ in range(num_layers))
        self.layernorm = nn.LayerNorm(hidden_size, eps=1e-12)
        self.decoder_embed = nn.Linear(hidden_size, hidden_size)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, hidden_size))
        self.decoder_xyz_projection = nn.Linear(3, hidden_size)
        self.decoder = nn.ModuleList(NystromformerLayer(layer_config) for _ in range(decoder_layers))
        self.decoder_norm = nn.LayerNorm(hidden_size, eps=1e-12)
        self.decoder_pred = nn.Sequential(
            nn.Linear(hidden_size, hidden_size // 2), nn.LeakyReLU(0.1), nn.Linear(hidden_size // 2, patch_size)
        )

    def forward(self, signal_values: torch.Tensor, coordinates: torch.Tensor) -> torch.Tensor:
        batch, regions, timepoints = signal_values.shape
        windows = timepoints // self.patch_size
        target = signal_values.view(batch, regions, windows, self.patch_size)
        x = self.signal_projection(target) + self.xyz_projection(coordinates).unsqueeze(2)
        x = self.embedding_dropout(x + self.pe[:windows]).flatten(1, 2)
        # MAE random masking; the original shuffles even at mask ratio 0
        num_tokens = x.shape[1]
        keep = int(num_tokens * (1 - self.mask_ratio))
        ids_shuffle = torch.argsort(torch.rand(batch, num_tokens, device=x.device), dim=1)
        ids_restore = torch.argsort(ids_shuffle, dim=1)
        x = torch.gather(x, 1, ids_shuffle[:, :keep, None].expand(-1, -1, x.shape[-1]))
        x = torch.cat([self.cls_token.expand(batch, -1, -1), x], dim=1)
        for layer in self.encoder:
            x = layer(x)[0]
        x = self.decoder_embed(self.layernorm(x))
        tokens = torch.cat([x[:, 1:], self.mask_token.expand(batch, num_tokens - keep, -1)], dim=1)
        tokens = torch.gather(tokens, 1, ids_restore[..., None].expand(-1, -1, x.shape[-1]))
        tokens = tokens.view(batch, regions, windows, -1) + self.decoder_xyz_projection(coordinates).unsqueeze(2)
        tokens = self.embedding_dropout(tokens + self.pe[:windows]).flatten(1, 2)
        x = torch.cat([x[:, :1], tokens], dim=1)
        for layer in self.decoder:
            x = layer(x)[0]
        prediction = self.decoder_pred(self.decoder_norm(x[:, 1:])).view_as(target)
        mask = (ids_restore >= keep).float().view(batch, regions, windows, 1)
        return ((prediction - target) ** 2 * mask).sum() / (mask.sum() * self.patch_size)


class OriginalViTMAE(nn.Module):
    """
    The released 111M compute path: the region x time matrix repeated over 3 channels, padded with -1 to 432 x 432,
    through transformers' `ViTMAEForPreTraining` (ViT-B, 16 x 16 patches) with eager attention, as the original ran
    it on CPU (the original monkeypatches flash attention in on GPU). The loss is taken on the padded image here.
    """

    def __init__(self, mask_ratio: float):
        super().__init__()
        from transformers import ViTMAEConfig, ViTMAEForPreTraining

        config = ViTMAEConfig(image_size=432, patch_size=16, mask_ratio=mask_ratio, attn_implementation="eager")
        self.model = ViTMAEForPreTraining(config)

    def forward(self, signal_values: torch.Tensor, coordinates: torch.Tensor) -> torch.Tensor:
        height, width = 432 - signal_values.shape[1], 432 - signal_values.shape[2]
        padding = (width // 2, width - width // 2, height // 2, height - height // 2)
        pixels = nn.functional.pad(signal_values[:, None].repeat(1, 3, 1, 1), padding, value=-1.0)
        return self.model(pixel_values=pixels).loss
