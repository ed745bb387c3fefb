"""trtflow.arrays: converting the caller's arrays to an engine's family."""

from __future__ import annotations

import numpy as np
import pytest


def test_a_big_endian_array_reaches_a_torch_engine():
    torch = pytest.importorskip("torch")
    import trtflow
    from trtflow.arrays import to_torch

    x = np.arange(8, dtype=">f4").reshape(2, 4)  # as read from a .npy written with '>f4'
    assert to_torch(x).tolist() == x.tolist()
    net = torch.nn.Linear(4, 2).eval()
    with trtflow.load(net, engine="torch", example_inputs=[torch.zeros(2, 4)], device="cpu") as engine:
        name = engine.inputs[0].name
        got = engine.infer({name: x})[engine.outputs[0].name]
        want = engine.infer({name: x.astype("<f4")})[engine.outputs[0].name]
    np.testing.assert_array_equal(got, want)
