"""TensorRT engine (TensorRT 10/11 or TensorRT-RTX) behind the engine contract.

The modern runtime loop, by tensor name: deserialize once, one execution context per thread,
``set_input_shape`` + ``set_tensor_address`` per call within the profile that covers the shapes,
``execute_async_v3`` on a non-default torch CUDA stream, data-dependent outputs (NMS, NonZero)
through an ``IOutputAllocator``, optional CUDA-graph replay for repeated static shapes. CUDA
memory and streams come from torch; torch CUDA inputs are used in place (``data_ptr``), host
inputs go through pinned staging buffers. Profile choice and buffer reuse are plain Python in
``trtflow.backends.tensorrt.buffers``.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import os
import threading
from pathlib import Path
from typing import Any, Sequence

from trtflow.backends.tensorrt.builder import load_plugins, make_logger
from trtflow.backends.tensorrt.config import BuildConfig
from trtflow.backends.tensorrt.flavor import Flavor, describe_target, flavor_available, gpu_info, load_flavor, target_of
from trtflow.backends.tensorrt.sidecar import incompatibility, io_from_sidecar, read_sidecar
from trtflow.deps import require
from trtflow.backends.base import Engine
from trtflow.backends.tensorrt.buffers import choose_profile, dtype_from_trt, torch_pool, union_bounds, volume
from trtflow.errors import EngineError, EngineIncompatibleError, UsageError
from trtflow.spec import Profile, TensorSpec

log = logging.getLogger(__name__)

PLAN_SUFFIXES = (".plan", ".engine", ".trt")


def runtime_blocker(device: int = 0) -> str | None:
    """Why no TensorRT engine can execute here, or None when one can; never raises."""
    try:
        flavor = flavor_available()
        if flavor is None:
            return "neither tensorrt nor tensorrt_rtx can be imported"
        gpu = gpu_info(device)
        if gpu is None:
            return f"{flavor.label} is installed but there is no CUDA GPU {device} (no driver or no device)"
        if not flavor.supports_cc(gpu.cc):
            return f"{flavor.label} cannot execute on {gpu.name} (compute capability {gpu.cc[0]}.{gpu.cc[1]})"
        import importlib.util

        if importlib.util.find_spec("torch") is None:
            return "the TensorRT engine needs torch (CUDA memory and streams); it is not installed"
        import torch

        if not torch.cuda.is_available():
            return "torch cannot use the GPU (a CPU-only torch build?)"
        return None
    except Exception as exc:
        return f"checking the TensorRT runtime failed: {exc}"


@functools.lru_cache(maxsize=None)
def runtime_usable(device: int = 0) -> bool:
    """True only when a TensorRT flavor imports and can execute on CUDA GPU ``device`` (TensorRT-RTX:
    compute capability in its supported list). Cheap after the first call; never raises."""
    return runtime_blocker(device) is None


def _validity(trt: Any, runtime: Any, blob: bytes) -> str:
    """TensorRT-RTX's own diagnosis of a plan (``get_engine_validity``), or ""."""
    if not hasattr(runtime, "get_engine_validity"):
        return ""
    try:
        validity, diagnostics = runtime.get_engine_validity(blob)
    except Exception:
        return ""
    names = [n for n, v in trt.EngineInvalidityDiagnostics.__members__.items() if int(diagnostics) & int(v)]
    return f"{validity.name}" + (f" ({', '.join(names)})" if names else "")


