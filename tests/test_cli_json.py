"""--json prints exactly one strict JSON object on stdout, failures included (in-process CLI calls)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tests.conftest import call_cli


def _one_object(proc) -> dict:
    text = proc.stdout.strip()
    report = json.loads(text)  # raises on two objects ("Extra data")
    assert isinstance(report, dict)
    return report


def test_compare_mismatch_json_is_one_object_with_the_error(tmp_path):
    pytest.importorskip("torch")
    np.save(tmp_path / "four.npy", np.random.default_rng(0).standard_normal((4, 3)).astype(np.float32))
    proc = call_cli("compare", "tests.models.export_zoo:baked", "--shapes", "x:2x3", "--dynamic", "x:0=batch",
                    "--input", f"x={tmp_path / 'four.npy'}", "--exporter", "torchscript", "--json")
    assert proc.returncode == 1, proc.stderr
    report = _one_object(proc)
    assert report["passed"] is False and report["ok"] is False and report["exit_code"] == 1
    assert report["type"] == "MismatchError" and "differ beyond tolerance" in report["error"]


def test_export_mismatch_json_is_one_object_with_the_error(tmp_path):
    pytest.importorskip("torch")
    proc = call_cli("export", "tests.models.export_zoo:baked", "--out", str(tmp_path / "b.onnx"), "--shapes", "x:2x3",
                    "--dynamic", "x:0=batch", "--exporter", "torchscript", "--json")
    assert proc.returncode == 1, proc.stderr
    report = _one_object(proc)
    assert report["ok"] is False and report["type"] == "MismatchError" and report["verification"]


def test_surgeon_json_errors_print_the_error_object(tiny_onnx, tmp_path):
    proc = call_cli("surgeon", "simplify", str(tiny_onnx), "-o", str(tmp_path / "s.onnx"), "--input",
                    f"x={tmp_path / 'missing.npy'}", "--json")
    assert proc.returncode == 2, proc.stderr
    report = _one_object(proc)
    assert report["ok"] is False and report["exit_code"] == 2


def test_surgeon_mismatch_json_is_one_object(tiny_onnx, tmp_path):
    proc = call_cli("surgeon", "fp16", str(tiny_onnx), "-o", str(tmp_path / "h.onnx"), "--atol", "0", "--rtol", "0",
                    "--json")
    assert proc.returncode == 1, proc.stderr
    report = _one_object(proc)
    assert report["verification"]["passed"] is False and report["ok"] is False and report["exit_code"] == 1


def test_surgeon_output_folder_checked_before_the_edit(tiny_onnx, tmp_path):
    """A missing output folder is a usage error (README), as in every other command: not created."""
    proc = call_cli("surgeon", "simplify", str(tiny_onnx), "-o", str(tmp_path / "missing" / "s.onnx"), "--json")
    assert proc.returncode == 2 and "does not exist" in proc.stderr, proc.stderr
    assert not (tmp_path / "missing").exists()
    (tmp_path / "dir.onnx").mkdir()
    proc = call_cli("surgeon", "simplify", str(tiny_onnx), "-o", str(tmp_path / "dir.onnx"))
    assert proc.returncode == 2 and "is a folder" in proc.stderr, proc.stderr


@pytest.mark.parametrize("edit, extra", [("simplify", []), ("rename", ["--rename-input", "x=images"])])
def test_surgeon_takes_out_like_every_command(edit, extra, tiny_onnx, tmp_path):
    """README: `-o`, `--out PATH` is the file export, run and surgeon write."""
    out = tmp_path / "o.onnx"
    proc = call_cli("surgeon", edit, str(tiny_onnx), "--out", str(out), *extra, "--json")
    assert proc.returncode == 0, proc.stderr
    assert _one_object(proc)["output"] == str(out) and out.exists()


def test_surgeon_verbose_shows_the_traceback(tiny_onnx, tmp_path):
    """README: --verbose shows the traceback; surgeon's own -v after the edit was only a log level."""
    from trtflow.errors import TrtflowError

    with pytest.raises(TrtflowError):
        call_cli("surgeon", "simplify", str(tiny_onnx), "-o", str(tmp_path / "s.onnx"), "--input",
                 f"x={tmp_path / 'missing.npy'}", "--verbose")
