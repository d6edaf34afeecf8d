# Copyright 2026 The brainlm_hf authors. Licensed under the Apache License, Version 2.0.
"""Exact conversion of checkpoints written by the original BrainLM code into brainlm_hf.

Two families exist, told apart by `model_type` in the original `config.json`:

* `brainlm_mae` (the "13M" release, class `BrainLMForPretraining`): region-window tokens, post-LayerNorm blocks with
  a value convolution, MLP prediction head.
* `vit_mae` (the "111M" and "650M" releases, a padded ViT-MAE): the 2-D tile layout. The three identical input
  channels are folded into one: the patch projection is summed over channels and the prediction head averaged over
  its three channel outputs, which leaves every output unchanged.

Every original key is renamed or dropped by an explicit rule; an unknown key raises, and the converted state dict is
loaded strictly, so a missing one raises too. Outputs in eval mode equal the original's. In training mode one
difference remains for the 13M family: the original applies a hard-coded Dropout(0.1) to its embeddings (inside its
positional-encoding module); brainlm_hf has no embedding dropout.
"""

import json
import re
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from importlib.resources import files
from pathlib import Path
from string import Template

import numpy as np
import torch
from safetensors.torch import load_file
from transformers.utils import logging

from .arguments import check_choice, positional
from .configuration_brainlm import PRESETS, BrainLMConfig
from .data.ukb_statistics import load_ukb_statistics
from .errors import InvalidArgumentError, InvalidFileError, MissingFileError, NetworkError
from .feature_extraction_brainlm import BrainLMFeatureExtractor
from .hub_upload import push_folder
from .modeling_brainlm import BrainLMForMaskedSignalModeling, sincos_2d_encoding, sinusoidal_encoding
from .network import hub_file
from .progress import Progress
from .version import __version__

logger = logging.get_logger(__name__)

RELEASE_REPO = "vandijklab/brainlm"
# short name -> subfolder of RELEASE_REPO
RELEASES = {"brainlm-13m": "old_13M", "brainlm-111m": "vitmae_111M", "brainlm-650m": "vitmae_650M"}

FAMILIES = {"brainlm_mae": "13M family (BrainLMForPretraining)", "vit_mae": "111M/650M family (padded ViT-MAE)"}

# Renames applied in order; every matching rule applies.
_RENAMES = {
    "brainlm_mae": [
        (r"^vit\.embeddings\.signal_embedding_projection\.", "brainlm.embeddings.signal_projection."),
        (r"^vit\.embeddings\.xyz_embedding_projection\.", "brainlm.embeddings.coordinate_projection."),
        (r"^decoder\.decoder_xyz_projection\.", "decoder.coordinate_projection."),
        (r"^decoder\.decoder_pred1\.", "decoder.decoder_pred.0."),
        (r"^decoder\.decoder_pred2\.", "decoder.decoder_pred.2."),
        (r"\.attention\.self\.query\.", ".attention.q_proj."),
        (r"\.attention\.self\.key\.", ".attention.k_proj."),
        (r"\.attention\.self\.value\.", ".attention.v_proj."),
        (r"\.attention\.self\.conv\.", ".attention.value_conv."),
        (r"\.attention\.output\.LayerNorm\.", ".attention_norm."),
        (r"\.output\.LayerNorm\.", ".mlp_norm."),
    ],
    "vit_mae": [
        (r"^vit\.embeddings\.patch_embeddings\.projection\.", "brainlm.embeddings.tile_projection."),
        (r"\.attention\.attention\.query\.", ".attention.q_proj."),
        (r"\.attention\.attention\.key\.", ".attention.k_proj."),
        (r"\.attention\.attention\.value\.", ".attention.v_proj."),
        (r"\.layernorm_before\.", ".attention_norm."),
        (r"\.layernorm_after\.", ".mlp_norm."),
    ],
}
_SHARED_RENAMES = [
    (r"^vit\.embeddings\.cls_token$", "brainlm.embeddings.cls_token"),
    (r"^vit\.encoder\.layer\.", "brainlm.layers."),
    (r"^vit\.layernorm\.", "brainlm.layernorm."),
    (r"^decoder\.decoder_layers\.", "decoder.layers."),
    (r"\.attention\.output\.dense\.", ".attention.o_proj."),
    (r"\.intermediate\.dense\.", ".mlp.fc1."),
    (r"\.output\.dense\.", ".mlp.fc2."),
]
# Keys that carry no information for brainlm_hf; fixed tables are checked against our formula before being dropped.
_FIXED_TABLES = {
    "brainlm_mae": r"^(vit\.embeddings|decoder)\.pos_embedding\.pe$",
    "vit_mae": r"^(vit\.embeddings\.position_embeddings|decoder\.decoder_pos_embed)$",
}
_DEAD_WEIGHTS = {"brainlm_mae": r"^decoder\.decoder_pred\.(weight|bias)$"}  # created by a superclass, never used
# A key that belongs to the other family, used to recognise a checkpoint offered under the wrong config.
_FAMILY_MARKERS = {
    "brainlm_mae": "vit.embeddings.signal_embedding_projection.weight",
    "vit_mae": "vit.embeddings.patch_embeddings.projection.weight",
}
# Options of the original configs that brainlm_hf does not implement, refused by name when enabled.
_UNSUPPORTED = {"norm_pix_loss": True, "use_tanh_decoder": True}
_TRAIN_MODES = {"auto_encode": "random", "predict_last": "predict_last"}


