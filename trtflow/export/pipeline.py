"""``from_torch``: PyTorch module -> one checked, verified ONNX file."""

from __future__ import annotations

import dataclasses
import logging
import os
from pathlib import Path
from typing import Any

from trtflow.deps import require
from trtflow.errors import ExportError, MismatchError, ModelLoadError, UsageError
from trtflow.progress import Progress, report
from trtflow.export.config import ExportConfig, ExportResult
from trtflow.export.inputs import flatten_outputs, name_inputs
from trtflow.export.torch_onnx import EXPORT_FUNCTIONS, choose_exporter
from trtflow.export.verify import fresh, resized_inputs, verify_export
from trtflow.graph.io import TWO_GB, check_onnx_out, graph_inputs, onnx_specs, save_onnx, serialized
from trtflow.graph.ir import infer_shapes, onnx_opset

log = logging.getLogger(__name__)


def from_torch(
    module: Any,
    example_inputs: Any,
    out: str | os.PathLike,
    *,
    config: ExportConfig | None = None,
    progress: Progress | None = None,
    **options: Any,
) -> ExportResult:
    """Export a PyTorch module to one ONNX file, check it, and verify it against PyTorch.

    Args:
        module: the ``torch.nn.Module`` (exported in eval mode; its mode is restored after).
        example_inputs: a tensor, a sequence of tensors, or an input name -> tensor mapping.
        out: the ONNX file to write (parent folders are created).
        config: an ``ExportConfig``; default ``ExportConfig()``.
        progress: called with a short description as each step starts (``trtflow.progress.Progress``).
        **options: ``ExportConfig`` fields (``input_names=``, ``dynamic=``, ``opset=``, ``verify=``,
            ...), applied over ``config``.

    Returns:
        An ``ExportResult``: the path, the ONNX input/output specs, the exporter used, and the
        verification cases with each output's max abs / rel error.

    Raises:
        UsageError: a module that is not a ``torch.nn.Module``, bad options, names or dynamic axes.
        ExportError: the module fails on its example inputs, or every exporter failed, or the
            ONNX checker rejects the result.
        MismatchError: ONNX Runtime's outputs differ from PyTorch's beyond the tolerances
            (the file is kept; ``error.report`` is the ``ExportResult``).
        ModelLoadError: ONNX Runtime cannot load the written file to verify it (bfloat16 inputs or
            outputs, ...); the file is kept and ``verify=False`` skips the check.
        MissingDependencyError: torch (or onnxruntime, for verification) is not installed.
    """
    torch = require("torch", "trtflow.export")
    if not isinstance(module, torch.nn.Module):
        hint = (" (a MODULE:FACTORY spec is loaded with trtflow.export.factory.load_factory)"
                if isinstance(module, str) else "")
        raise UsageError(f"from_torch exports a torch.nn.Module; got {type(module).__name__}{hint}. Wrap a "
                         "function in an nn.Module whose forward calls it")
    if not isinstance(out, (str, os.PathLike)) or not str(out):
        raise UsageError(f"out is the ONNX file to write, e.g. 'model.onnx'; got {out!r}")
    config = _merge(config, options)
    step = report(progress)
    out = Path(out)
    check_onnx_out(out)  # before the export's work
    modes = [(m, m.training) for m in module.modules()]
    module.eval()
    try:
        inputs = name_inputs(module, example_inputs, config.input_names)
        step("running the module on the example inputs")
        output_names = _output_names(module, inputs, config.output_names)
        both = [n for n in output_names if n in inputs]
        if both:
            raise UsageError(f"{both} would name both an input and an output; an ONNX tensor has one producer: "
                             "rename the output(s) with --output-names (output_names=) or the input(s) "
                             "(the names in --shapes, input_names=)")
        dynamic = _check_dynamic(config.dynamic, inputs, output_names)
        order, notes = choose_exporter(config.exporter, config.opset)
        proto, used, failures = None, None, []
        for name in order:
            step(f"exporting with the {name} exporter")
            try:
                proto = EXPORT_FUNCTIONS[name](module, fresh(inputs), output_names, dynamic, config.opset)
                step("checking the ONNX graph")
                # a graph with the wrong names or one the checker rejects counts as this exporter failing:
                # "auto" then tries the next (the dynamo exporter can give a weight and an I/O one name)
                _check_names(proto, inputs, output_names, name)
                proto = _infer_and_check(proto, name)
                used = name
                break
            except ExportError as exc:
                if name == order[-1]:
                    if len(order) > 1:
                        raise ExportError(f"every exporter failed. {' '.join(failures)} Then {exc}") from exc
                    raise
                failures.append(f"First {exc}.")
                notes.append(f"{exc}; fell back to the {order[-1]} exporter")
                log.info("%s; trying the %s exporter", exc, order[-1])
        _check_dynamic_inputs(proto, dynamic)
        _check_output_axes(proto, dynamic)
        save_onnx(proto, out)
        stray = out.with_name(out.name + ".data")
        if stray.exists() and proto.ByteSize() < TWO_GB:
            stray.unlink()  # left by an earlier export of the same path; this file is self-contained
        inputs_spec, outputs_spec = onnx_specs(proto)
        opset = onnx_opset(proto, config.opset)
        if opset != config.opset:
            notes.append(f"the {used} exporter wrote opset {opset} (asked for {config.opset})")
        result = ExportResult(out, inputs_spec, outputs_spec, used, opset, notes=notes)
        if not config.verify:
            return result
        step("verifying ONNX Runtime against PyTorch")
        cases = {"example inputs": inputs}
        resized = resized_inputs(inputs, dynamic)
        if resized:
            cases["dynamic axes resized"] = resized
        tol = config.tolerances
        tol.check_names([s.name for s in outputs_spec])
        try:
            result.verification = verify_export(out, module, cases, output_names, tol)
        except ModelLoadError as exc:  # ONNX Runtime refuses the model (bfloat16 I/O, ...): the export is done
            raise ModelLoadError(f"{out} was written, but ONNX Runtime cannot load it to verify it against PyTorch: "
                                 f"{str(exc).rstrip('.')}. Skip the check with --no-verify (verify=False)") from None
    finally:
        for m, training in modes:  # each submodule's own mode (a frozen batch norm in a model in training stays eval)
            m.training = training
    if not result.verified:
        bad = [(case, d) for case in result.verification for d in case.diffs if not d.passed]
        failed = [
            f"{d.name} ({case.name}: "
            + (f"max abs {d.max_abs:.3g}, max rel {d.max_rel:.3g}" if d.agreement is None else "class ids")
            + (f", judged by atol={d.atol:g}, rtol={d.rtol:g}"
               if d.agreement is None and (d.atol, d.rtol) != (config.atol, config.rtol) else "")
            + (f", {d.note}" if d.note else "") + ")"
            for case, d in bad
        ]
        loosen = ("lower --min-agreement (integer outputs are judged by exact agreement)"
                  if all(d.agreement is not None for _, d in bad) else "loosen --atol/--rtol")
        advice = f"{loosen[0].upper() + loosen[1:]} if the differences are expected (e.g. fp16)"
        if all(d.note.startswith(("shape ", "count ")) for _, d in bad):  # no tolerance passes another shape
            advice = ("The output shapes differ, which no tolerance passes: the graph kept a size of the example "
                      "(e.g. int(x.shape[0]) or a constant shape in the model's code)")
        raise MismatchError(
            f"{out} was written but ONNX Runtime does not match PyTorch within atol={config.atol}, "
            f"rtol={config.rtol}: {'; '.join(failed)}. {advice}, try the other exporter, or skip with --no-verify",
            report=result,
        )
    return result


