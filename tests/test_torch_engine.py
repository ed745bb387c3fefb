"""The torch engine on the CPU: specs, output naming, bounds, exported programs, AOTInductor."""

from __future__ import annotations

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import trtflow  # noqa: E402
from trtflow.backends.torch.runner import TorchEngine  # noqa: E402
from trtflow.backends.torch.package import build_aoti  # noqa: E402
from trtflow.errors import InputDtypeError, InputShapeError, ModelLoadError, UsageError  # noqa: E402
from tests.conftest import call_cli  # noqa: E402
from tests.models.tiny import tiny_module  # noqa: E402


class DictOut(torch.nn.Module):
    def forward(self, image, scale):
        return {"scaled": image * scale, "total": image.sum(dim=(1, 2, 3))}


class OneOut(torch.nn.Module):
    def forward(self, x):
        return x.flatten(1).mean(dim=1, keepdim=True)


def test_load_reaches_torch_engine_and_names_inputs_from_forward():
    eng = trtflow.load(tiny_module(), engine="torch", example_inputs=[torch.randn(2, 3, 16, 16)], device="cpu")
    assert isinstance(eng, TorchEngine) and eng.name == "torch"
    assert [s.name for s in eng.inputs] == ["x"]
    assert eng.inputs[0].shape == (2, 3, 16, 16)  # no dynamic dims given: static
    assert [s.name for s in eng.outputs] == ["output_0", "output_1"]
    with pytest.raises(InputShapeError, match="dim 0 is 3"):
        eng.infer({"x": np.zeros((3, 3, 16, 16), np.float32)})


def test_dict_outputs_keep_keys_and_dynamic_dims_reach_outputs():
    eng = TorchEngine(
        DictOut(), {"image": torch.rand(2, 3, 8, 8), "scale": torch.tensor(2.0)},
        dynamic={"image": {0: "batch", 2: "h"}}, device="cpu",
    )
    assert [s.name for s in eng.inputs] == ["image", "scale"]
    assert eng.inputs[0].shape == ("batch", 3, "h", 8)
    assert {s.name: s.shape for s in eng.outputs} == {"scaled": ("batch", 3, "h", 8), "total": ("batch",)}
    image = np.random.default_rng(0).random((4, 3, 5, 8)).astype(np.float32)
    out = eng.infer({"image": image, "scale": np.float32(3.0)})
    assert list(out) == ["scaled", "total"] and isinstance(out["total"], np.ndarray)
    np.testing.assert_allclose(out["scaled"], image * 3, rtol=1e-6)
    np.testing.assert_allclose(out["total"], image.sum(axis=(1, 2, 3)), rtol=1e-5)


def test_single_tensor_output_and_output_names():
    eng = TorchEngine(OneOut(), [torch.rand(2, 4)], dynamic={"x": {0: "n"}}, output_names=["mean"], device="cpu")
    assert [(s.name, s.shape) for s in eng.outputs] == [("mean", ("n", 1))]
    out = eng.infer({"x": torch.ones(5, 4)})
    assert isinstance(out["mean"], torch.Tensor) and out["mean"].shape == (5, 1)
    with pytest.raises(UsageError, match="2 output names"):
        TorchEngine(OneOut(), [torch.rand(2, 4)], output_names=["a", "b"], device="cpu")


def test_bounds_are_checked_before_running():
    eng = TorchEngine(
        tiny_module(), {"x": torch.randn(2, 3, 16, 16)}, dynamic={"x": {0: "batch"}},
        min_shapes={"x": (1, 3, 16, 16)}, max_shapes={"x": (4, 3, 16, 16)}, device="cpu",
    )
    spec = eng.inputs[0]
    assert spec.bounds.min == (1, 3, 16, 16) and spec.bounds.opt == (2, 3, 16, 16) and spec.bounds.max == (4, 3, 16, 16)
    assert tuple(eng.infer({"x": torch.randn(4, 3, 16, 16)})["output_0"].shape) == (4, 5)
    with pytest.raises(InputShapeError, match="1 <= batch <= 4"):
        eng.infer({"x": torch.randn(5, 3, 16, 16)})


