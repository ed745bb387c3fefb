"""The KServe v2 / Triton inference protocol as pure functions: bytes + headers <-> numpy arrays.

Nothing here is async or tied to a web framework, so the HTTP server, the gRPC server and a
Ray Serve ingress share one codec. JSON tensors go through ``np.asarray`` on the parsed lists;
binary tensors (Triton's binary tensor extension) through ``np.frombuffer`` / ``tobytes``, with
no per-element Python work except for BYTES, whose elements are length-prefixed strings.

Binary extension: the request body is the JSON header followed by the raw tensors of the inputs
that carry ``parameters.binary_data_size``, in input order; the header's length is given by the
``Inference-Header-Content-Length`` HTTP header. Responses do the same for outputs asked for
with ``binary_data`` (or all outputs when the request sets ``binary_data_output``).
"""

from __future__ import annotations

import json
import logging
import math
import os
import struct
import time
from dataclasses import dataclass, field
from typing import Any, Iterator, Mapping, Sequence

import numpy as np

from trtflow.errors import InputError, TrtflowError, UsageError
from trtflow.spec import TensorSpec

HEADER_LENGTH = "Inference-Header-Content-Length"
ACCESS = logging.getLogger("trtflow.serve.access")  # one JSON line per answered HTTP request

# Triton datatype <-> numpy dtype name (BYTES holds numpy object arrays of bytes)
TRITON_TO_NUMPY = {
    "BOOL": "bool", "UINT8": "uint8", "UINT16": "uint16", "UINT32": "uint32", "UINT64": "uint64",
    "INT8": "int8", "INT16": "int16", "INT32": "int32", "INT64": "int64",
    "FP16": "float16", "FP32": "float32", "FP64": "float64", "BF16": "bfloat16", "BYTES": "object",
}
NUMPY_TO_TRITON = {v: k for k, v in TRITON_TO_NUMPY.items()}
NUMPY_TO_TRITON.update({"bytes": "BYTES", "str": "BYTES", "string": "BYTES"})
_NUMPY_DTYPES = {k: np.dtype(v) for k, v in TRITON_TO_NUMPY.items() if v != "bfloat16"}
_BY_DTYPE = {np.dtype(v): k for k, v in TRITON_TO_NUMPY.items() if v != "bfloat16"}  # skips dtype.name (slow)


class ProtocolError(UsageError):
    """A request the protocol refuses; ``status`` is the HTTP status code to answer with.

    400 malformed or mismatched request, 404 unknown model, 408 body stalled, 413 body too large,
    503 queue full / draining / timed out.
    """

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


def body_too_large(limit: int) -> ProtocolError:
    """The 413 for a request body above ``limit`` bytes."""
    return ProtocolError(f"request body too large; the limit is {limit} bytes (--max-body-mb)", 413)


def body_stalled(idle_timeout: float) -> ProtocolError:
    """The 408 for a request whose body stopped coming for ``idle_timeout`` seconds."""
    return ProtocolError(f"no bytes of the request body came for {idle_timeout:g} s; the connection is closed "
                         "(--idle-timeout-s)", 408)


@dataclass
class RequestedOutput:
    """One entry of a request's ``outputs``: binary or JSON, top-k classification or raw."""

    name: str
    binary: bool | None = None  # None: follow the request's binary_data_output
    class_count: int = 0


def class_count(value: Any, output: Any) -> int:
    """The ``classification`` parameter of output ``output``: how many top classes to return
    (0 or absent: the raw tensor).

    Raises:
        ProtocolError: (400) a value that is not a non-negative integer (Triton's int64).
    """
    if value is None:
        return 0
    if type(value) is not int or value < 0:
        raise ProtocolError(f"output '{output}': parameter 'classification' must be a non-negative integer (how "
                            f"many top classes to return), got {value!r} ({type(value).__name__})")
    return value


@dataclass
class InferRequest:
    """A decoded inference request.

    Attributes:
        inputs: input name -> array (shape and dtype as sent).
        outputs: the outputs asked for, or None for every output.
        binary_output: the request-level ``binary_data_output`` parameter.
    """

    inputs: dict[str, np.ndarray]
    id: str = ""
    outputs: list[RequestedOutput] | None = None
    binary_output: bool = False
    parameters: dict = field(default_factory=dict)


