"""Detection head formats and the box math that turns raw head outputs into boxes and scores.

The math is written once against a tiny array interface (slicing ``x[..., a:b]``, arithmetic,
``ops.cat``, ``ops.exp``, ``ops.permute``) and runs on numpy arrays, torch tensors, and
``trtflow.graph.builder.GraphArray`` (which emits ONNX nodes): the in-graph NMS of
``trtflow surgeon add-nms``, ``decode_detections`` and the numpy reference share it.

Formats (N images, A anchors, C classes):

| format         | raw outputs                                  | boxes                    | scores            |
|----------------|----------------------------------------------|--------------------------|-------------------|
| ``yolov8``     | head ``[N, 4+C, A]``                         | cx, cy, w, h (pixels)    | class scores      |
| ``yolov5``     | head ``[N, A, 5+C]``                         | cx, cy, w, h (pixels)    | obj * class score |
| ``boxes-scores`` | boxes ``[N, A, 4]``, scores ``[N, A, C]``  | x1, y1, x2, y2           | as given          |
| ``retinaface`` | loc ``[N, A, 4]``, conf ``[N, A, C]``, landmarks ``[N, A, 10]`` | prior offsets | conf[..., 1:] |
| ``ssd``        | loc ``[N, A, 4]``, conf ``[N, A, C]``        | prior offsets            | conf[..., 1:]     |

For retinaface and ssd, conf column 0 is the background: it is never reported, and reported
class ids keep their conf column index (RetinaFace's face is class 1), like EfficientNMS's
``background_class=0``. Their boxes and landmarks come out in input pixels.
"""

from __future__ import annotations

import functools
import math
import numbers
from dataclasses import dataclass, field
from typing import Any, Mapping, Optional, Sequence

import numpy as np

from trtflow.arrays import is_torch
from trtflow.errors import UsageError
from trtflow.spec import is_count
from trtflow.vision import priors as prior_sets  # imported once; called through the module

# format -> the raw outputs it reads, by role
ROLES = {
    "yolov8": ("head",),
    "yolov5": ("head",),
    "boxes-scores": ("boxes", "scores"),
    "retinaface": ("loc", "conf", "landmarks"),
    "ssd": ("loc", "conf"),
}
FORMATS = tuple(ROLES)
PRIOR_FORMATS = ("retinaface", "ssd")
DEFAULT_PRIORS = {"retinaface": "retinaface", "ssd": "ssd300"}


@dataclass(frozen=True)
class DetectionConfig:
    """How to decode one detection head and filter its detections.

    Attributes:
        format: one of FORMATS.
        score_thr: candidates need a score strictly above this.
        iou_thr: a candidate is suppressed by a higher-scored kept box of the same class (any
            class when class_agnostic) whose IoU is strictly above this.
        max_det: detections kept per image; outputs are padded to this many.
        class_agnostic: one candidate per anchor (its best class) and NMS across classes.
            Otherwise every (anchor, class) pair above score_thr is a candidate (multi-label,
            as ONNX NonMaxSuppression and EfficientNMS do).
        names: raw output name per role (see ROLES); missing roles are found by name, then order.
        variances: center and size variances of retinaface / ssd offsets.
        priors: retinaface / ssd priors: a preset name ("retinaface", "ssd300"), a
            PriorConfig, a .npy path or an [A, 4] array; None takes the format's preset.
    """

    format: str
    score_thr: float = 0.25
    iou_thr: float = 0.45
    max_det: int = 100
    class_agnostic: bool = False
    names: Mapping[str, str] = field(default_factory=dict)
    variances: tuple[float, float] = (0.1, 0.2)
    priors: Any = None

    def __post_init__(self):
        if self.format not in ROLES:
            raise UsageError(f"unknown detection format '{self.format}'; choose one of: {', '.join(FORMATS)}")
        if not is_count(self.max_det):
            raise UsageError(f"max_det is {self.max_det!r}; give a positive whole number of detections per image")
        if not isinstance(self.score_thr, numbers.Real) or math.isnan(self.score_thr):
            raise UsageError(f"score_thr is {self.score_thr!r}; give a number (candidates need a score above it)")
        if not isinstance(self.iou_thr, numbers.Real) or not 0.0 <= self.iou_thr <= 1.0:
            raise UsageError(f"iou_thr is {self.iou_thr}; give a value in [0, 1]")
        if len(self.variances) != 2 or not all(isinstance(v, numbers.Real) for v in self.variances):
            raise UsageError(f"variances are {self.variances!r}; give two numbers (center, size), e.g. (0.1, 0.2)")
        unknown = set(self.names) - set(ROLES[self.format])
        if unknown:
            raise UsageError(f"format {self.format} reads outputs {ROLES[self.format]}; got names for {sorted(unknown)}")

    @property
    def class_offset(self) -> int:
        """Added to score column indices to give class ids (1 when column 0 is the background)."""
        return 1 if self.format in PRIOR_FORMATS else 0

    @property
    def prior_spec(self) -> Any:
        return self.priors if self.priors is not None else DEFAULT_PRIORS.get(self.format)


