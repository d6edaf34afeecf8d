# Copyright 2026 The brainlm_hf authors. Licensed under the Apache License, Version 2.0.
"""The package version (a leaf: setup.cfg and the modules that record it read it from here, not from `__init__`)."""

__version__ = "0.1.0"