def _merge(config: ExportConfig | None, options: dict) -> ExportConfig:
    config = config or ExportConfig()
    if not options:
        return config
    known = {f.name for f in dataclasses.fields(ExportConfig)}
    unknown = sorted(set(options) - known)
    if unknown:
        raise UsageError(f"from_torch() got unknown options {unknown}; ExportConfig fields are {sorted(known)}")
    return dataclasses.replace(config, **options)


def _output_names(module, inputs: dict, names) -> list[str]:
    import torch

    try:
        with torch.inference_mode():
            result = module(*fresh(inputs).values())
    except Exception as exc:
        shapes = {k: tuple(v.shape) for k, v in inputs.items()}
        raise ExportError(
            f"the module fails on the example inputs {shapes}: {type(exc).__name__}: {exc}. "
            "Check the input shapes and dtypes (--input NAME:SHAPE[:DTYPE])"
        ) from exc
    return list(flatten_outputs(result, names))


def _check_dynamic(dynamic, inputs: dict, output_names: list[str]) -> dict[str, dict[int, str]]:
    out = {}
    for name, axes in dynamic.items():
        if name not in inputs and name not in output_names:
            raise UsageError(
                f"dynamic axes given for '{name}', which is neither an input {list(inputs)} "
                f"nor an output {output_names}"
            )
        if name in inputs:
            rank = inputs[name].dim()
            bad = [a for a in axes if a >= rank]
            if bad:
                raise UsageError(f"input '{name}' has rank {rank}; dynamic axes {bad} do not exist")
        out[name] = {int(a): str(label) for a, label in axes.items()}
    return out


