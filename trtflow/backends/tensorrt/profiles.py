"""Optimization profiles: check the ones given against the model, infer the missing ones.

A dynamic dim 0 is taken as the batch and gets ``1 <= batch <= max_batch`` (opt = max); a dim
that shares its name with a dim given elsewhere in the profile takes those sizes; any other
dynamic dim is an error that names the input and the dim. Inferred sizes are returned as notes
for the caller to print: a dynamic dim never silently becomes 1.
"""

from __future__ import annotations

from trtflow.errors import UsageError
from trtflow.spec import Profile, Shape, TensorSpec, format_shape

EXAMPLE_SIZES = (320, 640, 1280)  # min/opt/max put in the example command for a non-batch dim


def check_profile(profile: Profile, inputs: list[TensorSpec]) -> None:
    """Raise when a profile names unknown inputs or contradicts the model's ranks or static dims.

    Raises:
        UsageError: the message names the input, the dim and what the model has.
    """
    specs = {s.name: s for s in inputs}
    unknown = [n for n in profile.min if n not in specs]
    if unknown:
        raise UsageError(f"shapes given for unknown input(s) {unknown}; the model's inputs are {list(specs)}")
    for name in profile.min:
        spec = specs[name]
        for which, shape in (("min", profile.min[name]), ("opt", profile.opt[name]), ("max", profile.max[name])):
            if len(shape) != spec.rank:
                raise UsageError(
                    f"input '{name}': {which} shape {format_shape(shape)} has rank {len(shape)}, "
                    f"the model's input is {spec.describe_shape()} (rank {spec.rank})"
                )
            for i, (got, want) in enumerate(zip(shape, spec.shape)):
                if isinstance(want, int) and got != want:
                    raise UsageError(
                        f"input '{name}': {which} shape {format_shape(shape)} has {got} in dim {i}, "
                        f"which the model fixes at {want} ({spec.describe_shape()})"
                    )


def _example(spec: TensorSpec, max_batch: int) -> str:
    shapes = []
    for k in range(3):
        dims = []
        for i, d in enumerate(spec.shape):
            if isinstance(d, int):
                dims.append(d)
            elif i == 0:
                dims.append((1, max_batch, max_batch)[k])
            else:
                dims.append(EXAMPLE_SIZES[k])
        shapes.append(f"{spec.name}:{format_shape(dims)}")
    return f"--minShapes {shapes[0]} --optShapes {shapes[1]} --maxShapes {shapes[2]}"


def _fill(spec: TensorSpec, named: dict[str, tuple[int, int, int]], max_batch: int) -> tuple[Shape, Shape, Shape, list[str]]:
    lo, mid, hi, notes = [], [], [], []
    for i, d in enumerate(spec.shape):
        if isinstance(d, int):
            sizes = (d, d, d)
        elif d in named:
            sizes = named[d]
            notes.append(f"dim {i} ('{d}') shares its name with a given input: {sizes[0]}..{sizes[2]}")
        elif i == 0:
            sizes = (1, max_batch, max_batch)
            notes.append(f"dim 0 ('{d}') taken as the batch: 1..{max_batch}, opt {max_batch}")
        else:
            raise UsageError(
                f"input '{spec.name}' {spec.describe_shape()} has dynamic dim {i} ('{d}') and no shapes were "
                f"given for it; give a profile, e.g. {_example(spec, max_batch)}"
            )
        lo.append(sizes[0]), mid.append(sizes[1]), hi.append(sizes[2])
    return tuple(lo), tuple(mid), tuple(hi), notes


def _named_sizes(profile: Profile, specs: dict[str, TensorSpec]) -> dict[str, tuple[int, int, int]]:
    named: dict[str, tuple[int, int, int]] = {}
    for name in profile.min:
        for i, d in enumerate(specs[name].shape):
            if isinstance(d, str) and d not in ("?", ""):
                named.setdefault(d, (profile.min[name][i], profile.opt[name][i], profile.max[name][i]))
    return named


def complete_profiles(
    inputs: list[TensorSpec], given: list[Profile], max_batch: int = 16
) -> tuple[list[Profile], list[str]]:
    """The profiles to build: ``given`` checked and completed, or one inferred profile.

    Args:
        inputs: the model's input specs (dynamic dims named as in the ONNX).
        given: profiles from the user; inputs missing from one are filled in.
        max_batch: upper bound of an inferred batch dim.

    Returns:
        ``(profiles, notes)``: no profiles when every input is static; one note per inferred
        input, e.g. ``"input 'x': 1x3x224x224 .. 16x3x224x224 (opt 16x...): dim 0 ('batch') taken as the batch"``.

    Raises:
        UsageError: a given profile does not fit the model, or a non-batch dynamic dim has no
            shapes (the message gives a --minShapes/--optShapes/--maxShapes example).
    """
    specs = {s.name: s for s in inputs}
    dynamic = [s for s in inputs if s.is_dynamic]
    for p in given:
        check_profile(p, inputs)
    if not dynamic:
        return list(given), []
    notes: list[str] = []
    out: list[Profile] = []
    for k, p in enumerate(given or [Profile()]):
        lo, mid, hi = dict(p.min), dict(p.opt), dict(p.max)
        named = _named_sizes(p, specs)
        for spec in dynamic:
            if spec.name in lo:
                continue
            a, b, c, why = _fill(spec, named, max_batch)
            lo[spec.name], mid[spec.name], hi[spec.name] = a, b, c
            where = f"profile {k}, " if len(given) > 1 else ""
            notes.append(
                f"{where}input '{spec.name}': inferred {format_shape(a)} .. {format_shape(c)} (opt {format_shape(b)}); "
                + "; ".join(why)
            )
        order = [s.name for s in inputs if s.name in lo]
        out.append(Profile({n: lo[n] for n in order}, {n: mid[n] for n in order}, {n: hi[n] for n in order}))
    return out, notes
