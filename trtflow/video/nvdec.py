"""NVDEC decoding through PyAV's CUDA hwaccel: NV12 frames stay on the GPU, leave PyAV through
DLPack and become RGB on the GPU. Nothing falls back to the CPU: when NVDEC cannot run, the
error says why."""

from __future__ import annotations

from typing import Any

from trtflow.deps import require
from trtflow.errors import UsageError

# AVColorSpace values (libavutil/pixfmt.h)
_BT709 = 1
_BT601 = (5, 6)  # BT470BG, SMPTE170M
_FULL_RANGE = 2  # AVCOL_RANGE_JPEG

# (R from V, G from U, G from V, B from U)
_COEFFS = {"bt709": (1.5748, -0.1873, -0.4681, 1.8556), "bt601": (1.402, -0.344136, -0.714136, 1.772)}


def nvdec_hwaccel(uri: str):
    """A PyAV ``HWAccel`` for CUDA that keeps frames on the GPU and never falls back to software.

    Raises:
        UsageError: no CUDA GPU for torch, or this FFmpeg build has no CUDA hwaccel.
    """
    torch = require("torch", "--decode nvdec")
    av = require("av", "trtflow video")
    if not torch.cuda.is_available():
        raise UsageError(f"source '{uri}': --decode nvdec needs an NVIDIA GPU with CUDA, and torch sees none "
                         "(torch.cuda.is_available() is False); use --decode cpu")
    from av.codec.hwaccel import HWAccel, hwdevices_available

    if "cuda" not in hwdevices_available():
        raise UsageError(f"source '{uri}': --decode nvdec: this PyAV/FFmpeg build has no CUDA hwaccel "
                         f"(it has: {', '.join(hwdevices_available()) or 'none'}); use --decode cpu")
    # FFmpeg joins the CUDA context current in this thread (torch's primary context, made current
    # here): with its own primary-context flags it refuses a context torch already started.
    torch.zeros(1, device="cuda")
    del av
    return HWAccel("cuda", allow_software_fallback=False, is_hw_owned=True,
                   options={"primary_ctx": "0", "current_ctx": "1"})


class NV12Converter:
    """NV12 CUDA ``VideoFrame`` -> RGB ``(H, W, 3)`` uint8 CUDA tensor, on its own CUDA stream."""

    def __init__(self, uri: str):
        self.torch = require("torch", "--decode nvdec")
        self.uri = uri
        self.stream = self.torch.cuda.Stream()
        from torch.utils.dlpack import from_dlpack

        self._from_dlpack = from_dlpack

    def __call__(self, frame: Any):
        torch = self.torch
        if frame.format.name != "cuda":
            raise UsageError(f"source '{self.uri}': --decode nvdec was asked for but the decoder gave "
                             f"'{frame.format.name}' frames in system memory (NVDEC does not take this "
                             "stream's codec or profile); use --decode cpu")
        y = self._from_dlpack(frame.planes[0].__dlpack__())  # PyAV exports without a stream: decoded data is ready
        uv = self._from_dlpack(frame.planes[1].__dlpack__())
        with torch.cuda.stream(self.stream):
            rgb = nv12_to_rgb(y, uv, frame.colorspace, frame.color_range)
        self.stream.synchronize()  # the NV12 surface goes back to the decoder's pool after this
        return rgb


def nv12_to_rgb(y: Any, uv: Any, colorspace: int, color_range: int):
    """RGB ``(H, W, 3)`` uint8 of an NV12 frame: ``y`` ``(H, W)``, ``uv`` ``(H/2, W/2, 2)``.

    8-bit planes (NV12) are taken as they are. 16-bit planes (P010, P016: 10- to 16-bit video, the
    samples in the high bits) are scaled to 8 bits, so a 10-bit stream is not read as out-of-range white.

    Raises:
        UsageError: the planes are neither uint8 nor uint16.
    """
    import torch

    if y.dtype == torch.uint8:
        yf, cf = y.float(), uv.float()
    elif y.dtype == torch.uint16:
        yf, cf = y.float() / 256.0, uv.float() / 256.0
    else:
        raise UsageError(f"NVDEC gave {y.dtype} planes; trtflow converts 8-bit NV12 and 16-bit P010/P016 "
                         "only; use --decode cpu")
    h, w = y.shape
    if colorspace == _BT709:
        name = "bt709"
    elif colorspace in _BT601:
        name = "bt601"
    else:
        name = "bt709" if h >= 720 else "bt601"
    chroma = cf.permute(2, 0, 1).unsqueeze(0)
    chroma = torch.nn.functional.interpolate(chroma, scale_factor=2, mode="nearest")[0, :, :h, :w]
    if color_range == _FULL_RANGE:
        u, v = chroma[0] - 128.0, chroma[1] - 128.0
    else:
        yf = (yf - 16.0) * (255.0 / 219.0)
        u, v = (chroma[0] - 128.0) * (255.0 / 224.0), (chroma[1] - 128.0) * (255.0 / 224.0)
    rv, gu, gv, bu = _COEFFS[name]
    rgb = torch.stack((yf + rv * v, yf + gu * u + gv * v, yf + bu * u), dim=-1)
    return rgb.round_().clamp_(0, 255).to(torch.uint8)
