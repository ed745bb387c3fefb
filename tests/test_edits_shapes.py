"""fix-shapes on inputs the model gives no shape (unknown rank): the edit that gives them one."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from tests.conftest import call_cli
from trtflow import edits
from trtflow.edits.shapes import FixShapesOptions
from trtflow.edits.verify import run_ort
from trtflow.errors import ModelLoadError, UsageError
from trtflow.graph.io import onnx_specs


def _unranked_model(names=("x",)) -> onnx.ModelProto:
    """Relu of each input; the inputs and outputs have a dtype but no shape (unknown rank)."""
    nodes = [helper.make_node("Relu", [n], [f"{n}_y"]) for n in names]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in names],
                              [helper.make_tensor_value_info(f"{n}_y", TensorProto.FLOAT, None) for n in names])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_onnx_specs_names_fix_shapes_for_an_input_of_unknown_rank():
    with pytest.raises(ModelLoadError, match=r"trtflow surgeon fix-shapes MODEL --shape x:DIMS"):
        onnx_specs(_unranked_model())


@pytest.mark.parametrize("fold", [True, False])
def test_fix_shapes_gives_an_input_of_unknown_rank_its_shape(fold):
    """It failed with "input 'x' has rank 0", then on the unfixed model's specs; the rank is unknown, not 0."""
    model = _unranked_model()
    new, report = edits.apply("fix-shapes", model, shapes={"x": (1, 3, 4, 4)}, fold=fold)
    ins, outs = onnx_specs(new)
    assert [(s.name, s.shape) for s in ins] == [("x", (1, 3, 4, 4))]
    assert [(s.name, s.shape) for s in outs] == [("x_y", (1, 3, 4, 4))]
    assert report["details"]["inputs"] == {"x": {"before": None, "after": [1, 3, 4, 4]}}
    assert report["changes"]["inputs"]["before"] == [{"name": "x", "dtype": "float32", "shape": None}]
    assert report["verification"]["passed"] and report["verification"]["runs"][0]["outputs"][0]["shape"] == [1, 3, 4, 4]
    assert not model.graph.input[0].type.tensor_type.HasField("shape")  # the caller's model is unchanged
    x = np.linspace(-1, 1, 48, dtype=np.float32).reshape(1, 3, 4, 4)
    np.testing.assert_array_equal(run_ort(new, {"x": x})["x_y"], np.maximum(x, 0))


def test_fix_shapes_names_every_input_of_unknown_rank_left_without_a_shape():
    with pytest.raises(UsageError, match=r"'b'.*--shape b:"):
        edits.fix_shapes(_unranked_model(("a", "b")), FixShapesOptions(shapes={"a": (2, 3)}))
    new, _ = edits.fix_shapes(_unranked_model(("a", "b")), FixShapesOptions(shapes={"a": (2, 3), "b": (4,)}))
    assert [s.shape for s in onnx_specs(new)[0]] == [(2, 3), (4,)]


def test_cli_fix_shapes_of_an_input_of_unknown_rank(tmp_path):
    src, out = tmp_path / "m.onnx", tmp_path / "fixed.onnx"
    onnx.save(_unranked_model(), str(src))
    res = call_cli("surgeon", "fix-shapes", str(src), "-o", str(out), "--shape", "x:2x5", "--json")
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout)["verification"]["passed"]
    assert onnx_specs(onnx.load(str(out)))[0][0].shape == (2, 5)
    res = call_cli("surgeon", "fix-shapes", str(src), "-o", str(out), "--shape", "x:2x5")  # the tables
    assert res.returncode == 0, res.stderr
    assert "unknown rank" in res.stdout


def test_an_output_of_unknown_rank_is_reported_still_dynamic_not_a_scalar():
    """Its shape was reported [] (a scalar, in the CLI's table "()"), and it was left out of still_dynamic."""
    from onnx import numpy_helper

    f, vi = TensorProto.FLOAT, helper.make_tensor_value_info
    body = helper.make_graph(
        [helper.make_node("Identity", ["cond_in"], ["cond_out"]), helper.make_node("Concat", ["v_in", "v_in"], ["v_out"], axis=0)],
        "body", [vi("i", TensorProto.INT64, []), vi("cond_in", TensorProto.BOOL, []), vi("v_in", f, None)],
        [vi("cond_out", TensorProto.BOOL, []), vi("v_out", f, None)])
    graph = helper.make_graph([helper.make_node("Loop", ["n", "", "x"], ["v"], body=body), helper.make_node("Relu", ["v"], ["y"])],
                              "g", [vi("x", f, ["batch", 4])], [vi("y", f, None)],
                              [numpy_helper.from_array(np.array(2, np.int64), "n")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    _, report = edits.apply("fix-shapes", model, dims={"batch": 1}, verify=False)
    assert report["details"]["outputs"]["y"] == {"before": None, "after": None}
    assert report["details"]["still_dynamic"] == ["y"]
    assert report["changes"]["outputs"]["after"][0] == {"name": "y", "dtype": "float32", "shape": None}


def test_a_verification_input_of_another_shape_than_the_fixed_one_is_named():
    """The engine's feed error came out: "Resize the input to match ... --split-batches", a flag surgeon lacks."""
    vi = helper.make_tensor_value_info
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g", [vi("x", TensorProto.FLOAT, ["b", 2])],
                              [vi("y", TensorProto.FLOAT, ["b", 2])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    with pytest.raises(UsageError, match=r"'x' is \(5, 2\).*fix-shapes made it \(3, 2\)"):
        edits.apply("fix-shapes", model, dims={"b": 3}, verify_config=edits.VerifyConfig(shapes={"x": (5, 2)}))
    _, report = edits.apply("fix-shapes", model, dims={"b": 3}, verify_config=edits.VerifyConfig(shapes={"x": (3, 2)}))
    assert report["verification"]["passed"]
