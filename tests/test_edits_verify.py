"""trtflow.edits.verify: the before/after comparison fails when it must."""

import numpy as np
import pytest
from onnx import TensorProto, helper

from trtflow.edits.verify import DEFAULT_ATOL, DEFAULT_RTOL, VerifyConfig, verify_edit
from trtflow.errors import MismatchError


def _model(outputs):
    nodes = [helper.make_node("Relu", ["x"], ["a"]), helper.make_node("Neg", ["x"], ["b"])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3])],
                              [helper.make_tensor_value_info(n, TensorProto.FLOAT, [2, 3]) for n in outputs])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def test_an_edit_that_drops_an_output_fails_verification():
    with pytest.raises(MismatchError) as info:
        verify_edit(_model(["a", "b"]), _model(["a"]), VerifyConfig())
    assert "b" in str(info.value) and "missing" in str(info.value)


def test_same_outputs_pass():
    result = verify_edit(_model(["a", "b"]), _model(["a", "b"]), VerifyConfig())
    assert result["passed"] and set(result["max_abs"]) == {"a", "b"}
    assert np.isfinite(result["max_abs"]["a"])


@pytest.mark.parametrize("suffix", [".npz", ".npz:arr", ".NPY"])
def test_a_given_npz_or_uppercase_npy_fixes_its_dynamic_inputs_shape(tmp_path, suffix):
    """Only a file ending in lowercase .npy sized a dynamic input: a .npz was refused asking for --shapes."""
    from trtflow.edits.verify import build_feeds

    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["b", "n"])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["b", "n"])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    x = np.arange(10, dtype=np.float32).reshape(2, 5)
    if suffix == ".NPY":
        np.save(tmp_path / "x.npy", x)
        (tmp_path / "x.npy").rename(tmp_path / "x.NPY")
        given = str(tmp_path / "x.NPY")
    else:
        np.savez(tmp_path / "x.npz", x=x, arr=x)
        given = str(tmp_path / "x") + suffix
    feeds = dict(build_feeds(model, None, VerifyConfig(inputs={"x": given})))
    np.testing.assert_array_equal(feeds["given"]["x"], x)
    assert feeds["random(seed=0)"]["x"].shape == (2, 5)


@pytest.mark.parametrize("fields", [{"per_output_atol": [0.1]}, {"per_output_rtol": {"b": -1}}, {"min_agreement": 2},
                                    {"min_agreement": "all"}, {"per_output_atol": {0: 0.1}}])
def test_verify_config_refuses_tolerances_as_tolerances_does(fields):
    """VerifyConfig(per_output_atol=[0.1]) was accepted and its .tolerances raised TypeError later;
    min_agreement=2 was refused only when an edit verified. It is refused at once, in Tolerances' words."""
    from trtflow.compare import Tolerances
    from trtflow.errors import UsageError

    with pytest.raises(UsageError) as config_error:
        VerifyConfig(**fields)
    with pytest.raises(UsageError) as tolerances_error:
        Tolerances(**{"atol": DEFAULT_ATOL, "rtol": DEFAULT_RTOL, **fields})
    assert str(config_error.value) == str(tolerances_error.value)
    assert VerifyConfig(min_agreement=0.5, per_output_atol={"b": 0.1}).tolerances.for_output("b") == (0.1, 1e-4)
