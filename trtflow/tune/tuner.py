"""``tune(model, shapes=..., engine=...)``: the fastest configuration within an accuracy bound."""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from trtflow.errors import UsageError
from trtflow.progress import Progress, report
from trtflow.tune.accuracy import check
from trtflow.tune.result import TuneResult
from trtflow.tune.search import TuneOptions, choose, make_bound, matches, record_of, search, shapes_from

log = logging.getLogger(__name__)

ENGINES = ("torch", "ort", "tensorrt")


def tune(
    model: Any,
    shapes: Mapping[str, Sequence[int]] | None = None,
    engine: str = "torch",
    precisions: Sequence[str] = ("fp32", "fp16"),
    atol: float | None = None,
    rtol: float | None = None,
    metric: str | None = None,
    min_agreement: float | None = None,
    calib: str | os.PathLike | None = None,
    budget_s: float | None = None,
    progress: Progress | None = None,
    *,
    example_inputs: Mapping[str, Any] | None = None,
    device: Any = None,
    options: TuneOptions | None = None,
) -> TuneResult:
    """Measure the configurations ``engine`` offers and keep the fastest one within the accuracy bound.

    Every configuration is checked against the FP32 reference on the calibration inputs (or random
    inputs, said so in ``accuracy_inputs``), timed briefly, dropped when it fails the bound or is
    clearly slower than the best so far, else timed in full. The choice is saved beside the engine
    cache, so ``trtflow.load(model, engine=engine, tune=True, ...)`` applies it without measuring.

    Args:
        model: an ``nn.Module`` (torch engine; ort/tensorrt export it to ONNX first) or an ONNX
            path/bytes/ModelProto (ort, tensorrt).
        shapes: input name -> shape to tune for (batch included), in ``forward`` order for modules;
            optional for ONNX models with static shapes.
        engine: "torch", "ort" or "tensorrt".
        precisions: any of "fp32", "fp16", "bf16", "int8", "fp8" (those an engine lacks are listed as skipped),
            or one comma-separated string of them.
        atol, rtol: allclose bound against FP32 (default 1e-2 each).
        metric: "top1" for top-1 agreement with FP32 instead (with ``min_agreement``, default 0.99).
        min_agreement: the top-1 agreement needed.
        calib: a folder of .npy/.npz samples (or images, for ONNX) or one .npz: the accuracy
            inputs and the INT8 calibration set. None: random inputs.
        budget_s: stop trying configurations after this many seconds (None: no limit).
        progress: ``trtflow.progress.Progress`` callback.
        example_inputs: name -> tensor, instead of ``shapes``.
        device: torch device for the torch engine (default: the GPU when there is one).
        options: ``TuneOptions`` (timings, pruning ratio, thread counts, ...).

    Returns:
        A ``TuneResult``: ``chosen`` and one ``ConfigResult`` per configuration.

    Raises:
        MismatchError: no configuration meets the bound (the message names the closest).
        UsageError: bad arguments, or nothing could be measured.
    """
    from trtflow.backends import canonical_engine
    from trtflow.tune import space

    t_start = time.perf_counter()
    opts = options or TuneOptions()
    engine = canonical_engine(engine)
    if engine not in ENGINES:
        raise UsageError(f"tune: engine '{engine}'; choose one of {', '.join(ENGINES)}")
    bound = make_bound(atol, rtol, metric, min_agreement)
    precisions = space.check_precisions(precisions)
    progress = report(progress)
    if budget_s is not None and not budget_s > 0:  # NaN too: it would never stop a configuration
        raise UsageError(f"--budget-s must be positive; got {budget_s}")

    if engine == "torch":
        subject, key_model, shape_map, feeds = _torch_subject(model, shapes, example_inputs, device, calib, opts, progress)
        candidates, skips = space.torch_space(precisions, subject.cuda, subject.conv, subject.batchnorm, subject.fp8_blocker,
                                             subject.linear_heavy, opts.keep_io_types)
    else:
        subject, key_model, shape_map, feeds = _onnx_subject(model, shapes, example_inputs, engine, calib, opts, progress)
        candidates, skips = (space.ort_space(precisions, opts.threads, opts.ort_levels, opts.providers) if engine == "ort"
                             else space.tensorrt_space(precisions, opts.trt_levels, _strongly_typed_tensorrt()))
    only = [opts.only] if isinstance(opts.only, str) else list(opts.only or [])  # one pattern, not its characters
    candidates = [c for c in candidates if matches(c.name, only)]
    if not candidates:
        why = "".join(f"; {s.name}: {s.reason}" for s in skips)
        raise UsageError(f"no configuration left to try (precisions {precisions}, only={only}){why}")
    progress("tune: FP32 reference", None, None)
    reference = subject.reference(feeds.accuracy)
    own = check(bound, reference, reference)  # a bound that cannot apply (top1 without a classifier output) fails here
    if own.failure:  # only non-finite values fail against themselves: nothing could be compared with them
        raise UsageError(f"the FP32 reference on the accuracy inputs has {own.failure.replace(' (overflow)', '')}: "
                         f"no configuration can be checked against it. Check the model on these inputs, or give "
                         f"inputs it is meant for (--calib); accuracy inputs: {feeds.source}")
    notes, seen = list(subject.notes), len(subject.notes)
    peak = max(float(abs(v).max()) for batch in reference for v in batch.values() if getattr(v, "size", 0))
    if peak < 1e-3:
        notes.append(f"the FP32 reference outputs are all near zero (max |value| {peak:.3g}); errors against them say "
                     "little: use real weights or recalibrate_bn=True")
    results = search(subject, candidates, skips, feeds, reference, bound, opts, budget_s, progress)
    result = TuneResult("", results, engine, {k: list(v) for k, v in shape_map.items()}, subject.describe(),
                        bound.describe(), feeds.source, notes + list(subject.notes[seen:]), reference_peak=peak)
    best = choose(results, bound, opts.full_s)  # raises when none is accepted (its report: every ConfigResult)
    result.chosen = best.name
    result.wall_s = time.perf_counter() - t_start  # the saved record's (the save itself is added below)
    if opts.save:
        _save(result, subject, next(c for c in candidates if c.name == best.name), key_model, shape_map, device)
    result.wall_s = time.perf_counter() - t_start
    return result


