"""Runtime bookkeeping shared by engines, free of any TensorRT call: dtype names, profile choice,
reusable buffers.

TensorRT types are handled by their member names (``DataType.HALF.name == "HALF"``), so this
module runs and is tested without TensorRT or a GPU.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

from trtflow.errors import InputShapeError
from trtflow.spec import Bounds, Profile, Shape, format_shape

# TensorRT DataType member name -> trtflow dtype name (numpy spelling; torch has them all)
TRT_DTYPES = {
    "FLOAT": "float32",
    "HALF": "float16",
    "BF16": "bfloat16",
    "INT8": "int8",
    "UINT8": "uint8",
    "INT32": "int32",
    "INT64": "int64",
    "BOOL": "bool",
    "FP8": "float8_e4m3fn",
}
DTYPE_TRT = {v: k for k, v in TRT_DTYPES.items()}


def dtype_from_trt(datatype: Any) -> str:
    """trtflow dtype name of a TensorRT ``DataType`` (or its member name).

    Raises:
        TypeError: a type with no array equivalent (INT4, FP4, E8M0).
    """
    name = getattr(datatype, "name", str(datatype).rsplit(".", 1)[-1])
    if name not in TRT_DTYPES:
        raise TypeError(f"TensorRT type {name} has no numpy/torch equivalent; trtflow handles {sorted(TRT_DTYPES)}")
    return TRT_DTYPES[name]


def union_bounds(profiles: Sequence[Profile], name: str) -> Bounds | None:
    """One input's bounds over all profiles: smallest min, largest max, profile 0's opt."""
    have = [p for p in profiles if name in p.min]
    if not have:
        return None
    lo = tuple(min(p.min[name][i] for p in have) for i in range(len(have[0].min[name])))
    hi = tuple(max(p.max[name][i] for p in have) for i in range(len(have[0].max[name])))
    return Bounds(lo, tuple(have[0].opt[name]), hi)


def choose_profile(profiles: Sequence[Profile], shapes: Mapping[str, Shape], current: int | None = None) -> int:
    """Index of the profile covering every given shape; the current one is kept when it covers.

    Inputs a profile does not name (static inputs) are not checked against it.

    Raises:
        InputShapeError: no profile covers the shapes; the message lists each profile's ranges.
    """
    if not profiles:
        return 0

    def covers(p: Profile) -> bool:
        return p.covers({n: s for n, s in shapes.items() if n in p.min})

    if current is not None and current < len(profiles) and covers(profiles[current]):
        return current
    for k, p in enumerate(profiles):
        if covers(p):
            return k
    given = ", ".join(f"{n}:{format_shape(s)}" for n, s in shapes.items())
    ranges = "; ".join(
        f"profile {k}: " + ", ".join(f"{n} {format_shape(p.min[n])}..{format_shape(p.max[n])}" for n in p.min)
        for k, p in enumerate(profiles)
    )
    raise InputShapeError(
        f"no optimization profile covers the input shapes {given}; the engine has {ranges}. "
        "Change the batch or size to fit one profile, or rebuild with a profile covering these shapes."
    )


@dataclass
class Slot:
    """One reusable buffer: an array of ``capacity`` elements and the shape it is viewed as now."""

    array: Any
    capacity: int
    shape: Shape
    dtype: str


def volume(shape: Sequence[int]) -> int:
    n = 1
    for d in shape:
        n *= int(d)
    return n


class BufferPool:
    """Buffers by name, reused while the needed size fits, grown (re-allocated) when it does not.

    Args:
        allocate: ``(num_elements, dtype_name) -> flat array`` (e.g. a torch CUDA tensor, or pinned
            host memory); the pool views it with ``view(flat, shape)``.
        view: ``(flat_array, shape) -> array`` of that shape over the first elements.
    """

    def __init__(self, allocate: Callable[[int, str], Any], view: Callable[[Any, Shape], Any]):
        self._allocate = allocate
        self._view = view
        self._slots: dict[str, Slot] = {}
        self.allocations = 0  # how many times memory was allocated (tests and debug logs read it)

    def get(self, name: str, shape: Shape, dtype: str) -> Any:
        """An array of ``shape``/``dtype`` for ``name``, the same memory as last time when it fits."""
        need = max(volume(shape), 1)
        slot = self._slots.get(name)
        if slot is None or slot.dtype != dtype or slot.capacity < need:
            flat = self._allocate(need, dtype)
            self.allocations += 1
            slot = Slot(flat, need, tuple(shape), dtype)
            self._slots[name] = slot
        slot.shape = tuple(shape)
        return self._view(slot.array, tuple(shape))

    def shapes(self) -> dict[str, Shape]:
        return {n: s.shape for n, s in self._slots.items()}

    def clear(self) -> None:
        self._slots.clear()


def torch_pool(device: str, pin_memory: bool = False) -> BufferPool:
    """A pool of torch tensors on ``device`` (e.g. "cuda:0"; "cpu" with ``pin_memory`` for page-locked
    host buffers); host staging is ``trtflow.backends.staging``."""
    import torch

    def allocate(n: int, dtype: str):
        return torch.empty(n, dtype=getattr(torch, dtype), device=device, pin_memory=pin_memory)

    def view(flat, shape):
        return flat[: volume(shape)].view(shape)

    return BufferPool(allocate, view)
