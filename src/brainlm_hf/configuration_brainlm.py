# Copyright 2026 The brainlm_hf authors. Licensed under the Apache License, Version 2.0.
"""BrainLM model configuration."""

import dataclasses
import difflib
import math
from typing import ClassVar

from huggingface_hub.dataclasses import strict
from huggingface_hub.errors import StrictDataclassError
from transformers import PreTrainedConfig
from transformers.activations import ACT2CLS
from transformers.utils import logging

from .errors import InvalidArgumentError

logger = logging.get_logger(__name__)

_RELEASED_DECODER = {
    "decoder_hidden_size": 512,
    "decoder_num_hidden_layers": 8,
    "decoder_num_attention_heads": 16,
    "decoder_intermediate_size": 2048,
}

# Named architectures. Values not listed take the `BrainLMConfig` defaults.
PRESETS: dict[str, dict] = {
    # The three released checkpoints (vandijklab/brainlm: old_13M, vitmae_111M, vitmae_650M), as the converter
    # builds them from their config.json. The 13M dimensions are inferred from third-party descriptions and the
    # 111M/650M head counts are ViT-MAE defaults (see the model cards): the converter reads the real config.json and
    # reports any disagreement with a preset instead of patching it.
    "brainlm-13m": {
        "hidden_size": 512,
        "num_hidden_layers": 4,
        "num_attention_heads": 4,
        "intermediate_size": 1024,
        "decoder_hidden_size": 512,
        "decoder_num_hidden_layers": 2,
        "decoder_num_attention_heads": 4,
        "decoder_intermediate_size": 1024,
        "norm_position": "post",
        "value_conv_kernel_size": 65,
        "decoder_head": "mlp",
        "mask_ratio": 0.2,
        "coordinate_scale": 1.0,
    },
    "brainlm-111m": {"token_layout": "tile_2d", "patch_size": 16, "image_size": 432, **_RELEASED_DECODER},
    "brainlm-650m": {
        "token_layout": "tile_2d",
        "patch_size": 14,
        "image_size": 434,
        "hidden_size": 1280,
        "num_hidden_layers": 32,
        "num_attention_heads": 16,
        "intermediate_size": 5120,
        **_RELEASED_DECODER,
    },
    # Small model for tests, demos and CPU experiments (~0.2M parameters).
    "brainlm-tiny": {
        "hidden_size": 64,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "intermediate_size": 128,
        "decoder_hidden_size": 32,
        "decoder_num_hidden_layers": 1,
        "decoder_num_attention_heads": 4,
        "decoder_intermediate_size": 64,
    },
    # The configuration of the original repository (hidden 256, 4 + 2 layers, 4 heads), as a native model.
    "brainlm-small": {
        "hidden_size": 256,
        "num_hidden_layers": 4,
        "num_attention_heads": 4,
        "intermediate_size": 1024,
        "decoder_hidden_size": 256,
        "decoder_num_hidden_layers": 2,
        "decoder_num_attention_heads": 4,
        "decoder_intermediate_size": 1024,
    },
    # ViT-B encoder with the MAE-base decoder (~86M + ~26M parameters).
    "brainlm-base": {},
    # ViT-L encoder with the MAE decoder.
    "brainlm-large": {
        "hidden_size": 1024,
        "num_hidden_layers": 24,
        "num_attention_heads": 16,
        "intermediate_size": 4096,
    },
}

# the token layouts (`modeling_brainlm.layout_for` builds the object of each), and the masking strategies each supports
MASK_STRATEGIES = {"region_window": ("random", "forecast"), "tile_2d": ("random", "predict_last")}
TOKEN_LAYOUTS = tuple(MASK_STRATEGIES)
# the sequence poolings of `BrainLMModel.pool` (`config.pooling` of `BrainLMForSequenceClassification`)
POOLINGS = ("cls", "mean")

