"""trtflow quickstart: MobileNetV2 -> verified ONNX -> the best engine here -> six photos in one batch.

The first run exports the model (cached in the trtflow cache folder, and a TensorRT plan when
that engine is used); later runs reuse the artifacts and say so.
"""

from __future__ import annotations

import argparse
import shutil
import time

import numpy as np

from trtflow.cli import options, output
from trtflow.errors import UsageError

HELP = "classify six sample photos with MobileNetV2: export, verify, pick the best engine, time it"

INPUT, OUTPUT = "images", "logits"
WARMUP, REPEATS = 2, 10
MAX_BATCH = 32  # upper bound of the dynamic batch in the TensorRT profile
ENGINES = ("auto", "ort", "tensorrt")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--engine", default="auto", metavar="{auto,ort,tensorrt}",
        help="auto: TensorRT when it can execute here, else ONNX Runtime on the CPU (default: auto)",
    )
    parser.add_argument(
        "--batch-images", type=int, default=None, metavar="N",
        help="images per batch for the timing line (default: the 6 sample images; more repeats them)",
    )
    parser.add_argument("--fresh", action="store_true", help="ignore cached artifacts: export (and build) again")
    options.add_json(parser)


def _export(folder, fresh: bool, log_lines: list[str]) -> tuple:
    """The cached ONNX file, exported (and verified) when absent, stale or --fresh."""
    from trtflow.tasks.models import export_mobilenet

    with output.bar("exporting MobileNetV2") as step:
        onnx_path, meta, reused, result = export_mobilenet(folder, fresh, progress=step)
    if reused:
        log_lines.append(f"reusing the cached ONNX model {onnx_path} (exported and verified earlier; --fresh re-exports)")
        return onnx_path, meta, True
    errors = result.max_errors()[OUTPUT]
    batches = " and ".join(str(case.input_shapes[INPUT][0]) for case in result.verification)
    log_lines.append(
        f"exported MobileNetV2 to {onnx_path} ({result.exporter} exporter, opset {result.opset}); "
        f"verified against PyTorch at batch {batches}: max abs error {errors['max_abs']:.2g}"
    )
    return onnx_path, meta, False


def _choose_engine(requested: str) -> tuple[str, str]:
    """The engine name and a sentence saying why it was chosen."""
    from trtflow.backends import tensorrt_usable

    if requested == "ort":
        return "ort", "ONNX Runtime (CPU), as asked with --engine ort"
    if requested == "tensorrt":
        return "tensorrt", "TensorRT, as asked with --engine tensorrt"
    if tensorrt_usable():
        return "tensorrt", "TensorRT, because it can execute on this machine's GPU"
    try:
        from trtflow.backends.tensorrt.runner import runtime_blocker

        why = runtime_blocker() or "unknown reason"
    except ImportError as exc:
        why = f"the TensorRT engine is not available ({exc})"
    return "ort", f"ONNX Runtime (CPU), because TensorRT cannot execute here: {why}"


def _load(engine_name: str, onnx_path, fresh: bool, log_lines: list[str]):
    from trtflow.backends import load, tensorrt_usable

    if engine_name == "ort":
        return load(onnx_path, engine="ort", providers=["cpu"])
    if not tensorrt_usable():
        return load(onnx_path, engine="tensorrt")  # raises the TensorRT engine's own reason
    from trtflow.spec import make_profile

    shape = lambda n: {INPUT: (n, 3, 224, 224)}  # noqa: E731
    profile = make_profile(shape(1), shape(8), shape(MAX_BATCH))
    engine = load(onnx_path, engine="tensorrt", profiles=[profile], rebuild=fresh)  # the plan through the cache
    entry = engine.cache_entry
    if entry.hit:
        log_lines.append(f"reusing the cached TensorRT engine {entry.plan_path}")
    else:
        log_lines.append(f"built the TensorRT engine {entry.plan_path} (batch 1..{MAX_BATCH}, cached for next time)")
    return engine


def _time(engine, batch: np.ndarray) -> dict:
    for _ in range(WARMUP):
        engine.infer({INPUT: batch})
    times = []
    for _ in range(REPEATS):
        start = time.perf_counter()
        engine.infer({INPUT: batch})
        times.append(time.perf_counter() - start)
    median = float(np.median(times))
    return {
        "batch": int(batch.shape[0]),
        "repeats": REPEATS,
        "warmup": WARMUP,
        "median_ms": median * 1e3,
        "min_ms": float(min(times)) * 1e3,
        "images_per_s": batch.shape[0] / median,
    }


def run(args: argparse.Namespace) -> int:
    from filelock import FileLock

    from trtflow.cache_dir import cache_dir
    from trtflow.vision.imagenet import preprocess_batch, sample_images, top_k

    if args.engine not in ENGINES:
        raise UsageError(f"unknown engine '{args.engine}' for the quickstart; choose one of: {', '.join(ENGINES)}")
    if args.batch_images is not None and args.batch_images < 1:
        raise UsageError(f"--batch-images must be >= 1, got {args.batch_images}")
    if args.batch_images is not None and args.batch_images > MAX_BATCH:
        raise UsageError(f"--batch-images is at most {MAX_BATCH} (the engine's batch range), got {args.batch_images}")
    start = time.perf_counter()
    folder = cache_dir("quickstart")
    if args.fresh:
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True, exist_ok=True)
    steps: list[str] = []
    with FileLock(str(folder / "export.lock")):  # two quickstarts at once export once
        onnx_path, meta, reused = _export(folder, args.fresh, steps)
    engine_name, why = _choose_engine(args.engine)
    steps.append(f"engine: {why}")
    images = sample_images()
    batch = preprocess_batch(list(images.values()))
    with _load(engine_name, onnx_path, args.fresh, steps) as engine:
        logits = engine.infer({INPUT: batch})[OUTPUT]
        n = args.batch_images or len(images)
        timed = _time(engine, np.resize(batch, (n, *batch.shape[1:])))
        used = engine.name
    predictions = dict(zip(images, top_k(np.asarray(logits), 5)))
    result = {
        "engine": used,
        "engine_reason": why,
        "cache_dir": str(folder),
        "onnx": str(onnx_path),
        "onnx_reused": reused,
        "steps": steps,
        "predictions": predictions,
        "timing": timed,
        "wall_s": time.perf_counter() - start,
    }
    if args.json:
        output.print_json(result)
        return 0
    con = output.console()
    for line in steps:
        con.print(line)
    for name, top in predictions.items():
        con.print(f"{name:>10}: " + ", ".join(f"{p['label']} {p['score']:.2f}" for p in top))
    con.print(
        f"{used}: batch of {timed['batch']} in {timed['median_ms']:.1f} ms (median of {REPEATS} after "
        f"{WARMUP} warm-up runs), {timed['images_per_s']:.0f} images/s"
    )
    return 0
