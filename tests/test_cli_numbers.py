"""nan, inf and negative numbers are one-line usage errors (exit 2) in every command, before any work."""

from __future__ import annotations

import pytest

from tests.conftest import call_cli

CASES = [
    (["loadgen", "127.0.0.1:9", "--model", "m", "--duration", "nan"], "--duration"),
    (["loadgen", "127.0.0.1:9", "--model", "m", "--warmup", "inf"], "--warmup"),
    (["serve", "{tiny}", "--http-port", "0", "--grpc-port", "-1", "--timeout-s", "nan", "--max-body-mb", "inf"],
     "--timeout-s"),
    (["serve", "{tiny}", "--http-port", "0", "--grpc-port", "-1", "--max-body-mb", "inf"], "--max-body-mb"),
    (["serve", "{tiny}", "--http-port", "0", "--grpc-port", "-1", "--drain-timeout-s", "-1", "--max-body-mb", "inf"],
     "--drain-timeout-s"),
    # a port out of range was wrapped (70000 served on 4464); a later bad flag stops the run if it is taken
    (["serve", "{tiny}", "--http-port", "70000", "--grpc-port", "-1", "--max-body-mb", "nan"], "--http-port"),
    (["serve", "{tiny}", "--http-port", "0", "--grpc-port", "65536", "--max-body-mb", "nan"], "--grpc-port"),
    (["serve", "{tiny}", "--http-port", "-5", "--grpc-port", "-1", "--max-body-mb", "nan"], "--http-port"),
    (["serve", "{tiny}", "--threads", "-1", "--max-body-mb", "nan"], "--threads"),
    (["video", "{tiny}.missing.mp4", "--task", "classify", "--push-timeout-ms", "inf"], "--push-timeout-ms"),
    (["video", "{tiny}.missing.mp4", "--task", "classify", "--timeout", "inf"], "--timeout"),
    (["video", "{tiny}.missing.mp4", "--task", "detect", "--score-threshold", "inf"], "--score-threshold"),
    (["tune", "{tiny}", "--engine", "ort", "--shapes", "x:1x3x16x16", "--seed", "-1"], "--seed"),
    (["tune", "{tiny}", "--engine", "ort", "--shapes", "x:1x3x16x16", "--atol", "nan"], "--atol"),
    (["tune", "{tiny}", "--engine", "ort", "--shapes", "x:1x3x16x16", "--budget-s", "nan"], "--budget-s"),
    (["tune", "{tiny}", "--engine", "ort", "--shapes", "x:1x3x16x16", "--min-agreement", "-0.5"], "--min-agreement"),
]


@pytest.mark.parametrize("argv, flag", CASES, ids=[" ".join(c[0][:1] + c[0][-2:]) for c in CASES])
def test_bad_number_is_a_usage_error(argv, flag, tiny_onnx):
    proc = call_cli(*[a.replace("{tiny}", str(tiny_onnx)) for a in argv])
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == 2, proc.stderr
    assert len(lines) == 1 and flag in lines[0] and "internal error" not in lines[0], proc.stderr
