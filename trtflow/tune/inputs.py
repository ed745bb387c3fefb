"""The inputs tune checks accuracy on and calibrates INT8 with, and batch-norm recalibration.

Accuracy is measured on the user's calibration data when given (a folder of .npy/.npz files, or
images for a one-input ONNX model, or one .npz whose arrays hold many samples per input), else on
random normal inputs, and the result says which. Samples are grouped into batches at the tuned
shapes; with two batches or more the first half calibrates INT8 and the second half is held back
for the accuracy check of every configuration.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from trtflow.errors import ModelLoadError, UsageError

log = logging.getLogger(__name__)


@dataclass
class TuneFeeds:
    """Batches at the tuned shapes.

    Attributes:
        accuracy: input name -> array, one dict per batch, for the accuracy check.
        calibration: the same for INT8 calibration (held apart from ``accuracy`` when there is enough data).
        source: where they came from, in words (goes into the result).
        random: True when no calibration data was given.
    """

    accuracy: list[dict[str, np.ndarray]]
    calibration: list[dict[str, np.ndarray]] = field(default_factory=list)
    source: str = ""
    random: bool = True


def random_feeds(shapes: Mapping[str, tuple], dtypes: Mapping[str, str], samples: int, seed: int = 0) -> TuneFeeds:
    """Random normal float inputs (small non-negative ints for integer inputs, random booleans for bool ones)."""
    batch = _batch(shapes)
    n = max(1, math.ceil(samples / batch))

    def make(rng):
        out = {}
        for name, shape in shapes.items():
            dt = dtypes.get(name, "float32")
            out[name] = (rng.integers(0, 4, size=shape).astype(dt) if dt.startswith(("int", "uint"))
                         else rng.integers(0, 2, size=shape).astype(bool) if dt == "bool"
                         else rng.standard_normal(shape).astype(_float(dt)))
        return out

    acc_rng, cal_rng = np.random.default_rng(seed), np.random.default_rng(seed + 1)
    accuracy = [make(acc_rng) for _ in range(n)]
    calibration = [make(cal_rng) for _ in range(max(n, 2))]
    source = (f"random normal inputs ({n} batch(es) of {batch}, seed {seed}; INT8 calibrated on other random "
              "batches): no calibration data was given, so errors on real data may differ")
    return TuneFeeds(accuracy, calibration, source, random=True)


def calibration_feeds(calib: str | Path, shapes: Mapping[str, tuple], dtypes: Mapping[str, str], samples: int,
                      onnx_model: Any = None, preprocess: str | None = None) -> TuneFeeds:
    """Batches from ``calib``: a .npz file (each array: samples of one input) or a folder. Up to
    ``2 * samples`` samples are drawn: the first half calibrates INT8, the second (``samples``, in
    whole batches) checks accuracy; fewer are split the same way.

    Raises:
        ModelLoadError: a missing or unreadable path. UsageError: samples that do not fit the shapes.
    """
    path = Path(calib)
    if not path.exists():
        raise ModelLoadError(f"calibration data not found: {path} (give a folder of .npy/.npz/images or one .npz file)")
    if path.is_file():
        if path.suffix.lower() != ".npz":
            raise UsageError(f"--calib {path}: a single file must be a .npz holding an array per input")
        try:
            with np.load(path, allow_pickle=False) as data:
                parts = {k: [(path, data[k])] for k in data.files}
        except Exception as exc:  # noqa: BLE001 - not a zip (ValueError), a broken one (BadZipFile), an object array
            raise ModelLoadError(f"cannot read calibration data {path} as .npz ({type(exc).__name__}: {exc}); "
                                 "save it with numpy.savez, one array per input") from None
        hint = ""
    else:
        parts, hint = _read_folder(path, shapes, onnx_model, preprocess)
    missing = sorted(set(shapes) - set(parts))
    if missing:
        raise UsageError(f"calibration data {path} lacks the input(s) {missing}; it holds {sorted(parts)}")
    batch = _batch(shapes)
    arrays = {}
    for name, shape in shapes.items():
        a = np.concatenate(_fitting(name, shape, parts[name], hint))
        dt = dtypes.get(name, "float32")
        arrays[name] = a.astype(_float(dt) if dt.startswith(("float", "bfloat")) else dt)
    count = min(len(a) for a in arrays.values())
    if count == 0:
        held = ", ".join(f"{k}: {a.shape}" for k, a in arrays.items())
        raise UsageError(f"calibration data {path} holds no samples ({held}); give at least one sample per input")
    used = min(count, 2 * max(samples, batch))  # enough for the accuracy check's samples and as many to calibrate
    n = max(1, math.ceil(used / batch))
    half = n // 2  # batches [0, half) calibrate INT8, the others check accuracy (one batch does both)
    split = half * batch  # samples [0, split) calibrate INT8; the accuracy batches tile the rest only
    batches = []
    for i in range(n):
        lo = 0 if i < half else split  # wrap around (tile) within its part to fill the last batch
        idx = lo + np.arange(i * batch - lo, (i + 1) * batch - lo) % (count - lo)
        batches.append({name: a[idx] for name, a in arrays.items()})
    if half:
        calibration, accuracy = batches[:half], batches[half:]
        how = f"INT8 calibrated on the first {half} batch(es), accuracy checked on the other {n - half}"
    else:
        calibration = accuracy = batches
        how = "INT8 calibrated and checked on the same batch (too few samples to hold some back)"
    tiled = " (tiled to fill the batch)" if count < batch * n else ""
    drawn = min(count, batch * n)
    held = f"{drawn} of {count} sample(s)" if drawn < count else f"{count} sample(s)"
    source = f"calibration data {path}: {held} in {n} batch(es) of {batch}{tiled}; {how}"
    return TuneFeeds(accuracy, calibration, source, random=False)


def _read_folder(folder: Path, shapes: Mapping[str, tuple], onnx_model: Any, preprocess: str | None) -> tuple:
    """The samples of ``folder``: input name -> [(where read, array)], and the hint for samples of another
    shape than the tuned one."""
    from trtflow.edits.calibration import IMAGE_SUFFIXES, load_calibration

    entries = sorted(folder.iterdir())
    files = [p for p in entries if p.suffix.lower() in (".npy", ".npz")]
    images = any(p.suffix.lower() in IMAGE_SUFFIXES for p in entries)
    parts: dict[str, list] = {}
    if not files or images:  # images (with any arrays beside them): read as calibration does, for an ONNX model
        if onnx_model is None:
            raise UsageError(f"{folder} holds " + ("images beside .npy/.npz samples" if files else "no .npy/.npz samples")
                             + "; images need an ONNX model (one float input): convert them to .npy first")
        got = load_calibration(onnx_model, folder, preprocess, holdout=0)
        for feed in got.calib + got.holdout:
            for name, a in feed.items():
                parts.setdefault(name, []).append((folder, a))
        return parts, ". Bring the images to its height and width with --calib-preprocess (resize=S,crop=HxW)"
    only = next(iter(shapes)) if len(shapes) == 1 else None
    for p in files:
        try:
            if p.suffix.lower() == ".npz":
                with np.load(p, allow_pickle=False) as data:
                    items = {k: data[k] for k in data.files}
            elif only is not None:
                items = {only: np.load(p, allow_pickle=False)}
            else:
                raise UsageError(f"{p}: a .npy file feeds a one-input model; this one has {list(shapes)}: use .npz")
        except (OSError, ValueError) as exc:
            raise ModelLoadError(f"cannot read calibration sample {p}: {exc}") from None
        for name, a in items.items():
            parts.setdefault(name, []).append((p, a))
    return parts, ""


def _fitting(name: str, shape: tuple, parts: list, hint: str) -> list[np.ndarray]:
    """The arrays of ``parts`` ([(where read, array)]) for input ``name``, each with its batch dim.

    Raises:
        UsageError: an array whose per-sample shape is not the tuned shape's (naming where it was read).
    """
    arrays = [np.asarray(a) for _, a in parts]
    arrays = [a[None] if a.ndim == len(shape) - 1 else a for a in arrays]
    wrong = [(where, tuple(a.shape[1:])) for (where, _), a in zip(parts, arrays) if tuple(a.shape[1:]) != tuple(shape[1:])]
    if wrong:
        where = sorted({str(w) for w, _ in wrong})
        sizes = sorted({size for _, size in wrong})
        raise UsageError(f"the calibration samples in {', '.join(where)} give '{name}' the per-sample shape(s) {sizes}; "
                         f"the tuned shape is {tuple(shape)}{hint}")
    return arrays


def _float(dtype: str) -> str:
    """The host dtype of a floating input: float16 and float64 as the model takes them (an engine
    refuses float32 for a float16 input), else float32 (bfloat16 has no numpy dtype)."""
    return dtype if dtype in ("float16", "float64") else "float32"


def _batch(shapes: Mapping[str, tuple]) -> int:
    """The batch size of the tuned shapes: the first input's first dim (1 for a scalar input).

    Raises:
        UsageError: a batch of 0 (nothing to check or time).
    """
    name, first = next(iter(shapes.items()))
    batch = int(first[0]) if len(first) else 1
    if batch < 1:
        raise UsageError(f"input '{name}' has batch size {batch} in the tuned shape {tuple(first)}: tune checks and "
                         f"times whole batches; give a batch of 1 or more (--shapes {name}:1x...)")
    return batch


# -- batch norm ----------------------------------------------------------------------------

def _batchnorms(module: Any) -> list:
    import torch

    return [m for m in module.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm) and m.track_running_stats]


def untrained_batchnorm(module: Any) -> bool:
    """True when the module has batch norms and every one still holds its initial statistics (mean 0,
    variance 1): random weights, where eval-mode outputs shrink layer after layer toward underflow."""
    bns = _batchnorms(module)
    return bool(bns) and all(
        m.running_mean is not None and not m.running_mean.any() and bool((m.running_var == 1).all()) for m in bns)


def recalibrate_batchnorm(module: Any, feeds: list[dict[str, np.ndarray]], keyword: bool = True) -> int:
    """Re-estimate every batch norm's running mean/variance on ``feeds`` (cumulative average over the
    batches, FP32, on the module's device), leave the module in eval mode; return how many were reset."""
    import torch

    from trtflow.arrays import to_torch

    bns = _batchnorms(module)
    device = next((p.device for p in module.parameters()), torch.device("cpu"))
    for m in bns:
        m.reset_running_stats()
        m.momentum = None
        m.train()
    try:
        with torch.no_grad():
            for feed in feeds:
                tensors = {k: to_torch(v, str(device)) for k, v in feed.items()}  # a scalar stays 0-d
                module(**tensors) if keyword else module(*tensors.values())
    finally:
        module.eval()
    return len(bns)