# -- dtypes and raw tensors ------------------------------------------------------------------
def triton_dtype(dtype: Any) -> str:
    """A numpy dtype (or trtflow dtype name) -> Triton's datatype string ("FP32", "BYTES", ...)."""
    if isinstance(dtype, np.dtype) and dtype in _BY_DTYPE:
        return _BY_DTYPE[dtype]
    name = dtype if isinstance(dtype, str) else np.dtype(dtype).name
    if name.startswith(("bytes", "str")) or name == "object":
        return "BYTES"
    if name not in NUMPY_TO_TRITON:
        raise ProtocolError(f"dtype {name} has no Triton datatype")
    return NUMPY_TO_TRITON[name]


def spec_datatype(spec: TensorSpec, role: str) -> str:
    """Triton's datatype of a model's input or output (``role``: "input" or "output").

    Raises:
        ProtocolError: the tensor's dtype has none (FP8, for one); the message names the tensor and the cast.
    """
    try:
        return triton_dtype(spec.dtype)
    except ProtocolError:
        to = "float16" if spec.dtype.startswith(("float8", "float4")) else "a dtype Triton has (" + ", ".join(
            v for v in TRITON_TO_NUMPY.values() if v != "object") + ")"
        raise ProtocolError(f"{role} '{spec.name}' is {spec.dtype}, which has no Triton datatype: cast it to {to} "
                            "at the model's edge (in the model, before it is exported or loaded) to serve it") from None


def numpy_dtype(datatype: str) -> np.dtype:
    """Triton's datatype string -> numpy dtype (object for BYTES).

    Raises:
        ProtocolError: (400) an unknown datatype.
    """
    if not isinstance(datatype, str):  # a list or object was unhashable: a raw TypeError
        raise ProtocolError(f"datatype {json.dumps(datatype, default=repr)} is not a string; expected one of "
                            f"{', '.join(TRITON_TO_NUMPY)}")
    found = _NUMPY_DTYPES.get(datatype)
    if found is not None:
        return found
    name = TRITON_TO_NUMPY.get(datatype.upper())
    if name is None:
        raise ProtocolError(f"unknown datatype '{datatype}'; expected one of {', '.join(TRITON_TO_NUMPY)}")
    if name == "bfloat16":
        try:
            import ml_dtypes
        except ImportError:
            raise ProtocolError("BF16 tensors need the 'ml_dtypes' package on the server") from None
        return np.dtype(ml_dtypes.bfloat16)
    return np.dtype(name)


def serialize_bytes(arr: np.ndarray) -> bytes:
    """BYTES tensor -> Triton's wire format: each element as a 4-byte little-endian length + bytes."""
    parts = []
    for item in np.asarray(arr, dtype=object).reshape(-1):
        b = item if isinstance(item, bytes) else str(item).encode()
        parts.append(struct.pack("<I", len(b)))
        parts.append(b)
    return b"".join(parts)


def deserialize_bytes(buf: bytes | memoryview, shape: Sequence[int]) -> np.ndarray:
    """Triton's BYTES wire format -> an object array of ``bytes`` with ``shape``.

    Raises:
        ProtocolError: (400) the buffer does not hold exactly prod(shape) elements.
    """
    count = math.prod(shape)
    view = memoryview(buf)
    if 4 * count > len(view):  # each element's length prefix alone takes 4 bytes: refused before allocating
        raise ProtocolError(f"BYTES tensor holds fewer than the {count} elements its shape {list(shape)} needs "
                            f"({len(view)} bytes; each element takes 4 bytes of length and its bytes)")
    out = np.empty(count, dtype=object)
    pos = 0
    for i in range(count):
        if pos + 4 > len(view):
            raise ProtocolError(f"BYTES tensor holds fewer than the {count} elements its shape {list(shape)} needs")
        (n,) = struct.unpack_from("<I", view, pos)
        out[i] = bytes(view[pos + 4:pos + 4 + n])
        pos += 4 + n
    if pos != len(view):
        raise ProtocolError(f"BYTES tensor has {len(view) - pos} bytes left over after {count} elements")
    return out.reshape(shape)


