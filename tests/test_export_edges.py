"""trtflow.export off the common path: modules that change their inputs in place, the tolerance
named in a verification failure, and example inputs on a CUDA device."""

from __future__ import annotations

import pytest

from trtflow.errors import ExportError, MismatchError

torch = pytest.importorskip("torch")

from trtflow.export import from_torch  # noqa: E402
from trtflow.export.verify import resized_inputs  # noqa: E402


class _Scales(torch.nn.Module):
    """Normalizes its input in place (``x /= 255`` as many detector wrappers do)."""

    def forward(self, x):
        x.div_(255.0)
        return x + 1


def test_a_module_that_changes_its_input_in_place_verifies_and_leaves_the_example_alone(tmp_path):
    x = torch.full((2, 3), 255.0)
    result = from_torch(_Scales(), x, tmp_path / "inplace.onnx", exporter="torchscript", dynamic={"x": {0: "batch"}})
    assert result.verified, result.to_dict()
    assert torch.equal(x, torch.full((2, 3), 255.0))  # the caller's example is not divided again and again


class _Two(torch.nn.Module):
    def forward(self, x):
        return {"a": x * 2, "b": x * 3}


def test_a_mismatch_names_the_tolerance_each_failing_output_was_judged_by(tmp_path, monkeypatch):
    import trtflow.export.verify as verify

    real = verify.torch_outputs

    def off_by_one(module, inputs, output_names):  # PyTorch's "b" moves by 1: beyond b's atol of 0.25
        ref = real(module, inputs, output_names)
        return {**ref, "b": ref["b"] + 1.0}

    monkeypatch.setattr(verify, "torch_outputs", off_by_one)
    with pytest.raises(MismatchError) as info:
        from_torch(_Two(), torch.ones(2, 3), tmp_path / "two.onnx", exporter="torchscript", per_output_atol={"b": 0.25})
    assert "atol=0.25" in str(info.value), str(info.value)


@pytest.mark.gpu
def test_resized_inputs_stay_on_the_examples_device():
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device")
    x = torch.randn(2, 3, device="cuda")
    out = resized_inputs({"x": x}, {"x": {0: "batch"}})
    assert out["x"].device == x.device and out["x"].shape == (4, 3)


def test_each_submodules_mode_is_restored(tmp_path):
    model = torch.nn.Sequential(torch.nn.Linear(3, 3), torch.nn.BatchNorm1d(3))
    model.train()
    model[1].eval()  # a frozen batch norm inside a model being trained
    from_torch(model, torch.randn(2, 3), tmp_path / "m.onnx", exporter="torchscript", verify=False)
    assert model.training and model[0].training and not model[1].training


class _FixedRows(torch.nn.Module):
    """Its output has as many rows as the example had: traced, the count becomes a constant."""

    def forward(self, x):
        return torch.zeros(int(x.shape[0]), 2) + x.sum()


def test_an_output_shape_that_differs_is_not_sent_to_the_tolerances(tmp_path):
    with pytest.raises(MismatchError) as info:
        from_torch(_FixedRows(), torch.ones(2, 3), tmp_path / "rows.onnx", exporter="torchscript",
                   dynamic={"x": {0: "batch"}})
    text = str(info.value)
    assert "shape" in text and "--atol" not in text and "--no-verify" in text, text


class _SumAndScale(torch.nn.Module):
    def forward(self, x):
        return x.sum(0), x * 2  # output_0 is (3,) at every batch size; output_1 follows the batch


def test_output_axes_asked_to_be_dynamic_are_checked(tmp_path):
    from trtflow.errors import ExportError, UsageError

    ok = from_torch(_SumAndScale(), torch.ones(2, 3), tmp_path / "ok.onnx", exporter="torchscript",
                    dynamic={"x": {0: "batch"}, "output_1": {0: "batch"}})
    assert ok.outputs[1].shape == ("batch", 3)
    with pytest.raises(ExportError, match="axis 0 of output 'output_0'"):
        from_torch(_SumAndScale(), torch.ones(2, 3), tmp_path / "fixed.onnx", exporter="torchscript",
                   dynamic={"x": {0: "batch"}, "output_0": {0: "n"}})
    with pytest.raises(UsageError, match="do not exist"):
        from_torch(_SumAndScale(), torch.ones(2, 3), tmp_path / "rank.onnx", exporter="torchscript",
                   dynamic={"x": {0: "batch"}, "output_1": {5: "k"}})


