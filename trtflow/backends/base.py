"""The engine contract: name-keyed specs, one validation, outputs in the caller's array family.

Each engine implements ``_infer(feed) -> dict`` on arrays already validated, cast and
converted to its native family (``native = "numpy"`` or ``"torch"``); everything else lives here.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, Collection, Mapping

import numpy as np

from trtflow.arrays import (STRING, Family, can_cast, dtype_of, numpy_dtype, shape_of, to_numpy, to_strings, to_torch,
                            torch_dtype)
from trtflow.errors import EngineError, InputDtypeError, InputNameError, InputShapeError, UsageError
from trtflow.spec import TensorSpec

MAX_PLANS = 64  # validated feed signatures remembered per engine


def check_names(feed: Mapping[str, Any], names: Collection[str]) -> None:
    """Raise ``InputNameError`` unless ``feed`` has exactly the input ``names``."""
    unknown = [n for n in feed if n not in names]
    missing = [n for n in names if n not in feed]
    if unknown or missing:
        raise InputNameError(f"input names do not match the model: unknown {unknown}, missing {missing}; "
                             f"the model's inputs are {list(names)}")


class Engine(ABC):
    """Base class of every engine. Use as a context manager or call ``close()``.

    Attributes:
        name: engine id ("ort", "torch", "tensorrt").
        inputs: one ``TensorSpec`` per input, in model order.
        outputs: one ``TensorSpec`` per output, in model order.
    """

    name = "base"
    native = "numpy"
    split_batches = False  # trtflow.load(..., split_batches=True): see infer()
    # how the caller turns split_batches on, said when a batch is outside the engine's range ("": it cannot)
    split_hint = "Or load with split_batches=True to run it in chunks the engine takes."

    def __init__(self, inputs: list[TensorSpec], outputs: list[TensorSpec]):
        self.inputs = list(inputs)
        self.outputs = list(outputs)
        self._specs = {s.name: s for s in self.inputs}
        self._names = tuple(self._specs)
        self._plans: dict[tuple, tuple] = {}  # signature -> (family, inputs used as given, outputs as given)
        self._closed = False

    # -- public ---------------------------------------------------------------------------
    def infer(self, feed: Mapping[str, Any]) -> dict[str, Any]:
        """Run the model.

        Args:
            feed: input name -> numpy array, torch tensor (CPU or CUDA) or DLPack object.

        Returns:
            Output name -> array, in the family of the inputs (numpy in, numpy out; torch in,
            torch out on the inputs' device).

        With ``split_batches`` set (``trtflow.load(..., split_batches=True)``, ``--split-batches``),
        a batch above the engine's largest batch runs in chunks of that size, and a chunk below
        its smallest batch (a partial batch into a static-batch engine) is padded by repeating
        its last item; the outputs are joined and trimmed to the feed's batch. The cost: one
        engine call per chunk, and the padded rows are computed too (5 images into a static
        batch of 4 cost two full batches).

        Raises:
            InputNameError, InputShapeError, InputDtypeError: the feed does not match ``inputs``.
            EngineError: the engine failed while running.
        """
        if self._closed:
            raise EngineError(f"the {self.name} engine is closed; load the model again (trtflow.load) to run it")
        if self.split_batches:
            chunked = self._infer_split(feed)
            if chunked is not None:
                return chunked
        return self._infer_checked(feed)

    def batch_range(self) -> tuple[int, int] | None:
        """``(smallest, largest)`` batch (dim 0 of the first input) the engine takes, or None when unbounded."""
        if not self.inputs or not self.inputs[0].rank:
            return None
        spec = self.inputs[0]
        if spec.bounds is not None:
            return int(spec.bounds.min[0]), int(spec.bounds.max[0])
        if isinstance(spec.shape[0], int):
            return spec.shape[0], spec.shape[0]
        return None

    def _infer_split(self, feed: Mapping[str, Any]) -> dict[str, Any] | None:
        """``infer`` in chunks the engine's batch range takes, or None when the feed fits as it is."""
        limits = self.batch_range()
        if limits is None or not isinstance(feed, Mapping) or set(feed) != set(self._names):
            return None
        lo, hi = limits
        shapes = [shape_of(v) for v in feed.values()]
        if not all(shapes) or len({s[0] for s in shapes}) != 1:
            return None
        n = int(shapes[0][0])
        if lo <= n <= hi or n == 0:
            return None
        parts = []
        for start in range(0, n, hi):
            chunk = {k: v[start:start + hi] for k, v in feed.items()}
            m = min(hi, n - start)
            if m < lo:
                chunk = {k: _pad_rows(v, lo) for k, v in chunk.items()}
            out = self._infer_checked(chunk)
            rows = max(m, lo)  # outputs with the chunk's batch are trimmed to its real rows
            unbatched = [k for k, v in out.items() if tuple(shape_of(v)[:1]) != (rows,)]
            if unbatched:
                raise UsageError(
                    f"split_batches (--split-batches) cannot join output '{unbatched[0]}': it has shape "
                    f"{tuple(shape_of(out[unbatched[0]]))} for a chunk of {rows} rows, no batch dimension to join "
                    f"along; run batches of {lo}..{hi} rows the engine takes and combine that output yourself"
                )
            parts.append({k: v[:m] for k, v in out.items()})
        return {k: _join([p[k] for p in parts]) for k in parts[0]}

    def _infer_checked(self, feed: Mapping[str, Any]) -> dict[str, Any]:
        key = _signature(feed, self._names)
        plan = self._plans.get(key) if key is not None else None
        if plan is not None:  # a feed like one already validated: names, shapes, dtypes, family
            family, direct, passthrough = plan
            native = {n: feed[n] for n in self._names} if direct else {
                name: self._to_native(feed[name], self._specs[name].dtype) for name in self._names}
            result = self._infer(native)
            return result if passthrough else {name: family.wrap(value) for name, value in result.items()}
        family = self.check_feed(feed)
        native = {name: self._to_native(feed[name], self._specs[name].dtype) for name in self._specs}
        self._prepare(native)
        result = self._infer(native)
        wrapped = {name: family.wrap(value) for name, value in result.items()}
        if key is not None:
            if len(self._plans) >= MAX_PLANS:
                self._plans.clear()
            direct = all(native[n] is feed[n] for n in self._names)
            self._plans[key] = (family, direct, all(wrapped[n] is result[n] for n in result))
        return wrapped

    def check_feed(self, feed: Mapping[str, Any]) -> Family:
        """Validate names, ranks, dims and dtypes; return the feed's array family."""
        if not isinstance(feed, Mapping):
            raise InputNameError(
                f"infer() takes a mapping of input name -> array, got {type(feed).__name__}; "
                f"pass {{{', '.join(repr(n) for n in self._specs)}: ...}}"
            )
        check_names(feed, self._specs)
        named: dict[str, tuple[int, str]] = {}
        family = None
        for name, spec in self._specs.items():
            value = feed[name]
            try:
                family = family or Family.of(value)
            except TypeError as exc:
                raise InputDtypeError(f"input '{name}': {exc}") from None
            self._check_one(spec, shape_of(value), dtype_of(value), named)
        return family or Family("numpy")  # a model without inputs answers in numpy

    @property
    def on_gpu(self) -> bool:
        """True when the engine runs on a GPU (a served model's Triton instance kind, KIND_GPU)."""
        return False

    def close(self) -> None:
        """Release the engine's resources; further ``infer`` calls raise ``EngineError``."""
        self._closed = True

    def __enter__(self) -> "Engine":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        ins = ", ".join(f"{s.name}:{s.dtype}{list(s.shape)}" for s in self.inputs)
        return f"<{type(self).__name__} inputs=[{ins}]>"

    # -- for subclasses -------------------------------------------------------------------
    @abstractmethod
    def _infer(self, feed: dict[str, Any]) -> dict[str, Any]:
        """Run on validated arrays of the native family; return a new dict of output name -> array
        (the caller gets it as it is, not copied)."""

    def _prepare(self, feed: dict[str, Any]) -> None:
        """One-time checks of a feed signature not seen before (new shapes or dtypes), before it runs;
        feeds like one that already ran skip it."""

    # -- internals ------------------------------------------------------------------------
    def _to_native(self, value: Any, dtype: str) -> Any:
        if self.native == "numpy":
            arr = to_numpy(value)
            if dtype == STRING:
                return to_strings(arr)
            want = numpy_dtype(dtype)
            return arr if arr.dtype == want else arr.astype(want)
        t = to_torch(value)
        want = torch_dtype(dtype)
        return t if t.dtype == want else t.to(want)

    def _check_one(self, spec: TensorSpec, shape: tuple[int, ...], dtype: str, named: dict) -> None:
        if len(shape) != spec.rank:
            raise InputShapeError(
                f"input '{spec.name}' has shape {shape} (rank {len(shape)}); the engine expects "
                f"{spec.describe_shape()} (rank {spec.rank}). "
                + ("Add a batch dimension (x[None])." if len(shape) + 1 == spec.rank else "Reshape the input.")
            )
        for i, (got, want) in enumerate(zip(shape, spec.shape)):
            if spec.bounds is not None:
                lo, hi = spec.bounds.min[i], spec.bounds.max[i]
                ok = lo <= got <= hi
            else:
                ok = not isinstance(want, int) or got == want
            if not ok:
                fix = (
                    "Resize the input, or rebuild with --minShapes/--maxShapes covering it."
                    if spec.bounds is not None
                    else "Resize the input to match."
                )
                if _channels_last(spec, shape):
                    fix = (f"The array looks channels-last (NHWC: its last dim is {shape[-1]}, the model's channel "
                           "count): transpose it to NCHW (x.transpose(0, 3, 1, 2)), or embed the transpose in the "
                           "model with `trtflow surgeon embed-preprocess --layout nhwc`.")
                elif i == 0 and self.split_hint:
                    fix += " " + self.split_hint
                raise InputShapeError(
                    f"input '{spec.name}' has shape {shape}; dim {i} is {got} but the engine expects "
                    f"{spec.describe_shape()}. {fix}"
                )
            if isinstance(want, str) and want not in ("?", ""):
                seen = named.setdefault(want, (got, spec.name))
                if seen[0] != got:
                    raise InputShapeError(
                        f"dim '{want}' is {got} in input '{spec.name}' but {seen[0]} in input '{seen[1]}'; "
                        "inputs sharing a named dim must agree"
                    )
        if not can_cast(dtype, spec.dtype):
            raise InputDtypeError(
                f"input '{spec.name}' has dtype {dtype}; the engine expects {spec.dtype} and {dtype} cannot "
                f"be cast to it without loss. Convert it first, e.g. x.astype('{spec.dtype}')"
            )


def _channels_last(spec: TensorSpec, shape: tuple[int, ...]) -> bool:
    """True when a rank-4 array looks NHWC for an NCHW input: its last dim is the model's channel count."""
    if spec.rank != 4 or len(shape) != 4 or not isinstance(spec.shape[1], int):
        return False
    channels = spec.shape[1]
    return shape[3] == channels and shape[1] != channels and spec.shape[3] != channels


def _pad_rows(value: Any, rows: int) -> Any:
    """``value`` with its last row repeated up to ``rows`` rows (numpy or torch)."""
    extra = rows - int(shape_of(value)[0])
    if hasattr(value, "repeat_interleave"):
        import torch

        return torch.cat([value, value[-1:].expand(extra, *value.shape[1:])])
    value = np.asarray(value)
    return np.concatenate([value, np.repeat(value[-1:], extra, axis=0)])


def _join(values: list) -> Any:
    """Chunks of one output joined along the batch (numpy or torch)."""
    if len(values) == 1:
        return values[0]
    if hasattr(values[0], "repeat_interleave"):
        import torch

        return torch.cat(values)
    return np.concatenate(values)


def _signature(feed: Any, names: tuple[str, ...]) -> tuple | None:
    """A hashable key of what validation looks at (names, array type, shape, dtype, device), or
    None when the feed is not a plain match of the names (the full check then explains why)."""
    try:
        if len(feed) != len(names):
            return None
        key = []
        for name in names:
            x = feed[name]
            kind = type(x)
            if kind is np.ndarray:
                key.append((kind, x.shape, x.dtype))
            elif kind.__module__ == "torch":
                key.append((kind, x.shape, x.dtype, x.get_device()))
            else:
                key.append((kind, tuple(x.shape), str(x.dtype), x.__dlpack_device__()))
        return tuple(key)
    except (KeyError, TypeError, AttributeError):
        return None
