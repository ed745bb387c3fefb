"""The torch engine's outputs: naming and typing them by probing the module, flattening what it
returns into name -> tensor, and casting floating I/O around a reduced-precision module."""

from __future__ import annotations

from typing import Any, Callable, Mapping

from trtflow.errors import ModelLoadError, UsageError
from trtflow.spec import TensorSpec


def flattener(kind: str, names: list[str], keys: list | None) -> Callable[[Any], dict]:
    """A function turning the module's return value ("tensor", "dict" or "seq") into name -> tensor."""
    if kind == "tensor":
        only = names[0]
        return lambda out: {only: out}
    if kind == "dict":
        pairs = list(zip(names, keys))
        return lambda out: {name: out[key] for name, key in pairs}
    return lambda out: dict(zip(names, out))


def probe_outputs(torch, module, examples, inputs, output_names, kw):
    """Run the module once (twice with dynamic dims) to name and type its outputs."""
    names = [s.name for s in inputs]

    def call(tensors):
        with torch.no_grad():
            return module(**dict(zip(names, tensors))) if kw else module(*tensors)

    try:
        out = call(examples)
    except Exception as exc:
        raise ModelLoadError(f"the model failed on its example inputs: {type(exc).__name__}: {exc}") from exc
    if isinstance(out, torch.Tensor):
        kind, keys, values = "tensor", None, [out]
    elif isinstance(out, Mapping):
        kind, keys, values = "dict", list(out), list(out.values())
    elif isinstance(out, (tuple, list)):
        kind, keys, values = "seq", None, list(out)
    else:
        raise ModelLoadError(f"the model returned {type(out).__name__}; expected a tensor, a tuple/list or a dict of tensors")
    if output_names is not None and len(output_names) != len(values):
        raise UsageError(f"{len(output_names)} output names {list(output_names)} for {len(values)} outputs")
    out_names = list(output_names or (keys if kind == "dict" else (["output"] if kind == "tensor" else
                                                                      [f"output_{i}" for i in range(len(values))])))
    for name, v in zip(out_names, values):
        if not isinstance(v, torch.Tensor):
            raise ModelLoadError(f"the model's output '{name}' is a {type(v).__name__}; the torch engine takes a tensor, "
                                 "or a flat tuple/list or dict of tensors (return the tensors, not None or nested ones)")
    shapes = [tuple(int(d) for d in v.shape) for v in values]
    second = second_shapes(inputs, examples)
    if second is not None:
        moved = [e.new_zeros(s) if not e.is_floating_point() else torch.randn(s, dtype=e.dtype, device=e.device)
                 for e, s in zip(examples, second)]
        try:
            other = call(moved)
        except Exception as exc:
            raise UsageError(
                f"the model failed at input shapes {second}, inside the declared dynamic dims: "
                f"{type(exc).__name__}: {exc}. Check the dynamic dims and bounds."
            ) from exc
        other_values = [other] if kind == "tensor" else list(other.values() if kind == "dict" else other)
        dim_names = {}
        for spec, a, b in zip(inputs, [tuple(e.shape) for e in examples], second):
            for i, d in enumerate(spec.shape):
                if isinstance(d, str) and a[i] != b[i]:
                    dim_names.setdefault((a[i], b[i]), d)
        shapes = [
            tuple(d if d == int(o) else dim_names.get((d, int(o)), "?") for d, o in zip(shape, v.shape))
            for shape, v in zip(shapes, other_values)
        ]
    from trtflow.arrays import dtype_name

    specs = [TensorSpec(n, dtype_name(v.dtype), s) for n, v, s in zip(out_names, values, shapes)]
    return specs, flattener(kind, out_names, keys)


def second_shapes(inputs: list[TensorSpec], examples) -> list[tuple] | None:
    """Example shapes with every dynamic dim moved by one inside its bounds (None if no dim can move)."""
    moved_to: dict[str, int] = {}
    shapes, moved = [], False
    for spec, e in zip(inputs, examples):
        shape = list(int(d) for d in e.shape)
        for i, d in enumerate(spec.shape):
            if isinstance(d, int):
                continue
            lo = spec.bounds.min[i] if spec.bounds else 1
            hi = spec.bounds.max[i] if spec.bounds else shape[i] + 1
            if d in moved_to and d != "?":
                shape[i] = moved_to[d]
            elif shape[i] + 1 <= hi:
                shape[i] += 1
            elif shape[i] - 1 >= max(lo, 1):
                shape[i] -= 1
            if d != "?":
                moved_to.setdefault(d, shape[i])
            moved = moved or shape[i] != int(e.shape[i])
        shapes.append(tuple(shape))
    return shapes if moved else None


def casting(torch, fn: Callable, compute, io) -> Callable:
    """``fn`` with floating inputs cast to ``compute`` and floating outputs (in tensors, tuples,
    lists, dicts) cast back to ``io``."""

    def down(t):
        return t.to(compute) if isinstance(t, torch.Tensor) and t.is_floating_point() else t

    def up(out):
        if isinstance(out, torch.Tensor):
            return out.to(io) if out.is_floating_point() else out
        if isinstance(out, Mapping):
            return {k: up(v) for k, v in out.items()}
        if isinstance(out, tuple) and hasattr(out, "_fields"):  # a namedtuple
            return type(out)(*(up(v) for v in out))
        if isinstance(out, (tuple, list)):
            return type(out)(up(v) for v in out)
        return out

    def call(*args, **kwargs):
        return up(fn(*(down(a) for a in args), **{k: down(v) for k, v in kwargs.items()}))

    return call
