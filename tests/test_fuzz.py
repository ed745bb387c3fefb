"""Fuzzing the parsers of flags and the .npy/.npz loader with hypothesis: any input either parses
or raises an error of trtflow's tree (``UsageError`` for flags, ``ModelLoadError`` for files),
never another exception."""

from __future__ import annotations

import argparse
import math
import io
import tempfile
import zipfile
from pathlib import Path

import numpy as np
import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings, strategies as st  # noqa: E402

from trtflow.cli.options import count, number  # noqa: E402
from trtflow.errors import ModelLoadError, UsageError  # noqa: E402
from trtflow.export.inputs import parse_dtypes, parse_dynamic, parse_input_spec  # noqa: E402
from trtflow.feeds import load_array, parse_input_args  # noqa: E402
from trtflow.spec import MAX_DIM, format_shape, make_profile, parse_pairs, parse_shape, parse_shapes, parse_tolerances  # noqa: E402

FAST = settings(max_examples=150, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])

# text made of the characters these syntaxes use, plus anything
SYNTAX = st.text(alphabet=st.sampled_from(list("0123456789xX:,=.-+ _'\"abcnpyz;/\\\x00é١")), max_size=40)
TEXT = st.one_of(SYNTAX, st.text(max_size=40))
ITEMS = st.lists(TEXT, max_size=4)


@FAST
@given(TEXT)
def test_parse_shape(text):
    try:
        shape = parse_shape(text)
    except UsageError:
        return
    assert all(isinstance(d, int) and 0 <= d < MAX_DIM for d in shape)
    assert parse_shape(format_shape(shape) if shape else "") == shape  # round trip


@FAST
@given(st.one_of(TEXT, ITEMS))
def test_parse_shapes(texts):
    try:
        shapes = parse_shapes(texts)
    except UsageError:
        return
    for name, shape in shapes.items():
        assert isinstance(name, str) and name and all(isinstance(d, int) and d >= 0 for d in shape)


@FAST
@given(st.dictionaries(st.sampled_from(["min", "opt", "max"]), st.dictionaries(
    st.sampled_from(["x", "y"]), st.lists(st.integers(0, 8), max_size=3).map(tuple), max_size=2)))
def test_make_profile(parts):
    try:
        profile = make_profile(parts.get("min"), parts.get("opt"), parts.get("max"))
    except UsageError:
        return
    for name in profile.min:
        assert all(a <= b <= c for a, b, c in zip(profile.min[name], profile.opt[name], profile.max[name]))


@FAST
@given(ITEMS)
def test_parse_pairs(items):
    try:
        pairs = parse_pairs(items, "--flag", "KEY=VALUE")
    except UsageError:
        return
    assert all(k and v for k, v in pairs.items())


@FAST
@given(ITEMS)
def test_parse_tolerances(items):
    try:
        base, per = parse_tolerances(items, "--atol")
    except UsageError:
        return
    assert all(np.isfinite(v) and v >= 0 for v in [*per.values(), *([] if base is None else [base])])


@FAST
@given(ITEMS)
def test_parse_input_args(items):
    try:
        inputs = parse_input_args(items)
    except UsageError:
        return
    for value in inputs.values():
        assert value == "random" or ".np" in value.lower()


@FAST
@given(ITEMS)
def test_export_parsers(items):
    for parse in (parse_dtypes, parse_dynamic):
        try:
            parse(items)
        except UsageError:
            pass
    for item in items:
        try:
            parse_input_spec(item)
        except UsageError:
            pass


@FAST
@given(TEXT)
def test_number_flags(text):
    for parse in (count(0), count(1), number(0)):
        try:
            value = parse(text)
        except argparse.ArgumentTypeError:
            continue
        assert math.isfinite(value) and value >= 0


# -- the .npy / .npz loader --------------------------------------------------------------------

def _npy_bytes(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, arr, allow_pickle=False)
    return buf.getvalue()


VALID = _npy_bytes(np.arange(12, dtype=np.float32).reshape(3, 4))


def _mutated(data: st.DataObject) -> bytes:
    """A valid .npy with some bytes changed, a cut, or bytes appended; or random bytes."""
    kind = data.draw(st.sampled_from(["flip", "cut", "append", "random"]))
    if kind == "random":
        return data.draw(st.binary(max_size=300))
    raw = bytearray(VALID)
    if kind == "flip":
        for _ in range(data.draw(st.integers(1, 6))):
            raw[data.draw(st.integers(0, len(raw) - 1))] = data.draw(st.integers(0, 255))
    elif kind == "cut":
        raw = raw[: data.draw(st.integers(0, len(raw)))]
    else:
        raw += data.draw(st.binary(max_size=50))
    return bytes(raw)


def _load(name: str, payload: bytes, key: str | None = None):
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / name
        path.write_bytes(payload)
        value = str(path) + (f":{key}" if key else "")
        try:
            arr = load_array(value, "x")
        except ModelLoadError:
            return None
        assert isinstance(arr, np.ndarray)
        return arr


@settings(max_examples=120, deadline=None, database=None)
@given(st.data())
def test_npy_loader(data):
    _load("x.npy", _mutated(data))


@settings(max_examples=120, deadline=None, database=None)
@given(st.data())
def test_npz_loader(data):
    buf = io.BytesIO()
    if data.draw(st.booleans()):
        with zipfile.ZipFile(buf, "w") as zf:
            for name in data.draw(st.lists(st.sampled_from(["x.npy", "y.npy", "x", "x.npy.npy"]), max_size=3,
                                           unique=True)):
                zf.writestr(name, _mutated(data))
        payload = buf.getvalue()
    else:
        payload = data.draw(st.binary(max_size=300))
    key = data.draw(st.sampled_from([None, "x", "y", "missing"]))
    _load("feed.npz", payload, key)


def test_loader_reads_a_good_file_back():
    assert _load("x.npy", VALID).tolist() == np.arange(12, dtype=np.float32).reshape(3, 4).tolist()