def array_from_raw(raw: bytes | memoryview, datatype: str, shape: Sequence[int], name: str = "") -> np.ndarray:
    """Raw little-endian tensor bytes -> array (zero-copy view for fixed-size types).

    Raises:
        ProtocolError: (400) a byte count that does not match shape x datatype.
    """
    shape = request_shape(shape, name)
    dtype = numpy_dtype(datatype)
    if dtype == object:
        return deserialize_bytes(raw, shape)
    want = math.prod(shape) * dtype.itemsize
    if len(raw) != want:
        raise ProtocolError(
            f"input '{name}' has {len(raw)} bytes of data; shape {list(shape)} of {datatype} needs {want}"
        )
    return np.frombuffer(raw, dtype=dtype).reshape(shape)


def raw_from_array(arr: np.ndarray) -> bytes:
    """Array -> raw bytes (row-major, little-endian; BYTES serialized)."""
    if arr.dtype == object or arr.dtype.kind in "SU":
        return serialize_bytes(arr)
    return np.ascontiguousarray(arr).tobytes()


def request_shape(shape: Any, name: str) -> tuple[int, ...]:
    """The shape of input ``name`` as a request gives it, as a tuple of ints.

    Raises:
        ProtocolError: (400) dims that are not integers ("12" was read as (1, 2), 1.7 as 1 and
            true as 1) or a negative dim.
    """
    try:
        dims = tuple(shape)
    except TypeError:
        dims = None
    if dims is None or isinstance(shape, (str, bytes, dict)) or not all(
            isinstance(d, (int, np.integer)) and not isinstance(d, bool) for d in dims):
        raise ProtocolError(f"input '{name}' has shape {shape!r}; expected a list of non-negative integers")
    dims = tuple(map(int, dims))
    if dims and min(dims) < 0:
        raise ProtocolError(f"input '{name}' has shape {list(dims)}; sizes must be >= 0")
    return dims


# -- infer requests ----------------------------------------------------------------------------
def decode_infer_request(body: bytes, header_length: int | str | None = None) -> InferRequest:
    """Decode an HTTP infer request (JSON, or JSON header + binary tensors).

    Args:
        body: the request body.
        header_length: the ``Inference-Header-Content-Length`` header, when present.

    Returns:
        The decoded request.

    Raises:
        ProtocolError: (400) malformed JSON, missing fields, byte counts that do not match shapes.
    """
    view = memoryview(body)
    if header_length is not None:
        try:
            n = int(header_length)
        except ValueError:
            raise ProtocolError(f"{HEADER_LENGTH} is '{header_length}'; expected an integer") from None
        if not 0 <= n <= len(view):
            raise ProtocolError(f"{HEADER_LENGTH} is {n} but the body has {len(view)} bytes")
        head, rest = view[:n], view[n:]
    else:
        head, rest = view, view[:0]
    items, request = parse_infer_header(head)
    inputs = request.inputs
    offset = 0
    for item in items:
        name = str(item["name"])
        shape = request_shape(item["shape"], name)
        size = (item.get("parameters") or {}).get("binary_data_size")
        if size is not None:
            if type(size) is not int or size < 0:
                raise ProtocolError(f"input '{name}': parameters.binary_data_size must be a byte count, got {size!r}")
            if offset + size > len(rest):
                raise ProtocolError(f"input '{name}' declares {size} binary bytes but the body holds {len(rest) - offset}")
            inputs[name] = array_from_raw(rest[offset:offset + size], item["datatype"], shape, name)
            offset += size
        elif "data" in item:
            inputs[name] = _array_from_json(item["data"], item["datatype"], shape, name)
        else:
            raise ProtocolError(f"input '{name}' has neither 'data' nor parameters.binary_data_size")
    if offset != len(rest):
        raise ProtocolError(f"the body holds {len(rest) - offset} binary bytes no input declared")
    return request


