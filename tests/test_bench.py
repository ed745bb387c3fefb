"""The bench library and ``trtflow bench`` on the ONNX Runtime engine (CPU)."""

from __future__ import annotations

import json

import numpy as np
import pytest

import trtflow
from trtflow.bench import BenchConfig, BenchResult, Stats, run_bench, summary_text, to_dict, warnings
from trtflow.bench.loop import SERIES
from trtflow.errors import UsageError
from tests.conftest import call_cli

FIELDS = {"engine", "device", "timing", "date", "host", "batch", "shapes", "config", "queries", "throughput",
          *SERIES, "total_host_walltime_s", "total_gpu_compute_s", "gpu_busy_fraction", "warnings", "iterations"}
STATS = {"min", "max", "mean", "median", "p90", "p95", "p99", "std", "cov", "count"}


def test_stats_match_numpy():
    values = np.random.default_rng(0).gamma(2.0, 1.0, 1000)
    s = Stats.of(values)
    assert s.count == 1000 and s.min == values.min() and s.max == values.max()
    assert s.median == pytest.approx(np.median(values)) and s.p99 == pytest.approx(np.percentile(values, 99))
    assert s.cov == pytest.approx(values.std() / values.mean())
    assert "percentile(99%)" in s.line()
    assert Stats.of([]).count == 0


def _result(enqueue, h2d, compute, d2h, timing="cuda-events"):
    times = {"latency": [a + b + c for a, b, c in zip(h2d, compute, d2h)], "enqueue": enqueue, "h2d": h2d,
             "compute": compute, "d2h": d2h}
    return BenchResult("torch", "cuda:0", timing, 8, {"x": [8, 3]}, 1.0, times, BenchConfig())


def test_warnings_follow_trtexec_rules():
    steady = [1.0] * 50
    assert warnings(_result([0.1] * 50, [0.1] * 50, steady, [0.1] * 50)) == []
    enqueue_bound = warnings(_result([0.9] * 50, [0.1] * 50, steady, [0.1] * 50))
    assert len(enqueue_bound) == 1 and "Enqueue Time" in enqueue_bound[0] and "--useCudaGraph" in enqueue_bound[0]
    saturated = _result([0.9] * 50, [0.1] * 50, steady, [0.1] * 50)
    saturated.walltime_s = 0.061  # the stream was busy all along: infer blocked on a full queue, not enqueue-bound
    assert warnings(saturated) == []
    transfer_bound = warnings(_result([0.1] * 50, [2.0] * 50, steady, [3.0] * 50))
    assert len(transfer_bound) == 2
    assert "host-to-device transfers" in transfer_bound[0] and "device-to-host transfers" in transfer_bound[1]
    unstable = warnings(_result([0.1] * 50, [0.1] * 50, [1.0, 1.2] * 25, [0.1] * 50))
    assert len(unstable) == 1 and "coefficient of variance = 9.09%" in unstable[0]


def test_run_bench_on_ort_records_every_field(tiny_onnx):
    with trtflow.load(tiny_onnx, engine="ort") as engine:
        feed = {"x": np.random.default_rng(0).standard_normal((4, 3, 16, 16)).astype(np.float32)}
        result = run_bench(engine, feed, BenchConfig(iterations=30, duration_s=0.05, warmup_ms=5))
    data = to_dict(result)
    assert set(data) == FIELDS
    assert data["timing"] == "perf_counter" and data["batch"] == 4 and data["queries"] >= 30
    for name in SERIES:
        assert set(data[name]) == STATS and len(data["iterations"][f"{name}_ms"]) == data["queries"]
    assert data["latency"]["min"] > 0 and data["h2d"]["max"] == 0
    assert data["throughput"]["inferences_per_s"] == pytest.approx(4 * data["throughput"]["qps"])
    assert data["throughput"]["qps"] == pytest.approx(data["queries"] / data["total_host_walltime_s"])
    text = summary_text(result)
    for words in ("Throughput:", "inferences/s", "Latency: min", "Enqueue Time:", "H2D Latency:", "Compute Time:",
                  "D2H Latency:", "Total Host Walltime:", "Total Compute Time:"):
        assert words in text
    with pytest.raises(UsageError, match="needs a CUDA engine"):
        run_bench(trtflow.load(tiny_onnx, engine="ort"), feed, BenchConfig(streams=2))
    with pytest.raises(UsageError, match="iterations >= 1"):
        BenchConfig(iterations=0)


