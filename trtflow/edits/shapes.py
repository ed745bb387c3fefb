"""``fix-shapes``: make named dynamic dims static, then infer shapes and fold what became constant."""

from __future__ import annotations

import copy
import logging
from dataclasses import dataclass, field
from typing import Any, Mapping

from trtflow.deps import require
from trtflow.errors import GraphError, UsageError
from trtflow.edits import fields
from trtflow.edits.registry import Edit, register
from trtflow.edits.verify import VerifyConfig, build_feeds, compare_models
from trtflow.graph.io import give_shape, graph_inputs, load_onnx, onnx_specs, unranked_inputs, value_spec
from trtflow.graph.ir import infer_shapes, keep_model_info, op_counts
from trtflow.spec import Shape, format_shape, parse_pairs

log = logging.getLogger(__name__)

NO_FUSION = ("graph_fusion", "subexpression_elimination", "weight_tying")  # onnxslim passes fix-shapes skips


@dataclass(frozen=True)
class FixShapesOptions:
    """Options of the ``fix-shapes`` edit; give ``shapes``, ``dims`` or both.

    Attributes:
        shapes: input name -> full static shape, e.g. ``{"images": (1, 3, 640, 640)}``
            (``trtflow.spec.parse_shapes("images:1x3x640x640")`` reads the CLI spelling); a named
            dim it sizes takes that size in every input using it.
        dims: named dynamic dim -> size, applied to every input using it, e.g. ``{"batch": 1}``
            (``parse_dims(["batch=1"])``).
        fold: fold what became constant (shape arithmetic) with onnxslim, fusions off.
    """

    shapes: Mapping[str, Shape] = field(default_factory=dict)
    dims: Mapping[str, int] = field(default_factory=dict)
    fold: bool = True

    def __post_init__(self):
        fields.set_field(self, "shapes", fields.shape_map(self.shapes, "shapes"))
        if not isinstance(self.dims, Mapping):
            raise UsageError(f"dims: expected a dict dim name -> size, e.g. {{'batch': 1}}, got {self.dims!r}")
        fields.set_field(self, "dims", {str(k): int(fields.number(v, f"dims['{k}']", 1, integer=True))
                                        for k, v in self.dims.items()})
        fields.set_field(self, "fold", fields.boolean(self.fold, "fold"))
        if not self.shapes and not self.dims:
            raise UsageError("fix-shapes needs --shape NAME:1x3x640x640 or --dim NAME=SIZE "
                             "(shapes= or dims= in Python)")


def parse_dims(items: list[str] | None) -> dict[str, int]:
    """``["batch=1", "height=640"]`` -> ``{"batch": 1, "height": 640}``.

    Raises:
        UsageError: an item that is not NAME=POSITIVE_INT, or a name given two sizes.
    """
    out = {}
    for name, value in parse_pairs(items, "--dim", "NAME=SIZE with SIZE >= 1, e.g. --dim batch=1").items():
        try:
            size = int(value)
        except ValueError:
            size = -1
        if size < 1:
            raise UsageError(f"bad --dim '{name}={value}': expected NAME=SIZE with SIZE >= 1, e.g. --dim batch=1")
        out[name] = size
    return out


def _dim_list(tdims) -> list:
    """An ONNX shape's dims as sizes, dim names, or '?' for an unnamed dynamic dim."""
    return [d.dim_value if d.HasField("dim_value") else (d.dim_param or "?") for d in tdims]


def _set_dim(d, size: int) -> None:
    d.Clear()
    d.dim_value = int(size)


