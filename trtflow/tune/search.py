"""``tune``: try each configuration, drop what fails accuracy or is clearly slower, keep the fastest.

For every configuration, cheapest to build first: build/compile it and run the accuracy batches
(the first output times the build), compare with the FP32 reference, then time it briefly; one
that falls clearly behind the best so far is dropped, the rest are timed in full. A configuration
whose build could not finish inside the budget is not started. The winner is saved beside the
engine cache (``trtflow.backends.tuned``) for ``trtflow.load(model, engine=..., tune=True)``.
"""

from __future__ import annotations

import fnmatch
import logging
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Mapping, Sequence

import numpy as np

from trtflow.bench import BenchConfig, run_bench
from trtflow.bench.loop import cuda_device_of
from trtflow.bench.report import summarize, throughput
from trtflow.errors import MismatchError, UsageError
from trtflow.progress import Progress, report
from trtflow.tune.accuracy import Bound, check
from trtflow.tune.result import (ACCEPTED, BUDGET, CHOSEN, ERROR, FAILED_ACCURACY, SKIPPED, SLOWER, ConfigResult,
                                 TuneResult)
from trtflow.tune.space import Candidate, prefer

log = logging.getLogger(__name__)


GUESS_S_PER_COST = 5.0  # seconds per unit of Candidate.cost until a build has been timed
# a retuning's compile over the compile it retunes: +cdt took up to 8.7x inside tune on an H200
# (EfficientNet-B0 at 256: 117 s against 13.4 s)
RETUNE_OVER_BASE = 9.0


@dataclass(frozen=True)
class TuneOptions:
    """How hard to look.

    Attributes:
        short_s: the first timing of each configuration (seconds of queries).
        full_s: the timing of the configurations that survive it.
        warmup_ms: warm-up before each timing.
        prune_ratio: a configuration below this fraction of the best short-timed throughput so far is dropped.
        accuracy_samples: samples the accuracy check runs (rounded up to whole batches).
        only: glob patterns of configuration names to try (e.g. ``["fp16 *graphs*"]``, or one as a string); None: all.
        threads: ONNX Runtime intra-op thread counts to try (None: 1, half and all cores).
        providers: ONNX Runtime provider lists to try, e.g. ``[["cpu"], ["cuda", "cpu"]]`` (None: CPU,
            and CUDA where this onnxruntime has it).
        ort_levels: ONNX Runtime graph optimization levels to try.
        trt_levels: TensorRT builder optimization levels to try.
        recalibrate_bn: re-estimate batch-norm statistics on the inputs before comparing: True, False,
            or None (only when every batch norm still holds its initial statistics: random weights).
        calib_preprocess: image preprocessing spec when ``calib`` is a folder of images (ONNX models).
        seed: seed of random inputs.
        save: save the choice for ``load(..., tune=True)``.
        compile_estimate_s: expected seconds of one plain compile of this model (e.g. measured by a
            previous ``torch.compile`` of it), for the budget before tune has timed a compile itself
            (None: ``GUESS_S_PER_COST`` per unit of build cost).
        keep_io_types: torch configurations in a reduced precision keep the model's own (FP32) inputs
            and outputs and cast inside the engine; False: they take and return the reduced dtype,
            for callers that already hold FP16/BF16 tensors (no cast per call).
    """

    short_s: float = 0.3
    full_s: float = 1.0
    warmup_ms: float = 100.0
    prune_ratio: float = 0.8
    accuracy_samples: int = 64
    only: Sequence[str] | None = None
    threads: Sequence[int] | None = None
    providers: Sequence[Sequence[str]] | None = None
    ort_levels: Sequence[str] = ("all", "extended", "basic")
    trt_levels: Sequence[int] = (3, 5)
    recalibrate_bn: bool | None = None
    calib_preprocess: str | None = None
    seed: int = 0
    save: bool = True
    compile_estimate_s: float | None = None
    keep_io_types: bool = True


