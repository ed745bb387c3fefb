"""Does a raw detection head fit its declared format? Shapes, value ranges and prior counts.

Decoding reads whatever it is given: a YOLOv8 head read as YOLOv5 gives class ids in the
thousands and scores in the tens of thousands, and a reference decoded the same way agrees with
it. ``check_head`` refuses such a head before anything is decoded and names the format the
outputs look like. The rules (N images, A anchors, C classes):

| format         | shapes                                            | values (when arrays are given)         |
|----------------|---------------------------------------------------|----------------------------------------|
| ``yolov8``     | head ``[N, 4+C, A]``, C >= 1                       | class scores (rows 4:) in [0, 1]       |
| ``yolov5``     | head ``[N, A, 5+C]``, C >= 1                       | objectness and class scores in [0, 1]  |
| ``boxes-scores`` | boxes ``[N, A, 4]``, scores ``[N, A, C]``        | boxes are corners: x2 >= x1, y2 >= y1  |
| ``retinaface`` | loc ``[N, A, 4]``, conf ``[N, A, C>=2]``, landmarks ``[N, A, 2P]`` | A = priors for the input size |
| ``ssd``        | loc ``[N, A, 4]``, conf ``[N, A, C>=2]``             | A = priors for the input size          |

From shapes alone (no values: a model ONNX Runtime cannot run) the YOLO layouts are told apart
by orientation: anchors outnumber channels, so ``[N, 84, 8400]`` is YOLOv8's and
``[N, 25200, 85]`` YOLOv5's. With values the ranges decide, so a YOLOv5 head at a tiny input
size (fewer anchors than columns) still passes. Shapes may hold ``None`` or names for unknown dims.
"""

from __future__ import annotations

import math
from typing import Any, Mapping, Optional, Sequence

from trtflow.errors import UsageError
from trtflow.vision.formats import FORMATS, PRIOR_FORMATS, ROLES, DetectionConfig, input_hw, resolve_roles

EPS = 1e-3  # slack on [0, 1] for rounding (fp16 engines)
MAX_REVERSED = 0.1  # boxes-scores: at most this fraction of boxes with x2 < x1 or y2 < y1

LAYOUTS = {
    "yolov8": "channels-first [N, 4+C, A], no objectness",
    "yolov5": "anchors-first [N, A, 5+C] with objectness",
    "boxes-scores": "decoded corner boxes [N, A, 4] and scores [N, A, C]",
    "retinaface": "loc, conf and landmarks over priors",
    "ssd": "loc offsets over priors, conf with a background column",
}


def _shape(value: Any) -> Optional[tuple]:
    shape = value.shape if hasattr(value, "shape") else value
    return None if shape is None else tuple(d if isinstance(d, int) else None for d in shape)


def _has_values(value: Any) -> bool:
    return hasattr(value, "shape") and hasattr(value, "dtype")


def _describe(outputs: Mapping[str, Any], names: Sequence[str]) -> str:
    """``'output0' (1, 84, 8400)`` for each name; dynamic dims by their names."""
    def dims(value) -> str:
        shape = value.shape if hasattr(value, "shape") else value
        return "(?)" if shape is None else "(" + ", ".join(str(d) for d in shape) + ")"

    return ", ".join(f"'{n}' {dims(outputs[n])}" for n in names)


def _outside_unit(x: Any, what: str) -> Optional[str]:
    """Why ``x`` is not in [0, 1] (NaN ignored), or None."""
    if math.prod(x.shape) == 0:
        return None
    bad = (x < -EPS) | (x > 1 + EPS)
    if not bool(bad.any()):
        return None
    outside = x[bad]
    return f"{what} outside [0, 1] ({float(outside.min()):.3g} .. {float(outside.max()):.3g})"


def _rank3(role: str, name: str, shape: Optional[tuple]) -> Optional[str]:
    if shape is not None and len(shape) != 3:
        return f"'{name}' ({role}) is {len(shape)}-D, the format reads a 3-D [N, A, ...] array"
    return None


def _yolo(fmt: str, name: str, head: Any, shape: Optional[tuple]) -> Optional[str]:
    why = _rank3("head", name, shape)
    if why or shape is None:
        return why
    _, rows, cols = shape
    channels, anchors, need = (rows, cols, 5) if fmt == "yolov8" else (cols, rows, 6)
    if channels is not None and channels < need:
        return f"{channels} channels per anchor, {fmt} needs at least {need} ({'4' if fmt == 'yolov8' else '5'}+C)"
    if _has_values(head):
        if fmt == "yolov8":
            return _outside_unit(head[:, 4:], "class scores")
        return _outside_unit(head[..., 4:5], "objectness") or _outside_unit(head[..., 5:], "class scores")
    if channels is not None and anchors is not None and channels > anchors:
        return f"more channels ({channels}) than anchors ({anchors}): the layout is the other way round"
    return None


def _boxes_scores(outputs: Mapping[str, Any], roles: Mapping[str, str]) -> Optional[str]:
    shapes = {role: _shape(outputs[name]) for role, name in roles.items()}
    for role, name in roles.items():
        why = _rank3(role, name, shapes[role])
        if why:
            return why
    boxes_shape = shapes.get("boxes") or shapes.get("loc")
    box_role = "boxes" if "boxes" in roles else "loc"
    if boxes_shape is not None and boxes_shape[2] not in (None, 4):
        return f"'{roles[box_role]}' ({box_role}) has {boxes_shape[2]} values per anchor, not 4"
    batches = {role: s[0] for role, s in shapes.items() if s is not None and s[0] is not None}
    if len(set(batches.values())) > 1:
        return "the outputs disagree on the batch size: " + ", ".join(f"{r} {n}" for r, n in batches.items())
    counts = {role: s[1] for role, s in shapes.items() if s is not None and s[1] is not None}
    if len(set(counts.values())) > 1:
        return "the outputs disagree on the anchor count: " + ", ".join(f"{r} {a}" for r, a in counts.items())
    return None


