"""The video pipeline: decode -> batch -> host-to-device -> preprocess -> infer -> post-process ->
write, the stages in their own threads (host-to-device shares the preprocessing thread) joined by
bounded queues, so a light model runs at the decoder's speed.

A task is any object with ``prepare(frames) -> (feed, metas)``, ``engine`` (an ``Engine``) and
``finish(outputs, metas) -> results`` (one result per frame, each with ``to_dict()`` and
``draw(image)``), as ``trtflow.tasks.make_task`` returns. Given several tasks (one per GPU), each
runs in its own lane (preprocess and infer threads, CUDA streams, pinned buffers) and each batch
goes to the lane with the fewest batches in flight; results still leave in order.
"""

from __future__ import annotations

import logging
import os
import queue
import sys
import threading
import time
from typing import Any, Callable, Iterator, Optional

import numpy as np

from trtflow.backends.devices import LeastLoaded
from trtflow.errors import EngineError, TrtflowError, UsageError
from trtflow.progress import Progress, report
from trtflow.tasks.results import to_host
from trtflow.video.config import FrameResult, VideoConfig
from trtflow.video.lanes import Lane
from trtflow.video.muxer import Muxer
from trtflow.video.sinks import JsonlWriter, VideoWriter, output_paths
from trtflow.video.sources import Frame, Source, local_path, open_sources
from trtflow.video.summary import StageClock, Summary, summarize

log = logging.getLogger(__name__)

STAGES = ("decode", "h2d", "preprocess", "infer", "postprocess", "write")
_END = object()
SWITCH_INTERVAL_S = 0.0005  # Python's default 5 ms would make each kernel launch wait on busy threads


class _Stopped(Exception):
    pass


