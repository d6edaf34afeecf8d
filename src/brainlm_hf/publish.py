# Copyright 2026 The brainlm_hf authors. Licensed under the Apache License, Version 2.0.
"""`brainlm publish`: the repository content users load with `Auto*` and `pipeline`, from a released checkpoint.

The content (`release_folder`): `model.safetensors`, `config.json` (its `auto_map` names AutoConfig, AutoModel,
AutoModelForPreTraining, AutoModelForSequenceClassification and AutoFeatureExtractor; `custom_pipelines` names
`pipeline_brainlm.BrainLMPipeline` for the task `brainlm-feature-extraction`), the remote-code files
(`configuration_brainlm.py`, `modeling_brainlm.py`, `feature_extraction_brainlm.py`, `errors.py`,
`pipeline_brainlm.py`), `preprocessor_config.json` (the processor with the pretraining statistics) and `README.md`
(the model card, filled from the checkpoint: source and its commit, family, parameter counts, parity with the original,
preprocessing, licence, intended use, limits; Hub metadata in its header). Re-running on unchanged input writes the
same bytes.
"""

import json
import shutil
import tempfile
from dataclasses import dataclass, field
from importlib.resources import files
from pathlib import Path
from string import Template

from huggingface_hub import ModelCardData

from .arguments import positional
from .convert import FAMILIES, RELEASE_REPO, WEIGHTS_LICENSE_WARNING, convert_checkpoint, release_location
from .errors import InvalidArgumentError
from .feature_extraction_brainlm import BrainLMFeatureExtractor
from .hub_upload import push_folder
from .modeling_brainlm import BrainLMForMaskedSignalModeling
from .pipeline_brainlm import TASK as PIPELINE_TASK
from .version import __version__

CUSTOM_PIPELINES = {
    PIPELINE_TASK: {
        "impl": "pipeline_brainlm.BrainLMPipeline",
        "pt": ["AutoModelForPreTraining"],
        "tf": [],
        "type": "multimodal",
    }
}
FEATURE_EXTRACTOR_AUTO_MAP = {"AutoFeatureExtractor": "feature_extraction_brainlm.BrainLMFeatureExtractor"}
# What tests/model/test_reference_parity.py asserts against outputs recorded from the original code (float32, CPU).
PARITY = (
    "encoder hidden states, CLS embedding and reconstruction logits within 1e-4 (absolute and relative) of the "
    "outputs recorded from the original BrainLM code (commit b591d88, transformers 4.28) on the same weights and "
    "inputs, loss within 1e-5 (relative); the original re-run in float64 differs from its float32 outputs by at "
    "most 2.3e-5"
)
_TILE_FAMILY = "vit_mae"


@dataclass
class PublishArguments:
    """What `publish` (and `brainlm publish`) releases, and where to."""

    source: str = positional(
        "a released model's short name (brainlm-13m, brainlm-111m, brainlm-650m), an original Hub repository (with "
        "--subfolder), or an original or converted checkpoint folder",
        "SRC",
    )
    repo_id: str = positional("the Hub repository to publish to, e.g. ORG/brainlm-111m", "REPO")
    subfolder: str | None = field(default=None, metadata={"help": "folder inside SRC, e.g. vitmae_111M"})
    revision: str | None = field(default=None, metadata={"help": "Hub revision of SRC"})
    output_dir: str | None = field(
        default=None,
        metadata={"help": "write the repository content to this new or empty folder for review; upload nothing"},
    )
    accept_weights_license: bool = field(
        default=False, metadata={"help": "confirm re-hosting the weights under CC BY-NC-ND 4.0 (needed to upload)"}
    )
    private: bool = field(default=False, metadata={"help": "create REPO as a private repository"})
    token: str | None = field(default=None, metadata={"help": "Hub token (default: the saved login)"})
    cache_dir: str | None = field(default=None, metadata={"help": "Hugging Face cache for a Hub SRC"})
    atlas_coordinates: str | None = field(
        default=None, metadata={"help": "coordinate table of the atlas (default: A424's verified download)"}
    )
    ukb_statistics: str | None = field(
        default=None, metadata={"help": "BrainLM's UK Biobank statistics file (default: as brainlm convert)"}
    )

    def __post_init__(self):
        if "/" not in self.repo_id.strip("/"):
            raise InvalidArgumentError(
                f"REPO must be a Hub repository id ORG/NAME, got {self.repo_id!r} (e.g. me/brainlm-111m).",
                argument="repo_id",
            )
        if self.output_dir is None and not self.accept_weights_license:
            raise InvalidArgumentError(WEIGHTS_LICENSE_WARNING, argument="accept_weights_license")


def publish(args: PublishArguments) -> Path | str:
    """
    Write the release of `args.source` into `args.output_dir` and return it, or (without `output_dir`) upload it to
    `args.repo_id` in one commit and return the repository id.
    """
    if args.output_dir is not None:
        return release_folder(args, Path(args.output_dir))
    with tempfile.TemporaryDirectory(prefix="brainlm-publish-") as staging:
        folder = release_folder(args, Path(staging) / "release")
        message = f"Publish {args.source} with brainlm_hf {__version__}"
        return push_folder(folder, args.repo_id, message, args.token, private=args.private or None)


