"""trtflow.edits.verify: the before/after comparison fails when it must."""

import numpy as np
import pytest
from onnx import TensorProto, helper

from trtflow.edits.verify import VerifyConfig, verify_edit
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