def test_reduced_precision_keeps_the_models_io_types_unless_asked():
    x = torch.randn(2, 3, 16, 16)
    ref = tiny_module()(x)[0]
    kept = TorchEngine(tiny_module(), [torch.randn(2, 3, 16, 16)], dtype="fp16", device="cpu")
    assert kept.inputs[0].dtype == "float32" and kept.outputs[0].dtype == "float32"  # like TensorRT --fp16
    out = kept.infer({"x": x.numpy()})  # float32 in, float32 out; FP16 inside
    assert out["output_0"].dtype == np.float32 and float(np.abs(out["output_0"] - ref.detach().numpy()).max()) < 0.05
    eng = TorchEngine(tiny_module(), [torch.randn(2, 3, 16, 16)], dtype="bf16", keep_io_types=False, device="cpu")
    assert eng.inputs[0].dtype == "bfloat16" and eng.outputs[0].dtype == "bfloat16"
    with pytest.raises(InputDtypeError, match="float32"):
        eng.infer({"x": np.zeros((2, 3, 16, 16), np.float32)})  # float32 -> bfloat16 loses precision
    out = eng.infer({"x": x.bfloat16()})
    assert out["output_0"].dtype == torch.bfloat16
    assert float((out["output_0"].float() - ref).abs().max()) < 0.1  # bf16 keeps ~3 significant digits


def test_exported_program_is_accepted():
    model = tiny_module()
    program = torch.export.export(
        model, (torch.randn(2, 3, 16, 16),), dynamic_shapes={"x": {0: torch.export.Dim("batch", min=1, max=8)}}
    )
    eng = TorchEngine(program, device="cpu", dynamic={"x": {0: "batch"}}, output_names=["logits", "feat"])
    assert eng.inputs[0].shape == ("batch", 3, 16, 16)
    x = torch.randn(3, 3, 16, 16)
    torch.testing.assert_close(eng.infer({"x": x})["logits"], model(x)[0], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    "kwargs, error, words",
    [
        ({"dtype": "int8"}, UsageError, "dtype 'int8'"),
        ({"compile": "fast"}, UsageError, "compile mode 'fast'"),
        ({"cuda_graphs": True}, UsageError, "needs a CUDA device"),
        ({"dynamic": {"y": {0: "b"}}}, UsageError, "unknown inputs ['y']"),
        ({"dynamic": {"x": {7: "b"}}}, UsageError, "dims [7]"),
        ({"inductor": {"coordinate_descent_tuning": True}}, UsageError, "apply to a compile"),
        ({"compile": "default", "inductor": {"coordinate_descent_tunning": True}}, UsageError,
         "unknown Inductor option(s) ['coordinate_descent_tunning']"),
    ],
)
def test_bad_options_raise(kwargs, error, words):
    with pytest.raises(error) as info:
        TorchEngine(tiny_module(), [torch.randn(2, 3, 16, 16)], device="cpu", **kwargs)
    assert words in str(info.value)


def test_inductor_options_reach_the_compile(monkeypatch):
    """Options on top of the mode's go to torch.compile (which compiles for real) with the engine's own."""
    model = tiny_module()
    x = torch.randn(2, 3, 16, 16)
    seen, real = [], torch.compile
    monkeypatch.setattr(torch, "compile", lambda *a, **kw: seen.append(kw["options"]) or real(*a, **kw))
    eng = TorchEngine(model, [x], device="cpu", compile="default", inductor={"epilogue_fusion": False})
    assert seen == [{**torch._inductor.list_mode_options("default"), "freezing": True, "epilogue_fusion": False}]
    out = eng.infer({"x": x.numpy()})
    np.testing.assert_allclose(out["output_0"], model(x)[0].detach().numpy(), rtol=1e-4, atol=1e-4)


