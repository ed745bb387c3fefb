"""``BuildConfig``: what an engine build asks for, spelled like trtexec's flags."""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace

from trtflow.errors import UsageError
from trtflow.spec import Profile

DEFAULT_MAX_BATCH = 16  # upper bound of an inferred batch profile (min 1, opt = max)

# trtexec --memPoolSize names -> TensorRT MemoryPoolType members
MEM_POOLS = {
    "workspace": "WORKSPACE",
    "dlaSRAM": "DLA_MANAGED_SRAM",
    "dlaLocalDRAM": "DLA_LOCAL_DRAM",
    "dlaGlobalDRAM": "DLA_GLOBAL_DRAM",
    "tacticSharedMem": "TACTIC_SHARED_MEMORY",
}
_UNITS = {"B": 1, "K": 2**10, "M": 2**20, "G": 2**30}

# trtexec --hardwareCompatibilityLevel values -> HardwareCompatibilityLevel members
HARDWARE_LEVELS = {"none": "NONE", "ampere+": "AMPERE_PLUS", "samecomputecapability": "SAME_COMPUTE_CAPABILITY"}


@dataclass
class BuildConfig:
    """Options of one ONNX -> engine build; each field is the trtexec flag of the same meaning.

    Attributes:
        profiles: optimization profiles (``--minShapes/--optShapes/--maxShapes``, ``--profile``);
            empty: inferred for dynamic inputs (batch 1..``max_batch``), printed, never silently 1.
        fp16, bf16, int8, best: precision (``--fp16`` ...). On always strongly typed flavors
            (TensorRT >= 11, TensorRT-RTX) ``fp16`` converts the ONNX to FP16 first.
        strongly_typed: ``--stronglyTyped``: precision from the ONNX types only.
        mem_pool_size: pool name ("workspace", "tacticSharedMem", ...) -> bytes (``--memPoolSize``).
        builder_optimization_level: ``--builderOptimizationLevel`` (0..5), None for TensorRT's default.
        timing_cache_file: ``--timingCacheFile``: read before and written after the build.
        version_compatible: ``--versionCompatible``.
        hardware_compatibility_level: ``--hardwareCompatibilityLevel``: "none", "ampere+" or
            "sameComputeCapability".
        plugins: plugin libraries loaded before parsing (``--plugins``).
        max_batch: upper batch bound of an inferred profile.
        keep_io_types: with FP16 conversion, keep float32 model inputs and outputs.
        require_user_allocation: TensorRT-RTX's ``BuilderFlag.REQUIRE_USER_ALLOCATION``, which CUDA-graph
            capture needs there; the TensorRT engine asks for it when loaded with ``use_cuda_graph=True``.
    """

    profiles: list[Profile] = field(default_factory=list)
    fp16: bool = False
    bf16: bool = False
    int8: bool = False
    best: bool = False
    strongly_typed: bool = False
    mem_pool_size: dict[str, int] = field(default_factory=dict)
    builder_optimization_level: int | None = None
    timing_cache_file: str | None = None
    version_compatible: bool = False
    hardware_compatibility_level: str | None = None
    plugins: tuple[str, ...] = ()
    max_batch: int = DEFAULT_MAX_BATCH
    keep_io_types: bool = True
    require_user_allocation: bool = False

    def __post_init__(self) -> None:
        self.profiles = list(self.profiles)
        self.plugins = tuple(str(p) for p in self.plugins)
        unknown = [k for k in self.mem_pool_size if k not in MEM_POOLS]
        if unknown:
            raise UsageError(f"unknown memory pool(s) {unknown}; trtexec's pools are {list(MEM_POOLS)}")
        if self.hardware_compatibility_level is not None:
            hardware_level(self.hardware_compatibility_level)  # validates
        if self.builder_optimization_level is not None and not 0 <= self.builder_optimization_level <= 5:
            raise UsageError(f"--builderOptimizationLevel must be 0..5, got {self.builder_optimization_level}")
        if self.max_batch < 1:
            raise UsageError(f"max_batch must be >= 1, got {self.max_batch}")

    @property
    def precisions(self) -> list[str]:
        """The precision flags asked for, e.g. ["fp16"]; empty means FP32 (or the ONNX types)."""
        return [p for p in ("fp16", "bf16", "int8", "best") if getattr(self, p)]

    def for_cuda_graphs(self, rtx: bool) -> "BuildConfig":
        """This config for a plan that CUDA graphs will capture: with ``require_user_allocation`` on
        TensorRT-RTX (``rtx``), which captures only such plans; itself elsewhere."""
        return replace(self, require_user_allocation=True) if rtx else self

    def key_dict(self) -> dict:
        """Everything that changes the built engine, as JSON-ready data (the cache key uses it).

        The timing cache file only speeds the build up, so it is left out.
        """
        return {
            "profiles": [p.to_dict() for p in self.profiles],
            "precisions": self.precisions,
            "strongly_typed": self.strongly_typed,
            "mem_pool_size": dict(sorted(self.mem_pool_size.items())),
            "builder_optimization_level": self.builder_optimization_level,
            "version_compatible": self.version_compatible,
            "hardware_compatibility_level": self.hardware_compatibility_level,
            "plugins": list(self.plugins),
            "max_batch": self.max_batch,
            "keep_io_types": self.keep_io_types,
            # only when set, so the keys of plans built before this field existed stay valid
            **({"require_user_allocation": True} if self.require_user_allocation else {}),
        }


def parse_size(text: str, default_unit: str = "M") -> int:
    """trtexec sizes: ``4096`` (MiB), ``512K``, ``1.5G``, ``100B`` -> bytes.

    Raises:
        UsageError: not a number with an optional B/K/M/G suffix.
    """
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([BKMGbkmg]?)\s*", text)
    if not m:
        raise UsageError(f"bad size '{text}': expected a number with an optional suffix B, K, M or G (default MiB)")
    unit = (m.group(2) or default_unit).upper()
    return int(float(m.group(1)) * _UNITS[unit])


def parse_mem_pool_size(texts: str | list[str] | None) -> dict[str, int]:
    """``--memPoolSize workspace:4096,tacticSharedMem:48K`` -> pool name -> bytes (MiB default, as trtexec).

    Raises:
        UsageError: an entry without ``POOL:SIZE``, an unknown pool or a bad size.
    """
    if not texts:
        return {}
    out: dict[str, int] = {}
    for chunk in [texts] if isinstance(texts, str) else texts:
        for entry in chunk.split(","):
            if not entry.strip():
                continue
            name, sep, size = entry.strip().partition(":")
            if not sep:
                raise UsageError(f"bad --memPoolSize entry '{entry}': expected POOL:SIZE, e.g. workspace:4096")
            if name not in MEM_POOLS:
                raise UsageError(f"bad --memPoolSize pool '{name}': trtexec's pools are {', '.join(MEM_POOLS)}")
            out[name] = parse_size(size)
    return out


def hardware_level(text: str) -> str:
    """The HardwareCompatibilityLevel member name for a trtexec value ("ampere+" -> "AMPERE_PLUS").

    Raises:
        UsageError: an unknown value.
    """
    key = text.strip().lower().replace("_", "")
    if key not in HARDWARE_LEVELS:
        raise UsageError(
            f"bad --hardwareCompatibilityLevel '{text}': expected none, ampere+ or sameComputeCapability"
        )
    return HARDWARE_LEVELS[key]
