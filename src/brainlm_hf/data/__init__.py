# Copyright 2026 The brainlm_hf authors. Licensed under the Apache License, Version 2.0.
