"""Real photographs from scikit-image (no download) and crops/flips of them, for calibration and accuracy checks."""

from __future__ import annotations

from pathlib import Path

import numpy as np

COLOR = ("astronaut", "chelsea", "coffee", "rocket", "hubble_deep_field", "immunohistochemistry")
GRAY = ("camera", "coins", "moon", "page", "clock", "grass", "gravel", "brick")


def base_images() -> dict[str, np.ndarray]:
    """The scikit-image sample photographs bundled with the package, as HxWx3 uint8 RGB."""
    from skimage import data

    out = {}
    for name in (*COLOR, *GRAY):
        img = np.asarray(getattr(data, name)())
        if img.ndim == 2:
            img = np.stack([img] * 3, axis=-1)
        out[name] = np.ascontiguousarray(img[..., :3]).astype(np.uint8)
    return out


def variants(img: np.ndarray, n: int, rng: np.random.Generator) -> list[np.ndarray]:
    """The image, its mirror, and ``n - 2`` random crops covering 50-90% of each side."""
    out = [img, img[:, ::-1]]
    h, w = img.shape[:2]
    for _ in range(max(0, n - 2)):
        fh, fw = rng.uniform(0.5, 0.9, size=2)
        ch, cw = int(h * fh), int(w * fw)
        top, left = rng.integers(0, h - ch + 1), rng.integers(0, w - cw + 1)
        crop = img[top:top + ch, left:left + cw]
        out.append(crop[:, ::-1] if rng.random() < 0.5 else crop)
    return out


def write_calibration_images(folder: Path, per_image: int = 4, seed: int = 0) -> Path:
    """Write ``per_image`` variants of every sample photograph as PNG files into ``folder``."""
    from skimage import io

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for name, img in base_images().items():
        for k, v in enumerate(variants(img, per_image, rng)):
            io.imsave(str(folder / f"{name}_{k}.png"), np.ascontiguousarray(v), check_contrast=False)
    return folder


def export_mobilenet(path: Path, batch: int | None = None) -> Path:
    """MobileNetV2 with ImageNet weights as ONNX: input 'images' (N, 3, 224, 224), output 'logits' (N, 1000)."""
    import onnx
    import torch

    from trtflow.graph.io import save_onnx
    from trtflow.vision.mobilenet import pretrained_mobilenet_v2

    model = pretrained_mobilenet_v2()
    x = torch.randn(batch or 1, 3, 224, 224)
    dynamic = None if batch else {"images": {0: "batch"}, "logits": {0: "batch"}}
    torch.onnx.export(model, (x,), str(path), input_names=["images"], output_names=["logits"],
                      dynamic_axes=dynamic, dynamo=False, opset_version=17)
    save_onnx(onnx.load(str(path)), path)
    return Path(path)
