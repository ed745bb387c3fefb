"""TEST DOUBLE of TensorRT's runtime and of CUDA, for hardware this CI lacks. This is not TensorRT.

TensorRT cannot execute on any machine the tests run on, so the runtime's bookkeeping (profile
choice and switching, shapes for every input, buffer reuse, output allocators, CUDA-graph capture
and replay, execution contexts across threads, close while work is in flight) is driven against
this double. It ENFORCES the rules TensorRT documents for ``IExecutionContext`` and fails loudly
(``RuleViolation``) where real TensorRT would misbehave or report an error:

- an optimization profile switch invalidates the input shapes: shapes are set after the profile;
- every input has a shape inside the active profile, every I/O an address (or, for data-dependent
  outputs, an ``IOutputAllocator``) before ``execute_async_v3``;
- addresses are 256-byte aligned (``set_tensor_address`` returns False otherwise, as TensorRT does),
  point into live memory of the right kind (device, or host for ``TensorLocation.HOST``) and are
  large enough for the shape;
- ``set_optimization_profile_async`` raises RuntimeError on failure, as the Python bindings do;
- output allocators are called in the engine's binding order (``reallocate_output_async`` then
  ``notify_shape``), and what they return is checked like an address;
- a graph captured under one profile replays only after an enqueue has applied the profile switch,
  and only while the memory it was captured with is alive;
- an execution context is used by one thread at a time, and only while its engine is alive
  (the engine must outlive its contexts).

Memory: ``FakeCuda`` stands in for CUDA. "Device" memory is 256-byte aligned host memory that it
registers as device memory; streams run work at once, except while a graph is being captured.
It implements the runner's ``CudaOps`` seam (``trtflow/backends/tensorrt/cuda.py``).

Plans are JSON (``plan_bytes``) naming a model of ``MODELS`` (numpy functions) and its I/O.
Every context call is recorded in ``FakeTensorRT.calls``.
"""

from __future__ import annotations

import contextlib
import ctypes
import enum
import itertools
import json
import threading
import weakref
from typing import Any, Callable, Iterator

import numpy as np
import torch

from trtflow.backends.tensorrt.buffers import BufferPool, volume

ALIGNMENT = 256


class RuleViolation(AssertionError):
    """The runtime broke a rule TensorRT documents (see the module docstring)."""


# -- enums of the TensorRT module ---------------------------------------------------------------

DataType = enum.Enum("DataType", "FLOAT HALF BF16 INT8 INT32 INT64 BOOL UINT8 FP8 INT4 FP4 E8M0")
TensorIOMode = enum.Enum("TensorIOMode", "NONE INPUT OUTPUT")
TensorLocation = enum.Enum("TensorLocation", "DEVICE HOST")
BuilderFlag = enum.Enum("BuilderFlag", "VERSION_COMPATIBLE REQUIRE_USER_ALLOCATION")
NUMPY = {"FLOAT": np.float32, "HALF": np.float16, "INT8": np.int8, "INT32": np.int32, "INT64": np.int64,
         "BOOL": np.bool_, "UINT8": np.uint8, "FP8": np.uint8}


# -- models: what the fake engine computes ------------------------------------------------------

def _affine(x):
    return {"y": 2 * x + 1, "s": x.sum(axis=1)}


def _nonzero(x):
    idx = np.nonzero(x > 0)[0].astype(np.int64)
    return {"idx": idx, "vals": x[idx]}