def test_torch_device_is_public_and_shared_with_tune():
    """One device check for the engine and tune's torch subject, importable under a public name."""
    from trtflow.backends.torch.runner import torch_device
    from trtflow.tune.subjects import TorchSubject

    assert torch_device(torch, "cpu") == torch.device("cpu")
    with pytest.raises(UsageError, match="not a torch device"):
        torch_device(torch, "bogus")
    subject = TorchSubject(tiny_module(), {"x": (2, 3, 16, 16)}, [], "cpu", recalibrate=False)
    assert subject.device == torch.device("cpu")


def test_module_without_examples_and_missing_package_raise(tmp_path):
    with pytest.raises(ModelLoadError, match="example_inputs"):
        TorchEngine(tiny_module(), device="cpu")
    with pytest.raises(ModelLoadError, match="not found"):
        TorchEngine(tmp_path / "missing.pt2", device="cpu")


@pytest.fixture(scope="session")
def tiny_pt2(models_dir):
    """The tiny model as an AOTInductor package for the CPU, batch 1..8, built by the CLI (~30 s)."""
    path = models_dir / "tiny.pt2"
    proc = call_cli("build", "tests.models.tiny:make", "--engine", "torch", "--saveEngine", str(path), "--device", "cpu",
                    "--minShapes", "x:1x3x16x16", "--optShapes", "x:2x3x16x16", "--maxShapes", "x:8x3x16x16", "--json")
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["kind"] == "aoti" and report["inputs"][0]["bounds"]["max"] == [8, 3, 16, 16]
    return path


def test_aoti_package_round_trip(tiny_pt2):
    eng = trtflow.load(tiny_pt2, device="cpu")  # .pt2 picks the torch engine
    assert eng.name == "torch"
    assert [s.name for s in eng.inputs] == ["x"] and eng.inputs[0].shape == ("?", 3, 16, 16)
    assert eng.inputs[0].bounds.min == (1, 3, 16, 16) and eng.inputs[0].bounds.max == (8, 3, 16, 16)
    assert [(s.name, s.shape) for s in eng.outputs] == [("output_0", ("?", 5)), ("output_1", ("?", 8))]
    x = np.random.default_rng(2).standard_normal((5, 3, 16, 16)).astype(np.float32)
    out = eng.infer({"x": x})
    ref = tiny_module()(torch.from_numpy(x))
    np.testing.assert_allclose(out["output_0"], ref[0].detach().numpy(), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(eng.infer({"x": x[:1]})["output_1"], ref[1][:1].detach().numpy(), rtol=1e-4, atol=1e-5)
    with pytest.raises(InputShapeError, match="\\? <= 8"):
        eng.infer({"x": np.zeros((9, 3, 16, 16), np.float32)})
    with pytest.raises(UsageError, match="compiled already"):
        TorchEngine(tiny_pt2, compile="default", device="cpu")


def test_cli_build_torch_refuses_bad_arguments(tmp_path):
    proc = call_cli("build", str(tmp_path / "m.onnx"), "--engine", "torch", "--saveEngine", str(tmp_path / "m.pt2"))
    assert proc.returncode == 2 and "MODULE:FACTORY" in proc.stderr
    proc = call_cli("build", "tests.models.tiny:make", "--engine", "torch", "--saveEngine", str(tmp_path / "m.plan"))
    assert proc.returncode == 2 and ".pt2" in proc.stderr


def test_aoti_refuses_size_one_dynamic_example(tmp_path):
    with pytest.raises(UsageError, match="size >= 2"):
        build_aoti(tiny_module(), [torch.randn(1, 3, 16, 16)], tmp_path / "x.pt2", dynamic={"x": {0: "batch"}}, device="cpu")


class Block(torch.nn.Module):
    """A residual block like ResNet's: conv-bn-relu, conv-bn, add, relu."""

    def __init__(self):
        super().__init__()
        self.conv1, self.bn1 = torch.nn.Conv2d(4, 4, 3, padding=1, bias=False), torch.nn.BatchNorm2d(4)
        self.conv2, self.bn2 = torch.nn.Conv2d(4, 4, 3, padding=1, bias=False), torch.nn.BatchNorm2d(4)
        self.relu = torch.nn.ReLU()

    def forward(self, x):
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        out += x
        return self.relu(out)


def test_fuse_folds_batch_norms_and_fuses_activations():
    from trtflow.backends.torch.fuse import fuse_conv_bn_act

    gm = fuse_conv_bn_act(Block())
    targets = [n.target for n in gm.graph.nodes if n.op in ("call_function", "call_module")]
    assert targets == [torch.cudnn_convolution_relu, torch.cudnn_convolution_add_relu]
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in gm.modules())
    with pytest.raises(UsageError, match="fuse=True needs a CUDA device"):
        TorchEngine(Block(), [torch.randn(1, 4, 8, 8)], fuse=True, device="cpu")


