"""The accuracy bound a configuration must meet against the FP32 reference."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np

from trtflow.errors import UsageError

METRICS = ("allclose", "top1", "relative")


@dataclass(frozen=True)
class Bound:
    """How close to the FP32 reference a configuration must stay.

    Attributes:
        metric: "allclose" (every element: ``|got - ref| <= atol + rtol * |ref|``) or "top1" (the
            top-1 class of every 2-D classifier output agrees with the reference on at least
            ``min_agreement`` of the samples) or "relative" (``max |got - ref| <= rtol * max |ref|``
            per output: the error against the output's scale, for outputs of any magnitude).
        atol, rtol: allclose tolerances.
        min_agreement: top-1 agreement needed (0..1).
    """

    metric: str = "allclose"
    atol: float = 1e-2
    rtol: float = 1e-2
    min_agreement: float = 0.99

    def __post_init__(self):
        if self.metric not in METRICS:
            raise UsageError(f"accuracy metric '{self.metric}': choose one of {METRICS}")
        if not (self.atol >= 0 and self.rtol >= 0 and 0 <= self.min_agreement <= 1):  # NaN fails these too
            raise UsageError(f"accuracy bound needs atol, rtol >= 0 and 0 <= min_agreement <= 1; got {self}")

    def describe(self) -> str:
        if self.metric == "top1":
            return f"top-1 agreement with FP32 >= {100 * self.min_agreement:g}%"
        if self.metric == "relative":
            return f"max |out - FP32| <= {self.rtol:g} * max |FP32| per output"
        return f"|out - FP32| <= {self.atol:g} + {self.rtol:g} * |FP32| for every element"


@dataclass
class Accuracy:
    """One configuration's errors: max abs error, top-1 agreement (None without a classifier output),
    ``closeness`` (error over the bound: <= 1 passes) and why it fails (None when it passes)."""

    max_abs_err: float
    top1_agreement: float | None
    closeness: float
    failure: str | None


def classifier_outputs(reference: Sequence[Mapping[str, np.ndarray]]) -> list[str]:
    """Outputs shaped (batch, classes) with several classes."""
    first = reference[0]
    return [n for n, a in first.items() if np.ndim(a) == 2 and np.shape(a)[1] > 1]


def check(bound: Bound, reference: Sequence[Mapping[str, np.ndarray]],
          outputs: Sequence[Mapping[str, np.ndarray]]) -> Accuracy:
    """Compare a configuration's outputs with the reference, batch by batch.

    Raises:
        UsageError: the top-1 metric on a model without a classifier output.
    """
    max_err, ratio = 0.0, 0.0
    hits: dict[str, list[int]] = {}  # classifier output -> [agreeing samples, samples]
    worst = ""
    classifiers = classifier_outputs(reference)
    if bound.metric == "top1" and not classifiers:
        raise UsageError("--metric top1 needs a classifier output shaped (batch, classes); this model has "
                         f"{[(n, np.shape(a)) for n, a in reference[0].items()]}. Use --atol/--rtol instead")
    for ref_batch, got_batch in zip(reference, outputs):
        for name, ref in ref_batch.items():
            ref = np.asarray(ref, np.float64)
            got = np.asarray(got_batch[name], np.float64)
            if got.shape != ref.shape:
                return Accuracy(float("inf"), None, float("inf"),
                                f"output '{name}' has shape {got.shape}; the FP32 reference's is {ref.shape}")
            if not np.all(np.isfinite(got)):
                return Accuracy(float("inf"), None, float("inf"), f"non-finite values in '{name}' (overflow)")
            err = np.abs(got - ref)
            if err.size:
                peak = float(err.max())
                max_err = max(max_err, peak)
                if bound.metric == "relative":
                    r = peak / max(bound.rtol * float(np.abs(ref).max()), 1e-30)
                else:  # an exact element (err 0) is within any tolerance, 0 included: no 0/0 NaN to mask the rest
                    tol = bound.atol + bound.rtol * np.abs(ref)
                    with np.errstate(divide="ignore"):
                        r = float(np.divide(err, tol, out=np.zeros_like(err), where=err > 0).max())
                if r > ratio:
                    ratio = r
                    worst = name
            if name in classifiers:
                counts = hits.setdefault(name, [0, 0])
                counts[0] += int((ref.argmax(1) == got.argmax(1)).sum())
                counts[1] += ref.shape[0]
    # every classifier output must agree: the lowest agreement of any output counts
    agreement = min((h / n for h, n in hits.values() if n), default=None)
    if bound.metric == "top1":
        closeness = (1 - agreement) / max(1 - bound.min_agreement, 1e-9) if agreement < 1 else 0.0
        failure = None if agreement >= bound.min_agreement else (
            f"top-1 agreement {100 * agreement:.1f}% < {100 * bound.min_agreement:g}%")
        return Accuracy(max_err, agreement, closeness, failure)
    if bound.metric == "relative":
        failure = None if ratio <= 1 else (
            f"max abs error {max_err:.3g} is {ratio * bound.rtol:.3g} of max |FP32| in '{worst}' (limit {bound.rtol:g})")
        return Accuracy(max_err, agreement, ratio, failure)
    failure = None if ratio <= 1 else (
        f"max abs error {max_err:.3g} exceeds atol {bound.atol:g} + rtol {bound.rtol:g} * |FP32| "
        f"(worst element {ratio:.3g}x the tolerance, output '{worst}')")
    return Accuracy(max_err, agreement, ratio, failure)
