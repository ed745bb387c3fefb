"""Triton model repositories from trtflow models (``trtflow triton-repo``).

Layout written for a model named N, version V (default 1)::

    REPO/N/config.pbtxt        Triton's ModelConfig, validated with model_config_pb2
    REPO/N/V/model.plan        backend "tensorrt"     (a TensorRT plan, built here from ONNX if needed)
    REPO/N/V/model.onnx        backend "onnxruntime"  (the ONNX file, external data inlined)
    REPO/N/V/model.py          backend "python"       (the template in serve/templates, copied as is)
    REPO/N/V/<model file>      ... beside it, run by trtflow inside tritonserver's Python

The Python backend's ``model.py`` reads everything from ``config.pbtxt`` parameters
(``trtflow_model``, ``trtflow_engine``, ``trtflow_options``, ``trtflow_task``,
``trtflow_task_options``), so one template serves every engine and task.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

from trtflow.backends import ENGINE_FILES, canonical_engine
from trtflow.errors import ModelLoadError, UsageError
from trtflow.progress import Progress, report
from trtflow.serve.repo.atomic import AtomicWrite
from trtflow.serve.repo.config import (ConfigSpec, batch_dim_mismatch, build_config, config_dict, to_pbtxt,
                                       validate_pbtxt)
from trtflow.spec import TensorSpec, is_count

log = logging.getLogger(__name__)

TEMPLATE = Path(__file__).resolve().parents[1] / "templates" / "triton_python_model.py"
PLAN_SUFFIXES = (".plan", ".engine", ".trt")
MODEL_FILES = {"tensorrt": "model.plan", "onnxruntime": "model.onnx", "python": "model.py"}
DEFAULT_MAX_BATCH = 8
TASK_INPUT = TensorSpec("IMAGE", "uint8", ("batch", "height", "width", 3))
TASK_OUTPUT = TensorSpec("RESULT", "object", ("batch", 1))
# with max_batch_size 0 Triton hands model.py one request's tensors as they are: one frame, one result
TASK_FRAME_INPUT = TensorSpec("IMAGE", "uint8", ("height", "width", 3))
TASK_FRAME_OUTPUT = TensorSpec("RESULT", "object", (1,))


@dataclass
class RepoOptions:
    """How ``write_repository`` lays out one model.

    Attributes:
        name: the model's name (folder); default: the model file's stem.
        backend: "auto" (plans -> tensorrt, ONNX -> onnxruntime, else python), "tensorrt",
            "onnxruntime" or "python".
        max_batch: Triton's ``max_batch_size``; None takes the plan's profile bound, 8 for a
            dynamic batch dim, 0 unless dim 0 of every input and output is that one batch dim.
        instances: instances of the model (``instance_group.count``).
        kind: "auto" (gpu for the tensorrt backend or engine, cpu otherwise), "cpu" or "gpu".
        gpus: GPU ids the instances go to (``KIND_GPU``; empty: every GPU).
        dynamic_batching: add Triton's dynamic batcher (when ``max_batch > 0``).
        max_queue_delay_us: how long the batcher waits to fill a batch.
        preferred_batch_sizes: batch sizes the batcher aims for.
        threads: ONNX Runtime intra-op threads (onnxruntime backend parameter, or the ort
            engine inside the Python backend); 0 leaves ONNX Runtime's default.
        engine: the trtflow engine ``model.py`` loads (python backend): auto, ort, torch, tensorrt.
        engine_options: options for ``trtflow.load`` inside ``model.py`` (JSON-serializable).
        task: python backend: wrap a trtflow task ("classify", "detect", "face", ...), so the
            model takes images (``IMAGE``, uint8 HWC) and answers JSON results (``RESULT``).
        task_options: options for ``trtflow.tasks.make_task`` (labels, format, ...).
        version: the version folder.
        overwrite: replace an existing model folder of the same name.
    """

    name: str | None = None
    backend: str = "auto"
    max_batch: int | None = None
    instances: int = 1
    kind: str = "auto"
    gpus: Sequence[int] = ()
    dynamic_batching: bool = True
    max_queue_delay_us: int = 0
    preferred_batch_sizes: Sequence[int] = ()
    threads: int = 0
    engine: str = "auto"
    engine_options: Mapping[str, Any] = field(default_factory=dict)
    task: str | None = None
    task_options: Mapping[str, Any] = field(default_factory=dict)
    version: int = 1
    overwrite: bool = False

    def __post_init__(self) -> None:
        # Triton ignores a version folder named 0 or anything but a positive number
        for key, low in (("version", 1), ("instances", 1), ("max_batch", 0), ("threads", 0), ("max_queue_delay_us", 0)):
            value = getattr(self, key)
            if not (is_count(value, low) or (key == "max_batch" and value is None)):
                raise UsageError(f"RepoOptions {key}: expected a whole number >= {low}, got {value!r}")


@dataclass
class RepoResult:
    """What ``write_repository`` wrote.

    Attributes:
        model_dir: REPO/N.
        config_path: REPO/N/config.pbtxt.
        files: the files of the version folder.
        backend: the Triton backend.
        max_batch: ``max_batch_size``.
        config: the configuration as JSON-style data.
        notes: choices made for the user (inferred batch bound, plan built, ...).
    """

    model_dir: Path
    config_path: Path
    files: list[Path]
    backend: str
    max_batch: int
    config: dict
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {"model_dir": str(self.model_dir), "config_path": str(self.config_path),
                "files": [str(f) for f in self.files], "backend": self.backend, "max_batch": self.max_batch,
                "config": self.config, "notes": self.notes}


def resolve_backend(model: Path, backend: str) -> str:
    """The Triton backend for ``model``: the one asked for, or by suffix for "auto".

    Raises:
        UsageError: an unknown backend, or one that cannot take this kind of file.
    """
    suffix = model.suffix.lower()
    if backend == "auto":
        return "tensorrt" if suffix in PLAN_SUFFIXES else "onnxruntime" if suffix == ".onnx" else "python"
    if backend not in MODEL_FILES:
        raise UsageError(f"unknown backend '{backend}'; choose auto, tensorrt, onnxruntime or python")
    if backend == "onnxruntime" and suffix != ".onnx":
        raise UsageError(f"the onnxruntime backend needs an .onnx model, got {model.name}; use --backend python")
    if backend == "tensorrt" and suffix not in PLAN_SUFFIXES + (".onnx",):
        raise UsageError(f"the tensorrt backend needs a plan or an .onnx model to build, got {model.name}")
    return backend


def _batch_bound(inputs: Sequence[TensorSpec]) -> int | None:
    """The largest batch every input's profile allows (dim 0 bounds), or None without bounds."""
    maxima = [s.bounds.max[0] for s in inputs if s.bounds is not None and s.rank]
    return min(maxima) if maxima and len(maxima) == len(inputs) else None


