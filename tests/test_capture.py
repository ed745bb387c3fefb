"""trtflow.capture: a library's chatter is captured for the thread that runs it, not for the others."""

from __future__ import annotations

import logging
import subprocess
import sys
import threading
import warnings
from pathlib import Path

import pytest

from trtflow.capture import capture_output

ROOT = Path(__file__).resolve().parents[1]


def test_only_the_capturing_threads_prints_warnings_and_log_records_are_captured(capsys, caplog):
    inside, done = threading.Event(), threading.Event()

    def other():
        inside.wait(10)
        print("other thread print")
        logging.getLogger("chatty.lib").warning("other thread record")
        done.set()

    worker = threading.Thread(target=other)
    worker.start()
    with caplog.at_level(logging.WARNING), capture_output(loggers=("chatty",)) as out:
        print("library print")
        print("library stderr", file=sys.stderr)
        logging.getLogger("chatty.lib").warning("library record")
        logging.getLogger("trtflow.mine").warning("own record")
        with warnings.catch_warnings():
            warnings.simplefilter("always")
            warnings.warn("library warning")
        inside.set()
        assert done.wait(10)
    worker.join()
    captured = capsys.readouterr()
    assert "other thread print" in captured.out and "library" not in captured.out + captured.err
    text = out.getvalue()
    for line in ("library print", "library stderr", "library record", "library warning"):
        assert line in text
    assert "other thread" not in text and "own record" not in text
    messages = [r.getMessage() for r in caplog.records]
    assert "other thread record" in messages and "own record" in messages and "library record" not in messages


@pytest.mark.parametrize("exporter", ["torchscript", "dynamo"])
def test_a_thread_printing_while_another_exports_gets_its_output_through(tmp_path, exporter):
    pytest.importorskip("torch")
    if exporter == "dynamo":
        pytest.importorskip("onnxscript")
    script = f"""
import threading, time, torch
from trtflow.export import from_torch
from tests.models.tiny import tiny_module
stop = threading.Event()
def ticks():
    n = 0
    while not stop.is_set() or n < 20:
        print("tick", n, flush=True)
        n += 1
        time.sleep(0.002)
worker = threading.Thread(target=ticks)
worker.start()
from_torch(tiny_module(), torch.randn(2, 3, 16, 16), {str(tmp_path / "t.onnx")!r}, exporter={exporter!r},
           output_names=["logits", "feat"], dynamic={{"x": {{0: "batch"}}}}, verify=False)
stop.set()
worker.join()
"""
    run = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    ticks = [int(line.split()[1]) for line in run.stdout.splitlines() if line.startswith("tick")]
    assert len(ticks) >= 20 and ticks == list(range(len(ticks))), run.stdout[-2000:]
    assert "[torch.onnx]" not in run.stdout + run.stderr  # the exporter's own prints stay captured


def test_the_text_is_logged_at_debug_level_when_the_block_fails_too(caplog):
    log = logging.getLogger("trtflow.test_capture")
    with caplog.at_level(logging.DEBUG, logger=log.name), pytest.raises(ValueError):
        with capture_output(log=log):
            print("what led to the error")
            raise ValueError("failed")
    assert any("what led to the error" in r.getMessage() for r in caplog.records)


def test_records_let_through_reach_the_terminal_while_the_descriptors_are_redirected():
    """With fds=True, a StreamHandler on the real stderr (logging.basicConfig's) wrote into descriptor 2, then
    the capture's sink: trtflow's own warnings and errors vanished into the captured text."""
    script = """
import logging, sys
logging.basicConfig(format="%(levelname)s %(name)s: %(message)s")
from trtflow.capture import capture_output
with capture_output(("torch",), fds=True) as out:
    logging.getLogger("trtflow.x").warning("own warning")
    logging.getLogger("torch.x").error("library error")
    logging.getLogger("torch.x").warning("library warning")
    print("captured print")
sys.stdout.write("OUT:" + out.getvalue().replace(chr(10), "|"))
"""
    run = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr[-2000:]
    assert "WARNING trtflow.x: own warning" in run.stderr and "ERROR torch.x: library error" in run.stderr
    captured = run.stdout.split("OUT:", 1)[1]
    assert "library warning" in captured and "captured print" in captured and "own warning" not in captured