def detect_family(original_config: dict) -> str:
    family = original_config.get("model_type")
    if family not in FAMILIES:
        raise InvalidFileError(
            f"Unknown original model_type {family!r}: brainlm_hf converts {sorted(FAMILIES)} checkpoints "
            "(BrainLM's 13M release is 'brainlm_mae', the 111M/650M releases are 'vit_mae')."
        )
    return family


def original_config_to_brainlm(original: dict, **overrides) -> BrainLMConfig:
    """Translate an original `config.json` (either family) into a `BrainLMConfig`; any dimensions are accepted."""
    family = detect_family(original)
    for name, bad in _UNSUPPORTED.items():
        if original.get(name) == bad:
            raise InvalidFileError(
                f"The original option {name}={bad} is not implemented in brainlm_hf; cannot convert."
            )
    common = {
        name: original[name]
        for name in (
            "hidden_size",
            "num_hidden_layers",
            "num_attention_heads",
            "intermediate_size",
            "hidden_act",
            "hidden_dropout_prob",
            "initializer_range",
            "layer_norm_eps",
            "qkv_bias",
            "decoder_hidden_size",
            "decoder_num_hidden_layers",
            "decoder_num_attention_heads",
            "decoder_intermediate_size",
            "mask_ratio",
        )
    }
    if family == "brainlm_mae":
        if original.get("num_landmarks") != original.get("segment_means_seq_len"):
            raise InvalidFileError(
                "Only num_landmarks == segment_means_seq_len (exact softmax attention) is supported, as released; "
                f"got {original.get('num_landmarks')} and {original.get('segment_means_seq_len')}."
            )
        specific = {
            "patch_size": original["timepoint_patching_size"],
            "norm_position": "post",
            "value_conv_kernel_size": original["conv_kernel_size"],
            "decoder_head": "mlp",
            "coordinate_scale": 1.0,  # the original feeds raw millimetres
            # the original's exact-softmax branch never applies its attention dropout, nor do we
            "attention_probs_dropout_prob": 0.0,
            "reconstruction_loss": original.get("loss_fn", "mse"),
        }
    else:
        train_mode = original.get("train_mode", "auto_encode")
        if train_mode not in _TRAIN_MODES:
            raise InvalidFileError(
                f"The original train_mode {train_mode!r} is not implemented in brainlm_hf (supported: "
                f"{sorted(_TRAIN_MODES)}); cannot convert."
            )
        image_size = original["image_size"]
        if isinstance(image_size, list | tuple):
            if len(set(image_size)) != 1:
                raise InvalidFileError(f"Only square images are supported, got image_size={image_size}.")
            image_size = image_size[0]
        specific = {
            "token_layout": "tile_2d",
            "patch_size": original["patch_size"],
            "image_size": image_size,
            "padding_value": -1.0,
            "attention_probs_dropout_prob": original["attention_probs_dropout_prob"],
            "mask_strategy": _TRAIN_MODES[train_mode],
        }
    return BrainLMConfig(**common, **specific, **overrides)


