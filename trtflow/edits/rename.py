"""``rename``: rename model inputs and outputs (``--rename-input old=new``, ``--rename-output old=new``)."""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any, Mapping

from trtflow.edits import fields
from trtflow.edits.registry import Edit, register
from trtflow.errors import GraphError, UsageError
from trtflow.graph.io import load_onnx
from trtflow.graph.ir import export_graph, import_graph


def _name_map(value: Any, what: str) -> dict[str, str]:
    if not isinstance(value, Mapping):
        hint = "; parse 'OLD=NEW' strings with trtflow.spec.parse_pairs" if isinstance(value, (str, list)) else ""
        raise UsageError(f"{what}: expected a dict old name -> new name, e.g. {{'input.1': 'images'}}, "
                         f"got {value!r}{hint}")
    bad = [(k, v) for k, v in value.items() if not (isinstance(k, str) and isinstance(v, str) and k and v)]
    if bad:
        raise UsageError(f"{what}: names must be non-empty strings, got {bad}")
    return dict(value)


@dataclass(frozen=True)
class RenameOptions:
    """Options of the ``rename`` edit; give ``inputs``, ``outputs`` or both.

    Attributes:
        inputs: old input name -> new name.
        outputs: old output name -> new name.
    """

    inputs: Mapping[str, str] = field(default_factory=dict)
    outputs: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self):
        fields.set_field(self, "inputs", _name_map(self.inputs, "inputs"))
        fields.set_field(self, "outputs", _name_map(self.outputs, "outputs"))
        if not self.inputs and not self.outputs:
            raise UsageError("nothing to rename: give --rename-input OLD=NEW and/or --rename-output OLD=NEW "
                             "(inputs= / outputs= in Python)")
        sources: dict[str, set[str]] = {}
        for old, new in [*self.inputs.items(), *self.outputs.items()]:
            sources.setdefault(new, set()).add(old)
        twice = {new: sorted(olds) for new, olds in sources.items() if len(olds) > 1}
        if twice:
            raise UsageError(f"rename gives one new name to several tensors: {twice}")


def _names_in(graph: Any) -> set[str]:
    """Every tensor name of an ONNX graph and of the subgraphs its nodes carry."""
    names = {v.name for v in (*graph.input, *graph.output, *graph.initializer)}
    for node in graph.node:
        names.update(n for n in (*node.input, *node.output) if n)
        for attr in node.attribute:
            for sub in (*([attr.g] if attr.HasField("g") else []), *attr.graphs):
                names |= _names_in(sub)
    return names


def rename_io(proto: Any, options: RenameOptions) -> tuple[Any, dict]:
    """Rename graph inputs and outputs.

    Args:
        proto: an onnx.ModelProto, or a path or bytes of one.
        options: old -> new names of inputs and outputs.

    Returns:
        ``(new_proto, report)`` with ``input_map`` and ``output_map``.

    Raises:
        UsageError: a name that is not an input/output, a new name already used in the graph, or two new
            names for a tensor that is both an input and an output (renaming one side renames both).
    """
    inputs, outputs = dict(options.inputs), dict(options.outputs)
    proto = load_onnx(proto)
    graph = import_graph(proto, infer=False)
    tensors = graph.tensors()
    used = _names_in(proto.graph)  # If/Loop/Scan subgraphs too: a name there cannot be taken outside
    for kind, mapping, present in (("input", inputs, graph.inputs), ("output", outputs, graph.outputs)):
        names = [t.name for t in present]
        for old, new in mapping.items():
            if old not in names:
                raise UsageError(f"'{old}' is not a model {kind}; the model's {kind}s are {names}")
            if new in used and new != old and new not in (*inputs, *outputs):
                raise UsageError(f"cannot rename {kind} '{old}' to '{new}': the graph already has a tensor '{new}'")
    both = {old: (inputs[old], outputs[old]) for old in set(inputs) & set(outputs) if inputs[old] != outputs[old]}
    if both:
        raise UsageError(f"{sorted(both)} are each an input and an output of the model, one tensor with one name; "
                         f"give each one new name, not two: {both}")
    # a tensor that is both an input and an output (a pass-through) is renamed on both sides
    for old in [t.name for t in graph.inputs if t in graph.outputs]:
        if old in inputs or old in outputs:
            inputs[old] = outputs[old] = inputs.get(old, outputs.get(old))
    for old, new in {**inputs, **outputs}.items():
        tensor = tensors[old]
        lazy = getattr(tensor, "_values", None)
        if hasattr(lazy, "tensor"):  # an initializer output: export renames the TensorProto it reads, the caller's
            lazy.tensor = copy.deepcopy(lazy.tensor)
        tensor.name = new
    try:
        new_proto = export_graph(graph, like=proto)
    except Exception as exc:
        raise GraphError(f"renaming produced an invalid graph: {exc}") from None
    return new_proto, {"input_map": inputs, "output_map": outputs}


register(Edit(
    name="rename",
    help="rename model inputs/outputs (--rename-input old=new, --rename-output old=new); verification inputs: --input",
    options=RenameOptions,
    apply=rename_io,
    atol=0.0,
    rtol=0.0,
))
