"""FP8 matrix multiplies for linear layers: ``torch._scaled_mm`` with per-row scales (Hopper, Ada).

``to_fp8(module)`` returns a copy whose ``nn.Linear`` layers keep their weight in float8 e4m3 with
one scale per output channel, and quantize their input per row (one scale per token) at run time;
the product runs on FP8 tensor cores and comes out in bfloat16. Everything else runs in bfloat16.
Layers whose sizes FP8 GEMMs cannot take (not multiples of 16) stay bfloat16. Whether the result
is accurate enough is for the caller to check (``trtflow tune`` does, against FP32).
"""

from __future__ import annotations

import copy
import logging
from typing import Any

from trtflow.deps import require
from trtflow.errors import UsageError

log = logging.getLogger(__name__)

E4M3_MAX = 448.0


def fp8_supported(device: Any = None) -> bool:
    """True when this PyTorch has ``_scaled_mm`` and the CUDA GPU has FP8 tensor cores (SM 8.9+)."""
    torch = require("torch", "FP8 matrix multiplies")
    if not torch.cuda.is_available() or not hasattr(torch, "_scaled_mm") or not hasattr(torch, "float8_e4m3fn"):
        return False
    dev = torch.device(device) if device is not None else torch.device("cuda", torch.cuda.current_device())
    return dev.type == "cuda" and torch.cuda.get_device_capability(dev) >= (8, 9)


def _module_class():
    torch = require("torch", "FP8 matrix multiplies")

    class Fp8Linear(torch.nn.Module):
        """``y = x W^T + b`` with W in float8 e4m3 (per-output-channel scales) and x quantized per row."""

        def __init__(self, linear: Any):
            super().__init__()
            w = linear.weight.detach().float()
            scale = w.abs().amax(dim=1, keepdim=True).clamp(min=1e-12) / E4M3_MAX  # (out, 1)
            self.register_buffer("weight_fp8", (w / scale).to(torch.float8_e4m3fn).contiguous())  # (out, in)
            self.register_buffer("weight_scale", scale.t().contiguous())  # (1, out), float32
            bias = linear.bias.detach().to(torch.bfloat16) if linear.bias is not None else None
            self.register_buffer("bias", bias)
            self.in_features, self.out_features = linear.in_features, linear.out_features

        def _apply(self, fn, recurse=True):
            # .to(device) moves the buffers; a dtype cast (module.to(torch.float16)) must not touch
            # the FP8 weight, its float32 scales or the bfloat16 bias that _scaled_mm wants.
            for key, buf in self._buffers.items():
                if buf is not None:
                    self._buffers[key] = buf.to(fn(torch.zeros(1, device=buf.device)).device)
            return self

        def forward(self, x):
            shape = x.shape
            x2 = x.reshape(-1, shape[-1])
            amax = x2.abs().amax(dim=1, keepdim=True).float().clamp(min=1e-12)
            scale = amax / E4M3_MAX  # (rows, 1)
            xq = (x2.float() / scale).clamp(-E4M3_MAX, E4M3_MAX).to(torch.float8_e4m3fn)
            rows = xq.shape[0]
            pad = -rows % 16  # FP8 GEMMs take row counts that are multiples of 16
            if pad:
                xq = torch.nn.functional.pad(xq.view(torch.uint8), (0, 0, 0, pad)).view(torch.float8_e4m3fn)
                scale = torch.nn.functional.pad(scale, (0, 0, 0, pad), value=1.0)
            y = torch._scaled_mm(xq, self.weight_fp8.t(), scale_a=scale, scale_b=self.weight_scale,
                                 out_dtype=torch.bfloat16)[:rows]
            if self.bias is not None:
                y = y + self.bias
            return y.reshape(*shape[:-1], self.out_features).to(x.dtype)

    return Fp8Linear


def to_fp8(module: Any) -> Any:
    """A copy of ``module`` in bfloat16 with its eligible ``nn.Linear`` layers on FP8 GEMMs.

    Raises:
        UsageError: ``module`` is not an ``nn.Module``, or has no linear layer FP8 can take.
    """
    torch = require("torch", "FP8 matrix multiplies")
    if not isinstance(module, torch.nn.Module):
        raise UsageError(f"FP8 linear layers need an nn.Module; got {type(module).__name__}")
    cls = _module_class()
    model = copy.deepcopy(module).eval()
    swapped = 0
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if _eligible(torch, child):
                setattr(parent, name, cls(child))
                swapped += 1
    if not swapped:
        raise UsageError("the model has no nn.Linear layer with sizes that are multiples of 16; FP8 GEMMs do not apply")
    log.debug("FP8: %d linear layers on torch._scaled_mm", swapped)
    return model.to(torch.bfloat16)  # Fp8Linear keeps its FP8 weight and float32 scales


def fp8_linears(module: Any) -> list:
    """The ``nn.Linear`` layers ``to_fp8`` would convert."""
    torch = require("torch", "FP8 matrix multiplies")
    return [m for m in module.modules() if _eligible(torch, m)]


def _eligible(torch, m: Any) -> bool:
    """A plain ``nn.Linear`` whose sizes FP8 GEMMs take (multiples of 16)."""
    return type(m) is torch.nn.Linear and m.in_features % 16 == 0 and m.out_features % 16 == 0