MODELS: dict[str, dict] = {
    # x (N, 4) -> y = 2x + 1 (N, 4), s = row sums (N,)
    "affine": {
        "io": [("x", "INPUT", "FLOAT", (-1, 4)), ("y", "OUTPUT", "FLOAT", (-1, 4)), ("s", "OUTPUT", "FLOAT", (-1,))],
        "shapes": lambda s: {"y": s["x"], "s": s["x"][:1]},
        "run": lambda i: _affine(i["x"]),
    },
    # a, b (N, 4) -> c = a + b
    "add": {
        "io": [("a", "INPUT", "FLOAT", (-1, 4)), ("b", "INPUT", "FLOAT", (-1, 4)), ("c", "OUTPUT", "FLOAT", (-1, 4))],
        "shapes": lambda s: {"c": s["a"]},
        "run": lambda i: {"c": i["a"] + i["b"]},
    },
    # x (N,) -> idx, vals: data-dependent shapes (NonZero), through output allocators
    "nonzero": {
        "io": [("x", "INPUT", "FLOAT", (-1,)), ("idx", "OUTPUT", "INT64", (-1,)), ("vals", "OUTPUT", "FLOAT", (-1,))],
        "shapes": lambda s: {"idx": (-1,), "vals": (-1,)},
        "run": lambda i: _nonzero(i["x"]),
    },
    # x (N, 4) -> y = 2x on the device, n = [N] a shape tensor TensorRT writes to host memory
    "count": {
        "io": [("x", "INPUT", "FLOAT", (-1, 4)), ("y", "OUTPUT", "FLOAT", (-1, 4)), ("n", "OUTPUT", "INT64", (1,), "HOST")],
        "shapes": lambda s: {"y": s["x"], "n": (1,)},
        "run": lambda i: {"y": 2 * i["x"], "n": np.array([i["x"].shape[0]], np.int64)},
    },
    # x (N, 4) -> y in FP8
    "fp8": {
        "io": [("x", "INPUT", "FLOAT", (-1, 4)), ("y", "OUTPUT", "FP8", (-1, 4))],
        "shapes": lambda s: {"y": s["x"]},
        "run": lambda i: {"y": np.zeros(i["x"].shape, np.uint8)},
    },
}


def plan_bytes(model: str, profiles: list[dict[str, tuple]], **options: Any) -> bytes:
    """A fake plan: ``profiles`` as [{input: (min, opt, max)}]; options: ``capturable`` (default
    True), ``capture_fails`` (execute returns False while capturing), ``profile_switch_raises``,
    ``refuse_address`` / ``refuse_allocator`` (tensor names whose set_* call returns False)."""
    return json.dumps({"fake_tensorrt_plan": model, "profiles": profiles, **options}).encode()


# -- fake CUDA: memory, streams, graphs ---------------------------------------------------------

class FakeStream:
    _handles = itertools.count(0x1000)

    def __init__(self):
        self.cuda_stream = next(self._handles)
        self.capturing: FakeGraph | None = None


class FakeGraph:
    """Kernels recorded during capture; ``replay`` runs them with the captured addresses."""

    def __init__(self):
        self.kernels: list[Callable[[], None]] = []
        self.addresses: list[int] = []

    def replay(self) -> None:
        for kernel in self.kernels:
            kernel()


class FakeStaging:
    """Host <-> "device" copies (the real one is ``trtflow.backends.staging.Staging``)."""

    def __init__(self, cuda: "FakeCuda"):
        self.cuda = cuda
        self._up: dict[tuple, Any] = {}

    def upload(self, name: str, t: Any) -> Any:
        key = (name, tuple(t.shape), t.dtype)
        if key not in self._up:
            self._up[key] = self.cuda.empty(tuple(t.shape), t.dtype, "device")
        self._up[key].copy_(t)
        return self._up[key]

    def download(self, name: str, t: Any) -> Any:
        host = self.cuda.empty(tuple(t.shape), t.dtype, "host")
        host.copy_(t)
        return host

    @staticmethod
    def finish(pinned: dict[str, Any]) -> dict[str, np.ndarray]:
        return {n: t.numpy().copy() for n, t in pinned.items()}


