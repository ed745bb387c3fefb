"""TensorRT engine (TensorRT 10/11 or TensorRT-RTX) behind the engine contract.

The modern runtime loop, by tensor name: deserialize once; a bounded pool of execution contexts
(``contexts.py``), each on its own stream, handed out one call at a time; per call
``set_input_shape`` + ``set_tensor_address`` within the profile that covers the shapes,
``execute_async_v3``, data-dependent outputs through an ``IOutputAllocator`` and optional
CUDA-graph replay (``execution.py``, ``graphs.py``). CUDA memory, streams and capture come from
torch through ``cuda.CudaOps``, the one seam a test double replaces; profile choice and buffer
reuse are plain Python in ``buffers.py``.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

from trtflow.backends.base import Engine
from trtflow.backends.tensorrt.buffers import choose_profile, dtype_from_trt, union_bounds
from trtflow.backends.tensorrt.builder import load_plugins, make_logger
from trtflow.backends.tensorrt.config import BuildConfig
from trtflow.backends.tensorrt.contexts import ContextPool
from trtflow.backends.tensorrt.cuda import CudaOps, runtime_blocker, runtime_usable
from trtflow.backends.tensorrt.execution import ExecutionState
from trtflow.backends.tensorrt.flavor import Flavor, describe_target, load_flavor, target_of
from trtflow.backends.tensorrt.sidecar import incompatibility, io_from_sidecar, read_sidecar
from trtflow.deps import require
from trtflow.errors import EngineError, EngineIncompatibleError, UsageError
from trtflow.spec import Profile, TensorSpec

if TYPE_CHECKING:
    from trtflow.backends.tensorrt.cache import CacheEntry

log = logging.getLogger(__name__)

__all__ = ["TensorRTEngine", "deserialize", "engine_io", "read_plan_io", "runtime_blocker", "runtime_usable"]

PLAN_SUFFIXES = (".plan", ".engine", ".trt")
UNSUPPORTED_IO = {"float8_e4m3fn": "FP8"}  # dtypes trtflow cannot pass in or out (numpy has no FP8)
DEFAULT_MAX_CONTEXTS = 4  # execution contexts per engine: concurrent calls beyond this wait


def open_device(index: int) -> CudaOps:
    """The CUDA operations of device ``index``, once a TensorRT is known to execute there.

    Raises:
        EngineIncompatibleError: no TensorRT can execute on this machine's GPU ``index``.
    """
    blocker = runtime_blocker(index)
    if blocker is not None:
        raise EngineIncompatibleError(
            f"the TensorRT engine cannot execute here: {blocker}. Use --engine ort or torch (engine=\"ort\") on this machine, "
            "or run on a GPU the installed TensorRT supports (TensorRT-RTX: Ampere, Ada, Blackwell RTX)."
        )
    require("torch", "the TensorRT engine")
    return CudaOps(index)


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


def deserialize(flavor: Flavor, logger: Any, blob: bytes, source: str, runtime: Any = None, device: int = 0) -> Any:
    """``Runtime.deserialize_cuda_engine`` with a clear error when it returns None.

    Pass ``runtime`` and keep it alive as long as the engine (TensorRT wants the runtime to
    outlive the engines it made); without it a new runtime is made for this call. ``device`` is
    the CUDA device the engine is for (named in the error).

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
            f"{flavor.label} cannot load {source} on {describe_target(target_of(device))}: {why}"
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


def read_plan_io(plan: str | os.PathLike, plugins: Sequence[str] = (), device: int = 0) -> dict:
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
        engine = deserialize(flavor, logger, path.read_bytes(), str(path), runtime, device)
    except EngineIncompatibleError as exc:
        if meta is None:
            raise
        inputs, outputs, profiles = io_from_sidecar(meta)
        return {"source": "sidecar", "reason": str(exc), "inputs": inputs, "outputs": outputs, "profiles": profiles}
    inputs, outputs, profiles = engine_io(engine, meta)
    return {"source": "engine", "inputs": inputs, "outputs": outputs, "profiles": profiles}


def _is_plan(model: Any) -> bool:
    return isinstance(model, (str, os.PathLike)) and Path(model).suffix.lower() in PLAN_SUFFIXES


def _location(engine: Any, name: str) -> str:
    """"DEVICE" or "HOST": where TensorRT reads or writes a tensor (shape tensors live on the host)."""
    get = getattr(engine, "get_tensor_location", None)
    return get(name).name if get is not None else "DEVICE"