def convert_state_dict(
    state_dict: dict[str, torch.Tensor], original_config: dict, progress: Progress | None = None
) -> dict[str, torch.Tensor]:
    """Rename (and for `vit_mae`, fold channels of) an original state dict into `BrainLMForMaskedSignalModeling`;
    `progress` counts the original tensors as they are converted."""
    family = detect_family(original_config)
    other = next(name for name in FAMILIES if name != family)
    if _FAMILY_MARKERS[other] in state_dict and _FAMILY_MARKERS[family] not in state_dict:
        raise InvalidFileError(
            f"The config says {FAMILIES[family]} but the weights belong to the {FAMILIES[other]}: config.json and the "
            "weights file come from different checkpoints."
        )
    converted, unknown = {}, []
    if progress is not None:
        progress.set_total(len(state_dict))
    for key, tensor in state_dict.items():
        if progress is not None:
            progress.update()
        new_key = rename_key(key, family)
        if new_key is None:
            if re.search(_FIXED_TABLES[family], key):
                _check_fixed_table(key, tensor, family)
        elif new_key.startswith(("brainlm.", "decoder.")):
            converted[new_key] = tensor
        else:
            unknown.append(key)
    if unknown:
        raise InvalidFileError(f"Unknown keys in the original {FAMILIES[family]} checkpoint: {unknown}.")
    if family == "vit_mae":
        _fold_channels(converted)
    return converted


def rename_key(key: str, family: str) -> str | None:
    """The brainlm_hf name of an original key, or None for a key dropped on purpose (fixed table, dead weight)."""
    if re.search(_FIXED_TABLES[family], key) or (family in _DEAD_WEIGHTS and re.search(_DEAD_WEIGHTS[family], key)):
        return None
    for pattern, replacement in _RENAMES[family] + _SHARED_RENAMES:
        key = re.sub(pattern, replacement, key)
    return key


def _check_fixed_table(key: str, tensor: torch.Tensor, family: str) -> None:
    """Fixed sin/cos tables are recomputed by brainlm_hf: refuse a checkpoint whose table differs from ours."""
    if family == "brainlm_mae":
        expected = sinusoidal_encoding(*tensor.shape)
    else:  # (1, 1 + G * G, D) with a zero CLS row
        grid = round((tensor.shape[1] - 1) ** 0.5)
        expected = torch.cat([torch.zeros(1, tensor.shape[-1]), sincos_2d_encoding(grid, tensor.shape[-1])])[None]
    if tensor.shape != expected.shape or not torch.allclose(tensor.float(), expected, atol=1e-6):
        raise InvalidFileError(
            f"{key} is not the standard fixed sin/cos table; this checkpoint cannot be converted exactly."
        )


def _fold_channels(state_dict: dict[str, torch.Tensor]) -> None:
    """The 3 input channels are identical copies: sum the tile projection over them, average the head's outputs."""
    weight = state_dict["brainlm.embeddings.tile_projection.weight"]  # (H, C, p, p)
    state_dict["brainlm.embeddings.tile_projection.weight"] = weight.sum(1).flatten(1)  # (H, p * p), row-major
    for name in ("weight", "bias"):
        head = state_dict[f"decoder.decoder_pred.{name}"]  # (p * p * C, ...) with the channel fastest
        channels = weight.shape[1]
        state_dict[f"decoder.decoder_pred.{name}"] = head.view(-1, channels, *head.shape[1:]).mean(1)