def test_cli_bench_ort_json_export_and_plot(tiny_onnx, tmp_path):
    out_json, out_png = tmp_path / "b.json", tmp_path / "b.png"
    proc = call_cli("bench", str(tiny_onnx), "--shapes", "x:2x3x16x16", "--iterations", "20", "--duration", "0.1",
                   "--warmUp", "10", "--exportJson", str(out_json), "--plot", str(out_png), "--json")
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert set(data) == FIELDS and data["engine"] == "ort" and data["shapes"] == {"x": [2, 3, 16, 16]}
    assert json.loads(out_json.read_text())["queries"] == data["queries"] >= 20
    assert out_png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_cli_bench_text_summary_and_errors(tiny_onnx):
    proc = call_cli("bench", str(tiny_onnx), "--shapes", "x:1x3x16x16", "--duration", "0.05", "--warmUp", "5")
    assert proc.returncode == 0, proc.stderr
    assert "=== Performance summary (ort on cpu" in proc.stdout and "percentile(99%)" in proc.stdout
    bad = call_cli("bench", str(tiny_onnx), "--shapes", "x:1x3x16x16", "--streams", "2")
    assert bad.returncode == 2 and "needs a CUDA engine" in bad.stderr
    bad = call_cli("bench", str(tiny_onnx), "--useCudaGraph")
    assert bad.returncode == 2 and "torch engine" in bad.stderr
    bad = call_cli("bench", str(tiny_onnx), "--plot", "x.jpg")
    assert bad.returncode == 2 and ".png, .svg or .pdf" in bad.stderr  # the library's rule (save_figure's)


def test_cli_plot_takes_the_formats_the_library_writes(tiny_onnx, tmp_path):
    pytest.importorskip("matplotlib")
    proc = call_cli("bench", str(tiny_onnx), "--shapes", "x:1x3x16x16", "--duration", "0.05", "--warmUp", "5",
                    "--plot", str(tmp_path / "lat.svg"))
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "lat.svg").read_text().lstrip().startswith("<?xml")


def test_cli_bench_module_factory_on_torch_cpu():
    pytest.importorskip("torch")
    proc = call_cli("bench", "tests.models.tiny:make", "--shapes", "x:2x3x16x16", "--device", "cpu",
                   "--duration", "0.05", "--warmUp", "5", "--json")
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert data["engine"] == "torch" and data["batch"] == 2 and data["queries"] >= 10
    missing = call_cli("bench", "tests.models.tiny:make", "--device", "cpu")
    assert missing.returncode == 2 and "--shapes" in missing.stderr


def test_run_bench_refuses_a_progress_that_is_not_callable_before_running(tiny_onnx):
    from trtflow.bench import run_multi

    calls = []
    feed = {"x": np.zeros((1, 3, 16, 16), np.float32)}
    with trtflow.load(tiny_onnx, engine="ort") as engine:
        config = BenchConfig(iterations=32, duration_s=0, warmup_ms=0)
        run_bench(engine, feed, config, progress=lambda *a: calls.append(a))
        assert calls and calls[-1][0] == "bench"
        for bench in (run_bench, run_multi):
            target = engine if bench is run_bench else [engine]
            with pytest.raises(UsageError, match="progress must be a callable"):
                bench(target, feed, config, progress=True)