def _torch_subject(model, shapes, example_inputs, device, calib, opts, progress):
    import torch

    from trtflow.backends.tuned import forward_order
    from trtflow.tune.inputs import calibration_feeds, random_feeds
    from trtflow.tune.subjects import TorchSubject

    if not isinstance(model, torch.nn.Module):
        raise UsageError(f"the torch engine tunes an nn.Module; got {type(model).__name__}. "
                         "Tune an ONNX model with --engine ort or tensorrt (engine=\"ort\" in Python)")
    shape_map = shapes_from(shapes, example_inputs)
    # inputs named as forward's parameters, in any order: the engines call forward positionally, in its order
    shape_map = {k: shape_map[k] for k in forward_order(model, list(shape_map))}
    # floating inputs as FP32 (the feeds' default): the torch reference and the engines' examples are FP32
    # (each configuration casts)
    dtypes = _integer_dtypes(example_inputs, shape_map)
    feeds = (calibration_feeds(calib, shape_map, dtypes, opts.accuracy_samples) if calib is not None
             else random_feeds(shape_map, dtypes, opts.accuracy_samples, opts.seed))
    progress("tune: preparing the model", None, None)
    subject = TorchSubject(model, shape_map, feeds.accuracy + feeds.calibration, device, opts.recalibrate_bn)
    return subject, model, shape_map, feeds