def test_fuse_keeps_relu_of_grouped_convs_outside_cudnn():
    """Depthwise and grouped convolutions get their batch norm folded but keep their ReLU as its own
    op (cuDNN's fused conv + ReLU kernels are slow on them); the ungrouped one after them is fused."""
    from trtflow.backends.torch.fuse import fuse_conv_bn_act

    nn = torch.nn
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(4, 4, 3, padding=1, groups=4, bias=False), nn.BatchNorm2d(4), nn.ReLU(),
                          nn.Conv2d(4, 8, 3, padding=1, groups=2, bias=False), nn.BatchNorm2d(8), nn.ReLU(),
                          nn.Conv2d(8, 8, 1, bias=False), nn.BatchNorm2d(8), nn.ReLU()).eval()
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-1, 1), m.running_var.uniform_(0.5, 2)
    gm = fuse_conv_bn_act(model)
    kinds = [type(gm.get_submodule(n.target)).__name__ if n.op == "call_module" else n.target
             for n in gm.graph.nodes if n.op in ("call_function", "call_module")]
    assert kinds == ["Conv2d", "ReLU", "Conv2d", "ReLU", torch.cudnn_convolution_relu]
    assert not any(isinstance(m, nn.BatchNorm2d) for m in gm.modules())
    x = torch.randn(2, 4, 8, 8)
    head = nn.Sequential(*list(gm.children())[:4])  # the two grouped convs (BN folded) and their ReLUs
    torch.testing.assert_close(head(x), model[:6](x), rtol=1e-4, atol=1e-5)


def test_aoti_export_takes_the_compute_dtype():
    """A reduced-precision package is exported on inputs of its own dtype (the engine's default keeps
    FP32 I/O, which would meet half weights inside the exported module)."""
    import torch

    from trtflow.backends.torch.package import _export

    engine = TorchEngine(tiny_module(), {"x": torch.randn(2, 3, 16, 16)}, dtype="bf16", keep_io_types=False,
                         dynamic={"x": {0: "batch"}}, max_shapes={"x": (8, 3, 16, 16)}, device="cpu")
    program = _export(torch, tiny_module(), engine)
    placeholder = next(n for n in program.graph.nodes if n.op == "placeholder" and n.name == "x")
    assert placeholder.meta["val"].dtype == torch.bfloat16
    out = program.module()(x=torch.randn(3, 3, 16, 16, dtype=torch.bfloat16))
    out = out[0] if isinstance(out, (tuple, list)) else out
    assert out.dtype == torch.bfloat16 and out.shape[0] == 3
    with pytest.raises(trtflow.errors.UsageError, match="keep_io_types"):
        build_aoti(tiny_module(), {"x": torch.randn(2, 3, 16, 16)}, "unused.pt2", dtype="bf16", keep_io_types=True,
                   device="cpu")