def parse_infer_header(head: bytes | memoryview) -> tuple[list[dict], InferRequest]:
    """The JSON part of an infer request: its input entries (checked to have name, shape and
    datatype) and the request with everything but the inputs (``inputs`` empty).

    Raises:
        ProtocolError: (400) malformed JSON or missing fields.
    """
    try:
        doc = json.loads(bytes(head))
    except (ValueError, UnicodeDecodeError) as exc:
        raise ProtocolError(f"malformed JSON in the request: {exc}") from None
    except RecursionError:
        raise ProtocolError("malformed JSON in the request: arrays or objects nested too deep") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("inputs"), list):
        raise ProtocolError("the request must be a JSON object with an 'inputs' list")
    params = _parameters(doc, "the request")
    names = set()
    for item in doc["inputs"]:
        if not isinstance(item, dict) or "name" not in item or "datatype" not in item or "shape" not in item:
            raise ProtocolError("each input needs 'name', 'shape' and 'datatype'")
        name = _name(item, "input")
        no_shared_memory(_parameters(item, "input", name), "input", name)
        if name in names:
            raise ProtocolError(f"input '{item['name']}' is given more than once")
        names.add(name)
    outputs = None
    if doc.get("outputs") is not None:
        if not isinstance(doc["outputs"], list) or not all(isinstance(o, dict) and "name" in o for o in doc["outputs"]):
            raise ProtocolError("'outputs' must be a list of objects with a 'name'")
        outputs = []
        for item in doc["outputs"]:
            name = _name(item, "output")
            p = _parameters(item, "output", name)
            no_shared_memory(p, "output", name)
            outputs.append(RequestedOutput(name, _flag(p, "binary_data", "output", name),
                                           class_count(p.get("classification"), name)))
    binary = _flag(params, "binary_data_output", "the request")
    rid = doc.get("id", "")
    if not isinstance(rid, str):  # {"a": 1} was echoed as "{'a': 1}"
        raise ProtocolError(f"the request's 'id' must be a string, got {json.dumps(rid)}")
    request = InferRequest({}, rid, outputs, bool(binary), params)
    return doc["inputs"], request


def _name(item: dict, what: str) -> str:
    """The ``name`` of an input or output entry; ["x"] was named "['x']".

    Raises:
        ProtocolError: (400) a name that is not a string.
    """
    name = item["name"]
    if not isinstance(name, str):
        raise ProtocolError(f"an {what}'s 'name' must be a string, got {json.dumps(name)}")
    return name


def no_shared_memory(params: Mapping, what: str, name: Any) -> None:
    """Refuse a tensor in a shared-memory region (Triton's system and CUDA shared-memory
    extensions, which this server does not list in its metadata): its data was read as missing.
    ``what`` ("input" or "output") and ``name`` say whose in the error, formatted only then.

    Raises:
        ProtocolError: (400) a ``shared_memory_*`` parameter.
    """
    if params and any(key.startswith("shared_memory_") for key in params):
        raise ProtocolError(f"{what} '{name}' names a shared-memory region: shared-memory inputs and outputs are not "
                            "supported; send the data in the request (JSON 'data' or binary tensor data)")


def _flag(params: dict, key: str, what: str, name: Any = None) -> bool | None:
    """A boolean parameter (None when absent); "false" was truthy, so only true/false are taken.
    ``what`` (and ``name``) say whose in the error, formatted only then.

    Raises:
        ProtocolError: (400) a value that is not a JSON boolean.
    """
    value = params.get(key)
    if value is not None and type(value) is not bool:
        whose = what if name is None else f"{what} '{name}'"
        raise ProtocolError(f"{whose}: parameter '{key}' must be true or false, got {json.dumps(value, default=repr)}")
    return value


def _parameters(doc: dict, what: str, name: Any = None) -> dict:
    """The ``parameters`` object of ``doc`` ({} when absent); ``what`` (and ``name``) say whose
    in the error, formatted only then.

    Raises:
        ProtocolError: (400) parameters that are not an object.
    """
    params = doc.get("parameters")
    if params is None:
        return {}
    if not isinstance(params, dict):
        whose = what if name is None else f"{what} '{name}'"
        raise ProtocolError(f"the parameters of {whose} must be a JSON object, got {type(params).__name__}")
    return params


