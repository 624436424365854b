"""Type checks for the settings dataclasses (recipes' sections, run settings), torch-free.

TOML and JSON give ``2`` where a float is meant and happily give ``2.5`` where a step count is
meant, ``"yes"`` where a switch is, ``nan`` where a learning rate is. :func:`enforce_field_types`
turns ints into floats where a float is declared and refuses everything else that does not fit
the declared type, with the field's name in the message, before any work starts.

Example:
    >>> from dataclasses import dataclass
    >>> @dataclass(frozen=True)
    ... class Settings:
    ...     steps: int = 1
    ...     lr: float = 0.1
    ...     def __post_init__(self):
    ...         enforce_field_types(self)
    >>> Settings(steps=3, lr=1).lr
    1.0
    >>> Settings(steps=2.5)
    Traceback (most recent call last):
    ...
    ValueError: steps must be a whole number, got 2.5
"""

from __future__ import annotations

import math
from dataclasses import fields

__all__ = ["enforce_field_types"]


def _checked(name: str, declared: str, value):
    if declared == "bool":
        if not isinstance(value, bool):
            raise ValueError(f"{name} must be true or false, got {value!r}")
    elif declared == "int":
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"{name} must be a whole number, got {value!r}")
    elif declared == "float":
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f"{name} must be a number, got {value!r}")
        value = float(value)
        if not math.isfinite(value):
            raise ValueError(f"{name} must be a finite number, got {value!r}")
    elif declared == "str":
        if not isinstance(value, str):
            raise ValueError(f"{name} must be a string, got {value!r}")
    return value


def enforce_field_types(instance) -> None:
    """Check (and, int -> float, coerce) every ``bool``, ``int``, ``float`` and ``str`` field of a
    (frozen) dataclass instance; other declared types are left to the class."""
    for f in fields(instance):
        declared = f.type if isinstance(f.type, str) else getattr(f.type, "__name__", "")
        value = getattr(instance, f.name)
        checked = _checked(f.name, declared, value)
        if checked is not value:
            object.__setattr__(instance, f.name, checked)
