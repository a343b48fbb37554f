"""Numeric flags and settings, checked in one place for the CLIs and the UI alike.

NaN, infinities, negatives and out-of-range values get a :class:`SettingsError` that names the setting, its
range and the value given, before any work starts. ``argparse`` types built from :func:`arg` give the same
messages on the command line.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from vichat.errors import SettingsError


def _fmt(x: float) -> str:
    return f"{x:g}" if isinstance(x, float) else str(x)


def number(
    name: str,
    value: Any,
    *,
    minimum: float | None = None,
    maximum: float | None = None,
    above: float | None = None,
    below: float | None = None,
    integer: bool = False,
    allow_none: bool = False,
) -> Any:
    """Return ``value`` (as int or float) if it is a finite number within the bounds; raise otherwise.

    ``minimum``/``maximum`` are inclusive, ``above``/``below`` exclusive.
    """
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or value is None:
        raise SettingsError(f"{name} must be a number (got {value!r})")
    if isinstance(value, str):
        text = value.strip()
        try:
            value = int(text) if integer else float(text)
        except ValueError:
            kind = "a whole number" if integer else "a number"
            raise SettingsError(f"{name} must be {kind} (got {text!r})") from None
    if integer:
        if isinstance(value, float):
            if not math.isfinite(value) or value != int(value):
                raise SettingsError(f"{name} must be a whole number (got {_fmt(value)})")
            value = int(value)
        if not isinstance(value, int):
            raise SettingsError(f"{name} must be a whole number (got {value!r})")
    else:
        try:
            value = float(value)
        except (TypeError, ValueError):
            raise SettingsError(f"{name} must be a number (got {value!r})") from None
        if not math.isfinite(value):
            raise SettingsError(f"{name} must be a finite number (got {value})")
    lo = minimum if minimum is not None else above
    hi = maximum if maximum is not None else below
    bad = (
        (minimum is not None and value < minimum)
        or (above is not None and value <= above)
        or (maximum is not None and value > maximum)
        or (below is not None and value >= below)
    )
    if bad:
        if lo is not None and hi is not None:
            left = "[" if minimum is not None else "("
            right = "]" if maximum is not None else ")"
            where = f"in {left}{_fmt(lo)}, {_fmt(hi)}{right}"
        elif lo is not None:
            where = f">= {_fmt(lo)}" if minimum is not None else f"> {_fmt(lo)}"
        else:
            where = f"<= {_fmt(hi)}" if maximum is not None else f"< {_fmt(hi)}"
        raise SettingsError(f"{name} must be {where} (got {_fmt(value)})")
    return value


def positive_int(name: str, value: Any) -> int:
    return number(name, value, minimum=1, integer=True)


def non_negative_int(name: str, value: Any) -> int:
    return number(name, value, minimum=0, integer=True)


def positive(name: str, value: Any) -> float:
    return number(name, value, above=0)


def arg(name: str, **bounds: Any) -> Callable[[str], Any]:
    """An ``argparse`` ``type=`` that checks like :func:`number` and reports through argparse's error."""
    import argparse

    def convert(text: str) -> Any:
        try:
            return number(name, text, **bounds)
        except SettingsError as e:
            raise argparse.ArgumentTypeError(str(e)) from None

    convert.__name__ = "number"
    return convert
