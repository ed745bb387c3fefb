"""Tensor specs, bounds and the trtexec shape syntax (``name:1x3x224x224,other:...``)."""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, Union

from trtflow.errors import UsageError

Dim = Union[int, str]  # a static size, or the name of a dynamic dim ("batch", "height")
Shape = tuple[int, ...]


@dataclass(frozen=True)
class Bounds:
    """Min / opt / max shapes of one input (a TensorRT optimization profile's view of it)."""

    min: Shape
    opt: Shape
    max: Shape

    def contains(self, shape: Shape) -> bool:
        return len(shape) == len(self.min) and all(
            lo <= d <= hi for d, lo, hi in zip(shape, self.min, self.max)
        )

    def to_dict(self) -> dict:
        return {"min": list(self.min), "opt": list(self.opt), "max": list(self.max)}


@dataclass(frozen=True)
class TensorSpec:
    """One named input or output of an engine.

    Attributes:
        name: tensor name, as in the model.
        dtype: numpy-style dtype name ("float32", "float16", "bfloat16", "int64", "uint8", "bool").
        shape: sizes; a dynamic dim is a string naming it (e.g. "batch"), or "?" when unnamed.
        bounds: min/opt/max shapes when the engine knows them (TensorRT profiles), else None.
    """

    name: str
    dtype: str
    shape: tuple[Dim, ...]
    bounds: Bounds | None = None

    @property
    def rank(self) -> int:
        return len(self.shape)

    @property
    def is_dynamic(self) -> bool:
        return any(not isinstance(d, int) for d in self.shape)

    def takes(self, shape: Iterable[int]) -> bool:
        """True when ``shape`` has this spec's rank and its size in every static dim."""
        shape = tuple(shape)
        return len(shape) == self.rank and all(not isinstance(d, int) or d == n for d, n in zip(self.shape, shape))

    def describe_shape(self) -> str:
        """The shape as users read it: ``(batch, 3, 224, 224)`` plus the bounds when known."""
        text = "(" + ", ".join(str(d) for d in self.shape) + ")"
        if self.bounds is not None:
            parts = []
            for i, d in enumerate(self.shape):
                if not isinstance(d, int) or self.bounds.min[i] != self.bounds.max[i]:
                    parts.append(f"{self.bounds.min[i]} <= {d} <= {self.bounds.max[i]}")
            if parts:
                text += " with " + ", ".join(parts)
        return text

    def to_dict(self) -> dict:
        out = {"name": self.name, "dtype": self.dtype, "shape": list(self.shape)}
        if self.bounds is not None:
            out["bounds"] = self.bounds.to_dict()
        return out

    @classmethod
    def from_dict(cls, data: Mapping) -> "TensorSpec":
        """The inverse of ``to_dict`` (specs stored in sidecars and packages)."""
        bounds = data.get("bounds")
        return cls(data["name"], data["dtype"], tuple(data["shape"]),
                   Bounds(tuple(bounds["min"]), tuple(bounds["opt"]), tuple(bounds["max"])) if bounds else None)


def format_shape(shape: Iterable[int]) -> str:
    """``(1, 3, 224, 224)`` -> ``"1x3x224x224"`` (trtexec spelling)."""
    return "x".join(str(int(d)) for d in shape)


MAX_DIM = 2**62  # larger sizes are never real (and overflow int64 element counts)


def is_count(value: Any, minimum: int = 1) -> bool:
    """True when ``value`` is a whole number >= ``minimum`` (not a bool, a float or a string)."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool) and value >= minimum


def is_amount(value: Any, minimum: float = 0.0) -> bool:
    """True when ``value`` is a finite real number >= ``minimum`` (numpy scalars too; not a bool or a string)."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value) and value >= minimum


def whole_sizes(shape: Iterable) -> bool:
    """True when every size of ``shape`` is a whole number >= 0 (not a bool, a float or a label)."""
    return all(is_count(d, 0) for d in shape)


