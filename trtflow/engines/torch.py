"""PyTorch engine: an ``nn.Module`` (eager or ``torch.compile``), a ``torch.export`` program, or an
AOTInductor ``.pt2`` package, behind the engine contract.

Zero-copy: tensors already on the engine's GPU (torch, cupy, any DLPack producer) are used in
place and outputs stay there; host arrays go through reusable pinned buffers with async copies
on the engine's stream and come back as numpy. With ``cuda_graphs=True`` each new input shape
is captured once (lazily, at most ``max_graphs`` shapes, like TensorRT profiles) and replayed;
its outputs are then engine-owned buffers that the next call of that shape overwrites.
"""

from __future__ import annotations

import base64
import inspect
import json
import logging
import os
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from trtflow.deps import require
from trtflow.engines.base import Engine
from trtflow.errors import EngineError, ModelLoadError, UsageError
from trtflow.spec import Bounds, Shape, TensorSpec, make_profile

log = logging.getLogger(__name__)

PRECISIONS = {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16"}
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune")
MAX_GRAPHS = 8
METADATA_KEY = "trtflow.specs"  # AOTInductor package metadata holding the engine specs (base64 of JSON: no quotes
# to escape in the generated C++)


class TorchEngine(Engine):
    """Runs a PyTorch model.

    Args:
        model: an ``nn.Module`` (needs ``example_inputs``), a ``torch.export.ExportedProgram``,
            or the path of an AOTInductor package (``.pt2``, from ``build_aoti``).
        example_inputs: name -> tensor, or tensors in ``forward`` order; they fix the input
            names, dtypes and static dims. A mapping is passed to ``forward`` as keywords.
        input_names: names for positional example inputs (default: ``forward``'s parameter names).
        output_names: names of the outputs (default: ``output_0``, ... for tuples; a dict keeps its keys).
        dynamic: input name -> {dim index: dim name}, e.g. ``{"x": {0: "batch"}}``.
        min_shapes, max_shapes: input name -> shape; the bounds checked before running and the
            range of shapes given CUDA graphs and exported packages.
        dtype: compute precision "fp32", "fp16" or "bf16"; floating inputs take this dtype.
        channels_last: store 4-d weights and example inputs channels-last (faster convolutions).
        compile: None (eager) or a ``torch.compile`` mode: "default", "reduce-overhead", "max-autotune".
            Compiled modules are frozen (weights folded as constants).
        cuda_graphs: capture one CUDA graph per input shape and replay it.
        device: CUDA device index or name ("cpu", "cuda:1"); default the current CUDA device,
            else the CPU.
        max_graphs: most CUDA graphs kept; further shapes run without a graph (logged once).
        cudnn_benchmark: set ``torch.backends.cudnn.benchmark`` (process-wide) on CUDA.
        fuse: fold batch norms into convolutions and run conv (+ residual add) + ReLU as cuDNN
            fused convolutions (CUDA only; see ``trtflow.engines.torch_fuse``).

    Raises:
        UsageError: bad options (unknown precision or compile mode, CUDA graphs on the CPU, ...).
        ModelLoadError: a missing or unreadable ``.pt2``, or a module without example inputs.
    """

    name = "torch"
    native = "torch"

    def __init__(
        self,
        model: Any,
        example_inputs: Mapping[str, Any] | Sequence[Any] | None = None,
        *,
        input_names: Sequence[str] | None = None,
        output_names: Sequence[str] | None = None,
        dynamic: Mapping[str, Mapping[int, str]] | None = None,
        min_shapes: Mapping[str, Shape] | None = None,
        max_shapes: Mapping[str, Shape] | None = None,
        dtype: str = "fp32",
        channels_last: bool = False,
        compile: str | None = None,
        cuda_graphs: bool = False,
        device: int | str | None = None,
        max_graphs: int = MAX_GRAPHS,
        cudnn_benchmark: bool = True,
        fuse: bool = False,
    ):
        torch = require("torch", "the torch engine")
        if dtype not in PRECISIONS:
            raise UsageError(f"dtype '{dtype}' is not supported; choose one of {list(PRECISIONS)}")
        if compile is not None and compile not in COMPILE_MODES:
            raise UsageError(f"compile mode '{compile}' is not supported; choose None or one of {list(COMPILE_MODES)}")
        self.device = _device(torch, device)
        if (cuda_graphs or fuse) and self.device.type != "cuda":
            raise UsageError(f"{'cuda_graphs' if cuda_graphs else 'fuse'}=True needs a CUDA device; this engine runs on the CPU")
        if self.device.type == "cuda" and cudnn_benchmark:
            torch.backends.cudnn.benchmark = True
        self.precision = dtype
        self.compile_mode = compile
        self.cuda_graphs = cuda_graphs
        self.max_graphs = max_graphs

        if isinstance(model, (str, os.PathLike)):
            if compile is not None:
                raise UsageError("an AOTInductor package is compiled already; load it with compile=None")
            fn, inputs, outputs, self._kw = _load_package(torch, Path(model), self.device)
            self._flatten = _flattener("seq", [s.name for s in outputs], None)
            self.module = None
        else:
            module, examples, names, self._kw = _module_and_examples(torch, model, example_inputs, input_names)
            module, examples = _place(torch, module, examples, self.device, dtype, channels_last, fuse)
            inputs = _input_specs(names, examples, dynamic or {}, min_shapes or {}, max_shapes or {})
            outputs, self._flatten = _probe_outputs(torch, module, examples, inputs, output_names, self._kw)
            self.module = module
            self.example_inputs = dict(zip(names, examples))
            fn = _compile(torch, module, compile, cuda_graphs) if compile else module
        super().__init__(inputs, outputs)
        self.fn: Callable = fn
        self._index = self.device.index if self.device.type == "cuda" else -1
        self._staging = None
        self._graphs: dict[tuple, _Graph] = {}
        self._pool = None
        self._graph_limit_logged = False
        log.debug("torch engine on %s, %s, compile=%s, cuda_graphs=%s", self.device, dtype, compile, cuda_graphs)

    # -- running --------------------------------------------------------------------------
    def _infer(self, feed: dict[str, Any]) -> dict[str, Any]:
        if self._index < 0:
            return self._run(feed)
        first = feed[self.inputs[0].name] if len(feed) > 1 else next(iter(feed.values()))
        if first.get_device() == self._index and (len(feed) == 1 or self._all_on_device(feed)):
            return self._run_graph(feed) if self.cuda_graphs else self._run(feed)
        return self._run_from_host(feed)

    def _run(self, feed: dict[str, Any]) -> dict[str, Any]:
        import torch

        try:
            with torch.no_grad():
                out = self.fn(**feed) if self._kw else self.fn(*feed.values())
        except Exception as exc:
            raise EngineError(f"the torch engine failed while running: {type(exc).__name__}: {exc}") from exc
        return self._flatten(out)

    def _run_graph(self, feed: dict[str, Any]) -> dict[str, Any]:
        key = tuple([t.shape for t in feed.values()])
        graph = self._graphs.get(key)
        if graph is None:
            graph = self._capture(key, feed)
            if graph is None:
                return self._run(feed)
        for name, t in feed.items():
            static = graph.inputs[name]
            if static.data_ptr() != t.data_ptr():
                static.copy_(t)
        graph.graph.replay()
        return dict(graph.outputs)

    def _run_from_host(self, feed: dict[str, Any]) -> dict[str, Any]:
        import torch

        for name, t in feed.items():
            if t.device.type == "cuda":
                raise UsageError(
                    f"input '{name}' is on {t.device} but the engine runs on {self.device}; "
                    f"move it with .to('{self.device}') or load the engine with device={t.device.index}"
                )
        if self._staging is None:
            from trtflow.engines.staging import Staging

            self._staging = Staging(self.device)
        staging = self._staging
        device_feed = {name: staging.upload(name, t) for name, t in feed.items()}
        with torch.cuda.stream(staging.stream):
            out = self._run_graph(device_feed) if self.cuda_graphs else self._run(device_feed)
            pinned = {name: staging.download(name, t) for name, t in out.items()}
        return staging.finish(pinned)

    def _all_on_device(self, feed: dict[str, Any]) -> bool:
        return all(t.get_device() == self._index for t in feed.values())

    def _capture(self, key: tuple, feed: dict[str, Any]) -> "_Graph | None":
        import torch

        if len(self._graphs) >= self.max_graphs:
            if not self._graph_limit_logged:
                log.warning(
                    "torch engine: %d CUDA graphs captured already (max_graphs); shape %s runs without a graph",
                    self.max_graphs, [tuple(s) for s in key],
                )
                self._graph_limit_logged = True
            return None
        static = {name: t.clone() for name, t in feed.items()}
        side = torch.cuda.Stream(self.device)
        side.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(side):
            for _ in range(3):  # compile, autotune and allocate outside the capture
                self._run(static)
        torch.cuda.current_stream(self.device).wait_stream(side)
        torch.cuda.synchronize(self.device)
        if self._pool is None:
            self._pool = torch.cuda.graph_pool_handle()
        graph = torch.cuda.CUDAGraph()
        try:
            with torch.no_grad(), torch.cuda.graph(graph, pool=self._pool):
                outputs = self._run(static)
        except Exception as exc:
            raise EngineError(
                f"capturing a CUDA graph for shapes {[tuple(s) for s in key]} failed ({exc}); "
                "the model may synchronize with the host or allocate on the CPU. Load it with cuda_graphs=False."
            ) from exc
        entry = _Graph(graph, static, outputs)
        self._graphs[key] = entry
        log.debug("captured a CUDA graph for %s", [tuple(s) for s in key])
        return entry

    def close(self) -> None:
        self._graphs.clear()
        self._staging = None
        self.fn = None
        super().close()


class _Graph:
    __slots__ = ("graph", "inputs", "outputs")

    def __init__(self, graph, inputs: dict, outputs: dict):
        self.graph, self.inputs, self.outputs = graph, inputs, outputs


# -- construction helpers ---------------------------------------------------------------------
def _device(torch, device: int | str | None):
    if device is None:
        return torch.device("cuda", torch.cuda.current_device()) if torch.cuda.is_available() else torch.device("cpu")
    dev = torch.device(f"cuda:{device}" if isinstance(device, int) else device)
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise UsageError(f"device '{device}' asked for, but this PyTorch sees no CUDA GPU; use device='cpu'")
        dev = torch.device("cuda", dev.index if dev.index is not None else torch.cuda.current_device())
        if dev.index >= torch.cuda.device_count():
            raise UsageError(f"device {dev} does not exist; this machine has {torch.cuda.device_count()} CUDA device(s)")
    return dev


def _module_and_examples(torch, model, example_inputs, input_names):
    """(module, example tensors, input names, call-with-keywords) for a module or an exported program."""
    if isinstance(model, torch.export.ExportedProgram):
        if example_inputs is None:
            args, kwargs = model.example_inputs or ((), {})
            example_inputs = {**dict(zip(model.graph_signature.user_inputs, args)), **kwargs}
        names = list(input_names or model.graph_signature.user_inputs)
        module = model.module()
        tensors = list(example_inputs.values()) if isinstance(example_inputs, Mapping) else list(example_inputs)
        return module, tensors, names, False
    if not isinstance(model, torch.nn.Module):
        raise ModelLoadError(
            f"the torch engine takes an nn.Module, an ExportedProgram or a .pt2 path; got {type(model).__name__}"
        )
    if example_inputs is None:
        raise ModelLoadError(
            "an nn.Module needs example_inputs (name -> tensor, or tensors in forward order) to fix the input specs"
        )
    if isinstance(example_inputs, Mapping):
        return model, list(example_inputs.values()), list(input_names or example_inputs), True
    tensors = [example_inputs] if isinstance(example_inputs, torch.Tensor) else list(example_inputs)
    if input_names is None:
        params = [p for p in inspect.signature(model.forward).parameters.values()
                  if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
        input_names = [p.name for p in params[: len(tensors)]]
    if len(input_names) != len(tensors):
        raise UsageError(f"{len(input_names)} input names {list(input_names)} for {len(tensors)} example inputs")
    return model, tensors, list(input_names), False


def _place(torch, module, examples, device, precision: str, channels_last: bool, fuse: bool = False):
    """Move the module and examples to the device, fuse (in fp32), then cast and lay out."""
    want = getattr(torch, PRECISIONS[precision])
    try:
        module = module.eval()
    except NotImplementedError:  # an exported program's module: inference behaviour was fixed at export
        pass
    module = module.to(device)
    if fuse:
        from trtflow.engines.torch_fuse import fuse_conv_bn_act

        module = fuse_conv_bn_act(module)
    if precision != "fp32":
        module = module.to(want)
    if channels_last:
        module = module.to(memory_format=torch.channels_last)
    placed = []
    for t in examples:
        t = torch.as_tensor(t).to(device)
        if t.is_floating_point():
            t = t.to(want)
        if channels_last and t.dim() == 4:
            t = t.contiguous(memory_format=torch.channels_last)
        placed.append(t)
    return module, placed


def _input_specs(names, examples, dynamic, min_shapes, max_shapes) -> list[TensorSpec]:
    from trtflow.arrays import dtype_name

    unknown = [n for n in [*dynamic, *min_shapes, *max_shapes] if n not in names]
    if unknown:
        raise UsageError(f"dynamic/min/max shapes name unknown inputs {sorted(set(unknown))}; inputs: {names}")
    specs = []
    for name, t in zip(names, examples):
        example = tuple(int(d) for d in t.shape)
        dims = dict(dynamic.get(name, {}))
        bad = [i for i in dims if not 0 <= i < len(example)]
        if bad:
            raise UsageError(f"dynamic dims {bad} of input '{name}' do not exist; its example shape is {example}")
        bounds = None
        if name in min_shapes or name in max_shapes:
            low = tuple(1 if i in dims else d for i, d in enumerate(example))  # dynamic dims start at 1
            profile = make_profile({name: min_shapes.get(name, low)}, {name: example}, {name: max_shapes.get(name, example)})
            bounds = profile.bounds(name)
            for i, (lo, hi) in enumerate(zip(bounds.min, bounds.max)):
                if lo != hi and i not in dims:
                    dims[i] = "?"
        shape = tuple(dims.get(i, d) for i, d in enumerate(example))
        specs.append(TensorSpec(name, dtype_name(t.dtype), shape, bounds))
    return specs


def _flattener(kind: str, names: list[str], keys: list | None) -> Callable[[Any], dict]:
    if kind == "tensor":
        only = names[0]
        return lambda out: {only: out}
    if kind == "dict":
        pairs = list(zip(names, keys))
        return lambda out: {name: out[key] for name, key in pairs}
    return lambda out: dict(zip(names, out))


def _probe_outputs(torch, module, examples, inputs, output_names, kw):
    """Run the module once (twice with dynamic dims) to name and type its outputs."""
    names = [s.name for s in inputs]

    def call(tensors):
        with torch.no_grad():
            return module(**dict(zip(names, tensors))) if kw else module(*tensors)

    try:
        out = call(examples)
    except Exception as exc:
        raise ModelLoadError(f"the model failed on its example inputs: {type(exc).__name__}: {exc}") from exc
    if isinstance(out, torch.Tensor):
        kind, keys, values = "tensor", None, [out]
    elif isinstance(out, Mapping):
        kind, keys, values = "dict", list(out), list(out.values())
    elif isinstance(out, (tuple, list)):
        kind, keys, values = "seq", None, list(out)
    else:
        raise ModelLoadError(f"the model returned {type(out).__name__}; expected a tensor, a tuple/list or a dict of tensors")
    if output_names is not None and len(output_names) != len(values):
        raise UsageError(f"{len(output_names)} output names {list(output_names)} for {len(values)} outputs")
    out_names = list(output_names or (keys if kind == "dict" else (["output"] if kind == "tensor" else
                                                                      [f"output_{i}" for i in range(len(values))])))
    shapes = [tuple(int(d) for d in v.shape) for v in values]
    second = _second_shapes(inputs, examples)
    if second is not None:
        moved = [e.new_zeros(s) if not e.is_floating_point() else torch.randn(s, dtype=e.dtype, device=e.device)
                 for e, s in zip(examples, second)]
        try:
            other = call(moved)
        except Exception as exc:
            raise UsageError(
                f"the model failed at input shapes {second}, inside the declared dynamic dims: "
                f"{type(exc).__name__}: {exc}. Check the dynamic dims and bounds."
            ) from exc
        other_values = [other] if kind == "tensor" else list(other.values() if kind == "dict" else other)
        dim_names = {}
        for spec, a, b in zip(inputs, [tuple(e.shape) for e in examples], second):
            for i, d in enumerate(spec.shape):
                if isinstance(d, str) and a[i] != b[i]:
                    dim_names.setdefault((a[i], b[i]), d)
        shapes = [
            tuple(d if d == int(o) else dim_names.get((d, int(o)), "?") for d, o in zip(shape, v.shape))
            for shape, v in zip(shapes, other_values)
        ]
    from trtflow.arrays import dtype_name

    specs = [TensorSpec(n, dtype_name(v.dtype), s) for n, v, s in zip(out_names, values, shapes)]
    return specs, _flattener(kind, out_names, keys)


def _second_shapes(inputs: list[TensorSpec], examples) -> list[tuple] | None:
    """Example shapes with every dynamic dim moved by one inside its bounds (None if no dim can move)."""
    moved_to: dict[str, int] = {}
    shapes, moved = [], False
    for spec, e in zip(inputs, examples):
        shape = list(int(d) for d in e.shape)
        for i, d in enumerate(spec.shape):
            if isinstance(d, int):
                continue
            lo = spec.bounds.min[i] if spec.bounds else 1
            hi = spec.bounds.max[i] if spec.bounds else shape[i] + 1
            if d in moved_to and d != "?":
                shape[i] = moved_to[d]
            elif shape[i] + 1 <= hi:
                shape[i] += 1
            elif shape[i] - 1 >= max(lo, 1):
                shape[i] -= 1
            if d != "?":
                moved_to.setdefault(d, shape[i])
            moved = moved or shape[i] != int(e.shape[i])
        shapes.append(tuple(shape))
    return shapes if moved else None


def _compile(torch, module, mode: str, own_graphs: bool):
    """torch.compile with the mode's inductor options, weights frozen; CUDA graphs left to the
    engine when it captures its own (the mode's cudagraph trees cannot nest inside them)."""
    options = dict(torch._inductor.list_mode_options(mode))
    if own_graphs:
        options["triton.cudagraphs"] = False
    options["freezing"] = True
    log.debug("torch.compile options %s", options)
    return torch.compile(module, options=options, dynamic=False if own_graphs else None)


# -- AOTInductor packages -------------------------------------------------------------------
def _spec_from_dict(data: Mapping) -> TensorSpec:
    bounds = data.get("bounds")
    return TensorSpec(
        data["name"], data["dtype"], tuple(data["shape"]),
        Bounds(tuple(bounds["min"]), tuple(bounds["opt"]), tuple(bounds["max"])) if bounds else None,
    )


def _package_metadata(path: Path) -> dict:
    """The AOTInductor metadata read from the archive without loading the compiled library ({} if absent)."""
    import zipfile

    try:
        with zipfile.ZipFile(path) as archive:
            names = [n for n in archive.namelist() if n.endswith("wrapper_metadata.json")]
            return json.loads(archive.read(names[0])) if names else {}
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        raise ModelLoadError(f"cannot read {path} as an AOTInductor package (a zip archive): {exc}") from None


def _load_runner(torch, path: Path, device):
    try:
        return torch._inductor.aoti_load_package(str(path), device_index=device.index if device.type == "cuda" else -1)
    except Exception as exc:
        raise ModelLoadError(f"cannot load {path} as an AOTInductor package: {type(exc).__name__}: {exc}") from None


def package_specs(path: str | os.PathLike) -> tuple[list[TensorSpec], list[TensorSpec]]:
    """Input and output specs stored in a package made by ``build_aoti``, without loading it."""
    meta = _package_metadata(Path(path))
    if METADATA_KEY not in meta:
        raise ModelLoadError(f"{path} has no trtflow specs in its metadata; build it with trtflow build --engine torch")
    specs = json.loads(base64.b64decode(meta[METADATA_KEY]))
    return [_spec_from_dict(s) for s in specs["inputs"]], [_spec_from_dict(s) for s in specs["outputs"]]


def _load_package(torch, path: Path, device):
    if not path.exists():
        raise ModelLoadError(f"AOTInductor package not found: {path}")
    meta = _package_metadata(path)
    runner = None
    if not meta:
        runner = _load_runner(torch, path, device)
        meta = runner.get_metadata()
    built_for = meta.get("AOTI_DEVICE_KEY", "cpu")
    if built_for != device.type:
        raise UsageError(
            f"{path} was compiled for {built_for} but the engine runs on {device}; "
            f"load it with device='{built_for}' or rebuild it with trtflow build --engine torch on {device.type}"
        )
    if METADATA_KEY not in meta:
        raise ModelLoadError(
            f"{path} has no trtflow specs in its metadata; build it with trtflow build --engine torch "
            "(or trtflow.engines.torch.build_aoti)"
        )
    specs = json.loads(base64.b64decode(meta[METADATA_KEY]))
    runner = runner or _load_runner(torch, path, device)
    inputs = [_spec_from_dict(s) for s in specs["inputs"]]
    return runner, inputs, [_spec_from_dict(s) for s in specs["outputs"]], bool(specs.get("keywords"))


def build_aoti(
    model: Any,
    example_inputs: Mapping[str, Any] | Sequence[Any] | None,
    out_path: str | os.PathLike,
    **options: Any,
) -> Path:
    """Export a module (or take an ExportedProgram) and compile it into an AOTInductor package.

    The package carries the engine specs, so ``trtflow.load(out_path, engine="torch")`` needs
    nothing else. Dynamic dims (``dynamic=``) become ``torch.export`` dims bounded by
    ``min_shapes``/``max_shapes``; their example sizes must be >= 2 (size 1 is specialized).

    Args:
        model: an ``nn.Module`` or a ``torch.export.ExportedProgram``.
        example_inputs: as for ``TorchEngine``.
        out_path: where to write the ``.pt2``.
        **options: ``TorchEngine`` options (input_names, output_names, dynamic, min_shapes,
            max_shapes, dtype, channels_last, device); compile and cuda_graphs are not taken.

    Returns:
        The package path.

    Raises:
        UsageError: compile/cuda_graphs given, or a dynamic dim with example size 1.
        BuildError: torch.export or AOTInductor failed.
    """
    import torch

    from trtflow.errors import BuildError

    if options.get("compile") or options.get("cuda_graphs"):
        raise UsageError("build_aoti compiles ahead of time; compile= and cuda_graphs= do not apply")
    engine = TorchEngine(model, example_inputs, **options)
    args = list(engine.example_inputs.values())
    dims: dict[str, Any] = {}
    dynamic_shapes = []
    for spec, t in zip(engine.inputs, args):
        per_input = {}
        for i, d in enumerate(spec.shape):
            if isinstance(d, int):
                continue
            if t.shape[i] < 2:
                raise UsageError(
                    f"input '{spec.name}' dim {i} ('{d}') is dynamic but its example size is {t.shape[i]}; "
                    "torch.export specializes size-1 dims: give an example of size >= 2"
                )
            lo = spec.bounds.min[i] if spec.bounds else 1
            hi = spec.bounds.max[i] if spec.bounds else None
            key = d if d != "?" else f"{spec.name}_{i}"
            if key not in dims:
                dims[key] = torch.export.Dim(key.replace("?", "d"), min=lo, max=hi) if hi else torch.export.Dim(key, min=lo)
            per_input[i] = dims[key]
        dynamic_shapes.append(per_input or None)
    try:
        if isinstance(model, torch.export.ExportedProgram):
            program = model
            if engine.device.type == "cuda":
                from torch.export.passes import move_to_device_pass

                program = move_to_device_pass(program, str(engine.device))
        elif engine._kw:
            program = torch.export.export(
                engine.module, (), dict(engine.example_inputs),
                dynamic_shapes=dict(zip(engine.example_inputs, dynamic_shapes)),
            )
        else:
            program = torch.export.export(engine.module, tuple(args), dynamic_shapes=tuple(dynamic_shapes))
    except Exception as exc:
        raise BuildError(f"torch.export failed: {type(exc).__name__}: {exc}") from exc
    meta = {"inputs": [s.to_dict() for s in engine.inputs], "outputs": [s.to_dict() for s in engine.outputs],
            "dtype": engine.precision, "keywords": engine._kw and not isinstance(model, torch.export.ExportedProgram)}
    out = Path(out_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    try:
        with torch.no_grad():
            path = torch._inductor.aoti_compile_and_package(
                program, package_path=str(out),
                inductor_configs={"aot_inductor.metadata": {METADATA_KEY: base64.b64encode(json.dumps(meta).encode()).decode()}},
            )
    except Exception as exc:
        raise BuildError(f"AOTInductor compilation failed: {type(exc).__name__}: {exc}") from exc
    log.info("wrote AOTInductor package %s", path)
    return Path(path)
