"""Per-output error statistics between a reference and a candidate, with tolerances per output."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from typing import Any, Mapping

import numpy as np

from trtflow.arrays import to_numpy
from trtflow.errors import UsageError
from trtflow.spec import is_amount


@dataclass(frozen=True)
class Tolerances:
    """Absolute and relative tolerance, with per-output overrides.

    An element fails when ``|a - b| > atol + rtol * |ref|`` (numpy's allclose rule): it fails
    both tolerances. NaN fails wherever it appears, even at the same place on both sides
    (a model that outputs NaN is broken), unless ``equal_nan`` is set. Integer and bool outputs
    (class ids, argmax maps, counts) are judged by exact agreement instead: the share of equal
    elements must be at least ``min_agreement`` (1.0: all equal; 0.99 lets 1% of the pixels of
    an argmax map flip between near-tied classes).

    Raises:
        UsageError: a tolerance that is not a finite number >= 0, per-output tolerances that are not
            a dict output name -> tolerance, an ``equal_nan`` that is not True or False.
    """

    atol: float = 1e-5
    rtol: float = 1e-5
    per_output_atol: Mapping[str, float] = field(default_factory=dict)
    per_output_rtol: Mapping[str, float] = field(default_factory=dict)
    equal_nan: bool = False
    min_agreement: float = 1.0

    def __post_init__(self):
        for key in ("per_output_atol", "per_output_rtol"):
            value = getattr(self, key)
            if not isinstance(value, Mapping) or not all(isinstance(k, str) for k in value):
                raise UsageError(f"{key}: expected a dict output name -> tolerance, e.g. {{'boxes': 0.01}}, got {value!r}")
        if not isinstance(self.equal_nan, (bool, np.bool_)):
            raise UsageError(f"equal_nan: expected True or False, got {self.equal_nan!r}")
        if not (is_amount(self.min_agreement) and self.min_agreement <= 1.0):
            raise UsageError(f"min_agreement (--min-agreement): expected a share between 0 and 1 (1.0: all elements "
                             f"equal), got {self.min_agreement!r}")
        values = [self.atol, self.rtol, *self.per_output_atol.values(), *self.per_output_rtol.values()]
        if not all(is_amount(v) for v in values):
            raise UsageError(f"tolerances must be finite numbers >= 0; got atol={self.atol!r}, rtol={self.rtol!r}, "
                             f"per output {dict(self.per_output_atol)} {dict(self.per_output_rtol)}")

    def for_output(self, name: str) -> tuple[float, float]:
        return float(self.per_output_atol.get(name, self.atol)), float(self.per_output_rtol.get(name, self.rtol))

    def check_names(self, outputs: list[str]) -> None:
        """Refuse a per-output tolerance for an output the model does not have (a typo would be ignored).

        Raises:
            UsageError: names that are not among ``outputs``.
        """
        unknown = sorted((set(self.per_output_atol) | set(self.per_output_rtol)) - set(outputs))
        if unknown:
            raise UsageError(
                f"--atol/--rtol name output(s) {unknown} that the model does not have; its outputs are {list(outputs)}"
            )


@dataclass
class OutputDiff:
    """How one output of a candidate differs from the reference."""

    name: str
    shape: tuple[int, ...]
    max_abs: float
    max_rel: float
    mean_abs: float
    fail_fraction: float
    first_fail: tuple[int, ...] | None
    atol: float
    rtol: float
    passed: bool
    note: str = ""
    agreement: float | None = None  # integer outputs: share of equal elements (None: numeric tolerances)
    min_agreement: float | None = None

    def to_dict(self) -> dict:
        out = asdict(self)
        out["shape"] = list(self.shape)
        out["first_fail"] = list(self.first_fail) if self.first_fail is not None else None
        return out


def diff_one(name: str, ref: Any, got: Any, atol: float, rtol: float, equal_nan: bool = False,
             min_agreement: float = 1.0) -> OutputDiff:
    """Statistics for one output pair; shape or NaN mismatches fail with a note.

    A NaN fails even where both sides have one, unless ``equal_nan``; non-numeric outputs
    (strings) must be equal element by element; integer and bool outputs pass when the share
    of equal elements is at least ``min_agreement``.
    """
    a = to_numpy(ref)
    b = to_numpy(got)
    if a.shape != b.shape:
        note = f"shape {tuple(b.shape)} differs from the reference {tuple(a.shape)}"
        if a.ndim == b.ndim and a.ndim and a.shape[1:] == b.shape[1:]:  # a data-dependent count (detections)
            note = f"count {b.shape[0]} differs from the reference's {a.shape[0]} (values compared only when counts agree)"
        return OutputDiff(name, tuple(b.shape), float("inf"), float("inf"), float("inf"), 1.0, (), atol, rtol, False, note)
    if a.size == 0:
        return OutputDiff(name, a.shape, 0.0, 0.0, 0.0, 0.0, None, atol, rtol, True)
    if a.ndim == 0:  # a scalar output: compared as one element (numpy scalars take no masked assignment)
        d = diff_one(name, a.reshape(1), b.reshape(1), atol, rtol, equal_nan, min_agreement)
        return replace(d, shape=(), first_fail=None if d.first_fail is None else ())
    if a.dtype.kind not in "biufc" or b.dtype.kind not in "biufc":
        return _diff_exact(name, a, b, atol, rtol)
    if a.dtype.kind in "biu" and b.dtype.kind in "biu":
        return _diff_integer(name, a, b, atol, rtol, min_agreement)
    wide = np.complex128 if "c" in (a.dtype.kind, b.dtype.kind) else np.float64  # never drop an imaginary part
    a64 = a.astype(wide)
    b64 = b.astype(wide)
    nan_a, nan_b = np.isnan(a64), np.isnan(b64)
    both_nan = nan_a & nan_b
    with np.errstate(invalid="ignore"):
        err = np.abs(a64 - b64)
    err[a64 == b64] = 0.0  # equal infinities too
    err[both_nan] = 0.0 if equal_nan else np.inf
    err[nan_a ^ nan_b] = np.inf
    with np.errstate(over="ignore", invalid="ignore"):
        rel = err / np.maximum(np.abs(a64), np.finfo(np.float64).tiny)
        fails = ~(err <= atol + rtol * np.abs(a64)) | np.isinf(err)  # an infinite reference bounds nothing
    same = err == 0  # equal values, equal infinities and (with equal_nan) NaNs on both sides
    fails &= ~same  # they pass (rtol 0 times an infinite reference is NaN)
    rel[same] = 0.0
    rel[np.isnan(rel)] = np.inf
    first = _first(fails)
    notes = []
    if (nan_a ^ nan_b).any():
        notes.append(f"{int((nan_a ^ nan_b).sum())} NaN(s) in one output but not the other")
    if both_nan.any() and not equal_nan:
        notes.append(f"{int(both_nan.sum())} NaN(s) in both outputs")
    finite = np.isfinite(err)
    return OutputDiff(
        name=name,
        shape=tuple(a.shape),
        max_abs=float(np.nanmax(err)),
        max_rel=float(np.nanmax(rel)),
        mean_abs=float(err[finite].mean()) if finite.any() else float("inf"),
        fail_fraction=float(fails.mean()),
        first_fail=first,
        atol=atol,
        rtol=rtol,
        passed=first is None,
        note="; ".join(notes),
    )


def _diff_exact(name: str, a: np.ndarray, b: np.ndarray, atol: float, rtol: float) -> OutputDiff:
    """Strings (and other non-numeric outputs): equal or not, element by element."""
    fails = ~(a.astype(str) == b.astype(str))
    first = _first(fails)
    worst = 0.0 if first is None else float("inf")
    return OutputDiff(name, tuple(a.shape), worst, worst, worst, float(fails.mean()), first, atol, rtol, first is None,
                      "compared for equality (not numeric)")


def _diff_integer(name: str, a: np.ndarray, b: np.ndarray, atol: float, rtol: float, min_agreement: float) -> OutputDiff:
    """Class ids and other integers: the share of equal elements against ``min_agreement``."""
    fails = a != b  # numpy compares uint64 with int64 by value (casting both to int64 wraps 2**64 - 1 to -1)
    agreement = int((~fails).sum()) / fails.size  # one rounding: 93 of 100 is 0.93, not 1 - 0.07
    err = np.abs(a.astype(np.float64) - b.astype(np.float64))
    passed = agreement >= min_agreement
    note = f"{agreement:.2%} equal (integer output: exact agreement"
    note += ")" if min_agreement >= 1.0 else f", need {min_agreement:.2%})"
    return OutputDiff(name, tuple(a.shape), float(err.max()), float(err.max()), float(err.mean()), float(fails.mean()),
                      _first(fails), atol, rtol, passed, note,
                      agreement=agreement, min_agreement=min_agreement)


def _first(fails: np.ndarray) -> tuple[int, ...] | None:
    """Index of the first failing element (C order), or None; without listing every failure."""
    if not fails.any():
        return None
    return tuple(int(i) for i in np.unravel_index(int(np.argmax(fails)), fails.shape))


def compare_outputs(
    reference: Mapping[str, Any], candidate: Mapping[str, Any], tolerances: Tolerances | None = None
) -> list[OutputDiff]:
    """Compare every output of ``reference`` with the same-named output of ``candidate``.

    Outputs are matched by name, never by position; one missing from the candidate fails.
    """
    tol = tolerances or Tolerances()
    diffs = []
    for name, ref in reference.items():
        atol, rtol = tol.for_output(name)
        if name not in candidate:
            diffs.append(missing(name, ref, atol, rtol, "candidate"))
            continue
        diffs.append(diff_one(name, ref, candidate[name], atol, rtol, tol.equal_nan, tol.min_agreement))
    return diffs


def missing(name: str, value: Any, atol: float, rtol: float, side: str) -> OutputDiff:
    """The failing diff of output ``name`` (``value`` on the side that has it), missing from ``side``'s outputs."""
    inf = float("inf")
    return OutputDiff(name, tuple(np.shape(value)), inf, inf, inf, 1.0, None, atol, rtol, False,
                      f"missing from the {side}'s outputs")