class Pipeline:
    """One run of the pipeline over opened sources. Use ``run()`` or iterate ``results()``.

    ``task`` is one task, or a list of tasks (one per GPU, ``config.device`` then unused) that
    share the batches: each goes to the least-loaded one.
    """

    def __init__(self, task: Any, sources: list[Source], config: VideoConfig,
                 progress: Optional[Progress] = None, keep_images: bool = False):
        tasks = list(task) if isinstance(task, (list, tuple)) else [task]
        if not tasks:
            raise EngineError("the video pipeline needs at least one task")
        self.task = tasks[0]
        self.lanes = [Lane(i, t, config.device if len(tasks) == 1 else None, max(1, config.batch))
                      for i, t in enumerate(tasks)]
        self.router = LeastLoaded(len(self.lanes))
        self.lane_queues = [(queue.Queue(maxsize=2), queue.Queue(maxsize=2)) for _ in self.lanes]
        self.sources = sources
        self.config = config
        self.progress = report(progress)
        self.keep_images = keep_images
        self.clocks = {name: StageClock(name) for name in STAGES}
        self.stop = threading.Event()
        self.errors: list[tuple[str, BaseException]] = []
        capacity = config.queue_frames or 2 * max(1, config.batch)
        self.muxer = Muxer(len(sources), config.batch, config.push_timeout_ms / 1e3, capacity,
                           [s.live for s in sources], config.drop_when_behind)
        self.queues = [queue.Queue(maxsize=2) for _ in range(3)]  # [1]: to post-processing, [2]: to the sink
        self.video_writers: list[Optional[VideoWriter]] = [None] * len(sources)
        self.jsonl: Optional[JsonlWriter] = None
        self.frames_out = 0
        self._lock = threading.Lock()

    # -- running ---------------------------------------------------------------------------
    def results(self) -> Iterator[FrameResult]:
        """Run the pipeline, yielding each frame's result in order (per stream); writes outputs too."""
        out: queue.Queue = queue.Queue(maxsize=64)
        try:
            self._open_outputs()
        except BaseException:  # nothing ran yet: close what was opened, the sources too
            self._close_outputs()
            self.close_sources()
            raise
        start = time.perf_counter()
        threads = [threading.Thread(target=self._guard, args=("decode", self._decode, s), daemon=True,
                                    name=f"trtflow-decode-{s.stream}") for s in self.sources]
        threads.append(threading.Thread(target=self._guard, args=("batch", self._dispatch, None), daemon=True,
                                        name="trtflow-batch"))
        posts = max(1, self.config.post_workers)
        self._running = {"infer": len(self.lanes), "postprocess": posts}  # threads left; the last one ends the queue
        for lane in self.lanes:
            threads += [threading.Thread(target=self._guard, args=(name, fn, lane), daemon=True,
                                         name=f"trtflow-{name}-{lane.index}")
                        for name, fn in (("preprocess", self._prepare), ("infer", self._infer))]
        threads += [threading.Thread(target=self._guard, args=("postprocess", self._post, i), daemon=True,
                                     name=f"trtflow-postprocess-{i}") for i in range(posts)]
        threads.append(threading.Thread(target=self._guard, args=("write", self._sink, out), daemon=True,
                                        name="trtflow-encode"))
        switch = sys.getswitchinterval()
        sys.setswitchinterval(min(switch, SWITCH_INTERVAL_S))  # the infer thread launches kernels: hand it the GIL quickly
        for t in threads:
            t.start()
        try:
            while True:
                item = out.get()
                if item is _END:
                    break
                yield item
        finally:
            self.stop.set()
            self.muxer.stop()
            for t in threads:
                t.join()
            sys.setswitchinterval(switch)
            self._close_outputs()
            self.close_sources()
            self.wall_s = time.perf_counter() - start
        self._raise()

    def close_sources(self) -> None:
        for s in self.sources:
            s.close()

    def run(self) -> Summary:
        """Run to the end and return the summary."""
        for _ in self.results():
            pass
        return self.summary()

    def summary(self) -> Summary:
        return summarize(self)

    # -- stages ----------------------------------------------------------------------------
    def _guard(self, stage: str, fn: Callable, arg: Any) -> None:
        try:
            fn(arg)
        except _Stopped:
            pass
        except BaseException as exc:  # handed to the caller's thread by _raise()
            self.errors.append((stage, exc))
            self.stop.set()
            self.muxer.stop()
        finally:
            if stage == "decode":
                self.muxer.close(arg.stream)
            elif stage == "write":
                _put_final(arg, _END, self.stop)
            elif stage == "batch":
                for inbox, _ in self.lane_queues:
                    _put_final(inbox, _END, self.stop)
            elif stage == "preprocess":
                _put_final(self.lane_queues[arg.index][1], _END, self.stop)
            elif stage in self._running:
                with self._lock:
                    self._running[stage] -= 1
                    last = self._running[stage] == 0
                if last:
                    _put_final(self.queues[1 if stage == "infer" else 2], _END, self.stop)

    def _put(self, q: queue.Queue, item: Any) -> None:
        while True:
            if self.stop.is_set():
                raise _Stopped
            try:
                q.put(item, timeout=0.1)
                return
            except queue.Full:
                continue

    def _get(self, q: queue.Queue) -> Any:
        while True:
            try:
                return q.get(timeout=0.1)
            except queue.Empty:
                if self.stop.is_set():
                    raise _Stopped from None

    def _decode(self, source: Source) -> None:
        clock = self.clocks["decode"]
        writer = self.video_writers[source.stream]
        on_audio = writer.add_audio if writer is not None and writer.audio_out is not None else None
        frames = source.frames(self.stop, on_audio)
        while True:
            t0 = time.perf_counter()
            frame = next(frames, None)
            if frame is None:
                return
            clock.add(time.perf_counter() - t0, 1)
            if not self.muxer.put(frame):
                return

    def _dispatch(self, _: Any) -> None:
        """Batches from the muxer, split by frame size, each to the least-loaded lane, numbered in order."""
        seq = 0
        while True:
            batch = self.muxer.next_batch()
            if batch is None:
                return
            for group in _same_shape(batch):
                lane = self.router.acquire()  # released once the lane's inference of this group is done
                self._put(self.lane_queues[lane][0], (seq, group))
                seq += 1

    def _prepare(self, lane: Lane) -> None:
        lane.set_current()
        inbox, outbox = self.lane_queues[lane.index]
        h2d, prep = self.clocks["h2d"], self.clocks["preprocess"]
        drop_images = not self.keep_images and self.config.out is None
        while True:
            item = self._get(inbox)
            if item is _END:
                return
            seq, group = item
            images = [f.image for f in group]
            if lane.device is not None:
                t0 = time.perf_counter()
                images = lane.upload(images)
                h2d.add(time.perf_counter() - t0, len(group))
            t0 = time.perf_counter()
            feed, metas = lane.on_stream(lane.task.prepare, images)
            prep.add(time.perf_counter() - t0, len(group))
            if drop_images:
                for f in group:
                    f.image = None
            self._put(outbox, (seq, group, feed, metas))

    def _infer(self, lane: Lane) -> None:
        lane.set_current()
        engine, clock = lane.task.engine, self.clocks["infer"]
        inbox, stream = self.lane_queues[lane.index][1], lane.infer_stream()
        while True:
            item = self._get(inbox)
            if item is _END:
                return
            seq, group, feed, metas = item
            t0 = time.perf_counter()
            try:
                # engines may reuse output buffers (CUDA graphs, TensorRT): _own copies them
                outputs = lane.on_stream(_infer_owned, lane.task, feed, stream=stream)
            except TrtflowError:
                raise
            except Exception as exc:
                raise EngineError(f"the {engine.name} engine failed on a batch of {len(group)} frames: {exc}") from exc
            finally:
                self.router.release(lane.index)
            clock.add(time.perf_counter() - t0, len(group))
            self._put(self.queues[1], (seq, group, outputs, metas, lane))

    def _post(self, worker: int) -> None:
        # each worker brings results to the host on its own CUDA stream (one per lane), not queued
        # behind the next batch's inference on the default stream
        clock = self.clocks["postprocess"]
        while True:
            item = self._get(self.queues[1])
            if item is _END:
                self._put(self.queues[1], _END)  # for the other post-processing workers
                return
            seq, group, outputs, metas, lane = item
            t0 = time.perf_counter()
            results = lane.on_stream(lane.task.finish, outputs, metas, stream=lane.post_stream(worker))
            clock.add(time.perf_counter() - t0, len(group))
            if len(results) != len(group):
                raise EngineError(f"the task returned {len(results)} results for {len(group)} frames")
            self._put(self.queues[2], (seq, group, results))

    def _sink(self, out: queue.Queue) -> None:
        clock = self.clocks["write"]
        total = _known_total(self.sources, self.config.max_frames)
        last_report = time.perf_counter()
        start = last_report
        pending: dict = {}  # batches post-processed out of order, by sequence number
        expect = 0
        while True:
            if expect in pending:
                group, results = pending.pop(expect)
                expect += 1
            else:
                item = self._get(self.queues[2])
                if item is _END:
                    return
                pending[item[0]] = item[1:]
                continue
            t0 = time.perf_counter()
            writing = any(self.video_writers[f.stream] is not None for f in group)
            images = to_host([f.image for f in group]) if writing else [None] * len(group)
            for frame, result, image in zip(group, results, images):
                tagged = FrameResult(frame.stream, frame.index, frame.pts, frame.time, result)
                if self.jsonl is not None:
                    self.jsonl.write(tagged.to_dict())
                writer = self.video_writers[frame.stream]
                if writer is not None:
                    writer.write(np.asarray(result.draw(image)), frame.pts)
                if self.keep_images:
                    tagged.image = frame.image
                frame.image = None
                self.frames_out += 1
                self._put(out, tagged)
            clock.add(time.perf_counter() - t0, len(group))
            now = time.perf_counter()
            if now - last_report > 0.5:
                last_report = now
                fps = self.frames_out / (now - start)
                self.progress(f"video: {self.frames_out} frames, {fps:.1f} frames/s", self.frames_out, total)

    # -- helpers ---------------------------------------------------------------------------
    def _open_outputs(self) -> None:
        cfg = self.config
        outs = output_paths(cfg.out, len(self.sources)) if cfg.out else []
        jsonl = [("--jsonl", cfg.jsonl)] if cfg.jsonl else []
        _refuse_overwrites(self.sources, [("--out", path) for path in outs] + jsonl)
        for source, path in zip(self.sources, outs):
            self.video_writers[source.stream] = VideoWriter(
                path, source.fps, source.time_base, source.audio if cfg.audio else None,
                options=cfg.encoder_options)
        if cfg.jsonl:
            self.jsonl = JsonlWriter(cfg.jsonl)

    def _close_outputs(self) -> None:
        for writer in self.video_writers:
            if writer is not None:
                try:
                    writer.close()
                except Exception as exc:  # keep the first error of the run, if any
                    self.errors.append(("write", exc))
        if self.jsonl is not None:
            self.jsonl.close()

    def _raise(self) -> None:
        if not self.errors:
            return
        stage, exc = self.errors[0]
        if isinstance(exc, TrtflowError):
            raise exc
        raise EngineError(f"the video pipeline failed in its {stage} stage: {type(exc).__name__}: {exc}") from exc


