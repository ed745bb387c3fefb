"""Checking an exported ONNX file against the PyTorch module it came from.

Two cases: the example inputs, then the same inputs with every dynamic axis at another size
(twice the example's, so sizes that must divide by a stride still do). The second case is what
catches a size the exporter baked into the graph. Each output is compared by name with
``trtflow.compare.core``; a case passes when no element fails ``|a - b| <= atol + rtol * |ref|``.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Mapping

from trtflow.compare.core import Tolerances, compare_outputs
from trtflow.export.config import VerifyCase
from trtflow.export.inputs import flatten_outputs

log = logging.getLogger(__name__)


def resized_inputs(inputs: Mapping, dynamic: Mapping[str, Mapping[int, str]], seed: int = 1) -> dict:
    """The example inputs with each dynamic axis at twice its size (a size of 0 or 1 becomes 2).

    Axes sharing a label get the same new size. Values are the example's, repeated along the
    axis (so ids and masks stay valid), plus small noise for float tensors so repeats differ.

    Returns:
        Name -> tensor; an empty dict when no axis is dynamic.
    """
    import torch

    if not any(dynamic.get(name) for name in inputs):
        return {}
    sizes: dict[str, int] = {}
    gen = torch.Generator().manual_seed(seed)
    out = {}
    for name, tensor in inputs.items():
        t = tensor.detach()
        for axis, label in sorted(dynamic.get(name, {}).items()):
            size = sizes.setdefault(label, max(2, 2 * t.shape[axis]))
            n = t.shape[axis]
            if n == 0:
                t = t.new_zeros([*t.shape[:axis], size, *t.shape[axis + 1:]])
            else:
                t = t.repeat_interleave(-(-size // n), dim=axis)
            t = t.narrow(axis, 0, size)
        if t.is_floating_point() and t.numel():
            scale = float(t.float().std()) if t.numel() > 1 else 1.0
            noise = torch.randn(t.shape, generator=gen, dtype=torch.float32) * (0.1 * (scale or 1.0))
            t = t + noise.to(device=t.device, dtype=t.dtype)
        out[name] = t.contiguous()
    return out


def fresh(inputs: Mapping) -> dict:
    """Copies of the example inputs, for one run of the module: a module that changes its input in
    place (``x /= 255``) must not change the examples the next run, the export and ONNX Runtime see."""
    return {k: v.clone() for k, v in inputs.items()}


def torch_outputs(module, inputs: Mapping, output_names: list[str]) -> dict:
    """Run the module on name -> tensor inputs (positionally, in order); name -> numpy output."""
    import torch

    from trtflow.arrays import to_numpy

    with torch.inference_mode():
        result = module(*fresh(inputs).values())
    return {k: to_numpy(v).copy() for k, v in flatten_outputs(result, output_names).items()}


def verify_export(
    path: Path,
    module,
    cases: Mapping[str, Mapping],
    output_names: list[str],
    tolerances: Tolerances,
) -> list[VerifyCase]:
    """Run each case through ONNX Runtime (``trtflow.load(path, engine="ort")``) and PyTorch.

    Args:
        path: the ONNX file.
        module: the PyTorch module (eval mode).
        cases: case name -> (input name -> tensor).
        output_names: the ONNX output names, in the module's output order.
        tolerances: per-output atol / rtol.

    Returns:
        One ``VerifyCase`` per case, whether it passed or not.
    """
    from trtflow.arrays import to_numpy
    from trtflow.backends import load

    results = []
    with load(path, engine="ort") as engine:
        for case_name, inputs in cases.items():
            feed = {k: to_numpy(v) for k, v in inputs.items()}  # torch_outputs runs the module on copies
            reference = torch_outputs(module, inputs, output_names)
            got = engine.infer(feed)
            diffs = compare_outputs(reference, got, tolerances)
            shapes = {k: tuple(int(d) for d in v.shape) for k, v in inputs.items()}
            log.info("verify %s %s: %s", case_name, shapes, ", ".join(f"{d.name} max_abs={d.max_abs:.3g}" for d in diffs))
            results.append(VerifyCase(case_name, shapes, diffs))
    return results