def input_hw(input_size: Any) -> tuple[int, int]:
    """``input_size`` as (height, width) of positive ints (one int is a square).

    Raises:
        UsageError: anything else.
    """
    try:
        hw = (input_size, input_size) if isinstance(input_size, numbers.Integral) else tuple(input_size)
        ok = len(hw) == 2 and all(isinstance(v, numbers.Integral) and v >= 1 for v in hw)
    except TypeError:
        ok = False
    if not ok:
        raise UsageError(f"input_size {input_size!r}: give the network input's (height, width) as positive ints")
    return int(hw[0]), int(hw[1])


def resolve_roles(config: DetectionConfig, available: Sequence[str]) -> dict[str, str]:
    """Map each role of the format to an output name: given names first, then same-named outputs,
    then the remaining outputs in order (``landmarks`` is optional).

    Raises:
        UsageError: a given name is not an output or is given for two roles, or too few outputs for the format.
    """
    roles = ROLES[config.format]
    given = [(role, config.names[role]) for role in roles if config.names.get(role) is not None]
    for i, (role, name) in enumerate(given):
        twice = [other for other, other_name in given[i + 1:] if other_name == name]
        if twice:
            raise UsageError(f"output '{name}' is given for both {role} and {twice[0]}; each role reads its own output")
    out: dict[str, str] = {}
    for role in roles:
        name = config.names.get(role)
        if name is not None and name not in available:
            raise UsageError(f"output '{name}' (given for {role}) is not among the outputs {list(available)}")
        if name is None and role in available:
            name = role
        if name is not None:
            out[role] = name
    rest = [n for n in available if n not in out.values()]
    for role in roles:
        if role not in out and rest:
            out[role] = rest.pop(0)
    missing = [r for r in roles if r not in out and r != "landmarks"]
    if missing:
        raise UsageError(
            f"format {config.format} needs outputs for {list(roles)}; the model has {list(available)}. "
            f"Name them with --boxes/--scores/--landmarks (names= in Python)."
        )
    return out


class _NumpyOps:
    @staticmethod
    def cat(parts, axis=-1):
        return np.concatenate(parts, axis=axis)

    exp = staticmethod(np.exp)

    @staticmethod
    def permute(x, perm):
        return np.transpose(x, perm)


class _TorchOps:
    @staticmethod
    def cat(parts, axis=-1):
        import torch

        return torch.cat(parts, dim=axis)

    @staticmethod
    def exp(x):
        return x.exp()

    @staticmethod
    def permute(x, perm):
        return x.permute(*perm)


def array_ops(x: Any):
    """The cat/exp/permute namespace of ``x``'s family (numpy, torch or an ONNX GraphArray)."""
    if is_torch(x):
        return _TorchOps
    if hasattr(x, "builder"):
        return x.builder
    return _NumpyOps


def cxcywh_to_xyxy(boxes):
    ops = array_ops(boxes)
    center, half = boxes[..., 0:2], boxes[..., 2:4] * 0.5
    return ops.cat([center - half, center + half], -1)


def decode_offsets(loc, priors, variances: tuple[float, float]):
    """SSD / RetinaFace box offsets ``[N, A, 4]`` -> normalized x1, y1, x2, y2 given priors (cx, cy, w, h)."""
    ops = array_ops(loc)
    p_xy, p_wh = priors[..., 0:2], priors[..., 2:4]
    center = p_xy + loc[..., 0:2] * variances[0] * p_wh
    size = p_wh * ops.exp(loc[..., 2:4] * variances[1])
    return cxcywh_to_xyxy(ops.cat([center, size], -1))


def decode_points(points, priors, variance: float, count: int):
    """RetinaFace landmark offsets ``[N, A, 2*count]`` -> normalized x, y per point."""
    ops = array_ops(points)
    p_xy, p_wh = priors[..., 0:2], priors[..., 2:4]
    return ops.cat([p_xy + points[..., 2 * k:2 * k + 2] * variance * p_wh for k in range(count)], -1)