def make_bound(atol: float | None, rtol: float | None, metric: str | None, min_agreement: float | None) -> Bound:
    """The bound from tune's arguments: top-1 agreement, or allclose (default atol = rtol = 1e-2).

    Raises:
        UsageError: both kinds given, or an unknown metric.
    """
    if metric in (None, "allclose", "relative"):
        if min_agreement is not None:
            raise UsageError("--min-agreement goes with --metric top1")
        if metric == "relative" and atol is not None:
            raise UsageError("--metric relative bounds max |out - FP32| by --rtol times max |FP32|; --atol does not "
                             "apply (use --metric allclose for an absolute tolerance)")
        return Bound(metric or "allclose", 1e-2 if atol is None else atol, 1e-2 if rtol is None else rtol)
    if metric != "top1":
        raise UsageError(f"accuracy metric '{metric}': choose allclose, relative or top1")
    if atol is not None or rtol is not None:
        raise UsageError("give either --atol/--rtol or --metric top1, not both")
    return Bound("top1", min_agreement=0.99 if min_agreement is None else min_agreement)


class _Clock:
    """The budget: what is left, and what a configuration of each build cost is likely to take."""

    def __init__(self, budget_s: float | None, timing_s: float, estimate_s: float | None = None):
        self.start = time.perf_counter()
        self.budget_s = budget_s
        self.timing_s = timing_s
        self.per_cost: float | None = estimate_s  # seconds of build per unit of Candidate.cost (given, then seen)

    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    def learn(self, cand: Candidate, build_s: float) -> None:
        if cand.kind in ("compile", "reduce-overhead", "cdt", "max-autotune", "build"):
            rate = build_s / cand.cost
            self.per_cost = max(rate, self.per_cost or 0.0)

    def refuse(self, cand: Candidate, base_s: float | None = None) -> str | None:
        """Why ``cand`` cannot finish in the budget, or None. ``base_s``: the compile time of the
        configuration a retuning retunes, which scales its estimate (``RETUNE_OVER_BASE``)."""
        if self.budget_s is None:
            return None
        left = self.budget_s - self.elapsed()
        per_cost = self.per_cost or GUESS_S_PER_COST  # before any compile was timed: a guess
        if base_s is not None:
            need = self.timing_s + RETUNE_OVER_BASE * base_s
        else:
            need = self.timing_s + (cand.cost * per_cost if cand.cost >= 1 else 0.0)
        if left <= 0 or need > left:
            est = f", ~{need:.0f} s needed" if need > self.timing_s else ""
            return f"not tried: {max(left, 0):.0f} s of the {self.budget_s:g} s budget left{est}"
        return None


def _adapt(engine, feed: Mapping[str, np.ndarray]) -> dict:
    """The feed in the engine's input dtypes: host arrays cast where numpy can, torch tensors for a
    bfloat16 (or other non-numpy) input of the torch engine."""
    specs = {s.name: s.dtype for s in engine.inputs}
    out = {}
    for name, a in feed.items():
        want = specs.get(name, str(a.dtype))
        if want == str(a.dtype):
            out[name] = a
        elif want == "bfloat16" or getattr(engine, "native", "") == "torch":
            from trtflow.arrays import to_torch, torch_dtype

            out[name] = to_torch(a).to(torch_dtype(want))  # a scalar stays 0-d
        else:
            out[name] = a.astype(want)
    return out


def _numpy(outputs: Mapping[str, Any]) -> dict[str, np.ndarray]:
    out = {}
    for name, v in outputs.items():
        if hasattr(v, "detach"):
            v = v.detach().float().cpu().numpy()
        out[name] = np.asarray(v)
    return out


def _bench(engine, feed, seconds: float, warmup_ms: float) -> tuple[float, float, float]:
    result = run_bench(engine, feed, BenchConfig(iterations=3, duration_s=seconds, warmup_ms=warmup_ms,
                                                 data_transfers=False))
    stats = summarize(result)["latency"]
    if result.timing == "perf_counter":  # CPU: the median query, robust to other processes on the cores
        return result.batch * 1e3 / stats.median if stats.median > 0 else 0.0, stats.median, stats.p99
    return throughput(result)["inferences_per_s"], stats.median, stats.p99  # GPU: queries over the walltime


