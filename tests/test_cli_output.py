"""The CLI's output helpers: the progress bar shows the library's step text as it is."""

from __future__ import annotations

import io
import sys


class Terminal(io.StringIO):
    """A stderr that says it is a terminal, so ``bar`` draws rich's bar into it."""

    def isatty(self) -> bool:
        return True


def test_bar_shows_steps_with_square_brackets_verbatim(monkeypatch):
    """The bar read step text as rich markup: "[bold]" turned the rest bold and vanished, and a step
    naming "fp16 [x] model" lost its "[x]", as a lone "[/]" (markup rich's parser refuses) was lost."""
    from trtflow.cli.output import bar

    monkeypatch.setenv("COLUMNS", "200")
    shown = {}
    for first, step in (("tune: fp16 [x] model", None), ("export", "export [bold]net[/] to a.onnx"),
                        ("build", "build [/] engine")):
        err = Terminal()  # the bar's last drawing (when it closes) shows its last step
        monkeypatch.setattr(sys, "stderr", err)
        with bar(first) as progress:
            if step is not None:
                progress(step, 1, 2)
        shown[step or first] = err.getvalue()
    for step, text in shown.items():
        assert step in text, text[-300:]