def model_from_original(
    state_dict: dict[str, torch.Tensor], original_config: dict, progress: Progress | None = None, **overrides
):
    """
    Build `BrainLMForMaskedSignalModeling` from an original state dict and `config.json`, loading strictly: a key of
    the checkpoint that maps to no weight, or a weight that no key fills, raises with the key listed. `progress`
    counts the original tensors as they are converted.
    """
    config = original_config_to_brainlm(original_config, **overrides)
    converted = convert_state_dict(state_dict, original_config, progress)
    model = BrainLMForMaskedSignalModeling(config)
    expected = set(model.state_dict())
    missing, unexpected = sorted(expected - set(converted)), sorted(set(converted) - expected)
    if missing or unexpected:
        raise InvalidFileError(
            f"The {FAMILIES[detect_family(original_config)]} checkpoint does not match its config: weights missing "
            f"from the checkpoint {missing}; checkpoint keys with no place in the model {unexpected} (renamed)."
        )
    model.load_state_dict(converted, strict=True)
    return model.eval()


WEIGHTS_LICENSE_WARNING = (
    "The released BrainLM weights are licensed CC BY-NC-ND 4.0: re-hosting converted (derivative) weights may not be "
    "permitted. Check the license and pass accept_weights_license=True to upload anyway."
)
RELEASE_INPUT_SCALE = 5.6430855  # divisor used by the tutorials of the released 111M / 650M weights
RELEASE_REPETITION_TIME = 0.735  # seconds: UK Biobank, the pretraining data of the released weights
NUM_REGIONS = 424  # A424, the atlas of the released weights and of their statistics


def hub_source(repo_id: str, subfolder: str | None = None) -> str:
    """How errors name a Hub source: a release as `brainlm-111m (vandijklab/brainlm, subfolder vitmae_111M)`, any
    other as `the Hub repository owner/name (subfolder S)`."""
    inside = f"subfolder {subfolder}" if subfolder else ""
    for short_name, release_subfolder in RELEASES.items():
        if repo_id == RELEASE_REPO and subfolder == release_subfolder:
            return f"{short_name} ({repo_id}, {inside})"
    return f"the Hub repository {repo_id}{' (' + inside + ')' if inside else ''}"


def load_original(source: str, subfolder: str | None = None, revision: str | None = None, token=None, cache_dir=None):
    """
    Read an original checkpoint: a local folder, or a Hub repository id (with `subfolder`, e.g. `vitmae_111M`;
    downloaded into `cache_dir`, default the Hugging Face cache).
    Only `config.json` and `model.safetensors` or `pytorch_model.bin` are read (optimizer and other Trainer files are
    ignored); `.bin` files go through `torch.load(weights_only=True)`. Returns `(state_dict, config_dict)`.

    A path-like `source` (see `brainlm_hf.folders.is_path_like`) that does not exist is "no such folder: SOURCE";
    errors name the files as the user gave them (the folder, or the repository and file), never a stand-in path.
    """
    from .folders import local_folder

    where = f"{source}{'/' + subfolder if subfolder else ''}"
    local = local_folder(source, "checkpoint folder")
    if local is not None:
        folder = local / (subfolder or "")
        if not folder.is_dir():
            raise MissingFileError(
                f"no such folder: {where} (subfolder={subfolder!r} inside {source})", argument="subfolder"
            )
        if not (folder / "config.json").is_file():
            raise MissingFileError(f"{where} has no config.json: point to an original BrainLM checkpoint folder.")

        def fetch(name):
            return folder / name if (folder / name).is_file() else None

    else:
        from huggingface_hub.errors import EntryNotFoundError

        what = hub_source(source, subfolder)

        def fetch(name):
            try:
                return hub_file(source, name, subfolder, revision, what=what, token=token, cache_dir=cache_dir)[0]
            except NetworkError:  # bounded; names the file, the host and how to work offline
                raise
            except EntryNotFoundError as error:  # the repository has no such file
                if name != "config.json":
                    return None
                raise MissingFileError(_hub_failure(name, source, subfolder, revision, error)) from error
            except (OSError, ValueError) as error:  # unknown or gated repository, invalid id
                raise NetworkError(_hub_failure(name, source, subfolder, revision, error)) from error

    config_file = fetch("config.json")
    if config_file is None:
        raise MissingFileError(f"{where} has no config.json: point to an original BrainLM checkpoint.")
    try:
        original_config = json.loads(config_file.read_text())
    except (ValueError, UnicodeDecodeError) as error:
        raise InvalidFileError(f"{where}/config.json is not valid JSON ({error}).") from error
    if not isinstance(original_config, dict):
        raise InvalidFileError(f"{where}/config.json is not a model config (a JSON object).")
    for name in ("model.safetensors", "pytorch_model.bin"):
        path = fetch(name)
        if path is not None and path.is_file():
            try:
                if name.endswith(".safetensors"):
                    return load_file(path), original_config
                return torch.load(path, map_location="cpu", weights_only=True), original_config
            except Exception as error:  # noqa: BLE001 - safetensors, zip and unpickling errors of a damaged file
                message = " ".join(str(error).split())[:300]
                raise InvalidFileError(f"{where}/{name}: cannot read the weights ({message}).") from error
    raise MissingFileError(f"No model.safetensors or pytorch_model.bin in {where}.")


