"""Splitting a merged batch's outputs back per request (trtflow.serve.batcher.split)."""

from __future__ import annotations

import numpy as np
import pytest

from trtflow.errors import EngineError
from trtflow.serve.batcher import split


def test_split_gives_each_request_its_rows():
    y = np.arange(12, dtype=np.float32).reshape(6, 2)
    for rows in ([1] * 6, [2, 1, 3]):
        parts = split({"y": y}, rows)
        assert len(parts) == len(rows)
        np.testing.assert_array_equal(np.concatenate([p["y"] for p in parts]), y)
        assert [p["y"].shape[0] for p in parts] == rows


@pytest.mark.parametrize("rows", [[1, 1], [2, 1], [1, 1, 1]])
def test_output_whose_dim0_is_not_the_batch_is_an_error(rows):
    """An output like (1, 4) for a merged batch gave the first request a mix of every request's
    rows and left the others unanswered until the timeout (503)."""
    with pytest.raises(EngineError, match="'y'.*--max-batch 0"):
        split({"y": np.zeros((1, 4), np.float32)}, rows)
    with pytest.raises(EngineError, match="'s'"):
        split({"y": np.zeros((sum(rows), 4)), "s": np.float32(3.0)}, rows)


def test_ray_replica_answers_each_group_its_own_error():
    """A split failure in one shape group escaped the Serve batch function and failed every request
    of the Serve batch, other groups included."""
    import asyncio

    from trtflow.serve.ray import TrtflowReplica

    class Model:
        batched = True

    class Engine:
        def infer(self, feed):
            x = feed["x"]
            return {"y": x[:1] if x.shape[1] == 3 else x}  # the (., 3) group's output is not batch-major

    replica = object.__new__(TrtflowReplica)
    replica.engine, replica.model, replica.calls = Engine(), Model(), 0
    items = [({"x": np.ones((1, 3))}, 1, ("a",)), ({"x": np.ones((1, 3))}, 1, ("a",)),
             ({"x": np.full((1, 2), 5.0)}, 1, ("b",))]
    results = asyncio.run(replica._run_batch(items))
    assert isinstance(results[0], EngineError) and isinstance(results[1], EngineError)
    part, total = results[2]
    assert total == 1 and part["y"].tolist() == [[5.0, 5.0]]