def test_reduced_precision_leaves_the_callers_module_in_its_own_dtype():
    model = tiny_module()
    x = torch.randn(2, 3, 16, 16)
    want = model(x)[0].detach()
    with TorchEngine(model, [x], dtype="bf16", device="cpu"):
        pass
    assert all(p.dtype == torch.float32 for p in model.parameters())
    assert torch.equal(model(x)[0].detach(), want)  # the caller's FP32 model still answers in FP32


def test_close_releases_the_engines_module_and_examples():
    import gc
    import weakref

    engine = TorchEngine(tiny_module(), [torch.randn(2, 3, 16, 16)], dtype="bf16", device="cpu")
    module, example = weakref.ref(engine.module), weakref.ref(engine.example_inputs["x"])
    engine.close()
    gc.collect()
    assert module() is None and example() is None  # the engine object may live on (a caller's variable)


def test_outputs_that_are_not_tensors_are_a_model_load_error():
    class Nested(torch.nn.Module):
        def forward(self, x):
            return x * 2, (x, x)

    class WithNone(torch.nn.Module):
        def forward(self, x):
            return {"y": x * 2, "aux": None}

    for model, what in ((Nested(), "output_1"), (WithNone(), "aux")):
        with pytest.raises(ModelLoadError, match=f"'{what}' is a"):
            TorchEngine(model, [torch.randn(2, 3)], device="cpu")


def test_fp32_engine_of_a_reduced_precision_module_computes_in_fp32():
    half = tiny_module().bfloat16()
    x = torch.randn(2, 3, 16, 16)
    with TorchEngine(half, [x], device="cpu") as engine:  # dtype="fp32": the weights too
        out = engine.infer({"x": x.numpy()})["output_0"]
    want = tiny_module().bfloat16().float()(x)[0].detach().numpy()
    assert out.dtype == np.float32 and np.abs(out - want).max() < 1e-5
    assert all(p.dtype == torch.bfloat16 for p in half.parameters())  # the caller's module as it was


def _state(model) -> dict:
    """Everything of a module that loading it into an engine must leave as it was."""
    tensors = {k: (v.clone(), v.device, v.dtype, v.stride()) for k, v in model.state_dict().items()}
    return {"tensors": tensors, "training": [m.training for m in model.modules()],
            "children": [type(m) for m in model.modules()]}


def _assert_same_state(before: dict, after: dict) -> None:
    assert before["training"] == after["training"] and before["children"] == after["children"]
    assert list(before["tensors"]) == list(after["tensors"])
    for key, (value, device, dtype, stride) in before["tensors"].items():
        now, now_device, now_dtype, now_stride = after["tensors"][key]
        assert (now_device, now_dtype, now_stride) == (device, dtype, stride), key
        assert torch.equal(now, value), key


@pytest.mark.parametrize("options", [{}, {"channels_last": True}, {"dtype": "bf16"}])
def test_loading_leaves_the_callers_module_as_it_was(options):
    """A module in training mode, loaded with the defaults, channels-last or cast, keeps its mode,
    parameters, buffers and their layout; the engine runs in eval mode on its own copy."""
    nn = torch.nn
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1, bias=False), nn.BatchNorm2d(4), nn.ReLU(),
                          nn.Dropout(0.5)).train()
    before = _state(model)
    x = torch.randn(2, 3, 8, 8)
    with TorchEngine(model, [x], device="cpu", **options) as engine:
        assert not any(m.training for m in engine.module.modules())
        out = engine.infer({"input": x.numpy()})["output"]
    _assert_same_state(before, _state(model))
    with torch.no_grad():
        want = model.eval()(x).numpy()
    assert np.allclose(out, want, atol=0.05 if options.get("dtype") else 1e-5)  # eval mode: no dropout


