"""The CUDA operations the TensorRT runner needs, done through torch; the one seam of the runner.

The runner never calls ``torch.cuda`` itself. It asks a ``CudaOps`` for streams, device and host
buffers, staging copies and CUDA-graph capture, so the same bookkeeping can be driven by a test
double over host memory (``tests/fake_tensorrt.py``) where no GPU exists. ``runtime_blocker``
says why no TensorRT engine can execute here.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.util
from typing import Any, Callable, Iterator

from trtflow.backends.tensorrt.buffers import BufferPool, torch_pool
from trtflow.backends.tensorrt.flavor import flavor_available, gpu_info

ALIGNMENT = 256  # bytes: TensorRT requires I/O addresses given to setTensorAddress to be 256-byte aligned


def runtime_blocker(device: int = 0) -> str | None:
    """Why no TensorRT engine can execute on CUDA device ``device`` here, or None; never raises."""
    try:
        flavor = flavor_available()
        if flavor is None:
            return "neither tensorrt nor tensorrt_rtx can be imported"
        gpu = gpu_info(device)
        if gpu is None:
            return f"{flavor.label} is installed but there is no CUDA GPU {device} (no driver or no device)"
        if not flavor.supports_cc(gpu.cc):
            return f"{flavor.label} cannot execute on {gpu.name} (compute capability {gpu.cc[0]}.{gpu.cc[1]})"
        if importlib.util.find_spec("torch") is None:
            return "the TensorRT engine needs torch (CUDA memory and streams); it is not installed"
        import torch

        if not torch.cuda.is_available():
            return "torch cannot use the GPU (a CPU-only torch build?)"
        return None
    except Exception as exc:
        return f"checking the TensorRT runtime failed: {exc}"


@functools.lru_cache(maxsize=None)
def runtime_usable(device: int = 0) -> bool:
    """True only when a TensorRT flavor imports and can execute on CUDA GPU ``device`` (TensorRT-RTX:
    compute capability in its supported list). Cheap after the first call; never raises."""
    return runtime_blocker(device) is None


class CudaOps:
    """Streams, memory, staging and CUDA graphs on CUDA device ``index``, through torch.

    Args:
        index: the CUDA device index.
    """

    def __init__(self, index: int):
        import torch

        self.torch = torch
        self.index = index
        self.device = torch.device("cuda", index)

    def scope(self) -> Any:
        """A context manager making this device current (for context and stream creation)."""
        return self.torch.cuda.device(self.device)

    def new_stream(self) -> Any:
        return self.torch.cuda.Stream(self.device)

    @staticmethod
    def handle(stream: Any) -> int:
        """The ``cudaStream_t`` TensorRT takes."""
        return stream.cuda_stream

    @contextlib.contextmanager
    def on(self, stream: Any) -> Iterator[None]:
        """Run the body on ``stream`` after the caller's current stream's work; the caller's stream
        then waits for ``stream``, so results are ordered for the caller."""
        torch = self.torch
        with torch.cuda.device(self.device):
            current = torch.cuda.current_stream(self.device)
            stream.wait_stream(current)
            with torch.cuda.stream(stream):
                yield
            current.wait_stream(stream)

    def locate(self, t: Any) -> str:
        """Where a tensor lives: "host", "device" (this GPU), or another device's name."""
        if t.device.type == "cpu":
            return "host"
        return "device" if t.device == self.device else str(t.device)

    def keep_alive(self, t: Any, stream: Any) -> None:
        """Keep a caller's tensor memory from being reused before ``stream`` is done with it."""
        t.record_stream(stream)

    def pool(self) -> BufferPool:
        """Reusable device buffers (torch's caching allocator returns 512-byte aligned blocks)."""
        return torch_pool(str(self.device))

    def host_pool(self) -> BufferPool:
        """Reusable pinned host buffers, for I/O TensorRT keeps in host memory (shape tensors)."""
        return torch_pool("cpu", pin_memory=True)

    def empty_bytes(self, size: int) -> Any:
        """A device byte buffer of ``size`` bytes (an output allocator's memory)."""
        return self.torch.empty(max(int(size), 1), dtype=self.torch.uint8, device=self.device)

    def staging(self, stream: Any) -> Any:
        from trtflow.backends.staging import Staging

        return Staging(self.device, stream=stream)

    @staticmethod
    def synchronize(stream: Any) -> None:
        stream.synchronize()

    def capture(self, stream: Any, enqueue: Callable[[], Any]) -> tuple[Any, Any]:
        """Capture ``enqueue()`` on ``stream`` into a CUDA graph.

        Returns:
            ``(graph, what enqueue returned)``; the caller decides whether the graph is usable.

        Raises:
            RuntimeError: CUDA ended the capture with an error (torch raises it).
        """
        torch = self.torch
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, stream=stream, capture_error_mode="thread_local"):
            result = enqueue()
        return graph, result

    @staticmethod
    def replay(graph: Any) -> None:
        graph.replay()
