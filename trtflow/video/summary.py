"""Per-stage clocks and the final summary of a video run: frames in/out/dropped, FPS per stage,
where the time went, which decoder ran."""

from __future__ import annotations

import threading
from dataclasses import asdict, dataclass, field
from typing import Any


class StageClock:
    """Busy time and frames of one pipeline stage (summed over its threads)."""

    def __init__(self, name: str):
        self.name = name
        self.busy_s = 0.0
        self.frames = 0
        self.calls = 0
        self._lock = threading.Lock()

    def add(self, seconds: float, frames: int) -> None:
        with self._lock:
            self.busy_s += seconds
            self.frames += frames
            self.calls += 1


@dataclass
class Summary:
    """What a video run did.

    Attributes:
        frames_in: frames decoded (all streams).
        frames_out: frames that went through the model and were written/returned.
        dropped: frames live sources dropped because inference fell behind.
        corrupt: corrupt packets or frames skipped or concealed by the decoder.
        missing: frames judged lost inside streams from gaps in their timestamps (damaged data).
        wall_s: seconds from start to the last frame written.
        fps: ``frames_out / wall_s``.
        engine: the engine that ran the model.
        decoders: the decoder of each stream, in words.
        stages: stage -> ``{"busy_s", "frames", "fps", "share"}``: ``fps`` is frames per busy
            second of that stage alone, ``share`` its busy time over the wall time (stages run in
            parallel, so shares add up to more than 1; the largest is the bottleneck).
        bottleneck: the stage with the most busy time.
        streams: per stream: source, kind, size, rate, decoder, decoded/dropped/corrupt counts,
            whether it ended early, and its messages.
        outputs: files written (a video output that got no frame is not written).
    """

    frames_in: int
    frames_out: int
    dropped: int
    corrupt: int
    missing: int
    wall_s: float
    fps: float
    engine: str
    decoders: list[str]
    stages: dict
    bottleneck: str
    streams: list[dict] = field(default_factory=list)
    outputs: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)

    @property
    def ended_early(self) -> list[int]:
        """Ids of the streams that ended before their declared end."""
        return [s["stream"] for s in self.streams if s["ended_early"]]


def summarize(pipeline: Any) -> Summary:
    """The ``Summary`` of a finished ``Pipeline``."""
    wall = max(getattr(pipeline, "wall_s", 0.0), 1e-9)
    stages = {}
    for name, clock in pipeline.clocks.items():
        if not clock.calls:
            continue
        stages[name] = {
            "busy_s": round(clock.busy_s, 4),
            "frames": clock.frames,
            "fps": round(clock.frames / clock.busy_s, 2) if clock.busy_s > 0 else None,
            "share": round(clock.busy_s / wall, 3),
        }
    streams = []
    for source, dropped in zip(pipeline.sources, pipeline.muxer.dropped):
        source.stats.dropped = dropped
        info = source.describe()
        st = source.stats
        info.update(decoded=st.decoded, dropped=dropped, corrupt=st.corrupt, missing=st.missing, ended_early=st.ended_early,
                    expected=st.expected, messages=list(st.errors))
        streams.append(info)
    outputs = [w.path for w in pipeline.video_writers if w is not None and w.frames]  # no frame: no file
    if pipeline.jsonl is not None:
        outputs.append(pipeline.jsonl.path)
    bottleneck = max(stages, key=lambda k: stages[k]["busy_s"]) if stages else ""
    frames_in = sum(s["decoded"] for s in streams)
    return Summary(
        frames_in=frames_in,
        frames_out=pipeline.frames_out,
        dropped=sum(s["dropped"] for s in streams),
        corrupt=sum(s["corrupt"] for s in streams),
        missing=sum(s["missing"] for s in streams),
        wall_s=round(wall, 4),
        fps=round(pipeline.frames_out / wall, 2),
        engine=getattr(getattr(pipeline.task, "engine", None), "name", "?"),
        decoders=sorted({s["decoder"] for s in streams}),
        stages=stages,
        bottleneck=bottleneck,
        streams=streams,
        outputs=outputs,
    )


def stage_rows(summary: Summary) -> list[tuple]:
    """(stage, frames, busy s, frames/s, share of wall) rows for a table."""
    return [(name, v["frames"], f"{v['busy_s']:.3f}", f"{v['fps']:.1f}" if v["fps"] else "-",
             f"{100 * v['share']:.0f} %") for name, v in summary.stages.items()]
