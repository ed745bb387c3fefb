"""TensorRT's ``IProgressMonitor`` (TensorRT >= 10 and TensorRT-RTX) feeding a ``trtflow.progress.Progress``.

TensorRT reports nested phases ("Building engine" > "Timing tactics" > ...); the callback gets the
innermost phase running now as the step, and the top-level phase's steps as done/total.
"""

from __future__ import annotations

import threading
from typing import Any, Optional

from trtflow.progress import Progress, report


def monitor_for(trt: Any, progress: Optional[Progress]) -> Optional[Any]:
    """An ``IProgressMonitor`` forwarding to ``progress``, or None (no callback, or a TensorRT without it)."""
    if progress is None or not hasattr(trt, "IProgressMonitor"):
        return None
    progress = report(progress)

    class BuildMonitor(trt.IProgressMonitor):
        def __init__(self) -> None:
            trt.IProgressMonitor.__init__(self)
            self._lock = threading.Lock()
            self._stack: list[str] = []
            self._top: Optional[str] = None
            self._total: Optional[float] = None
            self._done = 0.0

        def _emit(self) -> None:
            current = self._stack[-1] if self._stack else "done"
            progress(f"building: {current}", self._done, self._total)

        def phase_start(self, phase_name: str, parent_phase: Optional[str], num_steps: int) -> None:
            with self._lock:
                if parent_phase is None and self._top is None:
                    self._top, self._total, self._done = phase_name, float(max(num_steps, 1)), 0.0
                self._stack.append(phase_name)
                self._emit()

        def step_complete(self, phase_name: str, step: int) -> bool:
            with self._lock:
                if phase_name == self._top:
                    self._done = float(step + 1)
                    self._emit()
            return True  # False would cancel the build

        def phase_finish(self, phase_name: str) -> None:
            with self._lock:
                if phase_name in self._stack:
                    self._stack.remove(phase_name)
                if phase_name == self._top and self._total is not None:
                    self._done = self._total
                self._emit()

    return BuildMonitor()
