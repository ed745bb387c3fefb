"""ONNX Runtime engine: CPU by default; another provider only when asked for and installed."""

from __future__ import annotations

import logging
from typing import Any, Mapping, Sequence

from trtflow.deps import require
from trtflow.errors import EngineError, ModelLoadError, UsageError
from trtflow.backends.base import Engine
from trtflow.backends.onnxruntime.memory import check_memory, light_model
from trtflow.graph.io import ModelLike, load_onnx, onnx_specs
from trtflow.spec import Shape, TensorSpec, parse_names

log = logging.getLogger(__name__)

PROVIDERS = {
    "cpu": "CPUExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "tensorrt": "TensorrtExecutionProvider",
    "rocm": "ROCMExecutionProvider",
    "coreml": "CoreMLExecutionProvider",
    "dml": "DmlExecutionProvider",
}
GPU_PROVIDERS = ("CUDAExecutionProvider", "TensorrtExecutionProvider")  # placed on a GPU by ``device``

ESTIMATE_ABOVE = 64 * 2**20  # feeds larger than this get a memory estimate before their first run
OPTIMIZATION_LEVELS = {"disable": "ORT_DISABLE_ALL", "basic": "ORT_ENABLE_BASIC",
                       "extended": "ORT_ENABLE_EXTENDED", "all": "ORT_ENABLE_ALL"}


class OrtEngine(Engine):
    """Runs an ONNX model with ONNX Runtime.

    Args:
        model: path, bytes or onnx.ModelProto.
        providers: short names ("cpu", "cuda") or ORT provider names, in priority order.
        threads: intra-op threads (0 lets ONNX Runtime choose).
        optimization: graph optimization level: "disable", "basic", "extended" or "all" (ORT's default).
        device: CUDA device index for the CUDA and TensorRT providers (their ``device_id``); None: GPU 0.
        spinning: let the intra-op threads spin (busy-wait) between runs (ORT's session config
            ``session.intra_op.allow_spinning``; ONNX Runtime's default, True). Back-to-back runs
            gain a little; a server, whose runs have gaps, leaves the cores to its other work
            with False (``trtflow serve`` does).

    Raises:
        UsageError: a requested provider is not available in this onnxruntime build.
    """

    name = "ort"
    native = "numpy"

    def __init__(self, model: ModelLike, providers: Sequence[str] = ("cpu",), threads: int = 0,
                 optimization: str = "all", device: int | None = None, spinning: bool = True):
        ort = require("onnxruntime", "the ort engine")
        wanted = provider_names(providers)
        if isinstance(threads, bool) or not isinstance(threads, int) or threads < 0:
            raise UsageError(f"threads must be an integer >= 0 (0: ONNX Runtime chooses), got {threads!r}")
        if optimization not in OPTIMIZATION_LEVELS:
            raise UsageError(f"graph optimization '{optimization}': choose one of {list(OPTIMIZATION_LEVELS)}")
        proto = load_onnx(model)
        available = ort.get_available_providers()
        missing = [p for p in wanted if p not in available]
        if missing:
            raise UsageError(
                f"ONNX Runtime provider(s) {missing} are not available; this onnxruntime has {available}. "
                "Install the matching build (e.g. onnxruntime-gpu for CUDA) or ask for providers=['cpu'] (--providers cpu)."
            )
        if device is not None and (isinstance(device, bool) or not isinstance(device, int) or device < 0
                                   or not any(p in GPU_PROVIDERS for p in wanted)):
            raise UsageError(f"device={device!r} places the CUDA or TensorRT provider on a GPU: give a GPU index >= 0 "
                             f"and providers such as ['cuda', 'cpu'] (got providers={providers!r})")
        provider_options = [{"device_id": str(device)} if device is not None and p in GPU_PROVIDERS else {}
                            for p in wanted]
        inputs, outputs = onnx_specs(proto)
        _refuse_bfloat16(inputs, outputs)
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.graph_optimization_level = getattr(ort.GraphOptimizationLevel, OPTIMIZATION_LEVELS[optimization])
        opts.log_severity_level = 3
        opts.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
        try:
            self.session = ort.InferenceSession(proto.SerializeToString(), opts, providers=wanted, provider_options=provider_options)
        except Exception as exc:  # ORT raises its own Fail/InvalidGraph types
            raise EngineError(f"ONNX Runtime could not load the model: {exc}") from None
        self.providers = self.session.get_providers()
        self.gpu = device
        # Dynamic dims named by ORT may differ from the ONNX value_info: the ONNX names win.
        super().__init__(inputs, outputs)
        self._output_names = [s.name for s in outputs]
        self._light = light_model(proto)  # the graph without its weights, for memory estimates of large feeds
        self._checked: set = set()  # input shapes whose memory estimate passed
        log.debug("ort engine on %s", self.providers)

    @property
    def on_gpu(self) -> bool:
        """True when the session has the CUDA or TensorRT provider."""
        return any(p in GPU_PROVIDERS for p in self.providers)

    def _prepare(self, feed: dict[str, Any]) -> None:
        key = tuple((name, value.shape) for name, value in feed.items())
        if key not in self._checked:
            if sum(value.nbytes for value in feed.values()) > ESTIMATE_ABOVE:
                check_memory(self._light, {name: value.shape for name, value in feed.items()})
            if len(self._checked) > 256:
                self._checked.clear()
            self._checked.add(key)

    def _infer(self, feed: dict[str, Any]) -> dict[str, Any]:
        try:
            values = self.session.run(self._output_names, feed)
        except Exception as exc:
            raise EngineError(f"ONNX Runtime failed while running: {exc}") from None
        return dict(zip(self._output_names, values))

    def check_memory(self, shapes: Mapping[str, Shape]) -> None:
        """Refuse input shapes whose estimated peak memory cannot fit, before any array exists.

        Raises:
            UsageError: the estimate (ONNX shape inference) is more than the available memory allows.
        """
        check_memory(self._light, shapes)
        self._checked.add(tuple((name, tuple(shape)) for name, shape in shapes.items()))

    def close(self) -> None:
        self.session = None
        self._light = None
        super().close()