def test_run_bench_names_unknown_inputs_before_running(tiny_onnx):
    from trtflow.errors import InputError

    feed = {"x": np.zeros((1, 3, 16, 16), np.float32), "images": np.zeros((1, 3), np.float32)}
    with trtflow.load(tiny_onnx, engine="ort") as engine:
        calls = []
        run = engine.infer
        engine.infer = lambda f: calls.append(f) or run(f)
        with pytest.raises(InputError, match=r"unknown \['images'\].*inputs are \['x'\]"):
            run_bench(engine, feed, BenchConfig(iterations=1, duration_s=0, warmup_ms=0))
        assert calls == []  # checked once, before the first query (the CUDA path pins by these names)


def test_cuda_lanes_repin_outputs_whose_shape_or_dtype_changes():
    from trtflow.bench.loop import outputs_to_pin

    pinned = {"boxes": np.empty((7, 4), np.float32), "count": np.empty((1,), np.int32)}
    assert outputs_to_pin({}, pinned) == ["boxes", "count"]  # the first query pins every output
    assert outputs_to_pin(pinned, {"boxes": np.ones((7, 4), np.float32), "count": np.ones(1, np.int32)}) == []
    assert outputs_to_pin(pinned, {"boxes": np.ones((3, 4), np.float32), "count": np.ones(1, np.int64)}) == ["boxes", "count"]
    assert outputs_to_pin(pinned, {"boxes": np.ones((4, 7), np.float32), "scores": np.ones(7, np.float32)}) == ["boxes", "scores"]


@pytest.mark.parametrize("flag", ["--exportJson", "--plot", "--saveEngine"])
def test_cli_bench_an_empty_output_path_is_refused_not_skipped(tiny_onnx, flag):
    """`--exportJson=` (an empty value, e.g. from an unset shell variable) ran the benchmark and wrote nothing
    without a word (`--saveEngine=` ran the model without building a plan); `trtflow run -o ""` is refused
    the same way."""
    proc = call_cli("bench", str(tiny_onnx), "--shapes", "x:1x3x16x16", "--iterations", "1", "--duration", "0",
                    "--warmUp", "0", f"{flag}=")
    assert proc.returncode == 2 and f"{flag} is given an empty path" in proc.stderr, proc.stderr
    assert "Performance summary" not in proc.stdout


@pytest.mark.parametrize("command", ["bench", "run"])
def test_a_misspelt_shapes_name_is_named_not_hidden_by_the_dynamic_input(tiny_onnx, command):
    """--shapes y:... for a model whose input is x said "input 'x' has dynamic dims; give a concrete shape",
    as if no --shapes had been given: the memory check ran before the names were checked."""
    proc = call_cli(command, str(tiny_onnx), "--shapes", "y:1x3x16x16")
    assert proc.returncode == 2 and "--shapes names 'y'" in proc.stderr and "['x']" in proc.stderr, proc.stderr


@pytest.mark.parametrize("command", ["bench", "run"])
def test_shapes_that_disagree_with_an_input_file_are_refused(tiny_onnx, tmp_path, command):
    """--shapes x:1x3x16x16 with --input x=FILE holding a batch of 4 ran the file's batch of 4 without a
    word: the run (and bench's figures, per inference) were not of the shape asked for."""
    np.save(tmp_path / "x4.npy", np.zeros((4, 3, 16, 16), np.float32))
    fast = ("--iterations", "1", "--duration", "0", "--warmUp", "0") if command == "bench" else ()
    proc = call_cli(command, str(tiny_onnx), "--shapes", "x:1x3x16x16", "--input", f"x={tmp_path / 'x4.npy'}", *fast)
    assert proc.returncode == 2 and "--shapes x:1x3x16x16" in proc.stderr and "4x3x16x16" in proc.stderr, proc.stderr
    same = call_cli(command, str(tiny_onnx), "--shapes", "x:4x3x16x16", "--input", f"x={tmp_path / 'x4.npy'}", *fast)
    assert same.returncode == 0, same.stderr
    opt = call_cli(command, str(tiny_onnx), "--optShapes", "x:1x3x16x16", "--input", f"x={tmp_path / 'x4.npy'}", *fast)
    assert opt.returncode == 0, opt.stderr  # a profile's shape, not the run's: the file sets it


