"""Running the same feed through several engines and comparing each with the first."""

from __future__ import annotations

import logging
from typing import Any, Mapping

import numpy as np

from trtflow.arrays import can_cast, dtype_of, to_numpy
from trtflow.compare.core import Tolerances, compare_outputs, missing
from trtflow.compare.report import CompareReport, EngineComparison
from trtflow.backends.base import Engine
from trtflow.errors import UsageError

log = logging.getLogger(__name__)


def compare_engines(
    engines: Mapping[str, Engine],
    feed: Mapping[str, Any],
    tolerances: Tolerances | None = None,
    model: str = "",
) -> CompareReport:
    """Run ``feed`` through every engine; compare each output with the first engine's, by name
    (an output only one side has fails as missing).

    Args:
        engines: label -> loaded engine, in order; the first is the reference.
        feed: input name -> array, given unchanged to every engine.
        tolerances: atol/rtol, with per-output overrides.
        model: what is compared, for the report.

    Returns:
        A ``CompareReport``; call ``raise_for_mismatch()`` to turn a failure into ``MismatchError``.

    Raises:
        UsageError: fewer than two engines, engines the feed cannot feed all (``check_inputs``), or a
            per-output tolerance for an output the model lacks.
        InputError, EngineError: an engine refused the feed or failed.
    """
    if len(engines) < 2:
        raise UsageError(f"compare needs at least two engines, got {list(engines)}; e.g. --engines ort,tensorrt")
    check_inputs(engines, feed)
    tolerances = tolerances or Tolerances()
    tolerances.check_names([s.name for s in next(iter(engines.values())).outputs])
    results: dict[str, dict[str, np.ndarray]] = {}
    for label, engine in engines.items():
        log.info("running %s", label)
        results[label] = {k: to_numpy(v) for k, v in engine.infer(_copy(feed)).items()}
    labels = list(engines)
    ref = labels[0]
    comparisons = [EngineComparison(ref, label, _diffs(results[ref], results[label], tolerances)) for label in labels[1:]]
    inputs = {k: {"shape": list(np.shape(v)), "dtype": dtype_of(v)} for k, v in feed.items()}
    return CompareReport(model, labels, inputs, comparisons)


def check_inputs(engines: Mapping[str, Engine], feed: Mapping[str, Any]) -> None:
    """Refuse, before any run, engines the one feed cannot feed all: engines taking other input names
    than the first, or an input in a dtype the feed's values cannot be cast to without loss (a float32
    model against its float16-input copy, fed float32 values made for the first).

    Args:
        engines: label -> loaded engine, in order; the first is the reference.
        feed: input name -> array, given to every engine.

    Raises:
        UsageError: such an engine, naming both engines and the fix.
    """
    ref, *others = engines
    ours = [s.name for s in engines[ref].inputs]
    for label in others:
        theirs = {s.name: s.dtype for s in engines[label].inputs}
        if sorted(ours) != sorted(theirs):
            raise UsageError(f"{ref} takes inputs {ours} but {label} takes {list(theirs)}: both run on the same "
                             "feed, matched by name; compare models with the same input names (`trtflow surgeon "
                             "rename --rename-input OLD=NEW` renames them)")
        for name, value in feed.items():
            have, want = dtype_of(value), theirs.get(name)
            if want is None or can_cast(have, want):
                continue
            fix = (f"give --input {name}=FILE.npy holding {want} values (both models take them), or put {label} "
                   "first" if can_cast(want, have) else "compare models whose inputs take the same dtypes")
            raise UsageError(f"input '{name}' is {have} in the feed for {ref} but {label} takes {want}, so its "
                             f"{have} values cannot feed both without loss: {fix}")


def _diffs(reference: Mapping[str, np.ndarray], candidate: Mapping[str, np.ndarray], tolerances: Tolerances) -> list:
    """``compare_outputs``, plus a failing diff for each output only the candidate has: outputs are
    matched by name, and one missing on either side is reported as missing."""
    diffs = compare_outputs(reference, candidate, tolerances)
    for name, value in candidate.items():
        if name not in reference:
            diffs.append(missing(name, value, *tolerances.for_output(name), "reference"))
    return diffs


def _copy(feed: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of the feed for one engine: an engine that changes its input in place (a torch module
    doing ``x /= 255`` on the CPU shares the numpy array's memory) must not change the next engine's."""
    out = {}
    for name, value in feed.items():
        clone = getattr(value, "clone", None)  # torch tensors, kept on their device
        out[name] = value.copy() if isinstance(value, np.ndarray) else clone() if callable(clone) else value
    return out