class TensorRTEngine(Engine):
    """Runs a TensorRT engine built from an ONNX model (through the engine cache) or a plan file.

    Args:
        model: an ONNX path/bytes/ModelProto (built, or reused from the cache) or a plan path
            (``.plan``/``.engine``/``.trt``).
        profiles: optimization profiles for the build (default: inferred, see ``trtflow build``).
        build_config: other build options; ``profiles``/``plugins`` given here override its own.
        use_cuda_graph: capture each new (profile, shapes) set in a CUDA graph and replay it. On
            TensorRT-RTX the build then sets ``REQUIRE_USER_ALLOCATION``; a plan built without it
            is refused.
        plugins: plugin libraries loaded (ctypes) before deserialization.
        device: CUDA device index; the cache key, sidecar target and GPU check use this device.
        cache: build ONNX models through the engine cache (False: build in memory every time).
        rebuild: build the cached plan of an ONNX model again even when a usable one exists (a plan
            file: refused).
        min_shapes, opt_shapes, max_shapes: one more profile as name -> shape dicts (trtexec's
            --minShapes/--optShapes/--maxShapes), appended to ``profiles``.
        max_contexts: execution contexts kept at most; concurrent calls beyond it wait for one.

    Attributes:
        cache_entry: the engine cache's entry the plan came from (``hit`` says whether it was
            reused, ``plan_path`` where it is), without its bytes; None for a plan file or ``cache=False``.

    Raises:
        EngineIncompatibleError: no TensorRT can execute on this machine, or the plan was built
            for another TensorRT or GPU (a cached plan is rebuilt once first).
        EngineError: the engine has I/O trtflow cannot feed (shape-tensor or host inputs, FP8).
        UsageError: CUDA graphs asked for a TensorRT-RTX plan built without REQUIRE_USER_ALLOCATION;
            ``rebuild=True`` with a plan file.
        BuildError, MissingDependencyError: as ``trtflow.backends.tensorrt.build_engine``.
    """

    name = "tensorrt"
    native = "torch"
    on_gpu = True  # TensorRT executes on a CUDA GPU only

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
        rebuild: bool = False,
        min_shapes: dict | None = None,
        opt_shapes: dict | None = None,
        max_shapes: dict | None = None,
        max_contexts: int = DEFAULT_MAX_CONTEXTS,
    ):
        if rebuild and _is_plan(model):
            raise UsageError(f"rebuild=True rebuilds the engine cache's plan of an ONNX model; {model} is a plan file, "
                             f"which would load as it is. Rebuild it from its ONNX model: `trtflow build MODEL.onnx "
                             f"--saveEngine {model}`, or load the ONNX model with rebuild=True.")
        self._ops = open_device(device)
        self.flavor = load_flavor()
        config = build_config or BuildConfig()
        if min_shapes or opt_shapes or max_shapes:
            from trtflow.spec import make_profile

            profiles = [*(profiles or config.profiles), make_profile(min_shapes, opt_shapes, max_shapes)]
        if profiles is not None:
            config = dataclasses.replace(config, profiles=list(profiles))
        if plugins:
            config = dataclasses.replace(config, plugins=tuple(plugins))
        if use_cuda_graph:
            config = config.for_cuda_graphs(self.flavor.is_rtx)
        self.device = self._ops.device
        self.device_index = device
        self.use_cuda_graph = use_cuda_graph
        self._logger = make_logger(self.flavor.trt)
        load_plugins(self.flavor.trt, self._logger, config.plugins)
        self._runtime = self.flavor.trt.Runtime(self._logger)  # outlives the engine
        self.cache_entry: CacheEntry | None = None
        with self._ops.scope():
            self._engine, self.meta = self._load(model, config, cache, rebuild)
        inputs, outputs, self.profiles = engine_io(self._engine, self.meta)
        self._check_io(inputs, outputs)
        if use_cuda_graph:
            self._check_graphs(model)
        self._host_outputs = frozenset(s.name for s in outputs if _location(self._engine, s.name) == "HOST")
        super().__init__(inputs, outputs)
        self._pool = ContextPool(self._new_state, max_contexts, on_drained=self._release_engine)

    # -- loading --------------------------------------------------------------------------
    def _load(self, model: Any, config: BuildConfig, cache: bool, rebuild: bool) -> tuple[Any, dict | None]:
        n = self.device_index
        if _is_plan(model):
            path = Path(model)
            meta = read_sidecar(path)
            why = incompatibility(meta, self.flavor, target_of(n)) if meta else None
            if why:
                raise EngineIncompatibleError(f"{path}: {why}. Rebuild it with `trtflow build MODEL.onnx --saveEngine {path}`.")
            return deserialize(self.flavor, self._logger, path.read_bytes(), str(path), self._runtime, n), meta
        if not cache:
            from trtflow.backends.tensorrt.builder import build_engine
            from trtflow.backends.tensorrt.sidecar import make_sidecar

            result = build_engine(model, config, flavor=self.flavor, device=n)
            engine = deserialize(self.flavor, self._logger, result.plan, "the engine just built", self._runtime, n)
            return engine, make_sidecar(result, config=config.key_dict())
        from trtflow.backends.tensorrt.cache import EngineCache

        store = EngineCache()
        entry = store.get_or_build(model, config, flavor=self.flavor, force=rebuild, device=n)
        try:
            engine = deserialize(self.flavor, self._logger, entry.plan(), str(entry.plan_path), self._runtime, n)
        except EngineIncompatibleError as exc:
            if not entry.hit:
                raise
            log.warning("cached plan refused (%s); rebuilding", exc)
            entry = store.get_or_build(model, config, flavor=self.flavor, force=True, device=n)
            engine = deserialize(self.flavor, self._logger, entry.plan(), str(entry.plan_path), self._runtime, n)
        self.cache_entry = dataclasses.replace(entry, data=None)
        return engine, entry.meta

    def _check_io(self, inputs: list[TensorSpec], outputs: list[TensorSpec]) -> None:
        """Refuse at load what the runtime cannot feed or return, rather than failing mid-call."""
        engine = self._engine
        shape_io = [s.name for s in inputs if engine.is_shape_inference_io(s.name) or _location(engine, s.name) == "HOST"]
        if shape_io:
            raise EngineError(f"inputs {shape_io} are shape tensors (host memory), which trtflow's TensorRT runtime does not feed")
        odd = [f"'{s.name}' ({UNSUPPORTED_IO[s.dtype]})" for s in [*inputs, *outputs] if s.dtype in UNSUPPORTED_IO]
        if odd:
            raise EngineError(
                f"engine I/O {', '.join(odd)} cannot be passed in or out by trtflow (numpy has no FP8 type). "
                "Keep FP8 inside the network (Q/DQ nodes) with float16/float32 inputs and outputs, and rebuild."
            )

    def _check_graphs(self, model: Any) -> None:
        """TensorRT-RTX captures CUDA graphs only of plans built with REQUIRE_USER_ALLOCATION."""
        if not self.flavor.is_rtx or ((self.meta or {}).get("config") or {}).get("require_user_allocation"):
            return
        said = "its sidecar says it was built without it" if self.meta else "it has no sidecar saying it was built with it"
        raise UsageError(
            f"use_cuda_graph=True on {self.flavor.label} needs a plan built with REQUIRE_USER_ALLOCATION; {model}: {said}. "
            "Load the ONNX model with use_cuda_graph=True (the build then sets it), build with "
            "BuildConfig(require_user_allocation=True), or load this plan with use_cuda_graph=False."
        )

    # -- execution contexts ---------------------------------------------------------------
    def _new_state(self) -> ExecutionState:
        return ExecutionState(self._engine, self.flavor.trt, self._ops, self.outputs, self._host_outputs)

    def _release_engine(self) -> None:
        self._engine = None  # after every context: TensorRT frees contexts before their engine

    # -- the contract ---------------------------------------------------------------------
    def _infer(self, feed: dict[str, Any]) -> dict[str, Any]:
        shapes = {n: tuple(t.shape) for n, t in feed.items()}  # torch.Size holds ints
        key = tuple(shapes.values())
        with self._pool.acquire() as state:
            last, k = state.chosen
            if key != last:  # the same shapes as this context's last call choose the same profile again
                k = choose_profile(self.profiles, shapes, state.profile)
                state.chosen = (key, k)
            return state.run(feed, shapes, k, self.use_cuda_graph)

    def close(self) -> None:
        """Refuse new calls; contexts still running finish first, then the engine is freed."""
        super().close()
        pool = getattr(self, "_pool", None)
        if pool is not None:
            pool.close()
        else:
            self._engine = None