def _not_the_fastest(cand: Candidate, speeds: dict[str, float], names: set[str] | frozenset = frozenset()) -> str | None:
    """Why a retuning (``cand.refines``) is not tried: the configuration it retunes is not the fastest so far.
    One whose base is not among the candidates (``names``; left out by ``only``) is tried as it is."""
    if not cand.refines or cand.refines not in names:
        return None
    if cand.refines not in speeds:
        return f"not tried: retunes '{cand.refines}', which was not timed"
    fastest = max(speeds, key=speeds.get)
    if fastest != cand.refines:
        return (f"not tried: retunes '{cand.refines}' ({speeds[cand.refines]:.4g}/s), slower than "
                f"'{fastest}' ({speeds[fastest]:.4g}/s)")
    return None


def search(subject: Any, candidates: list[Candidate], skips: list, feeds, reference: list[dict], bound: Bound,
           opts: TuneOptions, budget_s: float | None, progress: Progress | None = None) -> list[ConfigResult]:
    """Try ``candidates`` in order; return one ``ConfigResult`` per candidate and per skip, the winner marked."""
    progress = report(progress)
    results = [ConfigResult(s.name, subject.engine, s.precision, reason=s.reason, status=SKIPPED) for s in skips]
    clock = _Clock(budget_s, opts.short_s + opts.full_s + 2 * opts.warmup_ms / 1e3, opts.compile_estimate_s)
    timing_feed = feeds.accuracy[0]  # host float32: the bench loop casts it for CUDA engines
    best_short, best_name = 0.0, ""
    remaining, speeds = list(candidates), {}
    names = {c.name for c in candidates}
    compiled: dict[str, float] = {}  # configuration -> its compile time (what a retuning of it scales)
    for i in range(len(candidates)):
        remaining = prefer(remaining, speeds)
        cand = remaining.pop(0)
        r = ConfigResult(cand.name, cand.engine, cand.precision, dict(cand.options))
        results.append(r)
        why = _not_the_fastest(cand, speeds, names)
        if why:
            r.status, r.reason = SLOWER, why
            continue
        why = clock.refuse(cand, compiled.get(cand.refines) if cand.refines else None)
        if why:
            r.status, r.reason = BUDGET, why
            continue
        progress(f"tune: {cand.name}", i, len(candidates))
        t0 = time.perf_counter()
        try:
            with subject.open(cand) as engine:
                outputs = [_numpy(engine.infer(_adapt(engine, feeds.accuracy[0])))]
                r.compile_s = time.perf_counter() - t0
                clock.learn(cand, r.compile_s)
                outputs += [_numpy(engine.infer(_adapt(engine, f))) for f in feeds.accuracy[1:]]
                acc = check(bound, reference, outputs)
                bench_feed = timing_feed if cuda_device_of(engine) else _adapt(engine, timing_feed)
                r.max_abs_err, r.top1_agreement, r.closeness = acc.max_abs_err, acc.top1_agreement, acc.closeness
                if acc.failure:
                    r.status, r.reason = FAILED_ACCURACY, f"fails accuracy: {acc.failure}"
                    continue
                tp, p50, p99 = _bench(engine, bench_feed, opts.short_s, opts.warmup_ms)
                r.throughput, r.p50_ms, r.p99_ms, r.measured_s = tp, p50, p99, opts.short_s
                if best_short and tp < opts.prune_ratio * best_short:
                    r.status = SLOWER
                    r.reason = (f"clearly slower: {tp:.4g}/s vs {best_short:.4g}/s ({best_name}) after "
                                f"{opts.short_s:g} s")
                    continue
                if tp > best_short:
                    best_short, best_name = tp, cand.name
                if clock.budget_s is not None and clock.elapsed() + opts.full_s > clock.budget_s:
                    r.status, r.accepted, r.reason = ACCEPTED, True, f"within the bound; timed {opts.short_s:g} s only (budget)"
                    continue
                tp, p50, p99 = _bench(engine, bench_feed, opts.full_s, opts.warmup_ms)
                r.throughput, r.p50_ms, r.p99_ms, r.measured_s = tp, p50, p99, opts.full_s
                r.status, r.accepted, r.reason = ACCEPTED, True, "within the bound"
        except Exception as exc:  # noqa: BLE001 - a configuration that breaks (compile error, OOM) is recorded, not fatal
            if r.compile_s is None:
                r.compile_s = time.perf_counter() - t0
            text = " ".join(str(exc).split())
            r.status, r.reason = ERROR, f"failed: {type(exc).__name__}: {text[:300]}"
            log.info("configuration %s failed", cand.name, exc_info=True)
        finally:
            subject.cleanup()
            if r.throughput:
                speeds[cand.name] = r.throughput
            if r.compile_s is not None:
                compiled[cand.name] = r.compile_s
    progress("tune: done", len(candidates), len(candidates))
    return results


