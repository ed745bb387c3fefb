"""simplify: onnxslim's passes and its folding size limit."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

from trtflow import edits
from trtflow.edits.simplify import SimplifyOptions
from trtflow.errors import UsageError


def _constant_sum_model():
    """y = x + (a + b): a + b (8 bytes) is constant."""
    nodes = [helper.make_node("Add", ["a", "b"], ["ab"]), helper.make_node("Add", ["x", "ab"], ["y"])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])],
                              [numpy_helper.from_array(np.array([1, 2], np.float32), "a"),
                               numpy_helper.from_array(np.array([3, 4], np.float32), "b")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_size_threshold_keeps_larger_constants_unfolded():
    _, report = edits.apply("simplify", _constant_sum_model(), size_threshold=4)
    assert report["details"]["nodes_after"] == 2
    _, report = edits.apply("simplify", _constant_sum_model(), size_threshold=8)
    assert report["details"]["nodes_after"] == 1


def test_size_threshold_0_is_refused_naming_skip_constant_folding():
    """onnxslim reads 0 as no limit: --size-threshold 0 folded every constant."""
    with pytest.raises(UsageError, match="--skip constant_folding"):
        SimplifyOptions(size_threshold=0)
