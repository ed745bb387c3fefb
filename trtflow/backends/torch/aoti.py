"""Loading AOTInductor packages for the torch engine: ``load_package`` reads the engine specs a
``.pt2`` carries in its metadata (written by ``trtflow.backends.torch.package.build_aoti``) and
loads the compiled model for a device.
"""

from __future__ import annotations

import base64
import json
import logging
import os
from pathlib import Path
from typing import Any

from trtflow.errors import ModelLoadError, UsageError
from trtflow.spec import TensorSpec

log = logging.getLogger(__name__)

METADATA_KEY = "trtflow.specs"  # package metadata holding the specs (base64 of JSON: no quotes to escape in C++)

# files given to the torch engine by mistake, by name: what each is and the engine that runs it
_OTHER_FILES = {".onnx": ("an ONNX model", "ort"), ".plan": ("a TensorRT plan", "tensorrt"),
                ".engine": ("a TensorRT plan", "tensorrt"), ".trt": ("a TensorRT plan", "tensorrt")}


def refuse_other_files(path: str | os.PathLike) -> None:
    """Refuse an ONNX model or a TensorRT plan given to the torch engine, naming the engine that runs it
    (read as a package, it failed with only "File is not a zip file").

    Raises:
        UsageError: ``path``'s name says ONNX or a TensorRT plan.
    """
    suffix = Path(path).suffix.lower()
    if suffix in _OTHER_FILES:
        what, engine = _OTHER_FILES[suffix]
        raise UsageError(f"the torch engine runs .pt2 packages (AOTInductor) and PyTorch modules (MODULE:FACTORY where "
                         f"a command takes it); {path} is {what}: give --engine {engine} "
                         f"(trtflow.load(path, engine=\"{engine}\")), or leave the engine out")


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
    return [TensorSpec.from_dict(s) for s in specs["inputs"]], [TensorSpec.from_dict(s) for s in specs["outputs"]]


def load_package(path: Path, device) -> tuple[Any, list[TensorSpec], list[TensorSpec], bool]:
    """Load a package for ``device``: (runner, input specs, output specs, called with keywords)."""
    import torch

    refuse_other_files(path)
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
            "(or trtflow.backends.torch.package.build_aoti)"
        )
    specs = json.loads(base64.b64decode(meta[METADATA_KEY]))
    runner = runner or _load_runner(torch, path, device)
    inputs = [TensorSpec.from_dict(s) for s in specs["inputs"]]
    return runner, inputs, [TensorSpec.from_dict(s) for s in specs["outputs"]], bool(specs.get("keywords"))