def _set_input_dims(proto: Any, shapes: Mapping[str, Shape], dims: Mapping[str, int]) -> tuple[dict, dict]:
    """Write the static sizes into the graph inputs; returns ({input: {"before", "after"}}, {named dim: size}).
    An input of unknown rank (no shape in the model) takes the whole shape ``shapes`` gives it; its
    "before" is None."""
    inputs = graph_inputs(proto)
    by_name = {v.name: v for v in inputs}
    unknown = [n for n in shapes if n not in by_name]
    if unknown:
        raise UsageError(f"--shape names {unknown}, which are not model inputs; inputs: {list(by_name)}")
    unranked = unranked_inputs(proto)
    unsized = [n for n in unranked if n not in shapes]
    if unsized:
        raise UsageError(f"inputs {unsized} have no shape in the model (unknown rank); give each one its shape "
                         "too: " + " ".join(f"--shape {n}:DIMS" for n in unsized) + " (DIMS like 1x3x640x640)")
    params = {d.dim_param for v in inputs for d in v.type.tensor_type.shape.dim if d.dim_param}
    bad = [n for n in dims if n not in params]
    if bad:
        known = ", ".join(sorted(params)) or "none (every input dim is static or unnamed; use --shape)"
        raise UsageError(f"--dim names {bad}, which no input uses; the named dynamic dims are: {known}")
    sized = {name: (f"--dim {name}={size}", size) for name, size in dims.items()}  # named dim -> (where its size came from, size)
    for v in inputs:
        if v.name not in shapes or v.name in unranked:
            continue
        tdims, want = v.type.tensor_type.shape.dim, shapes[v.name]
        before = _dim_list(tdims)
        if len(want) != len(tdims):
            raise UsageError(f"--shape {v.name}:{format_shape(want)} has rank {len(want)}; input '{v.name}' "
                             f"has rank {len(tdims)}: {tuple(before)}")
        for i, (d, size) in enumerate(zip(tdims, want)):
            if d.HasField("dim_value") and d.dim_value != size:
                raise UsageError(f"--shape {v.name}:{format_shape(want)}: dim {i} of '{v.name}' is static "
                                 f"{d.dim_value}, not {size}; input shape is {tuple(before)}")
            if d.dim_param:  # a named dim: the same size for every input using it, as --dim gives
                where, known = sized.setdefault(d.dim_param, (f"--shape {v.name}:{format_shape(want)}", int(size)))
                if known != size:
                    raise UsageError(f"--shape {v.name}:{format_shape(want)} gives the named dim '{d.dim_param}' "
                                     f"the size {size}, but {where} gives it {known}; inputs sharing a named dim "
                                     "take one size")
    changed = {}
    for name in unranked:
        give_shape(by_name[name], shapes[name])
        changed[name] = {"before": None, "after": _dim_list(by_name[name].type.tensor_type.shape.dim)}
    for v in inputs:
        if v.name in unranked:
            continue
        tdims = v.type.tensor_type.shape.dim
        before = _dim_list(tdims)
        for i, d in enumerate(tdims):
            if v.name in shapes:
                size = shapes[v.name][i]
            elif d.dim_param in sized:
                size = sized[d.dim_param][1]
            else:
                continue
            _set_dim(d, size)
        after = _dim_list(tdims)
        if after != before:
            changed[v.name] = {"before": before, "after": after}
    if not changed:
        raise UsageError("no input dim changed: give --shape NAME:DIMS or --dim NAME=SIZE for a dynamic dim")
    return changed, {name: size for name, (_, size) in sized.items()}


def fix_shapes(proto: Any, options: FixShapesOptions) -> tuple[Any, dict]:
    """Make dynamic input dims static (or give an input of unknown rank its shape), re-infer every
    shape, and fold constants.

    Args:
        proto: an onnx.ModelProto, or a path or bytes of one (left unchanged).
        options: the static shapes and dim sizes, and whether to fold.

    Returns:
        ``(new_proto, report)``: ``inputs`` changed (before/after dims), ``outputs`` shapes before/after,
        ``still_dynamic`` outputs, ``nodes_folded``.

    Raises:
        UsageError: unknown input or dim name, wrong rank, a static dim given another size, two sizes
            for one named dim, an input of unknown rank (no shape in the model) without a shape.
        GraphError: shape inference found the new shapes inconsistent with the graph.
    """
    shapes, dims = options.shapes, options.dims
    proto = load_onnx(proto)
    new = copy.deepcopy(proto)
    changed, sizes = _set_input_dims(new, shapes, dims)  # sizes: named dim -> its new size
    outs_before = _output_shapes(proto)
    del new.graph.value_info[:]
    old_shapes = {o.name: copy.deepcopy(o.type.tensor_type.shape) for o in new.graph.output
                  if o.type.tensor_type.HasField("shape")}  # an unranked output stays unranked, not a scalar
    for out in new.graph.output:  # let inference recompute output dims
        out.type.tensor_type.ClearField("shape")
    new = infer_shapes(new, strict=True)  # a shape the graph cannot take fails here, with ONNX's reason
    if options.fold:
        new = _fold(new)
    _copy_output_shapes(new, old_shapes, sizes)
    outs_after = _output_shapes(new)
    report = {
        "inputs": changed,
        "outputs": {name: {"before": shape, "after": outs_after.get(name)} for name, shape in outs_before.items()},
        "still_dynamic": [name for name, shape in outs_after.items()
                          if shape is None or any(not isinstance(d, int) for d in shape)],
        "nodes_folded": sum(op_counts(proto).values()) - sum(op_counts(new).values()),
    }
    return new, report


