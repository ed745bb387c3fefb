"""The configurations each engine offers, in the order to try them.

torch (CUDA): per precision, eager, eager + CUDA graphs (also channels-first, for conv nets),
cuDNN fused conv + BN + ReLU + graphs (models with batch norms), torch.compile + graphs,
compile + fusions + graphs (these compile with frozen weights), the reduce-overhead mode (its own
CUDA graphs; weights not frozen: ``torch.compile(model, mode="reduce-overhead")`` as users call it,
so the plain recipe is always among the candidates), each compile + graphs again with Inductor's
coordinate-descent tuning of its Triton kernels ("+cdt", tried only for the compile that is the
fastest configuration so far), max-autotune-no-cudagraphs + graphs (frozen) and the plain
max-autotune mode (``torch.compile(model, mode="max-autotune")``, not frozen). FP8 is bfloat16
with ``nn.Linear`` layers on FP8 GEMMs.
torch (CPU): eager, channels-last, torch.compile. INT8 has no torch path here (ONNX Q/DQ engines run it).
ort: provider lists (CPU, and CUDA where installed) x the FP32, FP16 (surgeon conversion) and INT8
(Q/DQ, calibrated) models x graph optimization levels x intra-op thread counts.
tensorrt: precision sets x builder optimization levels.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Sequence

from trtflow.errors import UsageError

PRECISIONS = ("fp32", "fp16", "bf16", "int8", "fp8")
ORT_LEVELS = ("all", "extended", "basic")
TRT_LEVELS = (3, 5)
CLEAR = 1.1  # a measured speed ratio beyond which ``prefer`` reorders the fused compiles
# relative build cost: orders the search and lets the budget skip what cannot finish. A compile
# cannot be stopped once started, so max-autotune's is the largest ratio of a cold compile to the
# same model's reduce-overhead compile measured on an H200: 12x (ViT-B/16), 22x (ResNet-50), 32x
# (ConvNeXt-T at batch 256, alone on the machine: 371 s against 11.7 s); with Inductor's autotuning
# already cached it was 7-11x. In plain-compile units (reduce-overhead counts 1.2): 32 x 1.2 = 38.
# Underestimating it would start compiles that overrun the budget.
# Coordinate-descent tuning ("cdt") times each Triton kernel's neighbouring block sizes: its compile
# took 4.9x the plain one on EfficientNet-B0 at batch 64 on an H200 (93 s against 19 s), 2.5x on
# MobileNetV3-Large at 256.
COST = {"eager": 0.1, "graphs": 0.3, "compile": 1.0, "reduce-overhead": 1.2, "cdt": 5.0, "max-autotune": 38.0}
CDT = {"coordinate_descent_tuning": True}  # the Inductor option a "+cdt" configuration adds


@dataclass
class Candidate:
    """One configuration to try.

    Attributes:
        name: shown in the table.
        engine: "torch", "ort" or "tensorrt".
        precision: one of PRECISIONS.
        options: engine options (JSON-able) that make it.
        variant: the model it runs: "fp32", "fp16", "int8" (ONNX conversions) or "fp8" (torch FP8 linears).
        cost: relative build cost (compile-heavy ones last; the budget skips those that cannot finish).
        kind: "eager", "graphs", "compile", "reduce-overhead", "cdt" or "max-autotune" (torch), "session" (ort),
            "build" (tensorrt).
        refines: the configuration this one retunes (a "+cdt" compile); tried only when that one is
            the fastest measured so far.
    """

    name: str
    engine: str
    precision: str
    options: dict = field(default_factory=dict)
    variant: str = "fp32"
    cost: float = 0.1
    kind: str = "eager"
    refines: str | None = None


@dataclass
class Skip:
    """A configuration (or group) not tried, and why."""

    name: str
    precision: str
    reason: str


def check_precisions(precisions: Sequence[str] | str) -> list[str]:
    """The precisions asked for, lower case, each once (a string: comma-separated, as on the command line)."""
    if isinstance(precisions, str):  # "fp16" or "fp32,fp16", not a sequence of characters
        precisions = [p for p in precisions.split(",") if p.strip()]
    out = []
    for p in precisions:
        p = p.strip().lower()
        if p not in PRECISIONS:
            raise UsageError(f"precision '{p}': choose from {', '.join(PRECISIONS)}")
        if p not in out:
            out.append(p)
    if not out:
        raise UsageError("give at least one precision, e.g. fp32,fp16")
    return out


def _order(precisions: list[str]) -> list[str]:
    """Lower precisions first: the likely winners set the bar that prunes the rest early."""
    rank = {"fp8": 0, "int8": 1, "fp16": 2, "bf16": 3, "fp32": 4}
    return sorted(precisions, key=lambda p: rank[p])


def torch_space(precisions: Sequence[str], cuda: bool, conv: bool, batchnorm: bool, fp8: str | None,
                linear_heavy: bool = True,
                keep_io_types: bool = True) -> tuple[list[Candidate], list[Skip]]:
    """Torch configurations, in the order ``likely_first`` gives them.

    Args:
        precisions: asked-for precisions.
        cuda: the engine runs on a CUDA GPU.
        conv: the model has 2-D convolutions and 4-D inputs (channels-last applies).
        batchnorm: the model has conv + batch norm pairs (cuDNN fusions apply).
        fp8: None when FP8 applies, else why not.
        linear_heavy: most of the model's weights are in linear layers FP8 GEMMs take (FP8 can pay).
        keep_io_types: False: reduced-precision configurations take and return their own dtype
            (``keep_io_types=False`` in their options).
    """
    cands, skips = [], []
    for p in _order(list(precisions)):
        if p == "int8":
            skips.append(Skip("int8", p, "skipped: the torch engine has no INT8 path; INT8 runs as ONNX Q/DQ "
                                         "(--engine ort or tensorrt)"))
            continue
        if p == "fp8" and fp8:
            skips.append(Skip("fp8", p, f"skipped: {fp8}"))
            continue
        dtype = "bf16" if p == "fp8" else p
        variant = "fp8" if p == "fp8" else "fp32"
        cl = {"channels_last": True} if conv else {}
        suffix = " cl" if conv else ""
        io = {} if keep_io_types or p == "fp32" else {"keep_io_types": False}

        def add(label, kind, **opts):
            cands.append(Candidate(f"{p} {label}", "torch", p, {"dtype": dtype, **opts, **io}, variant, COST[kind], kind))
            if kind == "compile" and cuda:  # the same compile with Inductor's kernel tuning, after it
                cands.append(Candidate(f"{p} {label.removesuffix(suffix)}+cdt{suffix}", "torch", p,
                                       {"dtype": dtype, **opts, **io, "inductor": dict(CDT)}, variant, COST["cdt"],
                                       "cdt", refines=f"{p} {label}"))

        if not cuda:
            add("eager", "eager")
            if conv:
                add("eager cl", "eager", channels_last=True)
            add("compile" + suffix, "compile", compile="default", **cl)
            continue
        add("eager" + suffix, "eager", **cl)
        add("eager+graphs" + suffix, "graphs", cuda_graphs=True, **cl)
        if conv:
            add("eager+graphs", "graphs", cuda_graphs=True)
        if batchnorm and p != "fp8":
            add("fused+graphs" + suffix, "graphs", cuda_graphs=True, fuse=True, **cl)
        add("compile+graphs" + suffix, "compile", compile="default", cuda_graphs=True, **cl)
        if batchnorm and p != "fp8":
            add("compile+fused+graphs" + suffix, "compile", compile="default", cuda_graphs=True, fuse=True, **cl)
        add("reduce-overhead" + suffix, "reduce-overhead", compile="reduce-overhead", freeze=False, **cl)
        add("max-autotune+graphs" + suffix, "max-autotune", compile="max-autotune", cuda_graphs=True, **cl)
        add("max-autotune" + suffix, "max-autotune", compile="max-autotune", freeze=False, **cl)
    if not cuda:
        skips.append(Skip("CUDA graphs, cuDNN fusions, reduce-overhead, max-autotune", "-",
                          "skipped: they need a CUDA GPU; the torch engine runs on the CPU here"))
    return likely_first(cands, linear_heavy), skips


def likely_first(cands: list[Candidate], linear_heavy: bool = True) -> list[Candidate]:
    """Torch candidates in the order to try them, so a tight budget reaches the likely winner.

    1. Everything that builds in seconds (eager, eager + CUDA graphs, cuDNN fusions without
       compiling), cheapest first: these set the bar that prunes the rest, and tell whether the
       fusions pay on this model (``prefer`` reorders the compiles by that once measured).
    2. Compiles: for models with batch norms, compile + fusions + graphs first (against plain
       reduce-overhead at batch 256 on an H200: 1.39x on ResNet-50, 1.22x on EfficientNet-B0,
       1.16x on MobileNetV3-Large, 1.17x on RegNetY-1.6GF; grouped and depthwise convolutions keep
       their ReLU outside cuDNN, see ``fuse_conv_bn_act``); then
       the reduce-overhead mode, the plain recipe (``torch.compile(model, mode="reduce-overhead")``),
       so a tight budget still times what users would run without trtflow; then compile + graphs
       (frozen weights); then the "+cdt" retuning of whichever compile was fastest (about 1 % on
       three of four models on an H200, 3 % slower on MobileNetV3-Large); max-autotune last of all, frozen with the engine's graphs first, then the
       plain ``mode="max-autotune"`` (it can reuse the autotuning the first one cached). Within a
       step: the FP16/BF16/FP32 precisions before FP8 (the FP8 transform adds a quantization per
       linear and may fail the bound; FP16 is the safer likely winner), lower precisions first.
    3. FP8 candidates of a model whose weights are mostly elsewhere (a conv net with an FP8-able
       classifier layer): after everything else, since FP8 GEMMs speed up only the linear layers.

    Args:
        cands: the candidates (any order).
        linear_heavy: most weights are in FP8-able linear layers.
    """
    rank = {"fp8": 4, "int8": 0, "fp16": 1, "bf16": 2, "fp32": 3}

    def key(c: Candidate) -> tuple:
        fused, cf = bool(c.options.get("fuse")), not c.options.get("channels_last")
        if c.variant == "fp8" and not linear_heavy:
            return (2, c.cost, rank[c.precision], int(fused), int(cf))
        if c.cost < 1:  # channels-last before channels-first: the layout cuDNN and Inductor prefer for conv nets
            return (0, c.cost, rank[c.precision], int(fused), int(cf))
        step = {"compile": 2, "reduce-overhead": 1, "cdt": 3}.get(c.kind, 4)
        if c.kind == "compile" and fused:
            step = 0
        elif c.kind == "max-autotune" and not c.options.get("cuda_graphs"):
            step = 5  # the plain mode after the frozen one, whose cached autotuning it can reuse
        return (1, step, rank[c.precision], int(not fused), int(cf))

    return sorted(cands, key=key)


def default_threads() -> list[int]:
    cores = os.cpu_count() or 1
    return sorted({1, max(1, cores // 2), cores})


def default_providers() -> list[list[str]]:
    """CPU, plus CUDA where this onnxruntime has the CUDA provider."""
    import onnxruntime

    out = [["cpu"]]
    if "CUDAExecutionProvider" in onnxruntime.get_available_providers():
        out.append(["cuda", "cpu"])
    return out


def ort_space(precisions: Sequence[str], threads: Sequence[int] | None = None, levels: Sequence[str] = ORT_LEVELS,
              providers: Sequence[Sequence[str]] | None = None) -> tuple[list[Candidate], list[Skip]]:
    """ONNX Runtime configurations: provider list x model variant x graph optimization level x threads."""
    cands, skips = [], []
    threads = sorted(set(threads or default_threads()))  # each configuration once: repeats would share a name
    levels = list(dict.fromkeys(levels))
    unique: dict[tuple, list[str]] = {}
    for prov in providers or default_providers():
        unique.setdefault(tuple(p.lower() for p in prov), list(prov))
    providers = list(unique.values())
    for p in _order(list(precisions)):
        if p in ("bf16", "fp8"):
            skips.append(Skip(p, p, f"skipped: trtflow makes no {p} ONNX model (ONNX Runtime's CPU provider has no {p} kernels)"))
            continue
        for prov in providers:
            label = "" if providers == [["cpu"]] else f" {'+'.join(prov)}"
            for level in levels:
                for t in sorted(threads, reverse=True):
                    cands.append(Candidate(f"{p}{label} opt={level} threads={t}", "ort", p,
                                           {"providers": prov, "threads": t, "optimization": level}, p, 0.1, "session"))
    return cands, skips


def tensorrt_space(precisions: Sequence[str], levels: Sequence[int] = TRT_LEVELS,
                   strongly_typed: bool = False) -> tuple[list[Candidate], list[Skip]]:
    """TensorRT configurations: precision flags x builder optimization level (INT8 from a Q/DQ model).

    Args:
        precisions: asked-for precisions.
        levels: builder optimization levels.
        strongly_typed: the flavor builds strongly typed networks (TensorRT-RTX, TensorRT 11), which
            take no precision builder flags: INT8 comes from the Q/DQ model alone, FP16 from the
            ONNX converted before parsing, and BF16 has no path.
    """
    cands, skips = [], []
    levels = list(dict.fromkeys(levels))
    for p in _order(list(precisions)):
        if p == "fp8":
            skips.append(Skip(p, p, "skipped: FP8 needs an FP8 Q/DQ ONNX model; trtflow makes INT8 Q/DQ only"))
            continue
        if p == "bf16" and strongly_typed:
            skips.append(Skip(p, p, "skipped: this TensorRT builds strongly typed networks (no BF16 builder flag) "
                                    "and trtflow makes no BF16 ONNX model"))
            continue
        flags = {"fp32": {}, "fp16": {"fp16": True}, "bf16": {"bf16": True},
                 "int8": {} if strongly_typed else {"int8": True, "fp16": True}}[p]
        for level in levels:
            cands.append(Candidate(f"{p} opt-level={level}", "tensorrt", p,
                                   {"build": {**flags, "builder_optimization_level": level}},
                                   "int8" if p == "int8" else "fp32", 1.0, "build"))
    return cands, skips


def prefer(remaining: list[Candidate], speeds: dict[str, float]) -> list[Candidate]:
    """Swap a fused compile variant with its plain twin once measurements say which wins, keeping
    every other position of the order: when ``fused+graphs`` and ``eager+graphs`` of a precision and
    layout are timed, the fused compile goes first when fusing won clearly (by ``CLEAR``), after the
    plain one when it lost clearly; a closer result keeps the order (EfficientNet-B0 on an H200:
    eager fusions 0.95x, compiled fusions 1.26x).

    Args:
        remaining: candidates not tried yet, in the order to try them.
        speeds: configuration name -> throughput measured so far.
    """
    def fused_won(cand: Candidate) -> bool | None:
        layout = " cl" if cand.options.get("channels_last") else ""
        fused, plain = speeds.get(f"{cand.precision} fused+graphs{layout}"), speeds.get(f"{cand.precision} eager+graphs{layout}")
        if fused is None or plain is None or plain / CLEAR <= fused <= plain * CLEAR:
            return None
        return fused > plain

    def twin_of(cand: Candidate, pool: list[Candidate]) -> int | None:
        return next((j for j, d in enumerate(pool) if d.engine == "torch" and d.kind == cand.kind
                     and d.precision == cand.precision and not d.options.get("fuse")
                     and bool(d.options.get("channels_last")) == bool(cand.options.get("channels_last"))), None)

    out = list(remaining)
    for i in range(len(out)):
        cand = out[i]
        if cand.engine != "torch" or cand.kind != "compile" or not cand.options.get("fuse"):
            continue
        won, j = fused_won(cand), twin_of(cand, out)
        if won is not None and j is not None and (j < i if won else i < j):
            out[i], out[j] = out[j], out[i]
    return out
