"""``build_engine``: ONNX -> serialized TensorRT plan, on TensorRT 10/11 or TensorRT-RTX.

The steps are written out: load the ONNX, complete the profiles, plan the precision, parse,
read the engine's I/O from the network, configure the builder, and build.
"""

from __future__ import annotations

import ctypes
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from trtflow.backends.tensorrt.config import MEM_POOLS, BuildConfig, hardware_level
from trtflow.backends.tensorrt.flavor import Flavor, gpu_info, load_flavor, target_of
from trtflow.backends.tensorrt.parser_errors import (build_failures, format_failures, is_workspace_failure,
                                                     name_nms_tensors, parser_failures)
from trtflow.backends.tensorrt.precision import PrecisionPlan, plan_precision
from trtflow.backends.tensorrt.profiles import complete_profiles
from trtflow.backends.tensorrt.progress import monitor_for
from trtflow.backends.tensorrt.sidecar import atomic_write
from trtflow.backends.tensorrt.buffers import dtype_from_trt, union_bounds
from trtflow.errors import BuildError, ModelLoadError, UsageError
from trtflow.graph.io import ModelLike, load_onnx, onnx_specs
from trtflow.progress import Progress
from trtflow.spec import Profile, TensorSpec

log = logging.getLogger(__name__)


@dataclass
class BuildResult:
    """A built engine and what went into it.

    Attributes:
        plan: the serialized engine.
        flavor, version: the TensorRT that built it.
        target: the GPU of the build machine (name, compute capability), or none.
        build_seconds: wall time of parse + build.
        profiles: the profiles built (given, completed or inferred).
        notes: profile inferences to show the user (never silently 1).
        precision: the precision path taken (``PrecisionPlan.to_dict()``).
        inputs, outputs: I/O specs; input bounds span all profiles.
    """

    plan: bytes
    flavor: str
    version: str
    target: dict
    build_seconds: float
    profiles: list[Profile]
    notes: list[str]
    precision: dict
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    extra: dict = field(default_factory=dict)

    @property
    def engine_bytes(self) -> int:
        return len(self.plan)

    def to_dict(self) -> dict:
        return {
            "flavor": self.flavor,
            "version": self.version,
            "target": self.target,
            "build_seconds": round(self.build_seconds, 3),
            "engine_bytes": self.engine_bytes,
            "profiles": [p.to_dict() for p in self.profiles],
            "inferred_profiles": self.notes,
            "precision": self.precision,
            "inputs": [s.to_dict() for s in self.inputs],
            "outputs": [s.to_dict() for s in self.outputs],
        }


def make_logger(trt: Any) -> Any:
    """A TensorRT logger that keeps ERROR lines (for failure reports) and forwards to logging."""

    class Logger(trt.ILogger):
        def __init__(self):
            trt.ILogger.__init__(self)
            self.errors: list[str] = []

        def log(self, severity, msg):
            sev = getattr(severity, "name", str(severity))
            if sev in ("ERROR", "INTERNAL_ERROR"):
                self.errors.append(msg)
                log.debug("TensorRT: %s", msg)
            elif sev == "WARNING":
                log.debug("TensorRT warning: %s", msg)

    return Logger()


def load_plugins(trt: Any, logger: Any, plugins: tuple[str, ...] | list[str]) -> None:
    """Load plugin libraries (ctypes, globally) and register TensorRT's own plugins.

    Raises:
        ModelLoadError: a library is missing or cannot be loaded.
    """
    for lib in plugins:
        if not Path(lib).exists():
            raise ModelLoadError(f"plugin library not found: {lib}")
        try:
            ctypes.CDLL(str(lib), mode=ctypes.RTLD_GLOBAL)
        except OSError as exc:
            raise ModelLoadError(f"cannot load plugin library {lib}: {exc}") from None
    if hasattr(trt, "init_libnvinfer_plugins"):
        trt.init_libnvinfer_plugins(logger, "")


def _network_flags(trt: Any, plan: PrecisionPlan, flavor: Flavor) -> int:
    if plan.strongly_typed and not flavor.always_strongly_typed:
        return 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    return 0  # explicit batch is the only mode since TensorRT 10; 11 and RTX are always strongly typed


def _all_parse_failures(trt: Any, builder: Any, logger: Any, data: bytes, parser: Any, flavor: Flavor) -> list[dict]:
    """Every failing node: ``supports_model_v2`` keeps going past the first error, ``parse`` does not."""
    network = builder.create_network(0)
    checker = trt.OnnxParser(network, logger)
    failures: list[dict] = []
    if hasattr(checker, "supports_model_v2"):
        try:
            checker.supports_model_v2(data)
            failures = parser_failures(checker, flavor)
        except Exception as exc:  # older parsers: the first error is still reported below
            log.debug("supports_model_v2 failed: %s", exc)
    known = {f["node"] for f in failures}
    return failures + [f for f in parser_failures(parser, flavor) if f["node"] not in known]