def test_fusing_leaves_the_callers_module_as_it_was():
    """fuse=True folds batch norms and gives bias-free convolutions a zero bias on the engine's copy
    (fusion itself runs on CUDA only; placing the module is what touches it)."""
    from trtflow.backends.torch.runner import _place

    nn = torch.nn
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1, bias=False), nn.BatchNorm2d(4), nn.ReLU(),
                          nn.Conv2d(4, 4, 3, padding=1, bias=False), nn.ReLU()).train()
    before = _state(model)
    fused, _ = _place(torch, model, [torch.randn(1, 3, 8, 8)], torch.device("cpu"), "fp32", False, fuse=True)
    assert [n.target for n in fused.graph.nodes if n.op == "call_function"] == [torch.cudnn_convolution_relu] * 2
    _assert_same_state(before, _state(model))
    assert model[3].bias is None


@pytest.mark.parametrize("name, what, engine", [("m.onnx", "an ONNX model", "ort"), ("m.plan", "a TensorRT plan", "tensorrt")])
def test_an_onnx_model_or_a_plan_on_the_torch_engine_names_the_engine_that_runs_it(tiny_onnx, tmp_path, name, what, engine):
    """trtflow.load("m.onnx", engine="torch") said only "cannot read m.onnx as an AOTInductor package (a zip
    archive): File is not a zip file"."""
    path = tmp_path / name
    path.write_bytes(open(tiny_onnx, "rb").read())
    with pytest.raises(UsageError, match=f"is {what}: give --engine {engine} .*engine=\"{engine}\"") as info:
        trtflow.load(path, engine="torch")
    assert "zip" not in str(info.value)


class Bottleneck(torch.nn.Module):
    """ResNet's downsampling block: its residual is a conv + BN of its own."""

    def __init__(self):
        super().__init__()
        nn = torch.nn
        self.conv1, self.bn1 = nn.Conv2d(4, 6, 3, padding=1, bias=False), nn.BatchNorm2d(6)
        self.conv2, self.bn2 = nn.Conv2d(6, 8, 1, bias=False), nn.BatchNorm2d(8)
        self.down, self.down_bn = nn.Conv2d(4, 8, 1, bias=False), nn.BatchNorm2d(8)
        self.relu = nn.ReLU()
        for m in self.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-1, 1), m.running_var.uniform_(0.5, 2), m.bias.data.uniform_(-1, 1)

    def forward(self, x):
        out = self.bn2(self.conv2(self.relu(self.bn1(self.conv1(x)))))
        return self.relu(out + self.down_bn(self.down(x)))


def test_fuse_moves_the_residual_convolutions_bias_into_the_fused_one():
    """Inductor runs a convolution's bias as a kernel of its own; the downsample branch's bias (its
    folded batch norm) is added by the fused conv + add + ReLU instead, with the same result."""
    from trtflow.backends.torch.fuse import fuse_conv_bn_act

    torch.manual_seed(0)
    model = Bottleneck().eval()
    x = torch.randn(2, 4, 8, 8)
    with torch.no_grad():
        mid = model.relu(model.bn1(model.conv1(x)))
        want = model.bn2(model.conv2(mid)) + model.down_bn(model.down(x))
    gm = fuse_conv_bn_act(model)
    fused = [n for n in gm.graph.nodes if n.target is torch.cudnn_convolution_add_relu]
    assert len(fused) == 1
    conv2, down = gm.get_submodule("conv2"), gm.get_submodule("down")
    assert down.bias is None and conv2.bias is not None
    with torch.no_grad():
        got = conv2(mid) + down(x)  # what the fused op adds before its ReLU
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)


