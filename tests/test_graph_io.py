"""trtflow.graph.io: load errors that name a fix working for the command that shows them."""

import pytest

from trtflow.errors import ModelLoadError
from trtflow.graph.io import load_onnx


@pytest.mark.parametrize("name,head", [("m.onnx", b"ftrt"), ("m.onnx", b"vtrt"), ("m.engine", b"\x01\x02")])
def test_plan_message_names_a_fix_for_every_command(tmp_path, name, head):
    path = tmp_path / name
    path.write_bytes(head + b"\x00" * 300)
    with pytest.raises(ModelLoadError) as info:
        load_onnx(path)
    msg = str(info.value)
    assert "TensorRT" in msg
    # inspect, surgeon, build ... have no --engine flag: the message must not send them to one alone
    assert "load it with --engine tensorrt" not in msg
    assert ".onnx model it was built from" in msg
    assert 'engine="tensorrt"' in msg


def _weighted_model():
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    w = numpy_helper.from_array(np.arange(4096, dtype=np.float32).reshape(64, 64), "w")
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 64])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 64])], initializer=[w])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def test_save_with_external_data_leaves_the_proto_whole_and_the_file_fresh(tmp_path, monkeypatch):
    """Above 2 GB the weights go to OUT.onnx.data: the caller's proto keeps its weights (export checked
    its size after saving and deleted the data file it had just written), and a second save replaces
    the data file instead of appending to it."""
    import numpy as np
    from onnx import numpy_helper

    from trtflow.graph import io

    monkeypatch.setattr(io, "TWO_GB", 1000)
    model = _weighted_model()
    size = model.ByteSize()
    out = tmp_path / "m.onnx"
    io.save_onnx(model, out)
    assert model.ByteSize() >= size  # the weights are back in it (data_location now set to DEFAULT)
    np.testing.assert_array_equal(numpy_helper.to_array(model.graph.initializer[0]).ravel(), np.arange(4096))
    data = tmp_path / "m.onnx.data"
    first = data.stat().st_size
    io.save_onnx(model, out)
    assert data.stat().st_size == first
    back = load_onnx(out)
    np.testing.assert_array_equal(numpy_helper.to_array(back.graph.initializer[0]).ravel(), np.arange(4096))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx", "m.onnx.data"]


def test_a_truncated_external_data_file_is_named(tmp_path):
    """The .onnx parsed: the message blamed it ('may be truncated or another format') for its short data file."""
    import onnx

    onnx.save_model(_weighted_model(), str(tmp_path / "m.onnx"), save_as_external_data=True, location="m.onnx.data")
    (tmp_path / "m.onnx.data").write_bytes(b"\0" * 10)
    with pytest.raises(ModelLoadError) as info:
        load_onnx(tmp_path / "m.onnx")
    assert "external data" in str(info.value) and "may be truncated or another format" not in str(info.value)


def test_saving_over_a_folder_is_refused_and_leaves_no_stray_file(tmp_path):
    from trtflow.errors import UsageError
    from trtflow.graph.io import save_onnx

    (tmp_path / "out").mkdir()
    with pytest.raises(UsageError, match="is a folder"):
        save_onnx(_weighted_model(), tmp_path / "out")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]



def _relu_model(input_shape, output_shape):
    from onnx import TensorProto, helper

    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, input_shape)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, output_shape)])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def test_an_input_of_unknown_rank_is_refused_not_read_as_a_scalar():
    """No shape field means the rank is unknown: the spec said () and every feed but a scalar was refused,
    while random feeds were scalars."""
    from trtflow.graph.io import onnx_specs

    model = _relu_model(None, None)
    assert not model.graph.input[0].type.tensor_type.HasField("shape")
    with pytest.raises(ModelLoadError) as info:
        onnx_specs(model)
    msg = str(info.value)
    assert "input 'x'" in msg and "rank is unknown" in msg
    assert "make_tensor_value_info('x', TensorProto.FLOAT, " in msg  # the fix, spelled for this input


def test_an_engine_is_not_made_for_an_input_of_unknown_rank():
    pytest.importorskip("onnxruntime")
    import trtflow

    with pytest.raises(ModelLoadError, match="input 'x' has no shape"):
        trtflow.load(_relu_model(None, None).SerializeToString(), engine="onnxruntime")


def test_a_scalar_input_and_an_output_of_unknown_rank_still_read():
    from trtflow.graph.io import onnx_specs

    inputs, outputs = onnx_specs(_relu_model([], None))
    assert [(s.name, s.dtype, s.shape) for s in inputs] == [("x", "float32", ())]
    assert [s.name for s in outputs] == ["y"]


