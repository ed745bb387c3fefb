"""GPU-ready preprocessing checked against OpenCV / numpy references (on the CPU here)."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
cv2 = pytest.importorskip("cv2")

from trtflow.errors import UsageError  # noqa: E402
from trtflow.vision import preprocess as pp  # noqa: E402

RNG = np.random.default_rng(0)
FRAMES = RNG.integers(0, 256, (2, 48, 64, 3), dtype=np.uint8)  # two 48x64 BGR frames


def _cv2_resize(frame: np.ndarray, h: int, w: int) -> np.ndarray:
    return cv2.resize(frame.astype(np.float32) / 255, (w, h), interpolation=cv2.INTER_LINEAR)


def _nchw(t) -> np.ndarray:
    return t.permute(0, 2, 3, 1).numpy()  # back to NHWC for comparison with OpenCV


def test_to_nchw_and_swap_rb_are_exact():
    x = pp.to_nchw(torch.from_numpy(FRAMES), "float32", bgr_to_rgb=True)
    assert x.shape == (2, 3, 48, 64) and x.dtype == torch.float32
    assert x.is_contiguous(memory_format=torch.channels_last)
    ref = cv2.cvtColor(FRAMES[1], cv2.COLOR_BGR2RGB).astype(np.float32) / 255
    np.testing.assert_allclose(_nchw(x)[1], ref, rtol=0, atol=1e-7)  # max error: float rounding only
    back = pp.swap_rb(x)
    np.testing.assert_allclose(_nchw(back)[0] * 255, FRAMES[0], rtol=0, atol=1e-4)


def test_fp16_output():
    x = pp.to_nchw(torch.from_numpy(FRAMES), torch.float16)
    assert x.dtype == torch.float16
    np.testing.assert_allclose(_nchw(x.float()), FRAMES / 255, atol=5e-4)  # fp16 of 0..1: error < 2^-11


@pytest.mark.parametrize("h, w", [(24, 32), (100, 50), (48, 64)])
def test_resize_matches_cv2_inter_linear(h, w):
    x = pp.to_nchw(torch.from_numpy(FRAMES))
    out = pp.resize(x, (h, w))
    assert out.shape == (2, 3, h, w)
    for i in range(2):
        ref = _cv2_resize(FRAMES[i], h, w)
        assert np.abs(_nchw(out)[i] - ref).max() < 1e-5  # max error 1e-5 (float32 interpolation order)


def test_letterbox_matches_cv2_and_boxes_map_back():
    x = pp.to_nchw(torch.from_numpy(FRAMES))
    out, box = pp.letterbox(x, 96)
    assert out.shape == (2, 3, 96, 96)
    assert box.scale == pytest.approx(1.5) and box.pad == (0, 12) and box.original == (48, 64)
    ref = np.full((96, 96, 3), 114 / 255, np.float32)
    ref[12:84, :, :] = _cv2_resize(FRAMES[0], 72, 96)
    assert np.abs(_nchw(out)[0] - ref).max() < 1e-5  # max error 1e-5
    # a box drawn in the original frame survives the round trip
    boxes = torch.tensor([[[10.0, 5.0, 40.0, 30.0]]])
    scaled = boxes * box.scale + torch.tensor([0.0, 12.0, 0.0, 12.0])
    np.testing.assert_allclose(pp.unletterbox_boxes(scaled, box).numpy(), boxes.numpy(), atol=1e-5)
    # boxes in the padding clip to the frame
    outside = torch.tensor([[-5.0, 0.0, 200.0, 95.0]])
    np.testing.assert_allclose(pp.unletterbox_boxes(outside, box).numpy(), [[0.0, 0.0, 64.0, 48.0]])


def test_letterbox_without_scaleup_only_pads():
    x = pp.to_nchw(torch.from_numpy(FRAMES))
    out, box = pp.letterbox(x, (80, 80), scaleup=False)
    assert box.scale == 1.0 and box.pad == (8, 16)
    np.testing.assert_allclose(_nchw(out)[0, 16:64, 8:72], FRAMES[0] / 255, rtol=0, atol=1e-7)  # x * (1/255)


def test_letterbox_of_a_sliver_keeps_one_row():
    """A frame so flat that its scaled height rounds to 0 keeps one row instead of failing to resize."""
    x = torch.rand(1, 3, 2, 300)
    out, box = pp.letterbox(x, 64)
    assert out.shape == (1, 3, 64, 64) and box.pad[0] == 0
    rows = (out[0, 0] != 114 / 255).any(dim=1)
    assert int(rows.sum()) == 1  # the one row of picture, the rest padding


def test_normalize_matches_numpy():
    x = pp.to_nchw(torch.from_numpy(FRAMES))
    out = pp.normalize(x)
    ref = (FRAMES / np.float32(255) - np.array(pp.IMAGENET_MEAN, np.float32)) / np.array(pp.IMAGENET_STD, np.float32)
    assert np.abs(_nchw(out) - ref).max() < 1e-5  # max error 1e-5
    with pytest.raises(UsageError, match="2/3 values for 3 channels"):
        pp.normalize(x, mean=(0.5, 0.5))


def test_resize_shorter_side_and_center_crop_match_cv2():
    x = pp.to_nchw(torch.from_numpy(FRAMES))
    out = pp.center_crop(pp.resize_shorter_side(x, 32), 24)
    assert pp.resize_shorter_side(x, 32).shape[2:] == (32, 42)  # torchvision: int(32 * 64 / 48)
    ref = _cv2_resize(FRAMES[1], 32, 42)[4:28, 9:33]
    assert out.shape == (2, 3, 24, 24)
    assert np.abs(_nchw(out)[1] - ref).max() < 1e-5  # max error 1e-5
    with pytest.raises(UsageError, match="larger than the images"):
        pp.center_crop(x, 100)


def test_classify_preprocess_chain():
    out = pp.classify_preprocess(torch.from_numpy(FRAMES), size=24, resize_to=32, dtype="float32", bgr=True)
    rgb = cv2.cvtColor(FRAMES[0], cv2.COLOR_BGR2RGB)
    ref = (_cv2_resize(rgb, 32, 42)[4:28, 9:33] - np.array(pp.IMAGENET_MEAN, np.float32)) / np.array(pp.IMAGENET_STD, np.float32)
    assert out.shape == (2, 3, 24, 24) and out.is_contiguous(memory_format=torch.channels_last)
    assert np.abs(_nchw(out)[0] - ref).max() < 1e-4  # max error 1e-4 (after dividing by std ~0.22)


def test_bad_inputs_raise():
    with pytest.raises(UsageError, match="torch tensor"):
        pp.to_nchw(FRAMES)
    with pytest.raises(UsageError, match="got \\(48, 64\\)"):
        pp.to_nchw(torch.zeros(48, 64))


def test_bad_sizes_dtypes_and_families_are_usage_errors():
    x = pp.to_nchw(torch.from_numpy(FRAMES))
    for size in (0, (0, 8), (8, -2)):
        for call in (lambda s: pp.resize(x, s), lambda s: pp.letterbox(x, s), lambda s: pp.center_crop(x, s)):
            with pytest.raises(UsageError, match="positive"):
                call(size)
    with pytest.raises(UsageError, match="positive"):
        pp.resize_shorter_side(x, 0)
    for call in (lambda e: pp.resize_shorter_side(e, 8), lambda e: pp.resize(e, 8), lambda e: pp.letterbox(e, 8)):
        with pytest.raises(UsageError, match="empty"):
            call(x[:, :, :0])  # 0 x 64 images
    with pytest.raises(UsageError, match="dtype 'floaty'"):
        pp.to_nchw(torch.from_numpy(FRAMES), dtype="floaty")
    for chain in (pp.classify_preprocess, pp.detect_preprocess):
        with pytest.raises(UsageError, match="torch tensor"):
            chain(FRAMES)  # numpy frames
    with pytest.raises(UsageError, match="floating"):
        pp.normalize(torch.from_numpy(FRAMES).permute(0, 3, 1, 2))  # uint8 would wrap around silently


def test_unletterbox_takes_integer_boxes_of_either_family():
    _, box = pp.letterbox(torch.zeros(1, 3, 100, 200), 64)  # scale 0.32, pad (0, 16)
    want = np.array([[31.25, 12.5, 93.75, 75.0]], np.float32)
    for boxes in (np.array([[10, 20, 30, 40]]), torch.tensor([[10, 20, 30, 40]])):  # int64 (a rounded model output)
        got = pp.unletterbox_boxes(boxes, box)
        assert type(got) is type(boxes) and got.dtype in (np.float32, torch.float32)
        np.testing.assert_allclose(np.asarray(got), want)
    with pytest.raises(UsageError, match=r"\(\.\.\., 4\)"):
        pp.unletterbox_boxes(np.zeros((2, 3)), box)


def test_letterbox_list_gives_one_letterbox_per_image_or_refuses():
    with pytest.raises(UsageError, match="image 0 .* 2 images"):  # one Letterbox came back for two images
        pp.letterbox([np.zeros((2, 3, 5, 7), np.float32)], 8)
    with pytest.raises(UsageError, match="channels"):
        pp.letterbox([np.zeros((3, 5, 7), np.float32), np.zeros((1, 9, 4), np.float32)], 8)
    with pytest.raises(UsageError, match="numpy arrays or .*torch tensors"):
        pp.letterbox([torch.zeros(3, 5, 7), np.zeros((3, 9, 4), np.float32)], 8)
    images, boxes = pp.letterbox([torch.zeros(3, 5, 7), torch.zeros(1, 3, 9, 4)], 8)  # CHW or a batch of one
    assert images.shape == (2, 3, 8, 8) and [b.original for b in boxes] == [(5, 7), (9, 4)]


@pytest.mark.parametrize("size", ["6x4x3", 64.5, (64, 32, 3), (64.5, 32), (True, 32), None])
def test_sizes_that_are_not_one_or_two_whole_numbers_are_refused(size):
    """letterbox(x, "64") made a 6 x 4 image (the string's characters as height and width); a float
    or three sizes failed with Python's TypeError/ValueError."""
    x = torch.rand(1, 3, 5, 7)
    for call in (lambda: pp.letterbox(x, size), lambda: pp.resize(x, size), lambda: pp.center_crop(x, size)):
        with pytest.raises(UsageError, match="size"):
            call()


def test_sizes_of_numpy_ints_and_lists_are_taken():
    x = torch.rand(1, 3, 5, 7)
    assert pp.letterbox(x, "64")[0].shape == (1, 3, 64, 64)  # a string is read as a size, not its characters
    assert pp.resize(x, "4x6").shape == (1, 3, 4, 6)
    assert pp.letterbox(x, np.int64(16))[0].shape == (1, 3, 16, 16)
    assert pp.resize(x, [np.int32(4), 6]).shape == (1, 3, 4, 6)


def test_to_nchw_refuses_a_dtype_that_is_not_floating():
    """dtype="int8" failed inside torch (RuntimeError: result type Float can't be cast)."""
    frames = torch.zeros((2, 2, 3), dtype=torch.uint8)
    for dtype in ("int8", torch.int32, "uint8"):
        with pytest.raises(UsageError, match="float32"):
            pp.to_nchw(frames, dtype)


def test_normalize_refuses_a_zero_std():
    """std 0 divided into infinities without a word (Prep refuses it; the function did not)."""
    with pytest.raises(UsageError, match="std"):
        pp.normalize(torch.zeros(1, 3, 2, 2), std=(0.2, 0.0, 0.2))


def test_letterbox_of_a_read_only_array_draws_no_torch_warning():
    """letterbox takes numpy images; a read-only one (np.frombuffer, a decoder's frame) went to torch.from_numpy,
    which warned "The given NumPy array is not writable" (once per process: checked in a fresh one). It is
    copied once instead, to the same result as a writeable array."""
    from tests.conftest import assert_no_not_writable_warning

    assert_no_not_writable_warning(
        "import numpy as np\nfrom trtflow.vision.preprocess import letterbox\n"
        "image = np.frombuffer(np.arange(48, dtype=np.float32).tobytes(), np.float32).reshape(1, 3, 4, 4)\n"
        "assert not image.flags.writeable\nletterbox(image, (8, 6))\n")
    image = np.frombuffer(np.arange(48, dtype=np.float32).tobytes(), np.float32).reshape(1, 3, 4, 4)
    out, box = pp.letterbox(image, (8, 6))
    assert isinstance(out, np.ndarray) and np.array_equal(out, pp.letterbox(image.copy(), (8, 6))[0])


def test_normalize_builds_its_mean_and_std_tensors_once_per_values_and_device():
    """normalize made its mean and std tensors (a host-to-device copy on a GPU) on every call; they are made
    once per (values, device, dtype) and reused, with the same result."""
    x = pp.to_nchw(torch.from_numpy(FRAMES))
    ref = (FRAMES / np.float32(255) - np.array(pp.IMAGENET_MEAN, np.float32)) / np.array(pp.IMAGENET_STD, np.float32)
    first = pp.normalize(x)
    misses = pp._channel_values.cache_info().misses
    second = pp.normalize(x, list(pp.IMAGENET_MEAN), list(pp.IMAGENET_STD))  # lists: the same values
    assert pp._channel_values.cache_info().misses == misses  # nothing made again
    assert torch.equal(first, second) and np.abs(_nchw(first) - ref).max() < 1e-5
    mean = pp._channel_values(pp.IMAGENET_MEAN, x.device, torch.float32)
    assert mean is pp._channel_values(pp.IMAGENET_MEAN, x.device, torch.float32)
    assert mean.shape == (1, 3, 1, 1) and mean.flatten().tolist() == pytest.approx(pp.IMAGENET_MEAN)
    assert pp._channel_values((0.5, 0.5, 0.5), x.device, torch.float32) is not mean


def test_one_height_width_parser_behind_every_size_option():
    """vision's resize/crop sizes, a task's input_size (video --input-size) and --calib-preprocess crop= each
    parsed (height, width) their own way; one parser, each keeping its syntax."""
    from trtflow.cli.video import _size as video_size
    from trtflow.edits.calibration import parse_preprocess
    from trtflow.tasks.prepare import as_size
    from trtflow.vision.preprocess import hw_size

    for given, want in ((640, (640, 640)), ((480, 640), (480, 640)), ([480, 640], (480, 640)), ("480x640", (480, 640)),
                        ("480,640", (480, 640)), ("640", (640, 640)), (np.int64(32), (32, 32)), (640.0, (640, 640)),
                        (np.float64(32), (32, 32)), ((480.0, 640), (480, 640))):
        assert hw_size(given) == as_size(given) == want, given
    for bad in (0, -1, True, (1, 2, 3), "axb", "0x640", 2.5, (), None, "480x", "x480"):
        with pytest.raises(UsageError, match="size"):
            hw_size(bad)
    assert as_size(None) is None
    assert video_size("480x640") == video_size("480,640") == (480, 640) and video_size("640") == (640, 640)
    with pytest.raises(UsageError, match="--input-size '1x2x3': expected HxW"):
        video_size("1x2x3")
    assert parse_preprocess("crop=224").crop == (224, 224) and parse_preprocess("crop=200x224").crop == (200, 224)
    with pytest.raises(UsageError, match="--calib-preprocess"):
        parse_preprocess("crop=1x2x3")
    assert pp.resize(torch.zeros(1, 3, 8, 8), 4).shape[2:] == (4, 4)
    assert pp.center_crop(torch.zeros(1, 3, 8, 8), "4x2").shape[2:] == (4, 2)
