"""trtflow serve with a model whose tensors are strings (ONNX STRING, Triton BYTES)."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("aiohttp")
httpclient = pytest.importorskip("tritonclient.http")
grpcclient = pytest.importorskip("tritonclient.grpc")

import trtflow  # noqa: E402
from trtflow.serve.model import BatchConfig, ServedModel  # noqa: E402
from trtflow.serve.protocol import ProtocolError  # noqa: E402
from trtflow.serve.server import BackgroundServer, ServeOptions  # noqa: E402


def string_model() -> bytes:
    """w (batch, 2) string -> o = w."""
    from onnx import TensorProto as T, helper as h

    g = h.make_graph([h.make_node("Identity", ["w"], ["o"])], "strings",
                     [h.make_tensor_value_info("w", T.STRING, ["batch", 2])],
                     [h.make_tensor_value_info("o", T.STRING, ["batch", 2])])
    model = h.make_model(g, opset_imports=[h.make_opsetid("", 17)])
    model.ir_version = 8
    return model.SerializeToString()


def test_string_model_is_served_over_http_and_grpc():
    """A string input failed ServedModel with "data type 'string' not understood": such a model could not be served."""
    engine = trtflow.load(string_model(), engine="ort")
    words = np.array([[b"alpha", b"beta"], [b"", b"z" * 40]], dtype=object)
    with BackgroundServer([ServedModel("s", [engine], BatchConfig(max_batch=4))],
                          ServeOptions(http_port=0, grpc_port=0)) as s:
        c = httpclient.InferenceServerClient(f"127.0.0.1:{s.http_port}")
        assert c.get_model_metadata("s")["inputs"] == [{"name": "w", "datatype": "BYTES", "shape": [-1, 2]}]
        assert c.get_model_config("s")["input"][0]["data_type"] == "TYPE_STRING"
        for binary in (True, False):
            i = httpclient.InferInput("w", [2, 2], "BYTES")
            i.set_data_from_numpy(words, binary_data=binary)
            out = c.infer("s", [i], outputs=[httpclient.InferRequestedOutput("o", binary_data=binary)]).as_numpy("o")
            got = [[w.encode() if isinstance(w, str) else w for w in row] for row in out.tolist()]  # JSON: str
            assert got == words.tolist(), binary
        g = grpcclient.InferenceServerClient(f"127.0.0.1:{s.grpc_port}")
        i = grpcclient.InferInput("w", [2, 2], "BYTES")
        i.set_data_from_numpy(words)
        assert g.infer("s", [i]).as_numpy("o").tolist() == words.tolist()


def test_bytes_that_are_not_text_fail_only_their_own_request():
    """A request whose BYTES are not UTF-8 was checked only when its batch ran: every request
    batched with it failed with a 400 about another client's bytes."""
    import threading

    engine = trtflow.load(string_model(), engine="ort")
    # two rows fill a batch; a long delay makes sure both requests are in it
    with BackgroundServer([ServedModel("s", [engine], BatchConfig(max_batch=2, delay_us=2_000_000))],
                          ServeOptions(http_port=None, grpc_port=0)) as s:
        answers: dict = {}

        def send(key: str, words: list) -> None:
            i = grpcclient.InferInput("w", [1, 2], "BYTES")
            i.set_data_from_numpy(np.array([words], dtype=object))
            try:
                answers[key] = grpcclient.InferenceServerClient(f"127.0.0.1:{s.grpc_port}").infer("s", [i]).as_numpy("o")
            except grpcclient.InferenceServerException as exc:
                answers[key] = exc

        threads = [threading.Thread(target=send, args=("good", [b"alpha", b"beta"])),
                   threading.Thread(target=send, args=("bad", [b"ok", b"\xff\xfe"]))]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
    assert isinstance(answers["bad"], Exception) and "INVALID_ARGUMENT" in str(answers["bad"].status())
    assert "not UTF-8 text at index (0, 1)" in answers["bad"].message()
    assert not isinstance(answers["good"], Exception), answers["good"].message()
    assert answers["good"].tolist() == [[b"alpha", b"beta"]]


def test_string_inputs_are_converted_once_by_the_engine_not_per_request_first():
    """A request's BYTES were decoded to str when it was queued, and the engine converted the batch
    again; ASCII text is now only checked per request, and the engine's conversion is the one."""
    model = ServedModel("s", [trtflow.load(string_model(), engine="ort")], BatchConfig(max_batch=4))
    words = np.array([[b"alpha", b"beta"], [b"", b"z" * 40]], dtype=object)
    feed, rows, _ = model.prepare({"w": words})
    assert feed["w"] is words and rows == 2  # the request's own array, not a converted copy
    assert model.engines[0].infer(feed)["o"].tolist() == [["alpha", "beta"], ["", "z" * 40]]
    text = np.array([["é".encode(), b"b"]], dtype=object)
    assert model.prepare({"w": text})[0]["w"].tolist() == [["é", "b"]]  # checked by decoding it
    with pytest.raises(ProtocolError, match="input 'w'.*not UTF-8 text at index \\(0, 1\\)") as err:
        model.prepare({"w": np.array([[b"ok", b"\xff\xfe"]], dtype=object)})
    assert err.value.status == 400