def _priors_error(config: DetectionConfig, anchors: Optional[int], loc: str,
                  input_size: Optional[Sequence[int]]) -> Optional[str]:
    from trtflow.vision.priors import PRESETS, PriorConfig, resolve_priors

    spec = config.prior_spec
    spec = PRESETS.get(spec, spec) if isinstance(spec, str) else spec
    if anchors is None or (isinstance(spec, PriorConfig) and input_size is None):
        return None
    height, width = input_hw(input_size) if input_size is not None else (None, None)
    count = spec.count(height, width) if isinstance(spec, PriorConfig) else int(resolve_priors(spec, None, None).shape[0])
    if count == anchors:
        return None
    at = f" for a {height}x{width} input" if isinstance(spec, PriorConfig) else ""
    source = config.prior_spec if isinstance(config.prior_spec, str) else "given"
    return f"{count} priors{at} ({source}), but '{loc}' has {anchors} anchors"


def head_mismatch(config: DetectionConfig, outputs: Mapping[str, Any], input_size: Optional[Sequence[int]] = None,
                  priors: bool = True) -> Optional[str]:
    """Why ``outputs`` do not fit ``config.format``, or None when they do.

    Args:
        config: the format, output names and priors.
        outputs: raw outputs keyed by name: arrays (numpy or torch; shapes and values checked) or
            shapes (tuples; dims may be None or names).
        input_size: (height, width) of the network input: the prior count of retinaface / ssd.
        priors: False skips the prior count (used when guessing a format without its priors).
    """
    try:
        roles = resolve_roles(config, list(outputs))
    except UsageError:
        given = list(config.names.values())
        if any(name not in outputs for name in given) or len(set(given)) < len(given):
            raise
        needed = [r for r in ROLES[config.format] if r != "landmarks"]
        return f"{config.format} reads {len(needed)} outputs ({', '.join(needed)}), the model has {len(outputs)}"
    fmt = config.format
    if fmt in ("yolov8", "yolov5"):
        name = roles["head"]
        return _yolo(fmt, name, outputs[name], _shape(outputs[name]))
    why = _boxes_scores(outputs, roles)
    if why:
        return why
    if fmt == "boxes-scores":
        boxes = outputs[roles["boxes"]]
        if _has_values(boxes) and math.prod(boxes.shape):
            reversed_ = (boxes[..., 2] < boxes[..., 0] - EPS) | (boxes[..., 3] < boxes[..., 1] - EPS)
            share = float(reversed_.sum()) / math.prod(reversed_.shape)
            if share > MAX_REVERSED:
                return f"{share:.0%} of the boxes have x2 < x1 or y2 < y1: not decoded corners"
        return None
    conf = _shape(outputs[roles["conf"]])
    if conf is not None and conf[2] is not None and conf[2] < 2:
        return f"'{roles['conf']}' (conf) has {conf[2]} column, {fmt} needs a background column and a class"
    if "landmarks" in roles:
        marks = _shape(outputs[roles["landmarks"]])
        if marks is not None and marks[2] is not None and marks[2] % 2:
            return f"'{roles['landmarks']}' (landmarks) has {marks[2]} values per anchor, not x, y pairs"
    if priors:
        loc = _shape(outputs[roles["loc"]])
        return _priors_error(config, loc[1] if loc else None, roles["loc"], input_size)
    return None


def guess_format(outputs: Mapping[str, Any], input_size: Optional[Sequence[int]] = None,
                 exclude: Sequence[str] = ()) -> Optional[str]:
    """The first format (of FORMATS, retinaface only with a landmarks output) the outputs fit, or None.

    Priors are not counted (the model's own priors are unknown here).
    """
    for fmt in FORMATS:
        if fmt in exclude:
            continue
        if fmt == "retinaface" and len(outputs) < 3:
            continue
        if head_mismatch(DetectionConfig(fmt), outputs, input_size, priors=False) is None:
            return fmt
    return None


def check_head(config: DetectionConfig, outputs: Mapping[str, Any], input_size: Optional[Sequence[int]] = None) -> None:
    """Refuse raw outputs that do not fit ``config.format`` (see the module docstring).

    Args:
        config: the declared format, names and priors.
        outputs: raw outputs keyed by name (arrays, or shapes when the model did not run).
        input_size: (height, width) of the network input (retinaface / ssd prior count).

    Raises:
        UsageError: the outputs do not fit; names the format they look like when one fits.
    """
    why = head_mismatch(config, outputs, input_size)
    if why is None:
        return
    try:
        used = list(resolve_roles(config, list(outputs)).values())
    except UsageError:
        used = list(outputs)
    fmt = config.format
    head = f"the head {_describe(outputs, used)} does not fit --format {fmt}: {why}"
    guess = guess_format(outputs, input_size, exclude=(fmt,))
    if guess is not None:
        raise UsageError(f"{head}; it looks like {guess} ({LAYOUTS[guess]}); use --format {guess}")
    if fmt in PRIOR_FORMATS and "priors" in why:
        raise UsageError(f"{head}; give the model's priors (--priors FILE.npy, priors= in Python) or the input "
                         "size it ran at")
    raise UsageError(f"{head}; no format fits these outputs ({', '.join(FORMATS)}): name the raw outputs with "
                     "--boxes/--scores, or skip the check if the head is right (--no-format-check; check_format=False in Python)")