def _onnx_subject(model, shapes, example_inputs, engine, calib, opts, progress):
    from trtflow.backends.tuned import onnx_shapes
    from trtflow.graph.io import load_onnx, onnx_specs
    from trtflow.tune.inputs import calibration_feeds, random_feeds
    from trtflow.tune.subjects import OrtSubject, TensorRTSubject

    exported = None
    if hasattr(model, "state_dict") and not hasattr(model, "SerializeToString"):
        model = exported = _export(model, shapes, example_inputs, progress)
    proto = load_onnx(model)
    specs, _ = onnx_specs(proto)
    shape_map = onnx_shapes(specs, shapes)
    dtypes = {s.name: s.dtype for s in specs}
    feeds = (calibration_feeds(calib, shape_map, dtypes, opts.accuracy_samples, proto, opts.calib_preprocess)
             if calib is not None else random_feeds(shape_map, dtypes, opts.accuracy_samples, opts.seed))
    subject = (OrtSubject(proto, feeds.calibration) if engine == "ort"
               else TensorRTSubject(proto, feeds.calibration, shape_map))
    if exported:
        subject.notes.append(f"the module was exported to {exported}; the choice is saved for that ONNX file "
                             f"(trtflow.load('{exported}', engine='{engine}', tune=True))")
    key_model = model if isinstance(model, (str, os.PathLike, bytes, bytearray)) else proto
    return subject, key_model, shape_map, feeds


def _export(module, shapes, example_inputs, progress):
    """Export a module to ONNX (cached by its digest) for the ort/tensorrt engines."""
    import torch

    from trtflow.backends.tuned import material_key, model_digest, tuned_dir
    from trtflow.export import from_torch

    shape_map = shapes_from(shapes, example_inputs)
    dtypes = _integer_dtypes(example_inputs, shape_map)  # exported with their dtype, floating inputs as float32
    name = '_'.join('x'.join(map(str, s)) for s in shape_map.values())
    name += "".join(f"-{k}.{d}" for k, d in dtypes.items())
    # the input names are the export's too (another name needs another file): a digest, since names may hold '/' or ':'
    name += "-" + material_key(list(shape_map))[:8]
    path = tuned_dir() / "exports" / f"{model_digest(module)[:24]}-{name}.onnx"
    if not path.exists():
        progress("tune: exporting to ONNX", None, None)
        examples = {k: torch.zeros(v, dtype=getattr(torch, dtypes[k])) if k in dtypes else torch.randn(*v)
                    for k, v in shape_map.items()}
        try:
            from_torch(module, examples, path)
        except BaseException:  # from_torch keeps a file that fails verification: the next tune must not reuse it
            path.unlink(missing_ok=True)
            raise
    log.info("tuning the ONNX export %s", path)
    return str(path)


def _save(result: TuneResult, subject, cand, key_model, shape_map, device) -> None:
    from trtflow.backends.tensorrt.sidecar import atomic_write
    from trtflow.backends.tuned import save_record, tuned_dir, tuned_key

    if result.engine == "ort":  # keyed by the chosen providers; the candidates ran on ONNX Runtime's default GPU
        key, material = tuned_key(key_model, "ort", shape_map, providers=cand.options["providers"])
    else:
        key, material = tuned_key(key_model, result.engine, shape_map, device)
    model_file = None
    if result.engine != "torch" and cand.variant != "fp32":  # the model first, then the record naming it
        model_file = f"{key}.{cand.variant}.onnx"
        atomic_write(Path(tuned_dir()) / model_file, subject.variant(cand.variant))  # a reader never sees half
    result.key = key
    result.record_path = str(save_record(key, record_of(result, cand, material, list(shape_map), model_file)))


def _strongly_typed_tensorrt() -> bool:
    """Whether the installed TensorRT builds strongly typed networks only (False when none is installed:
    each configuration then fails with the install hint)."""
    from trtflow.backends.tensorrt.flavor import flavor_available

    flavor = flavor_available()
    return bool(flavor and flavor.always_strongly_typed)


def _integer_dtypes(example_inputs: Any, names: Iterable[str]) -> dict[str, str]:
    """The dtypes of the example inputs among ``names`` that are not floating (token ids, masks: tune
    keeps them; floating inputs are float32). The examples are torch tensors or numpy arrays."""
    from trtflow.arrays import dtype_of

    given = example_inputs if isinstance(example_inputs, Mapping) else {}
    dtypes = {k: dtype_of(given[k]) for k in names if k in given}
    return {k: d for k, d in dtypes.items() if not d.startswith(("float", "bfloat"))}
