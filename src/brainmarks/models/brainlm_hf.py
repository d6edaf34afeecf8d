# Copyright 2026 The brainlm_hf authors. Licensed under the Apache License, Version 2.0.
"""
Registers brainlm_hf with Brainmarks. Brainmarks imports every module of its namespace package `brainmarks.models`
(this file is brainlm_hf's portion of it) when its model registry loads; see `brainlm_hf.integrations.brainmarks`.
"""

from brainmarks.models.registry import register_model

from brainlm_hf.integrations.brainmarks import brainlm_hf

register_model(brainlm_hf)
