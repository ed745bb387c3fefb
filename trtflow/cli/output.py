"""Printing results: rich tables for people, one JSON object for scripts."""

from __future__ import annotations

import contextlib
import logging
import sys
from typing import Any, Iterable, Iterator, Sequence

from trtflow.arrays import strict_json
from trtflow.progress import Progress

log = logging.getLogger(__name__)


def print_json(data: Any) -> None:
    """One JSON object on stdout; strict JSON: NaN and infinities are written as the strings
    "nan", "inf" and "-inf" (``json`` would write bare ``NaN``, which parsers refuse)."""
    sys.stdout.write(strict_json(data, indent=2) + "\n")


def console(stderr: bool = False):
    from rich.console import Console

    return Console(stderr=stderr, highlight=False, soft_wrap=True)


def print_table(title: str, columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> None:
    """A table on stdout; long cells wrap (words, then characters), never cut to an ellipsis,
    at any width (a pipe gets 80 columns)."""
    from rich.markup import escape
    from rich.table import Table

    # names and paths are data, not rich markup: "probs[b]" would print bold "probs", "[/]" would crash
    table = Table(title=escape(title), title_justify="left")
    for col in columns:
        table.add_column(escape(col), overflow="fold")
    for row in rows:
        table.add_row(*(escape(str(c)) for c in row))
    console().print(table)


@contextlib.contextmanager
def bar(first: str, enabled: bool = True) -> Iterator[Progress]:
    """A transient bar on stderr driven by the library's ``Progress`` callback, which it yields.

    The callback's step becomes the bar's text and ``done``/``total`` its fill (a spinner while the
    total is unknown). Off (steps go to the log) when not enabled or stderr is not a terminal.
    """
    if not enabled or not sys.stderr.isatty():
        log.info(first)
        yield lambda step, done=None, total=None: log.info(step)
        return
    from rich.progress import BarColumn, Progress as RichProgress, SpinnerColumn, TextColumn, TimeElapsedColumn

    err = console(stderr=True)
    rich = RichProgress(SpinnerColumn(), TextColumn("[progress.description]{task.description}"), BarColumn(),
                        TextColumn("{task.percentage:>3.0f}%"), TimeElapsedColumn(), console=err, transient=True,
                        disable=not err.is_terminal)
    with rich as rich_bar:
        task = rich_bar.add_task(first, total=None)

        def update(step: str, done: float | None = None, total: float | None = None) -> None:
            rich_bar.update(task, description=step, completed=done or 0, total=total)

        yield update
