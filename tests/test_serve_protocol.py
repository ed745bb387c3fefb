"""The KServe v2 codec (trtflow.serve.protocol) on requests a strict server refuses."""

from __future__ import annotations

import importlib.util
import json

import numpy as np
import pytest

from trtflow.serve import protocol
from trtflow.serve.protocol import ProtocolError

BF16 = pytest.mark.skipif(importlib.util.find_spec("ml_dtypes") is None, reason="BF16 needs ml_dtypes")


def _decode(inputs: list, **doc) -> protocol.InferRequest:
    return protocol.decode_infer_request(json.dumps({"inputs": inputs, **doc}).encode())


@pytest.mark.parametrize("datatype, data", [
    ("INT32", [1.7, 2.2]),  # was truncated to [1, 2]
    ("INT64", [1, 2.5]),
    ("UINT8", [1.0, 2.0]),
    ("BOOL", ["false", "true"]),  # "false" was True
    ("BOOL", [0, 1]),
    ("FP32", ["1.5", "2"]),  # strings were parsed as numbers
    ("FP32", [True, False]),
])
def test_json_data_of_the_wrong_kind_is_400_not_converted(datatype, data):
    with pytest.raises(ProtocolError, match=f"'x'.*{datatype}") as err:
        _decode([{"name": "x", "shape": [2], "datatype": datatype, "data": data}])
    assert err.value.status == 400


@pytest.mark.parametrize("datatype, data, want", [
    ("INT32", [1, -2], np.array([1, -2], np.int32)),
    ("UINT64", [2**64 - 1, 0], np.array([2**64 - 1, 0], np.uint64)),
    ("BOOL", [True, False], np.array([True, False])),
    ("FP32", [1, 2.5], np.array([1, 2.5], np.float32)),
    ("FP16", [0.5, 2], np.array([0.5, 2], np.float16)),
    ("FP32", [0.1, 1e-40], np.array([0.1, 1e-40], np.float32)),
    ("FP16", [0.1, 65519.99], np.array([0.1, 65519.99], np.float16)),
    ("INT64", [3, -4], np.array([3, -4], np.int64)),
])
def test_json_data_of_the_right_kind_is_taken(datatype, data, want):
    got = _decode([{"name": "x", "shape": [2], "datatype": datatype, "data": data}]).inputs["x"]
    assert got.dtype == want.dtype
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("datatype, data", [("INT8", [300, 1]), ("UINT8", [-1, 1])])
def test_json_integers_out_of_range_are_400_not_wrapped(datatype, data):
    with pytest.raises(ProtocolError, match=f"'x'.*{datatype}") as err:
        _decode([{"name": "x", "shape": [2], "datatype": datatype, "data": data}])
    assert err.value.status == 400


_X = {"name": "x", "shape": [1], "datatype": "FP32", "data": [1.0]}


@pytest.mark.parametrize("doc, match", [
    ({"inputs": [_X], "outputs": ["y"]}, "'outputs'"),
    ({"inputs": [_X], "outputs": {"name": "y"}}, "'outputs'"),
    ({"inputs": [_X], "parameters": [1]}, "parameters"),
    ({"inputs": [{**_X, "parameters": "binary"}]}, "parameters of input 'x'"),
    ({"inputs": [{**_X, "data": None, "parameters": {"binary_data_size": "4"}}]}, "binary_data_size"),
    ({"inputs": [_X, {**_X, "data": [2.0]}]}, "'x' is given more than once"),  # the last one was taken
])
def test_malformed_request_parts_are_400_not_internal_errors(doc, match):
    """These were AttributeError/ValueError: 500 'internal error' instead of Triton's 400."""
    with pytest.raises(ProtocolError, match=match) as err:
        protocol.decode_infer_request(json.dumps(doc).encode())
    assert err.value.status == 400


@pytest.mark.parametrize("count", [2.5, "abc", "2", True, [2], -1])
def test_classification_count_that_is_not_an_integer_is_400(count):
    """"abc" was a ValueError (500 'internal error'); 2.5 was cut to 2 and True taken as 1."""
    doc = {"inputs": [_X], "outputs": [{"name": "y", "parameters": {"classification": count}}]}
    with pytest.raises(ProtocolError, match="output 'y'.*'classification' must be a non-negative integer") as err:
        protocol.decode_infer_request(json.dumps(doc).encode())
    assert err.value.status == 400


