"""Inputs and outputs of a module to export: names, example tensors, and the CLI's specs.

``NAME:SHAPE[:DTYPE]`` (``x:1x3x224x224``, ``ids:1x16:int64``) describes an example input in
the Python API; the CLI spells it ``--shapes x:1x3x224x224 --dtypes ids:int64``.
``NAME:AXIS=LABEL`` (``x:0=batch``) is a dynamic axis.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any, Iterable, Mapping, Sequence

from trtflow.arrays import dtype_name
from trtflow.errors import ExportError, UsageError
from trtflow.spec import Shape, TensorSpec, format_shape, parse_shape


@dataclass(frozen=True)
class InputSpec:
    """One example input described on the command line."""

    name: str
    shape: Shape
    dtype: str = "float32"

    def __str__(self) -> str:
        return f"{self.name}:{format_shape(self.shape)}:{self.dtype}"


def _is_dtype(text: str) -> bool:
    try:
        dtype_name(text)
    except (TypeError, ValueError, SyntaxError):
        return False
    return not text.replace("x", "").isdigit()


def parse_input_spec(text: str) -> InputSpec:
    """``"x:1x3x224x224"`` or ``"ids:1x16:int64"`` -> ``InputSpec``; the name may contain ':'.

    Raises:
        UsageError: no shape, a bad shape or an unknown dtype.
    """
    parts = text.strip().split(":")
    dtype = "float32"
    if len(parts) >= 3 and _is_dtype(parts[-1]):
        dtype = dtype_name(parts.pop())
    elif len(parts) >= 3 and not parts[-1].replace("x", "").isdigit():
        raise UsageError(
            f"bad input '{text}': '{parts[-1]}' is not a dtype; use e.g. float32, float16, int64, int32, bool"
        )
    if len(parts) < 2 or not parts[-1] or not ":".join(parts[:-1]):
        raise UsageError(f"bad input '{text}': expected NAME:SHAPE[:DTYPE], e.g. x:1x3x224x224 or ids:1x16:int64")
    return InputSpec(":".join(parts[:-1]), parse_shape(parts[-1]), dtype)


def parse_dtypes(texts: Iterable[str] | None) -> dict[str, str]:
    """``["ids:int64", "mask:bool,x:float16"]`` -> ``{"ids": "int64", "mask": "bool", "x": "float16"}``.

    Raises:
        UsageError: an entry that is not NAME:DTYPE or an unknown dtype.
    """
    out: dict[str, str] = {}
    for text in texts or []:
        for entry in text.split(","):
            name, sep, dtype = entry.strip().rpartition(":")
            if not (sep and name and dtype) or not _is_dtype(dtype):
                raise UsageError(
                    f"bad --dtypes '{entry}': expected NAME:DTYPE with a dtype such as float32, float16, int64, "
                    "int32 or bool, e.g. --dtypes ids:int64"
                )
            out[name] = dtype_name(dtype)
    return out


def parse_dynamic(texts: Iterable[str] | None) -> dict[str, dict[int, str]]:
    """``["x:0=batch", "x:2=height"]`` -> ``{"x": {0: "batch", 2: "height"}}``.

    Raises:
        UsageError: an entry that is not NAME:AXIS=LABEL.
    """
    out: dict[str, dict[int, str]] = {}
    for text in texts or []:
        for entry in text.split(","):
            head, sep, label = entry.strip().partition("=")
            name, colon, axis = head.rpartition(":")
            if not (sep and colon and name and axis.isdigit() and label.isidentifier()):
                raise UsageError(
                    f"bad --dynamic '{entry}': expected NAME:AXIS=LABEL with an integer axis and an identifier "
                    "label, e.g. x:0=batch"
                )
            out.setdefault(name, {})[int(axis)] = label
    return out


def random_examples(specs: Sequence[InputSpec], seed: int = 0) -> dict:
    """Random example tensors for ``specs`` (normal floats, small non-negative ints), by name."""
    import numpy as np
    import torch

    from trtflow.feeds import random_array

    rng = np.random.default_rng(seed)
    return {
        s.name: torch.from_numpy(random_array(TensorSpec(s.name, s.dtype, s.shape), s.shape, rng))
        for s in specs
    }


def name_inputs(module: Any, example_inputs: Any, input_names: Sequence[str] | None) -> dict:
    """Example inputs as an ordered name -> tensor dict.

    Names come from ``input_names``, else the keys of a mapping, else ``forward``'s parameter names.

    Raises:
        UsageError: a count of names that does not match the inputs, or inputs that are not tensors.
    """
    import torch

    if isinstance(example_inputs, torch.Tensor):
        example_inputs = (example_inputs,)
    if isinstance(example_inputs, Mapping):
        names = list(input_names or example_inputs.keys())
        values = list(example_inputs.values())
    elif isinstance(example_inputs, Sequence):
        values = list(example_inputs)
        names = list(input_names) if input_names else _forward_names(module, len(values))
    else:
        raise UsageError(
            f"example_inputs must be a tensor, a sequence of tensors or a name -> tensor mapping, "
            f"got {type(example_inputs).__name__}"
        )
    if len(names) != len(values):
        raise UsageError(f"{len(names)} input names {names} for {len(values)} example inputs; give one name per input")
    if len(set(names)) != len(names):
        raise UsageError(f"input names must be unique, got {names}")
    bad = [n for n, v in zip(names, values) if not isinstance(v, torch.Tensor)]
    if bad:
        raise UsageError(f"example inputs {bad} are not torch tensors; only tensor inputs can become ONNX inputs")
    return dict(zip(names, values))


def _forward_names(module: Any, count: int) -> list[str]:
    try:
        params = [
            p.name for p in inspect.signature(module.forward).parameters.values()
            if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
        ]
    except (TypeError, ValueError, AttributeError):
        params = []
    if len(params) >= count:
        return params[:count]
    return ["input"] if count == 1 else [f"input_{i}" for i in range(count)]


def flatten_outputs(result: Any, output_names: Sequence[str] | None = None) -> dict:
    """A module's return value (tensor, tuple/list, dict, nested) as an ordered name -> tensor dict.

    Leaves are named after their dict keys (``{"logits": t}`` -> ``logits``); where keys repeat,
    as in a torchvision detector's list of per-image dicts, the list positions are appended
    (``[{"boxes", "scores", "labels"}, ...]`` -> ``boxes_0, scores_0, labels_0, boxes_1, ...``).
    Without keys the names are ``output`` / ``output_0, output_1, ...``. The export and its
    verification flatten with this one function, so both sides agree.

    Raises:
        ExportError: a non-tensor leaf, or no tensor at all.
        UsageError: a count of names that does not match, or a name given twice.
    """
    import torch

    keys: list[str] = []
    indexed: list[str] = []
    leaves: list = []

    def walk(value: Any, key: str, index: str) -> None:
        if isinstance(value, torch.Tensor):
            keys.append(key)
            indexed.append(f"{key}{index}" if key else "")
            leaves.append(value)
        elif isinstance(value, Mapping):
            for k, v in value.items():
                walk(v, f"{key}.{k}" if key else str(k), index)
        elif isinstance(value, (tuple, list)):
            for i, v in enumerate(value):
                walk(v, key, f"{index}_{i}")
        else:
            raise ExportError(
                f"the module returned a {type(value).__name__} at '{key or 'top level'}'; only tensors "
                "(alone, in tuples/lists or dicts) can become ONNX outputs"
            )

    walk(result, "", "")
    if not leaves:
        raise ExportError(
            f"the module returned no tensor ({type(result).__name__} without tensors in it); an ONNX model needs "
            "at least one output: return the tensors the model computes"
        )
    if all(keys) and len(set(keys)) == len(keys):
        auto = keys
    elif all(indexed) and len(set(indexed)) == len(indexed):
        auto = indexed
    else:
        auto = ["output"] if len(leaves) == 1 else [f"output_{i}" for i in range(len(leaves))]
    if output_names:
        names = list(output_names)
        if len(names) != len(leaves):
            shown = ", ".join(auto[:8]) + (", ..." if len(auto) > 8 else "")
            raise UsageError(
                f"{len(names)} output names {names} for {len(leaves)} outputs of the module ({shown}: nested "
                "lists and dicts are flattened); give one name per output, or none to use these"
            )
        if len(set(names)) != len(names):
            raise UsageError(f"output names must be unique, got {names}")
    else:
        names = auto
    return dict(zip(names, leaves))