def _hub_failure(name: str, source: str, subfolder, revision, error) -> str:
    what = f"{subfolder + '/' if subfolder else ''}{name}"
    reason = " ".join(str(error).split())[:300]
    return (
        f"could not get {what} of the Hub repository {source}{' at ' + revision if revision else ''} ({reason}); "
        f"no local folder {source} exists either"
    )


def matching_preset(config: BrainLMConfig) -> str | None:
    """Name of the preset with exactly this architecture, if any."""
    for name in PRESETS:
        if BrainLMConfig.from_preset(name).to_diff_dict() == config.to_diff_dict():
            return name
    return None


def preset_differences(config: BrainLMConfig, preset: str) -> dict[str, tuple]:
    """Fields where `config` differs from `preset`, as `{field: (checkpoint value, preset value)}`."""
    ours, theirs = config.to_dict(), BrainLMConfig.from_preset(preset).to_dict()
    skip = {"transformers_version", "architectures", "dtype", "auto_map"}
    return {
        k: (ours.get(k), theirs.get(k))
        for k in ours.keys() | theirs.keys()
        if k not in skip and ours.get(k) != theirs.get(k)
    }


@dataclass
class ConvertArguments:
    """What `convert_checkpoint` (and `brainlm convert`) converts, where to, and what it checks on the way."""

    source: str = positional(
        "an original checkpoint folder (config.json + pytorch_model.bin or model.safetensors), a Hub repository "
        "(with --subfolder) or a released model's short name: brainlm-13m, brainlm-111m, brainlm-650m",
        "SRC",
    )
    output_dir: str = positional("the brainlm_hf folder to write (new or empty, or replaced with --overwrite)", "OUT")
    subfolder: str | None = field(
        default=None, metadata={"help": "folder inside SRC, e.g. old_13M, vitmae_111M, vitmae_650M"}
    )
    revision: str | None = field(default=None, metadata={"help": "Hub revision of SRC"})
    atlas_coordinates: str | None = field(
        default=None,
        metadata={
            "help": "coordinate table (label x y z), e.g. A424_Coordinates.dat (default: A424's, downloaded from the "
            "pinned upstream commit and SHA-256 checked)"
        },
    )
    expected_preset: str | None = field(
        default=None,
        metadata={
            "aliases": ["--preset"],
            "choices": tuple(PRESETS),
            "help": "refuse a checkpoint whose architecture differs from this preset",
        },
    )
    push_to_hub: str | None = field(
        default=None, metadata={"metavar": "REPO", "help": "upload OUT to this Hub repository"}
    )
    accept_weights_license: bool = field(
        default=False, metadata={"help": "confirm re-hosting the weights under CC BY-NC-ND 4.0"}
    )
    token: str | None = field(default=None, metadata={"help": "Hub token (default: the saved login)"})
    cache_dir: str | None = field(default=None, metadata={"help": "Hugging Face cache for a Hub SRC"})
    ukb_statistics: str | None = field(
        default=None,
        metadata={
            "help": "BrainLM's UK Biobank statistics file (or its folder) for the processor of an A424 checkpoint "
            "(default: $BRAINLM_UKB_STATISTICS, else the download pinned to its commit, SHA-256 checked)"
        },
    )
    overwrite: bool = field(default=False, metadata={"help": "replace what OUT holds, whole"})
    quiet: bool = field(
        default=False, metadata={"help": "no progress bars (conversion, download) and no summary line on stderr"}
    )

    def __post_init__(self):
        if self.expected_preset is not None:
            check_choice(self, "expected_preset", tuple(PRESETS))
        if self.push_to_hub and not self.accept_weights_license:
            raise InvalidArgumentError(WEIGHTS_LICENSE_WARNING, argument="accept_weights_license")


