"""Batching across frames and streams, like DeepStream's stream muxer.

Each source thread ``put``s its frames into its own bounded queue; ``next_batch`` takes frames
round-robin over the streams and returns a batch when it is full, when ``push_timeout_s`` has
passed since its first frame arrived, or when every stream has ended. Order within a stream is
kept. A full queue blocks its source (files never lose a frame), unless the source is live and
``drop_when_behind`` is set: then its oldest waiting frame is dropped and counted.
"""

from __future__ import annotations

import collections
import threading
import time
from typing import Callable, Optional

from trtflow.video.sources import Frame


class Muxer:
    """Frames from several streams -> batches of up to ``batch`` frames.

    Args:
        streams: number of streams (ids 0..streams-1).
        batch: frames per batch.
        push_timeout_s: send a partial batch once its oldest frame waited this long.
        capacity: frames each stream may queue before ``put`` blocks (or drops, see below).
        live: per stream, whether it is a live source (camera, network).
        drop_when_behind: live streams drop their oldest queued frame instead of blocking.
    """

    def __init__(self, streams: int, batch: int, push_timeout_s: float, capacity: int,
                 live: Optional[list[bool]] = None, drop_when_behind: bool = False):
        self.batch = max(1, int(batch))
        self.push_timeout_s = max(0.0, float(push_timeout_s))
        self.capacity = max(1, int(capacity))
        self.live = list(live) if live is not None else [False] * streams
        self.drop_when_behind = drop_when_behind
        self.queues: list[collections.deque] = [collections.deque() for _ in range(streams)]  # (arrived, frame)
        self.open = [True] * streams
        self.dropped = [0] * streams
        self.on_drop: Optional[Callable[[Frame], None]] = None
        self._cond = threading.Condition()
        self._next = 0  # round-robin start
        self._stopped = False

    def put(self, frame: Frame) -> bool:
        """Queue a frame; False when the muxer was stopped (the source should end)."""
        s = frame.stream
        with self._cond:
            while len(self.queues[s]) >= self.capacity and not self._stopped:
                if self.drop_when_behind and self.live[s]:
                    _, old = self.queues[s].popleft()
                    self.dropped[s] += 1
                    if self.on_drop is not None:
                        self.on_drop(old)
                    break
                self._cond.wait(0.1)
            if self._stopped:
                return False
            self.queues[s].append((time.perf_counter(), frame))
            self._cond.notify_all()
        return True

    def close(self, stream: int) -> None:
        """The stream has ended: no more frames from it."""
        with self._cond:
            self.open[stream] = False
            self._cond.notify_all()

    def stop(self) -> None:
        """End everything: ``put`` returns False, ``next_batch`` returns None."""
        with self._cond:
            self._stopped = True
            self._cond.notify_all()

    def next_batch(self) -> Optional[list[Frame]]:
        """The next batch (1..batch frames), or None once every stream ended and is drained."""
        with self._cond:
            while True:
                if self._stopped:
                    return None
                waiting = sum(len(q) for q in self.queues)
                if waiting >= self.batch or (waiting and self._blocked()):  # blocked covers every stream ended
                    return self._take()
                if not waiting and not any(self.open):
                    return None
                if waiting:
                    oldest = min(q[0][0] for q in self.queues if q)
                    left = oldest + self.push_timeout_s - time.perf_counter()
                    if left <= 0:
                        return self._take()
                    self._cond.wait(left)
                else:
                    self._cond.wait(0.1)

    def _blocked(self) -> bool:
        """Every open stream's queue is full (true when none is open): no frame can arrive before a batch leaves."""
        return all(len(q) >= self.capacity for q, is_open in zip(self.queues, self.open) if is_open)

    def _take(self) -> list[Frame]:
        out: list[Frame] = []
        n = len(self.queues)
        while len(out) < self.batch and any(self.queues):
            for k in range(n):
                s = (self._next + k) % n
                if self.queues[s] and len(out) < self.batch:
                    out.append(self.queues[s].popleft()[1])
            self._next = (self._next + 1) % n
        self._cond.notify_all()
        return out