def _infer_owned(task: Any, feed: dict) -> dict:
    return _own(task.infer(feed))


def _own(outputs: dict) -> dict:
    """Outputs the next inference cannot overwrite: CUDA tensors are copied on the device (cheap);
    numpy and CPU outputs are the engines' fresh arrays already."""
    out = {}
    for name, value in outputs.items():
        is_cuda = getattr(value, "is_cuda", False)
        out[name] = value.clone() if is_cuda else value
    return out


def _same_shape(batch: list[Frame]) -> list[list[Frame]]:
    """Split a batch into runs of frames of one size (a model takes one shape per batch), in an
    order that keeps each stream's frames in order: a stream whose frames change size inside the
    batch starts a later run at each change (streams of one size each stay in one run)."""
    groups: dict = {}
    last: dict = {}  # stream -> (its run number, its last shape)
    for f in batch:
        shape = tuple(f.image.shape)
        run, prev = last.get(f.stream, (0, shape))
        if shape != prev:
            run += 1
        last[f.stream] = (run, shape)
        groups.setdefault((run, shape), []).append(f)
    return [groups[k] for k in sorted(groups, key=lambda k: k[0])]  # stable: first seen first within a run


def _refuse_overwrites(sources: list[Source], outputs: list[tuple[str, str]]) -> None:
    """Refuse an output (flag, path) that is a source file or another output: opening it for
    writing would truncate a file being read (the input lost) or mix two outputs in one file.

    Raises:
        UsageError: naming the output and the file it would overwrite.
    """
    taken: dict = {}
    for source in sources:
        if source.kind == "file":
            taken[_file_key(local_path(source.uri))] = f"source '{source.uri}'"
    for flag, path in outputs:
        key = _file_key(path)
        if key in taken:
            raise UsageError(f"{flag} '{path}' is {taken[key]}: writing it would overwrite that file while the run "
                             "reads or writes it; give another path")
        taken[key] = f"the {flag} file"


