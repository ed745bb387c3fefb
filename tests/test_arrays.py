"""trtflow.arrays: converting the caller's arrays to an engine's family."""

from __future__ import annotations

import numpy as np
import pytest


def test_a_big_endian_array_reaches_a_torch_engine():
    torch = pytest.importorskip("torch")
    import trtflow
    from trtflow.arrays import to_torch

    x = np.arange(8, dtype=">f4").reshape(2, 4)  # as read from a .npy written with '>f4'
    assert to_torch(x).tolist() == x.tolist()
    net = torch.nn.Linear(4, 2).eval()
    with trtflow.load(net, engine="torch", example_inputs=[torch.zeros(2, 4)], device="cpu") as engine:
        name = engine.inputs[0].name
        got = engine.infer({name: x})[engine.outputs[0].name]
        want = engine.infer({name: x.astype("<f4")})[engine.outputs[0].name]
    np.testing.assert_array_equal(got, want)


def test_string_input_bytes_that_are_not_utf8_are_an_input_error(tmp_path):
    import onnx
    from onnx import TensorProto, helper

    import trtflow
    from trtflow.arrays import to_strings
    from trtflow.errors import InputError

    assert to_strings(np.array([b"ab", "c"], dtype=object)).tolist() == ["ab", "c"]
    assert to_strings(np.array([b"ab"], dtype="S2")).tolist() == ["ab"]
    node = helper.make_node("Identity", ["s"], ["o"])
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("s", TensorProto.STRING, ["n"])],
                              [helper.make_tensor_value_info("o", TensorProto.STRING, ["n"])])
    path = tmp_path / "strings.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8), str(path))
    with trtflow.load(path, engine="ort") as engine:
        for bad in (np.array([b"ab", b"\xff"], dtype=object), np.array([b"ab", b"\xff"], dtype="S2")):
            with pytest.raises(InputError, match=r"not UTF-8 text.*index \(1,\)"):
                engine.infer({"s": bad})


def test_torch_views_with_a_conjugate_or_negative_bit_convert_to_numpy():
    torch = pytest.importorskip("torch")
    from trtflow.arrays import Family, to_numpy

    z = torch.tensor([1 + 2j, 3 - 1j])
    assert to_numpy(z.conj()).tolist() == [1 - 2j, 3 + 1j]  # a module returning z.conj()
    assert to_numpy(z.conj().imag).tolist() == [-2.0, 1.0]  # a view with the negative bit
    assert Family("numpy").wrap(z.conj()).tolist() == [1 - 2j, 3 + 1j]


def test_a_structured_array_is_refused_as_a_dtype_mismatch(tiny_onnx):
    import trtflow
    from trtflow.arrays import can_cast
    from trtflow.errors import InputDtypeError

    assert not can_cast("void32", "float32") and can_cast("float16", "float32")
    record = np.zeros((1, 3, 16, 16), dtype=[("a", "f4")])  # a .npy of records, not of numbers
    with trtflow.load(tiny_onnx, engine="ort") as engine:
        with pytest.raises(InputDtypeError, match="void32.*float32"):
            engine.infer({"x": record})


def test_torch_dtypes_numpy_lacks_convert_exactly(tiny_onnx):
    torch = pytest.importorskip("torch")
    import trtflow
    from trtflow.arrays import dtype_name, to_numpy

    values = torch.tensor([0.5, -2.0, 448.0])
    for dtype in (torch.float8_e4m3fn, torch.float8_e5m2, torch.bfloat16):
        assert dtype_name(dtype) == str(dtype).replace("torch.", "")
        got = to_numpy(values.to(dtype))
        assert got.dtype == np.float32 and got.tolist() == values.to(dtype).float().tolist()
    half = torch.tensor([1 + 2j], dtype=torch.complex64).to(torch.complex32)
    assert to_numpy(half).tolist() == [1 + 2j]
    x = torch.randn(1, 3, 16, 16).to(torch.float8_e4m3fn)
    with trtflow.load(tiny_onnx, engine="ort") as engine:
        np.testing.assert_array_equal(engine.infer({"x": x})["logits"], engine.infer({"x": x.float()})["logits"])


def test_a_scalar_array_stays_a_scalar_tensor():
    """to_torch made a 0-d float array (1,) (np.ascontiguousarray is at least 1-d); bool ones stayed 0-d. The
    CUDA bench lanes build their inputs through it, so a scalar input reached the engine as (1,)."""
    pytest.importorskip("torch")
    from trtflow.arrays import to_torch

    for value in (np.array(2.5, np.float32), np.array(7, np.int64), np.array(True)):
        assert tuple(to_torch(value).shape) == () and to_torch(value).item() == value.item()
    strided = np.arange(12, dtype=np.float32).reshape(3, 4)[:, ::2]
    assert to_torch(strided).tolist() == strided.tolist()


def test_a_read_only_array_becomes_a_tensor_without_torch_warning():
    """torch.from_numpy warns "not writable" for np.frombuffer's arrays and decoders' frames (once per process:
    checked in a fresh one); to_torch, under every engine's feed, copies them once instead."""
    pytest.importorskip("torch")
    from tests.conftest import assert_no_not_writable_warning

    assert_no_not_writable_warning(
        "import numpy as np\nfrom trtflow.arrays import to_torch\n"
        "a = np.frombuffer(np.arange(6, dtype=np.float32).tobytes(), np.float32).reshape(2, 3)\n"
        "assert not a.flags.writeable\nassert to_torch(a).tolist() == a.tolist()\n")
