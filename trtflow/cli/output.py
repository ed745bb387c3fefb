"""Printing results: rich tables for people, one JSON object for scripts."""

from __future__ import annotations

import json
import sys
from typing import Any, Iterable, Sequence

import numpy as np


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
    """A rich progress bar on stderr (so --json stdout stays clean); use as a context manager."""
    from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    return Progress(
        SpinnerColumn(), TextColumn("[progress.description]{task.description}"), BarColumn(),
        TextColumn("{task.percentage:>3.0f}%"), TimeElapsedColumn(), console=console(stderr=True), transient=True,
    )