def _file_key(path: str) -> Any:
    """What identifies a file: its device and inode when it exists (links, other spellings), else its real path."""
    try:
        st = os.stat(path)
        return st.st_dev, st.st_ino
    except OSError:
        return os.path.realpath(path)


def _known_total(sources: list[Source], max_frames: Optional[int]) -> Optional[int]:
    if any(s.live for s in sources):
        return None
    counts = [s.stats.expected for s in sources]
    if any(c is None for c in counts):
        return None
    return sum(min(c, max_frames) if max_frames is not None else c for c in counts)


def _put_final(q: queue.Queue, item: Any, stop: threading.Event) -> None:
    while True:
        try:
            q.put(item, timeout=0.1)
            return
        except queue.Full:
            if not stop.is_set():
                continue
            try:
                q.get_nowait()  # stopping: the consumer may be gone; make room for the end marker
            except queue.Empty:
                pass


def run_video(sources: list[str], task: Any, config: Optional[VideoConfig] = None,
              progress: Optional[Progress] = None) -> Summary:
    """Run ``task`` over every frame of ``sources`` and write ``config.out`` / ``config.jsonl``.

    Args:
        sources: files, image folders, ``/dev/videoN`` or URLs (stream ids 0, 1, ... in order).
        task: a task from ``trtflow.tasks.make_task`` (or any object with its interface).
        config: batching, decoding and outputs.
        progress: called with frames done and frames/s.

    Returns:
        The ``Summary``: frames in/out/dropped, per-stage FPS, where the time went, decoders.

    Raises:
        UsageError: a source cannot be opened, or an output cannot be written.
        EngineError: inference or post-processing failed.
    """
    return open_pipeline(sources, task, config or VideoConfig(), progress).run()


def open_pipeline(sources: list[str], task: Any, config: VideoConfig, progress: Optional[Progress] = None,
                  keep_images: bool = False) -> Pipeline:
    """Open ``sources`` and build the pipeline over them; the sources are closed if that fails."""
    opened = open_sources(sources, config.decode, config.source_options, config.timeout_s,
                          config.max_frames, audio=bool(config.out and config.audio))
    try:
        return Pipeline(task, opened, config, progress, keep_images=keep_images)
    except BaseException:
        for s in opened:
            s.close()
        raise
