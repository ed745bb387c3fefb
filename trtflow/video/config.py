"""Options of a video run (``VideoConfig``) and what it yields per frame (``FrameResult``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

from trtflow.errors import UsageError
from trtflow.spec import is_amount, is_count


@dataclass
class VideoConfig:
    """How ``run_video`` reads, batches and writes.

    Attributes:
        batch: frames per inference batch (across streams).
        push_timeout_ms: send a partial batch once its oldest frame waited this long.
        decode: "cpu" or "nvdec".
        drop_when_behind: live sources drop their oldest waiting frames when inference falls behind.
        queue_frames: frames each stream may queue (0: twice the batch).
        out: annotated video file (one per stream; several streams add ``-s0``, ``-s1``... to the name).
        jsonl: JSON Lines file, one record per frame.
        audio: copy the source's audio into ``out``.
        source_options: FFmpeg demuxer options for cameras and network sources.
        timeout_s: seconds to open a network source or camera (and per read).
        max_frames: frames to read per stream (None: all).
        encoder_options: libx264 options (None: preset veryfast, crf 23).
        device: "cuda" or "cpu" for preprocessing (None: the task's device).
        post_workers: threads running ``task.finish`` (batches leave in order whatever finishes first;
            the task's ``finish`` must be thread-safe, as trtflow's tasks are).
    """

    batch: int = 8
    push_timeout_ms: float = 40.0
    decode: str = "cpu"
    drop_when_behind: bool = False
    queue_frames: int = 0
    out: Optional[str] = None
    jsonl: Optional[str] = None
    audio: bool = True
    source_options: dict = field(default_factory=dict)
    timeout_s: float = 10.0
    max_frames: Optional[int] = None
    encoder_options: Optional[dict] = None
    device: Optional[str] = None
    post_workers: int = 2

    def __post_init__(self) -> None:
        """Refuse what cannot be meant (the CLI's flags refuse the same values)."""
        for name, least in (("batch", 1), ("queue_frames", 0), ("post_workers", 1)):
            if not is_count(getattr(self, name), least):
                raise UsageError(f"VideoConfig {name} must be a whole number >= {least}, got {getattr(self, name)!r}")
        if self.max_frames is not None and not is_count(self.max_frames, 0):
            raise UsageError(f"VideoConfig max_frames must be a whole number >= 0 or None (every frame), "
                             f"got {self.max_frames!r}")
        for name, positive in (("push_timeout_ms", False), ("timeout_s", True)):
            value = getattr(self, name)
            if not is_amount(value) or positive and value == 0:
                raise UsageError(f"VideoConfig {name} must be a finite number {'>' if positive else '>='} 0, "
                                 f"got {value!r}")


@dataclass
class FrameResult:
    """A task's result for one frame of a stream.

    Attributes:
        stream, frame, pts, time: the frame's tag (see ``Frame``).
        result: the task's result (``to_dict()``, ``draw(image)``).
        image: the decoded RGB frame when kept (``Predictor.stream(..., images=True)``), else None.
    """

    stream: int
    frame: int
    pts: Optional[int]
    time: Optional[float]
    result: Any
    image: Any = None

    def to_dict(self) -> dict:
        """``{"stream", "frame", "pts", "time", ...task fields}``.

        Raises:
            UsageError: a task field is named like one of the four tags (it would overwrite it).
        """
        record = {"stream": self.stream, "frame": self.frame, "pts": self.pts, "time": self.time}
        fields = self.result.to_dict()
        clash = [key for key in record if key in fields]
        if clash:
            raise UsageError(f"the result of stream {self.stream} frame {self.frame} has the field(s) "
                             f"{', '.join(clash)}, which tag every record (stream, frame, pts, time); rename them "
                             "in the post-processing function")
        record.update(fields)
        return record