def _default_max_batch(inputs: Sequence[TensorSpec], outputs: Sequence[TensorSpec]) -> tuple[int, str]:
    if not inputs:
        return 0, "the model has no inputs: max_batch_size 0 (Triton sends whole tensors)"
    problem = batch_dim_mismatch(inputs, outputs)
    if problem:
        return 0, (f"{problem}: max_batch_size 0 with full dims (Triton batches only when dim 0 of every input and "
                   "output is one dynamic batch dim; it sends whole tensors)")
    short = [s.name for s in [*inputs, *outputs] if s.rank <= 1]
    if short:  # with a batch dim left out, config.pbtxt would give them no dims, which Triton refuses
        return 0, f"{short} have no dim beyond dim 0: max_batch_size 0 (Triton sends whole tensors)"
    bound = _batch_bound(inputs)
    if bound is not None:
        return bound, f"max_batch_size {bound}: the plan's profiles allow batches up to {bound}"
    return DEFAULT_MAX_BATCH, f"max_batch_size {DEFAULT_MAX_BATCH} (dim 0 is dynamic; --max-batch sets it)"


def _plan_io(plan: Path) -> tuple[list[TensorSpec], list[TensorSpec], list]:
    from trtflow.backends.tensorrt.runner import read_plan_io

    io = read_plan_io(plan)
    return io["inputs"], io["outputs"], io["profiles"]


def _build_plan(onnx: Path, target: Path, max_batch: int | None, progress: Progress | None) -> str:
    from trtflow.backends.tensorrt import BuildConfig, build_engine
    from trtflow.backends.tensorrt.sidecar import write_plan

    config = BuildConfig(max_batch=max_batch or DEFAULT_MAX_BATCH)
    result = build_engine(onnx, config, progress=progress)
    write_plan(target, result)
    return f"built a TensorRT plan from {onnx.name} (batch up to {config.max_batch})"


