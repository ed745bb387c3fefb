"""trtexec-named and shared flags reach the engine they name (in-process CLI calls; the engine's
load is replaced by a recorder, so nothing is built or run)."""

from __future__ import annotations

import pytest

from tests.conftest import call_cli


def test_bench_use_cuda_graph_reaches_tensorrt(tiny_onnx, loads):
    """trtexec's --useCudaGraph is a TensorRT flag: bench passes it on instead of refusing it."""
    proc = call_cli("bench", str(tiny_onnx), "--engine", "tensorrt", "--useCudaGraph", "--shapes", "x:1x3x16x16")
    assert "stopped by the test" in proc.stderr, proc.stderr
    (_, engine, opts), = loads
    assert engine == "tensorrt" and opts.get("use_cuda_graph") is True


def test_bench_use_cuda_graph_on_ort_still_refused(tiny_onnx, loads):
    proc = call_cli("bench", str(tiny_onnx), "--engine", "ort", "--useCudaGraph")
    assert proc.returncode == 2 and "torch engine" in proc.stderr and "TensorRT" in proc.stderr
    assert not loads


def test_bench_save_engine_with_use_cuda_graph_builds_a_capturable_plan(tiny_onnx, tmp_path, flavor):
    """trtexec --onnx --saveEngine --useCudaGraph: on TensorRT-RTX the saved plan must be one the
    engine can capture (REQUIRE_USER_ALLOCATION), else loading it with graphs is refused."""
    import json

    plan = tmp_path / "g.plan"
    proc = call_cli("bench", "--onnx", str(tiny_onnx), "--saveEngine", str(plan), "--buildOnly", "--useCudaGraph",
                    "--shapes", "x:1x3x16x16", "--json")
    assert proc.returncode == 0, proc.stderr
    config = json.loads(plan.with_name("g.plan.json").read_text())["config"]
    assert config.get("require_user_allocation") is (True if flavor.is_rtx else None)


def _precision(opts: dict) -> dict:
    config = opts.get("build_config")
    return {k: getattr(config, k) for k in ("fp16", "bf16", "int8", "best", "strongly_typed")} if config else {}


def test_serve_precision_flags_reach_tensorrt(tiny_onnx, loads):
    """serve documents --fp16/--int8/...; on TensorRT they must reach the build, not be dropped."""
    proc = call_cli("serve", str(tiny_onnx), "--engine", "tensorrt", "--fp16", "--minShapes", "x:1x3x16x16",
                    "--optShapes", "x:4x3x16x16", "--maxShapes", "x:8x3x16x16", "--http-port", "0", "--grpc-port", "-1")
    assert "stopped by the test" in proc.stderr, proc.stderr
    (_, engine, opts), = loads
    assert engine == "tensorrt" and _precision(opts)["fp16"] is True
    profiles = opts.get("profiles") or opts["build_config"].profiles
    assert [p.max["x"] for p in profiles] == [(8, 3, 16, 16)]


def test_video_precision_flags_reach_tensorrt(tiny_onnx, tmp_path, loads):
    pytest.importorskip("av")
    from PIL import Image

    frames = tmp_path / "frames"
    frames.mkdir()
    Image.new("RGB", (16, 16)).save(frames / "0.png")
    proc = call_cli("video", str(frames), "--task", "classify", "--model", str(tiny_onnx), "--engine", "tensorrt",
                    "--int8", "--stronglyTyped")
    assert "stopped by the test" in proc.stderr, proc.stderr
    (_, engine, opts), = loads
    assert engine == "tensorrt" and _precision(opts)["int8"] is True and _precision(opts)["strongly_typed"] is True


def test_int8_on_the_torch_engine_is_refused_not_ignored(tmp_path):
    """bench/build MODULE:FACTORY took --int8 and ran FP32 without a word."""
    pytest.importorskip("torch")
    proc = call_cli("bench", "tests.models.tiny:make", "--shapes", "x:2x3x16x16", "--device", "cpu", "--int8",
                    "--duration", "0.01", "--warmUp", "1", "--json")
    assert proc.returncode == 2 and "--int8" in proc.stderr, proc.stderr
    proc = call_cli("build", "tests.models.tiny:make", "--engine", "torch", "--saveEngine", str(tmp_path / "m.pt2"),
                    "--shapes", "x:2x3x16x16", "--device", "cpu", "--int8")
    assert proc.returncode == 2 and "--int8" in proc.stderr, proc.stderr
    assert not (tmp_path / "m.pt2").exists()


