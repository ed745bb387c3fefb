"""tune on bad and edge inputs: the accuracy gate where the FP32 reference holds zeros, zero-sized
shapes, calibration files that are empty, unreadable or of mixed shapes, boolean inputs, a device
that does not exist, and the CLI's report when no configuration meets the bound."""

from __future__ import annotations

import numpy as np
import pytest

from trtflow.tune import Bound
from trtflow.tune.accuracy import check


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("TRTFLOW_CACHE_DIR", str(tmp_path / "cache"))


def test_allclose_with_atol_zero_fails_an_error_beside_an_exact_zero():
    """A 0/0 ratio where reference and output are both 0 (ReLU outputs) must not hide the others."""
    ref = [{"y": np.array([[0.0, 1.0]])}]
    got = [{"y": np.array([[0.0, 6.0]])}]
    acc = check(Bound("allclose", atol=0.0, rtol=0.01), ref, got)
    assert acc.failure and "max abs error 5" in acc.failure and acc.closeness == pytest.approx(500.0)
    assert check(Bound("allclose", atol=0.0, rtol=0.01), ref, ref).failure is None
    nonzero_err_at_zero = check(Bound("allclose", atol=0.0, rtol=0.01), ref, [{"y": np.array([[1e-3, 1.0]])}])
    assert nonzero_err_at_zero.failure and nonzero_err_at_zero.closeness == float("inf")


def test_batch_of_zero_is_a_usage_error(tiny_onnx):
    from tests.conftest import call_cli

    got = call_cli("tune", tiny_onnx, "--engine", "ort", "--shapes", "x:0x3x16x16", "--precisions", "fp32",
                   "--threads", "1", "--only", "* opt=all *", "--short-s", "0.05", "--full-s", "0.1", "--no-save")
    assert got.returncode == 2 and "batch size 0" in got.stderr and "x:1x" in got.stderr, got.stderr