def test_fuse_pads_three_input_channels_to_four_only_when_asked():
    """Only a fused conv + ReLU on 3 channels (ResNet's stem) is padded; an unfused one (MobileNetV3's
    hardswish stem) ran slower padded and keeps 3."""
    from trtflow.backends.torch.fuse import fuse_conv_bn_act

    nn = torch.nn
    torch.manual_seed(0)
    make = lambda: nn.Sequential(nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU(),
                                 nn.Conv2d(8, 8, 1)).eval()
    model = make()
    x = torch.randn(2, 3, 8, 8)
    with torch.no_grad():
        want = model[1](model[0](x))
    plain = fuse_conv_bn_act(make())
    assert torch.nn.functional.pad not in [n.target for n in plain.graph.nodes]
    assert plain.get_submodule("0").weight.shape[1] == 3
    gm = fuse_conv_bn_act(model, pad_channels=True)
    pads = [n for n in gm.graph.nodes if n.target is torch.nn.functional.pad]
    assert len(pads) == 1 and pads[0].args[0].op == "placeholder"  # only the 3-channel convolution
    conv = gm.get_submodule("0")
    assert conv.weight.shape[1] == 4 and conv.in_channels == 4 and not conv.weight[:, 3].any()
    assert gm.get_submodule("3").weight.shape[1] == 8
    with torch.no_grad():
        got = conv(torch.nn.functional.pad(x, (0, 0, 0, 0, 0, 1)))
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)
    hardswish = fuse_conv_bn_act(nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.Hardswish()).eval(),
                                 pad_channels=True)
    assert torch.nn.functional.pad not in [n.target for n in hardswish.graph.nodes]
    assert hardswish.get_submodule("0").in_channels == 3


class _Shared(torch.nn.Module):
    """Modules used twice, parameters read by the forward and tied, adds the fusions must not take."""

    def __init__(self, case: str):
        super().__init__()
        nn = torch.nn
        self.case = case
        self.stem, self.c, self.down = nn.Conv2d(3, 4, 3, padding=1), nn.Conv2d(4, 4, 1), nn.Conv2d(4, 4, 1)
        self.other = nn.Conv2d(4, 4, 1)
        self.other.bias = self.c.bias  # tied

    def forward(self, x, y):
        relu = torch.relu
        if self.case == "stem twice":  # one stem on two images
            return relu(self.stem(x)) + relu(self.stem(y))
        x = relu(self.stem(x))
        if self.case == "main twice":
            return relu(self.c(x)) + relu(self.c(x) + self.down(x))
        if self.case == "residual read":
            return relu(self.c(x) + self.down(x)) + self.down.bias.view(1, -1, 1, 1)
        if self.case == "tied":
            return relu(self.c(x) + self.down(x)) + self.other(x)
        if self.case == "y + y":
            y = self.c(x)
            return relu(y + y)
        return relu(self.c(x) + 1.0)


@pytest.mark.parametrize("case", ["stem twice", "main twice", "residual read", "tied", "y + y", "plus a number"])
def test_fuse_leaves_shared_and_read_modules_and_odd_adds_alone(case):
    """The bias move and the padding change modules: only those the graph uses once. A tied bias keeps
    its values; ``y + y`` and ``conv + 1.0`` are no conv + residual add (fusing them failed)."""
    from trtflow.backends.torch.fuse import fuse_conv_bn_act

    torch.manual_seed(0)
    model = _Shared(case).eval()
    tied, down_bias = model.c.bias.detach().clone(), model.down.bias.detach().clone()
    gm = fuse_conv_bn_act(model, pad_channels=True)
    targets = [n.target for n in gm.graph.nodes if n.op == "call_function"]
    assert torch.equal(model.other.bias, tied)  # the tied parameter itself never changes
    if case == "stem twice":
        assert gm.get_submodule("stem").in_channels == 3 and torch.nn.functional.pad not in targets
        return
    assert gm.get_submodule("stem").in_channels == 4  # used once: padded
    if case in ("main twice", "residual read"):
        assert gm.get_submodule("down").bias is not None
    if case == "tied":
        assert gm.get_submodule("down").bias is None
        torch.testing.assert_close(gm.get_submodule("c").bias, tied + down_bias)  # c's new one: the sum
    if case in ("y + y", "plus a number"):
        assert torch.cudnn_convolution_add_relu not in targets
