"""Classification preprocessing as one Triton kernel on CUDA.

``classify_preprocess_fused`` computes what ``preprocess.classify_preprocess`` does (resize the
shorter side, center crop, ImageNet mean/std, FP16 channels-last) in a single pass: each output
value reads its four uint8 source pixels and is written once, so no full-frame float copy is
made. The arithmetic is float32 (the eager version rounds intermediates to the output dtype).
"""

from __future__ import annotations

from typing import Any, Sequence

from trtflow.deps import require
from trtflow.errors import UsageError
from trtflow.vision.preprocess import IMAGENET_MEAN, IMAGENET_STD

BLOCK = 1024
_KERNEL = None


def _kernel():
    """Compile-on-first-use Triton kernel (Triton is imported only here)."""
    global _KERNEL
    if _KERNEL is not None:
        return _KERNEL
    triton = require("triton", "the fused preprocessing kernel")
    import triton.language as tl

    @triton.jit
    def resize_crop_normalize(src, out, total, H, W, OH, OW, top, left, scale_y, scale_x,
                              m0, m1, m2, s0, s1, s2, BGR: tl.constexpr, BLOCK: tl.constexpr):
        offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
        mask = offs < total
        c = offs % 3
        rest = offs // 3
        ox = rest % OW
        rest = rest // OW
        oy = rest % OH
        n = rest // OH
        sy = tl.maximum(((oy + top).to(tl.float32) + 0.5) * scale_y - 0.5, 0.0)
        sx = tl.maximum(((ox + left).to(tl.float32) + 0.5) * scale_x - 0.5, 0.0)
        y0 = sy.to(tl.int32)
        x0 = sx.to(tl.int32)
        wy = sy - y0.to(tl.float32)
        wx = sx - x0.to(tl.float32)
        y1 = tl.minimum(y0 + 1, H - 1)
        x1 = tl.minimum(x0 + 1, W - 1)
        ch = 2 - c if BGR else c
        base = n * (H * W * 3) + ch
        p00 = tl.load(src + base + (y0 * W + x0) * 3, mask=mask, other=0).to(tl.float32)
        p01 = tl.load(src + base + (y0 * W + x1) * 3, mask=mask, other=0).to(tl.float32)
        p10 = tl.load(src + base + (y1 * W + x0) * 3, mask=mask, other=0).to(tl.float32)
        p11 = tl.load(src + base + (y1 * W + x1) * 3, mask=mask, other=0).to(tl.float32)
        v = (p00 * (1.0 - wx) + p01 * wx) * (1.0 - wy) + (p10 * (1.0 - wx) + p11 * wx) * wy
        mean = tl.where(c == 0, m0, tl.where(c == 1, m1, m2))
        std = tl.where(c == 0, s0, tl.where(c == 1, s1, s2))
        tl.store(out + offs, ((v * (1.0 / 255.0) - mean) / std).to(out.dtype.element_ty), mask=mask)

    _KERNEL = resize_crop_normalize
    return _KERNEL


def classify_preprocess_fused(
    frames: Any,
    size: int = 224,
    resize_to: int = 256,
    bgr: bool = False,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
    dtype: Any = "float16",
):
    """uint8 NHWC RGB (or BGR) frames on a CUDA device -> normalized NCHW channels-last input.

    Args:
        frames: ``(N, H, W, 3)`` uint8 CUDA tensor.
        size: output crop side.
        resize_to: the shorter side is resized to this first (torchvision's rounding).
        bgr: the frames are BGR (OpenCV); they are swapped to RGB.
        mean, std: per-channel normalization of 0..1 values.
        dtype: "float16", "bfloat16" or "float32".

    Returns:
        ``(N, 3, size, size)`` tensor, channels-last in memory.

    Raises:
        UsageError: not a uint8 ``(N, H, W, 3)`` CUDA tensor, or a crop larger than the resized frame.
    """
    import torch

    if not isinstance(frames, torch.Tensor) or frames.dim() != 4 or frames.shape[-1] != 3 \
            or frames.dtype != torch.uint8 or not frames.is_cuda:
        got = f"{type(frames).__name__} {tuple(getattr(frames, 'shape', ()))} {getattr(frames, 'dtype', '')}"
        raise UsageError(f"fused preprocessing takes uint8 (N, H, W, 3) CUDA tensors, got {got}; "
                         "use trtflow.vision.preprocess.classify_preprocess elsewhere")
    frames = frames.contiguous()
    n, h, w, _ = (int(d) for d in frames.shape)
    new_h, new_w = (resize_to, int(resize_to * w / h)) if h <= w else (int(resize_to * h / w), resize_to)
    if size > new_h or size > new_w:
        raise UsageError(f"crop {size} is larger than the resized frame {new_h}x{new_w}")
    top, left = int(round((new_h - size) / 2.0)), int(round((new_w - size) / 2.0))
    want = getattr(torch, dtype) if isinstance(dtype, str) else dtype
    out = torch.empty((n, size, size, 3), dtype=want, device=frames.device)
    total = out.numel()
    grid = ((total + BLOCK - 1) // BLOCK,)
    with torch.cuda.device(frames.device):
        _kernel()[grid](frames, out, total, h, w, size, size, top, left, h / new_h, w / new_w,
                        *(float(m) for m in mean), *(float(s) for s in std), BGR=bgr, BLOCK=BLOCK)
    return out.permute(0, 3, 1, 2)
