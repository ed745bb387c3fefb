"""Batched image preprocessing on torch tensors, on any device (the GPU in a pipeline).

Frames arrive as uint8 ``(N, H, W, C)`` (or one ``(H, W, C)``), as decoders and OpenCV give them.
``to_nchw`` turns them into ``(N, C, H, W)`` floats (channels-last in memory, for free); then
``resize``, ``letterbox`` or ``resize_shorter_side`` + ``center_crop``, ``normalize`` and
``swap_rb``. Bilinear resizing follows OpenCV's ``INTER_LINEAR`` (half-pixel centres, no
antialiasing), so results match ``cv2.resize`` on float images. ``letterbox`` returns the
``Letterbox`` that ``unletterbox_boxes`` needs to map detections back to the original frame.

``classify_preprocess`` / ``detect_preprocess`` chain the usual steps in one call.
"""

from __future__ import annotations

import functools
import numbers
from dataclasses import dataclass
from typing import Any, Sequence

from trtflow.errors import UsageError
from trtflow.spec import is_count

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class Letterbox:
    """How ``letterbox`` placed the frames: ``resized = original * scale`` then padded.

    Attributes:
        scale: resize factor applied to both axes.
        pad: (left, top) padding in pixels of the output.
        original: (height, width) of the input frames.
        size: (height, width) of the output.
    """

    scale: float
    pad: tuple[int, int]
    original: tuple[int, int]
    size: tuple[int, int]


def hw_size(size: Any, what: str = "size") -> tuple[int, int]:
    """``size`` as (height, width), the one parser of image sizes: one whole number for a square
    (``640``, ``"640"``), or two (``(480, 640)``, ``[480, 640]``, ``"480x640"``, ``"480,640"``).

    Raises:
        UsageError: anything else (a size below 1, a fraction, a bool, other counts), naming ``what``.
    """
    parts: Any = ()
    if isinstance(size, str):  # "480x" or "x480" is refused, not read as a square
        parts = [p.strip() for p in size.lower().replace(",", "x").split("x")]
        parts = [int(p) for p in parts] if all(p.isascii() and p.isdigit() for p in parts) else ()
    elif isinstance(size, numbers.Real):  # 640 or 640.0 (a fraction or a bool is refused below)
        parts = (size,)
    elif not isinstance(size, bytes):
        try:
            parts = tuple(size)
        except TypeError:
            pass
    parts = tuple(int(p) if isinstance(p, numbers.Real) and not isinstance(p, bool) and float(p).is_integer() else p
                  for p in parts)  # 640.0 too; True is refused below
    if len(parts) == 1:
        parts *= 2
    if len(parts) != 2 or not all(is_count(p) for p in parts):
        raise UsageError(f"{what} {size!r}: give a positive (height, width), 'HxW' or one positive whole number for a square")
    return parts


def _hw(images: Any) -> tuple[int, int]:
    """(height, width) of NCHW images that have pixels."""
    h, w = (int(d) for d in images.shape[2:])
    if h < 1 or w < 1:
        raise UsageError(f"the images are empty ({h}x{w}); nothing to resize")
    return h, w


def _dtype(dtype: Any):
    """A torch dtype from its name ("float16") or itself."""
    import torch

    want = getattr(torch, dtype, None) if isinstance(dtype, str) else dtype
    if not isinstance(want, torch.dtype) or not want.is_floating_point:
        raise UsageError(f"dtype {dtype!r}: give 'float32', 'float16', 'bfloat16' or a floating torch dtype")
    return want


def _tensor(images: Any) -> None:
    import torch

    if not isinstance(images, torch.Tensor):
        raise UsageError(f"expected a torch tensor, got {type(images).__name__}; wrap numpy with torch.from_numpy")


def _batched_nchw(images: Any):
    _tensor(images)
    if images.dim() == 3:
        images = images.unsqueeze(0)
    if images.dim() != 4:
        raise UsageError(f"expected images of shape (N, C, H, W) or (C, H, W), got {tuple(images.shape)}")
    return images