def test_a_save_failing_part_way_leaves_the_proto_its_weights(tmp_path, monkeypatch):
    """A full disk while onnx wrote the weights out: the ones already written had left the caller's proto
    (cleared, marked external in a folder then deleted), the others stayed marked external."""
    import numpy as np
    import onnx.external_data_helper as edh
    from onnx import TensorProto, numpy_helper

    from trtflow.graph import io

    monkeypatch.setattr(io, "TWO_GB", 1000)
    model = _weighted_model()
    model.graph.initializer.append(numpy_helper.from_array(np.ones((32, 32), np.float32), "unused"))
    written = edh.save_external_data

    def second_fails(tensor, base_path):
        if tensor.name == "unused":
            raise OSError(28, "No space left on device")
        written(tensor, base_path)

    monkeypatch.setattr(edh, "save_external_data", second_fails)
    with pytest.raises(OSError, match="No space left"):
        io.save_onnx(model, tmp_path / "m.onnx")
    w, unused = model.graph.initializer
    assert [(t.data_location, len(t.external_data)) for t in (w, unused)] == [(TensorProto.DEFAULT, 0)] * 2
    np.testing.assert_array_equal(numpy_helper.to_array(w).ravel(), np.arange(4096))
    np.testing.assert_array_equal(numpy_helper.to_array(unused), np.ones((32, 32)))
    assert list(tmp_path.iterdir()) == []


def test_a_model_protobuf_refuses_to_serialize_is_saved_with_external_data(tmp_path, monkeypatch):
    """protobuf's cpp backend raises ValueError above 2 GB where upb serializes: both go to external data."""
    import onnx

    from trtflow.graph import io

    model = _weighted_model()
    refused = onnx.ModelProto.SerializeToString

    def too_large(self, *args, **kwargs):
        if self.ByteSize() > 16000:  # with its weights in it (the 64 x 64 floats alone are 16 kB)
            raise ValueError("Message onnx.ModelProto exceeds maximum protobuf size of 2GB: 2147483648")
        return refused(self, *args, **kwargs)

    monkeypatch.setattr(onnx.ModelProto, "SerializeToString", too_large)
    assert io.serialized(model) is None
    io.save_onnx(model, tmp_path / "m.onnx")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx", "m.onnx.data"]
    back = load_onnx(tmp_path / "m.onnx")
    assert back.graph.initializer[0].raw_data == model.graph.initializer[0].raw_data


def test_a_pt2_package_read_as_onnx_is_sent_to_the_torch_engine_and_a_checkpoint_to_export(tmp_path):
    """A .pt2 (AOTInductor package, a zip) read as ONNX was called "a PyTorch .pt/.pth checkpoint?; export the
    module", though the package is the exported module and the torch engine runs it."""
    import zipfile

    import trtflow

    with zipfile.ZipFile(tmp_path / "m.pt2", "w") as archive:
        archive.writestr("m/data/aotinductor/model/wrapper_metadata.json", "{}")
    with pytest.raises(ModelLoadError, match="AOTInductor") as info:
        trtflow.load(tmp_path / "m.pt2", engine="ort")
    assert 'engine="torch"' in str(info.value) and "checkpoint" not in str(info.value)
    torch = pytest.importorskip("torch")
    torch.save({"w": torch.zeros(2)}, tmp_path / "m.pt")
    with pytest.raises(ModelLoadError, match="checkpoint"):
        load_onnx(tmp_path / "m.pt")


def test_an_initializer_listed_as_a_graph_input_is_not_an_input(tmp_path):
    """IR 3 graphs list every weight among the graph inputs: each reader of the inputs (specs, inspect,
    an edit's report, fix-shapes) skips them through one function."""
    import onnx

    from trtflow.cli.inspect import summary
    from trtflow.edits.report import describe_change
    from trtflow.graph.io import graph_inputs, onnx_specs, unranked_inputs

    proto = _weighted_model()
    w = proto.graph.initializer[0]
    proto.graph.input.append(onnx.helper.make_tensor_value_info("w", w.data_type, list(w.dims)))
    proto.graph.input.append(onnx.helper.make_tensor_value_info("z", onnx.TensorProto.FLOAT, None))
    proto.graph.initializer.append(onnx.numpy_helper.from_array(__import__("numpy").zeros(1, "float32"), "z"))
    assert [v.name for v in graph_inputs(proto)] == ["x"]
    assert [s.name for s in onnx_specs(proto)[0]] == ["x"] and unranked_inputs(proto) == []
    onnx.save(proto, tmp_path / "m.onnx")
    assert [s["name"] for s in summary(tmp_path / "m.onnx")["inputs"]] == ["x"]
    assert [s["name"] for s in describe_change(proto, proto)["inputs"]["before"]] == ["x"]
