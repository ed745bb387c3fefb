"""trtflow.spec: shapes, profiles and the trtexec shape syntax."""

from __future__ import annotations

import pytest

from trtflow.errors import UsageError
from trtflow.spec import make_profile


def test_a_profile_takes_whole_sizes_from_zero_up():
    assert make_profile({"x": (0, 3)}, None, {"x": (4, 3)}).max["x"] == (4, 3)
    for bad in ((-1, 3), (1.5, 3), (True, 3), ("1", 3)):
        with pytest.raises(UsageError, match=r"input 'x'.*whole sizes >= 0"):
            make_profile({"x": bad}, None, {"x": (4, 3)})


def test_the_torch_engine_refuses_a_negative_min_shape():
    torch = pytest.importorskip("torch")
    import trtflow
    from tests.models.tiny import tiny_module

    with pytest.raises(UsageError, match="whole sizes >= 0"):
        trtflow.load(tiny_module(), engine="torch", example_inputs=[torch.zeros(2, 3, 16, 16)], input_names=["x"],
                     min_shapes={"x": (-1, 3, 16, 16)}, max_shapes={"x": (4, 3, 16, 16)})


def test_a_size_of_thousands_of_digits_is_too_large_not_a_crash():
    from trtflow.spec import parse_shape

    assert parse_shape("0001x3") == (1, 3)
    with pytest.raises(UsageError, match="too large"):
        parse_shape("1x" + "9" * 5000)


def test_an_input_given_two_shapes_is_refused_not_the_first_dropped():
    """--shapes x:1x3 --shapes x:2x3 kept 2x3 without a word; the same shape twice loses nothing."""
    from trtflow.spec import parse_shapes

    for texts in (["x:1x3", "x:2x3"], "x:1x3,x:2x3"):
        with pytest.raises(UsageError, match=r"'x'.*1x3.*2x3"):
            parse_shapes(texts)
    assert parse_shapes(["x:1x3", "y:4", "x:1x3"]) == {"x": (1, 3), "y": (4,)}


def test_name_lists_parse_alike_for_the_edits_and_the_ort_providers():
    """provider_names split a string on commas but kept a list item "cuda,cpu" whole (an unknown provider),
    where the edits' name fields split every item: one parser for both."""
    from trtflow.backends.onnxruntime.runner import provider_names
    from trtflow.edits import fields
    from trtflow.spec import parse_names

    for given in ("cuda, cpu", ["cuda,cpu"], ["cuda", " cpu", ""], ("cuda,", "cpu")):
        assert parse_names(given, "providers") == fields.names(given, "providers") == ("cuda", "cpu"), given
        assert provider_names(given) == ["CUDAExecutionProvider", "CPUExecutionProvider"], given
    for bad in ([1], ",", [], None):
        with pytest.raises(UsageError, match="providers"):
            provider_names(bad)


def test_a_spec_takes_shapes_of_its_rank_and_fixed_sizes():
    """One check, TensorSpec.takes, behind the edits' feeds and the shapes tune keys a choice by."""
    from trtflow.backends.tuned import onnx_shapes
    from trtflow.spec import TensorSpec

    spec = TensorSpec("x", "float32", ("batch", 3, 16, 16))
    assert spec.takes((2, 3, 16, 16)) and spec.takes((1, 3, 16, 16))
    assert not spec.takes((2, 4, 16, 16)) and not spec.takes((3, 16, 16))
    assert onnx_shapes([spec], {"x": [2, 3, 16, 16]}) == {"x": (2, 3, 16, 16)}
    for bad in ((2, 4, 16, 16), (3, 16, 16)):
        with pytest.raises(UsageError, match=r"takes \(batch, 3, 16, 16\)"):
            onnx_shapes([spec], {"x": bad})