def _work_dtype(images, dtype):
    """Half precision resizing runs on CUDA only; elsewhere compute in float32."""
    import torch

    if dtype in (torch.float16, torch.bfloat16) and images.device.type != "cuda":
        return torch.float32
    return dtype


def to_nchw(frames: Any, dtype: Any = "float32", scale: float = 1 / 255, bgr_to_rgb: bool = False):
    """uint8 HWC frames -> floating NCHW, multiplied by ``scale`` (1/255 gives 0..1).

    Args:
        frames: ``(N, H, W, C)`` or ``(H, W, C)`` tensor, any dtype (usually uint8).
        dtype: "float32", "float16", "bfloat16" or a torch dtype.
        scale: factor applied after the cast.
        bgr_to_rgb: reverse the channel order (OpenCV frames are BGR).

    Returns:
        ``(N, C, H, W)`` tensor on the frames' device; its memory is channels-last (the
        permuted view of NHWC), which convolutions on the GPU prefer.
    """
    _tensor(frames)
    if frames.dim() == 3:
        frames = frames.unsqueeze(0)
    if frames.dim() != 4:
        raise UsageError(f"expected frames of shape (N, H, W, C) or (H, W, C), got {tuple(frames.shape)}")
    want = _dtype(dtype)
    out = frames.permute(0, 3, 1, 2).to(want)
    if bgr_to_rgb:
        out = out.flip(1)
    if scale != 1:
        out = out.mul_(scale) if out.data_ptr() != frames.data_ptr() else out * scale
    return out


def swap_rb(images: Any, channel_dim: int = 1):
    """BGR <-> RGB: reverse the channel axis (``channel_dim`` 1 for NCHW, -1 for NHWC)."""
    return images.flip(channel_dim)


def normalize(images: Any, mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD):
    """``(x - mean) / std`` per channel of an NCHW (or CHW) floating tensor."""
    import torch

    images = _batched_nchw(images)
    if not images.is_floating_point():
        raise UsageError(f"normalize takes floating images, got {images.dtype}; convert uint8 frames with to_nchw first")
    if len(mean) != images.shape[1] or len(std) != images.shape[1]:
        raise UsageError(f"mean/std have {len(mean)}/{len(std)} values for {images.shape[1]} channels")
    if not all(float(s) != 0 for s in std):
        raise UsageError(f"std {tuple(std)}: a channel's std divides its values; give non-zero values")
    m = _channel_values(tuple(map(float, mean)), images.device, torch.float32)
    s = _channel_values(tuple(map(float, std)), images.device, torch.float32)
    return ((images.float() - m) / s).to(images.dtype)


@functools.lru_cache(maxsize=32)
def _channel_values(values: tuple[float, ...], device: Any, dtype: Any):
    """Per-channel ``values`` as a (1, C, 1, 1) tensor on ``device``: made once per (values, device, dtype),
    not copied to the device on every batch. Shared: read it, never write it."""
    import torch

    return torch.tensor(values, dtype=dtype, device=device).view(1, -1, 1, 1)


def resize(images: Any, size: int | Sequence[int]):
    """Bilinear resize of NCHW floating images to ``size`` (h, w), as ``cv2.INTER_LINEAR``."""
    import torch.nn.functional as F

    images = _batched_nchw(images)
    h, w = hw_size(size)
    if tuple(images.shape[2:]) == (h, w):
        return images
    _hw(images)
    work = _work_dtype(images, images.dtype)
    out = F.interpolate(images.to(work), size=(h, w), mode="bilinear", align_corners=False, antialias=False)
    return out.to(images.dtype)


PAD_POSITIONS = ("center", "bottom-right")


