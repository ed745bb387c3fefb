"""Anchor (prior) boxes for SSD-style heads, computed from the input size.

One layout serves RetinaFace and SSD: level ``k`` has stride ``s_k`` and a list of prior shapes
(width, height in pixels). Its grid has ``ceil(H / s_k)`` rows and ``ceil(W / s_k)`` columns; the
prior of cell (row i, column j) and shape (w, h) is, normalized to the input size,
``(cx, cy, w, h) = ((j + 0.5) * s_k / W, (i + 0.5) * s_k / H, w / W, h / H)``.
Priors are ordered level by level, row by row, column by column, shape by shape.

``trtflow.graph.priors`` builds the same priors inside an ONNX graph from the input's shape,
so dynamic H/W keep working; the numpy version here is used by decode_detections, the numpy
reference and the tests that check the two agree.
"""

from __future__ import annotations

import functools
import math
import numbers
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from trtflow.errors import ModelLoadError, UsageError

Shape2 = tuple[float, float]


@dataclass(frozen=True)
class PriorConfig:
    """Anchor layout of an SSD-style head.

    Attributes:
        strides: pixels per grid cell, one per level.
        shapes: per level, the prior (width, height) in pixels for each cell.
        clip: clamp the normalized priors to [0, 1] (SSD does, RetinaFace does not).
    """

    strides: tuple[int, ...]
    shapes: tuple[tuple[Shape2, ...], ...]
    clip: bool = False

    def __post_init__(self):
        # tuples, also when given lists: computed priors are cached by config
        try:
            object.__setattr__(self, "strides", tuple(self.strides))
            object.__setattr__(self, "shapes", tuple(tuple(tuple(wh) for wh in level) for level in self.shapes))
        except TypeError:
            raise UsageError(f"prior config: strides {self.strides!r}, shapes {self.shapes!r}; give one stride per "
                             "level and, per level, a list of (width, height) prior shapes") from None
        if len(self.strides) != len(self.shapes):
            raise UsageError(f"prior config has {len(self.strides)} strides but {len(self.shapes)} shape lists")
        if not all(_positive(s) for s in self.strides):
            raise UsageError(f"prior config strides {self.strides}: give each level's pixels per grid cell, above 0")
        for level, shapes in enumerate(self.shapes):
            if not all(len(wh) == 2 and all(_positive(v) for v in wh) for wh in shapes):
                raise UsageError(f"prior config level {level} shapes {shapes}: give (width, height) pairs in pixels, "
                                 "above 0")

    def count(self, height: int, width: int) -> int:
        """Number of priors for an input of ``height`` x ``width`` pixels."""
        return sum(
            math.ceil(height / s) * math.ceil(width / s) * len(shapes) for s, shapes in zip(self.strides, self.shapes)
        )


def _positive(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value) and value > 0


def square_shapes(sizes: Sequence[float]) -> tuple[Shape2, ...]:
    return tuple((float(s), float(s)) for s in sizes)


def ssd_shapes(min_size: float, max_size: float, ratios: Sequence[float]) -> tuple[Shape2, ...]:
    """One SSD level: the min square, the sqrt(min*max) square, then (r, 1/r) pairs per ratio."""
    mid = math.sqrt(min_size * max_size)
    shapes = [(min_size, min_size), (mid, mid)]
    for r in ratios:
        shapes += [(min_size * math.sqrt(r), min_size / math.sqrt(r)), (min_size / math.sqrt(r), min_size * math.sqrt(r))]
    return tuple((float(w), float(h)) for w, h in shapes)


# RetinaFace (mobilenet / resnet heads): 2 square priors per cell on strides 8, 16, 32.
RETINAFACE = PriorConfig(
    strides=(8, 16, 32),
    shapes=(square_shapes((16, 32)), square_shapes((64, 128)), square_shapes((256, 512))),
)

# SSD300 (VOC/COCO layout of the original paper): 8732 priors at 300x300.
SSD300 = PriorConfig(
    strides=(8, 16, 32, 64, 100, 300),
    shapes=tuple(
        ssd_shapes(lo, hi, ratios)
        for lo, hi, ratios in zip(
            (30, 60, 111, 162, 213, 264),
            (60, 111, 162, 213, 264, 315),
            ((2,), (2, 3), (2, 3), (2, 3), (2,), (2,)),
        )
    ),
    clip=True,
)

PRESETS = {"retinaface": RETINAFACE, "ssd300": SSD300}


