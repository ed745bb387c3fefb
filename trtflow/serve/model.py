"""One served model: its engine instances, its Triton metadata and config, and request validation."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np

from trtflow.arrays import to_strings
from trtflow.backends.base import Engine
from trtflow.errors import InputError, UsageError
from trtflow.serve import protocol


@dataclass(frozen=True)
class BatchConfig:
    """Dynamic batching and queueing of one model.

    Attributes:
        max_batch: the most rows merged into one execution (0: the model is not batched).
        delay_us: how long the first request of a batch may wait for more (Triton's
            ``max_queue_delay_microseconds``).
        preferred: batch sizes dispatched as soon as they are reached.
        max_queue: queued requests at most; one more is answered 503.
        timeout_s: a request not answered within this time is answered 503.
    """

    max_batch: int = 32
    delay_us: int = 0
    preferred: tuple[int, ...] = ()
    max_queue: int = 1024
    timeout_s: float = 30.0


class ModelInfo:
    """What the protocol says about a model without its engines (picklable): name, version,
    specs, batching bounds, labels. A front-end process (``trtflow.serve.frontend``) answers
    metadata and config requests from it while the engines live in the engine process."""

    version = "1"
    _metadata: dict | None = None  # built at the first request (a loaded model's answers do not change)
    _config: tuple[str, dict] | None = None  # (instance kind, config)

    def __init__(self, name: str, inputs: Sequence, outputs: Sequence, batched: bool, config: BatchConfig,
                 labels: Sequence[str] | None, platform: str, instances: int):
        self.name, self.inputs, self.outputs, self.batched = name, list(inputs), list(outputs), batched
        self.config, self.labels, self.platform, self.instances = config, labels, platform, instances

    @property
    def max_batch(self) -> int:
        return self.config.max_batch

    def metadata(self) -> dict:
        """Triton's model metadata, built once (callers only read it)."""
        if self._metadata is None:
            self._metadata = protocol.model_metadata(self.name, self.version, self.inputs, self.outputs, self.batched,
                                                     self.platform)
        return self._metadata

    def model_config(self, kind: str = "KIND_CPU") -> dict:
        """Triton's model config as JSON, built once per instance ``kind`` (callers only read it)."""
        if self._config is None or self._config[0] != kind:
            self._config = (kind, protocol.model_config(self.name, self.inputs, self.outputs, self.max_batch,
                                                        self.config.delay_us, self.config.preferred, self.instances,
                                                        kind))
        return self._config[1]


def instance_kind(models: Sequence["ServedModel"]) -> str:
    """Triton's instance kind of a server's models: "KIND_GPU" when one of them runs on a GPU, else "KIND_CPU"."""
    return "KIND_GPU" if any(m.engines[0].on_gpu for m in models) else "KIND_CPU"


