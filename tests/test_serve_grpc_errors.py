"""gRPC answers of trtflow serve when the engine fails with an error that is not trtflow's."""

from __future__ import annotations

import queue

import numpy as np
import pytest

pytest.importorskip("aiohttp")
grpcclient = pytest.importorskip("tritonclient.grpc")

from trtflow.backends.base import Engine  # noqa: E402
from trtflow.serve.model import BatchConfig, ServedModel  # noqa: E402
from trtflow.serve.server import BackgroundServer, ServeOptions  # noqa: E402
from trtflow.spec import TensorSpec  # noqa: E402


class Failing(Engine):
    name = "failing"

    def __init__(self):
        super().__init__([TensorSpec("x", "float32", ("batch", 4))], [TensorSpec("y", "float32", ("batch", 4))])

    def _infer(self, feed):
        raise RuntimeError("kaboom")


@pytest.fixture
def server():
    with BackgroundServer([ServedModel("f", [Failing()], BatchConfig(max_batch=4))],
                          ServeOptions(http_port=None, grpc_port=0)) as s:
        yield s


def _input():
    i = grpcclient.InferInput("x", [1, 4], "FP32")
    i.set_data_from_numpy(np.ones((1, 4), np.float32))
    return i


def test_unary_failure_is_internal_with_the_reason(server):
    """It was UNKNOWN 'Unexpected <class ...>' (HTTP answers 500 'internal error: ...')."""
    c = grpcclient.InferenceServerClient(f"127.0.0.1:{server.grpc_port}")
    with pytest.raises(grpcclient.InferenceServerException) as err:
        c.infer("f", [_input()])
    assert "INTERNAL" in str(err.value.status()) and "kaboom" in err.value.message()


def test_stream_failure_is_answered_not_dropped(server):
    """The stream never answered the request (the exception died in its task): the client waited forever."""
    c = grpcclient.InferenceServerClient(f"127.0.0.1:{server.grpc_port}")
    answers: queue.Queue = queue.Queue()
    c.start_stream(callback=lambda result, error: answers.put((result, error)))
    try:
        c.async_stream_infer("f", [_input()], request_id="7")
        result, error = answers.get(timeout=10)
        assert result is None and "kaboom" in error.message()
    finally:
        c.stop_stream(cancel_requests=True)


def test_grpc_decode_refuses_repeated_inputs_and_contents_out_of_range():
    """An input given twice: the last one was taken; 300 in an INT8 input's int_contents was an
    OverflowError (an internal error, not INVALID_ARGUMENT)."""
    from trtflow.serve import grpc_service
    from trtflow.serve.protocol import ProtocolError

    pb = grpc_service.pb
    twice = pb.ModelInferRequest(model_name="m")
    for v in (1.0, 2.0):
        twice.inputs.add(name="x", datatype="FP32", shape=[1]).contents.fp32_contents.extend([v])
    with pytest.raises(ProtocolError, match="'x' is given more than once") as err:
        grpc_service.decode(twice)
    assert err.value.status == 400
    wide = pb.ModelInferRequest(model_name="m")
    wide.inputs.add(name="x", datatype="INT8", shape=[2]).contents.int_contents.extend([300, 1])
    with pytest.raises(ProtocolError, match="'x'.*INT8") as err:
        grpc_service.decode(wide)
    assert err.value.status == 400


@pytest.mark.parametrize("field, value", [("string_param", "abc"), ("double_param", 2.5), ("bool_param", True)])
def test_grpc_classification_count_that_is_not_an_integer_is_invalid_argument(server, field, value):
    """A string count was a ValueError: INTERNAL instead of INVALID_ARGUMENT (Triton wants int64_param)."""
    from trtflow.serve import grpc_service

    pb, grpc = grpc_service.pb, grpc_service.grpc
    request = pb.ModelInferRequest(model_name="f")
    request.inputs.add(name="x", datatype="FP32", shape=[1, 4])
    request.raw_input_contents.append(np.ones((1, 4), np.float32).tobytes())
    setattr(request.outputs.add(name="y").parameters["classification"], field, value)
    with grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}") as channel:
        with pytest.raises(grpc.RpcError) as err:
            grpc_service.pb_grpc.GRPCInferenceServiceStub(channel).ModelInfer(request, timeout=10)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    details = err.value.details()
    assert "output 'y'" in details and "'classification' must be a non-negative integer" in details


def test_grpc_output_requested_twice_is_invalid_argument(server):
    """Triton refuses an output named twice in one request; it was answered twice (here the engine
    would fail: the refusal comes before the request runs)."""
    from trtflow.serve import grpc_service

    pb, grpc = grpc_service.pb, grpc_service.grpc
    request = pb.ModelInferRequest(model_name="f")
    request.inputs.add(name="x", datatype="FP32", shape=[1, 4])
    request.raw_input_contents.append(np.ones((1, 4), np.float32).tobytes())
    request.outputs.add(name="y")
    request.outputs.add(name="y")
    with grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}") as channel:
        with pytest.raises(grpc.RpcError) as err:
            grpc_service.pb_grpc.GRPCInferenceServiceStub(channel).ModelInfer(request, timeout=10)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "output 'y' is requested more than once" in err.value.details()


