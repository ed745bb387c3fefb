"""A rich progress bar fed by TensorRT's ``IProgressMonitor`` (TensorRT >= 10 and TensorRT-RTX have it).

TensorRT reports nested phases ("Building engine" > "Timing tactics" > ...); the bar advances on
the top-level phase's steps and its text shows the innermost phase running now.
"""

from __future__ import annotations

import contextlib
import threading
from typing import Any, Iterator


def monitor_class(trt: Any) -> type:
    """An ``IProgressMonitor`` subclass for the given TensorRT module, driving a rich task."""

    class BuildMonitor(trt.IProgressMonitor):
        def __init__(self, bar: Any, task: Any):
            trt.IProgressMonitor.__init__(self)
            self._bar, self._task = bar, task
            self._lock = threading.Lock()
            self._stack: list[str] = []
            self._top: str | None = None

        def phase_start(self, phase_name: str, parent_phase: str | None, num_steps: int) -> None:
            with self._lock:
                if parent_phase is None and self._top is None:
                    self._top = phase_name
                    self._bar.update(self._task, total=max(num_steps, 1), completed=0)
                self._stack.append(phase_name)
                self._bar.update(self._task, description=f"building: {phase_name}")

        def step_complete(self, phase_name: str, step: int) -> bool:
            if phase_name == self._top:
                self._bar.update(self._task, completed=step + 1)
            return True  # False would cancel the build

        def phase_finish(self, phase_name: str) -> None:
            with self._lock:
                if phase_name in self._stack:
                    self._stack.remove(phase_name)
                if phase_name == self._top:
                    task = self._bar.tasks[0] if self._bar.tasks else None
                    self._bar.update(self._task, completed=task.total if task else None)
                current = self._stack[-1] if self._stack else "done"
                self._bar.update(self._task, description=f"building: {current}")

    return BuildMonitor


@contextlib.contextmanager
def build_progress(trt: Any, enabled: bool = True) -> Iterator[Any]:
    """Yield an ``IProgressMonitor`` showing a bar on stderr, or None when disabled or unavailable."""
    if not enabled or not hasattr(trt, "IProgressMonitor"):
        yield None
        return
    from trtflow.cli.output import progress

    with progress("building") as bar:
        task = bar.add_task("building: parsing", total=None)
        yield monitor_class(trt)(bar, task)
