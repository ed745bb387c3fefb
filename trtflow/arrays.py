"""Array families (numpy, torch, any DLPack producer) and dtype names shared by every engine.

Engines work in one native family (numpy for ONNX Runtime, torch for the torch and TensorRT
engines). ``to_numpy`` / ``to_torch`` bring a feed there without copying when the memory
allows it; ``Family`` remembers what the caller gave so outputs go back the same way.
"""

from __future__ import annotations

import json
import math
import sys
from dataclasses import dataclass
from typing import Any

import numpy as np

from trtflow.errors import InputError

# numpy dtype name -> torch dtype attribute name
_TORCH_NAMES = {
    "float32": "float32", "float16": "float16", "bfloat16": "bfloat16", "float64": "float64",
    "int8": "int8", "uint8": "uint8", "int16": "int16", "int32": "int32", "int64": "int64", "bool": "bool",
}

# ONNX TensorProto data type -> dtype name
ONNX_DTYPES = {
    1: "float32", 2: "uint8", 3: "int8", 4: "uint16", 5: "int16", 6: "int32", 7: "int64",
    8: "string", 9: "bool", 10: "float16", 11: "float64", 12: "uint32", 13: "uint64", 16: "bfloat16",
}


STRING = "string"  # ONNX's STRING (Triton's BYTES): numpy object arrays of str/bytes


def dtype_name(dtype: Any) -> str:
    """A dtype name from a numpy dtype, a torch dtype or a string ("float", "torch.float16");
    text dtypes (``str``, ``object``, ``<U5``, ``|S3``, "string", "bytes") are ``"string"``.

    Raises:
        TypeError: not a dtype.
    """
    if isinstance(dtype, np.dtype) and dtype.kind in "OUS":
        return STRING
    if dtype in (str, bytes, object) or str(dtype) in (STRING, "str", "bytes", "object", "BYTES"):
        return STRING
    text = str(dtype).replace("torch.", "")
    aliases = {"float": "float32", "half": "float16", "double": "float64", "long": "int64", "int": "int32"}
    text = aliases.get(text, text)
    if text == "bfloat16":
        return text
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(dtype, torch.dtype) and text.startswith(("float8", "complex32")):
        return text  # a torch dtype numpy has no type for
    try:
        found = np.dtype(text)
    except (TypeError, ValueError, SyntaxError):
        raise TypeError(f"'{dtype}' is not a dtype") from None
    return STRING if found.kind in "OUS" else found.name


def to_strings(arr: np.ndarray) -> np.ndarray:
    """A text array as ONNX Runtime takes it: an object array of ``str`` (bytes decoded as UTF-8,
    not turned into ``"b'...'"``).

    Raises:
        InputError: bytes that are not UTF-8 text (ONNX Runtime's string tensors cannot carry them).
    """
    if arr.dtype.kind == "U":
        return arr.astype(object)
    if arr.dtype.kind == "S":
        try:
            return np.char.decode(arr, "utf-8").astype(object)
        except UnicodeDecodeError:
            pass  # the loop below finds the element
    flat = []
    for i, v in enumerate(arr.ravel()):
        if isinstance(v, (bytes, bytearray)):
            try:
                v = bytes(v).decode("utf-8")
            except UnicodeDecodeError:
                where = tuple(int(k) for k in np.unravel_index(i, arr.shape))
                raise InputError(
                    f"a string input holds bytes that are not UTF-8 text at index {where} ({bytes(v)[:16]!r}); "
                    "string tensors hold text: decode the bytes to str first (base64-encode binary data)"
                ) from None
        flat.append(v)
    return np.array(flat + [None], dtype=object)[:-1].reshape(arr.shape)


def numpy_dtype(name: str) -> np.dtype:
    """The numpy dtype that holds a dtype name ("string" -> object, as ONNX Runtime wants it)."""
    return np.dtype(object) if name == STRING else np.dtype(name)


def can_cast(src: str, dst: str) -> bool:
    """True when every value of ``src`` is exactly representable in ``dst``."""
    if src == dst:
        return True
    if STRING in (src, dst):
        return False
    if src.startswith("float8"):  # at most 3 mantissa bits; float16 lacks the range of e8m0's 8 exponent bits
        return dst in ("bfloat16", "float32", "float64") or (dst == "float16" and not src.startswith("float8_e8"))
    if "bfloat16" in (src, dst):
        return src in ("bool", "int8", "uint8") and dst == "bfloat16" or (src == "bfloat16" and dst in ("float32", "float64"))
    try:
        return bool(np.can_cast(np.dtype(src), np.dtype(dst), casting="safe"))
    except TypeError:  # a name numpy cannot rebuild a dtype from (records: "void32")
        return False


def is_torch(x: Any) -> bool:
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(x, torch.Tensor)


def torch_dtype(name: str):
    import torch

    return getattr(torch, _TORCH_NAMES[name])