def letterbox(images: Any, size: int | Sequence[int], pad_value: float = 114 / 255, scaleup: bool = True,
              pad: str = "center"):
    """Resize keeping the aspect ratio, then pad to ``size`` (the tutorials' ``resize_padding``).

    Args:
        images: NCHW (or one CHW) floating images, a torch tensor or a numpy array; or a list of
            CHW images of different sizes (each is placed on its own, then they are stacked).
        size: output (height, width), or one int for a square.
        pad_value: fill value (114/255 for 0..1 images, YOLO's grey).
        scaleup: allow enlarging small frames (False only shrinks).
        pad: "center" splits the padding evenly between the sides (YOLO's rounding);
            "bottom-right" puts the image at the top-left corner and pads right and bottom
            (the detector guide's ``resize_padding``).

    Returns:
        ``(padded NCHW images, Letterbox)`` in the input's family (numpy in, numpy out); for a
        list, ``(stacked images, [Letterbox per image])``. Pass the ``Letterbox`` to
        ``unletterbox_boxes`` to map boxes back to the original image.

    Raises:
        UsageError: an unknown ``pad``, or images that are not CHW/NCHW.
    """
    if pad not in PAD_POSITIONS:
        raise UsageError(f"pad '{pad}': choose one of {', '.join(PAD_POSITIONS)}")
    if isinstance(images, (list, tuple)):
        placed = [letterbox(image, size, pad_value, scaleup, pad) for image in images]
        if not placed:
            raise UsageError("letterbox got an empty list of images")
        for i, (image, _) in enumerate(placed):
            if image.shape[0] != 1:
                raise UsageError(f"image {i} of the list is a batch of {image.shape[0]} images; a list holds CHW "
                                 f"images (one Letterbox each): pass the batch on its own")
        if len({p[0].shape[1] for p in placed}) > 1:
            raise UsageError(f"the images have {[p[0].shape[1] for p in placed]} channels; give them one channel count")
        if len({hasattr(p[0], "dim") for p in placed}) > 1:
            raise UsageError("the list mixes numpy arrays and torch tensors; give all numpy arrays or all torch tensors")
        first = placed[0][0]
        if hasattr(first, "dim"):
            import torch

            return torch.cat([p[0] for p in placed]), [p[1] for p in placed]
        import numpy as np

        return np.concatenate([p[0] for p in placed]), [p[1] for p in placed]
    import torch.nn.functional as F

    images, numpy_in = _as_torch(images)
    images = _batched_nchw(images)
    h, w = _hw(images)
    out_h, out_w = hw_size(size)
    scale = min(out_h / h, out_w / w)
    if not scaleup:
        scale = min(scale, 1.0)
    new_w, new_h = max(1, int(round(w * scale))), max(1, int(round(h * scale)))  # a sliver keeps one row
    if pad == "center":
        dw, dh = (out_w - new_w) / 2, (out_h - new_h) / 2
        top, bottom = int(round(dh - 0.1)), int(round(dh + 0.1))
        left, right = int(round(dw - 0.1)), int(round(dw + 0.1))
    else:
        top, left, bottom, right = 0, 0, out_h - new_h, out_w - new_w
    resized = resize(images, (new_h, new_w))
    padded = F.pad(resized, (left, right, top, bottom), value=pad_value)
    return (padded.numpy() if numpy_in else padded), Letterbox(scale, (left, top), (h, w), (out_h, out_w))


