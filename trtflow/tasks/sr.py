"""Super-resolution: frames -> tiles with context margins -> the model -> stitched, exactly scale x input.

waifu2x models (upconv_7, cunet) use unpadded convolutions: an input of H x W gives
``scale * H - 2 * scale * p`` rows, p the margin per side (7 for upconv_7, 18 for cunet). So each
frame is edge-padded by p, cut into tiles of ``tile`` x ``tile`` pixels (the last row/column of
tiles shifted back inside the frame), each tile taken with its p-pixel margin; the model's output
for a tile is exactly that tile upscaled, and the tiles are pasted back (overlaps, where the last
tile was shifted, are averaged). A frame smaller than the tile is one tile (edge-padded up to the
batch's tile when larger frames share the batch). The output is exactly
``scale * H`` x ``scale * W`` and, for a model of unpadded convolutions, equal to running it on
the whole frame at once. All tiles of a batch have one size, so they go through the engine as one
batch (``task.infer`` splits it to the engine's batch range).

``cunet`` also needs even tile sizes at even offsets (it downsamples by 2 inside): frames are
edge-padded to even sizes first (``align``), and the output cropped.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any, Mapping, Optional, Sequence

import numpy as np

from trtflow.deps import require
from trtflow.errors import EngineError, UsageError
from trtflow.tasks.base import BatchDims, FrameMeta, Task, frames_list, whole_option
from trtflow.tasks.prepare import feed_of
from trtflow.tasks.results import Upscaled, to_host
from trtflow.vision.preprocess import as_tensor

log = logging.getLogger(__name__)

ARCHS = {"upconv_7": (7, 1), "cunet": (18, 2)}  # margin per side, size alignment
DEFAULT_TILE = 256


@dataclass(frozen=True)
class TileMeta(FrameMeta):
    """A FrameMeta plus where the frame's tiles are: ``first`` index in the batch, tile (h, w) and
    the (y, x) offsets of each tile in the (aligned) frame."""

    first: int = 0
    tile: tuple[int, int] = (0, 0)
    offsets: tuple = ()
    aligned: tuple[int, int] = (0, 0)


class SuperResolutionTask(Task):
    """Upscale frames with a fully convolutional SR model (waifu2x by default).

    Args:
        engine: the loaded engine: input [N, 3, H, W] RGB 0..1, output [N, 3, s*H - 2*s*p, ...].
        arch: "upconv_7" or "cunet" (sets the margin and alignment), or None to measure the margin
            by running the engine once on a small input.
        scale: the model's upscaling factor.
        tile: tile size in input pixels (0: whole frames, one tile each).
        margin: the model's context margin per side, overriding ``arch``.
        align: tile sizes and offsets are multiples of this (2 for cunet).
        device: move numpy frames to this torch device for tiling.
    """

    name = "sr"

    def __init__(self, engine: Any, *, arch: Optional[str] = None, scale: int = 2, tile: int = DEFAULT_TILE,
                 margin: Optional[int] = None, align: Optional[int] = None, input_name: Optional[str] = None,
                 device: Optional[str] = None, resize: Optional[str] = None):
        super().__init__(engine, input_name=input_name, device=device)
        if resize not in (None, "none"):
            raise UsageError(f"the sr task upscales frames as they are; resize '{resize}' does not apply")
        if arch is not None and arch not in ARCHS:
            raise UsageError(f"unknown SR architecture '{arch}'; choose one of: {', '.join(ARCHS)}, or None")
        self.arch = arch
        self.scale = whole_option("scale", scale, 1, "the model's upscaling factor")
        self.tile = whole_option("tile", tile, None, "the tile side in input pixels (0: whole frames)")
        default_margin, default_align = ARCHS.get(arch, (None, 1))
        self.align = whole_option("align", default_align if align is None else align, 1,
                                  "the multiple tile sizes and offsets are made of (2 for cunet)")
        self.margin = (whole_option("margin", margin, 0, "the model's context margin per side in input pixels")
                       if margin is not None else default_margin if default_margin is not None
                       else self._measure_margin())
        self.output_name = engine.outputs[0].name

    def _measure_margin(self) -> int:
        """p from one run: an input of 2*16 + 2*a rows gives scale * (that) - 2 * scale * p rows."""
        size = 64
        probe = np.zeros((1, 3, size, size), dtype=self.input_spec.dtype)
        out = self.infer({self.input_name: probe})[self.engine.outputs[0].name]  # padded to a fixed batch
        lost = self.scale * size - int(out.shape[-2])
        if lost < 0 or lost % (2 * self.scale):
            raise UsageError(f"the SR model maps {size} rows to {out.shape[-2]}; that is not {self.scale}x minus a "
                             "margin per side. Give scale= and margin= for this model")
        log.info("SR model margin measured: %d pixels per side", lost // (2 * self.scale))
        return lost // (2 * self.scale)

    def prepare(self, frames: Any) -> tuple[dict[str, Any], list[TileMeta]]:
        torch = require("torch", "the sr task")
        from trtflow.arrays import torch_dtype

        items = frames_list(frames)
        numpy_in = isinstance(items[0], np.ndarray) and self.device is None
        tensors = [as_tensor(f, self.device) for f in items]
        a = self.align
        aligned = [(math.ceil(int(t.shape[0]) / a) * a, math.ceil(int(t.shape[1]) / a) * a) for t in tensors]
        th, tw = self._tile_size(aligned)
        p = self.margin
        tiles, metas = [], []
        for t, (ah, aw) in zip(tensors, aligned):
            h, w = int(t.shape[0]), int(t.shape[1])
            ah, aw = max(ah, th), max(aw, tw)  # a frame smaller than the batch's tile: edge-padded up to it
            x = t.permute(2, 0, 1)[None].float() / 255.0
            x = torch.nn.functional.pad(x, (p, p + aw - w, p, p + ah - h), mode="replicate")
            offsets = [(y0, x0) for y0 in _starts(ah, th) for x0 in _starts(aw, tw)]
            metas.append(TileMeta((h, w), (th + 2 * p, tw + 2 * p), (float(self.scale),) * 2, (0.0, 0.0),
                                  len(tiles), (th, tw), tuple(offsets), (ah, aw)))
            tiles += [x[0, :, y0:y0 + th + 2 * p, x0:x0 + tw + 2 * p] for y0, x0 in offsets]
        batch = torch.stack(tiles).to(torch_dtype(self.input_spec.dtype)).contiguous()
        return {self.input_name: feed_of(batch, numpy_in)}, metas

    def _tile_size(self, aligned: list) -> tuple[int, int]:
        """One tile size for the batch: ``tile``, or the largest frame's size where that is smaller
        (smaller frames are padded up to it, so a tiny frame does not cut the others into tiny tiles)."""
        a = self.align
        max_h = max(h for h, _ in aligned)
        max_w = max(w for _, w in aligned)
        if self.tile <= 0:
            return max_h, max_w
        th = max(a, min(self.tile, max_h) // a * a)
        tw = max(a, min(self.tile, max_w) // a * a)
        return th, tw

    def finish(self, outputs: Mapping[str, Any], metas: Sequence[TileMeta]) -> list[Upscaled]:
        """Tiles -> frames, converted to uint8 HWC where the outputs are (the GPU for CUDA outputs),
        then one copy of the whole batch to the host (pinned memory for CUDA).

        Raises:
            UsageError: the output is not ``scale`` x the tiles (wrong scale or margin).
            EngineError: the model gave NaN or infinite values, which have no pixel value.
        """
        torch = require("torch", "the sr task")
        from trtflow.arrays import to_torch

        y = to_torch(outputs[self.output_name])
        s = self.scale
        th, tw = metas[0].tile  # one tile size per batch (prepare's _tile_size)
        if tuple(y.shape[-2:]) != (s * th, s * tw):
            raise UsageError(f"the SR model gave {tuple(y.shape[-2:])} for {th}x{tw} tiles with a {self.margin}-pixel "
                             f"margin; expected {(s * th, s * tw)}. Check scale= and margin= (arch=)")
        finite = y.isfinite().all()  # one check of the batch, read after to_host's sync
        counts: dict = {}  # tiles over each output pixel, by tiling: frames of one size share it
        frames = to_host([self._stitch(torch, y, meta, counts).clamp(0, 1).mul(255).round().to(torch.uint8)
                          .permute(1, 2, 0) for meta in metas])
        if not bool(finite):  # which frame, and how many of its values (not those of padding cropped off)
            for i, meta in enumerate(metas):
                bad = int(self._stitch(torch, y, meta, counts).isfinite().logical_not().sum())
                if bad:
                    h, w = meta.size
                    raise EngineError(f"the SR model gave {bad} non-finite (NaN or infinite) values for frame {i} of "
                                      f"the batch ({h} x {w}); they have no pixel value (NaN would be cast to black). "
                                      "An FP16 engine that overflows gives them: run it in FP32, or keep the "
                                      "overflowing layers in FP32 (trtflow surgeon fp16)")
        return [Upscaled(frame, float(s)) for frame in frames]

    def _stitch(self, torch: Any, y: Any, meta: TileMeta, counts: dict):
        """One frame's tiles -> its (3, s*H, s*W) float32 image on y's device (overlaps averaged)."""
        s, (th, tw), (h, w) = self.scale, meta.tile, meta.size
        if len(meta.offsets) == 1:  # one tile: the frame itself (what the canvas below gives, without it)
            image = y[meta.first, :, :s * h, :s * w].float()
        else:
            ah, aw = meta.aligned
            canvas = torch.zeros((3, s * ah, s * aw), dtype=torch.float32, device=y.device)
            for k, (y0, x0) in enumerate(meta.offsets):
                canvas[:, s * y0:s * (y0 + th), s * x0:s * (x0 + tw)] += y[meta.first + k]
            key = (meta.offsets, meta.aligned)
            if key not in counts:
                count = counts[key] = torch.zeros((1, s * ah, s * aw), dtype=torch.float32, device=y.device)
                for y0, x0 in meta.offsets:
                    count[:, s * y0:s * (y0 + th), s * x0:s * (x0 + tw)] += 1
            image = (canvas / counts[key])[:, :s * h, :s * w]
        return image

    @property
    def batch_dims(self) -> BatchDims:
        return BatchDims(self.input_name, (3, None, None), self.input_spec.dtype)


def _starts(size: int, tile: int) -> list[int]:
    """Tile offsets covering [0, size): every ``tile`` pixels, the last shifted back inside."""
    starts = list(range(0, max(size - tile, 0) + 1, tile))
    if starts[-1] + tile < size:
        starts.append(size - tile)
    return starts

