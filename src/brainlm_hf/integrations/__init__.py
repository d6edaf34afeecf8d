# Copyright 2026 The brainlm_hf authors. Licensed under the Apache License, Version 2.0.
"""Adapters that plug brainlm_hf checkpoints into other tools (imported on demand; each needs its tool)."""
