# Copyright 2026 The brainlm_hf authors. Licensed under the Apache License, Version 2.0.
"""Building blocks of the argument dataclasses of the commands (`PrepareArguments`, `ConvertArguments`, ...).

Each command's arguments are one dataclass, next to what runs it, read by `transformers.HfArgumentParser` from the
command line or from one JSON/YAML file (`brainlm_hf.cli`), and passed as is by Python callers. Every field carries
`metadata={"help": ...}`; `positional(...)` marks a field the command line takes without a flag (`brainlm prepare
INPUTS... OUT`), under its `metavar`. `__post_init__` checks the values with the helpers below, which raise
`InvalidArgumentError` naming the field (the command line names the flag instead).
"""

import math
import numbers
from dataclasses import MISSING, field

from .errors import InvalidArgumentError

__all__ = ["check_choice", "check_positive", "positional"]


def positional(help: str, metavar: str, default=MISSING):
    """A dataclass field that the command line takes without a flag, shown as `metavar` (a list field: one or more)."""
    return field(default=default, metadata={"help": help, "metavar": metavar, "positional": True})


def check_positive(arguments, *names: str, integer: bool = False, optional: bool = False) -> None:
    """Refuse a value of the fields `names` of `arguments` that is not a positive (finite) number, or not an integer
    with `integer`; with `optional`, None (not given) passes."""
    for name in names:
        value = getattr(arguments, name)
        if not (value is None and optional):
            check_positive_value(name, value, integer=integer)


def check_positive_value(name: str, value, integer: bool = False) -> None:
    """Refuse `value`, given as the argument `name`, unless it is a positive finite number (an integer with
    `integer`; never a bool)."""
    kind = numbers.Integral if integer else numbers.Real
    if isinstance(value, bool) or not isinstance(value, kind) or not (math.isfinite(value) and value > 0):
        what = "a positive integer" if integer else "a positive finite number"
        raise InvalidArgumentError(f"{name} must be {what}, got {value!r}.", argument=name)


def check_choice(arguments, name: str, choices: tuple) -> None:
    """Refuse a value of the field `name` of `arguments` that is not one of `choices`."""
    value = getattr(arguments, name)
    if value not in choices:
        raise InvalidArgumentError(
            f"{name} must be one of {', '.join(map(str, choices))}, got {value!r}.", argument=name
        )