@pytest.mark.parametrize("names,message", [({"output_names": ["a", "a"]}, "output names must be unique"),
                                           ({"input_names": ["x"], "output_names": ["y", "x"]}, "both an input")])
def test_output_names_repeated_or_taken_by_an_input_are_refused(tmp_path, names, message):
    from trtflow.errors import UsageError

    with pytest.raises(UsageError, match=message):
        from_torch(_Two(), torch.ones(2, 3), tmp_path / "names.onnx", exporter="torchscript", **names)
    assert not (tmp_path / "names.onnx").exists()


@pytest.mark.parametrize("fields,message", [
    ({"opset": "abc"}, "opset"), ({"opset": None}, "opset"), ({"opset": "18"}, "opset"), ({"opset": 17.5}, "opset"),
    ({"opset": True}, "opset"), ({"verify": "no"}, "verify"), ({"dynamic": [("x", 0)]}, "dynamic"),
    ({"dynamic": {"x": [0]}}, "dynamic"), ({"input_names": 3}, "input_names"), ({"output_names": [1, 2]}, "output_names"),
    ({"per_output_atol": [0.1]}, "per_output_atol"), ({"per_output_rtol": 0.1}, "per_output_rtol"),
    ({"min_agreement": 2}, "min_agreement"), ({"min_agreement": "all"}, "min_agreement"), ({"atol": True}, "tolerance"),
    ({"dynamic": {"x": {True: "batch"}}}, "dynamic axis"), ({"input_names": ["a", ""]}, "input_names"),
])
def test_export_config_refuses_values_of_the_wrong_type(fields, message):
    from trtflow.errors import UsageError
    from trtflow.export import ExportConfig

    with pytest.raises(UsageError, match=message):
        ExportConfig(**fields)


def test_export_config_names_given_as_one_string_are_split_on_commas():
    from trtflow.export import ExportConfig

    config = ExportConfig(input_names="images", output_names="boxes, scores")
    assert (config.input_names, config.output_names) == (("images",), ("boxes", "scores"))


@pytest.mark.parametrize("module", [lambda x: x * 2, "mypkg.models:make_model", None])
def test_a_module_that_is_no_torch_module_is_refused(tmp_path, module):
    """A function, a MODULE:FACTORY string or None crashed with a raw AttributeError ('no attribute eval')."""
    from trtflow.errors import UsageError

    with pytest.raises(UsageError, match="torch.nn.Module"):
        from_torch(module, torch.ones(2), tmp_path / "m.onnx")


@pytest.mark.parametrize("out", [None, 3])
def test_an_output_path_that_is_no_path_is_refused(out):
    from trtflow.errors import UsageError

    with pytest.raises(UsageError, match="out"):
        from_torch(_Two(), torch.ones(2, 3), out)


class _Scaled(torch.nn.Module):
    """Has a parameter named ``scale``: the dynamo exporter names its initializer after it."""

    def __init__(self):
        super().__init__()
        self.scale = torch.nn.Parameter(torch.tensor([2.0, 3.0, 4.0]))

    def forward(self, x):
        return x * self.scale, x.sum(1)


@pytest.mark.parametrize("names", [{"output_names": ["y", "scale"]}, {"input_names": ["scale"]}])
def test_a_name_taken_by_a_parameter_falls_back_to_torchscript_in_auto(tmp_path, names):
    pytest.importorskip("onnxscript")
    result = from_torch(_Scaled(), torch.randn(2, 3), tmp_path / "scaled.onnx", **names)
    assert result.verified and result.exporter == "torchscript", result.to_dict()
    assert any("dynamo" in n and "scale" in n for n in result.notes), result.notes
    wanted = names.get("input_names", ["x"]) + names.get("output_names", ["output_0", "output_1"])
    assert [s.name for s in result.inputs + result.outputs] == wanted


