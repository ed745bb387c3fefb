"""Several GPUs on one host: which GPUs are visible, which GPU each engine instance goes to,
the load option that puts an engine there, and a least-loaded router over the instances.

Pure Python apart from ``visible_gpus`` (which asks torch), so the placement and routing rules
are tested on any machine:

    gpus = parse_gpus("0,1", visible_gpus())      # [0, 1]
    place(4, gpus)                                # [0, 1, 0, 1]  (round-robin)
    engines = [load(model, "tensorrt", **device_options("tensorrt", g)) for g in place(4, gpus)]
    router = LeastLoaded(len(engines))
    with router.use() as i:                       # the instance with the fewest batches in flight
        engines[i].infer(feed)
"""

from __future__ import annotations

import contextlib
import importlib.util
import threading
from typing import Iterator, Sequence

from trtflow.errors import UsageError
from trtflow.spec import is_count


def visible_gpus() -> int:
    """How many CUDA GPUs this process sees (``CUDA_VISIBLE_DEVICES`` applies); 0 without torch
    or without a CUDA driver."""
    if importlib.util.find_spec("torch") is None:
        return 0
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def parse_gpus(text: str, visible: int, flag: str = "--gpus") -> list[int]:
    """GPU indices from ``"0,1"`` or ``"all"``, checked against the ``visible`` count.

    Args:
        text: comma-separated GPU indices, or "all" for every visible GPU.
        visible: how many GPUs are visible (``visible_gpus()``).
        flag: the option's name, for messages.

    Returns:
        The indices in the order given, without repeats.

    Raises:
        UsageError: not a list of indices, a repeated index, or an index that does not exist.
    """
    text = str(text).strip().lower()
    seen = "no CUDA GPU is visible" if visible == 0 else (
        f"{visible} CUDA GPU{'s are' if visible > 1 else ' is'} visible (0..{visible - 1})")
    if text == "all":
        if visible == 0:
            raise UsageError(f"{flag} all: {seen}; run on a machine with a CUDA GPU or drop {flag}")
        return list(range(visible))
    parts = [p.strip() for p in text.split(",")]
    if not parts or not all(p.isdigit() for p in parts):
        raise UsageError(f"{flag} '{text}': expected GPU indices such as 0,1 or 'all'")
    gpus = [int(p) for p in parts]
    if len(set(gpus)) != len(gpus):
        raise UsageError(f"{flag} '{text}' repeats a GPU; give each GPU once (several instances per GPU: --instances)")
    missing = [g for g in gpus if g >= visible]
    if missing:
        raise UsageError(f"{flag} {text}: GPU {missing[0]} does not exist; {seen}"
                         + (". Drop the flag to run on the CPU" if visible == 0 else ""))
    return gpus


def place(instances: int, gpus: Sequence[int]) -> list[int]:
    """The GPU of each of ``instances`` engine instances: round-robin over ``gpus``.

    Raises:
        UsageError: fewer than one instance, or no GPU to place them on.
    """
    if instances < 1:
        raise UsageError(f"need at least one instance, got {instances}")
    if not gpus:
        raise UsageError("no GPU to place the instances on; give GPU indices such as [0, 1]")
    return [gpus[i % len(gpus)] for i in range(instances)]


def device_options(engine: str, gpu: int) -> dict:
    """The ``trtflow.load`` option that puts an ``engine`` ("torch", "tensorrt", "ort") on ``gpu``.

    torch takes ``device="cuda:N"``, TensorRT the device index, ONNX Runtime the CUDA (or
    TensorRT) provider's ``device_id`` through ``device=N``.

    Raises:
        UsageError: ``gpu`` is not a GPU index, or an engine with no device option.
    """
    if isinstance(gpu, str) and gpu.strip().isdigit():
        gpu = int(gpu)
    if not is_count(gpu, 0):
        raise UsageError(f"gpu={gpu!r} is not a GPU: give a GPU index such as 0 or 1 (--gpus 0)")
    gpu = int(gpu)  # a numpy integer too
    if engine == "torch":
        return {"device": f"cuda:{gpu}"}
    if engine in ("tensorrt", "ort"):
        return {"device": gpu}
    raise UsageError(f"the {engine} engine cannot be placed on a GPU; use torch, tensorrt or ort")


class LeastLoaded:
    """Route work to the instance with the fewest items in flight (ties: the one used least, so
    equal instances take turns). Thread-safe.

    Args:
        instances: how many instances there are.
    """

    def __init__(self, instances: int):
        if instances < 1:
            raise UsageError(f"need at least one instance, got {instances}")
        self.in_flight = [0] * instances
        self.served = [0] * instances
        self._lock = threading.Lock()

    def acquire(self) -> int:
        """The index of the least-loaded instance, now counted as one more in flight."""
        with self._lock:
            index = min(range(len(self.in_flight)), key=lambda i: (self.in_flight[i], self.served[i], i))
            self.in_flight[index] += 1
            self.served[index] += 1
            return index

    def release(self, index: int) -> None:
        """One item of instance ``index`` is done."""
        with self._lock:
            if self.in_flight[index] <= 0:
                raise ValueError(f"instance {index} has nothing in flight")
            self.in_flight[index] -= 1

    @contextlib.contextmanager
    def use(self) -> Iterator[int]:
        """``with router.use() as i:`` acquire an instance and release it afterwards."""
        index = self.acquire()
        try:
            yield index
        finally:
            self.release(index)
