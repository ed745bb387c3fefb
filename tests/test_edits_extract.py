"""extract: cutting at one output of a multi-output node keeps its other outputs in place."""

import numpy as np
from onnx import TensorProto, helper

from trtflow.edits.extract import ExtractOptions, extract_subgraph
from trtflow.edits.verify import run_ort


def test_cut_at_one_split_output_keeps_the_other_wired():
    """--inputs a where Split(x) -> a, b: b took Split's first position and got a's values (or all of x)."""
    nodes = [helper.make_node("Split", ["x"], ["a", "b"], axis=0, name="split"),
             helper.make_node("Relu", ["a"], ["y"], name="r"),
             helper.make_node("Neg", ["b"], ["z"], name="n")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2]),
                               helper.make_tensor_value_info("z", TensorProto.FLOAT, [2])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    cut, _ = extract_subgraph(model, ExtractOptions(outputs=("y", "z"), inputs=("a", "x")))
    x = np.array([1.0, 2.0, 3.0, 4.0], np.float32)
    got = run_ort(cut, {"x": x, "a": np.array([5.0, 6.0], np.float32)})
    np.testing.assert_array_equal(got["z"], [-3.0, -4.0])
    np.testing.assert_array_equal(got["y"], [5.0, 6.0])


def test_verification_leaves_the_callers_model_alone(monkeypatch):
    """When shape inference fails (a model over 2 GB) it hands the model back: the probe's outputs went into it."""
    from trtflow.edits import extract
    from trtflow.edits.verify import VerifyConfig

    nodes = [helper.make_node("Relu", ["x"], ["h"]), helper.make_node("Neg", ["h"], ["y"])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    cut, _ = extract_subgraph(model, ExtractOptions(outputs=("y",), inputs=("h",)))
    monkeypatch.setattr(extract, "infer_shapes", lambda proto, strict=False: proto)
    assert extract.verify_extract(model, cut, None, VerifyConfig())["passed"]
    assert [o.name for o in model.graph.output] == ["y"]


def _reshape_by_a_runtime_shape():
    """x -> Reshape(x, s) -> r -> Relu -> y: s is an input, so inference gives r a dtype but no rank."""
    nodes = [helper.make_node("Reshape", ["x", "s"], ["r"]), helper.make_node("Relu", ["r"], ["y"])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 6]),
                                           helper.make_tensor_value_info("s", TensorProto.INT64, ["n"])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def test_a_cut_input_of_unknown_rank_is_refused_naming_it_and_shape():
    """It failed in onnx_specs, telling to run fix-shapes on a MODEL that extract had not written."""
    import pytest

    from trtflow.errors import UsageError

    with pytest.raises(UsageError, match=r"'r'.*--shape r:"):
        extract_subgraph(_reshape_by_a_runtime_shape(), ExtractOptions(outputs=("y",), inputs=("r",)))


def test_shape_gives_a_cut_input_of_unknown_rank_its_shape():
    from trtflow import edits
    from trtflow.edits.extract import verify_extract
    from trtflow.graph.io import onnx_specs

    model = _reshape_by_a_runtime_shape()
    cut, report = edits.apply("extract", model, outputs=("y",), inputs=("r",), shapes={"r": (3, 4)}, verify=False)
    assert [(s.name, s.shape) for s in onnx_specs(cut)[0]] == [("r", (3, 4))]
    assert report["details"]["inputs"] == [{"name": "r", "dtype": "float32", "shape": [3, 4]}]
    r = np.linspace(-1, 1, 12, dtype=np.float32).reshape(3, 4)
    np.testing.assert_array_equal(run_ort(cut, {"r": r})["y"], np.maximum(r, 0))
    x = np.linspace(-1, 1, 12, dtype=np.float32).reshape(2, 6)
    feeds = [("given", {"x": x, "s": np.array([3, 4], np.int64)})]
    assert verify_extract(model, cut, None, edits.VerifyConfig(), feeds)["passed"]


def test_shape_of_a_tensor_that_is_no_cut_input_of_unknown_rank_is_refused():
    import pytest

    from trtflow.errors import UsageError

    with pytest.raises(UsageError, match="not cut inputs of unknown rank"):
        extract_subgraph(_reshape_by_a_runtime_shape(), ExtractOptions(outputs=("y",), inputs=("r",),
                                                                       shapes={"r": (3, 4), "x": (2, 6)}))


def test_a_tensor_named_twice_is_refused():
    """--inputs a,a crashed in ONNX Runtime (duplicate definition of 'a'); --outputs b,b made a model with two
    outputs named 'b'."""
    import pytest

    from trtflow.errors import UsageError

    for fields in ({"outputs": "y,y"}, {"outputs": ("y",), "inputs": ("h", "h")}):
        with pytest.raises(UsageError, match="'[yh]' more than once"):
            ExtractOptions(**fields)


def test_a_shape_the_cut_tensor_does_not_have_is_named_in_the_verification():
    """The engine's feed error came out: "Resize the input to match ... --split-batches"."""
    import pytest

    from trtflow import edits
    from trtflow.edits.extract import verify_extract
    from trtflow.errors import UsageError

    model, options = _reshape_by_a_runtime_shape(), ExtractOptions(outputs=("y",), inputs=("r",), shapes={"r": (2, 6)})
    cut, _ = extract_subgraph(model, options)
    x = np.linspace(-1, 1, 12, dtype=np.float32).reshape(2, 6)
    with pytest.raises(UsageError, match=r"'r' is \(3, 4\) in the original model.*--shape r:3x4"):
        verify_extract(model, cut, options, edits.VerifyConfig(), [("given", {"x": x, "s": np.array([3, 4], np.int64)})])


def test_an_input_the_outputs_do_not_use_is_refused_naming_it():
    """--inputs h,b --outputs y where y = Neg(Relu(x)) and b feeds only z: b was dropped without a word."""
    import pytest

    from trtflow.errors import UsageError

    nodes = [helper.make_node("Relu", ["x"], ["h"]), helper.make_node("Neg", ["h"], ["y"]),
             helper.make_node("Add", ["x", "b"], ["z"])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4]),
                                           helper.make_tensor_value_info("b", TensorProto.FLOAT, [4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4]),
                               helper.make_tensor_value_info("z", TensorProto.FLOAT, [4])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    with pytest.raises(UsageError, match=r"\['b'\].*remove"):
        extract_subgraph(model, ExtractOptions(outputs=("y",), inputs=("h", "b")))
    cut, report = extract_subgraph(model, ExtractOptions(outputs=("y", "z"), inputs=("h", "b", "x")))
    assert [s["name"] for s in report["inputs"]] == ["h", "b", "x"]
    cut, report = extract_subgraph(model, ExtractOptions(outputs=("y",)))  # the model's own inputs: b unused, left out
    assert [s["name"] for s in report["inputs"]] == ["x"]