def deserialize(flavor: Flavor, logger: Any, blob: bytes, source: str, runtime: Any = None) -> Any:
    """``Runtime.deserialize_cuda_engine`` with a clear error when it returns None.

    Pass ``runtime`` and keep it alive as long as the engine (TensorRT wants the runtime to
    outlive the engines it made); without it a new runtime is made for this call.

    Raises:
        EngineIncompatibleError: names this TensorRT, this GPU and TensorRT's reason, with a rebuild hint.
    """
    trt = flavor.trt
    runtime = runtime if runtime is not None else trt.Runtime(logger)
    logger.errors.clear()
    engine = runtime.deserialize_cuda_engine(blob)
    if engine is None:
        why = "; ".join(logger.errors[-2:]) or "no reason given"
        validity = _validity(trt, runtime, blob)
        raise EngineIncompatibleError(
            f"{flavor.label} cannot load {source} on {describe_target(target_of())}: {why}"
            + (f" [engine validity: {validity}]" if validity else "")
            + ". Plans are tied to the TensorRT version and GPU that built them: rebuild it here "
            "(`trtflow build MODEL.onnx --saveEngine PLAN`, or load the .onnx so the cache builds one)."
        )
    return engine


def engine_io(engine: Any, meta: dict | None = None) -> tuple[list[TensorSpec], list[TensorSpec], list[Profile]]:
    """I/O specs and profiles of a deserialized engine, by tensor name; dim names from the sidecar."""
    trt_mode_input = "INPUT"
    named = {}
    if meta:
        for s in [*meta.get("inputs", []), *meta.get("outputs", [])]:
            named[s["name"]] = s["shape"]
    names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
    in_names = [n for n in names if engine.get_tensor_mode(n).name == trt_mode_input]
    profiles = []
    for k in range(engine.num_optimization_profiles):
        lo, mid, hi = {}, {}, {}
        for n in in_names:
            if any(d < 0 for d in engine.get_tensor_shape(n)):
                lo[n], mid[n], hi[n] = (tuple(s) for s in engine.get_tensor_profile_shape(n, k))
        if lo:
            profiles.append(Profile(lo, mid, hi))

    def spec(n: str, bounds=None) -> TensorSpec:
        dims = []
        for i, d in enumerate(engine.get_tensor_shape(n)):
            ref = named.get(n)
            dims.append(int(d) if d >= 0 else (ref[i] if ref and isinstance(ref[i], str) else f"{n}_dim{i}"))
        return TensorSpec(n, dtype_from_trt(engine.get_tensor_dtype(n)), tuple(dims), bounds)

    inputs = [spec(n, union_bounds(profiles, n)) for n in in_names]
    outputs = [spec(n) for n in names if n not in in_names]
    return inputs, outputs, profiles


def read_plan_io(plan: str | os.PathLike, plugins: Sequence[str] = ()) -> dict:
    """Inputs, outputs and profiles of a serialized plan.

    Deserializes the plan where this TensorRT can (``source: "engine"``). Where it cannot (no
    GPU, TensorRT-RTX on an unsupported GPU, another version) the sidecar written at build time
    answers (``source: "sidecar"``, ``reason`` says why the engine was not read).

    Raises:
        EngineIncompatibleError: the plan cannot be deserialized here and has no sidecar.
    """
    path = Path(plan)
    flavor = load_flavor()
    logger = make_logger(flavor.trt)
    load_plugins(flavor.trt, logger, tuple(plugins))
    meta = read_sidecar(path)
    runtime = flavor.trt.Runtime(logger)
    try:
        engine = deserialize(flavor, logger, path.read_bytes(), str(path), runtime)
    except EngineIncompatibleError as exc:
        if meta is None:
            raise
        inputs, outputs, profiles = io_from_sidecar(meta)
        return {"source": "sidecar", "reason": str(exc), "inputs": inputs, "outputs": outputs, "profiles": profiles}
    inputs, outputs, profiles = engine_io(engine, meta)
    return {"source": "engine", "inputs": inputs, "outputs": outputs, "profiles": profiles}


def _is_plan(model: Any) -> bool:
    return isinstance(model, (str, os.PathLike)) and Path(model).suffix.lower() in PLAN_SUFFIXES


