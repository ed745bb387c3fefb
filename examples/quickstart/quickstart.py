"""NVIDIA's TensorRT quickstart, done with trtflow.

The guide's two journeys, with tiny random-weight stand-ins so the script runs in seconds on a CPU:

1. ResNet-50 classifier: ONNX -> engine (FP32 and FP16), then ``ONNXClassifierWrapper`` feeding
   a batch of NHWC images. Here the NHWC -> NCHW transpose is embedded in the model
   (``surgeon embed-preprocess --layout nhwc``) and the wrapper is ``trtflow.load``.
2. FCN segmentation with argmax appended: dynamic H/W, the guide's 256x256 .. 1440x2560 profile,
   run at 1026x1282; class maps judged by exact agreement.

On this machine the models run on ONNX Runtime and the TensorRT engines are built with
TensorRT-RTX (which builds on the CPU) when it is installed; the commands to run the engines on
a TensorRT GPU are printed.

    python examples/quickstart/quickstart.py OUT_DIR
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch
from torch import nn

import trtflow
from trtflow import edits
from trtflow.cli.main import main as trtflow_cli
from trtflow.export import from_torch
from trtflow.graph.io import save_onnx

BATCH_SIZE = 32  # the guide's batch
N_CLASSES = 1000
EXPORTER = "torchscript"  # the guide's torch.onnx.export; "auto" tries the dynamo exporter first (slower)


class TinyResNet(nn.Module):
    """A ResNet-shaped classifier (stem, one residual block, pool, fc) with random weights."""

    def __init__(self, classes: int = N_CLASSES):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 7, 4, 3), nn.BatchNorm2d(16), nn.ReLU())
        self.block = nn.Sequential(nn.Conv2d(16, 16, 3, 1, 1), nn.BatchNorm2d(16), nn.ReLU(),
                                   nn.Conv2d(16, 16, 3, 1, 1), nn.BatchNorm2d(16))
        self.fc = nn.Linear(16, classes)

    def forward(self, x):
        x = self.stem(x)
        x = torch.relu(x + self.block(x))
        return self.fc(x.mean((2, 3)))


class TinyFCN(nn.Module):
    """An FCN-shaped segmenter (21 classes) with the guide's argmax appended: int class map out."""

    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, 4, 3, 1, 1), nn.ReLU(), nn.Conv2d(4, 21, 1))

    def forward(self, x):
        return self.body(x).argmax(1, keepdim=True)  # per-pixel class ids, as the guide's export.py appends


def cli(*argv: str) -> int:
    """``trtflow ARGV`` in this process (the same as typing it in a shell)."""
    print("$ trtflow " + " ".join(argv))
    return trtflow_cli(list(argv))


def tensorrt_builds() -> bool:
    """True when a TensorRT that can build engines here is installed (TensorRT-RTX builds on the CPU)."""
    try:
        from trtflow.backends.tensorrt.flavor import load_flavor

        load_flavor()
        return True
    except ImportError:
        return False