def choose(results: list[ConfigResult], bound: Bound, full_s: float | None = None) -> ConfigResult:
    """Mark and return the fastest accepted configuration: among those timed in full (``full_s``
    seconds) when there are any, else among those the budget let tune time only briefly.

    Raises:
        MismatchError: none meets the bound; the message names the closest one.
        UsageError: nothing could be measured at all.
    """
    accepted = [r for r in results if r.accepted and r.throughput]
    full = [r for r in accepted if full_s is not None and r.measured_s == full_s]
    accepted = full or accepted
    if accepted:
        best = max(accepted, key=lambda r: r.throughput)
        best.status, best.reason = CHOSEN, "fastest within the bound"
        return best
    failed = [r for r in results if r.status == FAILED_ACCURACY]
    if failed:
        closest = min(failed, key=lambda r: r.closeness if r.closeness is not None else float("inf"))
        what = (f"top-1 agreement {100 * closest.top1_agreement:.1f}%" if bound.metric == "top1" and
                closest.top1_agreement is not None else f"max abs error {closest.max_abs_err:.3g}")
        raise MismatchError(
            f"no configuration meets the accuracy bound ({bound.describe()}); the closest is '{closest.name}' "
            f"({what}). Loosen the bound (--atol/--rtol or --min-agreement), give calibration data "
            "(--calib), or include fp32 in --precisions.", report=results)
    tried = [r for r in results if r.status != SKIPPED] or results
    reasons = "; ".join(f"{r.name}: {r.reason}" for r in tried[:4]) + ("; ..." if len(tried) > 4 else "")
    fix = ("Raise --budget-s." if any(r.status == BUDGET for r in tried) else
           "Tune on a machine where the engine runs." if all("cannot execute" in r.reason for r in tried) else
           "Fix the errors above or choose other precisions.")
    raise UsageError(f"no configuration could be measured ({reasons}). {fix}")


def record_of(result: TuneResult, cand: Candidate, material: dict, input_names: list[str],
              model_file: str | None) -> dict:
    """The JSON saved for ``load(..., tune=True)``."""
    return {
        "chosen": result.chosen, "engine": result.engine, "options": dict(cand.options), "variant": cand.variant,
        "transform": "fp8" if cand.variant == "fp8" else None, "model_file": model_file,
        "input_names": input_names, "shapes": result.shapes, "key_material": material,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"), "bound": result.bound,
        "accuracy_inputs": result.accuracy_inputs, "notes": result.notes, "wall_s": result.wall_s,
        "configs": [c.to_dict() for c in result.configs],
    }


def matches(name: str, patterns: Sequence[str] | None) -> bool:
    return not patterns or any(fnmatch.fnmatchcase(name, p) for p in patterns)


def shapes_from(shapes: Mapping[str, Any] | None, example_inputs: Any) -> dict[str, tuple]:
    if shapes:
        return {k: tuple(int(d) for d in v) for k, v in shapes.items()}
    if isinstance(example_inputs, Mapping):
        return {k: tuple(int(d) for d in v.shape) for k, v in example_inputs.items()}
    raise UsageError("tune needs the input shapes: shapes={'x': (64, 3, 224, 224)} (or --shapes x:64x3x224x224)")
