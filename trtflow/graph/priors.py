"""Priors built inside an ONNX graph from the input's shape, so dynamic H/W keep working.

Same layout as ``trtflow.vision.priors.make_priors`` (see its docstring); the tests check both
give the same priors at several input sizes.
"""

from __future__ import annotations

import numpy as np

from trtflow.graph.builder import GraphArray, GraphBuilder
from trtflow.vision.priors import PriorConfig


def input_hw(b: GraphBuilder, image: GraphArray) -> tuple[GraphArray, GraphArray]:
    """Height and width of an NCHW input as float32 [1] tensors."""
    shape = b.shape(image)
    return b.cast(b.slice(shape, 0, 2, 3), np.float32), b.cast(b.slice(shape, 0, 3, 4), np.float32)


def graph_priors(b: GraphBuilder, height: GraphArray, width: GraphArray, config: PriorConfig) -> GraphArray:
    """Normalized priors ``[A, 4]`` (cx, cy, w, h) for the runtime input size (float32 [1] tensors, see input_hw)."""
    size_wh = b.cat([width, height], 0)  # [2]
    levels = []
    for stride, shapes in zip(config.strides, config.shapes):
        rows = b.reshape(b.op("Ceil", [height / float(stride)]), np.zeros(0, np.int64))  # scalar
        cols = b.reshape(b.op("Ceil", [width / float(stride)]), np.zeros(0, np.int64))
        cy = (b.op("Range", [b.const(0.0), rows, b.const(1.0)]) + 0.5) * float(stride) / height
        cx = (b.op("Range", [b.const(0.0), cols, b.const(1.0)]) + 0.5) * float(stride) / width
        cx4 = b.reshape(cx, [1, -1, 1, 1])
        cy4 = b.reshape(cy, [-1, 1, 1, 1])
        wh4 = b.reshape(np.asarray(shapes, np.float32) / size_wh, [1, 1, len(shapes), 2])
        zero = cx4 * 0.0 + cy4 * 0.0 + wh4[..., 0:1] * 0.0  # [rows, cols, S, 1]
        grid = b.cat([cx4 + zero, cy4 + zero, wh4 + zero], -1)
        levels.append(b.reshape(grid, [-1, 4]))
    priors = b.cat(levels, 0)
    if config.clip:
        priors = b.op("Clip", [priors, b.const(0.0), b.const(1.0)])
    return priors