@dataclass(frozen=True)
class Family:
    """Where a caller's arrays live, so outputs are returned the same way.

    kind: "numpy", "torch" or "dlpack" (another producer, e.g. cupy: outputs go back through
    that library's ``from_dlpack``). device: "cpu" or "cuda:N".
    """

    kind: str
    device: str = "cpu"
    module: str = ""

    @classmethod
    def of(cls, x: Any) -> "Family":
        if isinstance(x, np.ndarray) or np.isscalar(x):
            return cls("numpy")
        if is_torch(x):
            return cls("torch", str(x.device))
        if hasattr(x, "__dlpack__"):
            dev_type, dev_id = x.__dlpack_device__()
            device = "cpu" if dev_type in (1, 3) else f"cuda:{dev_id}"  # kDLCPU, kDLCUDAHost
            return cls("dlpack", device, type(x).__module__.split(".")[0])
        if isinstance(x, (list, tuple)):
            return cls("numpy")
        raise TypeError(f"unsupported array type {type(x).__name__}: give numpy arrays, torch tensors or DLPack objects")

    def wrap(self, x: Any) -> Any:
        """Return an engine output (numpy or torch) in this family."""
        if self.kind == "numpy":
            return to_numpy(x)
        if self.kind == "torch":
            t = to_torch(x)
            return t if str(t.device) == self.device else t.to(self.device)
        lib = sys.modules.get(self.module)
        t = to_torch(x)
        if self.device != "cpu" and t.device.type == "cpu":
            t = t.to(self.device)
        if lib is not None and hasattr(lib, "from_dlpack"):
            return lib.from_dlpack(t)
        return t


def dtype_of(x: Any) -> str:
    if is_torch(x):
        return dtype_name(x.dtype)
    if isinstance(x, np.ndarray):
        return STRING if x.dtype.kind in "OUS" else x.dtype.name
    if hasattr(x, "dtype"):
        try:
            return dtype_name(x.dtype)
        except TypeError:
            pass
    return dtype_name(np.asarray(x).dtype)


def shape_of(x: Any) -> tuple[int, ...]:
    if hasattr(x, "shape"):
        return tuple(int(d) for d in x.shape)
    return np.asarray(x).shape


def to_numpy(x: Any) -> np.ndarray:
    """Host numpy view or copy of any array (torch CPU tensors are shared, not copied)."""
    if isinstance(x, np.ndarray):
        return x
    if is_torch(x):
        t = x.detach()
        if t.is_conj() or t.is_neg():  # numpy() refuses lazy conjugate/negative views
            t = t.resolve_conj().resolve_neg()
        wider = (_WIDER or _wider(sys.modules["torch"])).get(t.dtype)
        if wider is not None:
            t = t.to(wider)
        return t.cpu().numpy() if t.device.type != "cpu" else t.numpy()
    if hasattr(x, "__dlpack__"):
        dev_type, _ = x.__dlpack_device__()
        if dev_type in (1, 3):
            return np.from_dlpack(x)
        return to_numpy(to_torch(x))
    return np.asarray(x)


_WIDER: dict | None = None  # torch dtype numpy has no type for -> one that holds its values exactly (see _wider)


def _wider(torch) -> dict:
    """``_WIDER``, built on first use (whole, then set: threads never see part of it): bfloat16 and
    the float8 types -> float32, complex32 -> complex64."""
    global _WIDER
    if _WIDER is None:
        float8 = [d for d in vars(torch).values() if isinstance(d, torch.dtype) and str(d).startswith("torch.float8")]
        _WIDER = {torch.bfloat16: torch.float32, torch.complex32: torch.complex64, **dict.fromkeys(float8, torch.float32)}
    return _WIDER


def to_torch(x: Any, device: str | None = None):
    """A torch tensor sharing memory with ``x`` where possible (numpy, DLPack; a read-only array is
    copied once), moved if asked."""
    import torch

    if isinstance(x, torch.Tensor):
        t = x
    elif isinstance(x, np.ndarray):
        if not x.dtype.isnative:  # a '>f4' .npy: torch takes native byte order only
            x = x.astype(x.dtype.newbyteorder("="))
        if not x.flags.writeable:  # np.frombuffer's, a decoder's frame: torch cannot share it (it warns), so
            return torch.tensor(x, device=device)  # one copy, straight to the device
        # np.asarray(order="C"), not np.ascontiguousarray, which makes a 0-d array (1,)
        t = torch.from_numpy(np.asarray(x, order="C")) if x.dtype != np.bool_ else torch.from_numpy(x.copy())
    elif hasattr(x, "__dlpack__"):
        t = torch.from_dlpack(x)
    else:
        t = torch.as_tensor(np.asarray(x))
    if device is not None and str(t.device) != device:
        t = t.to(device, non_blocking=True)
    return t


def json_default(obj: Any) -> Any:
    """``json.dumps(..., default=json_default)``: numpy scalars and arrays as numbers and lists,
    objects with ``to_dict()`` (results, reports) as dicts, anything else as its string."""
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if hasattr(obj, "to_dict"):
        return obj.to_dict()
    return str(obj)


def strict_json(data: Any, indent: int | None = None) -> str:
    """``data`` as strict JSON text (``json_default`` for numpy and results): NaN and infinities are
    written as the strings "nan", "inf" and "-inf", since bare ``NaN`` is not JSON and parsers refuse it."""
    try:
        return json.dumps(data, default=json_default, indent=indent, allow_nan=False)
    except ValueError:  # a number that is not finite somewhere
        return json.dumps(_finite(json.loads(json.dumps(data, default=json_default))), indent=indent, allow_nan=False)


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value