def _output_allocator(trt: Any, torch: Any, device: Any) -> Any:
    """An ``IOutputAllocator`` for one data-dependent output: grows a torch byte buffer, records the shape."""

    class OutputAllocator(trt.IOutputAllocator):
        def __init__(self):
            trt.IOutputAllocator.__init__(self)
            self.buffer = None
            self.shape: tuple[int, ...] | None = None

        def _grow(self, size: int) -> int:
            if self.buffer is None or self.buffer.numel() < size:
                self.buffer = torch.empty(max(int(size), 1), dtype=torch.uint8, device=device)
            return self.buffer.data_ptr()

        def reallocate_output(self, tensor_name, memory, size, alignment):
            return self._grow(size)

        def reallocate_output_async(self, tensor_name, memory, size, alignment, stream):
            return self._grow(size)

        def notify_shape(self, tensor_name, shape):
            self.shape = tuple(int(d) for d in shape)

    return OutputAllocator()


class _ContextState:
    """One thread's execution context, stream, buffers, output allocators and captured graphs."""

    def __init__(self, engine: Any, trt: Any, device: Any, outputs: list[TensorSpec]):
        import torch

        self.torch, self.trt, self.device, self.outputs = torch, trt, device, outputs
        with torch.cuda.device(device):
            self.context = engine.create_execution_context()
            if self.context is None:
                raise EngineError("TensorRT could not create an execution context (out of GPU memory?)")
            self.stream = torch.cuda.Stream(device)
        self.profile: int | None = None
        from trtflow.backends.staging import Staging

        self.inputs = torch_pool(str(device))  # device copies of CUDA inputs (CUDA-graph mode only)
        self.outputs_pool = torch_pool(str(device))
        self.staging = Staging(device, stream=self.stream)  # pinned host <-> device, shared with the torch engine
        self.allocators: dict[str, Any] = {}
        self.graphs: dict[tuple, Any] = {}

    def _set_profile(self, k: int) -> None:
        if self.profile != k:
            if not self.context.set_optimization_profile_async(k, self.stream.cuda_stream):
                raise EngineError(f"TensorRT refused optimization profile {k}")
            self.profile = k

    def _bind_input(self, name: str, t: Any, shape: tuple[int, ...], copy: bool) -> Any:
        if t.device.type == "cpu":
            dev = self.staging.upload(name, t)  # pinned buffer, then an async copy on our stream
        elif t.device != self.device:
            raise UsageError(
                f"input '{name}' is on {t.device} but the engine runs on {self.device}; move it with "
                f".to('{self.device}') or load the engine with device={t.device.index}"
            )
        elif t.is_contiguous() and not copy:
            t.record_stream(self.stream)  # zero copy: keep the caller's memory alive for our stream
            dev = t
        else:  # CUDA graphs replay fixed addresses: copy into this context's own buffer
            dev = self.inputs.get(name, shape, str(t.dtype).replace("torch.", ""))
            dev.copy_(t, non_blocking=True)
        if not self.context.set_input_shape(name, shape):
            raise EngineError(f"TensorRT refused shape {shape} for input '{name}' in profile {self.profile}")
        self.context.set_tensor_address(name, dev.data_ptr())
        return dev

    def run(self, feed: dict[str, Any], shapes: dict, k: int, use_graph: bool) -> dict[str, Any]:
        torch = self.torch
        host_caller = any(t.device.type == "cpu" for t in feed.values())
        with torch.cuda.device(self.device):
            self.stream.wait_stream(torch.cuda.current_stream(self.device))
            with torch.cuda.stream(self.stream):
                self._set_profile(k)
                bound = {n: self._bind_input(n, t, shapes[n], copy=use_graph) for n, t in feed.items()}
                outs: dict[str, Any] = {}
                for spec in self.outputs:
                    shape = tuple(self.context.get_tensor_shape(spec.name))
                    if any(d < 0 for d in shape):
                        if use_graph:
                            raise UsageError(
                                f"use_cuda_graph needs output shapes that follow the input shapes; output "
                                f"'{spec.name}' depends on the data (NMS/NonZero). Load with use_cuda_graph=False."
                            )
                        if spec.name not in self.allocators:
                            self.allocators[spec.name] = _output_allocator(self.trt, torch, self.device)
                            self.context.set_output_allocator(spec.name, self.allocators[spec.name])
                        continue
                    buf = self.outputs_pool.get(spec.name, shape, spec.dtype)
                    self.context.set_tensor_address(spec.name, buf.data_ptr())
                    outs[spec.name] = buf
                self._execute(use_graph, k, bound, outs)
                if self.allocators:
                    self.stream.synchronize()  # data-dependent shapes are known once the work is done
                    dtypes = {s.name: getattr(torch, s.dtype) for s in self.outputs}
                    for name, alloc in self.allocators.items():
                        shape = alloc.shape or (0,)
                        nbytes = volume(shape) * torch.empty((), dtype=dtypes[name]).element_size()
                        outs[name] = alloc.buffer[:nbytes].view(dtypes[name]).view(shape)
                if host_caller:  # through pinned buffers; numpy copies once the stream is done
                    return self.staging.finish({s.name: self.staging.download(s.name, outs[s.name]) for s in self.outputs})
                # a clone, so the next call does not overwrite what the caller holds
                result = {s.name: outs[s.name].clone() for s in self.outputs}
            torch.cuda.current_stream(self.device).wait_stream(self.stream)
            return result

    def _execute(self, use_graph: bool, k: int, bound: dict, outs: dict) -> None:
        torch = self.torch
        if not use_graph:
            if not self.context.execute_async_v3(self.stream.cuda_stream):
                raise EngineError("TensorRT execute_async_v3 failed; run with -v for TensorRT's log")
            return
        key = (k, *((n, tuple(t.shape), t.data_ptr()) for n, t in [*bound.items(), *outs.items()]))
        graph = self.graphs.get(key)
        if graph is None:
            if not self.context.execute_async_v3(self.stream.cuda_stream):  # warm-up, as capture needs
                raise EngineError("TensorRT execute_async_v3 failed; run with -v for TensorRT's log")
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph, stream=self.stream, capture_error_mode="thread_local"):
                self.context.execute_async_v3(self.stream.cuda_stream)
            self.graphs[key] = graph
            log.debug("captured a CUDA graph for %s", key[1:])
        graph.replay()

    def close(self) -> None:
        self.graphs.clear()
        self.allocators.clear()
        self.context = None