def _plan_notes(plan: Path) -> list[str]:
    """What the sidecar says about where the plan runs (Triton's tensorrt backend runs full TensorRT)."""
    from trtflow.backends.tensorrt.sidecar import read_sidecar

    meta = read_sidecar(plan) or {}
    notes = []
    if meta.get("flavor") == "tensorrt_rtx":
        notes.append("the plan was built by TensorRT-RTX: Triton's tensorrt backend runs plans of the full TensorRT "
                     "it ships with; serve this one with --backend python --engine tensorrt")
    target = (meta.get("target") or {}).get("name")
    if meta.get("version") and target:
        notes.append(f"plan built by {meta.get('flavor', 'TensorRT')} {meta['version']} for {target}: "
                     "Triton must run the same TensorRT version on that GPU")
    return notes


def _copy_onnx(model: Path, target: Path) -> None:
    """Copy an ONNX file; a model with external data is saved as one file."""
    from trtflow.graph.io import load_onnx, save_onnx

    proto = load_onnx(model)
    save_onnx(proto, target)


def _engine_io(model: Path, engine: str, options: Mapping[str, Any]) -> tuple[list[TensorSpec], list[TensorSpec]]:
    """Load ``model`` with the trtflow engine ``model.py`` will use, and read its I/O."""
    from trtflow.backends import load

    with load(str(model), engine, **dict(options)) as eng:
        return list(eng.inputs), list(eng.outputs)


def write_repository(model: str | os.PathLike, repo: str | os.PathLike, options: RepoOptions = RepoOptions(),
                     progress: Progress | None = None) -> RepoResult:
    """Write one model into a Triton model repository.

    Args:
        model: an ONNX file, a TensorRT plan (with its trtflow sidecar when this machine cannot
            deserialize it), or anything ``trtflow.load`` takes from a path (python backend).
        repo: the repository folder (created when missing).
        options: name, backend, batching, instances, engine and task.
        progress: called as the steps advance.

    Returns:
        A ``RepoResult``.

    Raises:
        ModelLoadError: the model file is missing or cannot be read.
        UsageError: options that do not fit the model, or an existing model folder.
        MissingDependencyError: tritonclient (for Triton's ModelConfig) is not installed.
        BuildError: building a plan from ONNX failed.
    """
    with AtomicWrite() as staging:
        return write_model(model, repo, options, progress, staging)