@pytest.mark.parametrize("shape", [[-1, -1], [2, -1], [-4]])
def test_grpc_contents_with_a_negative_dim_is_invalid_argument(server, shape):
    """Typed ``contents`` skipped the shape check raw tensors get: [-1, -1] with one value was numpy's
    ValueError (INTERNAL), [2, -1] with none was '0 values; shape [2, -1] needs -2'."""
    from trtflow.serve import grpc_service

    pb, grpc = grpc_service.pb, grpc_service.grpc
    request = pb.ModelInferRequest(model_name="f")
    request.inputs.add(name="x", datatype="FP32", shape=shape).contents.fp32_contents.extend([1.0] * (shape == [-1, -1]))
    with grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}") as channel:
        with pytest.raises(grpc.RpcError) as err:
            grpc_service.pb_grpc.GRPCInferenceServiceStub(channel).ModelInfer(request, timeout=10)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert f"input 'x' has shape {shape}; sizes must be >= 0" in err.value.details()


def test_grpc_answer_larger_than_the_request_body_limit_is_sent():
    """The gRPC listener capped what it sends at --max-body-mb, a limit on request bodies: an
    answer over it (3.2 MB from a 16-byte request under a 1 MiB limit) was RESOURCE_EXHAUSTED
    'Sent message larger than max', while HTTP sent it."""
    import trtflow
    from onnx import TensorProto as T, helper as h, numpy_helper as nh

    graph = h.make_graph([h.make_node("Tile", ["x", "reps"], ["y"])], "tile",
                         [h.make_tensor_value_info("x", T.FLOAT, ["batch", 4])],
                         [h.make_tensor_value_info("y", T.FLOAT, ["batch", 800000])],
                         [nh.from_array(np.array([1, 200000], np.int64), "reps")])
    model = h.make_model(graph, opset_imports=[h.make_opsetid("", 17)])
    model.ir_version = 8
    engine = trtflow.load(model.SerializeToString(), engine="ort")
    with BackgroundServer([ServedModel("tile", [engine], BatchConfig(max_batch=4))],
                          ServeOptions(http_port=None, grpc_port=0, max_body=1 << 20)) as s:
        c = grpcclient.InferenceServerClient(f"127.0.0.1:{s.grpc_port}")
        x = np.arange(4, dtype=np.float32).reshape(1, 4)
        y = c.infer("tile", [grpcclient.InferInput("x", [1, 4], "FP32").set_data_from_numpy(x)]).as_numpy("y")
        np.testing.assert_array_equal(y, np.tile(x, (1, 200000)))
        big = grpcclient.InferInput("x", [70000, 4], "FP32")  # a request over the limit is still refused
        big.set_data_from_numpy(np.zeros((70000, 4), np.float32))
        with pytest.raises(grpcclient.InferenceServerException, match="RESOURCE_EXHAUSTED"):
            c.infer("tile", [big])


def test_grpc_input_with_raw_and_typed_contents_is_refused():
    """An input given both ways (raw_input_contents and its own contents) was read from the raw
    bytes, its contents dropped without a word; Triton refuses the request."""
    from trtflow.serve import grpc_service
    from trtflow.serve.protocol import ProtocolError

    request = grpc_service.pb.ModelInferRequest(model_name="m")
    request.inputs.add(name="x", datatype="FP32", shape=[1]).contents.fp32_contents.extend([2.0])
    request.raw_input_contents.append(np.float32(1.0).tobytes())
    with pytest.raises(ProtocolError, match=r"input 'x' has both typed contents and raw_input_contents") as err:
        grpc_service.decode(request)
    assert err.value.status == 400


@pytest.mark.parametrize("where", ["input", "output"])
def test_shared_memory_tensors_are_refused_naming_the_extension(server, where):
    """An input in a shared-memory region was '0 values' (its data read as missing), and an output's
    region was ignored: trtflow serve does not offer Triton's shared-memory extensions."""
    c = grpcclient.InferenceServerClient(f"127.0.0.1:{server.grpc_port}")
    x, y = _input(), grpcclient.InferRequestedOutput("y")
    if where == "input":
        x = grpcclient.InferInput("x", [1, 4], "FP32")
        x.set_shared_memory("region", 16)
    else:
        y.set_shared_memory("region", 16)
    with pytest.raises(grpcclient.InferenceServerException) as err:
        c.infer("f", [x], outputs=[y])
    assert "INVALID_ARGUMENT" in str(err.value.status()), err.value
    assert f"{where} '{'x' if where == 'input' else 'y'}'" in err.value.message() and "shared-memory" in err.value.message()
