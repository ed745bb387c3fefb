"""Tuned configurations: the key ``trtflow tune`` saves a choice under, and how ``load`` applies it.

A choice lives in ``cache_dir("tuned")/KEY.json`` (beside the engine cache), with the ONNX model
the choice runs, when it is not the user's own (an FP16 or INT8 conversion), as ``KEY.onnx``.
The key hashes what the engine cache hashes: the model's bytes (an ONNX file's bytes, or a torch
module's class and every state-dict tensor), the input shapes, the engine, the device (GPU name
and compute capability, or the CPU model and core count; for ONNX Runtime also its providers when
not the CPU alone, and the GPU of the CUDA ones) and the library versions. A changed
model, other shapes, another GPU or another PyTorch / ONNX Runtime / TensorRT give another key,
so a stale choice is never applied: ``load(..., tune=True)`` then says to run ``trtflow tune``.
This module imports nothing heavy at import time; ``trtflow.tune`` writes the records.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import platform
import time
from pathlib import Path
from typing import Any, Mapping, Sequence

from trtflow.backends import ENGINE_FILES
from trtflow.errors import ModelLoadError, UsageError

log = logging.getLogger(__name__)

# the torch engine options a tuned choice sets (tune leaves off those at the engine's default),
# the I/O dtypes among them: a reduced precision's casts in and out are part of what was timed
TORCH_KNOBS = ("dtype", "keep_io_types", "channels_last", "compile", "cuda_graphs", "fuse", "freeze", "inductor")
SUBDIR = "tuned"
FORMAT = 1
# engine -> the modules whose versions go into the key (whichever wheel installed them:
# onnxruntime-gpu, tensorrt-cu12, tensorrt_rtx_cu13, ...)
LIBRARIES = {"torch": ("torch",), "ort": ("onnxruntime", "onnx"), "tensorrt": ("tensorrt", "tensorrt_rtx")}
RECENT_S = 2.0  # files modified more recently than this are not remembered (file_digest)
# (path, read as ONNX) -> (size, mtime_ns, file_digest): one entry per file, replaced when it changes
_FILE_DIGESTS: dict[tuple[str, bool], tuple[int, int, tuple[str, tuple[str, ...]]]] = {}


def model_digest(model: Any) -> str:
    """SHA-256 of a model's bytes: an ONNX/plan/.pt2 file or ONNX bytes/ModelProto as stored, a torch
    module (or ExportedProgram) as its class name plus every state-dict tensor's name, dtype, shape
    and values. An ONNX file's external data files are part of its digest; files are read once per
    process (``file_digest``), so the tuned key and the engine cache key share one reading.

    Raises:
        ModelLoadError: the file, or an external data file it names, cannot be read.
    """
    h = hashlib.sha256()
    if isinstance(model, (str, os.PathLike)):
        path = Path(model)
        # any file but a plan or .pt2 is an ONNX model (as ``load`` takes it), whatever its suffix
        digest, external = file_digest(path, onnx=path.suffix.lower() not in ENGINE_FILES)
        if not external:
            return digest  # a self-contained file: the SHA-256 of its bytes
        h.update(digest.encode())
        for name in external:  # an ONNX model's weights stored beside it
            try:
                data_digest = file_digest(path.parent / name)[0]
            except ModelLoadError as exc:
                raise ModelLoadError(
                    f"{path}: its weights are stored in external data that cannot be read ({exc}). Keep the data "
                    "file(s) beside the .onnx file under the name the model records, or re-export it as one file"
                ) from None
            h.update(f"external:{name}:{data_digest}".encode())
    elif isinstance(model, (bytes, bytearray)):
        h.update(bytes(model))
    elif hasattr(model, "SerializeToString"):
        h.update(model.SerializeToString())
    elif hasattr(model, "state_dict"):
        import torch

        h.update(f"{type(model).__module__}.{type(model).__qualname__}".encode())
        for name, t in model.state_dict().items():
            t = t.detach().cpu().contiguous()
            h.update(f"{name}:{t.dtype}:{tuple(t.shape)}".encode())
            if t.numel():
                h.update(t.view(-1).view(torch.uint8).numpy().tobytes())
    else:
        raise UsageError(f"cannot key a model given as a {type(model).__name__}; give an ONNX model (path, bytes or "
                         "onnx.ModelProto) or a torch module")
    return h.hexdigest()


def file_digest(path: Path, onnx: bool = False) -> tuple[str, tuple[str, ...]]:
    """``(SHA-256 of the file's bytes, the external data files it names)`` (none unless read as an
    ``onnx`` model), remembered for this process while the file keeps its size and mtime_ns. A file
    modified in the last ``RECENT_S`` seconds is read again each time: a second change within its
    clock tick keeps the mtime.

    Raises:
        ModelLoadError: the file cannot be read.
    """
    path = Path(path).absolute()
    try:
        stat = path.stat()
        seen = _FILE_DIGESTS.get((str(path), onnx))
        if seen is not None and seen[:2] == (stat.st_size, stat.st_mtime_ns):
            return seen[2]
        found = _hash_file(path, onnx)
    except OSError as exc:
        raise ModelLoadError(f"cannot read {path} ({exc.strerror or exc}); check the path") from None
    if time.time_ns() - stat.st_mtime_ns > RECENT_S * 1e9:
        _FILE_DIGESTS[(str(path), onnx)] = (stat.st_size, stat.st_mtime_ns, found)
    return found


def _hash_file(path: Path, onnx: bool) -> tuple[str, tuple[str, ...]]:
    if onnx:  # read whole (under 2 GB, protobuf's limit) to find the external data it names
        data = path.read_bytes()
        return hashlib.sha256(data).hexdigest(), tuple(_external_data(data))
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 24), b""):
            h.update(chunk)
    return h.hexdigest(), ()


def _external_data(data: bytes) -> list[str]:
    """The external data files the initializers of an ONNX file (its bytes: ``data``) are stored in."""
    try:
        import onnx

        proto = onnx.load_model_from_string(data)  # the bytes read already; external data left unread
    except Exception:  # noqa: BLE001 - not readable as ONNX: its bytes alone are the key
        return []
    names = []
    for t in proto.graph.initializer:
        if t.data_location == onnx.TensorProto.EXTERNAL:
            name = next((e.value for e in t.external_data if e.key == "location"), None)
            if name and name not in names:
                names.append(name)
    return names


def device_identity(engine: str, device: Any = None, providers: Sequence[str] | str | None = None) -> dict:
    """What the choice was measured on: the CUDA GPU (name, compute capability) for GPU engines, else
    the CPU (model name, logical cores). For the ort engine with ``providers`` other than the CPU
    alone, also their ONNX Runtime names and, for the CUDA or TensorRT provider, the GPU ``device``
    (an index; None: GPU 0, ONNX Runtime's default) they ran on."""
    if engine in ("torch", "tensorrt") and str(device or "") != "cpu":
        try:
            import torch

            if torch.cuda.is_available():
                dev = torch.device("cuda", device) if isinstance(device, int) else torch.device(device or "cuda")
                index = dev.index if dev.index is not None else torch.cuda.current_device()
                return {"kind": "cuda", "name": torch.cuda.get_device_name(index),
                        "compute_capability": list(torch.cuda.get_device_capability(index))}
        except ImportError:
            pass
    identity = {"kind": "cpu", "name": _cpu_name(), "cores": os.cpu_count(), "machine": platform.machine()}
    if engine == "ort" and providers is not None:
        from trtflow.backends.onnxruntime.runner import GPU_PROVIDERS, provider_names

        names = provider_names(providers)
        if names != ["CPUExecutionProvider"]:  # the CPU alone keys as it always did
            identity["providers"] = names
        if any(p in GPU_PROVIDERS for p in names):
            from trtflow.backends.tensorrt.flavor import gpu_info

            gpu = gpu_info(device if isinstance(device, int) else 0)
            identity["gpu"] = {"name": gpu.name, "compute_capability": list(gpu.cc)} if gpu else None
    return identity


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def library_versions(engine: str) -> dict:
    """Versions of trtflow and of the engine's libraries (absent ones left out)."""
    from importlib import metadata

    from trtflow import __version__

    out = {"trtflow": __version__}
    providers = None
    for module in LIBRARIES.get(engine, ()):
        try:
            out[module] = metadata.version(module)  # the usual case: the wheel is named as the module
            continue
        except metadata.PackageNotFoundError:
            pass
        if providers is None:
            providers = metadata.packages_distributions()
        found = {}
        for dist in sorted(set(providers.get(module, ()))):
            try:
                found[dist] = metadata.version(dist)
            except metadata.PackageNotFoundError:
                continue
        if found:
            out[module] = " ".join(f"{d}=={v}" for d, v in found.items())
    return out


def shapes_list(shapes: Mapping[str, Sequence[int]] | Sequence[Sequence[int]]) -> list[list[int]]:
    """Input shapes in input order, names dropped (a positional and a keyword call key alike)."""
    values = shapes.values() if isinstance(shapes, Mapping) else shapes
    return [[int(d) for d in s] for s in values]


def material_key(material: Any) -> str:
    """The key of what a cached thing was made from: the first 40 hex digits of the SHA-256 of
    ``material`` as JSON with sorted keys. The tuned key and the engine cache key both are one."""
    return hashlib.sha256(json.dumps(material, sort_keys=True).encode()).hexdigest()[:40]


def tuned_key(model: Any, engine: str, shapes: Mapping[str, Sequence[int]] | Sequence[Sequence[int]],
              device: Any = None, digest: str | None = None,
              providers: Sequence[str] | str | None = None) -> tuple[str, dict]:
    """``(key, material)``: the SHA-256 key of a tuned choice and what it was computed from
    (``providers``: the ort engine's, see ``device_identity``)."""
    material = {
        "format": FORMAT,
        "model_sha256": digest or model_digest(model),
        "shapes": shapes_list(shapes),
        "engine": engine,
        "device": device_identity(engine, device, providers),
        "versions": library_versions(engine),
    }
    return material_key(material), material


def tuned_dir() -> Path:
    from trtflow.cache_dir import cache_dir

    return cache_dir(SUBDIR)


def record_path(key: str) -> Path:
    return tuned_dir() / f"{key}.json"


def save_record(key: str, record: Mapping[str, Any]) -> Path:
    """Write a choice atomically (``atomic_write``: a temporary file of this writer + ``os.replace``)."""
    from trtflow.backends.tensorrt.sidecar import atomic_write

    path = record_path(key)
    atomic_write(path, (json.dumps(dict(record), indent=2, default=str) + "\n").encode())
    return path


def read_record(key: str) -> dict | None:
    path = record_path(key)
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None  # a damaged record is no record


def _load_shapes(model: Any, engine: str, options: Mapping[str, Any]) -> list[list[int]]:
    """The shapes a ``load`` call runs at: ``shapes=``, else the example inputs, else the ONNX's static ones.
    An ONNX model's come in its input order, by name (as ``tune`` keys them), static inputs not named
    in ``shapes=`` at their own shape."""
    given = options.get("shapes")
    specs = _onnx_inputs(model) if given and isinstance(given, Mapping) and engine in ("ort", "tensorrt") else None
    if specs is not None:
        return [list(shape) for shape in onnx_shapes(specs, given).values()]
    if given:
        if isinstance(given, Mapping):
            given = {k: given[k] for k in forward_order(model, list(given))}
        return shapes_list(given)
    examples = options.get("example_inputs")
    if examples is not None:
        if isinstance(examples, Mapping):
            examples = [examples[k] for k in forward_order(model, list(examples))]
        elif hasattr(examples, "shape"):
            examples = [examples]
        return [[int(d) for d in e.shape] for e in examples]
    if engine in ("ort", "tensorrt"):
        from trtflow.graph.io import load_onnx, onnx_specs

        specs, _ = onnx_specs(load_onnx(model))
        if all(not s.is_dynamic for s in specs):
            return [list(s.shape) for s in specs]
    raise UsageError("a tuned configuration is keyed by the input shapes: give shapes={name: (1, 3, 224, 224), ...} "
                     "(or example_inputs) to load(..., tune=True)")


def onnx_shapes(specs: Sequence, shapes: Mapping[str, Sequence[int]] | None) -> dict[str, tuple[int, ...]]:
    """Every input of an ONNX model (its ``specs``) -> the shape tune runs and keys it at, in the
    model's input order: the one ``shapes`` gives, else its static shape.

    Raises:
        UsageError: ``shapes`` names an input the model lacks, leaves out a dynamic one, or gives one
            another rank or other fixed sizes than the model's.
    """
    shapes = shapes or {}
    unknown = sorted(set(shapes) - {s.name for s in specs})
    if unknown:
        raise UsageError(f"shapes name unknown inputs {unknown}; the model's inputs: {[s.name for s in specs]}")
    out = {}
    for s in specs:
        if s.name in shapes:
            shape = tuple(int(d) for d in shapes[s.name])
            if s.rank and not s.takes(shape):
                raise UsageError(f"shapes give input '{s.name}' the shape {shape}; the model takes {s.describe_shape()}: "
                                 "give a shape of its rank with its fixed sizes (--shapes NAME:1x3x224x224)")
            out[s.name] = shape
        elif not s.is_dynamic:
            out[s.name] = tuple(s.shape)
        else:
            raise UsageError(f"input '{s.name}' has dynamic dims {s.describe_shape()}; give shapes={{'{s.name}': (...)}} "
                             f"(--shapes {s.name}:1x...): a tuned configuration is keyed by every input's shape")
    return out


def forward_order(model: Any, names: Sequence[str]) -> list[str]:
    """``names`` in the order of a torch module's ``forward`` parameters when they all are some
    (inputs given by name key like positional ones), else as given."""
    import inspect

    forward = getattr(model, "forward", None)
    if forward is None or not hasattr(model, "state_dict"):
        return list(names)
    try:
        params = [n for n, p in inspect.signature(forward).parameters.items()
                  if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    except (TypeError, ValueError):
        return list(names)
    if not set(names) <= set(params):
        return list(names)
    return sorted(names, key=params.index)


def _onnx_inputs(model: Any) -> list | None:
    """The input specs of an ONNX model (None for what is not one: a TensorRT plan)."""
    from trtflow.graph.io import load_onnx, onnx_specs

    try:
        return onnx_specs(load_onnx(model))[0]
    except Exception:  # noqa: BLE001 - not an ONNX model: keyed by the shapes as given
        return None


def _engine_defaults(engine: str, names: Sequence[str]) -> dict:
    """The defaults of the ``engine`` constructor's options ``names``."""
    import inspect

    from trtflow.backends import engine_class

    params = inspect.signature(engine_class(engine).__init__).parameters
    return {name: params[name].default for name in names}


def apply_tuned(model: Any, engine: str, options: dict) -> tuple[Any, dict]:
    """The model and options of the saved choice for ``model`` at these shapes.

    Args:
        model: what the user passed to ``load``.
        engine: the engine name ("torch", "ort", "tensorrt").
        options: the other ``load`` options (``shapes=`` is taken out here; the rest are kept,
            the tuned ones win). For the torch engine every knob in ``TORCH_KNOBS`` is the
            choice's, at the engine's default where the choice leaves it off, so the engine is the
            configuration measured: ``keep_io_types`` too (a BF16 choice timed with FP32 inputs
            and outputs takes FP32 even when the caller asks for BF16 I/O; tune with
            ``TuneOptions(keep_io_types=False)`` for a choice with reduced-precision I/O).

    Raises:
        UsageError: no choice saved for this model, shapes, engine, device and library versions.
    """
    options = dict(options)
    shapes = _load_shapes(model, engine, options)
    options.pop("shapes", None)
    providers = options.get("providers", ("cpu",)) if engine == "ort" else None  # the ort engine's default: CPU
    key, material = tuned_key(model, engine, shapes, options.get("device"), providers=providers)
    record = read_record(key)
    if record is None:
        ident = material["device"]
        on = f"{ident['kind']} ({ident['name']})"
        if "providers" in ident:
            on += f" with providers {ident['providers']}"
        if "gpu" in ident:
            on += f" on {(ident['gpu'] or {}).get('name', 'no CUDA GPU')}"
        raise UsageError(
            f"no tuned configuration for this model on the {engine} engine at shapes {shapes} on this "
            f"{on} with {material['versions']}; run "
            f"`trtflow tune MODEL --engine {engine} --shapes ...` (or trtflow.tune.tune) first. "
            "A changed model, shapes, device or library version needs a new tuning"
            + ("; a choice tuned with the CUDA provider loads with providers=['cuda', 'cpu']." if engine == "ort" else ".")
        )
    tuned = dict(record.get("options") or {})
    if engine == "torch":  # a knob the choice leaves off was measured at its default, not at the caller's value
        tuned = {**_engine_defaults("torch", TORCH_KNOBS), **tuned}
    if record.get("model_file"):
        model = str(tuned_dir() / record["model_file"])
        if not os.path.isfile(model):
            raise UsageError(f"the tuned configuration {record.get('chosen')} runs the converted model {model}, which is "
                             f"no longer there; run `trtflow tune MODEL --engine {engine} --shapes ...` again")
    if record.get("transform") == "fp8":
        from trtflow.backends.torch.fp8 import to_fp8

        model = to_fp8(model)
    if engine == "tensorrt" and "build" in tuned:
        from trtflow.backends.tensorrt.config import BuildConfig
        from trtflow.spec import make_profile

        build = tuned.pop("build")
        fixed = dict(zip(record.get("input_names") or [], [tuple(s) for s in shapes]))
        tuned["build_config"] = BuildConfig(profiles=[make_profile(fixed, fixed, fixed)] if fixed else [], **build)
    if engine == "torch" and record.get("dtype_note"):
        log.info("%s", record["dtype_note"])
    options.update(tuned)
    log.info("tuned configuration %s (key %s)", record.get("chosen"), key)
    return model, options