def write_model(model: str | os.PathLike, repo: str | os.PathLike, options: RepoOptions, progress: Progress | None,
                staging: AtomicWrite) -> RepoResult:
    """``write_repository``'s work; the folder it replaces stays in ``staging`` until the caller commits."""
    model = Path(model)
    if not model.is_file():
        raise ModelLoadError(f"model file not found: {model}")
    if not TEMPLATE.is_file():
        raise ModelLoadError(f"the Python-backend template is missing from the installation: {TEMPLATE}")
    backend = resolve_backend(model, options.backend)
    if options.task and backend != "python":
        raise UsageError("--task needs --backend python (pre- and post-processing run in trtflow inside Triton), "
                         "or --ensemble (pre and post in Python, the model on its own backend)")
    name = options.name or model.stem
    if not name or name.startswith(".") or not all(c.isalnum() or c in "-_." for c in name):
        raise UsageError(f"bad model name {name!r}: use letters, digits, '-', '_' or '.' (not first); "
                         "pass another --name")
    model_dir = Path(repo) / name
    notes: list[str] = []
    progress = report(progress)
    progress(f"reading {model.name}")
    profiles: list = []
    parameters: dict[str, str] = {}
    engine = canonical_engine(options.engine)  # "trt" -> "tensorrt": model.py and the kind go by the name
    if engine == "auto" and model.suffix.lower() in ENGINE_FILES:  # as trtflow.load picks (plans: tensorrt)
        engine = ENGINE_FILES[model.suffix.lower()]
    if backend == "tensorrt" and model.suffix.lower() in PLAN_SUFFIXES:
        inputs, outputs, profiles = _plan_io(model)
    elif backend == "tensorrt":
        inputs, outputs = None, None  # known after the build
    elif backend == "onnxruntime":
        inputs, outputs = _engine_io(model, "ort", {})
        if options.threads:
            parameters["intra_op_thread_count"] = str(options.threads)
    else:
        engine_options = dict(options.engine_options)
        if engine == "ort" or (engine == "auto" and model.suffix.lower() == ".onnx"):
            engine = "ort"
            if options.threads:
                engine_options.setdefault("threads", options.threads)
            # a server runs batches with gaps: ONNX Runtime's spinning threads would take the cores
            # Triton's protocol work needs (as in trtflow serve)
            engine_options.setdefault("spinning", False)
        if options.task:
            inputs, outputs = [TASK_INPUT], [TASK_OUTPUT]
        elif model.suffix.lower() in PLAN_SUFFIXES:  # read without executing: this machine may have no GPU
            inputs, outputs, _ = _plan_io(model)
        else:
            inputs, outputs = _engine_io(model, engine, engine_options)
        parameters.update(trtflow_model=model.name, trtflow_engine=engine,
                          trtflow_options=json.dumps(engine_options, sort_keys=True))
        if options.task:
            parameters.update(trtflow_task=options.task,
                              trtflow_task_options=json.dumps(dict(options.task_options), sort_keys=True))
    version_dir = staging.prepare(model_dir, options.version, options.overwrite)  # in place on commit
    kept = staging.kept.get(model_dir)
    if kept:
        notes.append(f"versions {kept} of {name} kept; only version {options.version} replaced"
                     + (f" (Triton serves the latest, {kept[-1]}, unless version_policy says otherwise)"
                        if kept[-1] > options.version else ""))
    target = version_dir / MODEL_FILES[backend]
    if backend == "tensorrt" and inputs is None:
        progress("building the TensorRT plan")
        notes.append(_build_plan(model, target, options.max_batch, progress))
        inputs, outputs, profiles = _plan_io(target)
    if backend == "tensorrt":
        notes += _plan_notes(target if target.exists() else model)
    max_batch = options.max_batch
    if max_batch is None:
        max_batch, why = (DEFAULT_MAX_BATCH, f"max_batch_size {DEFAULT_MAX_BATCH}") if options.task \
            else _default_max_batch(inputs, outputs)
        notes.append(why)
    if options.task and max_batch == 0:
        inputs, outputs = [TASK_FRAME_INPUT], [TASK_FRAME_OUTPUT]
    bound = None if options.task else _batch_bound(inputs)
    if bound is not None and max_batch > bound:  # Triton's tensorrt backend refuses it; trtflow's engine too
        raise UsageError(f"--max-batch {max_batch}: the plan's profiles allow batches up to {bound}; use --max-batch "
                         f"{bound} or less, or rebuild the plan with a larger max batch (--maxShapes)")
    on_gpu = backend == "tensorrt" or engine == "tensorrt"
    kind = options.kind if options.kind != "auto" else ("gpu" if on_gpu else "cpu")
    spec = ConfigSpec(
        name=name, backend=backend, inputs=inputs, outputs=outputs, max_batch=max_batch,
        instances=options.instances, kind=kind, gpus=options.gpus,
        dynamic_batching=options.dynamic_batching, max_queue_delay_us=options.max_queue_delay_us,
        preferred_batch_sizes=options.preferred_batch_sizes,
        profiles=list(range(len(profiles))) if len(profiles) > 1 else [],
        parameters=parameters,
    )
    text = to_pbtxt(build_config(spec))
    config = validate_pbtxt(text)
    progress("writing the repository")
    if backend == "onnxruntime":
        _copy_onnx(model, target)
    elif backend == "tensorrt" and not target.exists():
        shutil.copyfile(model, target)
        sidecar = model.with_name(model.name + ".json")
        if sidecar.is_file():  # trtflow reads the plan's I/O from it where TensorRT cannot run
            shutil.copyfile(sidecar, target.with_name(target.name + ".json"))
    elif backend == "python":
        shutil.copyfile(TEMPLATE, target)
        if model.suffix.lower() == ".onnx":  # external weights come along, inlined (one file below 2 GB)
            _copy_onnx(model, version_dir / model.name)
        else:
            shutil.copyfile(model, version_dir / model.name)
        sidecar = model.with_name(model.name + ".json")
        if model.suffix.lower() in PLAN_SUFFIXES and sidecar.is_file():
            shutil.copyfile(sidecar, version_dir / sidecar.name)
    staging.write_config(model_dir, text)
    files = sorted(model_dir / str(options.version) / p.name for p in version_dir.iterdir() if p.is_file())
    log.info("wrote %s (%s backend)", model_dir, backend)
    return RepoResult(model_dir, model_dir / "config.pbtxt", files, backend, max_batch, config_dict(config), notes)