class FakeCuda:
    """Implements the runner's ``CudaOps`` seam over host memory registered as device memory."""

    def __init__(self, index: int = 0):
        self.index = index
        self.device = f"fake-cuda:{index}"
        self._allocs: dict[int, tuple[int, str]] = {}  # aligned base -> (bytes, "device" | "host")
        self.streams: dict[int, FakeStream] = {}
        self.graphs: "weakref.WeakSet[FakeGraph]" = weakref.WeakSet()
        self.kept_alive: list[int] = []

    # memory
    def empty(self, shape: tuple[int, ...], dtype: Any, kind: str) -> Any:
        dtype = getattr(torch, dtype) if isinstance(dtype, str) else dtype
        size = max(volume(shape), 1) * torch.empty((), dtype=dtype).element_size()
        raw = np.empty(size + ALIGNMENT, np.uint8)
        off = (-raw.ctypes.data) % ALIGNMENT
        base = raw.ctypes.data + off
        self._allocs[base] = (size, kind)
        weakref.finalize(raw, self._allocs.pop, base, None)
        flat = torch.from_numpy(raw[off:off + size]).view(dtype)
        return flat[: volume(shape)].view(shape)

    def to_device(self, array: Any) -> Any:
        """A caller's "CUDA tensor": the array copied into fake device memory."""
        t = torch.as_tensor(np.asarray(array))
        dev = self.empty(tuple(t.shape), t.dtype, "device")
        dev.copy_(t)
        return dev

    def kind_of(self, address: int, nbytes: int = 1) -> str | None:
        for base, (size, kind) in list(self._allocs.items()):
            if base <= address and address + nbytes <= base + size:
                return kind
        return None

    def array(self, address: int, shape: tuple[int, ...], dtype: Any, kind: str, what: str) -> np.ndarray:
        """A numpy view of live memory of ``kind`` at ``address``; RuleViolation when it is not."""
        count = volume(shape)
        nbytes = count * np.dtype(dtype).itemsize
        got = self.kind_of(address, max(nbytes, 1))
        if got != kind:
            raise RuleViolation(f"{what}: 0x{address:x} is not live {kind} memory of {nbytes} bytes (found: {got})")
        buf = (ctypes.c_char * max(nbytes, 1)).from_address(address)
        return np.frombuffer(buf, dtype=dtype, count=count).reshape(shape)

    # the CudaOps seam
    def scope(self) -> Any:
        return contextlib.nullcontext()

    def new_stream(self) -> FakeStream:
        stream = FakeStream()
        self.streams[stream.cuda_stream] = stream
        return stream

    @staticmethod
    def handle(stream: FakeStream) -> int:
        return stream.cuda_stream

    @contextlib.contextmanager
    def on(self, stream: FakeStream) -> Iterator[None]:
        yield

    def locate(self, t: Any) -> str:
        return "device" if self.kind_of(t.data_ptr()) == "device" else "host"

    def keep_alive(self, t: Any, stream: FakeStream) -> None:
        self.kept_alive.append(t.data_ptr())

    def _pool(self, kind: str) -> BufferPool:
        return BufferPool(lambda n, dtype: self.empty((n,), dtype, kind), lambda flat, shape: flat[: volume(shape)].view(shape))

    def pool(self) -> BufferPool:
        return self._pool("device")

    def host_pool(self) -> BufferPool:
        return self._pool("host")

    def empty_bytes(self, size: int) -> Any:
        return self.empty((max(int(size), 1),), torch.uint8, "device")

    def staging(self, stream: FakeStream) -> FakeStaging:
        return FakeStaging(self)

    @staticmethod
    def synchronize(stream: FakeStream) -> None:
        pass

    def capture(self, stream: FakeStream, enqueue: Callable[[], Any]) -> tuple[FakeGraph, Any]:
        graph = FakeGraph()
        stream.capturing = graph
        try:
            result = enqueue()
        finally:
            stream.capturing = None
        self.graphs.add(graph)
        return graph, result

    @staticmethod
    def replay(graph: FakeGraph) -> None:
        graph.replay()


# -- fake TensorRT: logger, runtime, engine, execution context ----------------------------------

class ILogger:
    Severity = enum.Enum("Severity", "INTERNAL_ERROR ERROR WARNING INFO VERBOSE")

    def __init__(self):
        pass


class IOutputAllocator:
    def __init__(self):
        pass


class FakeTensorRT:
    """Module-like namespace: what the runner reaches through ``flavor.trt``.

    Attributes:
        calls: ``(context number, method, detail)`` for every execution-context call, in order.
        before_execute: called (with the context) at the start of each plain ``execute_async_v3``.
    """

    __version__ = "10.13.0.35"
    DataType, TensorIOMode, TensorLocation, BuilderFlag = DataType, TensorIOMode, TensorLocation, BuilderFlag
    ILogger, IOutputAllocator = ILogger, IOutputAllocator

    def __init__(self, cuda: FakeCuda):
        self.cuda = cuda
        self.calls: list[tuple[int, str, Any]] = []
        self.before_execute: Callable[[Any], None] = lambda ctx: None
        self.contexts_created = 0
        self.contexts_alive = 0

    def Runtime(self, logger: Any) -> "FakeRuntime":  # noqa: N802 (TensorRT's spelling)
        return FakeRuntime(self, logger)

    def init_libnvinfer_plugins(self, logger: Any, namespace: str) -> bool:
        return True


class FakeRuntime:
    def __init__(self, trt: FakeTensorRT, logger: Any):
        self.trt, self.logger = trt, logger

    def deserialize_cuda_engine(self, blob: bytes) -> "FakeEngine | None":
        try:
            plan = json.loads(blob)
            return FakeEngine(self.trt, plan)
        except (ValueError, KeyError) as exc:
            self.logger.log(ILogger.Severity.ERROR, f"fake plan unreadable: {exc}")
            return None


