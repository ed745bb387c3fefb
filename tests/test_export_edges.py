"""trtflow.export off the common path: modules that change their inputs in place."""

from __future__ import annotations

import pytest

from trtflow.errors import MismatchError

torch = pytest.importorskip("torch")

from trtflow.export import from_torch  # noqa: E402


class _Scales(torch.nn.Module):
    """Normalizes its input in place (``x /= 255`` as many detector wrappers do)."""

    def forward(self, x):
        x.div_(255.0)
        return x + 1


def test_a_module_that_changes_its_input_in_place_verifies_and_leaves_the_example_alone(tmp_path):
    x = torch.full((2, 3), 255.0)
    result = from_torch(_Scales(), x, tmp_path / "inplace.onnx", exporter="torchscript", dynamic={"x": {0: "batch"}})
    assert result.verified, result.to_dict()
    assert torch.equal(x, torch.full((2, 3), 255.0))  # the caller's example is not divided again and again
