"""Printing results: rich tables for people, one JSON object for scripts."""

from __future__ import annotations

import contextlib
import json
import logging
import sys
from typing import Any, Callable, Iterable, Iterator, Sequence

import numpy as np

log = logging.getLogger(__name__)


def _default(obj: Any):
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if hasattr(obj, "to_dict"):
        return obj.to_dict()
    return str(obj)


def print_json(data: Any) -> None:
    """One JSON object on stdout."""
    sys.stdout.write(json.dumps(data, indent=2, default=_default) + "\n")


def console(stderr: bool = False):
    from rich.console import Console

    return Console(stderr=stderr, highlight=False, soft_wrap=True)


def print_table(title: str, columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> None:
    from rich.table import Table

    table = Table(title=title, title_justify="left")
    for col in columns:
        table.add_column(col)
    for row in rows:
        table.add_row(*(str(c) for c in row))
    console().print(table)


def progress(description: str, total: float | None = None):
    """A rich progress bar on stderr (so --json stdout stays clean); use as a context manager.

    Off when stderr is not a terminal (CI, pipes), so an error stays the one line on stderr.
    """
    from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    err = console(stderr=True)
    return Progress(
        SpinnerColumn(), TextColumn("[progress.description]{task.description}"), BarColumn(),
        TextColumn("{task.percentage:>3.0f}%"), TimeElapsedColumn(), console=err, transient=True,
        disable=not err.is_terminal,
    )


@contextlib.contextmanager
def steps(first: str) -> Iterator[Callable[[str], None]]:
    """A transient spinner on stderr naming the current step; yields ``step(text)``.

    When stderr is not a terminal the steps go to the log instead.
    """
    if not sys.stderr.isatty():
        log.info(first)
        yield log.info
        return
    with progress(first) as bar:
        task = bar.add_task(first, total=None)
        yield lambda text: bar.update(task, description=text)
