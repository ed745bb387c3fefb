"""One TensorRT execution context with its stream, buffers, output allocators and CUDA graphs.

A state serves one call at a time (``contexts.ContextPool`` hands states out). Each call:
switch the optimization profile if needed, set every input's shape and address, bind every
output (a pooled buffer, host memory for host-located outputs, or an ``IOutputAllocator`` for
data-dependent shapes), then ``execute_async_v3`` or replay a captured graph. Device memory,
streams and capture come from a ``CudaOps`` (``cuda.py``), so this file makes no CUDA call.
"""

from __future__ import annotations

import logging
from typing import Any

from trtflow.backends.tensorrt.buffers import volume
from trtflow.backends.tensorrt.cuda import ALIGNMENT
from trtflow.backends.tensorrt.graphs import MISSING, GraphCache
from trtflow.errors import EngineError, UsageError
from trtflow.spec import TensorSpec

log = logging.getLogger(__name__)


def output_allocator(trt: Any, ops: Any) -> Any:
    """An ``IOutputAllocator`` for one data-dependent output: grows a device byte buffer, records the shape."""

    class OutputAllocator(trt.IOutputAllocator):
        def __init__(self):
            trt.IOutputAllocator.__init__(self)
            self.buffer = None
            self.shape: tuple[int, ...] | None = None

        def _grow(self, size: int) -> int:
            if self.buffer is None or self.buffer.numel() < size:
                self.buffer = ops.empty_bytes(size)
            return self.buffer.data_ptr()

        def reallocate_output(self, tensor_name, memory, size, alignment):
            return self._grow(size)

        def reallocate_output_async(self, tensor_name, memory, size, alignment, stream):
            return self._grow(size)

        def notify_shape(self, tensor_name, shape):
            self.shape = tuple(int(d) for d in shape)

    return OutputAllocator()


