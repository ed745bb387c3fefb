"""The one progress protocol of the library: long work (export, build, bench, edits, video)
reports through a ``Progress`` callback and never draws anything itself.

``progress(step, done, total)``: ``step`` names what runs now; ``done``/``total`` count its
units when known (``total=None``: no known end). The CLI passes a callback that draws a bar;
the Python API passes none, and ``report`` turns None into a no-op.
"""

from __future__ import annotations

from typing import Optional, Protocol

from trtflow.errors import UsageError


class Progress(Protocol):
    """A callable ``(step, done=None, total=None) -> None``."""

    def __call__(self, step: str, done: Optional[float] = None, total: Optional[float] = None) -> None: ...


def silent(step: str, done: Optional[float] = None, total: Optional[float] = None) -> None:
    """A ``Progress`` that ignores every report."""


def report(progress: Optional[Progress]) -> Progress:
    """``progress`` itself, or ``silent`` when None.

    Raises:
        UsageError: ``progress`` is neither None nor callable (e.g. ``progress=True``).
    """
    if progress is None:
        return silent
    if not callable(progress):
        raise UsageError(
            f"progress must be a callable (step, done, total) or None, not {type(progress).__name__}"
        )
    return progress
