"""Which TensorRT is installed (full TensorRT 10/11 or TensorRT-RTX) and which GPU it targets.

``load_flavor`` imports the package; ``gpu_info`` asks the CUDA driver directly through ctypes
(no torch import, never raises), so both are cheap enough for ``runtime_usable``.
"""

from __future__ import annotations

import ctypes
import functools
import logging
import os
from dataclasses import dataclass
from types import ModuleType

from trtflow.errors import MissingDependencyError, UsageError

log = logging.getLogger(__name__)

FLAVOR_ENV = "TRTFLOW_TENSORRT"  # "tensorrt" or "tensorrt_rtx": which one to use when both are installed
FLAVORS = ("tensorrt", "tensorrt_rtx")

# Compute capabilities TensorRT-RTX 1.x runs engines on. Its runtime refuses others, e.g. on an
# H100: "cannot run on this GPU, which has compute capability 9.0. Supported: 8.0 8.6 8.9 12.0 12.1".
# Turing (7.5) runs engines built for it explicitly (ComputeCapability.SM75), which the builder
# asks for when the build machine's GPU is a Turing one.
RTX_RUNTIME_CCS = ((7, 5), (8, 0), (8, 6), (8, 9), (12, 0), (12, 1))
# Full TensorRT 10/11 runs on Turing (7.5) and newer.
TENSORRT_MIN_CC = (7, 5)


@dataclass(frozen=True)
class Flavor:
    """One importable TensorRT package.

    Attributes:
        name: "tensorrt" or "tensorrt_rtx".
        version: the package version, e.g. "10.13.0.35" or "1.7.1.116".
        trt: the imported module.
    """

    name: str
    version: str
    trt: ModuleType

    @property
    def major(self) -> int:
        return int(self.version.split(".")[0])

    @property
    def is_rtx(self) -> bool:
        return self.name == "tensorrt_rtx"

    @property
    def always_strongly_typed(self) -> bool:
        """TensorRT-RTX and TensorRT >= 11 have no precision builder flags: types come from the ONNX."""
        return self.is_rtx or self.major >= 11

    @property
    def label(self) -> str:
        return f"TensorRT-RTX {self.version}" if self.is_rtx else f"TensorRT {self.version}"

    def supports_cc(self, cc: tuple[int, int]) -> bool:
        """True when this flavor's runtime executes engines on a GPU of compute capability ``cc``."""
        return cc in RTX_RUNTIME_CCS if self.is_rtx else tuple(cc) >= TENSORRT_MIN_CC

    def to_dict(self) -> dict:
        return {"flavor": self.name, "version": self.version}


def _import(name: str) -> ModuleType | None:
    import importlib

    try:
        return importlib.import_module(name)
    except ImportError:
        if name == "tensorrt_rtx":  # the bindings wheel alone, without the metapackage
            try:
                return importlib.import_module("tensorrt_rtx_bindings")
            except ImportError:
                return None
        return None
    except Exception as exc:  # a broken install (missing libnvinfer) raises OSError and friends
        log.warning("importing %s failed: %s", name, exc)
        return None


@functools.lru_cache(maxsize=None)
def _cached_flavor(preferred: str | None) -> Flavor | None:
    order = (preferred,) if preferred else FLAVORS
    for name in order:
        mod = _import(name)
        if mod is not None:
            return Flavor(name, str(mod.__version__), mod)
    return None


def load_flavor(preferred: str | None = None) -> Flavor:
    """Import TensorRT: ``preferred``, else ``$TRTFLOW_TENSORRT``, else full TensorRT, then TensorRT-RTX.

    Raises:
        UsageError: ``preferred`` names no flavor.
        MissingDependencyError: neither package can be imported.
    """
    preferred = preferred or os.environ.get(FLAVOR_ENV) or None
    if preferred is not None and preferred not in FLAVORS:
        raise UsageError(f"unknown TensorRT flavor '{preferred}' (from {FLAVOR_ENV}?); choose one of {FLAVORS}")
    flavor = _cached_flavor(preferred)
    if flavor is None:
        wanted = preferred or "tensorrt or tensorrt_rtx"
        raise MissingDependencyError(
            f"building or running TensorRT engines needs {wanted}, which could not be imported. Install "
            'TensorRT-RTX with: pip install "trtflow[rtx]" (builds anywhere, runs on Ampere/Ada/Blackwell), '
            'or full TensorRT with: pip install "trtflow[tensorrt]"'
        )
    return flavor


def flavor_available() -> Flavor | None:
    """The flavor ``load_flavor`` would return, or None; never raises."""
    try:
        return load_flavor()
    except Exception:
        return None


@dataclass(frozen=True)
class GpuInfo:
    """A CUDA device as the driver reports it."""

    index: int
    name: str
    cc: tuple[int, int]

    def to_dict(self) -> dict:
        return {"index": self.index, "name": self.name, "compute_capability": f"{self.cc[0]}.{self.cc[1]}"}


@functools.lru_cache(maxsize=None)
def _libcuda():
    for lib in ("libcuda.so.1", "libcuda.so", "nvcuda.dll"):
        try:
            cuda = ctypes.CDLL(lib)
        except OSError:
            continue
        if cuda.cuInit(0) == 0:
            return cuda
        return None
    return None


@functools.lru_cache(maxsize=None)
def gpu_info(device: int = 0) -> GpuInfo | None:
    """Name and compute capability of CUDA device ``device``, or None when there is none; never raises."""
    try:
        cuda = _libcuda()
        if cuda is None:
            return None
        count = ctypes.c_int(0)
        if cuda.cuDeviceGetCount(ctypes.byref(count)) != 0 or device >= count.value:
            return None
        handle = ctypes.c_int(0)
        if cuda.cuDeviceGet(ctypes.byref(handle), device) != 0:
            return None
        name = ctypes.create_string_buffer(256)
        cuda.cuDeviceGetName(name, 256, handle)
        major, minor = ctypes.c_int(0), ctypes.c_int(0)
        cuda.cuDeviceGetAttribute(ctypes.byref(major), 75, handle)  # CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR
        cuda.cuDeviceGetAttribute(ctypes.byref(minor), 76, handle)  # ..._MINOR
        return GpuInfo(device, name.value.decode(errors="replace"), (major.value, minor.value))
    except Exception as exc:  # a driver too old for these symbols
        log.debug("no GPU information: %s", exc)
        return None


def target_of(device: int = 0) -> dict:
    """The build target recorded in the cache key and sidecar: this machine's GPU, or none."""
    gpu = gpu_info(device)
    return gpu.to_dict() if gpu else {"index": None, "name": "none (no CUDA GPU)", "compute_capability": None}


def describe_target(target: dict) -> str:
    cc = target.get("compute_capability")
    return f"{target.get('name')} (compute capability {cc})" if cc else str(target.get("name"))
