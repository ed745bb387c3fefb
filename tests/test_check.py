"""`trtflow check`: a real parse + build with the installed flavor, failing nodes named (subprocesses)."""

from __future__ import annotations

import json

import pytest

from tests.conftest import run_cli
from tests.trt_models import nms_model, unsupported_model


@pytest.fixture(scope="module", autouse=True)
def flavor():
    from trtflow.build.flavor import flavor_available

    found = flavor_available()
    if found is None:
        pytest.skip("neither tensorrt nor tensorrt_rtx is installed")
    return found


def test_convertible_model(tiny_onnx, flavor):
    proc = run_cli("check", str(tiny_onnx), "--json")
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["converts"] is True and report["failures"] == [] and report["flavor"] == flavor.name
    assert report["engine_bytes"] > 0 and report["inferred_profiles"]


def test_unsupported_ops_named_exit_1(models_dir):
    model = unsupported_model(models_dir / "check_unsupported.onnx")
    proc = run_cli("check", str(model), "--json")
    assert proc.returncode == 1, proc.stderr
    report = json.loads(proc.stdout)
    assert report["converts"] is False and report["stage"] == "parse"
    assert [(f["node"], f["op"]) for f in report["failures"]] == [("unique_0", "Unique"), ("unique_1", "Unique")]
    table = run_cli("check", str(model))
    assert table.returncode == 1 and "unique_0" in table.stdout and "unique_1" in table.stdout


def test_nms_blocks_conversion_on_rtx(models_dir, flavor):
    model = nms_model(models_dir / "check_nms.onnx")
    proc = run_cli("check", str(model), "--json")
    report = json.loads(proc.stdout)
    if not flavor.is_rtx:
        assert proc.returncode == 0 and report["converts"] is True
        return
    assert proc.returncode == 1 and report["stage"] == "build"
    (failure,) = report["failures"]
    assert failure["node"] == "nms_0" and failure["op"] == "NonMaxSuppression"
    assert "surgeon extract" in failure["fix"] and "decode_detections" in failure["fix"]


def test_missing_file_exit_2_one_line(tmp_path):
    proc = run_cli("check", str(tmp_path / "missing.onnx"))
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "no such file" in lines[0] and lines[0].startswith("trtflow check: error:")


def test_bad_shapes_exit_2_one_line(tiny_onnx):
    proc = run_cli("check", str(tiny_onnx), "--shapes", "x1x3x16x16")
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "NAME:DIMS" in lines[0]