def binary_layout(items: list[dict], body_bytes: int) -> list[tuple[str, np.dtype, tuple[int, ...]]] | None:
    """The inputs as (name, dtype, shape) when every one is a non-empty fixed-size binary tensor
    whose ``binary_data_size`` matches its shape and the sizes add up to ``body_bytes``; None otherwise
    (then ``decode_infer_request`` decodes the whole body and names what is wrong). ``items``: the
    input entries of ``parse_infer_header``, which refused repeated names."""
    layout, total = [], 0
    try:
        for item in items:
            size = (item.get("parameters") or {}).get("binary_data_size")
            dtype = _NUMPY_DTYPES.get(item["datatype"])
            if type(size) is not int or dtype is None or dtype == object:
                return None
            shape = request_shape(item["shape"], "")
            if size != math.prod(shape) * dtype.itemsize or size == 0:  # an empty tensor: nothing to read into
                return None
            layout.append((str(item["name"]), dtype, shape))
            total += size
    except (ProtocolError, TypeError, ValueError):
        return None
    return layout if total == body_bytes else None


def _array_from_json(data: Any, datatype: str, shape: tuple[int, ...], name: str) -> np.ndarray:
    dtype = numpy_dtype(datatype)
    try:
        if dtype == object:
            items = list(_flat(data))
            if not all(isinstance(d, str) for d in items):  # bytes(5) was five zero bytes
                raise ProtocolError(f"input '{name}': datatype BYTES takes JSON strings as data; got "
                                    f"{type(next(d for d in items if not isinstance(d, str))).__name__}")
            arr = np.array([d.encode() for d in items], dtype=object)
        else:
            # the data's own kind; numbers into floats and integers into integers are converted from it
            parsed = np.asarray(data)
            kind = parsed.dtype.kind if parsed.size else dtype.kind
            if parsed.dtype == dtype or (kind in "iuf" and dtype.kind in "fV"):  # V: BF16 (ml_dtypes)
                return _reshaped(_float_cast(parsed, dtype, datatype, name), shape, name)
            if parsed.size and kind in "iu" and dtype.kind in "iu":  # astype would wrap: the range is checked first
                info = np.iinfo(dtype)
                for value in (parsed.min(), parsed.max()):
                    if not info.min <= value <= info.max:
                        raise OverflowError(f"Python integer {value} out of bounds for {dtype}")
                return _reshaped(parsed.astype(dtype), shape, name)
            arr = np.asarray(data, dtype=dtype)  # overflow raises here (astype would wrap)
            if kind == "f" and dtype.kind in "iu":  # ints beyond int64 next to others parse as float64
                kind = "i" if all(type(v) is int for v in _flat(data)) else kind
            if kind not in _JSON_KINDS[dtype.kind]:  # 1.7 into INT32 truncated, "false" into BOOL was True
                what = {"b": "true/false", "i": "integers", "u": "integers"}.get(dtype.kind, "numbers")
                raise ProtocolError(f"input '{name}': datatype {datatype} takes JSON {what} as data; got "
                                    f"{_JSON_NAMES.get(kind, 'other values')}")
    except (TypeError, ValueError, OverflowError) as exc:
        raise ProtocolError(f"input '{name}': data does not fit datatype {datatype}: {exc}") from None
    return _reshaped(arr, shape, name)


def _float_cast(parsed: np.ndarray, dtype: np.dtype, datatype: str, name: str) -> np.ndarray:
    """Parsed JSON numbers as a float ``dtype`` (BF16 included); a finite number beyond its range
    (70000 into FP16, 1e39 into BF16) is a 400, where the cast made it infinity without a word."""
    if parsed.dtype == dtype:
        return parsed
    with np.errstate(over="ignore"):
        out = parsed.astype(dtype)
    beyond = np.isinf(out) & np.isfinite(parsed)  # an infinity sent stays one
    if beyond.any():
        if dtype.kind == "f":
            largest = np.finfo(dtype).max
        else:  # BF16: np.finfo does not know it; ml_dtypes, which made the dtype, does
            import ml_dtypes

            largest = ml_dtypes.finfo(dtype).max
        raise ProtocolError(f"input '{name}': value {parsed[beyond].flat[0]} is beyond the range of datatype {datatype} "
                            f"(largest {float(largest):g}); send it in a wider datatype")
    return out