def _output_shapes(proto: Any) -> dict[str, list | None]:
    """Output name -> shape as in its spec, None for an output of unknown rank (no shape in the model)."""
    return {o.name: list(value_spec(o).shape) if o.type.tensor_type.HasField("shape") else None
            for o in proto.graph.output}


def _fold(proto: Any) -> Any:
    """onnxslim's shape inference, constant folding and dead-node removal (no fusions), to a fixed point."""
    onnxslim = require("onnxslim", "fix-shapes constant folding")
    try:  # onnxslim drops the doc strings, domain and model_version
        return keep_model_info(onnxslim.slim(copy.deepcopy(proto), skip_optimizations=list(NO_FUSION)), proto)
    except Exception as exc:  # onnxslim raises whatever its passes raise
        raise GraphError(f"constant folding after fixing shapes failed ({type(exc).__name__}: {exc}); "
                         "retry with --no-fold") from None


def _copy_output_shapes(proto: Any, fallback: dict, sizes: Mapping[str, int]) -> None:
    """Give graph outputs the shapes inference finds for them, else their shapes in ``fallback`` with the
    named dims of ``sizes`` made static (a named dim is one size throughout the model).

    ONNX inference records shapes of intermediate tensors only, so each output is read through an
    Identity in a probe copy and its inferred shape copied back.
    """
    from onnx import helper

    probe = copy.deepcopy(proto)
    names = [o.name for o in probe.graph.output]
    del probe.graph.output[:]
    for name in names:
        probe.graph.node.append(helper.make_node("Identity", [name], [f"{name}__probe"]))
        probe.graph.output.append(helper.make_empty_tensor_value_info(f"{name}__probe"))
    inferred = {v.name: v for v in infer_shapes(probe).graph.value_info}
    for out in proto.graph.output:
        if out.type.tensor_type.HasField("shape"):
            continue
        if out.name in inferred and inferred[out.name].type.tensor_type.HasField("shape"):
            out.type.tensor_type.shape.CopyFrom(inferred[out.name].type.tensor_type.shape)
        elif out.name in fallback:
            out.type.tensor_type.shape.CopyFrom(fallback[out.name])
            for d in out.type.tensor_type.shape.dim:
                if d.dim_param in sizes:
                    _set_dim(d, sizes[d.dim_param])


def verify_fix_shapes(before: Any, after: Any, options: FixShapesOptions, verify_config: VerifyConfig | None = None,
                      feeds=None, progress=None) -> dict:
    """ONNX Runtime outputs before vs after, as every edit; an input the before model gives no shape
    (unknown rank) takes, in a copy of the before model, the shape fix-shapes gave it (what it is fed).

    Raises:
        UsageError: dynamic dims without shapes; a verification input (--input, --shapes) of another
            shape than the fixed one. MismatchError: an output out of tolerance.
    """
    config = verify_config or VerifyConfig()
    unranked = unranked_inputs(before)
    if unranked:
        before = copy.deepcopy(before)
        for v in before.graph.input:
            if v.name in unranked:
                give_shape(v, options.shapes[v.name])
    feeds = build_feeds(before, after, config)
    for spec in onnx_specs(after)[0]:
        for label, feed in feeds:
            if spec.name not in feed:
                continue
            shape = feed[spec.name].shape
            if not spec.takes(shape):
                raise UsageError(f"verification input '{spec.name}' is {tuple(shape)} (feed {label}), but fix-shapes "
                                 f"made it {spec.describe_shape()}: give --input/--shapes in that shape, or leave "
                                 "them out")
    return compare_models(before, after, feeds, config.tolerances, progress=progress)


register(Edit(
    name="fix-shapes",
    help="make named dynamic dims static (--shape NAME:1x3x640x640, --dim batch=1), infer shapes, fold constants",
    options=FixShapesOptions,
    apply=fix_shapes,
    verify=verify_fix_shapes,
    verify_feeds=False,
))
