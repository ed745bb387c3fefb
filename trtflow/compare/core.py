"""Per-output error statistics between a reference and a candidate, with tolerances per output."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Mapping

import numpy as np

from trtflow.arrays import to_numpy


@dataclass(frozen=True)
class Tolerances:
    """Absolute and relative tolerance, with per-output overrides.

    An element fails when ``|a - b| > atol + rtol * |ref|`` (numpy's allclose rule): it fails
    both tolerances.
    """

    atol: float = 1e-5
    rtol: float = 1e-5
    per_output_atol: Mapping[str, float] = field(default_factory=dict)
    per_output_rtol: Mapping[str, float] = field(default_factory=dict)

    def for_output(self, name: str) -> tuple[float, float]:
        return self.per_output_atol.get(name, self.atol), self.per_output_rtol.get(name, self.rtol)


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

    def to_dict(self) -> dict:
        out = asdict(self)
        out["shape"] = list(self.shape)
        out["first_fail"] = list(self.first_fail) if self.first_fail is not None else None
        return out


def diff_one(name: str, ref: Any, got: Any, atol: float, rtol: float) -> OutputDiff:
    """Statistics for one output pair; shape or NaN-pattern mismatches fail with a note."""
    a = to_numpy(ref)
    b = to_numpy(got)
    if a.shape != b.shape:
        return OutputDiff(name, tuple(b.shape), float("inf"), float("inf"), float("inf"), 1.0, (), atol, rtol, False,
                          f"shape {tuple(b.shape)} differs from the reference {tuple(a.shape)}")
    if a.size == 0:
        return OutputDiff(name, a.shape, 0.0, 0.0, 0.0, 0.0, None, atol, rtol, True)
    a64 = a.astype(np.float64)
    b64 = b.astype(np.float64)
    nan_a, nan_b = np.isnan(a64), np.isnan(b64)
    both_nan = nan_a & nan_b
    err = np.abs(a64 - b64)
    err[both_nan] = 0.0
    err[nan_a ^ nan_b] = np.inf
    with np.errstate(over="ignore", invalid="ignore"):
        rel = err / np.maximum(np.abs(a64), np.finfo(np.float64).tiny)
    rel[err == 0] = 0.0
    fails = err > atol + rtol * np.abs(a64)
    fails &= ~both_nan
    idx = np.argwhere(fails)
    note = ""
    if (nan_a ^ nan_b).any():
        note = f"{int((nan_a ^ nan_b).sum())} NaN(s) in one output but not the other"
    return OutputDiff(
        name=name,
        shape=tuple(a.shape),
        max_abs=float(err.max()),
        max_rel=float(rel.max()),
        mean_abs=float(err[np.isfinite(err)].mean()) if np.isfinite(err).any() else float("inf"),
        fail_fraction=float(fails.mean()),
        first_fail=tuple(int(i) for i in idx[0]) if len(idx) else None,
        atol=atol,
        rtol=rtol,
        passed=not len(idx),
        note=note,
    )


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
            diffs.append(OutputDiff(name, tuple(np.shape(ref)), float("inf"), float("inf"), float("inf"), 1.0, None,
                                    atol, rtol, False, "missing from the candidate's outputs"))
            continue
        diffs.append(diff_one(name, ref, candidate[name], atol, rtol))
    return diffs
