"""PyTorch -> ONNX -> TensorRT for a detector with three inputs, done with trtflow.

The guide's journey: a detector taking ``images``, ``images_width_height`` and ``pixel_mean_std``
(the normalization runs inside the model), exported with a dynamic batch, simplified, NMS
appended with onnx-graphsurgeon, fixed to a static batch, and run by a ``Predictor`` that
batches images, resizes them with padding (bottom-right, as the guide's ``resize_padding``) and
maps the boxes back to each image's pixels. A tiny random-weight detector stands in for the
guide's model so the script runs in seconds on a CPU (ONNX Runtime; TensorRT-RTX builds the
model before NMS, which it has no kernel for); the TensorRT commands are printed.

    python examples/detector/detector.py OUT_DIR
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch
from torch import nn

import trtflow
from trtflow import edits
from trtflow.export import from_torch
from trtflow.graph.io import save_onnx
from trtflow.tasks import Detections, FrameMeta, Task
from trtflow.vision.preprocess import letterbox

SIZE = 128          # the network input (the guide's cfg.MODEL.INPUT.SIZE)
BATCH = 4           # the static batch of the engine
LABELS = ["person", "car"]
MEAN_STD = (127.5, 127.5)  # per image: (mean, std) of the 0..255 pixels, the guide's pixel_mean_std


class GuideDetector(nn.Module):
    """The guide's ``OnnxModel``: normalization inside, boxes scaled to the image by its size.

    Outputs ``bboxes`` (B, N, 4) xyxy normalized to each image (padding at the bottom-right)
    and ``classification`` (B, N, 2) class scores.
    """

    def __init__(self, stride: int = 8):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, 16, 3, 2, 1), nn.ReLU(), nn.Conv2d(16, 32, 3, 2, 1), nn.ReLU(),
                                  nn.Conv2d(32, 6, 3, 2, 1))
        cells = SIZE // stride
        ys, xs = torch.meshgrid(torch.arange(cells), torch.arange(cells), indexing="ij")
        self.register_buffer("grid", (torch.stack([xs, ys], -1).reshape(1, -1, 2).float() + 0.5) * stride)
        self.stride = stride

    def forward(self, images, images_width_height, pixel_mean_std):
        images = (images - pixel_mean_std[:, :1].view(-1, 1, 1, 1)) / pixel_mean_std[:, 1:].view(-1, 1, 1, 1)
        p = self.body(images).flatten(2).transpose(1, 2)                     # B, N, 6
        centre = self.grid + torch.tanh(p[..., :2]) * self.stride           # network pixels
        half = torch.sigmoid(p[..., 2:4]) * SIZE / 4
        bboxes = torch.cat([centre - half, centre + half], -1)
        h, w = images.shape[-2:]
        standard_wh = torch.tensor([[w, h]], dtype=torch.float32)
        wh_scale = images_width_height.max(1, keepdim=True)[0] / (images_width_height * standard_wh)
        bboxes = torch.clamp(bboxes * wh_scale[:, None, :].repeat(1, 1, 2), min=0, max=1)
        return bboxes, torch.sigmoid(p[..., 4:6])


class GuideDetectorTask(Task):
    """The guide's ``Predictor`` as a trtflow task: frames -> the three inputs; NMS outputs -> boxes in pixels."""

    name = "custom"

    def __init__(self, engine: Any, mean_std: Sequence[float] = MEAN_STD, labels: Sequence[str] = LABELS):
        super().__init__(engine, input_name="images", labels=labels)
        self.mean_std = np.asarray(mean_std, np.float32)

    def prepare(self, frames: Sequence[np.ndarray]):
        chw = [np.ascontiguousarray(f.transpose(2, 0, 1), dtype=np.float32) for f in frames]
        images, boxes = letterbox(chw, SIZE, pad_value=float(self.mean_std[0]), pad="bottom-right")
        sizes = np.array([[f.shape[1], f.shape[0]] for f in frames], np.float32)   # (w, h) per image
        feed = {"images": images.astype(np.float32), "images_width_height": sizes,
                "pixel_mean_std": np.tile(self.mean_std, (len(frames), 1))}
        metas = [FrameMeta(b.original, b.size, (b.scale, b.scale), b.pad) for b in boxes]
        return feed, metas

    def finish(self, outputs: Mapping[str, np.ndarray], metas: Sequence[FrameMeta]) -> list:
        results = []
        for i, meta in enumerate(metas):
            n = int(np.asarray(outputs["num_detections"][i]).reshape(-1)[0])
            h, w = meta.size
            boxes = outputs["boxes"][i, :n] * np.array([w, h, w, h], np.float32)  # normalized -> this image's pixels
            classes = outputs["classes"][i, :n].astype(int)
            results.append(Detections(boxes, outputs["scores"][i, :n], classes,
                                      [self.label(c) for c in classes], None))
        return results


