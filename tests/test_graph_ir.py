"""trtflow.graph.ir: shape inference that still runs on models above protobuf's 2 GB limit."""

import tempfile

import numpy as np
import pytest


def _weighted_model():
    from onnx import TensorProto, helper, numpy_helper

    w = numpy_helper.from_array(np.arange(4096, dtype=np.float32).reshape(64, 64), "w")
    flat = numpy_helper.from_array(np.array([64], dtype=np.int64), "flat")  # small: data propagation reads it
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["t"]), helper.make_node("Reshape", ["t", "flat"], ["y"])], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 64])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], initializer=[w, flat])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


@pytest.fixture
def two_gb_at_1000(monkeypatch, tmp_path):
    """Lower the 2 GB limit to 1,000 bytes, and make ONNX's in-memory inference refuse a larger model as
    protobuf refuses one above 2 GB (it cannot serialize it); temporary files go to ``tmp_path``."""
    import onnx

    from trtflow.graph import io

    monkeypatch.setattr(io, "TWO_GB", 1000)
    real = onnx.shape_inference.infer_shapes

    def in_memory(model, *args, **kwargs):
        size = len(model) if isinstance(model, bytes) else model.ByteSize()
        if size >= io.TWO_GB:
            raise ValueError(f"Message onnx.ModelProto exceeds maximum protobuf size of 2GB: {size}")
        return real(model, *args, **kwargs)

    monkeypatch.setattr(onnx.shape_inference, "infer_shapes", in_memory)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    return tmp_path


def _dims(value):
    return [d.dim_value for d in value.type.tensor_type.shape.dim]


@pytest.mark.parametrize("strict", [False, True])
def test_shapes_are_inferred_above_2gb_through_a_file(two_gb_at_1000, strict):
    """Above 2 GB inference failed inside protobuf and the model came back without shapes (logged at debug
    level only); edits then saw untyped tensors."""
    from onnx import numpy_helper

    from trtflow.graph.ir import infer_shapes

    model = _weighted_model()
    assert model.ByteSize() > 1000
    out = infer_shapes(model, strict=strict)
    assert out is not model
    assert {v.name: _dims(v) for v in out.graph.value_info} == {"t": [1, 64]}
    assert _dims(out.graph.output[0]) == [64]  # data propagation read the small shape constant
    for proto in (out, model):  # the weights are in the result, and the caller's model keeps its own
        w = next(i for i in proto.graph.initializer if i.name == "w")
        np.testing.assert_array_equal(numpy_helper.to_array(w).ravel(), np.arange(4096))
    assert list(two_gb_at_1000.iterdir()) == []  # no temporary file is left behind


def test_a_strict_failure_above_2gb_names_onnx_reason(two_gb_at_1000):
    from onnx import TensorProto, helper

    from trtflow.errors import GraphError
    from trtflow.graph.ir import infer_shapes

    model = _weighted_model()
    model.graph.value_info.append(helper.make_tensor_value_info("t", TensorProto.FLOAT, [1, 63]))
    with pytest.raises(GraphError, match="shape inference failed"):
        infer_shapes(model, strict=True)
    assert list(two_gb_at_1000.iterdir()) == []


@pytest.mark.parametrize("strict", [False, True])
def test_no_room_for_the_temporary_copy_leaves_the_model_whole(two_gb_at_1000, monkeypatch, strict):
    """The temporary copy failing part way (a full TMPDIR) returned the caller's model with its weights
    written out to the deleted folder."""
    import onnx.external_data_helper as edh
    from onnx import numpy_helper

    from trtflow.errors import GraphError
    from trtflow.graph.ir import infer_shapes

    def no_room(tensor, base_path):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(edh, "save_external_data", no_room)
    model = _weighted_model()
    if strict:
        with pytest.raises(GraphError, match="set TMPDIR"):
            infer_shapes(model, strict=True)
    else:
        assert infer_shapes(model) is model
    w = next(i for i in model.graph.initializer if i.name == "w")
    np.testing.assert_array_equal(numpy_helper.to_array(w).ravel(), np.arange(4096))
    assert list(two_gb_at_1000.iterdir()) == []


def test_export_infers_shapes_above_2gb_and_skips_only_the_checker(two_gb_at_1000, caplog):
    """export skipped shape inference above 2 GB (with the checker); inference now runs on a file."""
    from trtflow.export.pipeline import _infer_and_check

    out = _infer_and_check(_weighted_model())
    assert {v.name: _dims(v) for v in out.graph.value_info} == {"t": [1, 64]}
    assert "the ONNX checker is skipped" in caplog.text
