"""The NV12 -> RGB conversion of the NVDEC path, on the CPU: against OpenCV, and 10-bit P010 planes."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")
cv2 = pytest.importorskip("cv2")

from trtflow.errors import UsageError  # noqa: E402
from trtflow.video.nvdec import nv12_to_rgb  # noqa: E402

BT601, LIMITED = 6, 1


def nv12_planes(h=48, w=64):
    """Y (H, W) and interleaved UV (H/2, W/2, 2) of a colourful frame, through OpenCV's BT.601 I420."""
    yy, xx = np.mgrid[0:h, 0:w]
    rgb = np.stack([xx * 255 // w, yy * 255 // h, (xx + yy) * 255 // (h + w)], -1).astype(np.uint8)
    i420 = cv2.cvtColor(rgb, cv2.COLOR_RGB2YUV_I420)
    y = i420[:h]
    u = i420[h:h + h // 4].reshape(h // 2, w // 2)
    v = i420[h + h // 4:].reshape(h // 2, w // 2)
    return y, np.stack([u, v], -1)


def test_nv12_matches_opencv():
    y, uv = nv12_planes()
    ours = nv12_to_rgb(torch.from_numpy(y), torch.from_numpy(uv), BT601, LIMITED).numpy()
    nv12 = np.concatenate([y, uv.reshape(y.shape[0] // 2, -1)])
    theirs = cv2.cvtColor(nv12, cv2.COLOR_YUV2RGB_NV12)
    assert ours.shape == theirs.shape and ours.dtype == np.uint8
    assert np.abs(ours.astype(int) - theirs).max() <= 2


def test_p010_planes_give_the_8_bit_colours():
    y, uv = nv12_planes()
    eight = nv12_to_rgb(torch.from_numpy(y), torch.from_numpy(uv), BT601, LIMITED)
    # P010: 10-bit samples in the high bits of 16-bit words (the 8-bit value times 4, shifted up by 6)
    y10, uv10 = (torch.from_numpy(a.astype(np.uint16) << 8).to(torch.uint16) for a in (y, uv))
    ten = nv12_to_rgb(y10, uv10, BT601, LIMITED)
    assert ten.dtype == torch.uint8
    assert torch.equal(ten, eight)
    assert 20 < ten.float().mean() < 235  # not the out-of-range white 16-bit words read as 8-bit would give


def test_other_plane_types_are_refused():
    y, uv = nv12_planes()
    with pytest.raises(UsageError, match="--decode cpu"):
        nv12_to_rgb(torch.from_numpy(y).float(), torch.from_numpy(uv).float(), BT601, LIMITED)