def classifier(out: Path) -> dict:
    torch.manual_seed(0)
    onnx_path = out / "resnet.onnx"
    from_torch(TinyResNet(), torch.rand(1, 3, 224, 224), onnx_path, input_names=["input"], output_names=["output"],
               dynamic={"input": {0: "batch"}, "output": {0: "batch"}}, exporter=EXPORTER)
    # the guide's ONNXClassifierWrapper takes NHWC batches: embed the transpose in the model
    nhwc, _ = edits.apply("embed-preprocess", onnx_path, layout="nhwc", dtype="float32", scale=1.0)
    fp32_path = save_onnx(nhwc, out / "resnet_nhwc.onnx")
    fp16, report = edits.apply("fp16", fp32_path)
    fp16_path = save_onnx(fp16, out / "resnet_nhwc_fp16.onnx")

    rng = np.random.default_rng(0)
    batch = rng.random((BATCH_SIZE, 224, 224, 3), dtype=np.float32)  # NHWC, as the guide's dummy_input_batch
    with trtflow.load(fp32_path, engine="ort") as fp32_model, trtflow.load(fp16_path, engine="ort") as fp16_model:
        p32 = fp32_model.infer({"input": batch})["output"]
        p16 = fp16_model.infer({"input": batch})["output"]
    agree = float(np.mean(p32.argmax(1) == p16.argmax(1)))
    print(f"classifier: predictions {p32.shape}; FP16 top-1 equals FP32 for {agree:.0%} of the batch")

    built = {}
    if tensorrt_builds():  # the guide's `trtexec --onnx=... --saveEngine=...`, with a profile for batch 64
        for name, path, flags in (("fp32", fp32_path, []), ("fp16", fp16_path, ["--stronglyTyped"])):
            plan = out / f"resnet_engine_{name}.trt"
            rc = cli("trtexec", f"--onnx={path}", f"--saveEngine={plan}", "--buildOnly", *flags,
                     "--minShapes=input:1x224x224x3", f"--optShapes=input:{BATCH_SIZE}x224x224x3",
                     "--maxShapes=input:64x224x224x3")
            built[name] = rc == 0 and plan.exists()
    print("on a TensorRT GPU:")
    print(f"  trtflow trtexec --onnx={fp32_path} --saveEngine=resnet_engine.trt --shapes=input:{BATCH_SIZE}x224x224x3")
    print("  python -c \"import trtflow, numpy as np; m = trtflow.load('resnet_engine.trt'); "
          f"print(m.infer({{'input': np.zeros(({BATCH_SIZE}, 224, 224, 3), np.float32)}})['output'].shape)\"")
    return {"predictions": list(p32.shape), "fp16_top1_agreement": agree, "engines_built": built}


def segmentation(out: Path) -> dict:
    torch.manual_seed(0)
    model = TinyFCN().eval()
    onnx_path = out / "fcn-resnet101.onnx"
    dims = {0: "batch", 2: "height", 3: "width"}
    from_torch(model, torch.rand(1, 3, 256, 256), onnx_path, input_names=["input"], output_names=["output"],
               dynamic={"input": dims, "output": dims}, exporter=EXPORTER)

    image = np.random.default_rng(1).random((1, 3, 1026, 1282), dtype=np.float32)
    with trtflow.load(onnx_path, engine="ort") as engine:
        classes = engine.infer({"input": image})["output"]
    with torch.no_grad():
        expected = model(torch.from_numpy(image)).numpy()
    equal = float(np.mean(classes == expected))  # class ids: exact agreement, not max abs error
    print(f"segmentation: class map {classes.shape} {classes.dtype}; equal to PyTorch at {equal:.4%} of the pixels")

    built = None
    if tensorrt_builds():
        plan = out / "fcn-resnet101.engine"
        guide = ["trtexec", f"--onnx={onnx_path}", "--fp16", "--workspace=64", "--minShapes=input:1x3x256x256",
                 "--optShapes=input:1x3x1026x1282", "--maxShapes=input:1x3x1440x2560", "--buildOnly",
                 f"--saveEngine={plan}"]
        rc = cli(*guide)  # the guide's line as written
        if rc == 1:  # TensorRT-RTX needs more than 64 MiB of workspace at 1440x2560: the message says so
            rc = cli(*[a if a != "--workspace=64" else "--workspace=1024" for a in guide])
        built = rc == 0 and plan.exists()
    print("on a TensorRT GPU:")
    print("  trtflow trtexec --shapes=input:1x3x1026x1282 --loadEngine=fcn-resnet101.engine")
    return {"class_map": list(classes.shape), "dtype": str(classes.dtype), "pixel_agreement": equal,
            "engine_built": built}


def run(out: Path) -> dict:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    return {"classifier": classifier(out), "segmentation": segmentation(out)}


if __name__ == "__main__":
    print(run(Path(sys.argv[1] if len(sys.argv) > 1 else "quickstart_out")))