def release_folder(args: PublishArguments, output: Path) -> Path:
    """Write the repository content (see the module docstring) into `output` (new or empty)."""
    from .hub import original_family

    local = Path(args.source).expanduser() / (args.subfolder or "")
    if local.is_dir() and original_family(local / "config.json") is None:  # already in brainlm_hf's format
        source, subfolder, commit = str(local), None, None
        _copy_converted(local, output)
    else:
        source, subfolder = (args.source, args.subfolder) if local.is_dir() else release_location(
            args.source, args.subfolder
        )  # fmt: skip
        commit = None if local.is_dir() else _hub_commit(source, subfolder, args)
        convert_checkpoint(
            source, str(output), subfolder=subfolder, revision=commit or args.revision, token=args.token,
            cache_dir=args.cache_dir, atlas_coordinates=args.atlas_coordinates, ukb_statistics=args.ukb_statistics,
        )  # fmt: skip
    shutil.copyfile(files("brainlm_hf").joinpath("pipeline_brainlm.py"), output / "pipeline_brainlm.py")
    config = json.loads((output / "config.json").read_text())
    config["auto_map"] = {**config.get("auto_map", {}), **FEATURE_EXTRACTOR_AUTO_MAP}
    config["custom_pipelines"] = CUSTOM_PIPELINES
    (output / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    (output / "README.md").write_text(model_card(output, args.repo_id, source, subfolder, commit))
    return output


def _copy_converted(folder: Path, output: Path) -> None:
    """Re-save a brainlm_hf checkpoint (model and processor) into `output`, which must be new or empty."""
    from .folders import output_folder

    with output_folder(output, what="the release", inputs=[folder]) as staging:
        BrainLMForMaskedSignalModeling.from_pretrained(folder).save_pretrained(staging)
        BrainLMFeatureExtractor.from_pretrained(folder).save_pretrained(staging)


def _hub_commit(repo_id: str, subfolder: str | None, args: PublishArguments) -> str:
    """The commit that `args.revision` of the Hub repository `repo_id` resolves to (read from the cache path)."""
    from huggingface_hub import hf_hub_download

    path = Path(
        hf_hub_download(
            repo_id, "config.json", subfolder=subfolder, revision=args.revision, token=args.token,
            cache_dir=args.cache_dir,
        )
    )  # fmt: skip
    return path.parents[len(Path(subfolder or "").parts)].name  # <cache>/snapshots/<commit>/<subfolder>/config.json


def model_card(folder: Path, repo_id: str, source: str, subfolder: str | None, commit: str | None) -> str:
    """The model card of the release in `folder` (config and processor written), with its Hub metadata header."""
    model = BrainLMForMaskedSignalModeling.from_pretrained(folder)
    processor = BrainLMFeatureExtractor.from_pretrained(folder)
    config = model.config
    family = "brainlm_mae" if model.layout.uses_coordinates else _TILE_FAMILY
    base_model = f"{RELEASE_REPO}" if source == RELEASE_REPO else None
    metadata = ModelCardData(
        license="cc-by-nc-nd-4.0",
        library_name="transformers",
        pipeline_tag="feature-extraction",
        tags=["brainlm", "brainlm_hf", "fmri", "neuroscience", "time-series", "masked-autoencoder", "custom_code"],
        base_model=base_model,
    )
    where = f"{source}{'/' + subfolder if subfolder else ''}"
    template = Template(files("brainlm_hf").joinpath("model_cards", "release.md").read_text())
    body = template.substitute(
        repo_id=repo_id,
        source=where,
        commit=f"commit `{commit}`" if commit else "a local folder",
        family=FAMILIES[family],
        version=__version__,
        parameters=_millions(model.num_parameters()),
        encoder_parameters=_millions(model.base_model.num_parameters()),
        hidden_size=config.hidden_size,
        layers=config.num_hidden_layers,
        heads=config.num_attention_heads,
        decoder_layers=config.decoder_num_hidden_layers,
        parity=PARITY,
        preprocessing=_preprocessing(processor),
        task=PIPELINE_TASK,
    )
    return f"---\n{metadata.to_yaml()}\n---\n\n{body}"


def _millions(count: int) -> str:
    return f"{count / 1e6:.3g}M ({count:,} parameters)"


def _preprocessing(processor: BrainLMFeatureExtractor) -> str:
    """The processor's settings as Markdown bullet points."""
    statistics = getattr(processor, "statistics_source", None)
    lines = [
        f"* **Atlas:** {processor.atlas or 'custom'} ({processor.num_regions} regions), region mean time series.",
        f"* **Region order:** {'a stable sort on the Y coordinate' if processor.region_order else 'atlas order'} "
        "(`preprocessor_config.json` holds it; the processor applies it).",
        f"* **Window:** {processor.num_timepoints} timepoints at TR {processor.repetition_time} s; recordings at "
        "another TR are resampled to it.",
        f"* **Normalisation:** `{processor.normalization}`"
        + (f" with the statistics `{statistics}`" if statistics else "")
        + (", clipped to their bounds" if processor.clip_bounds() is not None else "")
        + f", then divided by {processor.input_scale} (`input_scale`).",
    ]
    return "\n".join(lines)
