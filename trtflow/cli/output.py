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
    """A console that prints text as it is: names and paths are data, not rich markup ("probs[b]"
    would print a bold "probs", "[/]" would crash). Styled text passes ``markup=True`` and escapes
    the data in it (``styled``)."""
    from rich.console import Console

    return Console(stderr=stderr, highlight=False, soft_wrap=True, markup=False)


def styled(style: str, word: str, rest: str) -> str:
    """``word`` in ``style``, then ``rest`` (data, escaped), for ``print(..., markup=True)``."""
    from rich.markup import escape

    return f"[{style}]{word}[/]{escape(rest)}"


def print_table(title: str, columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> None:
    """A table on stdout; long cells wrap (words, then characters), never cut to an ellipsis,
    at any width (a pipe gets 80 columns)."""
    from rich.table import Table

    table = Table(title=title, title_justify="left")  # printed as it is, like all of console()'s text
    for col in columns:
        table.add_column(col, overflow="fold")
    for row in rows:
        table.add_row(*(str(c) for c in row))
    console().print(table)


@contextlib.contextmanager
def bar(first: str, enabled: bool = True) -> Iterator[Progress]:
    """A transient bar on stderr driven by the library's ``Progress`` callback, which it yields.

    The callback's step becomes the bar's text as it is (not rich markup: "fp16 [x] model" keeps its
    "[x]") and ``done``/``total`` its fill (a spinner while the total is unknown). Off (steps go to the
    log) when not enabled or stderr is not a terminal.
    """
    if not enabled or not sys.stderr.isatty():
        log.info(first)
        yield lambda step, done=None, total=None: log.info(step)
        return
    from rich.progress import BarColumn, Progress as RichProgress, SpinnerColumn, TextColumn, TimeElapsedColumn

    err = console(stderr=True)
    step = TextColumn("{task.description}", style="progress.description", markup=False)
    rich = RichProgress(SpinnerColumn(), step, BarColumn(), TextColumn("{task.percentage:>3.0f}%"), TimeElapsedColumn(),
                        console=err, transient=True, disable=not err.is_terminal)
    with rich as rich_bar:
        task = rich_bar.add_task(first, total=None)

        def update(step: str, done: float | None = None, total: float | None = None) -> None:
            rich_bar.update(task, description=step, completed=done or 0, total=total)

        yield update
