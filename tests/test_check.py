"""`trtflow check`: a real parse + build with the installed flavor, failing nodes named (in-process CLI)."""

from __future__ import annotations

import json

import pytest

from tests.conftest import call_cli
from tests.trt_models import nms_model, unsupported_model

pytestmark = pytest.mark.usefixtures("flavor")


def test_convertible_model(tiny_onnx, flavor):
    proc = call_cli("check", str(tiny_onnx), "--json")
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["converts"] is True and report["failures"] == [] and report["flavor"] == flavor.name
    assert report["engine_bytes"] > 0 and report["inferred_profiles"]


def test_unsupported_ops_named_exit_1(models_dir):
    model = unsupported_model(models_dir / "check_unsupported.onnx")
    proc = call_cli("check", str(model), "--json")
    assert proc.returncode == 1, proc.stderr
    report = json.loads(proc.stdout)
    assert report["converts"] is False and report["stage"] == "parse"
    assert [(f["node"], f["op"]) for f in report["failures"]] == [("unique_0", "Unique"), ("unique_1", "Unique")]
    table = call_cli("check", str(model))  # not a terminal: 80 columns, as in a pipe
    assert table.returncode == 1 and "unique_0" in table.stdout and "unique_1" in table.stdout
    assert [line for line in table.stdout.splitlines() if "…" in line] == []
    fix_column = " ".join(cells[4].strip() for line in table.stdout.splitlines()
                          if len(cells := line.split("│")) == 6 and cells[4].strip())
    assert report["failures"][0]["fix"] in fix_column  # wrapped, never cut


def test_nms_blocks_conversion_on_rtx(models_dir, flavor):
    model = nms_model(models_dir / "check_nms.onnx")
    proc = call_cli("check", str(model), "--json")
    report = json.loads(proc.stdout)
    if not flavor.is_rtx:
        assert proc.returncode == 0 and report["converts"] is True
        return
    assert proc.returncode == 1 and report["stage"] == "build"
    (failure,) = report["failures"]
    assert failure["node"] == "nms_0" and failure["op"] == "NonMaxSuppression"
    assert "surgeon extract" in failure["fix"] and "decode_detections" in failure["fix"]


def test_missing_file_exit_2_one_line(tmp_path):
    proc = call_cli("check", str(tmp_path / "missing.onnx"))
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "no such file" in lines[0] and lines[0].startswith("trtflow check: error:")


def test_bad_shapes_exit_2_one_line(tiny_onnx):
    proc = call_cli("check", str(tiny_onnx), "--shapes", "x1x3x16x16")
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "NAME:DIMS" in lines[0]


def test_dynamic_height_without_shapes_exit_2(models_dir):
    from tests.trt_models import retinaface_bytes

    path = models_dir / "check_retinaface.onnx"
    path.write_bytes(retinaface_bytes())
    proc = call_cli("check", str(path))
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1
    assert "'height'" in lines[0] and "--minShapes input:" in lines[0]
    ok = call_cli("check", str(path), "--shapes", "input:1x3x320x320", "--json")
    assert ok.returncode == 0 and json.loads(ok.stdout)["converts"] is True


@pytest.mark.parametrize(
    "op, reason, code, words",
    [
        ("Cast", "INT64 weights out of INT32 range", "", "INT32"),
        ("Add", "unsupported data type UINT16", "UNSUPPORTED_NODE_DATATYPE", "cast"),
        ("ReduceSum", "axes must be an initializer", "UNSUPPORTED_NODE_INPUT", "surgeon simplify"),
        ("Foo", "", "UNSUPPORTED_NODE", "--plugins"),
        ("Conv", "conv_0 has no runners that implement it", "", "no kernel"),
    ],
)
def test_known_fixes(op, reason, code, words, flavor):
    from trtflow.backends.tensorrt.parser_errors import fix_for

    assert words in fix_for(op, reason, code, flavor, supported_op=op != "Foo")


def test_tensorrt_log_lines_are_cleaned():
    from trtflow.backends.tensorrt.parser_errors import _clean

    line = ("[tacticSupply.cpp::getSupportedFormats::48] Error Code 2: Internal Error (Assertion "
            "!layerImpls.empty() failed. nms_0_0 has no runners that implement it In getSupportedFormats at "
            "/_src/optimizer/builder/tacticSupply.cpp:48)")
    assert _clean(line) == "nms_0_0 has no runners that implement it"


@pytest.mark.parametrize("elem", ["INT4", "UINT4"])
def test_int4_inputs_and_outputs_are_named_not_a_crash(tmp_path, elem):
    """An INT4 input and output: TensorRT parsed and built it, then reading the network's I/O crashed with
    "internal error TypeError: TensorRT type INT4 has no numpy/torch equivalent"."""
    from onnx import TensorProto, helper, save

    vi = helper.make_tensor_value_info
    kind = getattr(TensorProto, elem)
    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "g", [vi("x", kind, [2, 4])],
                              [vi("y", kind, [2, 4])])
    save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)], ir_version=10), tmp_path / "i4.onnx")
    proc = call_cli("check", str(tmp_path / "i4.onnx"), "--json")
    assert "internal error" not in proc.stderr and proc.returncode in (1, 2), proc.stderr
    if proc.returncode == 2:  # the flavor takes the type: trtflow names the tensor and the limitation
        assert "'x'" in proc.stderr and elem in proc.stderr and "numpy" in proc.stderr, proc.stderr
    else:  # the flavor's parser refuses the type: a failure row, as for any other
        assert json.loads(proc.stdout)["converts"] is False


def test_a_parse_error_at_no_node_names_no_node_or_op(tmp_path):
    """A UINT4 input the parser refuses while importing the input (at no node) showed a row for node
    "#-1", op "?" and "no importer for ONNX op ?": now the network, with the parser's message and the input."""
    from onnx import TensorProto, helper, save

    vi = helper.make_tensor_value_info
    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "g", [vi("x", TensorProto.UINT4, [2, 4])],
                              [vi("y", TensorProto.UINT4, [2, 4])])
    save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)], ir_version=10), tmp_path / "u4.onnx")
    proc = call_cli("check", str(tmp_path / "u4.onnx"), "--json")
    if proc.returncode == 2:  # this flavor's parser takes UINT4: trtflow refuses the input itself (test above)
        return
    assert proc.returncode == 1, proc.stderr
    [row] = json.loads(proc.stdout)["failures"]
    assert row["node"] == "(network)" and row["op"] == "-", row
    assert "input 'x'" in row["reason"] and "data type" in row["reason"] and "importer" not in row["reason"], row
    assert "cast this tensor" in row["fix"], row
