"""The model under tuning, per engine: its FP32 reference and an engine for each configuration."""

from __future__ import annotations

import contextlib
import copy
import logging
import time
from typing import Any, Mapping, Sequence

from trtflow.backends import load
from trtflow.errors import EngineIncompatibleError, UsageError
from trtflow.tune.space import Candidate

log = logging.getLogger(__name__)


class TorchSubject:
    """An ``nn.Module`` on the torch engine.

    Args:
        module: the model (left untouched: configurations run on copies).
        shapes: input name -> shape, in ``forward`` order.
        feeds: batches to recalibrate batch norms on when ``recalibrate`` says so.
        device: torch device ("cuda:0", "cpu"; None: the GPU when there is one).
        recalibrate: True / False / None (when every batch norm holds its initial statistics).
    """

    engine = "torch"

    def __init__(self, module: Any, shapes: Mapping[str, tuple], feeds: list[dict], device: Any = None,
                 recalibrate: bool | None = None):
        import torch

        from trtflow.backends.torch.fp8 import fp8_linears, fp8_supported
        from trtflow.backends.torch.runner import torch_device
        from trtflow.tune.inputs import recalibrate_batchnorm, untrained_batchnorm

        self.torch = torch
        self.names = list(shapes)
        self.device = torch_device(torch, device)  # the engine's own check: a device that is not there is a UsageError
        self.cuda = self.device.type == "cuda"
        self.notes: list[str] = []
        base = copy.deepcopy(module).eval().to(self.device)
        if any(p.is_floating_point() and p.dtype != torch.float32 for p in base.parameters()):
            base = base.float()  # an FP16/BF16 module: the reference (and batch-norm recalibration) run in FP32
        if recalibrate is None:
            recalibrate = untrained_batchnorm(base)
        if recalibrate:
            n = recalibrate_batchnorm(base, feeds, keyword=False)
            self.notes.append(
                f"batch-norm statistics of {n} layers re-estimated on the accuracy inputs before comparing (the "
                "model's batch norms held their initial mean 0 / variance 1, as with random weights, where outputs "
                "shrink toward underflow and FP16 errors mean nothing); the saved choice applies to the model as given")
        self.module = base
        self.conv = any(isinstance(m, torch.nn.Conv2d) for m in base.modules()) and all(len(s) == 4 for s in shapes.values())
        self.batchnorm = any(isinstance(m, torch.nn.BatchNorm2d) for m in base.modules())
        linears = fp8_linears(base)  # the layers to_fp8 converts: do they hold most weights?
        self.linear_heavy = sum(m.weight.numel() for m in linears) > 0.5 * sum(p.numel() for p in base.parameters())
        if not self.cuda:
            self.fp8_blocker = "FP8 GEMMs need a CUDA GPU with FP8 tensor cores (SM 8.9+: Ada, Hopper)"
        elif not fp8_supported(self.device):
            self.fp8_blocker = f"{torch.cuda.get_device_name(self.device)} has no FP8 tensor cores (needs SM 8.9+)"
        elif not linears:
            self.fp8_blocker = "the model has no nn.Linear layer FP8 GEMMs can take (sizes multiples of 16)"
        else:
            self.fp8_blocker = None
        # the example inputs fix the engine's input dtypes: integer and bool inputs (token ids, masks)
        # keep the feeds' dtype, floating ones are FP32 (each configuration casts them itself)
        first = feeds[0] if feeds else {}
        self.examples = [torch.zeros(tuple(s), dtype=_example_dtype(torch, first.get(name))) for name, s in shapes.items()]

    def describe(self) -> str:
        if self.cuda:
            return f"{self.device} ({self.torch.cuda.get_device_name(self.device)})"
        return "cpu"

    def reference(self, feeds: Sequence[dict]) -> list[dict]:
        """FP32 eager outputs (TF32 off) on the tuning device."""
        torch = self.torch
        saved = (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32)
        torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
        try:
            with self._open(self.module, {"dtype": "fp32"}) as engine:
                return [engine.infer(f) for f in feeds]
        finally:
            torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved

    @contextlib.contextmanager
    def _open(self, module, options):
        engine = load(module, "torch", example_inputs=self.examples, input_names=self.names,
                      device=str(self.device), **options)
        try:
            yield engine
        finally:
            engine.close()

    def open(self, cand: Candidate):
        if cand.variant == "fp8":
            from trtflow.backends.torch.fp8 import to_fp8

            module = to_fp8(self.module)
        elif cand.options.get("dtype", "fp32") != "fp32":
            module = self.module  # the engine casts a copy of it
        else:
            module = copy.deepcopy(self.module)
        return self._open(module, cand.options)

    def cleanup(self) -> None:
        torch = self.torch
        try:
            torch._dynamo.reset()
        except Exception:  # pragma: no cover - best effort between configurations
            pass
        if self.cuda:
            torch.cuda.empty_cache()