def convert_checkpoint(
    args: ConvertArguments, output_dir: str | None = None, **kwargs
) -> BrainLMForMaskedSignalModeling:
    """
    Convert an original BrainLM checkpoint into a Hub-ready brainlm_hf folder.

    Called with a `ConvertArguments`, or with its fields: `convert_checkpoint(source, output_dir, subfolder=...)`.
    `source` may also be a released model's short name (`brainlm-111m`), unless a local folder has that name.

    Writes `output_dir` with `model.safetensors`, `config.json`, the remote-code files, `preprocessor_config.json`
    (the normalisation of the pretraining data, region coordinates and order, input scale, the pretraining TR
    0.735 s) and `README.md` (the model card).
    For the A424 atlas (424 regions) the processor holds BrainLM's UK Biobank statistics (per-region median, IQR and
    clip bounds, `brainlm_hf.data.ukb_statistics`) as plain numbers: read from `ukb_statistics` (the file, or a
    folder holding it), else `$BRAINLM_UKB_STATISTICS`, else downloaded from their pinned commit and checked against
    their SHA-256. With another atlas the processor has no statistics (`fit` them on your cohort).
    `atlas_coordinates` is the atlas coordinate file (`A424_Coordinates.dat`: label, x, y, z per line); without it
    the A424 coordinates, the atlas of the released weights, are downloaded from their pinned upstream commit and
    checked against their SHA-256 (`brainlm_hf.data.load_a424`). The region-window family feeds them to the model;
    the 111M/650M family needs them to fix the region order its weights expect (a stable sort on Y).
    `expected_preset` makes a checkpoint whose architecture differs from that preset an error that lists the
    differences; without it the differences are only reported. `cache_dir` is the Hugging Face cache for a Hub
    `source`.

    `output_dir` must be new or empty (`overwrite=True` replaces it whole, but never a folder that holds `source`),
    and may not be `source` or inside it. Everything is written into a temporary folder beside it and moved into
    place once complete.

    On stderr, a bar counts the original tensors as they are converted, then one line sums up what was written
    (`ConversionProgress`); `quiet=True` shows neither, nor the Hub's download and upload bars.
    """
    if not isinstance(args, ConvertArguments):
        args = ConvertArguments(args, output_dir, **kwargs)
    elif output_dir is not None or kwargs:
        raise TypeError("convert_checkpoint takes a ConvertArguments alone, or source, output_dir and keyword fields.")
    return _convert(args)


def release_location(name: str, subfolder: str | None = None) -> tuple[str, str]:
    """
    `(repo_id, subfolder)` of a released model's short name (`"brainlm-111m"`, any letter case); any other name is
    returned as is. Check for a local folder of that name first: it wins.
    """
    if str(name).lower() not in RELEASES:
        return name, subfolder or ""
    if subfolder:
        raise InvalidArgumentError(
            f"{name!r} names {RELEASE_REPO} with subfolder {RELEASES[str(name).lower()]!r}; do not also pass "
            f"subfolder={subfolder!r} (or pass {RELEASE_REPO!r} with the subfolder instead).",
            argument="subfolder",
        )
    return RELEASE_REPO, RELEASES[str(name).lower()]