class TensorRTEngine(Engine):
    """Runs a TensorRT engine built from an ONNX model (through the engine cache) or a plan file.

    Args:
        model: an ONNX path/bytes/ModelProto (built, or reused from the cache) or a plan path
            (``.plan``/``.engine``/``.trt``).
        profiles: optimization profiles for the build (default: inferred, see ``trtflow build``).
        build_config: other build options; ``profiles``/``plugins`` given here override its own.
        use_cuda_graph: capture each new static shape set in a CUDA graph and replay it.
        plugins: plugin libraries loaded (ctypes) before deserialization.
        device: CUDA device index.
        cache: build ONNX models through the engine cache (False: build in memory every time).
        min_shapes, opt_shapes, max_shapes: one more profile as name -> shape dicts (trtexec's
            --minShapes/--optShapes/--maxShapes), appended to ``profiles``.

    Raises:
        EngineIncompatibleError: no TensorRT can execute on this machine, or the plan was built
            for another TensorRT or GPU (a cached plan is rebuilt once first).
        BuildError, UsageError, MissingDependencyError: as ``trtflow.backends.tensorrt.build_engine``.
    """

    name = "tensorrt"
    native = "torch"

    def __init__(
        self,
        model: Any,
        *,
        profiles: Sequence[Profile] | None = None,
        build_config: BuildConfig | None = None,
        use_cuda_graph: bool = False,
        plugins: Sequence[str] = (),
        device: int = 0,
        cache: bool = True,
        min_shapes: dict | None = None,
        opt_shapes: dict | None = None,
        max_shapes: dict | None = None,
    ):
        blocker = runtime_blocker(device)
        if blocker is not None:
            raise EngineIncompatibleError(
                f"the TensorRT engine cannot execute here: {blocker}. Use engine='ort' or 'torch' on this machine, "
                "or run on a GPU the installed TensorRT supports (TensorRT-RTX: Ampere, Ada, Blackwell RTX)."
            )
        self._torch = require("torch", "the TensorRT engine")
        self.flavor = load_flavor()
        config = build_config or BuildConfig()
        if min_shapes or opt_shapes or max_shapes:
            from trtflow.spec import make_profile

            profiles = [*(profiles or config.profiles), make_profile(min_shapes, opt_shapes, max_shapes)]
        if profiles is not None:
            config = dataclasses.replace(config, profiles=list(profiles))
        if plugins:
            config = dataclasses.replace(config, plugins=tuple(plugins))
        self.device = self._torch.device("cuda", device)
        self.use_cuda_graph = use_cuda_graph
        self._logger = make_logger(self.flavor.trt)
        load_plugins(self.flavor.trt, self._logger, config.plugins)
        self._runtime = self.flavor.trt.Runtime(self._logger)  # outlives the engine
        with self._torch.cuda.device(self.device):
            self._engine, self.meta = self._load(model, config, cache)
        inputs, outputs, self.profiles = engine_io(self._engine, self.meta)
        shape_io = [s.name for s in inputs if self._engine.is_shape_inference_io(s.name)]
        if shape_io:
            raise EngineError(f"inputs {shape_io} are shape tensors, which trtflow's TensorRT runtime does not feed")
        super().__init__(inputs, outputs)
        self._local = threading.local()
        self._states: list[Any] = []
        self._lock = threading.Lock()

    # -- loading --------------------------------------------------------------------------
    def _load(self, model: Any, config: BuildConfig, cache: bool) -> tuple[Any, dict | None]:
        if _is_plan(model):
            path = Path(model)
            meta = read_sidecar(path)
            why = incompatibility(meta, self.flavor, target_of(self.device.index)) if meta else None
            if why:
                raise EngineIncompatibleError(f"{path}: {why}. Rebuild it with `trtflow build MODEL.onnx --saveEngine {path}`.")
            return deserialize(self.flavor, self._logger, path.read_bytes(), str(path), self._runtime), meta
        if not cache:
            from trtflow.backends.tensorrt.builder import build_engine
            from trtflow.backends.tensorrt.sidecar import make_sidecar

            result = build_engine(model, config, flavor=self.flavor)
            return deserialize(self.flavor, self._logger, result.plan, "the engine just built", self._runtime), make_sidecar(result)
        from trtflow.backends.tensorrt.cache import EngineCache

        store = EngineCache()
        entry = store.get_or_build(model, config, flavor=self.flavor)
        try:
            return deserialize(self.flavor, self._logger, entry.plan(), str(entry.plan_path), self._runtime), entry.meta
        except EngineIncompatibleError as exc:
            if not entry.hit:
                raise
            log.warning("cached plan refused (%s); rebuilding", exc)
            entry = store.get_or_build(model, config, flavor=self.flavor, force=True)
            return deserialize(self.flavor, self._logger, entry.plan(), str(entry.plan_path), self._runtime), entry.meta

    # -- per-thread state -----------------------------------------------------------------
    def _state(self) -> Any:
        state = getattr(self._local, "state", None)
        if state is None:
            state = _ContextState(self._engine, self.flavor.trt, self.device, self.outputs)
            self._local.state = state
            with self._lock:
                self._states.append(state)
        return state

    # -- the contract ---------------------------------------------------------------------
    def _infer(self, feed: dict[str, Any]) -> dict[str, Any]:
        shapes = {n: tuple(int(d) for d in t.shape) for n, t in feed.items()}
        state = self._state()
        k = choose_profile(self.profiles, shapes, state.profile)
        return state.run(feed, shapes, k, self.use_cuda_graph)

    def close(self) -> None:
        for state in getattr(self, "_states", []):
            state.close()
        self._states = []
        self._engine = None
        super().close()