_AUTO_MAP = {
    "AutoConfig": "configuration_brainlm.BrainLMConfig",
    "AutoModel": "modeling_brainlm.BrainLMModel",
    "AutoModelForPreTraining": "modeling_brainlm.BrainLMForMaskedSignalModeling",
    "AutoModelForSequenceClassification": "modeling_brainlm.BrainLMForSequenceClassification",
}


@strict(accept_kwargs=True)
class BrainLMConfig(PreTrainedConfig):
    r"""
    Configuration of a BrainLM masked autoencoder over fMRI parcel time series.

    The model reads `signal_values` of shape `(batch_size, num_regions, num_timepoints)`. Two tokenizers
    (`token_layout`) share every other part of the model:

    * `"region_window"` (default, the native design and the released 13M checkpoint): every region's series is cut
      into windows of `patch_size` timepoints, one token per (region, window), region-major. A token's embedding is
      `Linear(patch_size -> hidden_size)(window) + Linear(3 -> hidden_size)(region xyz) + sinusoid(window index)`.
      Nothing fixes the number of regions or timepoints.
    * `"tile_2d"` (the released 111M / 650M checkpoints): the region x time matrix is padded with `padding_value` to
      an `image_size` square and cut into `patch_size x patch_size` tiles (token `r * G + c`, G = image_size /
      patch_size) with fixed 2-D sin-cos positions; no coordinate embedding. Regions and timepoints are limited by
      `image_size`, and the model depends on the region order (the processor fixes it).

    Args:
        token_layout (`str`, defaults to `"region_window"`): `"region_window"` or `"tile_2d"`, see above.
        patch_size (`int`, defaults to 20):
            `region_window`: timepoints per token (`num_timepoints` must be a multiple of it). `tile_2d`: tile side.
        image_size (`int`, defaults to 0):
            `tile_2d` only: side of the padded square (432 for the 111M, 434 for the 650M checkpoint).
        padding_value (`float`, defaults to -1.0): `tile_2d` only: value of the padding around the signal.
        coordinate_scale (`float`, defaults to 0.01):
            `region_window` only: coordinates (MNI mm, up to ~100) are multiplied by it before the coordinate
            projections, so that they enter at the scale of the normalised signal; raw millimetres slow learning
            markedly (measured on the HCP demo). The released 13M checkpoint used raw millimetres (1.0).
        hidden_size, num_hidden_layers, num_attention_heads, intermediate_size (`int`):
            Encoder width, depth, heads and MLP width (defaults: ViT-B, 768 / 12 / 12 / 3072).
        hidden_act (`str`, defaults to `"gelu"`): MLP activation.
        hidden_dropout_prob, attention_probs_dropout_prob (`float`, defaults to 0.0): dropout rates.
        initializer_range (`float`, defaults to 0.02): std of the normal init of linear layers and special tokens.
        layer_norm_eps (`float`, defaults to 1e-12): LayerNorm epsilon.
        qkv_bias (`bool`, defaults to `True`): bias on the query/key/value projections.
        norm_position (`str`, defaults to `"pre"`):
            `"pre"` (ViT blocks, LayerNorm before attention and MLP) or `"post"` (BERT blocks, LayerNorm after the
            residual sum; the released 13M checkpoint uses it).
        value_conv_kernel_size (`int`, defaults to 0):
            If > 0, each attention layer adds a per-head depthwise convolution of the value tensor along the token axis
            (kernel `value_conv_kernel_size`, odd) to its output, as the released 13M checkpoint does (65). This
            makes the model depend on token order. 0 disables it.
        decoder_hidden_size, decoder_num_hidden_layers, decoder_num_attention_heads, decoder_intermediate_size (`int`):
            Decoder dimensions (defaults: the MAE-base decoder, 512 / 8 / 16 / 2048).
        decoder_head (`str`, defaults to `"linear"`):
            `"linear"`: `Linear(decoder_hidden_size -> patch_size)`. `"mlp"`: `Linear(Hd -> Hd/2)`, LeakyReLU(0.1),
            `Linear(Hd/2 -> patch_size)` (the released 13M checkpoint).
        mask_ratio (`float`, defaults to 0.75):
            Fraction of tokens masked by `BrainLMForMaskedSignalModeling` (in `[0, 1)`). `BrainLMModel` only masks when
            asked in `forward`.
        mask_strategy (`str`, defaults to `"random"`):
            `"random"`: MAE masking, keep the `int(L * (1 - mask_ratio))` tokens of smallest noise.
            `"forecast"` (`region_window`): mask the last `ceil(mask_ratio * num_windows)` windows of every region.
            `"predict_last"` (`tile_2d`): mask the tile columns that hold the last `int(mask_ratio * T)` timepoints,
            by the original code's rule (one extra column when the boundary is not tile-aligned).
        reconstruction_loss (`str`, defaults to `"mse"`): `"mse"` or `"mae"`, averaged over masked tokens only.
        validate_inputs (`bool`, defaults to `True`):
            Check inputs for shape errors and NaN/Inf in `forward`. The NaN/Inf check synchronises with the device;
            switch it off for compiled or high-throughput runs.
        pooling (`str`, defaults to `"cls"`):
            `BrainLMForSequenceClassification`: `"cls"` (the CLS row) or `"mean"` (mean of the visible data tokens;
            padding-only tiles never count).
        classifier_head (`str`, defaults to `"linear"`):
            `"linear"`: dropout + `Linear(H -> num_labels)`. `"mlp"`: the paper's 3-layer MLP head,
            `H -> H/2 -> H/4 -> num_labels` with GELU and dropout (the original widths were not released).
        classifier_dropout (`float`, defaults to 0.0): dropout before each layer of the head.
        freeze_encoder (`bool`, defaults to `False`):
            Train the head only (linear probe): the encoder gets no gradients and runs without autograd.
        auxiliary_reconstruction_weight (`float`, defaults to 0.0):
            If > 0, `BrainLMForSequenceClassification` keeps the decoder and, in training, masks `mask_ratio` of the
            tokens and adds this weight times the masked reconstruction loss to the label loss.
        label_stats (`dict`, *optional*):
            Regression only: `{"mean": [...], "std": [...]}`, per-target statistics of the training labels. The head
            predicts standardised targets (the loss is taken on that scale, so every target weighs the same) and
            `logits` are returned in label units, `z * std + mean`. (Not two fields named `label_mean` /
            `label_std`: generic tooling reads a field ending in `_std` or `_mean` as an initialiser scale. Configs
            saved with those two keys still load.)
        reject_unknown_keys (`bool`, *optional*, not saved):
            A keyword that is not a field of this configuration (e.g. a misspelt `mask_ratoi`, in code or in a
            `config.json`) is reported with a warning that lists it; pass `reject_unknown_keys=True`, or set
            `BrainLMConfig.reject_unknown_keys = True`, to make it a `ValueError` instead.

    Every field is checked at construction: a value the model cannot be built from (`num_attention_heads=0`, a
    negative layer count, `patch_size=0`, an unknown `hidden_act`, ...) raises a `ValueError` naming the field.

    Example:

    ```python
    >>> from brainlm_hf import BrainLMConfig, BrainLMForMaskedSignalModeling
    >>> config = BrainLMConfig.from_preset("brainlm-tiny", mask_ratio=0.5)
    >>> model = BrainLMForMaskedSignalModeling(config)
    ```
    """

    model_type = "brainlm_hf"

    token_layout: str = "region_window"
    patch_size: int = 20
    image_size: int = 0
    padding_value: float | int = -1.0
    coordinate_scale: float | int = 0.01
    hidden_size: int = 768
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    intermediate_size: int = 3072
    hidden_act: str = "gelu"
    hidden_dropout_prob: float | int = 0.0
    attention_probs_dropout_prob: float | int = 0.0
    initializer_range: float = 0.02
    layer_norm_eps: float = 1e-12
    qkv_bias: bool = True
    norm_position: str = "pre"
    value_conv_kernel_size: int = 0
    decoder_hidden_size: int = 512
    decoder_num_hidden_layers: int = 8
    decoder_num_attention_heads: int = 16
    decoder_intermediate_size: int = 2048
    decoder_head: str = "linear"
    mask_ratio: float | int = 0.75
    mask_strategy: str = "random"
    reconstruction_loss: str = "mse"
    validate_inputs: bool = True
    pooling: str = "cls"
    classifier_head: str = "linear"
    classifier_dropout: float | int = 0.0
    freeze_encoder: bool = False
    auxiliary_reconstruction_weight: float | int = 0.0
    label_stats: dict[str, list[float | int]] | None = None

    reject_unknown_keys: ClassVar[bool] = False

    def __post_init__(self, **kwargs):
        # configs saved before `label_stats` existed carry the two lists as separate keys
        legacy = {key: kwargs.pop(f"label_{key}", None) for key in ("mean", "std")}
        if self.label_stats is None and legacy != {"mean": None, "std": None}:
            self.label_stats = legacy
        _report_unknown_keys(kwargs, kwargs.pop("reject_unknown_keys", self.reject_unknown_keys))
        # Hub-ready by default: a saved checkpoint names every Auto class it can be loaded with (remote code).
        if getattr(self, "auto_map", None) is None:
            self.auto_map = dict(_AUTO_MAP)
        super().__post_init__(**kwargs)
        self.check_values()  # a plain ValueError at construction (strict validators would wrap it)

    def validate_architecture(self):
        """Checked at construction (strict dataclass validator; assignments are only type-checked)."""
        super().validate_architecture()
        self.check_values()

    def check_values(self) -> None:
        """Raise a `ValueError` naming the first field whose value the model cannot be built from."""
        for name in ("hidden_size", "num_attention_heads", "intermediate_size", "num_hidden_layers", "patch_size"):
            _at_least(name, getattr(self, name), 1)
        for name in ("decoder_hidden_size", "decoder_num_attention_heads", "decoder_intermediate_size"):
            _at_least(name, getattr(self, name), 1)
        _at_least("decoder_num_hidden_layers", self.decoder_num_hidden_layers, 0)
        for width, heads, name in (
            (self.hidden_size, self.num_attention_heads, ""),
            (self.decoder_hidden_size, self.decoder_num_attention_heads, "decoder_"),
        ):
            if width % heads != 0:
                raise ConfigValueError(
                    f"{name}hidden_size ({width}) must be a multiple of {name}num_attention_heads ({heads})."
                )
        tiles = self.token_layout == "tile_2d"
        choices = {
            "token_layout": TOKEN_LAYOUTS,
            "hidden_act": tuple(sorted(ACT2CLS)),
            "norm_position": ("pre", "post"),
            "decoder_head": ("linear", "mlp"),
            "mask_strategy": MASK_STRATEGIES.get(self.token_layout, ()),
            "reconstruction_loss": ("mse", "mae"),
            "pooling": POOLINGS,
            "classifier_head": ("linear", "mlp"),
        }
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise ConfigValueError(f"{name} must be one of {allowed}, got {getattr(self, name)!r}.")
        for name in ("hidden_dropout_prob", "attention_probs_dropout_prob", "classifier_dropout", "mask_ratio"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ConfigValueError(f"{name} must be in [0, 1), got {getattr(self, name)}.")
        for name in ("layer_norm_eps", "coordinate_scale"):
            if not 0.0 < getattr(self, name) < math.inf:
                raise ConfigValueError(f"{name} must be positive and finite, got {getattr(self, name)}.")
        if not 0.0 <= self.initializer_range < math.inf:
            raise ConfigValueError(f"initializer_range must be >= 0 and finite, got {self.initializer_range}.")
        if self.value_conv_kernel_size < 0 or (self.value_conv_kernel_size and self.value_conv_kernel_size % 2 == 0):
            raise ConfigValueError(
                f"value_conv_kernel_size must be 0 (off) or odd, got {self.value_conv_kernel_size}."
            )
        # sin/cos encodings split the width in sin and cos halves (and in two axes for tiles)
        multiple = 4 if tiles else 2
        if self.hidden_size % multiple or self.decoder_hidden_size % multiple:
            raise ConfigValueError(
                f"hidden_size and decoder_hidden_size must be multiples of {multiple} for {self.token_layout}."
            )
        self._check_head()
        if tiles and (self.image_size < self.patch_size or self.image_size % self.patch_size):
            raise ConfigValueError(
                f"token_layout='tile_2d' needs image_size (the padded square side) to be a positive multiple of "
                f"patch_size ({self.patch_size}), got {self.image_size}."
            )

    def _check_head(self):
        if self.auxiliary_reconstruction_weight < 0:
            raise ConfigValueError(
                f"auxiliary_reconstruction_weight must be >= 0, got {self.auxiliary_reconstruction_weight}."
            )
        if self.freeze_encoder and self.auxiliary_reconstruction_weight > 0:
            raise ConfigValueError(
                "freeze_encoder=True with an auxiliary reconstruction loss trains nothing it could help."
            )
        if self.label_stats is None:
            return
        if set(self.label_stats) != {"mean", "std"} or None in self.label_stats.values():
            raise ConfigValueError(
                f"label_stats needs both 'mean' and 'std' (per-target label scaling), got {self.label_stats}."
            )
        mean, std = self.label_stats["mean"], self.label_stats["std"]
        if len(mean) != self.num_labels or len(std) != self.num_labels:
            raise ConfigValueError(
                f"label_stats needs one mean and one std per target: num_labels is {self.num_labels}, got "
                f"{len(mean)} and {len(std)}."
            )
        if min(std) <= 0:
            raise ConfigValueError(f"label_stats['std'] must be positive, got {std}.")

    @classmethod
    def from_preset(cls, name: str, **overrides) -> "BrainLMConfig":
        """Build the configuration of a named architecture (see `PRESETS`), with optional field overrides."""
        if name not in PRESETS:
            raise InvalidArgumentError(
                f"Unknown preset {name!r}. Available presets: {sorted(PRESETS)}.", argument="name"
            )
        return cls(**{**PRESETS[name], **overrides})


class ConfigValueError(InvalidArgumentError, StrictDataclassError):
    """A configuration value the model cannot be built from: an `InvalidArgumentError` (a `ValueError`), and a
    `StrictDataclassError` like the validation errors of transformers' own dataclass configs."""


def _at_least(name: str, value: int, minimum: int) -> None:
    if value < minimum:
        raise ConfigValueError(f"{name} must be at least {minimum}, got {value}.", argument=name)


# keyword arguments that transformers' `PreTrainedConfig` consumes or that saved configs carry besides the fields
_KNOWN_KEYS = {
    "num_labels", "torch_dtype", "name_or_path", "_name_or_path", "_commit_hash", "output_attentions",
    "attn_implementation", "experts_implementation", "per_layer_config", "_attn_implementation_internal",
    "_experts_implementation_internal", "model_type", "auto_map", "custom_pipelines", "rope_scaling", "rope_theta",
}  # fmt: skip


def _report_unknown_keys(kwargs: dict, reject: bool) -> None:
    """Warn about (or, with `reject`, refuse) keywords that no field or transformers convention takes."""
    from transformers import GenerationConfig

    known = _KNOWN_KEYS | set(GenerationConfig._get_default_generation_params())
    unknown = sorted(set(kwargs) - known)
    if not unknown:
        return
    fields = [f.name for f in dataclasses.fields(BrainLMConfig)]
    hints = [
        f"{key} (did you mean {close[0]}?)" if (close := difflib.get_close_matches(key, fields, n=1)) else key
        for key in unknown
    ]
    message = f"BrainLMConfig got keys that are not among its fields: {', '.join(hints)}."
    if reject:
        raise InvalidArgumentError(message)
    logger.warning(message + " They are kept as plain attributes and used by nothing.")


__all__ = ["MASK_STRATEGIES", "POOLINGS", "PRESETS", "TOKEN_LAYOUTS", "BrainLMConfig", "ConfigValueError"]
