"""ImageNet classification helpers: class names, the standard preprocessing, top-k, sample images.

Preprocessing is the standard ImageNet evaluation transform: resize the shorter side to 256
(bilinear), center-crop 224x224, scale to [0, 1], normalize with the ImageNet mean and std,
channels first (NCHW float32). It is ``trtflow.vision.preprocess.classify_preprocess`` run on
the CPU, one image at a time (the sample images differ in size).
"""

from __future__ import annotations

import functools
from importlib import resources
from typing import Mapping, Sequence

import numpy as np

from trtflow.deps import require
from trtflow.errors import InputDtypeError, InputShapeError, UsageError
from trtflow.spec import is_count

MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)
RESIZE = 256
CROP = 224

# the sample images: skimage.data.NAME() for the first four, sklearn's load_sample_image for the rest
SAMPLE_IMAGES = ("astronaut", "chelsea", "coffee", "rocket", "china", "flower")


@functools.lru_cache(maxsize=1)
def class_names() -> tuple[str, ...]:
    """The 1000 ImageNet-1k class names, by class index (281 is "tabby", 967 "espresso")."""
    text = resources.files("trtflow").joinpath("data/imagenet_classes.txt").read_text(encoding="utf-8")
    names = tuple(line.strip() for line in text.splitlines() if line.strip())
    if len(names) != 1000:
        raise RuntimeError(f"trtflow/data/imagenet_classes.txt has {len(names)} names, expected 1000; reinstall trtflow")
    return names


def _as_rgb(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image)
    if image.ndim == 2:
        image = np.stack([image] * 3, axis=-1)
    if image.ndim != 3 or image.shape[-1] not in (3, 4):
        raise InputShapeError(
            f"an image must be HxW (gray), HxWx3 (RGB) or HxWx4 (RGBA), got shape {image.shape}"
        )
    if image.shape[0] == 0 or image.shape[1] == 0:
        raise InputShapeError(f"the image is empty (shape {image.shape})")
    return image[..., :3]


def preprocess(image: np.ndarray) -> np.ndarray:
    """One image -> the model's input (``trtflow.vision.preprocess.classify_preprocess`` on the CPU).

    Args:
        image: HxWx3 RGB (or HxW gray, HxWx4 RGBA), uint8 in [0, 255] or float in [0, 1].

    Returns:
        3x224x224 float32, normalized with the ImageNet mean and std.

    Raises:
        InputShapeError: not an image array, or an empty one.
        InputDtypeError: integers other than uint8, or floats outside [0, 1].
    """
    torch = require("torch", "ImageNet preprocessing")
    from trtflow.vision.preprocess import classify_preprocess

    rgb = _as_rgb(image)
    if rgb.dtype != np.uint8 and rgb.dtype != np.bool_:
        if not np.issubdtype(rgb.dtype, np.floating):
            raise InputDtypeError(f"image pixels are {rgb.dtype}; give uint8 in [0, 255] or floats in [0, 1]")
        if np.nanmin(rgb) < -1e-3 or np.nanmax(rgb) > 1 + 1e-3:
            raise InputDtypeError(f"float pixels span {np.nanmin(rgb):.4g} .. {np.nanmax(rgb):.4g}; give floats in "
                                  f"[0, 1] (divide 0..255 values by 255) or uint8")
    if rgb.dtype != np.uint8:
        rgb = np.clip(np.rint(rgb * 255.0), 0, 255).astype(np.uint8)
    frame = torch.from_numpy(np.array(rgb, dtype=np.uint8, copy=True))[None]
    x = classify_preprocess(frame, size=CROP, resize_to=RESIZE, dtype="float32", mean=MEAN, std=STD)
    return np.ascontiguousarray(x[0].numpy())


def preprocess_batch(images: Sequence[np.ndarray]) -> np.ndarray:
    """Several images -> one Nx3x224x224 float32 batch."""
    return np.stack([preprocess(im) for im in images])


def top_k(logits: np.ndarray, k: int = 5) -> list[list[dict]]:
    """Softmax scores of the ``k`` best classes, per row of ``logits`` (N x 1000).

    Returns:
        One list per image of ``{"index", "label", "score"}``, best first.

    Raises:
        InputShapeError: logits that are not N x 1000.
        UsageError: k is not a positive whole number.
    """
    if not is_count(k):
        raise UsageError(f"k is {k!r}; give a positive whole number of classes")
    logits = np.asarray(logits, dtype=np.float64)
    if logits.ndim != 2 or logits.shape[1] != 1000:
        raise InputShapeError(f"logits have shape {logits.shape}; top_k reads N x 1000 ImageNet-1k logits "
                              f"(add a batch axis with logits[None] for one image)")
    probs = softmax(logits)
    names = class_names()
    best = np.argsort(-probs, axis=1)[:, :k]
    return [
        [{"index": int(i), "label": names[i], "score": float(p[i])} for i in row]
        for row, p in zip(best, probs)
    ]


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax of N x C float64 logits. A row with a +inf logit (an fp16 engine's overflow)
    gives its +inf classes probability 1 between them; NaN logits give NaN rows."""
    top = logits.max(axis=1, keepdims=True)
    inf_rows = np.isposinf(top[:, 0])
    with np.errstate(invalid="ignore"):  # NaN rows stay NaN; +inf rows are set below
        z = np.exp(logits - np.where(inf_rows[:, None], 0.0, top))
        probs = z / z.sum(axis=1, keepdims=True)
    if inf_rows.any():
        won = np.isposinf(logits[inf_rows])
        probs[inf_rows] = won / won.sum(axis=1, keepdims=True)
    return probs


def sample_images() -> Mapping[str, np.ndarray]:
    """Six RGB photos shipped with scikit-image and scikit-learn (no download), by name.

    astronaut, chelsea (a cat), coffee (a cup), rocket from ``skimage.data``; china and flower
    from ``sklearn.datasets.load_sample_image``.

    Raises:
        MissingDependencyError: scikit-image or scikit-learn is not installed.
    """
    skdata = require("skimage.data", "the quickstart's sample images")
    datasets = require("sklearn.datasets", "the quickstart's sample images")
    images = {name: getattr(skdata, name)() for name in SAMPLE_IMAGES[:4]}
    for name in SAMPLE_IMAGES[4:]:
        images[name] = datasets.load_sample_image(f"{name}.jpg")
    return images
