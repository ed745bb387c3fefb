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