def parse_shape(text: str) -> Shape:
    """``"1x3x224x224"`` -> ``(1, 3, 224, 224)``; ``""`` or ``"scalar"`` is a scalar.

    Raises:
        UsageError: a size that is not a non-negative integer.
    """
    text = text.strip()
    if text in ("", "scalar"):
        return ()
    parts = text.lower().split("x")
    if not all(p.strip().isascii() and p.strip().isdigit() for p in parts):
        raise UsageError(f"bad shape '{text}': expected sizes >= 0 joined by 'x', e.g. 1x3x224x224")
    if any(len(p.strip().lstrip("0")) > len(str(MAX_DIM)) for p in parts):  # before int(): no 4300-digit limit
        shown = text if len(text) <= 60 else text[:60] + "..."
        raise UsageError(f"bad shape '{shown}': a size is too large for any tensor")
    dims = tuple(int(p) for p in parts)
    if any(d >= MAX_DIM for d in dims):
        raise UsageError(f"bad shape '{text}': a size of {max(dims)} is too large for any tensor")
    return dims


def parse_shapes(text: str | Iterable[str] | None) -> dict[str, Shape]:
    """Parse trtexec's ``--shapes`` syntax: ``name:1x3x224x224,other:1x10``.

    The name is split at the last ':' so names like ``input:0`` work, as in trtexec.
    Several strings (a repeated flag) are merged.

    Raises:
        UsageError: an entry without ':' or a bad shape, or an input given two shapes (one would be
            dropped without a word; one shape twice is taken).
    """
    if text is None:
        return {}
    texts = [text] if isinstance(text, str) else list(text)
    shapes: dict[str, Shape] = {}
    for chunk in texts:
        for entry in chunk.split(","):
            entry = entry.strip()
            if not entry:
                continue
            name, sep, dims = entry.rpartition(":")
            name = name.strip().strip("'\"")
            if not sep or not name:
                raise UsageError(
                    f"bad shape entry '{entry}': expected NAME:DIMS, e.g. input:1x3x224x224"
                )
            shape = parse_shape(dims)
            if name in shapes and shapes[name] != shape:
                raise UsageError(f"input '{name}' is given two shapes, {format_shape(shapes[name]) or 'scalar'} and "
                                 f"{format_shape(shape) or 'scalar'}; give each input one shape")
            shapes[name] = shape
    return shapes


@dataclass(frozen=True)
class Profile:
    """One optimization profile: min/opt/max shape per input name."""

    min: Mapping[str, Shape] = field(default_factory=dict)
    opt: Mapping[str, Shape] = field(default_factory=dict)
    max: Mapping[str, Shape] = field(default_factory=dict)

    def bounds(self, name: str) -> Bounds:
        return Bounds(tuple(self.min[name]), tuple(self.opt[name]), tuple(self.max[name]))

    def covers(self, shapes: Mapping[str, Shape]) -> bool:
        """True when every given shape lies within this profile's bounds."""
        return all(name in self.min and self.bounds(name).contains(tuple(s)) for name, s in shapes.items())

    def to_dict(self) -> dict:
        return {
            name: {"min": list(self.min[name]), "opt": list(self.opt[name]), "max": list(self.max[name])}
            for name in self.min
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Mapping[str, Iterable[int]]]) -> "Profile":
        return cls(
            min={k: tuple(v["min"]) for k, v in data.items()},
            opt={k: tuple(v["opt"]) for k, v in data.items()},
            max={k: tuple(v["max"]) for k, v in data.items()},
        )