def _convert(args: ConvertArguments) -> BrainLMForMaskedSignalModeling:
    from .folders import is_path_like, local_folder, output_folder

    source, output_dir, subfolder = args.source, args.output_dir, args.subfolder
    if not Path(source).expanduser().is_dir():
        source, subfolder = release_location(source, subfolder)

    local_folder(source, "checkpoint folder")  # "no such folder: SOURCE" for a path that does not exist
    output = Path(output_dir).expanduser()
    source_folder = Path(source).expanduser()
    if source_folder.exists() or is_path_like(source):
        source_folder, target = source_folder.resolve(), output.resolve()
        if target == source_folder or source_folder in target.parents:
            where = "the source checkpoint" if target == source_folder else "inside the source checkpoint"
            raise InvalidArgumentError(
                f"{output_dir} is {where} {source}: converting there would replace or mix with the original; "
                "give another output folder.",
                argument="output_dir",
            )
    table = args.atlas_coordinates
    coordinates = None if table is None else read_coordinates(table)
    if args.ukb_statistics is not None and coordinates is not None and len(coordinates) != NUM_REGIONS:
        raise InvalidArgumentError(
            f"ukb_statistics are BrainLM's statistics of the {NUM_REGIONS} A424 regions, but the atlas coordinates "
            f"{table} list {len(coordinates)} regions: leave them out (fit the processor on your cohort).",
            argument="ukb_statistics",
        )
    statistics = None if args.ukb_statistics is None else load_ukb_statistics(args.ukb_statistics)
    inputs = [p for p in (source_folder, table) if p is not None and Path(p).exists()]
    with hub_progress_bars(not args.quiet):
        with (
            ConversionProgress(args.quiet) as progress,
            output_folder(output_dir, args.overwrite, "the converted checkpoint", inputs=inputs) as staging,
        ):
            model = _convert_into(
                staging, source, subfolder or None, args.revision, args.token, args.cache_dir, coordinates,
                args.expected_preset, statistics, progress,
            )  # fmt: skip
            progress.written(model.state_dict())
        if args.push_to_hub:
            message = f"Convert {source} {subfolder or ''} with brainlm_hf {__version__}"
            push_folder(output, args.push_to_hub, message, args.token)
    return model


class ConversionProgress(Progress):
    """
    The progress of a conversion on stderr: a bar over the original checkpoint's tensors as they are converted,
    then one summary line from the start (reading the checkpoint) to the written folder, e.g. for a small `vit_mae`
    checkpoint `convert: 78 tensors read, 76 written (0.05M parameters, 0.2 MB) in 0.6 s (0.4 MB/s)`, the bytes
    being those of the written weights. `quiet=True` prints neither.
    """

    def __init__(self, quiet: bool = False):
        super().__init__("convert", total=None, quiet=quiet, unit="tensor")
        self.tensors_written = self.parameters = self.bytes = 0

    def written(self, state_dict: dict[str, torch.Tensor]) -> None:
        """Count the converted weights as written (the model's state dict)."""
        self.tensors_written = len(state_dict)
        self.parameters = sum(tensor.numel() for tensor in state_dict.values())
        self.bytes = sum(tensor.numel() * tensor.element_size() for tensor in state_dict.values())

    def summary(self) -> str:
        seconds = time.perf_counter() - self.start
        rate = self.bytes / 1e6 / seconds if seconds > 0 else float("inf")
        return (
            f"convert: {self.recordings} tensors read, {self.tensors_written} written ({self.parameters / 1e6:.2f}M "
            f"parameters, {self.bytes / 1e6:.1f} MB) in {seconds:.1f} s ({rate:.1f} MB/s)"
        )  # the bar's count, `recordings`, counts tensors here


@contextmanager
def hub_progress_bars(shown: bool):
    """Inside, huggingface_hub shows its download and upload bars only if `shown` (and they were on)."""
    from huggingface_hub.utils import are_progress_bars_disabled, disable_progress_bars, enable_progress_bars

    hidden_before = are_progress_bars_disabled()
    if not shown:
        disable_progress_bars()
    try:
        yield
    finally:
        if not shown and not hidden_before:
            enable_progress_bars()