@pytest.mark.parametrize("count, want", [(3, 3), (0, 0), (None, 0)])
def test_classification_count_of_an_integer_is_taken(count, want):
    doc = {"inputs": [_X], "outputs": [{"name": "y", "parameters": {"classification": count}}]}
    assert protocol.decode_infer_request(json.dumps(doc).encode()).outputs[0].class_count == want


@pytest.mark.parametrize("data", [[5, "a"], [True, "a"], [None, "a"], [1.5, "a"]])
def test_json_bytes_data_must_be_strings(data):
    """BYTES data 5 became b"\\0\\0\\0\\0\\0" (bytes(5)), True one zero byte."""
    with pytest.raises(ProtocolError, match="'x'.*BYTES.*strings") as err:
        _decode([{"name": "x", "shape": [2], "datatype": "BYTES", "data": data}])
    assert err.value.status == 400


def test_json_bytes_data_of_strings_is_taken():
    got = _decode([{"name": "x", "shape": [2, 1], "datatype": "BYTES", "data": [["é"], [""]]}]).inputs["x"]
    assert got.dtype == object and got.tolist() == [["é".encode()], [b""]]


@pytest.mark.parametrize("datatype", [["FP32"], {"FP32": 1}, 5, None])
def test_datatype_that_is_not_a_string_is_400(datatype):
    """A list or object was a raw TypeError (unhashable): 500 'internal error'."""
    with pytest.raises(ProtocolError, match="datatype") as err:
        _decode([{"name": "x", "shape": [1], "datatype": datatype, "data": [1.0]}])
    assert err.value.status == 400


@pytest.mark.parametrize("shape, data", [("12", [1.0, 2.0]), ([1.7], [1.0]), ([True], [1.0]), ([1, "2"], [1.0, 2.0]),
                                         ({"1": 2}, [1.0])])
def test_shape_that_is_not_a_list_of_integers_is_400(shape, data):
    """"12" was read as [1, 2], 1.7 as 1 and true as 1."""
    with pytest.raises(ProtocolError, match="shape") as err:
        _decode([{"name": "x", "shape": shape, "datatype": "FP32", "data": data}])
    assert err.value.status == 400


def test_request_shape_is_public_and_checks_dims():
    """The shape check the HTTP codec and the gRPC service share."""
    assert protocol.request_shape([2, np.int64(3)], "x") == (2, 3)
    with pytest.raises(ProtocolError, match="'x' has shape \\[2, -1\\]; sizes must be >= 0"):
        protocol.request_shape([2, -1], "x")


def test_bytes_tensor_with_a_huge_shape_is_400_before_allocating():
    """Each element takes 4 bytes at least: shape [10**15] over an empty buffer was a MemoryError
    (500), and [10**8] allocated 800 MB before it was refused."""
    for count in (10**15, 10**8, 2):
        head = json.dumps({"inputs": [{"name": "x", "shape": [count], "datatype": "BYTES",
                                       "parameters": {"binary_data_size": 4}}]}).encode()
        with pytest.raises(ProtocolError, match="fewer than") as err:
            protocol.decode_infer_request(head + b"\0\0\0\0", len(head))
        assert err.value.status == 400


@pytest.mark.parametrize("params", [{"binary_data_output": "false"}, {"binary_data_output": 1}])
def test_binary_data_output_that_is_not_a_boolean_is_400(params):
    """"false" was truthy: the outputs came back binary."""
    with pytest.raises(ProtocolError, match="binary_data_output") as err:
        _decode([_X], parameters=params)
    assert err.value.status == 400


def test_binary_data_of_an_output_that_is_not_a_boolean_is_400():
    with pytest.raises(ProtocolError, match="binary_data") as err:
        _decode([_X], outputs=[{"name": "y", "parameters": {"binary_data": "false"}}])
    assert err.value.status == 400


def test_json_nested_too_deep_is_400_not_an_internal_error():
    """A RecursionError from the JSON parser was answered 500 'internal error'."""
    body = b'{"inputs": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    with pytest.raises(ProtocolError, match="malformed JSON.*nested") as err:
        protocol.decode_infer_request(body)
    assert err.value.status == 400


