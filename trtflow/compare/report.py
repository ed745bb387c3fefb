"""The result of comparing engines, as data, as table rows, and as one MismatchError."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable

from trtflow.compare.core import OutputDiff
from trtflow.errors import MismatchError

DIFF_COLUMNS = ("output", "max abs", "max rel", "mean abs", "failing", "first fail", "result")


def diff_row(diff: OutputDiff, prefix: Iterable[str] = ()) -> tuple[str, ...]:
    """One table row for an ``OutputDiff`` (columns ``DIFF_COLUMNS``, after ``prefix``)."""
    first = "-" if diff.first_fail is None else "(" + ", ".join(map(str, diff.first_fail)) + ")"
    verdict = "ok" if diff.passed else "FAIL"
    if diff.note:
        verdict += f" ({diff.note})"
    return (
        *prefix,
        diff.name,
        f"{diff.max_abs:.3g}",
        f"{diff.max_rel:.3g}",
        f"{diff.mean_abs:.3g}",
        f"{100 * diff.fail_fraction:.3g}%",
        first,
        verdict,
    )


def describe_failures(diffs: Iterable[OutputDiff]) -> str:
    """``"logits: max abs 0.3, 12% failing, first at (0, 7)"; ...`` for the failing outputs."""
    parts = []
    for d in diffs:
        if d.passed:
            continue
        if d.note.startswith("missing"):
            side = "reference" if "reference" in d.note else "candidate"
            parts.append(f"{d.name}: missing (the {side} has no output of that name)")
            continue
        if d.agreement is not None:
            parts.append(f"{d.name}: {d.agreement:.2%} of the elements equal, need {d.min_agreement:.2%} "
                         "(integer output: judged by exact agreement; --min-agreement sets the share)")
            continue
        text = f"{d.name}: max abs {d.max_abs:.3g}, max rel {d.max_rel:.3g}, {100 * d.fail_fraction:.3g}% failing"
        if d.first_fail:
            text += f", first at {tuple(d.first_fail)}"
        if d.note:
            text += f" ({d.note})"
        parts.append(text)
    return "; ".join(parts)


@dataclass
class EngineComparison:
    """One candidate engine against the reference engine."""

    reference: str
    candidate: str
    diffs: list[OutputDiff]

    @property
    def passed(self) -> bool:
        return all(d.passed for d in self.diffs)

    def to_dict(self) -> dict:
        return {
            "reference": self.reference,
            "candidate": self.candidate,
            "passed": self.passed,
            "outputs": {d.name: d.to_dict() for d in self.diffs},
        }


@dataclass
class CompareReport:
    """Every candidate engine against the first (reference) engine, on the same inputs.

    Attributes:
        model: what was compared (a path or a MODULE:FACTORY spec).
        engines: engine names, reference first.
        inputs: input name -> {"shape": [...], "dtype": ...} of the feed used.
        comparisons: one per candidate engine.
        notes: how the inputs or models were obtained (e.g. the export used).
    """

    model: str
    engines: list[str]
    inputs: dict[str, dict]
    comparisons: list[EngineComparison]
    notes: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return all(c.passed for c in self.comparisons)

    def rows(self) -> list[tuple[str, ...]]:
        """Table rows: ``candidate`` then ``DIFF_COLUMNS``."""
        return [diff_row(d, (c.candidate,)) for c in self.comparisons for d in c.diffs]

    def to_dict(self) -> dict:
        return {
            "model": self.model,
            "engines": list(self.engines),
            "reference": self.engines[0] if self.engines else None,
            "passed": self.passed,
            "inputs": self.inputs,
            "comparisons": [c.to_dict() for c in self.comparisons],
            "notes": list(self.notes),
        }

    def raise_for_mismatch(self) -> None:
        """Raise ``MismatchError`` (with this report) when any output is out of tolerance."""
        failed = [c for c in self.comparisons if not c.passed]
        if not failed:
            return
        text = "; ".join(f"{c.candidate} vs {c.reference}: {describe_failures(c.diffs)}" for c in failed)
        bad = [d for c in failed for d in c.diffs if not d.passed]
        raise MismatchError(f"outputs differ beyond tolerance: {text}. {_fixes(bad)}", report=self)


def _fixes(bad: list[OutputDiff]) -> str:
    """What may help, for the kinds of failure in ``bad``: no tolerance passes a missing output or
    a shape that differs, so those are not sent to --atol/--rtol; NaNs on both sides add --equal-nan
    (beside --atol/--rtol: the other values of that output may differ too)."""
    missing = [d for d in bad if d.note.startswith("missing")]
    shaped = [d for d in bad if d.note.startswith(("shape ", "count "))]
    integer = [d for d in bad if d.agreement is not None]
    numeric = [d for d in bad if not d.note.startswith(("missing", "shape ", "count ")) and d.agreement is None]
    fixes = []
    if numeric:
        fixes.append("If the difference is expected (e.g. fp16), loosen it with --atol/--rtol (NAME=X for one output)")
    if any("NaN(s) in both outputs" in d.note for d in numeric):
        fixes.append("NaNs at the same places pass with --equal-nan")
    if integer:
        fixes.append("If the difference is expected, lower --min-agreement (e.g. 0.99: 1% of the class ids may differ)")
    if shaped:
        fixes.append(f"{', '.join(d.name for d in shaped)}: the shapes differ, which no tolerance passes; check the "
                     "input shapes each engine ran (a detector's count of boxes can also differ near its threshold)")
    if missing:
        fixes.append("Outputs are matched by name: compare models with the same output names "
                     "(trtflow surgeon rename renames them)")
    return ". ".join(fixes)