class ServedModel(ModelInfo):
    """A model behind the protocol: name, version, specs, batching bounds and ``prepare``.

    Args:
        name: the model name in URLs.
        engines: one loaded engine per instance (all of the same model).
        config: batching options; ``max_batch`` is capped by the engine's profile.
        labels: class labels for the classification extension.
    """

    def __init__(self, name: str, engines: Sequence[Engine], config: BatchConfig = BatchConfig(),
                 labels: Sequence[str] | None = None):
        if not engines:
            raise UsageError(f"model '{name}' needs at least one engine instance")
        self.name = name
        self.engines = list(engines)
        first = self.engines[0]
        self.inputs, self.outputs = first.inputs, first.outputs
        try:  # refused now, not at the first metadata, config or infer request
            for role, specs in (("input", self.inputs), ("output", self.outputs)):
                for spec in specs:
                    protocol.spec_datatype(spec, role)
        except protocol.ProtocolError as exc:
            raise protocol.ProtocolError(f"model '{name}': {exc}") from None
        self.labels = list(labels) if labels else None
        self.batched = config.max_batch > 0 and all(
            s.rank > 0 and (not isinstance(s.shape[0], int) or s.bounds is not None) for s in self.inputs)
        bound = min((s.bounds.max[0] for s in self.inputs if s.bounds is not None), default=None)
        max_batch = min(config.max_batch, bound) if bound else config.max_batch
        if config.preferred and any(p < 1 or p > max_batch for p in config.preferred):
            raise UsageError(f"preferred batch sizes {list(config.preferred)} must lie in 1..{max_batch} (the max batch)")
        self.config = BatchConfig(max_batch if self.batched else 0, config.delay_us, tuple(sorted(config.preferred)),
                                  config.max_queue, config.timeout_s)
        self.platform = f"trtflow_{first.name}"
        self._plans: dict[tuple, tuple] = {}
        # no cast for bfloat16 (numpy has none) and string (BYTES: object arrays the engine converts)
        self._dtypes = {s.name: np.dtype(s.dtype) if s.dtype not in ("bfloat16", "string") else None
                        for s in self.inputs}
        self._strings = [s.name for s in self.inputs if s.dtype == "string"]
        self.instances = len(self.engines)

    def info(self) -> ModelInfo:
        """The model without its engines, for front-end processes."""
        return ModelInfo(self.name, self.inputs, self.outputs, self.batched, self.config, self.labels, self.platform,
                         self.instances)

    def close(self) -> None:
        """Close every engine instance."""
        for engine in self.engines:
            engine.close()

    def prepare(self, inputs: Mapping[str, np.ndarray]) -> tuple[dict[str, np.ndarray], int, tuple]:
        """Validate one request's inputs against the engine and cast them to its dtypes.

        Returns:
            The feed, its rows (batch size; 1 when not batched) and its batching key (the
            non-batch shapes: requests with different keys are never merged).

        Raises:
            ProtocolError: (400) names, shapes or dtypes the engine refuses, a batch larger than
                the model's max batch (the message gives the bound), or string (BYTES) inputs
                that are not UTF-8 text (checked here, per request: in the batch they failed
                every request batched with them).
        """
        if len(inputs) == 1:  # the usual case, without building a tuple of tuples
            (name, arr), = inputs.items()
            signature = (name, arr.shape, arr.dtype)
        else:
            signature = tuple([(name, arr.shape, arr.dtype) for name, arr in inputs.items()])
        plan = self._plans.get(signature)
        if plan is None:  # names, shapes and dtypes seen before need no second check
            plan = self._plan(inputs)
            if len(self._plans) >= 256:
                self._plans.clear()
            self._plans[signature] = plan
        casts, n, key = plan
        if self._strings:
            inputs = self._texts(inputs)
        if not casts:
            return dict(inputs), n, key
        return {name: arr.astype(casts[name]) if name in casts else arr for name, arr in inputs.items()}, n, key

    def _texts(self, inputs: Mapping[str, np.ndarray]) -> Mapping[str, np.ndarray]:
        """The inputs, their strings checked to be text. ASCII bytes are only checked: the engine
        converts them, once, for the whole batch on its own thread; other bytes are decoded here, to
        find and name any that are not UTF-8, and passed on decoded."""
        out = inputs
        for name in self._strings:
            arr = inputs[name]
            if arr.dtype.kind == "U" or all(not isinstance(v, (bytes, bytearray)) or v.isascii() for v in arr.flat):
                continue
            if out is inputs:
                out = dict(inputs)
            try:
                out[name] = to_strings(arr)
            except InputError as exc:
                raise protocol.ProtocolError(f"input '{name}': {exc}") from None
        return out

    def _plan(self, inputs: Mapping[str, np.ndarray]) -> tuple[dict, int, tuple]:
        """(dtype casts, rows, batching key) of a request signature, or the 400 it gets."""
        try:
            self.engines[0].check_feed(inputs)
        except InputError as exc:
            raise protocol.ProtocolError(str(exc)) from None
        casts = {name: want for name, arr in inputs.items()
                 if (want := self._dtypes[name]) is not None and arr.dtype != want}
        if not self.batched:
            return casts, 1, ()
        rows = {arr.shape[0] for arr in inputs.values()}
        if len(rows) != 1:
            raise protocol.ProtocolError(f"inputs of one request must share the batch size (dim 0); got {sorted(rows)}")
        n = rows.pop()
        if n < 1 or n > self.max_batch:
            raise protocol.ProtocolError(
                f"request for model '{self.name}' has batch size {n}; this model takes 1..{self.max_batch} "
                f"(max_batch_size). Split the request or serve with a larger --max-batch.")
        key = tuple((name, inputs[name].shape[1:]) for name in sorted(inputs))
        return casts, n, key
