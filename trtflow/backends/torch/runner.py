"""PyTorch engine: an ``nn.Module`` (eager or ``torch.compile``), a ``torch.export`` program, or an
AOTInductor ``.pt2`` package, behind the engine contract.

Zero-copy: tensors already on the engine's GPU (torch, cupy, any DLPack producer) are used in
place and outputs stay there; host arrays go through reusable pinned buffers with async copies
on the engine's stream and come back as numpy. With ``cuda_graphs=True`` each new input shape
is captured once (lazily, at most ``max_graphs`` shapes, like TensorRT profiles) and replayed;
its outputs are then engine-owned buffers that the next call of that shape overwrites.
"""

from __future__ import annotations

import inspect
import logging
import os
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from trtflow.deps import require
from trtflow.backends.base import Engine
from trtflow.errors import EngineError, ModelLoadError, UsageError
from trtflow.backends.torch.aoti import load_package
from trtflow.backends.torch.outputs import casting, flattener, probe_outputs
from trtflow.spec import Shape, TensorSpec, make_profile

log = logging.getLogger(__name__)

PRECISIONS = {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16"}
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune")
MAX_GRAPHS = 8


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
        dtype: compute precision "fp32", "fp16" or "bf16" (weights and activations).
        keep_io_types: with a reduced ``dtype``, floating inputs and outputs keep the model's own
            dtype (float32 in, float32 out; cast inside, as TensorRT's ``--fp16`` does). False: they
            take ``dtype`` too (reduced-precision I/O).
        channels_last: store 4-d weights and example inputs channels-last (faster convolutions);
            4-d inputs given channels-last (``engine.channels_last`` says so) reach the model without
            a layout copy.
        compile: None (eager) or a ``torch.compile`` mode: "default", "reduce-overhead", "max-autotune".
            Compiled modules are frozen (weights folded as constants) unless ``freeze`` is off.
        cuda_graphs: capture one CUDA graph per input shape and replay it.
        device: CUDA device index or name ("cpu", "cuda:1"); default the current CUDA device,
            else the CPU.
        max_graphs: most CUDA graphs kept; further shapes run without a graph (logged once).
        cudnn_benchmark: set ``torch.backends.cudnn.benchmark`` (process-wide) on CUDA.
        fuse: fold batch norms into convolutions and run conv (+ residual add) + ReLU as cuDNN
            fused convolutions (CUDA only; see ``trtflow.backends.torch.fuse``).
        freeze: compile with Inductor's ``freezing`` (weights as constants, batch norms folded);
            False compiles as ``torch.compile(module, mode=...)`` does by default.
        inductor: further Inductor options for the compile, on top of the mode's (names as in
            ``torch._inductor.config``), e.g. ``{"coordinate_descent_tuning": True}``.

    Raises:
        UsageError: bad options (unknown precision or compile mode, CUDA graphs on the CPU, ...), or an ONNX
            model or TensorRT plan given as the model (naming the engine that runs it).
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
        keep_io_types: bool = True,
        channels_last: bool = False,
        compile: str | None = None,
        cuda_graphs: bool = False,
        device: int | str | None = None,
        max_graphs: int = MAX_GRAPHS,
        cudnn_benchmark: bool = True,
        fuse: bool = False,
        freeze: bool = True,
        inductor: Mapping[str, Any] | None = None,
    ):
        torch = require("torch", "the torch engine")
        if dtype not in PRECISIONS:
            raise UsageError(f"dtype '{dtype}' is not supported; choose one of {list(PRECISIONS)}")
        if compile is not None and compile not in COMPILE_MODES:
            raise UsageError(f"compile mode '{compile}' is not supported; choose None or one of {list(COMPILE_MODES)}")
        if inductor and compile is None:
            raise UsageError("inductor options apply to a compile; give compile='default' (or another mode) too")
        self.device = torch_device(torch, device)
        if (cuda_graphs or fuse) and self.device.type != "cuda":
            raise UsageError(f"{'cuda_graphs=True (--useCudaGraph)' if cuda_graphs else 'fuse=True'} needs a CUDA device; "
                             "this engine runs on the CPU")
        if self.device.type == "cuda" and cudnn_benchmark:
            torch.backends.cudnn.benchmark = True
        self.precision = dtype
        self.channels_last = channels_last
        self.compile_mode = compile
        self.cuda_graphs = cuda_graphs
        self.max_graphs = max_graphs

        if isinstance(model, (str, os.PathLike)):
            if compile is not None:
                raise UsageError("an AOTInductor package is compiled already; load it with compile=None")
            fn, inputs, outputs, self._kw = load_package(Path(model), self.device)
            self._flatten = flattener("seq", [s.name for s in outputs], None)
            self.module = None
        else:
            module, examples, names, self._kw = _module_and_examples(torch, model, example_inputs, input_names)
            given = [torch.as_tensor(t).dtype for t in examples]
            module, examples = _place(torch, module, examples, self.device, dtype, channels_last, fuse,
                                      isinstance(model, torch.export.ExportedProgram))
            cast = None
            if keep_io_types and dtype != "fp32":  # the model's I/O dtypes outside, the reduced one inside
                examples = [t.to(g) if t.is_floating_point() else t for t, g in zip(examples, given)]
                io = next((g for g in given if g.is_floating_point), torch.float32)
                cast = (getattr(torch, PRECISIONS[dtype]), io)
            inputs = _input_specs(names, examples, dynamic or {}, min_shapes or {}, max_shapes or {})
            probe = casting(torch, module, *cast) if cast else module
            outputs, self._flatten = probe_outputs(torch, probe, examples, inputs, output_names, self._kw)
            self.module = module
            self.example_inputs = dict(zip(names, examples))
            fn = _compile(torch, module, compile, cuda_graphs, freeze, inductor or {}) if compile else module
            fn = casting(torch, fn, *cast) if cast else fn
        super().__init__(inputs, outputs)
        self.fn: Callable = fn
        self._no_grad = torch.no_grad  # looked up once, entered per call
        self._index = self.device.index if self.device.type == "cuda" else -1
        self._staging = None
        self._graphs: dict[tuple, _Graph] = {}
        self._pool = None
        self._graph_limit_logged = False
        log.debug("torch engine on %s, %s, compile=%s, cuda_graphs=%s", self.device, dtype, compile, cuda_graphs)

    @property
    def on_gpu(self) -> bool:
        """True on a CUDA device."""
        return self.device.type == "cuda"

    # -- running --------------------------------------------------------------------------
    def _infer(self, feed: dict[str, Any]) -> dict[str, Any]:
        if self._index < 0:
            return self._run(feed)
        first = next(iter(feed.values()))
        if first.get_device() == self._index and (len(feed) == 1 or self._all_on_device(feed)):
            return self._run_graph(feed) if self.cuda_graphs else self._run(feed)
        return self._run_from_host(feed)

    def _run(self, feed: dict[str, Any]) -> dict[str, Any]:
        try:
            with self._no_grad():
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
            from trtflow.backends.staging import Staging

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
            # thread_local: other threads of the process (a pipeline's decoder and post-processing,
            # a server's other instances) may keep using CUDA while this thread captures
            with torch.no_grad(), torch.cuda.graph(graph, pool=self._pool, capture_error_mode="thread_local"):
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
        self._pool = None
        self.fn = None
        self.module = None  # the placed (maybe cast or fused) copy and its examples: device memory
        self.example_inputs = {}
        super().close()


