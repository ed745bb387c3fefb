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
