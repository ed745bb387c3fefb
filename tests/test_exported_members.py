"""The public API is what ``trtflow.__all__`` says, and importing it stays light."""

import subprocess
import sys

import trtflow


def test_all_names_resolve():
    for name in trtflow.__all__:
        assert getattr(trtflow, name) is not None, name


def test_public_members_are_listed():
    public = {n for n in dir(trtflow) if not n.startswith("_")}
    modules = {n for n in public if type(getattr(trtflow, n)).__name__ == "module"}
    assert public - modules <= set(trtflow.__all__), public - modules - set(trtflow.__all__)


def test_import_is_light():
    code = (
        "import sys, trtflow; heavy = [m for m in ('torch', 'onnxruntime', 'tensorrt', 'tensorrt_rtx', 'onnx')"
        " if m in sys.modules]; print(heavy)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "[]", f"importing trtflow pulled in {out}"


def test_unknown_attribute_raises():
    import pytest

    with pytest.raises(AttributeError):
        trtflow.no_such_thing  # noqa: B018