def _check_names(proto, inputs: dict, output_names: list[str], exporter: str) -> None:
    """The graph's inputs and outputs are the ones asked for, in order.

    Raises:
        ExportError: other names, naming a weight that took an input's name where that is the cause.
    """
    weights = {i.name for i in proto.graph.initializer}
    got_in = [v.name for v in graph_inputs(proto)]
    got_out = [v.name for v in proto.graph.output]
    if got_in != list(inputs) or got_out != output_names:
        taken = [n for n in inputs if n in weights and n not in got_in]
        why = (f"{taken} also name(s) a weight (parameter or buffer) of the module in the graph the {exporter} "
               "exporter wrote: rename the input(s)" if taken else
               "An input the module ignores is dropped by the exporter: remove it from the inputs")
        raise ExportError(
            f"the exported graph has inputs {got_in} and outputs {got_out}; expected {list(inputs)} and "
            f"{output_names}. {why}"
        )


def _check_dynamic_inputs(proto, dynamic: dict) -> None:
    for value in proto.graph.input:
        for axis in dynamic.get(value.name, {}):
            dim = value.type.tensor_type.shape.dim[axis]
            if not dim.dim_param:
                raise ExportError(
                    f"axis {axis} of input '{value.name}' was asked to be dynamic but the exporter fixed it to "
                    f"{dim.dim_value}; the model's code uses that size as a constant"
                )


def _check_output_axes(proto, dynamic: dict) -> None:
    """Output axes asked to be dynamic must be symbolic in the graph (after shape inference, which
    replaces a label the TorchScript exporter put on a size the graph fixes), where it gives a shape.

    Raises:
        UsageError: an axis beyond the output's rank.
        ExportError: an axis the graph fixes.
    """
    for value in proto.graph.output:
        axes = dynamic.get(value.name, {})
        if not axes or not value.type.tensor_type.HasField("shape"):
            continue
        dims = value.type.tensor_type.shape.dim
        bad = [a for a in axes if a >= len(dims)]
        if bad:
            raise UsageError(f"output '{value.name}' has rank {len(dims)}; dynamic axes {bad} do not exist")
        for axis in axes:
            if dims[axis].HasField("dim_value"):
                raise ExportError(
                    f"axis {axis} of output '{value.name}' was asked to be dynamic but its size is fixed at "
                    f"{dims[axis].dim_value} in the graph: it does not follow a dynamic input axis (drop it from "
                    "--dynamic), or the model's code uses that size as a constant"
                )


def _infer_and_check(proto, exporter: str = ""):
    """ONNX shape inference (best effort: a model ORT accepts may still be fine; above 2 GB on a
    temporary file), then the ONNX checker (skipped above 2 GB, where it cannot take the model in memory).
    ``exporter`` (the one that wrote ``proto``) is named in the error.

    Raises:
        ExportError: the checker rejects the model.
    """
    import onnx

    proto = infer_shapes(proto)
    data = serialized(proto)
    if data is None:
        log.warning("model above 2 GB: the ONNX checker is skipped")
        return proto
    try:
        onnx.checker.check_model(data)  # the bytes: check_model would serialize the proto again
    except onnx.checker.ValidationError as exc:
        first = str(exc).splitlines()[0].rstrip(".")
        by = f" (written by the {exporter} exporter)" if exporter else ""
        hint = (". An input or output name is also the name of a weight or an intermediate tensor of the module: "
                "rename it" if "single static assignment" in first else "")
        raise ExportError(f"the ONNX checker rejects the exported model{by}: {first}{hint}") from None
    return proto
