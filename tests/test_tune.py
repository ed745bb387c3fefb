"""trtflow tune on tiny models (CPU): every configuration measured or dropped with its reason, the
fastest accepted one chosen, the choice saved and reused by load(tune=True) and invalidated by a
changed model or shapes, an unmeetable bound named by its closest configuration, the CLI's JSON."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

import trtflow
from trtflow.errors import MismatchError, UsageError
from trtflow.tune import Bound, TuneOptions
from trtflow.tune.accuracy import check
from trtflow.tune.result import ACCEPTED, BUDGET, CHOSEN, ERROR, FAILED_ACCURACY, SKIPPED, SLOWER

FAST = dict(short_s=0.05, full_s=0.1, warmup_ms=10, accuracy_samples=8)
SHAPES = {"x": (2, 3, 16, 16)}
STATUSES = {CHOSEN, ACCEPTED, FAILED_ACCURACY, SLOWER, SKIPPED, BUDGET, ERROR}


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("TRTFLOW_CACHE_DIR", str(tmp_path / "cache"))


@pytest.fixture(scope="module")
def ort_run(tmp_path_factory):
    """One ORT tuning of the tiny model over FP32/FP16/INT8 x two optimization levels, shared by several tests."""
    import os

    from tests.models.tiny import export_tiny

    root = tmp_path_factory.mktemp("tune")
    os.environ["TRTFLOW_CACHE_DIR"] = str(root / "cache")
    onnx = export_tiny(root / "tiny.onnx")
    result = trtflow.tune(str(onnx), shapes=SHAPES, engine="ort", precisions=("fp32", "fp16", "int8", "bf16"),
                          metric="relative", rtol=0.05,
                          options=TuneOptions(threads=(1,), ort_levels=("all", "basic"), **FAST))
    return onnx, result, root / "cache"


def test_every_configuration_measured_or_dropped_with_a_reason(ort_run):
    _, result, _ = ort_run
    names = [c.name for c in result.configs]
    assert len(names) == len(set(names)) == 7  # 3 precisions x 2 levels x 1 thread count + bf16 skipped
    for c in result.configs:
        assert c.status in STATUSES and c.reason, c
        if c.status in (CHOSEN, ACCEPTED, SLOWER):
            assert c.throughput > 0 and c.p50_ms > 0 and c.p99_ms >= c.p50_ms and c.compile_s >= 0, c
            assert c.max_abs_err is not None
    skipped = next(c for c in result.configs if c.precision == "bf16")
    assert skipped.status == SKIPPED and "bf16" in skipped.reason
    assert "random" in result.accuracy_inputs


def test_winner_is_the_fastest_accepted(ort_run):
    _, result, _ = ort_run
    accepted = [c for c in result.configs if c.accepted]
    assert result.best.status == CHOSEN and result.best in accepted
    assert result.best.throughput == max(c.throughput for c in accepted)
    assert all(not c.accepted for c in result.configs if c.status in (FAILED_ACCURACY, SLOWER, SKIPPED))


def test_saved_choice_is_reused_without_measuring(ort_run, monkeypatch):
    onnx, result, cache = ort_run
    monkeypatch.setenv("TRTFLOW_CACHE_DIR", str(cache))
    record = json.loads(open(result.record_path).read())
    assert record["chosen"] == result.chosen and record["key_material"]["shapes"] == [[2, 3, 16, 16]]
    assert record["options"]["providers"] == ["cpu"] and record["options"]["optimization"] in ("all", "basic")
    chosen = result.best
    with trtflow.load(str(onnx), engine="ort", tune=True, shapes=SHAPES) as engine:
        opts = engine.session.get_session_options()
        assert opts.intra_op_num_threads == chosen.options["threads"]
        out = engine.infer({"x": np.zeros((2, 3, 16, 16), np.float32)})
        assert out["logits"].shape == (2, 5)
    with trtflow.load(str(onnx), engine="ort", config="tuned", shapes=SHAPES):
        pass
    # another process: the choice is read back without importing the tuner (nothing is measured)
    code = ("import sys, trtflow; e = trtflow.load(sys.argv[1], engine='ort', tune=True, shapes={'x': (2, 3, 16, 16)}); "
            "print(e.session.get_session_options().intra_op_num_threads, 'trtflow.tune' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code, str(onnx)], capture_output=True, text=True, check=True,
                         env={**os.environ, "TRTFLOW_CACHE_DIR": str(cache)}).stdout.split()
    assert out == [str(chosen.options["threads"]), "False"]


def test_converted_model_choice_is_saved_and_loaded(tiny_onnx):
    result = trtflow.tune(str(tiny_onnx), shapes=SHAPES, engine="ort", precisions=("fp16",), metric="relative",
                          rtol=0.05, options=TuneOptions(threads=(1,), ort_levels=("all",), **FAST))
    record = json.loads(open(result.record_path).read())
    assert record["variant"] == "fp16" and record["model_file"].endswith(".fp16.onnx")
    with trtflow.load(str(tiny_onnx), engine="ort", tune=True, shapes=SHAPES) as engine:
        fp16 = engine.infer({"x": np.ones((2, 3, 16, 16), np.float32)})["logits"]
    with trtflow.load(str(tiny_onnx), engine="ort") as engine:
        fp32 = engine.infer({"x": np.ones((2, 3, 16, 16), np.float32)})["logits"]
    assert 0 < np.abs(fp16 - fp32).max() < 0.05  # the FP16 model runs, not the original


def test_fp8_linear_layers_keep_their_fp8_weights():
    import torch

    from trtflow.backends.torch.fp8 import to_fp8

    if not hasattr(torch, "float8_e4m3fn"):
        pytest.skip("this PyTorch has no float8")
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(32, 64), torch.nn.GELU(), torch.nn.Linear(64, 16)).eval()
    fp8 = to_fp8(model).to(torch.bfloat16)
    assert fp8[0].weight_fp8.dtype == torch.float8_e4m3fn and fp8[0].weight_scale.dtype == torch.float32
    x = torch.randn(5, 3, 32)  # 15 rows: padded to 16 for the FP8 GEMM
    try:
        got = fp8(x.bfloat16()).float()
    except RuntimeError as exc:  # CPU builds without FP8 GEMMs
        pytest.skip(f"torch._scaled_mm does not run here: {exc}")
    want = model(x)
    assert got.shape == want.shape and float((got - want).abs().max() / want.abs().max()) < 0.1


def test_changed_shapes_or_model_invalidate_the_choice(ort_run, monkeypatch, tmp_path):
    onnx, _, cache = ort_run
    monkeypatch.setenv("TRTFLOW_CACHE_DIR", str(cache))
    with pytest.raises(UsageError, match="no tuned configuration"):
        trtflow.load(str(onnx), engine="ort", tune=True, shapes={"x": (4, 3, 16, 16)})
    with trtflow.load(str(onnx), engine="ort", tune=True, shapes=SHAPES, providers=["CPUExecutionProvider"]):
        pass  # the CPU choice, whatever the spelling of its provider
    # a choice measured on the CPU provider is not one for the CUDA provider (nor the reverse)
    with pytest.raises(UsageError, match=r"no tuned configuration.*with providers \['CUDAExecutionProvider'"):
        trtflow.load(str(onnx), engine="ort", tune=True, shapes=SHAPES, providers=["cuda", "cpu"])
    import onnx as onnx_lib

    proto = onnx_lib.load(str(onnx))
    w = proto.graph.initializer[0]
    arr = onnx_lib.numpy_helper.to_array(w) * 1.01
    w.CopyFrom(onnx_lib.numpy_helper.from_array(arr.astype(np.float32), w.name))
    changed = tmp_path / "changed.onnx"
    onnx_lib.save(proto, str(changed))
    with pytest.raises(UsageError, match="no tuned configuration"):
        trtflow.load(str(changed), engine="ort", tune=True, shapes=SHAPES)


def test_bound_nobody_meets_names_the_closest(tmp_path):
    from tests.models.tiny import export_tiny

    onnx = export_tiny(tmp_path / "tiny.onnx")
    with pytest.raises(MismatchError, match=r"closest is 'fp16 opt=all threads=1' \(max abs error") as info:
        trtflow.tune(str(onnx), shapes=SHAPES, engine="ort", precisions=("fp16",), atol=0.0, rtol=0.0,
                     options=TuneOptions(threads=(1,), ort_levels=("all",), **FAST))
    assert all(c.status == FAILED_ACCURACY for c in info.value.report)


def test_torch_engine_on_the_cpu_and_reuse(tmp_path):
    import torch

    from tests.models.tiny import tiny_module

    model = tiny_module()
    result = trtflow.tune(model, shapes=SHAPES, engine="torch", precisions=("fp32", "bf16", "int8", "fp8"),
                          metric="relative", rtol=0.05, options=TuneOptions(only=["*eager*"], **FAST))
    by_name = {c.name: c for c in result.configs}
    assert "no INT8 path" in by_name["int8"].reason and "CUDA GPU" in by_name["fp8"].reason
    assert {"fp32 eager", "fp32 eager cl", "bf16 eager", "bf16 eager cl"} <= set(by_name)
    assert result.best.precision in ("fp32", "bf16")
    x = torch.randn(*SHAPES["x"])
    with trtflow.load(model, engine="torch", tune=True, example_inputs=[x]) as engine:
        assert engine.precision == result.best.options["dtype"]
    with pytest.raises(UsageError, match="no tuned configuration"):
        trtflow.load(model, engine="torch", tune=True, example_inputs=[torch.randn(3, 3, 16, 16)])
    with torch.no_grad():
        model.head.bias.add_(1.0)
    with pytest.raises(UsageError, match="no tuned configuration"):
        trtflow.load(model, engine="torch", tune=True, example_inputs=[x])


def test_random_batchnorm_is_recalibrated_and_said_so():
    import torch

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.BatchNorm2d(8), torch.nn.ReLU(),
                                torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(8, 4)).eval()
    result = trtflow.tune(model, shapes={"x": (4, 3, 8, 8)}, engine="torch", precisions=("fp32",),
                          options=TuneOptions(only=["fp32 eager"], save=False, **FAST))
    assert any("batch-norm statistics of 1 layers re-estimated" in n for n in result.notes)
    assert result.key is None and float(model[1].running_var.sum()) == 8.0  # the user's model is untouched


def test_budget_too_small_is_an_error(tiny_onnx):
    with pytest.raises(UsageError, match="budget"):
        trtflow.tune(str(tiny_onnx), shapes=SHAPES, engine="ort", precisions=("fp32",), budget_s=0.001,
                     options=TuneOptions(threads=(1,), ort_levels=("all",), **FAST))


def test_tensorrt_builds_but_cannot_run_here(tiny_onnx):
    from trtflow.backends import tensorrt_usable

    if tensorrt_usable():
        pytest.skip("TensorRT runs here: the build-only path does not apply")
    try:
        from trtflow.backends.tensorrt.flavor import load_flavor

        load_flavor()
    except ImportError:
        pytest.skip("no TensorRT flavor installed")
    with pytest.raises(UsageError, match="built in .* cannot execute TensorRT engines.*Tune on a machine"):
        trtflow.tune(str(tiny_onnx), shapes=SHAPES, engine="tensorrt", precisions=("fp16",),
                     options=TuneOptions(trt_levels=(3,), **FAST))


def test_fusion_result_orders_the_compiles():
    from trtflow.tune.space import prefer, torch_space

    cands, _ = torch_space(["fp16"], cuda=True, conv=True, batchnorm=True, fp8=None)
    compiles = [c for c in cands if c.kind == "compile"]
    assert [c.name for c in compiles] == ["fp16 compile+fused+graphs cl", "fp16 compile+graphs cl"]  # BN, no depthwise
    won = {"fp16 fused+graphs cl": 300.0, "fp16 eager+graphs cl": 100.0}
    assert [c.name for c in prefer(compiles, won)][0] == "fp16 compile+fused+graphs cl"
    lost = {"fp16 fused+graphs cl": 50.0, "fp16 eager+graphs cl": 100.0}
    assert [c.name for c in prefer(compiles, lost)][0] == "fp16 compile+graphs cl"
    assert [c.name for c in prefer(cands, won)] == [c.name for c in cands]  # fusing won: the order stays
    assert [c.name for c in prefer(compiles, lost)] == ["fp16 compile+graphs cl", "fp16 compile+fused+graphs cl"]


def test_accuracy_bounds():
    ref = [{"y": np.array([[1.0, 5.0, 2.0], [3.0, 0.5, 0.4]])}]
    got = [{"y": np.array([[1.0, 4.9, 2.0], [0.3, 0.5, 0.4]])}]
    top = check(Bound("top1", min_agreement=0.5), ref, got)
    assert top.failure is None and top.top1_agreement == 0.5
    assert "top-1 agreement 50.0%" in check(Bound("top1", min_agreement=0.9), ref, got).failure
    assert check(Bound("relative", rtol=0.6), ref, got).failure is None  # 2.7 <= 0.6 * 5
    assert "max abs error 2.7" in check(Bound("allclose", atol=0.1, rtol=0.1), ref, got).failure
    assert "non-finite" in check(Bound(), ref, [{"y": np.full((2, 3), np.inf)}]).failure


def test_cli_json_shape(tiny_onnx, capsys):
    from trtflow.cli.main import main

    code = main(["tune", str(tiny_onnx), "--engine", "ort", "--shapes", "x:2x3x16x16", "--precisions", "fp32, fp16",
                 "--threads", "1", "--only", "* opt=all *", "--short-s", "0.05", "--full-s", "0.1", "--no-save", "--json"])
    assert code == 0
    data = json.loads(capsys.readouterr().out)
    assert data["chosen"] in [c["name"] for c in data["configs"]]
    for c in data["configs"]:
        assert {"name", "throughput", "p50_ms", "p99_ms", "compile_s", "max_abs_err", "accepted", "reason"} <= set(c)
    assert {c["name"].split()[0] for c in data["configs"]} >= {"fp32", "fp16"}  # "fp32, fp16": spaces are not names


def test_cli_usage_errors(tiny_onnx, capsys):
    from trtflow.cli.main import main

    assert main(["tune", str(tiny_onnx), "--engine", "torch", "--shapes", "x:2x3x16x16"]) == 2
    assert "MODULE:FACTORY" in capsys.readouterr().err
    assert main(["tune", str(tiny_onnx), "--engine", "ort", "--precisions", "fp64", "--shapes", "x:2x3x16x16"]) == 2
    assert main(["tune", str(tiny_onnx), "--engine", "ort", "--metric", "top1", "--atol", "1"]) == 2
    capsys.readouterr()
    assert main(["tune", str(tiny_onnx), "--engine", "ort", "--shapes", "x:2x3x16x16", "--metric", "top1",
                 "--precisions", "fp32", "--threads", "1", "--only", "* opt=all *"]) == 0  # logits (2, 5) qualify
    with pytest.raises(UsageError, match="top1 needs a classifier output"):
        trtflow.tune(feature_map_model(tiny_onnx), shapes={"x": (2, 3, 16, 16)}, engine="ort", metric="top1",
                     options=TuneOptions(threads=(1,), **FAST))


@pytest.mark.gpu
def test_gpu_conv_net_end_to_end():
    """A conv + BN net on the GPU: FP16 graphs / fusions / compile tried, the choice loads and runs."""
    import torch

    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Conv2d(3, 32, 3, padding=1, bias=False), torch.nn.BatchNorm2d(32), torch.nn.ReLU(),
        torch.nn.Conv2d(32, 32, 3, padding=1, bias=False), torch.nn.BatchNorm2d(32), torch.nn.ReLU(),
        torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(32, 10)).eval()
    shapes = {"x": (16, 3, 32, 32)}
    result = trtflow.tune(model, shapes=shapes, engine="torch", precisions=("fp32", "fp16"), metric="relative",
                          rtol=0.05, options=TuneOptions(only=["*eager*", "* fused+graphs*"], **FAST))
    assert result.device.startswith("cuda") and result.best.accepted
    assert any(c.name.startswith("fp16 fused+graphs") for c in result.configs)
    x = torch.randn(*shapes["x"], device="cuda")
    with trtflow.load(model, engine="torch", tune=True, example_inputs=[x.cpu()]) as engine:
        out = engine.infer({engine.inputs[0].name: x})
        assert next(iter(out.values())).shape == (16, 10)


def feature_map_model(onnx_path):
    """The tiny ONNX model with its 4-D ReLU feature map as the only output (no classifier output)."""
    import onnx
    from onnx import helper

    proto = onnx.load(str(onnx_path))
    conv_out = next(n.output[0] for n in proto.graph.node if n.op_type == "Relu")
    del proto.graph.output[:]
    proto.graph.output.append(helper.make_tensor_value_info(conv_out, onnx.TensorProto.FLOAT, None))
    return proto.SerializeToString()


def test_torch_reduced_io_when_asked():
    """keep_io_types=False: the reduced-precision configurations take and return their own dtype."""
    import torch

    from tests.models.tiny import tiny_module

    model = tiny_module()
    result = trtflow.tune(model, shapes=SHAPES, engine="torch", precisions=("fp32", "bf16"), metric="relative",
                          rtol=0.05, options=TuneOptions(only=["* eager"], keep_io_types=False, save=False, **FAST))
    by_name = {c.name: c for c in result.configs}
    assert by_name["bf16 eager"].options["keep_io_types"] is False and "keep_io_types" not in by_name["fp32 eager"].options
    assert by_name["bf16 eager"].accepted, by_name["bf16 eager"].reason
    with trtflow.load(model, engine="torch", example_inputs=[torch.randn(*SHAPES["x"])],
                      **by_name["bf16 eager"].options) as engine:
        assert engine.inputs[0].dtype == "bfloat16"
        out = engine.infer({engine.inputs[0].name: torch.randn(*SHAPES["x"]).bfloat16()})
        assert out and all(v.dtype == torch.bfloat16 for v in out.values())
