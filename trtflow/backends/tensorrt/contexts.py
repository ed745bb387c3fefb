"""A bounded pool of execution states, handed out one call at a time.

TensorRT wants one execution context per concurrent caller; the engine is shared. Keeping one
per thread forever makes servers and thread pools grow GPU memory with every thread they ever
ran. The pool instead creates a state only when every existing one is busy, up to ``limit``
(callers beyond that wait), and any thread reuses an idle one. ``close`` frees idle states at
once and busy ones as their calls finish; ``on_drained`` runs when the last one is gone, so the
engine outlives every context that still has work in flight.
"""

from __future__ import annotations

import contextlib
import threading
from typing import Any, Callable, Iterator

from trtflow.errors import EngineError, UsageError


class ContextPool:
    """At most ``limit`` states made by ``make()``; ``acquire()`` lends one for a ``with`` block.

    Args:
        make: creates a state (an ``ExecutionState``); it must have ``close()``.
        limit: the most states alive at once.
        on_drained: called once after ``close()`` when no state is left.

    Attributes:
        created: how many states were ever made (tests and debug logs read it).
    """

    def __init__(self, make: Callable[[], Any], limit: int, on_drained: Callable[[], None] = lambda: None):
        if limit < 1:
            raise UsageError(f"max_contexts must be >= 1, got {limit}")
        self._make, self._limit, self._on_drained = make, limit, on_drained
        self._idle: list[Any] = []
        self._alive = 0
        self._busy = 0
        self._closed = False
        self._cond = threading.Condition()
        self.created = 0

    @contextlib.contextmanager
    def acquire(self) -> Iterator[Any]:
        """Lend an idle state, make one, or wait for one.

        Raises:
            EngineError: the pool is closed.
        """
        state = self._take()
        try:
            yield state
        finally:
            self._give(state)

    def _take(self) -> Any:
        with self._cond:
            while True:
                if self._closed:
                    raise EngineError("the tensorrt engine is closed; load the model again (trtflow.load) to run it")
                if self._idle:
                    self._busy += 1
                    return self._idle.pop()
                if self._alive < self._limit:
                    self._alive += 1
                    self._busy += 1
                    break
                self._cond.wait()
        try:
            state = self._make()
        except BaseException:
            self._give(None)
            raise
        with self._cond:
            self.created += 1
        return state

    def _give(self, state: Any) -> None:
        with self._cond:
            self._busy -= 1
            if state is not None and not self._closed:
                self._idle.append(state)
                self._cond.notify()
                return
            self._alive -= 1
            drained = self._closed and self._alive == 0
            self._cond.notify()
        if state is not None:
            state.close()
        if drained:
            self._on_drained()

    @property
    def alive(self) -> int:
        """States that exist now, idle or busy."""
        return self._alive

    def close(self) -> None:
        """Refuse new calls; free idle states now and busy ones when their calls return."""
        with self._cond:
            if self._closed:
                return
            self._closed = True
            idle, self._idle = self._idle, []
            self._alive -= len(idle)
            drained = self._alive == 0
            self._cond.notify_all()
        for state in idle:
            state.close()
        if drained:
            self._on_drained()