class FakeEngine:
    def __init__(self, trt: FakeTensorRT, plan: dict):
        self.trt, self.plan = trt, plan
        self.model = MODELS[plan["fake_tensorrt_plan"]]
        self.io = {t[0]: {"mode": t[1], "dtype": t[2], "shape": tuple(t[3]), "location": t[4] if len(t) > 4 else "DEVICE"} for t in self.model["io"]}
        self.names = list(self.io)
        self.profiles = [{n: [tuple(s) for s in v] for n, v in p.items()} for p in plan["profiles"]]

    num_io_tensors = property(lambda self: len(self.names))
    num_optimization_profiles = property(lambda self: max(len(self.profiles), 1))

    def get_tensor_name(self, i: int) -> str:
        return self.names[i]

    def get_tensor_mode(self, name: str) -> TensorIOMode:
        return TensorIOMode[self.io[name]["mode"]]

    def get_tensor_dtype(self, name: str) -> DataType:
        return DataType[self.io[name]["dtype"]]

    def get_tensor_shape(self, name: str) -> tuple[int, ...]:
        return self.io[name]["shape"]

    def get_tensor_location(self, name: str) -> TensorLocation:
        return TensorLocation[self.io[name]["location"]]

    def get_tensor_profile_shape(self, name: str, k: int) -> list[tuple[int, ...]]:
        return list(self.profiles[k][name])

    def is_shape_inference_io(self, name: str) -> bool:
        return self.io[name]["location"] == "HOST"

    def create_execution_context(self) -> "FakeContext":
        ctx = FakeContext(self)
        self.trt.contexts_created += 1
        self.trt.contexts_alive += 1
        weakref.finalize(ctx, self.trt.calls.append, (ctx.number, "destroyed", None))
        weakref.finalize(ctx, _dec_alive, self.trt)
        return ctx


def _dec_alive(trt: FakeTensorRT) -> None:
    trt.contexts_alive -= 1