def provider_names(providers: Sequence[str] | str) -> list[str]:
    """ONNX Runtime's names of ``providers``: short names ("cpu", "cuda") or ORT's own, or one
    comma-separated string of them ("cuda,cpu"), in priority order.

    Raises:
        UsageError: no provider, or something other than names.
    """
    names = parse_names(providers, "providers")  # "cpu" or "cuda,cpu", not a sequence of characters
    if not names:
        raise UsageError(f"providers must be provider names such as ['cuda', 'cpu'], got {providers!r}")
    return [PROVIDERS.get(p.lower(), p) for p in names]


def _refuse_bfloat16(inputs: Sequence[TensorSpec], outputs: Sequence[TensorSpec]) -> None:
    """ONNX Runtime's Python API takes and returns numpy arrays, and numpy has no bfloat16.

    Raises:
        ModelLoadError: an input or output of the model is bfloat16.
    """
    named = [f"{kind} '{s.name}'" for kind, specs in (("input", inputs), ("output", outputs))
             for s in specs if s.dtype == "bfloat16"]
    if named:
        raise ModelLoadError(
            f"{' and '.join(named)} {'is' if len(named) == 1 else 'are'} bfloat16, which ONNX Runtime's Python API "
            "cannot take or return (numpy has no bfloat16). Export the model with float32 or float16 inputs and "
            "outputs (export module.float(), or cast to and from bfloat16 inside forward), or run it with the "
            "TensorRT engine (engine='tensorrt')")


def specs(model: ModelLike) -> tuple[list[TensorSpec], list[TensorSpec]]:
    """Input and output specs of an ONNX model without creating a session."""
    return onnx_specs(load_onnx(model))
