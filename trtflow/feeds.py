"""Feeds for run / compare / bench: concrete shapes for dynamic inputs, random or loaded values."""

from __future__ import annotations

from pathlib import Path
from typing import Iterable, Mapping

import numpy as np

from trtflow.errors import ModelLoadError, UsageError
from trtflow.spec import Shape, TensorSpec, format_shape, parse_pairs

INT_RANGE = (0, 4)  # random integer inputs: small non-negative values, valid as indices and ids


def resolve_shape(spec: TensorSpec, shapes: Mapping[str, Shape]) -> Shape:
    """The concrete shape to feed: ``--shapes`` first, then the engine's opt shape, then static dims.

    Raises:
        UsageError: a dynamic dim with no shape given and no bounds to take it from.
    """
    if spec.name in shapes:
        return tuple(shapes[spec.name])
    if spec.bounds is not None:
        return tuple(spec.bounds.opt)
    if not spec.is_dynamic:
        return tuple(spec.shape)
    example = format_shape(d if isinstance(d, int) else 1 for d in spec.shape)
    raise UsageError(
        f"input '{spec.name}' has dynamic dims {spec.describe_shape()}; give a concrete shape, "
        f"e.g. --shapes {spec.name}:{example}"
    )


def random_array(spec: TensorSpec, shape: Shape, rng: np.random.Generator) -> np.ndarray:
    """Random values of the spec's dtype: normal floats, small non-negative ints, random bools."""
    if spec.dtype == "bool":
        return rng.random(shape) < 0.5
    if spec.dtype.startswith(("int", "uint")):
        return rng.integers(INT_RANGE[0], INT_RANGE[1], size=shape).astype(spec.dtype)
    dtype = "float32" if spec.dtype == "bfloat16" else spec.dtype
    return rng.standard_normal(shape).astype(dtype)


def random_feed(specs: Iterable[TensorSpec], shapes: Mapping[str, Shape] | None = None, seed: int = 0) -> dict:
    """One random array per input, shapes resolved by ``resolve_shape``."""
    rng = np.random.default_rng(seed)
    shapes = shapes or {}
    return {s.name: random_array(s, resolve_shape(s, shapes), rng) for s in specs}


def parse_input_args(args: Iterable[str] | None, flag: str = "--input") -> dict[str, str]:
    """``["images=a.npy", "mask=random"]`` -> ``{"images": "a.npy", "mask": "random"}``."""
    return parse_pairs(args, flag, f"NAME=FILE.npy or NAME=random, e.g. {flag} images=batch.npy")


def build_feed(
    specs: list[TensorSpec],
    inputs: Mapping[str, str] | None = None,
    shapes: Mapping[str, Shape] | None = None,
    seed: int = 0,
) -> dict[str, np.ndarray]:
    """The feed for a run: files where given (``.npy``, or ``.npz`` holding every input), random elsewhere.

    Raises:
        UsageError: an --input naming no model input.
        ModelLoadError: an input file that is missing or unreadable.
    """
    inputs = dict(inputs or {})
    names = {s.name for s in specs}
    for name in inputs:
        if name not in names and not inputs[name].endswith(".npz"):
            raise UsageError(f"--input names '{name}', which is not a model input; inputs: {sorted(names)}")
    shapes = dict(shapes or {})
    loaded: dict[str, np.ndarray] = {}
    for name, value in inputs.items():
        if value == "random":
            continue
        path = Path(value)
        if not path.exists():
            raise ModelLoadError(f"input file not found: {path}")
        try:
            data = np.load(path, allow_pickle=False)
        except (ValueError, OSError) as exc:
            raise ModelLoadError(f"cannot read {path} as .npy/.npz ({exc})") from None
        if isinstance(data, np.lib.npyio.NpzFile):
            loaded.update({k: data[k] for k in data.files if k in names})
        else:
            loaded[name] = data
    for name, arr in loaded.items():
        shapes[name] = arr.shape
    feed = random_feed([s for s in specs if s.name not in loaded], shapes, seed)
    feed.update(loaded)
    return {s.name: feed[s.name] for s in specs}
