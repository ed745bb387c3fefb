"""Tasks and their results on odd inputs: models giving NaN or infinite outputs, frames of odd sizes."""

from __future__ import annotations

import numpy as np
import pytest

from trtflow.tasks import Detections


def test_detections_draw_skips_non_finite_boxes_and_points():
    """A model's NaN box is reported as is (JSON "nan"); drawing leaves it out and draws the rest,
    instead of failing the video's write stage on int(nan)."""
    pytest.importorskip("cv2")
    frame = np.zeros((40, 60, 3), np.uint8)
    boxes = np.array([[5, 5, 30, 30], [np.nan, 1, 2, np.nan], [np.inf, 2, 3, 4]], np.float32)
    points = np.full((3, 5, 2), 10, np.float32)
    points[0, 1] = np.nan
    det = Detections(boxes, np.array([0.9, 0.8, 0.7], np.float32), np.zeros(3, np.int32), ["a", "b", "c"], points)
    drawn = det.draw(frame)
    assert drawn.shape == frame.shape and drawn.any()
    alone = Detections(boxes[:1], np.array([0.9], np.float32), np.zeros(1, np.int32), ["a"], points[:1]).draw(frame)
    assert np.array_equal(drawn, alone)
    assert np.isnan(det.to_dict()["detections"][1]["box"][0])
