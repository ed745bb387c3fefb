"""trtflow.compare: the same feed through several engines, each compared with the first."""

from __future__ import annotations

import numpy as np
import pytest

import trtflow
from tests.conftest import call_cli
from trtflow.compare import CompareReport, Tolerances, compare_engines
from trtflow.errors import MismatchError, UsageError
from trtflow.spec import parse_tolerances


@pytest.fixture(scope="session")
def other_onnx(models_dir):
    """The tiny model's architecture with other weights: same names, different numbers."""
    torch = pytest.importorskip("torch")
    from tests.models.tiny import tiny_module
    from trtflow.export import from_torch

    model = tiny_module()
    with torch.no_grad():
        model.head.bias.add_(0.5)  # logits move by 0.5; feat is unchanged
    out = models_dir / "tiny_other.onnx"
    from_torch(model, torch.randn(1, 3, 16, 16), out, exporter="torchscript", output_names=["logits", "feat"],
               dynamic={"x": {0: "batch"}}, verify=False)
    return out


def _feed(n=2):
    return {"x": np.random.default_rng(0).standard_normal((n, 3, 16, 16)).astype(np.float32)}


def test_identical_engines_pass(tiny_onnx):
    with trtflow.load(tiny_onnx, engine="ort") as a, trtflow.load(tiny_onnx, engine="ort") as b:
        report = compare_engines({"ort": a, "ort-again": b}, _feed(), model=str(tiny_onnx))
    assert isinstance(report, CompareReport) and report.passed
    assert report.engines == ["ort", "ort-again"]
    assert [d.name for d in report.comparisons[0].diffs] == ["logits", "feat"]
    assert all(d.max_abs == 0.0 and d.first_fail is None for d in report.comparisons[0].diffs)
    assert report.inputs == {"x": {"shape": [2, 3, 16, 16], "dtype": "float32"}}
    report.raise_for_mismatch()  # no error


def test_a_different_model_fails_with_statistics(tiny_onnx, other_onnx):
    with trtflow.load(tiny_onnx, engine="ort") as a, trtflow.load(other_onnx, engine="ort") as b:
        report = compare_engines({"reference": a, "candidate": b}, _feed(3), Tolerances(atol=1e-4, rtol=1e-4))
    logits, feat = report.comparisons[0].diffs
    assert not logits.passed and feat.passed and not report.passed
    assert logits.max_abs == pytest.approx(0.5, abs=1e-5)
    assert logits.fail_fraction == 1.0 and logits.first_fail == (0, 0)
    assert logits.mean_abs == pytest.approx(0.5, abs=1e-5)
    with pytest.raises(MismatchError) as info:
        report.raise_for_mismatch()
    assert info.value.report is report and "logits" in str(info.value) and "feat" not in str(info.value)
    data = report.to_dict()
    assert data["reference"] == "reference" and data["passed"] is False
    assert data["comparisons"][0]["outputs"]["logits"]["first_fail"] == [0, 0]
    assert len(report.rows()) == 2


def test_per_output_tolerance_lets_one_output_through(tiny_onnx, other_onnx):
    tol = Tolerances(atol=1e-5, rtol=1e-5, per_output_atol={"logits": 0.6})
    with trtflow.load(tiny_onnx, engine="ort") as a, trtflow.load(other_onnx, engine="ort") as b:
        report = compare_engines({"a": a, "b": b}, _feed(), tol)
    assert report.passed
    assert report.comparisons[0].diffs[0].atol == 0.6


def test_one_engine_is_not_a_comparison(tiny_onnx):
    with trtflow.load(tiny_onnx, engine="ort") as a:
        with pytest.raises(UsageError, match="at least two"):
            compare_engines({"ort": a}, _feed())


def test_tolerance_flags_parse():
    assert parse_tolerances(None, "--atol") == (None, {})
    assert parse_tolerances(["1e-3", "logits=0.1", "out:put=2"], "--atol") == (1e-3, {"logits": 0.1, "out:put": 2.0})
    for bad in (["x"], ["-1"], ["logits=abc"], ["nan"], ["logits=inf"], ["=1"]):
        with pytest.raises(UsageError):
            parse_tolerances(bad, "--atol")


def test_nan_fails_unless_equal_nan_and_unknown_output_names_are_refused(tiny_onnx):
    from trtflow.compare.core import compare_outputs

    ref = {"y": np.array([np.nan, 1.0, np.inf], np.float32)}
    (diff,) = compare_outputs(ref, {"y": ref["y"].copy()})
    assert not diff.passed and diff.first_fail == (0,) and "NaN(s) in both" in diff.note
    (diff,) = compare_outputs(ref, {"y": ref["y"].copy()}, Tolerances(equal_nan=True))
    assert diff.passed
    (diff,) = compare_outputs(ref, {"y": np.array([np.nan, 1.0, -np.inf], np.float32)}, Tolerances(equal_nan=True))
    assert not diff.passed and diff.first_fail == (2,)
    with trtflow.load(tiny_onnx, engine="ort") as a, trtflow.load(tiny_onnx, engine="ort") as b:
        with pytest.raises(UsageError, match="'logit'.*outputs are \\['logits', 'feat'\\]"):
            compare_engines({"a": a, "b": b}, _feed(), Tolerances(per_output_atol={"logit": 1.0}))
    with pytest.raises(UsageError, match="finite"):
        Tolerances(atol=float("nan"))


def test_cli_compare_module_on_npz_key_with_per_output_tolerance(tmp_path):
    pytest.importorskip("torch")
    feed = _feed(3)
    np.savez(tmp_path / "feed.npz", images=feed["x"])
    proc = call_cli("compare", "tests.models.tiny:make", "--shapes", "x:2x3x16x16", "--dynamic", "x:0=batch",
                    "--output-names", "logits,feat", "--exporter", "torchscript", "--input",
                    f"x={tmp_path / 'feed.npz'}:images", "--atol", "1e-4", "--atol", "feat=0.5", "--json")
    assert proc.returncode == 0, proc.stderr
    report = __import__("json").loads(proc.stdout)
    assert report["inputs"]["x"]["shape"] == [3, 3, 16, 16]  # the file's values, not the export's example
    outputs = report["comparisons"][0]["outputs"]
    assert outputs["feat"]["atol"] == 0.5 and outputs["logits"]["atol"] == 1e-4


def test_torch_engine_matches_its_onnx_export(tiny_onnx):
    """What `trtflow compare MODULE:FACTORY` does: PyTorch through trtflow.load vs ONNX Runtime."""
    torch = pytest.importorskip("torch")
    from tests.models.tiny import tiny_module

    feed = _feed(3)
    with trtflow.load(tiny_module(), engine="torch", example_inputs=[torch.zeros(1, 3, 16, 16)],
                      input_names=["x"], output_names=["logits", "feat"], dynamic={"x": {0: "batch"}}) as ref, \
            trtflow.load(tiny_onnx, engine="ort") as ort:
        report = compare_engines({"torch": ref, "ort": ort}, feed, Tolerances(atol=1e-4, rtol=1e-4))
    assert report.passed, report.to_dict()


def test_scalar_outputs_compare_as_one_element():
    from trtflow.compare.core import diff_one

    same = diff_one("s", np.float32(1.0), np.float32(1.0 + 1e-7), 1e-5, 0.0, False)
    assert same.passed and same.shape == () and same.first_fail is None
    off = diff_one("s", np.array(1.0, np.float32), np.array(2.0, np.float32), 1e-5, 0.0, False)
    assert not off.passed and off.shape == () and off.first_fail == () and off.max_abs == 1.0