class _Graph:
    __slots__ = ("graph", "inputs", "outputs")

    def __init__(self, graph, inputs: dict, outputs: dict):
        self.graph, self.inputs, self.outputs = graph, inputs, outputs


# -- construction helpers ---------------------------------------------------------------------
def torch_device(torch, device: int | str | None):
    """The ``torch.device`` an engine runs on: ``device`` checked, the current GPU for None (the CPU
    without one), a CUDA device given without an index at the current GPU's.

    Raises:
        UsageError: not a torch device, CUDA without a GPU, or a GPU index this machine lacks.
    """
    if device is None:
        return torch.device("cuda", torch.cuda.current_device()) if torch.cuda.is_available() else torch.device("cpu")
    try:
        dev = torch.device(f"cuda:{device}" if isinstance(device, int) else device)
    except (RuntimeError, TypeError, ValueError):
        raise UsageError(f"device {device!r} is not a torch device; use 'cpu', 'cuda', 'cuda:1' or a GPU index") from None
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


def _place(torch, module, examples, device, precision: str, channels_last: bool, fuse: bool = False,
           exported: bool = False):
    """The engine's module and examples: on the device, in eval mode, fused (in the module's own
    dtype), cast and laid out. ``Module.to``, ``eval`` and fusion work in place, so a module that
    needs any of them is copied first: the caller's keeps its device, dtype, layout, parameters and
    training mode (and tune's key). ``exported``: an exported program's module, whose inference
    behaviour was fixed at export (it has no eval mode to switch to)."""
    want = getattr(torch, PRECISIONS[precision])
    tensors = [*module.parameters(), *module.buffers()]
    cast = any(t.is_floating_point() and t.dtype != want for t in tensors)
    training = not exported and any(m.training for m in module.modules())
    if cast or training or fuse or channels_last or any(t.device != device for t in tensors):
        import copy

        module = copy.deepcopy(module)
    if training:
        module = module.eval()
    module = module.to(device)
    if fuse:
        from trtflow.backends.torch.fuse import fuse_conv_bn_act

        module = fuse_conv_bn_act(module, pad_channels=channels_last)
    if cast:
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


def _compile(torch, module, mode: str, own_graphs: bool, freeze: bool, extra: Mapping[str, Any]):
    """torch.compile with the mode's inductor options and ``extra``, weights frozen unless ``freeze``
    is off; CUDA graphs left to the engine when it captures its own (the mode's cudagraph trees
    cannot nest inside them)."""
    options = dict(torch._inductor.list_mode_options(mode))
    if own_graphs:
        options["triton.cudagraphs"] = False
    options["freezing"] = freeze
    unknown = sorted(set(extra) - set(torch._inductor.config.get_config_copy()))
    if unknown:
        raise UsageError(f"unknown Inductor option(s) {unknown}; names as in torch._inductor.config, "
                         "e.g. coordinate_descent_tuning")
    options.update(extra)
    log.debug("torch.compile options %s", options)
    return torch.compile(module, options=options, dynamic=False if own_graphs else None)