def _reshaped(arr: np.ndarray, shape: tuple[int, ...], name: str) -> np.ndarray:
    count = math.prod(shape)
    if arr.size != count:
        raise ProtocolError(f"input '{name}' has {arr.size} values; shape {list(shape)} needs {count}")
    return arr.reshape(shape)


# the numpy kinds of parsed JSON data each datatype kind takes (Triton: ints for INT/UINT, bools for BOOL)
_JSON_KINDS = {"b": "b", "i": "iu", "u": "iu", "f": "iuf", "V": "iuf"}
_JSON_NAMES = {"b": "true/false", "i": "integers", "u": "integers", "f": "fractional numbers", "U": "strings"}


def _flat(data: Any):
    if isinstance(data, list):
        for d in data:
            yield from _flat(d)
    else:
        yield data


def classify(arr: np.ndarray, k: int, batched: bool, labels: Sequence[str] | None = None) -> np.ndarray:
    """Triton's classification extension: the top ``k`` of each row as ``b"score:index[:label]"``."""
    rows = arr.reshape(arr.shape[0] if batched else 1, -1).astype(np.float64)
    k = min(k, rows.shape[1])
    top = np.argsort(-rows, axis=1, kind="stable")[:, :k]
    out = np.empty(top.shape, dtype=object)
    for r, idx in enumerate(top):
        for c, i in enumerate(idx):
            text = f"{rows[r, i]:f}:{i}" + (f":{labels[i]}" if labels and i < len(labels) else "")
            out[r, c] = text.encode()
    return out if batched else out[0]


def check_outputs(request: InferRequest, outputs: Sequence[TensorSpec]) -> None:
    """Refuse, before the request runs, an output the model does not have or one named twice
    (Triton refuses both; ``outputs``: the model's specs, their names listed only when the
    request names outputs).

    Raises:
        ProtocolError: (400) an unknown output name, or a name given more than once.
    """
    if not request.outputs:
        return
    names = [s.name for s in outputs]
    seen = set()
    for want in request.outputs:
        if want.name not in names:
            raise ProtocolError(f"unknown output '{want.name}'; the model's outputs are {names}")
        if want.name in seen:
            raise ProtocolError(f"output '{want.name}' is requested more than once; name each output once")
        seen.add(want.name)


def requested_outputs(
    outputs: Mapping[str, np.ndarray], request: InferRequest, batched: bool, labels: Sequence[str] | None = None
) -> Iterator[tuple[RequestedOutput, np.ndarray]]:
    """The outputs a request asked for (all when it named none), top-k classified where it asked.

    Raises:
        ProtocolError: (400) an output the model does not have.
    """
    for want in request.outputs or [RequestedOutput(n) for n in outputs]:
        if want.name not in outputs:
            raise ProtocolError(f"unknown output '{want.name}'; the model's outputs are {list(outputs)}")
        arr = np.asarray(outputs[want.name])
        if want.class_count > 0:
            arr = classify(arr, want.class_count, batched, labels)
        yield want, arr


def encode_infer_response(
    model: str,
    version: str,
    outputs: Mapping[str, np.ndarray],
    request: InferRequest,
    batched: bool = True,
    labels: Sequence[str] | None = None,
) -> tuple[bytes, dict[str, str]]:
    """Encode an infer response as Triton does.

    Args:
        model, version: echoed as ``model_name`` / ``model_version``.
        outputs: output name -> array from the engine.
        request: the decoded request (which outputs, binary or JSON, classification).
        batched: the model's first dim is the batch (classification keeps it).
        labels: class labels for classification results.

    Returns:
        The body and the extra headers (``Inference-Header-Content-Length`` when binary).

    Raises:
        ProtocolError: (400) an output the model does not have.
    """
    docs, blobs = [], []
    for want, arr in requested_outputs(outputs, request, batched, labels):
        doc = {"name": want.name, "datatype": triton_dtype(arr.dtype), "shape": list(arr.shape)}
        binary = request.binary_output if want.binary is None else bool(want.binary)
        if binary:
            raw = raw_from_array(arr)
            doc["parameters"] = {"binary_data_size": len(raw)}
            blobs.append(raw)
        elif arr.dtype == object:
            doc["data"] = [b.decode("utf-8", "replace") if isinstance(b, bytes) else str(b) for b in arr.reshape(-1)]
        else:
            doc["data"] = arr.reshape(-1).tolist()
        docs.append(doc)
    head = {"model_name": model, "model_version": version, "outputs": docs}
    if request.id:
        head["id"] = request.id
    text = json.dumps(head, separators=(",", ":")).encode()
    if not blobs:
        return text, {"Content-Type": "application/json"}
    return b"".join([text, *blobs]), {HEADER_LENGTH: str(len(text)), "Content-Type": "application/octet-stream"}