def test_a_name_taken_by_a_parameter_is_named_when_dynamo_was_asked_for(tmp_path):
    pytest.importorskip("onnxscript")
    with pytest.raises(ExportError, match="'scale'.*(parameter|buffer|rename)"):
        from_torch(_Scaled(), torch.randn(2, 3), tmp_path / "scaled.onnx", exporter="dynamo", input_names=["scale"])


class _Nothing(torch.nn.Module):
    def forward(self, x):
        return {"none": ()}


def test_a_module_that_returns_no_tensor_is_refused_before_exporting(tmp_path):
    with pytest.raises(ExportError, match="returned no tensor") as info:
        from_torch(_Nothing(), torch.randn(2, 3), tmp_path / "nothing.onnx", exporter="torchscript")
    assert "not an ONNX file" not in str(info.value)
    assert not (tmp_path / "nothing.onnx").exists()


@pytest.mark.parametrize("where", ["a_file/m.onnx", "a_file/deeper/m.onnx", "a_folder"])
def test_an_output_path_that_cannot_be_written_is_refused_before_exporting(tmp_path, where):
    from trtflow.errors import UsageError

    (tmp_path / "a_file").write_text("not a folder")
    (tmp_path / "a_folder").mkdir()
    with pytest.raises(UsageError, match="a_f"):
        from_torch(_Scales(), torch.ones(2, 3), tmp_path / where, exporter="torchscript")
    assert (tmp_path / "a_file").read_text() == "not a folder"


def test_a_bfloat16_export_that_onnx_runtime_cannot_verify_says_it_was_written_and_how_to_skip(tmp_path):
    """Verification of a model with bfloat16 inputs and outputs failed with ONNX Runtime's refusal alone, as if
    the export had failed; the file was written and --no-verify skips the check."""
    from trtflow.errors import ModelLoadError

    out = tmp_path / "bf16.onnx"
    with pytest.raises(ModelLoadError, match="bfloat16") as info:
        from_torch(torch.nn.Linear(4, 2).to(torch.bfloat16), torch.ones(1, 4, dtype=torch.bfloat16), out,
                   exporter="torchscript")
    assert out.is_file() and f"{out} was written" in str(info.value)
    assert "--no-verify" in str(info.value) and "verify=False" in str(info.value)
    assert not from_torch(torch.nn.Linear(4, 2).to(torch.bfloat16), torch.ones(1, 4, dtype=torch.bfloat16), out,
                          exporter="torchscript", verify=False).verification


@pytest.mark.parametrize("fields", [{"per_output_atol": [0.1]}, {"per_output_rtol": {"y": -1}}, {"min_agreement": 2},
                                    {"min_agreement": "all"}, {"atol": True}, {"per_output_atol": {0: 0.1}}])
def test_export_config_refuses_tolerances_as_tolerances_does(fields):
    """ExportConfig repeated Tolerances' checks with messages of its own (and took per-output tolerances
    keyed by numbers, refused only when verifying): it is refused at once, in Tolerances' words."""
    from trtflow.compare import Tolerances
    from trtflow.errors import UsageError
    from trtflow.export import ExportConfig

    with pytest.raises(UsageError) as config_error:
        ExportConfig(**fields)
    with pytest.raises(UsageError) as tolerances_error:
        Tolerances(**{"atol": ExportConfig.atol, "rtol": ExportConfig.rtol, **fields})
    assert str(config_error.value) == str(tolerances_error.value)


def test_a_big_endian_input_file_is_an_example_input(tmp_path):
    """An --input file saved big-endian ('>f4') ended the export in an internal error (torch takes native
    byte order only): the file's values are the example."""
    import numpy as np

    pytest.importorskip("torch")
    from tests.conftest import call_cli

    np.save(tmp_path / "x.npy", np.random.default_rng(0).standard_normal((2, 3, 16, 16)).astype(">f4"))
    proc = call_cli("export", "tests.models.tiny:make", "--input", f"x={tmp_path / 'x.npy'}",
                    "-o", str(tmp_path / "m.onnx"))
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "m.onnx").exists()