def read_coordinates(path) -> np.ndarray:
    """The `(V, 3)` coordinates of a `label x y z` table (`read_coordinate_table`: checked, the file named)."""
    from .data.atlas import read_coordinate_table

    return read_coordinate_table(path)[1]


def _a424_coordinates() -> np.ndarray:
    """The A424 coordinates, the atlas of the released weights (the verified download of the table alone)."""
    from .data.atlas import a424_coordinates

    return a424_coordinates()


def _convert_into(
    output: Path, source, subfolder, revision, token, cache_dir, coordinates, expected_preset, statistics, progress
):
    state_dict, original_config = load_original(source, subfolder, revision, token, cache_dir)
    family = detect_family(original_config)
    model = model_from_original(state_dict, original_config, progress)
    preset = matching_preset(model.config)
    if expected_preset is not None:
        differences = preset_differences(model.config, expected_preset)
        if differences:
            raise InvalidArgumentError(
                f"{source} {subfolder or ''} is a {FAMILIES[family]} checkpoint whose architecture is not "
                f"{expected_preset}: {differences} (checkpoint, preset).",
                argument="expected_preset",
            )
    elif preset is None:
        nearest = min(PRESETS, key=lambda name: len(preset_differences(model.config, name)))
        logger.warning(
            f"The checkpoint matches no preset; converted as a custom architecture as its config.json says. "
            f"Differences from the nearest preset, {nearest}: {preset_differences(model.config, nearest)}."
        )

    if coordinates is None:
        coordinates = _a424_coordinates()
    if statistics is None and len(coordinates) == NUM_REGIONS:
        statistics = load_ukb_statistics()  # $BRAINLM_UKB_STATISTICS, else the verified download
    if family == "vit_mae" and len(coordinates) > model.config.image_size:
        raise InvalidArgumentError(
            f"The atlas coordinates list {len(coordinates)} regions, more than the {model.config.image_size} rows "
            "this checkpoint's image holds: they belong to another atlas.",
            argument="atlas_coordinates",
        )
    feature_extractor = _feature_extractor(family, coordinates, statistics)
    model.save_pretrained(output)
    feature_extractor.save_pretrained(output)
    (output / "README.md").write_text(render_model_card(preset or "brainlm-custom", source, subfolder, family))
    return model


def _feature_extractor(family: str, coordinates: np.ndarray, statistics) -> BrainLMFeatureExtractor:
    """
    The processor of the released weights: BrainLM's robust scaling with `statistics` (`UKBStatistics`: the UK
    Biobank median, IQR and clip bounds; None for another atlas, then `fit` must run on the user's cohort), the input
    scale and pretraining TR of the release, and the atlas `coordinates` (the 111M/650M family in Y order).
    """
    settings = {
        "normalization": "robust",
        "input_scale": RELEASE_INPUT_SCALE if family == "vit_mae" else 1.0,
        "repetition_time": RELEASE_REPETITION_TIME,
        "atlas": "A424" if len(coordinates) == NUM_REGIONS else None,
        **(statistics.processor_fields() if statistics is not None else {}),
    }
    if family == "vit_mae":
        return BrainLMFeatureExtractor.sorted_by_y(coordinates, **settings)
    return BrainLMFeatureExtractor(coordinates=coordinates.tolist(), **settings)


def render_model_card(preset: str, source: str, subfolder: str | None, family: str) -> str:
    """The packaged model card of `preset` (a generic one for custom architectures), with the conversion source."""
    template = files("brainlm_hf").joinpath("model_cards", f"{preset}.md")
    if not template.is_file():
        template = files("brainlm_hf").joinpath("model_cards", "brainlm-custom.md")
    return Template(template.read_text()).safe_substitute(
        source=f"{source}{'/' + subfolder if subfolder else ''}", family=FAMILIES[family], version=__version__
    )