def run(out: Path) -> dict:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    model = GuideDetector().eval()
    example = {"images": torch.rand(2, 3, SIZE, SIZE) * 255,
               "images_width_height": torch.tensor([[640.0, 480.0], [320.0, 240.0]]),
               "pixel_mean_std": torch.tensor([MEAN_STD, MEAN_STD])}
    batch = {name: {0: "batch_size"} for name in [*example, "bboxes", "classification"]}
    onnx_path = out / "detector.onnx"
    from_torch(model, example, onnx_path, output_names=["bboxes", "classification"], dynamic=batch,
               exporter="torchscript")
    for name, value in example.items():  # realistic values for the verification of each edit
        np.save(out / f"{name}.npy", value.numpy())
    verify = edits.VerifyConfig(inputs={name: str(out / f"{name}.npy") for name in example})
    simple, _ = edits.apply("simplify", onnx_path, verify_config=verify)                # the guide's onnxsim
    static, _ = edits.apply("fix-shapes", simple, dims={"batch_size": BATCH}, verify=False)
    raw_path = save_onnx(static, out / f"detector_b{BATCH}.onnx")                       # static shapes
    nms, report = edits.apply("add-nms", raw_path, format="boxes-scores", boxes="bboxes", scores="classification",
                              score_thr=0.5, iou_thr=0.5, max_det=20, verify=False)
    nms_path = save_onnx(nms, out / f"detector_b{BATCH}_nms.onnx")

    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for h, w in
              ((480, 640), (240, 320), (720, 1280), (300, 300), (640, 480), (200, 500))]   # 6 images, 4 per batch
    predictor = trtflow.Predictor(task=GuideDetectorTask(trtflow.load(nms_path, engine="ort")), batch=BATCH)
    with predictor:
        results = predictor.predict(images)

    # boxes mapped back: the best detection of each image is the PyTorch model's best raw box in pixels
    task = predictor.task
    checked = 0
    for image, result in zip(images, results):
        feed, _ = task.prepare([image])
        with torch.no_grad():
            boxes, scores = model(*(torch.from_numpy(feed[k]) for k in example))
        if len(result.boxes):
            best = int(scores[0].max(1).values.argmax())
            h, w = image.shape[:2]
            expected = boxes[0, best].numpy() * np.array([w, h, w, h])
            assert np.allclose(result.boxes[0], expected, atol=0.5), (result.boxes[0], expected)
            assert (result.boxes[:, [0, 2]] <= w).all() and (result.boxes[:, [1, 3]] <= h).all()
            checked += 1
    counts = [len(r.boxes) for r in results]
    print(f"detector: {len(images)} images in batches of {BATCH}; detections per image {counts}; "
          f"best box of {checked} images equals PyTorch's, mapped back to the image")
    print(f"  image 0: {results[0].to_dict()['detections'][:1]}")

    built = _build_raw(raw_path, out)
    print("on a TensorRT GPU (TensorRT 10 imports NonMaxSuppression):")
    print(f"  trtflow trtexec --onnx={nms_path.name} --saveEngine=detector.engine --fp16 --buildOnly")
    print("  python -c \"import trtflow; from detector import GuideDetectorTask; "
          "p = trtflow.Predictor(task=GuideDetectorTask(trtflow.load('detector.engine')), batch=4)\"")
    return {"images": len(images), "detections": counts, "checked": checked, "nms_outputs": report.get("details"),
            "engine_built": built}


def _build_raw(raw_path: Path, out: Path) -> bool | None:
    """TensorRT-RTX (no NMS kernel) builds the model from before add-nms; NMS then runs after the engine."""
    try:
        from trtflow.backends.tensorrt.flavor import load_flavor

        load_flavor()
    except ImportError:
        return None
    from trtflow.cli.main import main

    argv = ["trtexec", f"--onnx={raw_path}", f"--saveEngine={out / 'detector_raw.engine'}", "--buildOnly"]
    print("$ trtflow " + " ".join(argv))
    return main(argv) == 0


if __name__ == "__main__":
    print(run(Path(sys.argv[1] if len(sys.argv) > 1 else "detector_out")))