@pytest.mark.parametrize("command", ["bench", "run"])
@pytest.mark.parametrize("flags, named", [(("--optShapes", "x:1x3x16x16"), "--optShapes"),
                                          (("--minShapes", "x:1x3x16x16", "--maxShapes", "x:2x3x16x16"), "--maxShapes")])
def test_tensorrt_profiles_that_do_not_cover_an_input_file_are_refused_before_the_build(tiny_onnx, tmp_path, command,
                                                                                       flags, named):
    """--optShapes x:1x3x16x16 --input x=FILE of a batch of 4 built a profile of min = opt = max = 1x3x16x16 (as
    trtexec builds --optShapes alone) and failed when the engine got the file, after the build."""
    np.save(tmp_path / "x4.npy", np.zeros((4, 3, 16, 16), np.float32))
    fast = ("--iterations", "1", "--duration", "0", "--warmUp", "0") if command == "bench" else ()
    given = ("--engine", "tensorrt", "--input", f"x={tmp_path / 'x4.npy'}", *fast)
    proc = call_cli(command, tiny_onnx, *flags, *given)
    assert proc.returncode == 2 and "x:4x3x16x16" in proc.stderr and named in proc.stderr, proc.stderr
    assert "cover" in proc.stderr and "cannot execute" not in proc.stderr, proc.stderr  # before the engine loads
    if command == "bench":  # --saveEngine builds first: refused before that build
        plan = tmp_path / "m.plan"
        proc = call_cli(command, tiny_onnx, *flags, *given, "--saveEngine", plan)
        assert proc.returncode == 2 and "x:4x3x16x16" in proc.stderr and not plan.exists(), proc.stderr
    fits = call_cli(command, tiny_onnx, "--minShapes", "x:1x3x16x16", "--maxShapes", "x:4x3x16x16", *given)
    assert "cover" not in fits.stderr, fits.stderr
    assert fits.returncode == 0 if trtflow.backends.tensorrt_usable() else "cannot execute" in fits.stderr, fits.stderr


def test_cli_bench_refuses_two_outputs_in_one_file(tiny_onnx, tmp_path):
    """--exportJson b.png --plot b.png wrote the JSON, then the plot over it: the figures were lost."""
    out = tmp_path / "b.png"
    proc = call_cli("bench", str(tiny_onnx), "--shapes", "x:1x3x16x16", "--iterations", "1", "--duration", "0",
                    "--warmUp", "0", "--exportJson", str(out), "--plot", str(out))
    assert proc.returncode == 2 and "name one file" in proc.stderr and not out.exists(), proc.stderr


@pytest.mark.parametrize("flags, named", [(["--memPoolSize", "workspace:64"], "--memPoolSize sets"),
                                          (["--workspace", "64"], "--workspace sets"),
                                          (["--timingCacheFile", "t.cache", "--builderOptimizationLevel", "5"],
                                           "--builderOptimizationLevel, --timingCacheFile set")])
def test_cli_bench_refuses_tensorrt_build_flags_on_another_engine(tiny_onnx, flags, named):
    """bench --engine ort (or torch) took --memPoolSize, --workspace, --timingCacheFile... and ran as if they had
    not been given; the precision flags are refused there already."""
    proc = call_cli("bench", str(tiny_onnx), "--engine", "ort", "--shapes", "x:1x3x16x16", "--iterations", "1",
                    "--duration", "0", "--warmUp", "0", *flags)
    assert proc.returncode == 2 and named in proc.stderr and "--engine tensorrt" in proc.stderr, proc.stderr
