"""Calibration sets for INT8 quantization: a folder of images (with a preprocessing spec) or .npy samples,
split into calibration and held-back samples."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from trtflow.deps import require
from trtflow.edits.fields import parse_number
from trtflow.errors import ModelLoadError, UsageError
from trtflow.progress import Progress, report as progress_of
from trtflow.spec import parse_shape
from trtflow.vision.preprocess import hw_size

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp"}
SPEC_KEYS = ("resize", "crop", "scale", "mean", "std", "layout", "bgr")


@dataclass(frozen=True)
class ImagePreprocess:
    """How calibration images become model inputs.

    Attributes:
        resize: ``(h, w)`` exact size, or ``(n,)`` for the shorter side (aspect kept); None: none.
        crop: ``(h, w)`` centre crop after resizing; None: none.
        scale: multiplier applied first (1/255 by default).
        mean, std: per-channel, after scaling (model channel order).
        layout: layout the model takes: "nchw" or "nhwc".
        bgr: the model wants BGR (images are read as RGB).
    """

    resize: tuple[int, ...] | None = None
    crop: tuple[int, int] | None = None
    scale: float = 1.0 / 255.0
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    layout: str = "nchw"
    bgr: bool = False

    def to_text(self) -> str:
        """The spec string ``parse_preprocess`` reads back."""
        parts = []
        if self.resize is not None:
            parts.append("resize=" + "x".join(str(d) for d in self.resize))
        if self.crop is not None:
            parts.append("crop=" + "x".join(str(d) for d in self.crop))
        parts.append(f"scale={self.scale:.9g}")
        for name in ("mean", "std"):
            if getattr(self, name) is not None:
                parts.append(f"{name}=" + ",".join(f"{v:g}" for v in getattr(self, name)))
        parts.append(f"layout={self.layout}")
        if self.bgr:
            parts.append("bgr")
        return ",".join(parts)


def parse_preprocess(text: str | None) -> ImagePreprocess:
    """Parse ``"resize=256,crop=224,mean=0.485,0.456,0.406,std=0.229,0.224,0.225,layout=nchw"``.

    A value may hold commas (mean, std): tokens without '=' extend the previous key. ``bgr`` alone
    means ``bgr=1``.

    Raises:
        UsageError: an unknown key or a bad value.
    """
    if not text:
        return ImagePreprocess()
    values: dict[str, list[str]] = {}
    key = None
    for token in (t.strip() for t in text.split(",")):
        if not token:
            continue
        if "=" in token:
            key, _, value = token.partition("=")
            key = key.strip().lower()
            if key not in SPEC_KEYS:
                raise UsageError(f"--calib-preprocess: unknown key '{key}'; keys: {', '.join(SPEC_KEYS)}")
            values[key] = [value.strip()]
        elif token.lower() == "bgr":
            values["bgr"] = ["1"]
        elif key in ("mean", "std"):
            values[key].append(token)
        else:
            raise UsageError(f"--calib-preprocess: cannot read '{token}' in '{text}'; expected KEY=VALUE")
    try:
        out = ImagePreprocess(
            resize=parse_shape(values["resize"][0]) if "resize" in values else None,
            crop=hw_size(values["crop"][0], "crop") if "crop" in values else None,
            scale=parse_number(values["scale"][0], "--calib-preprocess scale") if "scale" in values else 1.0 / 255.0,
            mean=tuple(float(v) for v in values["mean"]) if "mean" in values else None,
            std=tuple(float(v) for v in values["std"]) if "std" in values else None,
            layout=values.get("layout", ["nchw"])[0].lower(),
            bgr=values.get("bgr", ["0"])[0].lower() in ("1", "true", "yes"),
        )
    except (ValueError, UsageError) as exc:
        raise UsageError(f"--calib-preprocess '{text}': {exc}") from None
    if out.layout not in ("nchw", "nhwc"):
        raise UsageError(f"--calib-preprocess layout '{out.layout}': expected nchw or nhwc")
    if out.resize is not None and len(out.resize) not in (1, 2):
        raise UsageError(f"--calib-preprocess resize={values['resize'][0]}: expected N (shorter side) or HxW")
    return out


def image_to_input(image: np.ndarray, spec: ImagePreprocess, model_hw: tuple[int, int] | None) -> np.ndarray:
    """One HWC RGB image (uint8, uint16 or float in [0, 255]) -> one model input with a batch dim of 1."""
    from trtflow.edits.preprocess import PreprocessOptions, preprocess_numpy

    transform = require("skimage.transform", "resizing calibration images")
    img = np.asarray(image)
    if img.dtype == np.uint16:  # 16-bit PNG/TIFF: to the [0, 255] range the scale (1/255) is for
        img = img / 257.0
    if img.ndim == 2:
        img = np.stack([img] * 3, axis=-1)
    img = img[..., :3].astype(np.float32)
    h, w = img.shape[:2]
    if spec.resize is not None:
        if len(spec.resize) == 1:
            short = spec.resize[0]
            size = (short, max(1, round(w * short / h))) if h <= w else (max(1, round(h * short / w)), short)
        else:
            size = tuple(spec.resize)
        img = transform.resize(img, size, preserve_range=True, anti_aliasing=True).astype(np.float32)
    if spec.crop is not None:
        ch, cw = spec.crop
        h, w = img.shape[:2]
        if ch > h or cw > w:
            raise UsageError(f"--calib-preprocess crop={ch}x{cw} is larger than the resized image {h}x{w}")
        top, left = (h - ch) // 2, (w - cw) // 2
        img = img[top:top + ch, left:left + cw]
    if model_hw is not None and tuple(img.shape[:2]) != tuple(model_hw):
        log.info("calibration image %s resized to the model's %s", img.shape[:2], model_hw)
        img = transform.resize(img, model_hw, preserve_range=True, anti_aliasing=True).astype(np.float32)
    pre = PreprocessOptions(layout="nhwc", scale=spec.scale, mean=spec.mean, std=spec.std,
                         channel_order="rgb-to-bgr" if spec.bgr else "keep")
    x = preprocess_numpy(img[None], pre)
    return x.transpose(0, 2, 3, 1).copy() if spec.layout == "nhwc" else x


@dataclass
class CalibrationSet:
    """Feeds for calibration and for the held-back accuracy check."""

    calib: list[dict[str, np.ndarray]]
    holdout: list[dict[str, np.ndarray]] = field(default_factory=list)
    source: dict = field(default_factory=dict)


def _image_input(proto: Any):
    from trtflow.graph.io import onnx_specs

    specs, _ = onnx_specs(proto)
    floats = [s for s in specs if s.dtype.startswith("float")]
    if len(specs) != 1 or not floats:
        raise UsageError(f"calibration images need a model with one float input; this one has "
                         f"{[(s.name, s.dtype) for s in specs]}. Give .npz samples holding every input instead")
    return floats[0]


def load_calibration(proto: Any, folder: str | Path, preprocess: str | ImagePreprocess | None = None,
                     holdout: float = 0.2, limit: int | None = None, seed: int = 0,
                     progress: Progress | None = None) -> CalibrationSet:
    """Read every sample of ``folder`` and split it into calibration and held-back feeds.

    Images (png/jpg/...) are preprocessed with ``preprocess`` for the model's single float input;
    ``.npy`` files hold one input (a batch dim is added when missing), ``.npz`` files one array per input.

    Args:
        proto: the float model (its inputs name the feeds).
        folder: the calibration folder.
        preprocess: an ``ImagePreprocess``, or its spec string (images only).
        holdout: held-back fraction (< 1) or count (>= 1).
        limit: read at most this many samples.
        seed: seed of the shuffle before the split.
        progress: told after each sample is read.

    Raises:
        ModelLoadError: a missing folder or an unreadable file. UsageError: no samples.
    """
    from trtflow.graph.io import onnx_specs

    folder = Path(folder)
    if not folder.is_dir():
        raise ModelLoadError(f"calibration folder not found: {folder}")
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES | {".npy", ".npz"})
    if not files:
        raise UsageError(f"{folder} holds no calibration samples (images {sorted(IMAGE_SUFFIXES)}, .npy or .npz)")
    rng = np.random.default_rng(seed)
    files = [files[i] for i in rng.permutation(len(files))][: limit or None]
    specs, _ = onnx_specs(proto)
    spec = preprocess if isinstance(preprocess, ImagePreprocess) else parse_preprocess(preprocess)
    progress = progress_of(progress)
    feeds = []
    for k, path in enumerate(files):
        progress("reading calibration samples", k, len(files))
        try:
            feeds.append(_read_sample(path, proto, specs, spec))
        except (OSError, ValueError) as exc:
            raise ModelLoadError(f"cannot read calibration sample {path}: {exc}") from None
    n_hold = int(round(holdout * len(feeds))) if holdout < 1 else int(holdout)
    if holdout > 0 and len(feeds) >= 2:
        n_hold = max(1, n_hold)
    n_hold = min(n_hold, len(feeds) - 1)
    images = sum(p.suffix.lower() in IMAGE_SUFFIXES for p in files)
    source = {"folder": str(folder), "samples": len(feeds), "images": images, "arrays": len(files) - images,
              "preprocess": preprocess if not isinstance(preprocess, ImagePreprocess) else spec.to_text()}
    return CalibrationSet(feeds[: len(feeds) - n_hold], feeds[len(feeds) - n_hold:], source)


def _read_sample(path: Path, proto: Any, specs, spec: ImagePreprocess) -> dict[str, np.ndarray]:
    by_name = {s.name: s for s in specs}
    if path.suffix.lower() == ".npz":
        with np.load(path, allow_pickle=False) as data:
            feed = {k: data[k] for k in data.files if k in by_name}
        missing = sorted(set(by_name) - set(feed))
        if missing:
            raise ValueError(f"it lacks the model input(s) {missing}")
    elif path.suffix.lower() == ".npy":
        target = _image_input(proto) if len(specs) != 1 else specs[0]
        feed = {target.name: np.load(path, allow_pickle=False)}
    else:
        io = require("skimage.io", "reading calibration images")
        target = _image_input(proto)
        hw = target.shape[2:4] if spec.layout == "nchw" else target.shape[1:3]
        model_hw = tuple(hw) if all(isinstance(d, int) for d in hw) else None
        feed = {target.name: image_to_input(io.imread(str(path)), spec, model_hw)}
    out = {}
    for name, value in feed.items():
        s = by_name[name]
        if value.ndim == s.rank - 1:
            value = value[None]
        if not s.takes(value.shape):
            raise ValueError(f"it holds shape {tuple(value.shape)} for input '{name}', which takes {s.describe_shape()} "
                             "(the batch dim may be left out)")
        out[name] = value.astype(s.dtype) if s.dtype.startswith("float") else value
    return out