class ExecutionState:
    """An execution context of ``engine`` on its own stream, with what its calls reuse.

    Args:
        engine: the deserialized ``ICudaEngine``.
        trt: the TensorRT module.
        ops: the ``CudaOps`` of the engine's device.
        outputs: the engine's output specs, in order.
        host_outputs: names of outputs TensorRT writes to host memory (``TensorLocation.HOST``).
    """

    def __init__(self, engine: Any, trt: Any, ops: Any, outputs: list[TensorSpec], host_outputs: frozenset[str]):
        self.trt, self.ops, self.outputs, self.host_outputs = trt, ops, outputs, host_outputs
        with ops.scope():
            self.context = engine.create_execution_context()
            if self.context is None:
                raise EngineError("TensorRT could not create an execution context (out of GPU memory?)")
            self.stream = ops.new_stream()
        self.handle = ops.handle(self.stream)
        self.profile: int | None = None
        self.profile_pending = False  # switched, and no plain enqueue has applied the switch yet
        self.chosen: tuple[tuple | None, int] = (None, 0)  # (input shapes, profile chosen for them) of the last call
        self.inputs = ops.pool()  # device copies of inputs that cannot be bound in place
        self.outputs_pool = ops.pool()
        self.host_pool = ops.host_pool() if host_outputs else None
        self.staging = ops.staging(self.stream)  # host <-> device, shared with the torch engine
        self.allocators: dict[str, Any] = {}
        self.graphs = GraphCache()

    # -- binding --------------------------------------------------------------------------
    def _set_profile(self, k: int) -> None:
        if self.profile == k:
            return
        try:
            ok = self.context.set_optimization_profile_async(k, self.handle)
        except Exception as exc:  # the Python bindings raise RuntimeError instead of returning False
            raise EngineError(f"TensorRT refused to switch to optimization profile {k}: {exc}") from exc
        if not ok:
            raise EngineError(f"TensorRT refused to switch to optimization profile {k}; run with -v for its log")
        self.profile = k
        self.profile_pending = True

    def _address(self, name: str, t: Any) -> None:
        if not self.context.set_tensor_address(name, t.data_ptr()):
            raise EngineError(f"TensorRT refused the address of '{name}' (0x{t.data_ptr():x}); run with -v for its log")

    def _bind_input(self, name: str, t: Any, where: str, shape: tuple[int, ...], copy: bool) -> Any:
        if where == "host":
            dev = self.staging.upload(name, t)  # pinned buffer, then an async copy on our stream
        elif where != "device":
            raise UsageError(
                f"input '{name}' is on {where} but the engine runs on {self.ops.device}; move it with "
                f".to('{self.ops.device}') or load the engine on that device"
            )
        elif t.is_contiguous() and t.data_ptr() % ALIGNMENT == 0 and not copy:
            self.ops.keep_alive(t, self.stream)  # zero copy: keep the caller's memory alive for our stream
            dev = t
        else:  # strided or not 256-byte aligned (x[1:]), or a CUDA graph's fixed address: copy
            dev = self.inputs.get(name, shape, str(t.dtype).replace("torch.", ""))
            dev.copy_(t, non_blocking=True)
        if not self.context.set_input_shape(name, shape):
            raise EngineError(f"TensorRT refused shape {shape} for input '{name}' in profile {self.profile}")
        self._address(name, dev)
        return dev

    def _bind_outputs(self, use_graph: bool) -> dict[str, Any]:
        outs: dict[str, Any] = {}
        for spec in self.outputs:
            shape = tuple(int(d) for d in self.context.get_tensor_shape(spec.name))
            if any(d < 0 for d in shape):
                if use_graph:
                    raise UsageError(
                        f"use_cuda_graph needs output shapes that follow the input shapes; output "
                        f"'{spec.name}' depends on the data (NMS/NonZero). Load with use_cuda_graph=False."
                    )
                if spec.name not in self.allocators:
                    alloc = output_allocator(self.trt, self.ops)
                    if not self.context.set_output_allocator(spec.name, alloc):
                        raise EngineError(f"TensorRT refused an output allocator for '{spec.name}'")
                    self.allocators[spec.name] = alloc
                continue
            pool = self.host_pool if spec.name in self.host_outputs else self.outputs_pool
            buf = pool.get(spec.name, shape, spec.dtype)
            self._address(spec.name, buf)
            outs[spec.name] = buf
        return outs

    # -- running --------------------------------------------------------------------------
    def run(self, feed: dict[str, Any], shapes: dict, k: int, use_graph: bool) -> dict[str, Any]:
        """Run one call in profile ``k``; torch outputs for device callers, numpy for host callers."""
        where = [self.ops.locate(t) for t in feed.values()]  # each input located once per call
        host_caller = "host" in where
        with self.ops.on(self.stream):
            self._set_profile(k)
            bound = {n: self._bind_input(n, t, w, shapes[n], copy=use_graph) for (n, t), w in zip(feed.items(), where)}
            outs = self._bind_outputs(use_graph)
            if use_graph:
                self._execute_graph((k, *shapes.items()), [*bound.values(), *outs.values()])
            else:
                self._enqueue()
            if self.allocators or self.host_outputs:
                self.ops.synchronize(self.stream)  # data-dependent shapes and host outputs are known now
                outs.update(self._allocated())
            if host_caller:  # through pinned buffers; numpy copies once the stream is done
                return self.staging.finish(
                    {s.name: outs[s.name] if s.name in self.host_outputs else self.staging.download(s.name, outs[s.name]) for s in self.outputs}
                )
            # a clone, so the next call does not overwrite what the caller holds
            return {s.name: outs[s.name].clone() for s in self.outputs}

    def _allocated(self) -> dict[str, Any]:
        import torch

        out = {}
        for spec in self.outputs:
            alloc = self.allocators.get(spec.name)
            if alloc is not None:
                dtype = getattr(torch, spec.dtype)
                shape = alloc.shape or (0,)
                nbytes = volume(shape) * dtype.itemsize
                out[spec.name] = alloc.buffer[:nbytes].view(dtype).view(shape)
        return out

    def _enqueue(self) -> None:
        if not self.context.execute_async_v3(self.handle):
            raise EngineError("TensorRT execute_async_v3 failed; run with -v for TensorRT's log")
        self.profile_pending = False  # TensorRT applies a profile switch on the next enqueue

    def _execute_graph(self, key: tuple, buffers: list[Any]) -> None:
        addresses = tuple(t.data_ptr() for t in buffers)
        graph = self.graphs.lookup(key, addresses)  # evicts a graph whose buffers were replaced
        if graph is not MISSING and graph is not None and not self.profile_pending:
            self.ops.replay(graph)
            return
        self._enqueue()  # applies a profile switch before any replay; the warm-up a capture needs
        if graph is MISSING:
            self.graphs.store(key, addresses, self._capture(key))

    def _capture(self, key: tuple) -> Any:
        """A graph of one enqueue, or None with the reason logged (that key then runs plainly)."""
        capturable = getattr(self.context, "is_stream_capturable", None)
        if capturable is not None and not capturable(self.handle):
            why = "TensorRT says this execution context cannot be captured on its stream (TensorRT-RTX: plans need REQUIRE_USER_ALLOCATION)"
        else:
            try:
                graph, ok = self.ops.capture(self.stream, lambda: self.context.execute_async_v3(self.handle))
                if ok:
                    return graph
                why = "capture failed: execute_async_v3 returned False while capturing (the graph would be empty)"
            except Exception as exc:  # CUDA invalidated the capture
                why = f"capture failed: {exc}"
        log.warning("CUDA graph not used for profile %d, shapes %s: %s; running by plain enqueue", key[0], key[1:], why)
        return None

    def close(self) -> None:
        self.graphs.clear()
        self.allocators.clear()
        self.inputs.clear()
        self.outputs_pool.clear()
        self.context = None