def make_profile(
    min_shapes: Mapping[str, Shape] | None = None,
    opt_shapes: Mapping[str, Shape] | None = None,
    max_shapes: Mapping[str, Shape] | None = None,
) -> Profile:
    """A profile from trtexec-style min/opt/max dicts; a missing opt is taken from max then min.

    Raises:
        UsageError: a size that is not a whole number >= 0, ranks that differ, or min > opt > max.
    """
    min_shapes, opt_shapes, max_shapes = dict(min_shapes or {}), dict(opt_shapes or {}), dict(max_shapes or {})
    names = list(dict.fromkeys([*min_shapes, *opt_shapes, *max_shapes]))
    lo, mid, hi = {}, {}, {}
    for name in names:
        given = [s for s in (min_shapes.get(name), opt_shapes.get(name), max_shapes.get(name)) if s is not None]
        for shape in given:
            if not whole_sizes(shape):
                raise UsageError(f"input '{name}': a profile takes whole sizes >= 0, got {tuple(shape)}")
        a = min_shapes.get(name, given[0])
        c = max_shapes.get(name, given[-1])
        b = opt_shapes.get(name, c)
        if not (len(a) == len(b) == len(c)):
            raise UsageError(f"input '{name}': min/opt/max shapes have different ranks: {a}, {b}, {c}")
        if not all(x <= y <= z for x, y, z in zip(a, b, c)):
            raise UsageError(
                f"input '{name}': need min <= opt <= max in every dim, got "
                f"min {format_shape(a)}, opt {format_shape(b)}, max {format_shape(c)}"
            )
        lo[name], mid[name], hi[name] = tuple(a), tuple(b), tuple(c)
    return Profile(lo, mid, hi)


def parse_names(value: str | Iterable[str] | None, what: str) -> tuple[str, ...]:
    """``"a,b"``, ``["a", "b"]`` or None -> ``("a", "b")`` / ``()``.

    Raises:
        UsageError: an item that is not a string.
    """
    if value is None:
        return ()
    items = [value] if isinstance(value, str) else value
    try:
        items = list(items)
    except TypeError:
        raise UsageError(f"{what}: expected a name or a list of names, got {value!r}") from None
    out = []
    for item in items:
        if not isinstance(item, str):
            raise UsageError(f"{what}: expected names (strings), got {item!r}")
        out += [n.strip() for n in item.split(",") if n.strip()]
    return tuple(out)


def parse_pairs(items: Iterable[str] | None, flag: str, example: str) -> dict[str, str]:
    """``["a=b", "c=d"]`` -> ``{"a": "b", "c": "d"}`` for repeatable ``--flag KEY=VALUE`` options.

    Raises:
        UsageError: an item without '=' or with an empty side (the message shows ``example``), or a
            key given twice with two values (one would be dropped without a word; one value twice is taken).
    """
    out = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key or not value:
            raise UsageError(f"bad {flag} '{item}': expected {example}")
        if key in out and out[key] != value:
            raise UsageError(f"{flag} gives '{key}' twice ({key}={out[key]} and {item}); give each once")
        out[key] = value
    return out


def parse_tolerances(items: Iterable[str] | None, flag: str) -> tuple[float | None, dict[str, float]]:
    """``["1e-3", "logits=0.1"]`` -> ``(1e-3, {"logits": 0.1})``: one value for every output
    and/or ``NAME=X`` for one output (``--atol``/``--rtol`` of every command).

    Returns:
        ``(the value for all outputs, or None when only per-output values were given, per-output values)``.

    Raises:
        UsageError: a value that is not a finite number >= 0, or an empty name.
    """
    base, per = None, {}
    for item in items or []:
        name, sep, value = str(item).rpartition("=")
        number = _tolerance(value)
        if number is None or (sep and not name.strip()):
            raise UsageError(
                f"bad {flag} '{item}': expected a number >= 0 for every output or NAME=NUMBER for one, "
                f"e.g. {flag} 1e-3 or {flag} logits=0.01"
            )
        if sep:
            per[name.strip()] = number
        else:
            base = number
    return base, per


def _tolerance(text: str) -> float | None:
    try:
        number = float(text)
    except ValueError:
        return None
    return number if math.isfinite(number) and number >= 0 else None
