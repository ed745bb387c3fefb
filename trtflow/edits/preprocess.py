"""``embed-preprocess``: the model takes raw uint8 frames; cast, layout, resize, channel order and
normalization run inside the graph.

The prepended nodes compute, for a raw frame ``x`` (NHWC by default)::

    y = resize(transpose(float(x)))[:, channel_order] * scale / std - mean / std

so ``mean``/``std`` are in the units after ``scale`` (ImageNet: ``scale=1/255, mean=0.485,...``) and
in the model's channel order. ``preprocess_numpy`` is the same computation in numpy; verification
feeds raw frames to the new model and the numpy-preprocessed frames to the old one.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from trtflow.edits import fields
from trtflow.edits.registry import Edit, register
from trtflow.edits.verify import VerifyConfig, compare_models, feed_shapes
from trtflow.errors import GraphError, UsageError
from trtflow.progress import Progress

log = logging.getLogger(__name__)

LAYOUTS = ("nhwc", "nchw")
CHANNEL_ORDERS = ("keep", "bgr-to-rgb", "rgb-to-bgr")


@dataclass(frozen=True)
class PreprocessOptions:
    """Options of the ``embed-preprocess`` edit: what the embedded preprocessing does.

    Attributes:
        layout: layout of the raw frames, "nhwc" or "nchw" (the model itself takes NCHW).
        scale: multiplier applied first (1/255 maps uint8 to [0, 1]).
        mean: per-channel means subtracted after scaling (model channel order), or None.
        std: per-channel standard deviations divided by, or None.
        channel_order: "keep", or "bgr-to-rgb" / "rgb-to-bgr" (both reverse the channels).
        input_size: raw frame (height, width) when it differs from the model's: bilinear resize.
        input_name: the model input to preprocess (None: its only 4-D float input).
        dtype: dtype of the raw frames ("uint8").
    """

    layout: str = "nhwc"
    scale: float = 1.0 / 255.0
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    channel_order: str = "keep"
    input_size: tuple[int, int] | None = None
    input_name: str | None = None
    dtype: str = "uint8"

    def __post_init__(self):
        if self.layout not in LAYOUTS:
            raise UsageError(f"layout '{self.layout}': expected one of {LAYOUTS}")
        if self.channel_order not in CHANNEL_ORDERS:
            raise UsageError(f"channel order '{self.channel_order}': expected one of {CHANNEL_ORDERS}")
        fields.set_field(self, "scale", fields.number(self.scale, "scale"))
        if self.scale == 0:
            raise UsageError("scale is 0: every pixel would become the same value; give e.g. 1/255 or 1")
        for name in ("mean", "std"):
            value = getattr(self, name)
            if value is None:
                continue
            if isinstance(value, str):
                raise UsageError(f"{name} is the string {value!r}; give numbers, e.g. (0.485, 0.456, 0.406)"
                                 " (trtflow.edits.fields.parse_floats reads '0.485,0.456,0.406')")
            items = (value,) if np.ndim(value) == 0 else np.asarray(value).reshape(-1).tolist()
            fields.set_field(self, name, tuple(fields.number(v, name) for v in items))
            if not getattr(self, name):
                raise UsageError(f"{name} is empty; give one value, or one per channel")
        if self.std is not None and any(s == 0 for s in self.std):
            raise UsageError(f"std {self.std} holds a zero")
        if self.input_size is not None:
            size = tuple(self.input_size) if not isinstance(self.input_size, str) else ()
            if len(size) != 2:
                raise UsageError(f"input_size {self.input_size!r}: expected the raw frame size (height, width)")
            size = tuple(int(fields.number(d, "input_size", 1, integer=True)) for d in size)
            fields.set_field(self, "input_size", size)
        if self.input_name is not None and (not isinstance(self.input_name, str) or not self.input_name):
            raise UsageError(f"input_name {self.input_name!r}: expected a model input name")
        try:
            kind = np.dtype(self.dtype).kind
        except TypeError:
            kind = ""
        if kind not in "uif" or not kind:
            raise UsageError(f"dtype '{self.dtype}': expected the numeric dtype of the raw frames, e.g. uint8")
        fields.set_field(self, "dtype", np.dtype(self.dtype).name)  # 'u1', np.uint8 -> 'uint8', as specs name it

    def to_dict(self) -> dict:
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in self.__dict__.items()}


def _per_channel(values: Sequence[float] | None, channels: int, what: str, default: float) -> np.ndarray:
    if values is None:
        return np.full(channels, default, np.float32)
    arr = np.asarray(values, np.float32).reshape(-1)
    if arr.size == 1:
        return np.full(channels, arr[0], np.float32)
    if arr.size != channels:
        raise UsageError(f"--{what} has {arr.size} values; the model input has {channels} channels")
    return arr


def affine(spec: PreprocessOptions, channels: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel ``(mul, add)`` with ``y = x * mul + add`` (scale, mean and std folded)."""
    mean = _per_channel(spec.mean, channels, "mean", 0.0)
    std = _per_channel(spec.std, channels, "std", 1.0)
    return (np.float32(spec.scale) / std).astype(np.float32), (-mean / std).astype(np.float32)