def make_priors(config: PriorConfig, height: int, width: int) -> np.ndarray:
    """Normalized priors ``[A, 4]`` float32 as (cx, cy, w, h) for a ``height`` x ``width`` input."""
    levels = []
    for stride, shapes in zip(config.strides, config.shapes):
        rows, cols = math.ceil(height / stride), math.ceil(width / stride)
        cy = (np.arange(rows, dtype=np.float64) + 0.5) * stride / height
        cx = (np.arange(cols, dtype=np.float64) + 0.5) * stride / width
        wh = np.asarray(shapes, dtype=np.float64) / [width, height]  # [S, 2]
        grid = np.empty((rows, cols, len(shapes), 4))
        grid[..., 0] = cx[None, :, None]
        grid[..., 1] = cy[:, None, None]
        grid[..., 2:] = wh[None, None]
        levels.append(grid.reshape(-1, 4))
    priors = np.concatenate(levels).astype(np.float32)
    return np.clip(priors, 0.0, 1.0) if config.clip else priors


@functools.lru_cache(maxsize=32)
def _made_once(config: PriorConfig, height: int, width: int) -> np.ndarray:
    """``make_priors`` once per (config, height, width), read-only: a stream of same-size batches reuses them."""
    priors = make_priors(config, height, width)
    priors.flags.writeable = False
    return priors


def load_priors(path: str | Path) -> np.ndarray:
    """Priors from a ``.npy`` file of shape [A, 4] (normalized cx, cy, w, h), read once per version of
    the file (its size and modification time), not on every batch of a stream; a copy each call.

    Raises:
        ModelLoadError: the file is missing, unreadable, not a numeric array or not [A, 4].
    """
    return _read_priors(*npy_version(path)).copy()


def npy_version(path: str | Path) -> tuple[Path, int, int]:
    """``(absolute path, size, mtime_ns)`` of a ``.npy`` priors file: one version of it, what its
    reading (and a device copy of it) is remembered by.

    Raises:
        ModelLoadError: the file is missing.
    """
    path = Path(path)
    try:
        stat = path.stat()
    except OSError:
        raise ModelLoadError(f"priors file not found: {path}") from None
    return path.absolute(), stat.st_size, stat.st_mtime_ns


def is_npy(priors: Any) -> bool:
    """Priors given as a ``.npy`` file path."""
    return isinstance(priors, (str, Path)) and str(priors).lower().endswith(".npy")


@functools.lru_cache(maxsize=8)
def _read_priors(path: Path, size: int, mtime_ns: int) -> np.ndarray:
    try:
        priors = np.load(path, allow_pickle=False)
    except (ValueError, OSError) as exc:
        raise ModelLoadError(f"cannot read priors from {path} ({exc}); give a .npy of shape [A, 4]") from None
    if not isinstance(priors, np.ndarray):  # np.load opens an .npz archive whatever its name
        priors.close()
        raise ModelLoadError(f"{path} is an .npz archive, not a .npy array; save the [A, 4] priors with np.save")
    if not np.issubdtype(priors.dtype, np.number):
        raise ModelLoadError(f"priors in {path} are {priors.dtype}; expected numbers, [A, 4] normalized (cx, cy, w, h)")
    if priors.ndim != 2 or priors.shape[1] != 4:
        raise ModelLoadError(
            f"priors in {path} have shape {priors.shape}; expected [A, 4] as normalized (cx, cy, w, h)"
        )
    return priors.astype(np.float32)


def resolve_priors(priors, height: int | None, width: int | None) -> np.ndarray:
    """Priors as an array from a preset name, a PriorConfig, a .npy path or an array.

    Priors computed from a preset or a PriorConfig are made once per input size and shared:
    the array is read-only.

    Raises:
        UsageError: a preset or config without the input size it needs, an unknown name, or an
            array that is not [A, 4].
    """
    if isinstance(priors, np.ndarray):
        return _checked(priors)
    if isinstance(priors, str) and priors in PRESETS:
        priors = PRESETS[priors]
    if isinstance(priors, PriorConfig):
        if height is None or width is None:
            raise UsageError("priors are computed from the input size: pass input_size=(height, width)")
        return _made_once(priors, int(height), int(width))
    if is_npy(priors):
        return load_priors(priors)
    if hasattr(priors, "shape"):  # a torch tensor
        from trtflow.arrays import to_numpy

        return _checked(to_numpy(priors))
    raise UsageError(f"priors {priors!r}: give one of {sorted(PRESETS)}, a PriorConfig, a .npy path or an [A, 4] array")


def _checked(priors: np.ndarray) -> np.ndarray:
    if not np.issubdtype(priors.dtype, np.number):
        raise UsageError(f"priors are {priors.dtype}; give numbers, an [A, 4] array of normalized (cx, cy, w, h)")
    if priors.ndim != 2 or priors.shape[1] != 4:
        raise UsageError(f"priors have shape {tuple(priors.shape)}; give an [A, 4] array of normalized (cx, cy, w, h)")
    return priors.astype(np.float32)