def test_repeated_shape_sets_without_min_are_two_profiles(tiny_onnx, tmp_path, flavor):
    """trtexec: each repeated set is one more profile; a set without --minShapes was dropped (no profile
    at all, so the build inferred 1..16 instead)."""
    import json

    proc = call_cli("build", str(tiny_onnx), "-o", str(tmp_path / "p.plan"), "--no-cache", "--json",
                    "--optShapes", "x:4x3x16x16", "--maxShapes", "x:8x3x16x16",
                    "--optShapes", "x:16x3x16x16", "--maxShapes", "x:32x3x16x16")
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert [p["x"]["max"] for p in report["profiles"]] == [[8, 3, 16, 16], [32, 3, 16, 16]]
    assert not report.get("inferred_profiles")


def test_trtexec_verbose_is_trtflows_verbose(tmp_path):
    """trtexec's --verbose in a `trtflow trtexec` line: the traceback and debug logs, not one line."""
    from trtflow.errors import TrtflowError

    with pytest.raises(TrtflowError):
        call_cli("trtexec", f"--onnx={tmp_path / 'missing.onnx'}", "--verbose")


def test_trtexec_build_only_line_with_inference_flags_builds(tiny_onnx, tmp_path, flavor):
    """trtexec takes (and ignores) inference flags with --buildOnly; `trtflow build` refused them."""
    plan = tmp_path / "p.plan"
    proc = call_cli("trtexec", f"--onnx={tiny_onnx}", f"--saveEngine={plan}", "--buildOnly", "--shapes=x:1x3x16x16",
                    "--iterations=100", "--warmUp=500", "--duration=10")
    assert proc.returncode == 0, proc.stderr
    assert plan.exists()


@pytest.mark.parametrize("flag", ["--exportLayerInfo=l.json", "--dumpLayerInfo", "--profilingVerbosity=detailed"])
def test_unsupported_layer_info_hint_names_a_fix_that_works(flag, tiny_onnx, tmp_path, flavor):
    """The hint said `trtflow inspect ENGINE`, which refuses engines (it reads ONNX only)."""
    import json

    plan = tmp_path / "p.plan"
    assert call_cli("build", str(tiny_onnx), "-o", str(plan), "--shapes", "x:1x3x16x16").returncode == 0
    inspect = call_cli("inspect", str(plan))
    proc = call_cli("bench", f"--loadEngine={plan}", flag)
    assert proc.returncode == 2
    if "trtflow inspect" in proc.stderr:
        assert inspect.returncode == 0, "the hint names `trtflow inspect`, which refuses the engine"
    assert "sidecar" in proc.stderr and json.loads((tmp_path / "p.plan.json").read_text())["profiles"]


def test_unsupported_output_hints_name_the_flag_that_saves_outputs(tiny_onnx, tmp_path):
    """--exportOutput/--dumpOutput pointed to `run --json`, which prints min/max/mean, not the outputs."""
    import numpy as np

    for flag in ("--exportOutput=o.json", "--dumpOutput"):
        proc = call_cli("bench", str(tiny_onnx), flag)
        assert proc.returncode == 2 and "-o OUT.npz" in proc.stderr, proc.stderr
    out = tmp_path / "out.npz"
    assert call_cli("run", str(tiny_onnx), "--shapes", "x:1x3x16x16", "-o", str(out)).returncode == 0
    assert np.load(out)["logits"].shape == (1, 5)


def test_unsupported_no_builder_cache_hint_names_a_command_that_has_it(tiny_onnx):
    proc = call_cli("bench", str(tiny_onnx), "--noBuilderCache")
    assert proc.returncode == 2 and "trtflow build" in proc.stderr and "--no-cache" in proc.stderr, proc.stderr