def split_head(raw: Mapping[str, Any], config: DetectionConfig, priors=None, scale_xy=None,
               landmark_count: Optional[int] = None) -> tuple:
    """Raw outputs by role -> (boxes ``[N, A, 4]`` x1y1x2y2, scores ``[N, A, C]``, landmarks or None).

    Args:
        raw: arrays keyed by role (see ROLES), all of one family.
        config: the format and variances.
        priors: ``[A, 4]`` normalized priors (retinaface / ssd), same family as raw.
        scale_xy: ``[2]`` (width, height) scaling normalized boxes to pixels (retinaface / ssd).
        landmark_count: points per landmark set (5 for RetinaFace); None reads it from the shape.
    """
    fmt = config.format
    if fmt in ("yolov8", "yolov5"):
        head = raw["head"]
        ops = array_ops(head)
        if fmt == "yolov8":
            head = ops.permute(head, (0, 2, 1))
            return cxcywh_to_xyxy(head[..., 0:4]), head[..., 4:None], None
        return cxcywh_to_xyxy(head[..., 0:4]), head[..., 5:None] * head[..., 4:5], None
    if fmt == "boxes-scores":
        return raw["boxes"], raw["scores"], None
    ops = array_ops(raw["loc"])
    scale4 = ops.cat([scale_xy, scale_xy], -1)
    boxes = decode_offsets(raw["loc"], priors, config.variances) * scale4
    scores = raw["conf"][..., 1:None]
    landmarks = None
    if raw.get("landmarks") is not None:
        count = landmark_count if landmark_count is not None else int(raw["landmarks"].shape[-1]) // 2
        landmarks = decode_points(raw["landmarks"], priors, config.variances[0], count) * ops.cat([scale_xy] * count, -1)
    return boxes, scores, landmarks


def decode_raw(outputs: Mapping[str, Any], config: DetectionConfig, input_size: Optional[Sequence[int]] = None) -> tuple:
    """Named raw outputs (numpy or torch) -> ``split_head``'s (boxes, scores, landmarks), same family.

    Args:
        outputs: the raw head outputs keyed by output name.
        config: format, names and priors.
        input_size: (height, width) of the network input; required by retinaface and ssd
            (priors and pixel scaling).

    Raises:
        UsageError: input_size missing where needed, or priors that do not match the anchors.
    """
    roles = resolve_roles(config, list(outputs))
    raw = {role: outputs[name] for role, name in roles.items()}
    if config.format not in PRIOR_FORMATS:
        return split_head(raw, config)
    if input_size is None:
        raise UsageError(f"format {config.format} needs input_size=(height, width) of the network input "
                         "to place the priors and scale boxes to pixels")
    height, width = input_hw(input_size)
    loc = raw["loc"]
    spec = config.prior_spec
    key = _device_key(spec) if is_torch(loc) else None
    if key is not None:
        priors, scale_xy = _on_device(*key, height, width, loc.device, loc.dtype)
    elif _ready(spec, loc):  # a caller's [A, 4] tensor already where and as the outputs are: taken as is
        priors, scale_xy = spec, _scale_on(height, width, loc.device, loc.dtype)
    else:
        priors, scale_xy = prior_sets.resolve_priors(config.prior_spec, height, width), np.array([width, height], np.float32)
        if is_torch(loc):
            import torch

            priors = torch.from_numpy(priors).to(loc.device, loc.dtype)
            scale_xy = torch.from_numpy(scale_xy).to(loc.device, loc.dtype)
    if priors.shape[0] != loc.shape[1]:
        raise UsageError(
            f"{priors.shape[0]} priors for a {height}x{width} input, but '{roles['loc']}' has {loc.shape[1]} anchors; "
            "give the input size the model ran at, or the model's own priors (.npy)"
        )
    return split_head(raw, config, priors, scale_xy)


def _device_key(spec: Any) -> tuple | None:
    """``(spec, version)`` of priors that are the same on every batch of an input size, so their device
    copy is made once: computed priors (a preset name or a PriorConfig; version None) and a .npy file
    (its absolute path; version its (size, mtime_ns), so a rewritten file is read again). None for
    priors given as an array, copied on each call."""
    if isinstance(spec, prior_sets.PriorConfig) or (isinstance(spec, str) and spec in prior_sets.PRESETS):
        return spec, None
    if prior_sets.is_npy(spec):
        path, size, mtime_ns = prior_sets.npy_version(spec)
        return str(path), (size, mtime_ns)
    return None


@functools.lru_cache(maxsize=32)
def _on_device(spec: Any, version: Any, height: int, width: int, device: Any, dtype: Any) -> tuple:
    """The priors of ``spec`` (at ``version``, see ``_device_key``) and the (width, height) scale as
    tensors on ``device``: copied there once per (spec, version, input size, device, dtype), not on
    every batch of a stream."""
    import torch

    priors = torch.tensor(prior_sets.resolve_priors(spec, height, width), dtype=dtype, device=device)
    return priors, _scale_on(height, width, device, dtype)


@functools.lru_cache(maxsize=32)
def _scale_on(height: int, width: int, device: Any, dtype: Any) -> Any:
    """The (width, height) scale of boxes as a tensor on ``device``, made once per size, device and dtype."""
    import torch

    return torch.tensor([width, height], dtype=dtype, device=device)


def _ready(spec: Any, loc: Any) -> bool:
    """``spec`` is an [A, 4] torch tensor on ``loc``'s device, of its dtype (the priors to use as they are)."""
    return (is_torch(spec) and is_torch(loc) and spec.device == loc.device and spec.dtype == loc.dtype
            and spec.dim() == 2 and spec.shape[1] == 4)