def parse_network(trt: Any, builder: Any, logger: Any, proto: Any, flags: int, flavor: Flavor):
    """Create a network and parse ``proto`` into it.

    Returns:
        ``(network, parser)``; keep both alive while the network is used.

    Raises:
        BuildError: the parser failed; ``failures`` names each failing node.
    """
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    data = proto.SerializeToString()
    if not parser.parse(data):
        failures = name_nms_tensors(_all_parse_failures(trt, builder, logger, data, parser, flavor), proto)
        raise BuildError(
            f"{flavor.label} could not parse the ONNX model: {len(failures)} failing node(s): "
            f"{format_failures(failures)}",
            failures,
            stage="parse",
        )
    return network, parser


def _configure(
    trt: Any, builder: Any, config: BuildConfig, plan: PrecisionPlan, profiles: list[Profile], network: Any, flavor: Flavor, device: int = 0
):
    cfg = builder.create_builder_config()
    for pool, size in config.mem_pool_size.items():
        cfg.set_memory_pool_limit(getattr(trt.MemoryPoolType, MEM_POOLS[pool]), size)
    if config.builder_optimization_level is not None:
        cfg.builder_optimization_level = config.builder_optimization_level
    for flag in plan.flags:
        cfg.set_flag(getattr(trt.BuilderFlag, flag))
    if config.version_compatible:
        cfg.set_flag(trt.BuilderFlag.VERSION_COMPATIBLE)
    if config.hardware_compatibility_level is not None:
        cfg.hardware_compatibility_level = getattr(
            trt.HardwareCompatibilityLevel, hardware_level(config.hardware_compatibility_level)
        )
    if config.require_user_allocation:
        if not hasattr(trt.BuilderFlag, "REQUIRE_USER_ALLOCATION"):
            raise UsageError(f"{flavor.label} has no BuilderFlag.REQUIRE_USER_ALLOCATION (CUDA-graph capture on TensorRT-RTX needs it)")
        cfg.set_flag(trt.BuilderFlag.REQUIRE_USER_ALLOCATION)
    if flavor.is_rtx:
        _rtx_targets(trt, cfg, device)
    names = {network.get_input(i).name for i in range(network.num_inputs)}
    for p in profiles:
        prof = builder.create_optimization_profile()
        for name in p.min:
            if name not in names:
                raise BuildError(f"profile names input '{name}', which the parsed network does not have ({sorted(names)})")
            prof.set_shape(name, p.min[name], p.opt[name], p.max[name])
        cfg.add_optimization_profile(prof)
    return cfg


def _rtx_targets(trt: Any, cfg: Any, device: int = 0) -> None:
    """TensorRT-RTX builds for Ampere and newer by default; a Turing GPU ``device`` needs SM75 asked for."""
    gpu = gpu_info(device)
    if gpu is not None and gpu.cc == (7, 5) and hasattr(trt, "ComputeCapability") and hasattr(cfg, "set_compute_capability"):
        cfg.num_compute_capabilities = 1
        cfg.set_compute_capability(trt.ComputeCapability.SM75, 0)
        log.info("TensorRT-RTX: building for compute capability 7.5 (Turing), the GPU of this machine")


def _timing_cache(cfg: Any, path: str | None, flavor: Flavor) -> Any:
    if not path or not hasattr(cfg, "create_timing_cache"):
        return None
    if flavor.is_rtx:  # deprecated since TensorRT-RTX 1.2, where timing cache operations are no-ops
        log.warning("--timingCacheFile %s ignored: %s has no timing cache (it finishes kernels on the target GPU)", path, flavor.label)
        return None
    data = Path(path).read_bytes() if Path(path).exists() else b""
    cache = cfg.create_timing_cache(data)
    cfg.set_timing_cache(cache, ignore_mismatch=False)
    return cache


def _save_timing_cache(cfg: Any, path: str | None, flavor: Flavor) -> None:
    if not path or flavor.is_rtx or not hasattr(cfg, "get_timing_cache"):
        return
    cache = cfg.get_timing_cache()
    if cache is None:
        return
    atomic_write(Path(path), bytes(cache.serialize()))


def network_specs(network: Any, proto: Any, profiles: list[Profile]) -> tuple[list[TensorSpec], list[TensorSpec]]:
    """I/O specs of a parsed network: TensorRT dtypes and shapes, dynamic dims named as in the ONNX.

    Raises:
        ModelLoadError: an input or output of a type arrays cannot hold (INT4, FP4): trtflow could not
            feed or read the engine.
    """
    onnx_in, onnx_out = onnx_specs(proto)
    names = {s.name: s for s in [*onnx_in, *onnx_out]}

    def spec(tensor, bounds=None, role="output") -> TensorSpec:
        try:
            dtype = dtype_from_trt(tensor.dtype)
        except TypeError as exc:
            raise ModelLoadError(f"{role} '{tensor.name}': {exc}, so trtflow cannot feed or read it; give the "
                                 f"model {role}s of one of those types and convert inside the graph (e.g. an INT8 "
                                 "input and a DequantizeLinear, or a Cast before an output)") from None
        ref = names.get(tensor.name)
        dims = []
        for i, d in enumerate(tensor.shape):
            if d >= 0:
                dims.append(int(d))
            elif ref is not None and i < ref.rank and isinstance(ref.shape[i], str):
                dims.append(ref.shape[i])
            else:
                dims.append(f"{tensor.name}_dim{i}")
        return TensorSpec(tensor.name, dtype, tuple(dims), bounds)

    inputs = [network.get_input(i) for i in range(network.num_inputs)]
    outputs = [network.get_output(i) for i in range(network.num_outputs)]
    return (
        [spec(t, union_bounds(profiles, t.name), "input") for t in inputs],
        [spec(t) for t in outputs],
    )


