"""Capturing what a third-party library prints, warns and logs while it runs, for one thread only.

PyTorch's ONNX exporters and ONNX Runtime's quantizer print progress on stdout and warn through
``warnings`` and ``logging``. ``capture_output`` keeps that text out of the user's terminal (and
out of ``--json`` output) and hands it back, while other threads go on printing and logging
normally: ``sys.stdout``/``sys.stderr`` are replaced by streams that send the capturing thread's
writes to its buffer and every other thread's to the stream they replaced; the same holds for
warnings and for the log records of the named loggers.

One capture runs at a time in the process (a lock serialises them), so two exports never mix
their text.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import sys
import tempfile
import threading
import warnings
from contextvars import ContextVar
from typing import Iterator, Sequence

_LOCK = threading.RLock()
_BUFFER: ContextVar[io.StringIO | None] = ContextVar("trtflow_capture_buffer", default=None)


class _Stream:
    """Stands in for ``sys.stdout`` or ``sys.stderr`` during a capture."""

    def __init__(self, real):
        self._real = real
        self.other = real  # where other threads' text goes

    def write(self, text: str) -> int:
        buffer = _BUFFER.get()
        if buffer is not None:
            return buffer.write(text)
        return self.other.write(text) if self.other is not None else len(text)

    def flush(self) -> None:
        if _BUFFER.get() is None and self.other is not None:
            self.other.flush()

    def __getattr__(self, name):
        return getattr(self._real, name)


class _Records(logging.Filter):
    """Keeps the capturing thread's records of the named loggers away from the handlers."""

    def __init__(self, names: Sequence[str]):
        super().__init__()
        self.names = tuple(names)

    def filter(self, record: logging.LogRecord) -> bool:
        buffer = _BUFFER.get()
        if buffer is None or record.levelno >= logging.ERROR:
            return True
        if not any(record.name == n or record.name.startswith(n + ".") for n in self.names):
            return True
        if getattr(record, "_trtflow_captured", False) is not True:  # once, however many handlers see it
            record._trtflow_captured = True
            buffer.write(f"{record.levelname} {record.name}: {record.getMessage()}\n")
        return False


def _handlers(names: Sequence[str] | None) -> list[logging.Handler]:
    """Every handler a record of the named loggers (None: of any logger) can reach (their own, the
    root's, the last resort)."""
    loggers = [logging.root] + [
        logger for name, logger in list(logging.root.manager.loggerDict.items())
        if isinstance(logger, logging.Logger)
        and (names is None or any(name == n or name.startswith(n + ".") for n in names))
    ]
    found = [h for logger in loggers for h in logger.handlers]
    if logging.lastResort is not None:
        found.append(logging.lastResort)
    return list(dict.fromkeys(found))


def _fd_stream(stream: _Stream, fd: int, saved: int) -> None:
    """Point other threads' text at the saved copy of ``fd`` when their stream writes to ``fd``."""
    try:
        if stream.other is None or stream.other.fileno() != fd:
            return
    except (AttributeError, OSError, ValueError):  # io.UnsupportedOperation is an OSError
        return
    stream.other.flush()
    stream.other = open(saved, "w", buffering=1, encoding=getattr(stream.other, "encoding", None) or "utf-8",
                        errors="backslashreplace", closefd=False)


def _to_terminal(streams: dict) -> list[tuple[logging.StreamHandler, object]]:
    """Point the stream handlers that write to the real stdout/stderr (``logging.basicConfig``'s) at
    the saved descriptors while 1 and 2 are redirected, so the records the capture lets through
    (trtflow's, errors, other threads') still reach the terminal. Returns (handler, stream) to restore."""
    swapped = []
    for h in _handlers(None):
        if type(h) is not logging.StreamHandler:  # not a file handler, nor the last resort (it reads sys.stderr)
            continue
        for s in streams.values():
            if h.stream is s._real and s.other is not s._real:
                swapped.append((h, h.setStream(s.other)))
    return swapped


@contextlib.contextmanager
def capture_output(loggers: Sequence[str] = (), fds: bool = False,
                   log: logging.Logger | None = None) -> Iterator[io.StringIO]:
    """Capture the calling thread's prints, warnings and log records (below ERROR) of ``loggers``.

    Args:
        loggers: names of the library's loggers (``"root"`` for ``logging.warning(...)`` calls);
            their records below ERROR logged by this thread go to the buffer. Records of other
            loggers (trtflow's own) and of other threads reach the handlers as usual.
        fds: also redirect file descriptors 1 and 2 for the duration, for text that C++ code writes
            to them directly (the TorchScript exporter prints its graph there when it fails). A file
            descriptor belongs to the whole process: what any thread's native code writes to it
            during the capture is captured too. Other threads' Python-level prints still get
            through when their ``sys.stdout``/``sys.stderr`` write to those descriptors.
        log: when given, the captured text is logged there at debug level once the block ends.

    Yields:
        The buffer; once the block ends it also holds what was written to the descriptors.
    """
    buffer = io.StringIO()
    with _LOCK:
        streams = {"stdout": _Stream(sys.stdout), "stderr": _Stream(sys.stderr)}
        records = _Records(loggers)
        handlers = _handlers(loggers)
        show = warnings.showwarning

        def showwarning(message, category, filename, lineno, file=None, line=None):
            if _BUFFER.get() is None:
                return show(message, category, filename, lineno, file, line)
            _BUFFER.get().write(warnings.formatwarning(message, category, filename, lineno, line))

        for s in streams.values():
            s.flush()
        saved, sink, swapped = [], None, []
        token = _BUFFER.set(buffer)
        try:
            if fds:
                sink = tempfile.TemporaryFile()
                for fd, s in ((1, streams["stdout"]), (2, streams["stderr"])):
                    saved.append(os.dup(fd))
                    _fd_stream(s, fd, saved[-1])
                    os.dup2(sink.fileno(), fd)
                swapped = _to_terminal(streams)
            sys.stdout, sys.stderr = streams["stdout"], streams["stderr"]
            warnings.showwarning = showwarning
            for h in handlers:
                h.addFilter(records)
            yield buffer
        finally:
            for h in handlers:
                h.removeFilter(records)
            if warnings.showwarning is showwarning:
                warnings.showwarning = show
            for h, stream in swapped:
                h.setStream(stream)
            for name, s in streams.items():
                if getattr(sys, name) is s:
                    setattr(sys, name, s._real)
                if s.other is not s._real:  # a wrapper of a saved descriptor: flush it, keep the descriptor
                    wrapper, s.other = s.other, s._real
                    wrapper.close()
            _BUFFER.reset(token)
            for fd, copy in zip((1, 2), saved):
                os.dup2(copy, fd)
                os.close(copy)
            if sink is not None:
                sink.seek(0)
                buffer.write(sink.read().decode("utf-8", "replace"))
                sink.close()
            if log is not None and buffer.getvalue():  # on errors too: --verbose shows what led to them
                log.debug("captured output:\n%s", buffer.getvalue())
