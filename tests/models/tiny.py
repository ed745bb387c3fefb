"""Tiny models the tests build themselves."""

from __future__ import annotations

from pathlib import Path


def tiny_module():
    import torch
    from torch import nn

    class Tiny(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 8, 3, padding=1)
            self.head = nn.Linear(8, 5)

        def forward(self, x):
            feat = torch.relu(self.conv(x)).mean(dim=(2, 3))
            return self.head(feat), feat

    torch.manual_seed(0)
    return Tiny().eval()


def make():
    """Factory for ``trtflow export tests.models.tiny:make``."""
    return tiny_module()


def export_tiny(path: Path) -> Path:
    import torch

    from trtflow.graph.io import save_onnx

    model = tiny_module()
    x = torch.randn(2, 3, 16, 16)
    path = Path(path)
    torch.onnx.export(
        model, (x,), str(path), input_names=["x"], output_names=["logits", "feat"],
        dynamic_axes={"x": {0: "batch"}, "logits": {0: "batch"}, "feat": {0: "batch"}}, dynamo=False,
    )
    import onnx

    save_onnx(onnx.load(str(path)), path)
    return path