def test_precision_flags_on_onnx_runtime_are_refused_not_ignored(tiny_onnx, tmp_path, loads):
    """serve/video --fp16 on ONNX Runtime ran the model's own FP32 without a word (bench refuses)."""
    proc = call_cli("serve", str(tiny_onnx), "--engine", "ort", "--fp16", "--http-port", "0", "--grpc-port", "-1")
    assert proc.returncode == 2 and "--fp16" in proc.stderr and "stopped by the test" not in proc.stderr, proc.stderr
    assert not loads


@pytest.mark.parametrize("model,flag,says", [("m.pt2", "--fp16", ".pt2 package keeps the precision"),
                                             ("m.pt2", "--best", ".pt2 package keeps the precision"),
                                             ("mtcnn", "--int8", "--int8 builds INT8 TensorRT engines")])
def test_video_torch_precision_flags_that_cannot_apply_are_refused(tmp_path, loads, model, flag, says):
    """video with a .pt2 package ran its own precision under --fp16/--best, and --int8 on the torch
    engine ran FP32, without a word (bench and serve refuse both)."""
    pytest.importorskip("av")
    from PIL import Image

    frames = tmp_path / "frames"
    frames.mkdir()
    Image.new("RGB", (16, 16)).save(frames / "0.png")
    if model.endswith(".pt2"):
        (tmp_path / model).write_bytes(b"")
        model = str(tmp_path / model)
    task = "face" if model == "mtcnn" else "classify"
    proc = call_cli("video", str(frames), "--task", task, "--model", model, "--engine", "torch", flag)
    assert proc.returncode == 2 and says in proc.stderr and not loads, proc.stderr



def test_fp16_with_bf16_is_bf16_on_the_torch_engine_in_video_too(tmp_path, loads):
    """video picked FP16 for --fp16 --bf16 while bench and build (``options.torch_dtype``) picked BF16."""
    pytest.importorskip("torch")
    pytest.importorskip("av")
    import argparse

    from PIL import Image

    from trtflow.cli.options import torch_dtype

    frames = tmp_path / "frames"
    frames.mkdir()
    Image.new("RGB", (16, 16)).save(frames / "0.png")
    proc = call_cli("video", str(frames), "--task", "classify", "--model", "tests.models.tiny:make", "--engine", "torch",
                    "--device", "cpu", "--fp16", "--bf16")
    assert "stopped by the test" in proc.stderr, proc.stderr
    (_, engine, opts), = loads
    both = argparse.Namespace(fp16=True, bf16=True, best=False, int8=False)
    assert engine == "torch" and opts["dtype"] == torch_dtype(both) == "bf16"


def test_an_input_given_twice_is_refused_not_the_first_dropped(tiny_onnx, tmp_path):
    """--input x=a.npy --input x=b.npy ran b and dropped a without a word."""
    import numpy as np

    for name in ("a", "b"):
        np.save(tmp_path / f"{name}.npy", np.zeros((1, 3, 16, 16), np.float32))
    proc = call_cli("run", str(tiny_onnx), "--input", f"x={tmp_path / 'a.npy'}", "--input", f"x={tmp_path / 'b.npy'}")
    assert proc.returncode == 2 and "'x' twice" in proc.stderr, proc.stderr
    same = call_cli("run", str(tiny_onnx), "--input", f"x={tmp_path / 'a.npy'}", "--input", f"x={tmp_path / 'a.npy'}")
    assert same.returncode == 0, same.stderr  # the same pair twice loses nothing


def test_a_shape_given_twice_is_refused_not_the_first_dropped(tiny_onnx):
    """run --shapes x:1x3x16x16 --shapes x:2x3x16x16 ran batch 2 and dropped batch 1 without a word; a build
    whose --minShapes sets do not pair up with --maxShapes kept the last --minShapes."""
    proc = call_cli("run", tiny_onnx, "--shapes", "x:1x3x16x16", "--shapes", "x:2x3x16x16")
    assert proc.returncode == 2 and "'x'" in proc.stderr, proc.stderr
    assert "1x3x16x16" in proc.stderr and "2x3x16x16" in proc.stderr, proc.stderr
    proc = call_cli("check", tiny_onnx, "--minShapes", "x:1x3x16x16", "--minShapes", "x:2x3x16x16",
                    "--maxShapes", "x:4x3x16x16")
    assert proc.returncode == 2 and "1x3x16x16" in proc.stderr and "2x3x16x16" in proc.stderr, proc.stderr
    same = call_cli("run", tiny_onnx, "--shapes", "x:2x3x16x16", "--shapes", "x:2x3x16x16", "--json")
    assert same.returncode == 0, same.stderr  # the same shape twice loses nothing
    assert __import__("json").loads(same.stdout)["inputs"]["x"]["shape"] == [2, 3, 16, 16]