def resize_bilinear(x: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """NCHW bilinear resize with half-pixel centres, edges clamped (ONNX Resize linear/half_pixel)."""

    def weights(n_in: int, n_out: int):
        src = (np.arange(n_out, dtype=np.float64) + 0.5) * (n_in / n_out) - 0.5
        src = np.clip(src, 0, n_in - 1)
        lo = np.floor(src).astype(int)
        hi = np.minimum(lo + 1, n_in - 1)
        return lo, hi, (src - lo).astype(np.float32)

    y0, y1, wy = weights(x.shape[2], size[0])
    x0, x1, wx = weights(x.shape[3], size[1])
    rows = x[:, :, y0, :] * (1 - wy)[:, None] + x[:, :, y1, :] * wy[:, None]
    return rows[:, :, :, x0] * (1 - wx) + rows[:, :, :, x1] * wx


def preprocess_numpy(frames: np.ndarray, spec: PreprocessOptions, model_hw: tuple[int, int] | None = None,
                     dtype: str = "float32") -> np.ndarray:
    """The embedded preprocessing in numpy: raw frames -> the model's NCHW float input."""
    x = frames.astype(np.float32)
    if spec.layout == "nhwc":
        x = x.transpose(0, 3, 1, 2)
    if spec.input_size is not None and model_hw is not None and tuple(x.shape[2:]) != tuple(model_hw):
        x = resize_bilinear(x, model_hw)
    if spec.channel_order != "keep":
        x = x[:, ::-1]
    mul, add = affine(spec, x.shape[1])
    return (x * mul[None, :, None, None] + add[None, :, None, None]).astype(dtype)


def _target_input(graph, spec: PreprocessOptions):
    candidates = [t for t in graph.inputs if t.shape is not None and len(t.shape) == 4
                  and t.dtype is not None and np.dtype(t.dtype).kind == "f"]
    if spec.input_name is not None:
        named = [t for t in graph.inputs if t.name == spec.input_name]
        if not named:
            raise UsageError(f"--image-input '{spec.input_name}' is not a model input; inputs: "
                             f"{[t.name for t in graph.inputs]}")
        if named[0] not in candidates:
            t = named[0]
            dtype = np.dtype(t.dtype).name if t.dtype is not None else "of unknown type"
            raise UsageError(f"--image-input '{t.name}' is {dtype} with shape {t.shape}; embed-preprocess needs "
                             f"an NCHW float input (4-D, float32/float16), such as {[c.name for c in candidates]}")
        return named[0]
    if len(candidates) != 1:
        raise UsageError(f"cannot tell which input takes images ({[t.name for t in candidates]} are 4-D float); "
                         "name it with --image-input NAME")
    return candidates[0]


def embed_preprocess(proto: Any, options: PreprocessOptions) -> tuple[Any, dict]:
    """Prepend raw-frame preprocessing to the model's image input (which keeps its name).

    Args:
        proto: an onnx.ModelProto (or its path or bytes) whose image input is NCHW float with a static
            channel count.
        options: what the preprocessing does.

    Returns:
        ``(new_proto, report)``: the raw input's name, dtype and shape, ``mul``/``add`` per channel,
        the model's size and whether a resize was added.

    Raises:
        UsageError: no clear image input, an image input that is also an output, a dynamic channel
            count, a resize to a dynamic size, mean/std of the wrong length.
        GraphError: the new graph does not export.
    """
    import onnx
    import onnx_graphsurgeon as gs

    from trtflow.graph.io import load_onnx
    from trtflow.graph.ir import export_graph, import_graph

    proto = load_onnx(proto)
    graph = import_graph(proto)
    target = _target_input(graph, options)
    if target.name in {t.name for t in graph.outputs}:  # the output would become the preprocessed tensor, renamed
        others = [t.name for t in graph.outputs if t.name != target.name]
        raise UsageError(f"the image input '{target.name}' is also a model output; embedding the preprocessing "
                         "would rename that output. Drop it first: trtflow surgeon extract --outputs "
                         + (",".join(others) if others else "OTHER_OUTPUTS"))
    n, c, h, w = target.shape
    if not isinstance(c, int):
        raise UsageError(f"input '{target.name}' has a dynamic channel dim {target.shape}; expected NCHW with static C")
    if options.input_size is not None and not (isinstance(h, int) and isinstance(w, int)):
        raise UsageError(f"--resize needs the model's height and width; input '{target.name}' is {target.shape}. "
                         "Make them static first: trtflow surgeon fix-shapes --shape NAME:1x3xHxW")
    name, model_dtype = target.name, np.dtype(target.dtype)
    raw_hw = tuple(options.input_size) if options.input_size is not None else (h, w)
    raw_shape = [n, *raw_hw, c] if options.layout == "nhwc" else [n, c, *raw_hw]
    raw = gs.Variable(name, dtype=np.dtype(options.dtype), shape=raw_shape)
    target.name = f"{name}__preprocessed"
    nodes: list = []

    def var(suffix: str, shape, dtype=np.float32):
        return gs.Variable(f"{name}__{suffix}", dtype=dtype, shape=shape)

    x = var("float", raw_shape)
    nodes.append(gs.Node("Cast", f"{name}__cast", {"to": onnx.TensorProto.FLOAT}, [raw], [x]))
    if options.layout == "nhwc":
        t = var("nchw", [n, c, *raw_hw])
        nodes.append(gs.Node("Transpose", f"{name}__to_nchw", {"perm": [0, 3, 1, 2]}, [x], [t]))
        x = t
    resized = options.input_size is not None and raw_hw != (h, w)
    if resized:
        shape = var("shape", [4], np.int64)
        lead = var("lead", [2], np.int64)
        sizes = var("sizes", [4], np.int64)
        out = var("resized", [n, c, h, w])
        nodes += [
            gs.Node("Shape", f"{name}__shape", inputs=[x], outputs=[shape]),
            gs.Node("Slice", f"{name}__lead", inputs=[shape, gs.Constant(f"{name}__s0", np.array([0], np.int64)),
                                                      gs.Constant(f"{name}__s2", np.array([2], np.int64))],
                    outputs=[lead]),
            gs.Node("Concat", f"{name}__sizes", {"axis": 0},
                    [lead, gs.Constant(f"{name}__hw", np.array([h, w], np.int64))], [sizes]),
            gs.Node("Resize", f"{name}__resize",
                    {"mode": "linear", "coordinate_transformation_mode": "half_pixel"},
                    [x, gs.Constant(f"{name}__roi", np.zeros(0, np.float32)),
                     gs.Constant(f"{name}__scales", np.zeros(0, np.float32)), sizes], [out]),
        ]
        x = out
    if options.channel_order != "keep":
        out = var("reordered", [n, c, h, w])
        nodes.append(gs.Node("Gather", f"{name}__reverse_channels", {"axis": 1},
                             [x, gs.Constant(f"{name}__order", np.arange(c - 1, -1, -1, dtype=np.int64))], [out]))
        x = out
    mul, add = affine(options, c)
    scaled, shifted = var("scaled", [n, c, h, w]), var("normalized", [n, c, h, w])
    nodes += [
        gs.Node("Mul", f"{name}__scale", inputs=[x, gs.Constant(f"{name}__mul", mul.reshape(1, c, 1, 1))], outputs=[scaled]),
        gs.Node("Add", f"{name}__shift", inputs=[scaled, gs.Constant(f"{name}__add", add.reshape(1, c, 1, 1))],
                outputs=[shifted]),
    ]
    x = shifted
    if model_dtype != np.float32:
        nodes.append(gs.Node("Cast", f"{name}__to_model_dtype",
                             {"to": onnx.helper.np_dtype_to_tensor_dtype(model_dtype)}, [x], [target]))
    else:
        nodes[-1].outputs = [target]
    graph.nodes.extend(nodes)
    graph.inputs = [raw if t is target else t for t in graph.inputs]
    try:
        new = export_graph(graph, like=proto)
    except Exception as exc:
        raise GraphError(f"embedding the preprocessing produced an invalid graph: {exc}") from None
    report = {
        "input": {"name": name, "dtype": options.dtype, "shape": list(raw_shape), "layout": options.layout},
        "model_input": {"shape": [n, c, h, w], "dtype": model_dtype.name},
        "resize": {"from": list(raw_hw), "to": [h, w]} if resized else None,
        "mul": mul.tolist(),
        "add": add.tolist(),
        "spec": options.to_dict(),
    }
    return new, report


def verify_preprocess(before: Any, after: Any, options: PreprocessOptions,
                      verify_config: VerifyConfig | None = None, feeds=None, progress: Progress | None = None) -> dict:
    """New model on raw frames vs the old model on the same frames preprocessed in numpy.

    Args:
        before: the model without preprocessing. after: the model with it embedded.
        options: the preprocessing that was embedded.
        verify_config: tolerances, shapes, seed, and ``inputs[name]``: a .npy (or .npz[:KEY]) of raw frames.
        feeds: unused (the feeds are raw frames, built here).
        progress: told before each feed runs.

    Raises:
        ModelLoadError: an unreadable frames file. MismatchError: an output out of tolerance.
    """
    from trtflow.feeds import load_array, random_feed
    from trtflow.graph.io import onnx_specs

    config = verify_config or VerifyConfig()
    after_in, _ = onnx_specs(after)
    before_in = {s.name: s for s in onnx_specs(before)[0]}
    name = options.input_name or next(s.name for s in after_in
                                      if s.dtype == options.dtype and s.name in before_in and s.rank == 4)
    model_hw = tuple(before_in[name].shape[2:])
    rng = np.random.default_rng(config.seed)
    given = None
    if name in config.inputs and config.inputs[name] != "random":
        given = load_array(config.inputs[name], name)  # .npy, or .npz[:KEY] as every --input takes
    # given frames size the raw input's dynamic dims, for the random frames too
    shapes = feed_shapes(after_in, None, {name: given.shape, **config.shapes} if given is not None else config.shapes)
    frame_sets = [(f"random uint8 frames(seed={config.seed})",
                   rng.integers(0, 256, size=shapes[name]).astype(options.dtype))]
    if given is not None:
        frame_sets.insert(0, ("given frames", given.astype(options.dtype)))
    labelled, after_feeds = [], []
    for label, frames in frame_sets:
        others = random_feed([s for s in after_in if s.name != name], shapes, config.seed)
        hw = model_hw if all(isinstance(d, int) for d in model_hw) else None
        model_x = preprocess_numpy(frames, options, hw, before_in[name].dtype)
        labelled.append((label, {name: model_x, **others}))
        after_feeds.append({name: frames, **others})
    result = compare_models(before, after, labelled, config.tolerances, after_feeds=after_feeds,
                            what="the model with embedded preprocessing (raw frames)", progress=progress)
    result["reference"] = "original model on the frames preprocessed in numpy"
    return result


register(Edit(
    name="embed-preprocess",
    help="take raw uint8 frames (NHWC or NCHW): cast, scale, mean/std, channel order, resize inside the graph",
    options=PreprocessOptions,
    apply=embed_preprocess,
    verify=verify_preprocess,
    verify_feeds=False,
    atol=1e-3,
    rtol=1e-3,
))
