"""Checks and string parsers for the fields of the edits' options dataclasses.

The options' ``__post_init__`` methods call the checks (a bad value raises UsageError naming the
field); the parsers turn command-line strings ("1/255", "0.485,0.456,0.406", "a,b") into field
values, for the CLI and for anyone holding strings.
"""

from __future__ import annotations

import math
from typing import Any, Iterable, Mapping

from trtflow.errors import UsageError
from trtflow.spec import parse_names as names  # noqa: F401 - the name-list fields' parser, shared with backends


def set_field(obj: Any, name: str, value: Any) -> None:
    """Normalize a field of a frozen dataclass inside its ``__post_init__``."""
    object.__setattr__(obj, name, value)


def boolean(value: Any, what: str) -> bool:
    """``value`` when it is a bool (numpy bools too).

    Raises:
        UsageError: anything else (a string "false" would otherwise read as true).
    """
    if isinstance(value, bool) or type(value).__name__ == "bool_":
        return bool(value)
    raise UsageError(f"{what}: expected True or False, got {value!r}")


def number(value: Any, what: str, low: float | None = None, high: float | None = None,
           low_open: bool = False, integer: bool = False) -> float:
    """A finite number within ``[low, high]`` (``(low, high]`` with ``low_open``).

    Raises:
        UsageError: not a number, NaN/infinite, out of range, or not whole with ``integer``.
    """
    if isinstance(value, bool) or not isinstance(value, (int, float)) and not hasattr(value, "__float__"):
        raise UsageError(f"{what}: expected a number, got {value!r}")
    x = float(value)
    if not math.isfinite(x):
        raise UsageError(f"{what} is {x}; give a finite number")
    if integer and x != int(x):
        raise UsageError(f"{what} is {value!r}; give a whole number")
    if low is not None and (x <= low if low_open else x < low):
        raise UsageError(f"{what} is {value!r}; give a value {'>' if low_open else '>='} {low:g}"
                         + (f" and <= {high:g}" if high is not None else ""))
    if high is not None and x > high:
        raise UsageError(f"{what} is {value!r}; give a value <= {high:g}")
    return int(x) if integer else x


def shape_map(value: Mapping[str, Iterable[int]] | None, what: str) -> dict[str, tuple[int, ...]]:
    """``{"x": (1, 3, 224, 224)}`` with every size a positive integer.

    Raises:
        UsageError: not a mapping of names to sequences of positive integers (a string such as
            "x:1x3x224x224" is refused: parse it with ``trtflow.spec.parse_shapes``).
    """
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise UsageError(f"{what}: expected a dict name -> shape, e.g. {{'x': (1, 3, 224, 224)}}, got {value!r}"
                         + ("; parse 'NAME:1x3x224x224' strings with trtflow.spec.parse_shapes"
                            if isinstance(value, (str, list, tuple)) else ""))
    out = {}
    for name, dims in value.items():
        if isinstance(dims, str):
            raise UsageError(f"{what}['{name}'] is the string {dims!r}; give a tuple of sizes, e.g. (1, 3, 224, 224)")
        try:
            out[str(name)] = tuple(int(number(d, f"{what}['{name}']", 1, integer=True)) for d in dims)
        except TypeError:
            raise UsageError(f"{what}['{name}']: expected a sequence of sizes, got {dims!r}") from None
    return out


def parse_number(text: str, flag: str) -> float:
    """``"0.5"`` or a fraction ``"1/255"``.

    Raises:
        UsageError: neither, or a zero denominator.
    """
    num, sep, den = str(text).strip().partition("/")
    try:
        return float(num) / float(den) if sep else float(num)
    except (ValueError, ZeroDivisionError):
        raise UsageError(f"bad {flag} '{text}': expected a number or a fraction like 1/255") from None


def parse_floats(text: str | None, flag: str) -> tuple[float, ...] | None:
    """``"0.485,0.456,0.406"`` -> ``(0.485, 0.456, 0.406)`` (fractions allowed); None stays None.

    Raises:
        UsageError: an item that is not a number.
    """
    if text is None:
        return None
    parts = [p for p in str(text).split(",") if p.strip()]
    if not parts:
        raise UsageError(f"bad {flag} '{text}': expected numbers separated by commas, e.g. 0.485,0.456,0.406")
    try:
        return tuple(parse_number(p, flag) for p in parts)
    except UsageError:
        raise UsageError(f"bad {flag} '{text}': expected numbers separated by commas, e.g. 0.485,0.456,0.406") from None
