"""The cuda-python guide (CenterNet 512x512), done with trtflow: batches larger than one.

The guide builds its engine with ``network.get_input(0).shape = [1, 3, 512, 512]`` and an empty
optimization profile, so the engine takes batch 1 only; its author "could not get batches larger
than one to work". The fix is a dynamic batch in the ONNX model and a profile with min/opt/max
batch; trtflow builds it from trtexec's flags and runs any batch by tensor name (output buffers
sized after the input shape is set, as the guide does by hand). A batch above the profile's max
runs in chunks with ``split_batches=True``. A tiny random-weight CenterNet-style model stands in
(heatmap, size and offset heads at stride 4); ONNX Runtime runs it here, TensorRT-RTX builds the
engine on the CPU, and the commands for a TensorRT GPU are printed.

    python examples/cuda_python/cuda_python.py OUT_DIR
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch
from torch import nn

import trtflow
from trtflow.export import from_torch

SIZE = 512
MIN_BATCH, OPT_BATCH, MAX_BATCH = 1, 4, 8


class TinyCenterNet(nn.Module):
    """CenterNet's three heads on a stride-4 feature map: ``hm`` (class heatmaps), ``wh`` and ``reg``."""

    def __init__(self, classes: int = 4):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, 8, 3, 2, 1), nn.ReLU(), nn.Conv2d(8, 16, 3, 2, 1), nn.ReLU())
        self.hm, self.wh, self.reg = nn.Conv2d(16, classes, 1), nn.Conv2d(16, 2, 1), nn.Conv2d(16, 2, 1)

    def forward(self, x):
        f = self.body(x)
        return torch.sigmoid(self.hm(f)), self.wh(f), self.reg(f)


def run(out: Path) -> dict:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    onnx_path = out / "centernet.onnx"
    batch = {0: "batch"}
    from_torch(TinyCenterNet(), torch.rand(1, 3, SIZE, SIZE), onnx_path, input_names=["input"],
               output_names=["hm", "wh", "reg"], dynamic={"input": batch, "hm": batch, "wh": batch, "reg": batch},
               exporter="torchscript")

    profile = [f"--minShapes=input:{MIN_BATCH}x3x{SIZE}x{SIZE}", f"--optShapes=input:{OPT_BATCH}x3x{SIZE}x{SIZE}",
               f"--maxShapes=input:{MAX_BATCH}x3x{SIZE}x{SIZE}"]
    built = _build(onnx_path, out / "centernet.engine", profile)

    images = np.random.default_rng(0).random((12, 3, SIZE, SIZE), dtype=np.float32)
    with trtflow.load(onnx_path, engine="ort") as engine:
        single = [engine.infer({"input": images[i:i + 1]})["hm"] for i in range(len(images))]
        for n in (1, OPT_BATCH, MAX_BATCH):  # batches larger than one: every image as when run alone
            hm = engine.infer({"input": images[:n]})["hm"]
            assert hm.shape == (n, 4, SIZE // 4, SIZE // 4)
            assert all(np.allclose(hm[i], single[i][0], atol=1e-5) for i in range(n))
        print(f"cuda-python: batches 1, {OPT_BATCH}, {MAX_BATCH} give every image's own heatmaps {hm.shape[1:]}")

    # an engine whose batch is at most MAX_BATCH (as the TensorRT profile): 12 images in chunks of 8 + 4
    limited = _batch_limited(onnx_path, out)
    with trtflow.load(limited, engine="ort", split_batches=True) as engine:
        hm = engine.infer({"input": images})["hm"]
    assert hm.shape[0] == 12 and all(np.allclose(hm[i], single[i][0], atol=1e-5) for i in range(12))
    print(f"  12 images into a batch-{MAX_BATCH} model with split_batches=True: chunks of {MAX_BATCH} and 4 (padded to {MAX_BATCH}), "
          "results equal the single-image runs")
    print("on a TensorRT GPU:")
    print(f"  trtflow build {onnx_path.name} --saveEngine centernet.engine " + " ".join(profile))
    print("  python -c \"import trtflow, numpy as np; e = trtflow.load('centernet.engine'); "
          f"print(e.infer({{'input': np.zeros(({MAX_BATCH}, 3, {SIZE}, {SIZE}), np.float32)}})['hm'].shape)\"")
    return {"batches": [1, OPT_BATCH, MAX_BATCH], "split": [MAX_BATCH, 12 - MAX_BATCH], "engine_built": built}


def _batch_limited(onnx_path: Path, out: Path) -> Path:
    """The model with its batch fixed to MAX_BATCH (what a static-batch engine takes)."""
    from trtflow import edits
    from trtflow.graph.io import save_onnx

    fixed, _ = edits.apply("fix-shapes", onnx_path, dims={"batch": MAX_BATCH}, verify=False)
    return save_onnx(fixed, out / f"centernet_b{MAX_BATCH}.onnx")


def _build(onnx_path: Path, plan: Path, profile: list[str]) -> bool | None:
    """``trtflow build`` with the profile (TensorRT-RTX builds on the CPU); None when no TensorRT is installed."""
    try:
        from trtflow.backends.tensorrt.flavor import load_flavor

        load_flavor()
    except ImportError:
        return None
    from trtflow.cli.main import main

    argv = ["build", str(onnx_path), "--saveEngine", str(plan), *profile]
    print("$ trtflow " + " ".join(argv))
    return main(argv) == 0


if __name__ == "__main__":
    print(run(Path(sys.argv[1] if len(sys.argv) > 1 else "cuda_python_out")))