def unletterbox_boxes(boxes: Any, box: Letterbox, clip: bool = True):
    """Map ``(..., 4)`` xyxy boxes from letterboxed coordinates back to the original frame.

    ``boxes`` is a torch tensor or a numpy array (the result is of the same kind); ``box`` is the
    ``Letterbox`` that ``letterbox`` returned for this image (either padding position).
    """
    import numpy as np

    numpy_in = not hasattr(boxes, "clone")
    if numpy_in:
        out = np.array(boxes, dtype=np.float32, copy=True)
    else:  # integer boxes become float32, as numpy ones do
        out = boxes.clone() if boxes.is_floating_point() else boxes.float()
    if out.ndim < 1 or out.shape[-1] != 4:
        raise UsageError(f"boxes have shape {tuple(out.shape)}; give (..., 4) x1, y1, x2, y2 boxes")
    left, top = box.pad
    out[..., [0, 2]] = (out[..., [0, 2]] - left) / box.scale
    out[..., [1, 3]] = (out[..., [1, 3]] - top) / box.scale
    if clip:
        h, w = box.original
        if numpy_in:
            out[..., [0, 2]] = out[..., [0, 2]].clip(0, w)
            out[..., [1, 3]] = out[..., [1, 3]].clip(0, h)
        else:
            out[..., [0, 2]] = out[..., [0, 2]].clamp(0, w)
            out[..., [1, 3]] = out[..., [1, 3]].clamp(0, h)
    return out


def _as_torch(images: Any):
    """``(torch tensor, True when the input was numpy)``."""
    import numpy as np

    if isinstance(images, np.ndarray):
        return as_tensor(images), True
    return images, False


def as_tensor(array: Any, device: Any = None):
    """A numpy array or a torch tensor as a torch tensor on ``device`` (None: where it is).

    A writeable array is shared (then moved); a read-only one is copied once, straight to ``device``
    (``arrays.to_torch``).

    Raises:
        UsageError: neither a numpy array nor a torch tensor.
    """
    import numpy as np
    import torch

    from trtflow.arrays import to_torch

    if not isinstance(array, (np.ndarray, torch.Tensor)):
        raise UsageError(f"expected a numpy array or a torch tensor, got {type(array).__name__}")
    return to_torch(array, device)


def resize_shorter_side(images: Any, size: int):
    """Bilinear resize so the shorter side is ``size``, keeping the aspect ratio (torchvision's rounding)."""
    images = _batched_nchw(images)
    h, w = _hw(images)
    if not is_count(size):
        raise UsageError(f"size {size!r}: give the shorter side as a positive int")
    size = int(size)
    if h <= w:
        new_h, new_w = size, int(size * w / h)
    else:
        new_h, new_w = int(size * h / w), size
    return resize(images, (new_h, new_w))


def center_crop(images: Any, size: int | Sequence[int]):
    """The central ``size`` (h, w) window of NCHW images (a view, no copy)."""
    images = _batched_nchw(images)
    h, w = (int(d) for d in images.shape[2:])
    ch, cw = hw_size(size)
    if ch > h or cw > w:
        raise UsageError(f"crop {ch}x{cw} is larger than the images ({h}x{w}); resize first")
    top, left = int(round((h - ch) / 2.0)), int(round((w - cw) / 2.0))
    return images[:, :, top : top + ch, left : left + cw]


def classify_preprocess(
    frames: Any,
    size: int = 224,
    resize_to: int = 256,
    dtype: Any = "float16",
    bgr: bool = False,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
):
    """uint8 NHWC frames -> normalized NCHW (channels-last) classifier input: resize the shorter
    side to ``resize_to``, center-crop ``size``, ImageNet mean/std, cast to ``dtype``."""
    import torch

    _tensor(frames)
    want = _dtype(dtype)
    x = to_nchw(frames, _work_dtype(frames, want), bgr_to_rgb=bgr)
    x = center_crop(resize_shorter_side(x, resize_to), size)
    return normalize(x, mean, std).to(want).contiguous(memory_format=torch.channels_last)


def detect_preprocess(frames: Any, size: int | Sequence[int] = 640, dtype: Any = "float16", bgr: bool = True):
    """uint8 NHWC frames -> letterboxed 0..1 NCHW detector input and its ``Letterbox``."""
    import torch

    _tensor(frames)
    want = _dtype(dtype)
    x = to_nchw(frames, _work_dtype(frames, want), bgr_to_rgb=bgr)
    x, box = letterbox(x, size)
    return x.to(want).contiguous(memory_format=torch.channels_last), box