def _example_dtype(torch, array: Any):
    """The torch dtype of an example input: the feed's own for integer and bool inputs, else float32."""
    kind = getattr(getattr(array, "dtype", None), "kind", "f")
    if kind in "iub":
        return getattr(torch, str(array.dtype), None) or torch.float32
    return torch.float32


class OrtSubject:
    """An ONNX model on ONNX Runtime (CPU), with FP16 and INT8 conversions made on demand."""

    engine = "ort"

    def __init__(self, proto: Any, calibration: list[dict]):
        self.proto = proto
        self.calibration = calibration
        self.providers = ["cpu"]  # the FP32 reference's
        self.notes: list[str] = []
        self._variants: dict[str, bytes] = {"fp32": proto.SerializeToString()}
        self._failed: dict[str, str] = {}

    def describe(self) -> str:
        from trtflow.backends.tuned import device_identity

        ident = device_identity("ort")
        return f"cpu ({ident['name']}, {ident['cores']} cores)"

    def variant(self, name: str) -> bytes:
        """The serialized model of a variant ("fp32", "fp16", "int8"), converting on first use.

        Raises:
            GraphError: the conversion failed (remembered; later asks fail at once).
        """
        from trtflow.errors import GraphError

        if name in self._failed:
            raise GraphError(self._failed[name])
        if name not in self._variants:
            t0 = time.perf_counter()
            try:
                self._variants[name] = self._convert(name)
            except Exception as exc:
                self._failed[name] = f"making the {name} model failed: {exc}"
                raise
            self.notes.append(f"{name} model made in {time.perf_counter() - t0:.1f} s " + (
                "(surgeon FP16 conversion with the range check on the calibration inputs)" if name == "fp16" else
                f"(surgeon INT8 Q/DQ quantization, percentile calibration on {len(self.calibration)} batch(es))"))
        return self._variants[name]

    def _convert(self, name: str) -> bytes:
        if name == "fp16":
            from trtflow.edits.fp16 import activation_peaks
            from trtflow.graph.fp16 import convert_fp16

            peaks = activation_peaks(self.proto, self.calibration[:1])
            new, _ = convert_fp16(self.proto, keep_io_types=True, peaks=peaks)
            return new.SerializeToString()
        if name == "int8":
            from trtflow.edits.quantize import quantize_int8

            new, _ = quantize_int8(self.proto, self.calibration)
            return new.SerializeToString()
        raise UsageError(f"unknown ONNX variant '{name}'")

    def reference(self, feeds: Sequence[dict]) -> list[dict]:
        with load(self._variants["fp32"], "ort", providers=self.providers) as engine:
            return [engine.infer(f) for f in feeds]

    def open(self, cand: Candidate):
        return load(self.variant(cand.variant), "ort", **cand.options)

    def cleanup(self) -> None:
        pass


class TensorRTSubject(OrtSubject):
    """An ONNX model built into TensorRT engines; its FP32 reference is ONNX Runtime's (inherited).
    Where TensorRT cannot execute (no supported GPU), each configuration is built, its build time
    recorded, and nothing is measured."""

    engine = "tensorrt"

    def __init__(self, proto: Any, calibration: list[dict], shapes: Mapping[str, tuple]):
        from trtflow.backends import tensorrt_usable

        super().__init__(proto, calibration)
        self.shapes = {k: tuple(v) for k, v in shapes.items()}
        self.runs = tensorrt_usable()

    def describe(self) -> str:
        from trtflow.backends.tuned import device_identity

        ident = device_identity("tensorrt")
        return ident["name"] + ("" if self.runs else " (TensorRT builds here but cannot execute)")

    def build_config(self, cand: Candidate):
        from trtflow.backends.tensorrt.config import BuildConfig
        from trtflow.spec import make_profile

        return BuildConfig(profiles=[make_profile(self.shapes, self.shapes, self.shapes)], **cand.options["build"])

    def open(self, cand: Candidate):
        model = self.variant(cand.variant)
        if not self.runs:
            from trtflow.backends.tensorrt import build_engine

            t0 = time.perf_counter()
            build_engine(model, self.build_config(cand))
            raise EngineIncompatibleError(
                f"built in {time.perf_counter() - t0:.1f} s; this machine cannot execute TensorRT engines, "
                "so it was not measured")
        return load(model, "tensorrt", build_config=self.build_config(cand))