@pytest.mark.parametrize("doc, match", [
    ({"inputs": [{**_X, "name": 5}]}, "name"),
    ({"inputs": [{**_X, "name": ["x"]}]}, "name"),
    ({"inputs": [_X], "outputs": [{"name": {"y": 1}}]}, "name"),
    ({"inputs": [_X], "id": {"a": 1}}, "'id'"),
    ({"inputs": [_X], "id": 7}, "'id'"),
])
def test_names_and_id_that_are_not_strings_are_400(doc, match):
    """They were turned into text: input ["x"] was named "['x']", id {"a": 1} echoed as "{'a': 1}"."""
    with pytest.raises(ProtocolError, match=match) as err:
        protocol.decode_infer_request(json.dumps(doc).encode())
    assert err.value.status == 400


@pytest.mark.parametrize("datatype, data", [
    ("FP16", [1.0, 70000.0]), ("FP16", [1, 100000]), ("FP32", [1.0, 1e39]),
    pytest.param("BF16", [1.0, 1e39], marks=BF16), pytest.param("BF16", [1.0, 3.4e38], marks=BF16),  # FP32 holds 3.4e38
])
def test_json_numbers_beyond_a_float_datatype_are_400_not_infinity(datatype, data):
    """70000 into FP16 became inf without a word (a RuntimeWarning on the server's stderr); 1e39
    into BF16 too."""
    with pytest.raises(ProtocolError, match=f"'x'.*{datatype}") as err:
        _decode([{"name": "x", "shape": [2], "datatype": datatype, "data": data}])
    assert err.value.status == 400


def test_json_infinity_and_nan_into_a_float_datatype_are_taken():
    got = _decode([{"name": "x", "shape": [3], "datatype": "FP16", "data": [float("inf"), float("nan"), 65504.0]}])
    assert np.isposinf(got.inputs["x"][0]) and np.isnan(got.inputs["x"][1]) and got.inputs["x"][2] == 65504


def test_a_tensor_without_a_triton_datatype_is_named_with_the_fix():
    from trtflow.spec import TensorSpec

    x, y = TensorSpec("x", "float32", ("batch", 4)), TensorSpec("y", "float8_e4m3fn", ("batch", 4))
    for make in (lambda: protocol.model_config("m", [x], [y], 8), lambda: protocol.model_metadata("m", "1", [x], [y], True)):
        with pytest.raises(ProtocolError, match=r"output 'y' is float8_e4m3fn.*cast it to float16 at the model's edge"):
            make()


def test_serving_a_model_with_an_fp8_output_is_refused_when_it_is_loaded():
    torch = pytest.importorskip("torch")
    import trtflow
    from trtflow.serve.model import ServedModel

    class ToFp8(torch.nn.Module):
        def forward(self, x):
            return x.to(torch.float8_e4m3fn)

    with trtflow.load(ToFp8(), engine="torch", example_inputs={"x": torch.randn(2, 4)}, device="cpu",
                      output_names=["y"]) as engine:
        with pytest.raises(ProtocolError, match=r"model 'm': output 'y' is float8_e4m3fn.*float16"):
            ServedModel("m", [engine])


@pytest.mark.parametrize("where", ["input", "output"])
def test_shared_memory_inputs_and_outputs_are_400_naming_the_tensor(where):
    """Triton's shared-memory extension is not served (the server metadata does not list it):
    a tensor naming a region was '0 values; shape [1, 4] needs 4' (inputs) or ignored (outputs)."""
    shm = {"shared_memory_region": "r", "shared_memory_byte_size": 16, "shared_memory_offset": 0}
    x = {"name": "x", "shape": [1, 4], "datatype": "FP32"}
    doc = {"inputs": [{**x, "parameters": shm}]} if where == "input" else {
        "inputs": [{**x, "data": [1, 2, 3, 4]}], "outputs": [{"name": "y", "parameters": shm}]}
    name = "x" if where == "input" else "y"
    for decode in (lambda: protocol.decode_infer_request(json.dumps(doc).encode()),
                   lambda: protocol.parse_infer_header(json.dumps(doc).encode())):  # the binary fast path's header
        with pytest.raises(ProtocolError, match=f"{where} '{name}'.*shared-memory.*not supported.*in the request") as err:
            decode()
        assert err.value.status == 400
