"""Building AOTInductor packages: ``build_aoti`` exports a module (or takes an ExportedProgram)
and compiles it ahead of time into a ``.pt2`` that carries the engine specs in its metadata, so
``trtflow.load(path, engine="torch")`` needs nothing else.
"""

from __future__ import annotations

import base64
import json
import logging
import os
from pathlib import Path
from typing import Any, Mapping, Sequence

from trtflow.backends.torch.aoti import METADATA_KEY
from trtflow.backends.torch.runner import TorchEngine
from trtflow.errors import BuildError, UsageError

log = logging.getLogger(__name__)


def build_aoti(
    model: Any,
    example_inputs: Mapping[str, Any] | Sequence[Any] | None,
    out_path: str | os.PathLike,
    **options: Any,
) -> Path:
    """Export a module (or take an ExportedProgram) and compile it into an AOTInductor package.

    The package carries the engine specs, so ``trtflow.load(out_path, engine="torch")`` needs
    nothing else. Dynamic dims (``dynamic=``) become ``torch.export`` dims bounded by
    ``min_shapes``/``max_shapes``; their example sizes must be >= 2 (size 1 is specialized).

    Args:
        model: an ``nn.Module`` or a ``torch.export.ExportedProgram``.
        example_inputs: as for ``TorchEngine``.
        out_path: where to write the ``.pt2``.
        **options: ``TorchEngine`` options (input_names, output_names, dynamic, min_shapes,
            max_shapes, dtype, channels_last, device); compile and cuda_graphs are not taken.

    Returns:
        The package path.

    Raises:
        UsageError: compile/cuda_graphs given, or a dynamic dim with example size 1.
        BuildError: torch.export or AOTInductor failed.
    """
    import torch

    if options.get("compile") or options.get("cuda_graphs"):
        raise UsageError("build_aoti compiles ahead of time; compile= and cuda_graphs= do not apply")
    if options.get("keep_io_types") and options.get("dtype", "fp32") != "fp32":
        raise UsageError("a package takes and returns its compute dtype; keep_io_types=True does not apply to "
                         "build_aoti (cast the inputs to the package's dtype before inference)")
    engine = TorchEngine(model, example_inputs, **{**options, "keep_io_types": False})
    program = _export(torch, model, engine)
    meta = {"inputs": [s.to_dict() for s in engine.inputs], "outputs": [s.to_dict() for s in engine.outputs],
            "dtype": engine.precision, "keywords": engine._kw and not isinstance(model, torch.export.ExportedProgram)}
    out = Path(out_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    try:
        with torch.no_grad():
            path = torch._inductor.aoti_compile_and_package(
                program, package_path=str(out),
                inductor_configs={"aot_inductor.metadata": {METADATA_KEY: base64.b64encode(json.dumps(meta).encode()).decode()}},
            )
    except Exception as exc:
        raise BuildError(f"AOTInductor compilation failed: {type(exc).__name__}: {exc}") from exc
    log.info("wrote AOTInductor package %s", path)
    return Path(path)


def _export(torch, model, engine):
    """``torch.export`` of the engine's placed module (dtype, device, layout) on its example inputs,
    with the engine's dynamic dims as bounded ``torch.export.Dim``; an ExportedProgram as given."""
    args = list(engine.example_inputs.values())
    dims: dict[str, Any] = {}
    dynamic_shapes = []
    for spec, t in zip(engine.inputs, args):
        per_input = {}
        for i, d in enumerate(spec.shape):
            if isinstance(d, int):
                continue
            if t.shape[i] < 2:
                raise UsageError(
                    f"input '{spec.name}' dim {i} ('{d}') is dynamic but its example size is {t.shape[i]}; "
                    "torch.export specializes size-1 dims: give an example of size >= 2"
                )
            lo = spec.bounds.min[i] if spec.bounds else 1
            hi = spec.bounds.max[i] if spec.bounds else None
            key = d if d != "?" else f"{spec.name}_{i}"
            if key not in dims:
                dims[key] = torch.export.Dim(key.replace("?", "d"), min=lo, max=hi) if hi else torch.export.Dim(key, min=lo)
            per_input[i] = dims[key]
        dynamic_shapes.append(per_input or None)
    try:
        if isinstance(model, torch.export.ExportedProgram):
            program = model
            if engine.device.type == "cuda":
                from torch.export.passes import move_to_device_pass

                program = move_to_device_pass(program, str(engine.device))
        elif engine._kw:
            program = torch.export.export(
                engine.module, (), dict(engine.example_inputs),
                dynamic_shapes=dict(zip(engine.example_inputs, dynamic_shapes)),
            )
        else:
            program = torch.export.export(engine.module, tuple(args), dynamic_shapes=tuple(dynamic_shapes))
    except Exception as exc:
        raise BuildError(f"torch.export failed: {type(exc).__name__}: {exc}") from exc
    return program
