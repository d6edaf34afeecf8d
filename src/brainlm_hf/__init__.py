# Copyright 2026 The brainlm_hf authors. Licensed under the Apache License, Version 2.0.
"""brainlm_hf: BrainLM, the fMRI foundation model, as a Hugging Face Transformers model.

Importing the package registers `BrainLMConfig` (`model_type="brainlm_hf"`) with `AutoConfig`, `BrainLMModel` with
`AutoModel`, `BrainLMForMaskedSignalModeling` with `AutoModelForPreTraining`, `BrainLMForSequenceClassification` with
`AutoModelForSequenceClassification` and `BrainLMFeatureExtractor` with `AutoFeatureExtractor`, and marks the
classes for remote code so that every `save_pretrained` writes a Hub-ready folder (weights, config and the source
files). It also lets `from_pretrained` of the BrainLM classes (models and feature extractor) read the released
weights by short name (`"brainlm-111m"`) and original BrainLM checkpoints, converted on load and cached
(`brainlm_hf.hub.resolve_pretrained`), and registers `BrainLMPipeline` with transformers' `pipeline` for the task
`"brainlm-feature-extraction"`.
"""

from transformers import (
    AutoConfig,
    AutoFeatureExtractor,
    AutoModel,
    AutoModelForPreTraining,
    AutoModelForSequenceClassification,
)
from transformers.pipelines import PIPELINE_REGISTRY

from .configuration_brainlm import PRESETS, BrainLMConfig
from .feature_extraction_brainlm import BrainLMFeatureExtractor
from .hub import resolve_pretrained
from .modeling_brainlm import (
    BrainLMForMaskedSignalModeling,
    BrainLMForMaskedSignalModelingOutput,
    BrainLMForSequenceClassification,
    BrainLMModel,
    BrainLMModelOutput,
    BrainLMPreTrainedModel,
)
from .pipeline_brainlm import TASK as PIPELINE_TASK
from .pipeline_brainlm import BrainLMPipeline
from .version import __version__ as __version__

AutoConfig.register(BrainLMConfig.model_type, BrainLMConfig, exist_ok=True)
AutoModel.register(BrainLMConfig, BrainLMModel, exist_ok=True)
AutoModelForPreTraining.register(BrainLMConfig, BrainLMForMaskedSignalModeling, exist_ok=True)
AutoModelForSequenceClassification.register(BrainLMConfig, BrainLMForSequenceClassification, exist_ok=True)
AutoFeatureExtractor.register(BrainLMConfig, BrainLMFeatureExtractor, exist_ok=True)
BrainLMConfig.register_for_auto_class()
BrainLMModel.register_for_auto_class("AutoModel")
BrainLMForMaskedSignalModeling.register_for_auto_class("AutoModelForPreTraining")
BrainLMForSequenceClassification.register_for_auto_class("AutoModelForSequenceClassification")
BrainLMFeatureExtractor.register_for_auto_class()
BrainLMPreTrainedModel._resolve_pretrained = staticmethod(resolve_pretrained)
BrainLMFeatureExtractor._resolve_pretrained = staticmethod(resolve_pretrained)
PIPELINE_REGISTRY.register_pipeline(
    PIPELINE_TASK, pipeline_class=BrainLMPipeline, pt_model=AutoModelForPreTraining, type="multimodal"
)

__all__ = [
    "PRESETS",
    "BrainLMConfig",
    "BrainLMFeatureExtractor",
    "BrainLMForMaskedSignalModeling",
    "BrainLMForMaskedSignalModelingOutput",
    "BrainLMForSequenceClassification",
    "BrainLMModel",
    "BrainLMModelOutput",
    "BrainLMPipeline",
    "BrainLMPreTrainedModel",
]