def test_the_split_batches_hint_names_a_flag_only_where_the_command_has_it(tiny_onnx, tmp_path):
    """A batch a static-batch engine does not take said "Or load with split_batches=True (--split-batches)"
    in bench and compare too, which have no such flag."""
    import numpy as np

    import trtflow
    from trtflow import edits
    from trtflow.errors import InputShapeError
    from trtflow.graph.io import save_onnx

    static = save_onnx(edits.apply("fix-shapes", tiny_onnx, dims={"batch": 2}, verify=False)[0], tmp_path / "b2.onnx")
    shapes = ("--shapes", "x:4x3x16x16")
    proc = call_cli("run", static, *shapes)
    assert proc.returncode == 2 and "dim 0 is 4" in proc.stderr and "--split-batches" in proc.stderr, proc.stderr
    assert "split_batches=True" not in proc.stderr, proc.stderr
    for args in (("bench", static, "--engine", "ort", "--iterations", "1"), ("compare", static, tiny_onnx)):
        proc = call_cli(*args, *shapes)
        assert proc.returncode == 2 and "dim 0 is 4" in proc.stderr and "split" not in proc.stderr, proc.stderr
    with trtflow.load(static, engine="ort") as engine, pytest.raises(InputShapeError) as info:  # Python: the option
        engine.infer({"x": np.zeros((4, 3, 16, 16), np.float32)})
    assert "split_batches=True" in str(info.value) and "--split-batches" not in str(info.value)


def test_bench_on_the_torch_engine_names_no_split_option(tmp_path):
    """bench MODULE:FACTORY (and a .pt2) loaded its torch engine without the CLI's loader, so a batch the
    engine does not take still said "Or load with split_batches=True", an option bench has no flag for."""
    import numpy as np

    np.save(tmp_path / "x4.npy", np.zeros((4, 3, 16, 16), np.float32))
    proc = call_cli("bench", "tests.models.export_zoo:with_examples", "--input", f"x={tmp_path / 'x4.npy'}",
                    "--iterations", "1", "--duration", "0", "--warmUp", "0", "--device", "cpu")  # traced at batch 2
    assert proc.returncode == 2 and "dim 0 is 4" in proc.stderr and "split" not in proc.stderr, proc.stderr


@pytest.mark.parametrize("command", ["run", "bench"])
def test_the_torch_engine_given_an_onnx_model_names_the_engine_that_runs_it(tiny_onnx, command):
    """`--engine torch model.onnx` said only "cannot read model.onnx as an AOTInductor package (a zip archive):
    File is not a zip file"."""
    proc = call_cli(command, str(tiny_onnx), "--engine", "torch", "--shapes", "x:1x3x16x16")
    assert proc.returncode == 2 and "is an ONNX model: give --engine ort" in proc.stderr, proc.stderr
    assert "zip" not in proc.stderr


@pytest.mark.parametrize("command, engine", [("run", "ort"), ("bench", "tensorrt")])
def test_a_pt2_package_on_another_engine_names_the_torch_engine(tmp_path, command, engine):
    """A .pt2 with --engine ort was read as ONNX: "not a readable ONNX model ... a zip archive (a PyTorch .pt/.pth
    checkpoint?); export the module with `trtflow export`", though the package is the exported module."""
    import zipfile

    with zipfile.ZipFile(tmp_path / "m.pt2", "w") as archive:
        archive.writestr("m/data/aotinductor/model/wrapper_metadata.json", "{}")
    proc = call_cli(command, str(tmp_path / "m.pt2"), "--engine", engine)
    assert proc.returncode == 2 and "give --engine torch" in proc.stderr and "export" not in proc.stderr, proc.stderr