def error_status(exc: BaseException) -> tuple[int, str]:
    """The HTTP status and message a failed request is answered with: a ProtocolError's status;
    400 for bad input (InputError, UsageError); 500 for another trtflow error (EngineError and the
    like: an exit code of 2 on the command line does not make a failure the client's); any other
    exception 500 ``internal error: ...``."""
    if isinstance(exc, ProtocolError):
        return exc.status, str(exc)
    if isinstance(exc, TrtflowError):
        return (400 if isinstance(exc, (InputError, UsageError)) else 500), str(exc)
    return 500, f"internal error: {type(exc).__name__}: {exc}"


def error_body(message: str) -> bytes:
    """Triton's error body: ``{"error": "..."}``."""
    return json.dumps({"error": message}).encode()


# -- metadata and config -------------------------------------------------------------------------
def _dims(spec: TensorSpec, batched: bool) -> list[int]:
    dims = [d if isinstance(d, int) else -1 for d in spec.shape]
    return dims[1:] if batched else dims


def model_metadata(name: str, version: str, inputs: Sequence[TensorSpec], outputs: Sequence[TensorSpec],
                   batched: bool, platform: str = "trtflow") -> dict:
    """``GET /v2/models/{name}``: the shapes include the batch dim (-1) as Triton reports them."""
    def one(spec: TensorSpec, role: str) -> dict:
        dims = _dims(spec, batched)
        return {"name": spec.name, "datatype": spec_datatype(spec, role), "shape": ([-1] if batched else []) + dims}

    return {"name": name, "versions": [version], "platform": platform,
            "inputs": [one(s, "input") for s in inputs], "outputs": [one(s, "output") for s in outputs]}


def model_config(name: str, inputs: Sequence[TensorSpec], outputs: Sequence[TensorSpec], max_batch: int,
                 delay_us: int = 0, preferred: Sequence[int] = (), instances: int = 1,
                 kind: str = "KIND_CPU", backend: str = "trtflow") -> dict:
    """``GET /v2/models/{name}/config``: Triton's model config as JSON (dims exclude the batch dim
    when ``max_batch_size > 0``); parses into ``model_config_pb2.ModelConfig``."""
    batched = max_batch > 0

    def one(spec: TensorSpec, role: str) -> dict:
        datatype = spec_datatype(spec, role)
        return {"name": spec.name, "data_type": "TYPE_" + ("STRING" if datatype == "BYTES" else datatype),
                "dims": _dims(spec, batched)}

    config = {"name": name, "platform": "", "backend": backend, "max_batch_size": max_batch,
              "input": [one(s, "input") for s in inputs], "output": [one(s, "output") for s in outputs],
              "instance_group": [{"name": f"{name}_0", "count": instances, "kind": kind}]}
    if batched:
        config["dynamic_batching"] = {"preferred_batch_size": list(preferred), "max_queue_delay_microseconds": delay_us}
    return config


def log_access(remote: str, method: str, path: str, status: int, start: float, size_in: int, size_out: int) -> None:
    """Write one access-log line (JSON): the request, its status, milliseconds since ``start``
    (``time.perf_counter``), body bytes in and out, and the answering process (``--workers``).
    Callers check ``ACCESS.isEnabledFor(logging.INFO)`` first."""
    ACCESS.info(json.dumps({
        "ts": round(time.time(), 6), "remote": remote, "method": method, "path": path, "status": status,
        "ms": round((time.perf_counter() - start) * 1e3, 3), "in": size_in, "out": size_out, "pid": os.getpid(),
    }, separators=(",", ":")))