class FakeContext:
    _numbers = itertools.count(1)

    def __init__(self, engine: FakeEngine):
        self._engine = weakref.ref(engine)  # TensorRT: the engine must outlive its contexts
        self.trt, self.cuda, self.number = engine.trt, engine.trt.cuda, next(self._numbers)
        self.profile = 0
        self.pending_profile = False
        self.shapes: dict[str, tuple[int, ...]] = {}
        self.addresses: dict[str, int] = {}
        self.allocators: dict[str, Any] = {}
        self._owner: int | None = None

    # bookkeeping
    def _enter(self, method: str, detail: Any = None) -> FakeEngine:
        engine = self._engine()
        if engine is None:
            raise RuleViolation(f"context {self.number}.{method}: its engine was destroyed while the context is in use")
        me = threading.get_ident()
        if self._owner not in (None, me):
            raise RuleViolation(f"context {self.number}.{method}: used by two threads at once")
        self._owner = me
        self.trt.calls.append((self.number, method, detail))
        return engine

    def _inputs(self, engine: FakeEngine) -> list[str]:
        return [n for n in engine.names if engine.io[n]["mode"] == "INPUT"]

    # the IExecutionContext API
    def set_optimization_profile_async(self, k: int, stream: int) -> bool:
        engine = self._enter("set_optimization_profile_async", k)
        if engine.plan.get("profile_switch_raises"):
            raise RuntimeError(f"Error Code 3: API Usage Error (profile {k} cannot be set)")
        if not 0 <= k < engine.num_optimization_profiles:
            raise RuntimeError(f"Error Code 3: profile index {k} out of range")
        self.profile, self.pending_profile = k, True
        self.shapes.clear()  # shapes must be set again, within the new profile
        return True

    def set_input_shape(self, name: str, shape: tuple) -> bool:
        engine = self._enter("set_input_shape", (name, tuple(shape)))
        spec = engine.io[name]["shape"]
        if len(shape) != len(spec) or any(s >= 0 and s != d for s, d in zip(spec, shape)):
            return False
        if engine.profiles and name in engine.profiles[self.profile]:
            lo, _, hi = engine.profiles[self.profile][name]
            if not all(a <= d <= b for a, d, b in zip(lo, shape, hi)):
                return False  # TensorRT logs an error and returns False
        self.shapes[name] = tuple(int(d) for d in shape)
        return True

    def set_tensor_address(self, name: str, address: int) -> bool:
        engine = self._enter("set_tensor_address", (name, address))
        if address % ALIGNMENT or name in engine.plan.get("refuse_address", ()):
            return False  # TensorRT: the address must be 256-byte aligned
        self.addresses[name] = address
        return True

    def set_output_allocator(self, name: str, allocator: Any) -> bool:
        engine = self._enter("set_output_allocator", name)
        if engine.io[name]["mode"] != "OUTPUT" or name in engine.plan.get("refuse_allocator", ()):
            return False
        self.allocators[name] = allocator
        return True

    def get_tensor_shape(self, name: str) -> tuple[int, ...]:
        return self._shape(self._enter("get_tensor_shape", name), name)

    def _shape(self, engine: FakeEngine, name: str) -> tuple[int, ...]:
        if engine.io[name]["mode"] == "INPUT":
            return self.shapes.get(name, engine.io[name]["shape"])
        if any(n not in self.shapes for n in self._inputs(engine)):
            return engine.io[name]["shape"]
        return tuple(engine.model["shapes"](self.shapes)[name])

    def is_stream_capturable(self, stream: int) -> bool:
        engine = self._enter("is_stream_capturable", stream)
        return bool(engine.plan.get("capturable", True))

    def execute_async_v3(self, stream: int) -> bool:
        if stream not in self.cuda.streams:
            raise RuleViolation(f"execute_async_v3 on stream {stream}, which is not a stream the runtime created")
        graph = self.cuda.streams[stream].capturing
        engine = self._enter("execute_async_v3", "run" if graph is None else "capture")
        try:
            if graph is None:
                self.trt.before_execute(self)
            job = self._check(engine)
            if graph is None:
                self._run(engine, job)
                self.pending_profile = False  # the enqueue applied the profile switch
                return True
            if self.pending_profile:
                raise RuleViolation("captured the first enqueue after a profile switch; enqueue once first")
            if not engine.plan.get("capturable", True) or engine.plan.get("capture_fails") or self.allocators:
                return False  # TensorRT logs why and the capture holds nothing
            profile = self.profile
            graph.addresses += [a for a, *_ in job.values()]
            graph.kernels.append(lambda: self._replay(job, profile))  # holds no engine reference
            return True
        finally:
            self._owner = None

    # checks and execution
    def _check(self, engine: FakeEngine) -> dict[str, tuple]:
        """Every I/O resolved to (address, shape, numpy dtype, memory kind), or a RuleViolation."""
        job = {}
        for name in engine.names:
            spec = engine.io[name]
            kind = "host" if spec["location"] == "HOST" else "device"
            if spec["mode"] == "INPUT":
                if name not in self.shapes:
                    raise RuleViolation(f"enqueue with no shape set for input '{name}' in profile {self.profile}")
                shape = self.shapes[name]
            else:
                shape = self._shape(engine, name)
                if any(d < 0 for d in shape):
                    if name not in self.allocators:
                        raise RuleViolation(f"data-dependent output '{name}' has no output allocator")
                    continue
            if name not in self.addresses:
                raise RuleViolation(f"enqueue with no address set for '{name}'")
            job[name] = (self.addresses[name], shape, NUMPY[spec["dtype"]], kind)
        return job

    def _run(self, engine: FakeEngine, job: dict[str, tuple]) -> None:
        inputs = {n: self.cuda.array(*job[n], f"input '{n}'").copy() for n in self._inputs(engine)}
        results = engine.model["run"](inputs)
        for name in engine.names:  # binding order, allocators included
            if engine.io[name]["mode"] != "OUTPUT":
                continue
            value = np.asarray(results[name], NUMPY[engine.io[name]["dtype"]])
            if name in job:
                self.cuda.array(*job[name], f"output '{name}'")[...] = value
                continue
            alloc = self.allocators[name]
            self.trt.calls.append((self.number, "reallocate_output_async", name))
            address = alloc.reallocate_output_async(name, 0, max(value.nbytes, 1), ALIGNMENT, 0)
            if address % ALIGNMENT:
                raise RuleViolation(f"output allocator for '{name}' returned an unaligned address")
            self.cuda.array(address, value.shape, value.dtype, "device", f"allocated output '{name}'")[...] = value
            self.trt.calls.append((self.number, "notify_shape", name))
            alloc.notify_shape(name, value.shape)

    def _replay(self, job: dict[str, tuple], profile: int) -> None:
        engine = self._engine()
        if engine is None:
            raise RuleViolation("graph replayed after its engine was destroyed")
        if self.profile != profile or self.pending_profile:
            raise RuleViolation(
                f"graph captured under profile {profile} replayed with profile {self.profile} active"
                + (" and no enqueue since the switch" if self.pending_profile else "")
            )
        self.trt.calls.append((self.number, "graph_replay", profile))
        self._run(engine, job)