def build_engine(
    onnx: ModelLike,
    config: BuildConfig | None = None,
    *,
    progress: Progress | None = None,
    flavor: Flavor | None = None,
    device: int = 0,
) -> BuildResult:
    """Build a TensorRT engine from an ONNX model.

    Args:
        onnx: path, bytes or onnx.ModelProto.
        config: build options (trtexec's flags); default: FP32, profiles inferred for dynamic inputs.
        progress: called as TensorRT's build phases advance (``trtflow.progress.Progress``).
        flavor: the TensorRT to use; default ``load_flavor()``.
        device: the CUDA device the plan is for (its GPU is the recorded target).

    Returns:
        A ``BuildResult`` holding the serialized plan and what went into it.

    Raises:
        MissingDependencyError: no TensorRT flavor is installed.
        ModelLoadError: the ONNX or a plugin library cannot be read; an input or output of a type
            arrays cannot hold (INT4).
        UsageError: shapes or precision flags that do not fit the model or the flavor.
        BuildError: parsing or building failed; ``failures`` names each failing node.
    """
    config = config or BuildConfig()
    flavor = flavor or load_flavor()
    trt = flavor.trt
    proto = load_onnx(onnx)
    logger = make_logger(trt)
    load_plugins(trt, logger, config.plugins)
    plan = plan_precision(proto, config, flavor)
    inputs, _ = onnx_specs(proto)
    profiles, notes = complete_profiles(inputs, config.profiles, config.max_batch)
    for note in notes:
        log.warning("no shapes given for a dynamic input: %s", note)

    start = time.perf_counter()
    builder = trt.Builder(logger)
    network, parser = parse_network(trt, builder, logger, plan.proto, _network_flags(trt, plan, flavor), flavor)
    ins, outs = network_specs(network, plan.proto, profiles)  # before the build: I/O trtflow cannot feed fails fast
    cfg = _configure(trt, builder, config, plan, profiles, network, flavor, device)
    _timing_cache(cfg, config.timing_cache_file, flavor)
    monitor = monitor_for(trt, progress)
    if monitor is not None:
        cfg.progress_monitor = monitor
    logger.errors.clear()
    try:
        serialized = builder.build_serialized_network(network, cfg)
    except Exception as exc:  # some bindings raise instead of returning None
        logger.errors.append(str(exc))
        serialized = None
    if monitor is not None:
        cfg.progress_monitor = None
    seconds = time.perf_counter() - start
    if serialized is None:
        nodes = {n.name: n.op_type for n in plan.proto.graph.node}
        failures = name_nms_tensors(build_failures(logger.errors, network, nodes, flavor), plan.proto)
        detail = format_failures(failures) if failures else "; ".join(logger.errors[-3:]) or "no message"
        if any(is_workspace_failure(f["reason"]) for f in failures):
            detail = _workspace_detail(failures, config)
        raise BuildError(f"{flavor.label} failed to build the engine: {detail}", failures)
    _save_timing_cache(cfg, config.timing_cache_file, flavor)
    log.info("built with %s in %.1f s (%d bytes)", flavor.label, seconds, serialized.nbytes)
    return BuildResult(
        plan=bytes(serialized),
        flavor=flavor.name,
        version=flavor.version,
        target=target_of(device),
        build_seconds=seconds,
        profiles=profiles,
        notes=notes,
        precision=plan.to_dict(),
        inputs=ins,
        outputs=outs,
    )


def _workspace_detail(failures: list[dict], config: BuildConfig) -> str:
    """The fix first for a build that ran out of workspace: the limit given and TensorRT's request."""
    import re

    limit = config.mem_pool_size.get("workspace")
    given = f" ({limit / 2**20:g} MiB)" if limit else ""
    asked = [int(m) for f in failures for m in re.findall(r"[Rr]equested size (?:was |of )?(\d+)", f["reason"])]
    need = ""
    if asked:
        mib = -(-max(asked) // 2**20)
        need = f" TensorRT asked for {max(asked) / 2**20:.1f} MiB at once; try workspace:{max(2 * mib, 256)} or more"
    return (f"the workspace limit{given} is too small for this network; raise --memPoolSize workspace:N "
            f"(MiB; trtexec's --workspace=N) or leave it out.{need} (TensorRT: {failures[0]['reason']})")
