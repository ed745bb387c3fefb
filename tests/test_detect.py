"""decode_detections (torch) vs the numpy reference; priors in the graph vs in numpy; array families."""

from __future__ import annotations

import numpy as np
import pytest

from trtflow.errors import UsageError
from trtflow.vision.detect import decode_detections
from trtflow.vision.formats import DetectionConfig
from trtflow.vision.nms_ref import reference_detections
from trtflow.vision.priors import RETINAFACE, SSD300, make_priors


def _same(ref, got, tol=1e-4):
    assert set(ref) == set(got)
    np.testing.assert_array_equal(got["num_detections"], ref["num_detections"])
    np.testing.assert_array_equal(got["classes"], ref["classes"])
    for name in ("boxes", "scores", "landmarks"):
        if name in ref:
            np.testing.assert_allclose(got[name], ref[name], atol=tol, rtol=1e-6)


def _softmax(x):
    e = np.exp(x - x.max(-1, keepdims=True))
    return (e / e.sum(-1, keepdims=True)).astype(np.float32)


def _prior_model(config, opset):
    gs = pytest.importorskip("onnx_graphsurgeon")

    from trtflow.graph.builder import GraphBuilder
    from trtflow.graph.priors import graph_priors, input_hw

    image = gs.Variable("image", np.float32, ["n", 3, "h", "w"])
    graph = gs.Graph(inputs=[image], opset=opset)
    b = GraphBuilder(graph, opset)
    priors = graph_priors(b, *input_hw(b, b.wrap(image)), config)
    priors.tensor.name = "priors"
    graph.outputs = [priors.tensor]
    model = gs.export_onnx(graph.cleanup().toposort())
    model.ir_version = 8  # what this onnxruntime reads
    return model


@pytest.mark.parametrize("opset", [11, 18])
def test_graph_priors_match_numpy(opset):
    import onnxruntime as ort

    for config, sizes in ((RETINAFACE, [(64, 64), (100, 77), (481, 640)]), (SSD300, [(300, 300), (384, 512)])):
        session = ort.InferenceSession(_prior_model(config, opset).SerializeToString())
        for h, w in sizes:
            got = session.run(None, {"image": np.zeros((1, 3, h, w), np.float32)})[0]
            want = make_priors(config, h, w)
            assert got.shape == want.shape == (config.count(h, w), 4)
            np.testing.assert_allclose(got, want, atol=1e-6, rtol=0)
    assert make_priors(SSD300, 300, 300).shape == (8732, 4)


def test_greedy_chain_is_exact():
    # a suppresses b; b would suppress c, but b is gone, so c stays (Fast-NMS would drop c)
    boxes = np.array([[[0, 0, 10, 10], [3, 0, 13, 10], [6, 0, 16, 10], [50, 50, 60, 60]]], np.float32)
    scores = np.array([[[0.9], [0.8], [0.7], [0.6]]], np.float32)
    outs = {"boxes": boxes, "scores": scores}
    got = decode_detections(outs, "boxes-scores", score_thr=0.0, iou_thr=0.3, max_det=4)
    assert got["num_detections"].tolist() == [[3]]
    np.testing.assert_array_equal(got["boxes"][0, :3], boxes[0, [0, 2, 3]])
    _same(reference_detections(outs, DetectionConfig("boxes-scores", 0.0, 0.3, 4)), got)


@pytest.mark.parametrize("agnostic", [False, True])
def test_ssd_and_retinaface_match_reference(agnostic):
    rng = np.random.default_rng(3)
    a = SSD300.count(300, 300)
    ssd = {"loc": rng.normal(0, 1, (2, a, 4)).astype(np.float32), "conf": _softmax(rng.normal(0, 2, (2, a, 4)))}
    cfg = DetectionConfig("ssd", 0.9, 0.45, 50, agnostic)
    ref = reference_detections(ssd, cfg, input_size=(300, 300))
    assert ref["num_detections"].min() > 0
    _same(ref, decode_detections(ssd, "ssd", 0.9, 0.45, 50, agnostic, input_size=(300, 300)))

    a = RETINAFACE.count(96, 128)
    rf = {"loc": rng.normal(0, 1, (2, a, 4)).astype(np.float32), "conf": _softmax(rng.normal(0, 2, (2, a, 2))),
          "landmarks": rng.normal(0, 1, (2, a, 10)).astype(np.float32)}
    cfg = DetectionConfig("retinaface", 0.8, 0.4, 40, agnostic)
    ref = reference_detections(rf, cfg, input_size=(96, 128))
    got = decode_detections(rf, "retinaface", 0.8, 0.4, 40, agnostic, input_size=(96, 128))
    assert ref["num_detections"].min() > 0 and got["landmarks"].shape == (2, 40, 10)
    _same(ref, got)
    assert set(np.unique(got["classes"])) <= {-1, 1}


def test_families_and_padding():
    import torch

    rng = np.random.default_rng(0)
    head = np.concatenate([rng.uniform(0, 64, (1, 2, 50)), rng.uniform(4, 16, (1, 2, 50)),
                           rng.uniform(0, 1, (1, 3, 50))], 1).astype(np.float32)  # yolov8 [N, 4+C, A]
    out_np = decode_detections({"out": head}, "yolov8", 0.5, 0.5, max_det=200)
    assert all(isinstance(v, np.ndarray) for v in out_np.values())
    assert out_np["boxes"].shape == (1, 200, 4), "padded to max_det beyond the candidate count"
    out_t = decode_detections({"out": torch.from_numpy(head)}, "yolov8", 0.5, 0.5, max_det=200)
    assert all(isinstance(v, torch.Tensor) for v in out_t.values())
    assert out_t["classes"].dtype == torch.int32 and out_t["num_detections"].dtype == torch.int32
    _same(out_np, {k: v.numpy() for k, v in out_t.items()})
    capped = decode_detections({"out": head}, "yolov8", 0.0, 1.0, max_det=200, pre_nms_topk=7)
    assert capped["num_detections"].tolist() == [[7]]


def test_errors():
    loc = np.zeros((1, RETINAFACE.count(64, 64), 4), np.float32)
    conf = np.zeros((1, loc.shape[1], 2), np.float32)
    with pytest.raises(UsageError, match="input_size"):
        decode_detections({"loc": loc, "conf": conf}, "retinaface")
    with pytest.raises(UsageError, match="priors for a 32x32 input"):
        decode_detections({"loc": loc, "conf": conf}, "retinaface", input_size=(32, 32))
    with pytest.raises(UsageError, match="unknown detection format"):
        decode_detections({"loc": loc}, "detr")


@pytest.mark.gpu
def test_cuda_tensors_match_cpu():
    import torch

    rng = np.random.default_rng(5)
    a = RETINAFACE.count(320, 320)
    raw = {"loc": rng.normal(0, 1, (4, a, 4)).astype(np.float32), "conf": _softmax(rng.normal(0, 2, (4, a, 2))),
           "landmarks": rng.normal(0, 1, (4, a, 10)).astype(np.float32)}
    cpu = decode_detections(raw, "retinaface", 0.8, 0.4, 100, input_size=(320, 320))
    cuda = decode_detections({k: torch.from_numpy(v).cuda() for k, v in raw.items()}, "retinaface", 0.8, 0.4, 100,
                             input_size=(320, 320))
    assert all(v.is_cuda for v in cuda.values())
    _same(cpu, {k: v.cpu().numpy() for k, v in cuda.items()})


def test_a_head_without_anchors_is_padded_to_max_det():
    head = np.zeros((2, 7, 0), np.float32)  # yolov8 [N, 4+C, A] with A = 0
    out = decode_detections({"out": head}, "yolov8", max_det=5)
    assert out["boxes"].shape == (2, 5, 4) and out["scores"].shape == (2, 5) and out["classes"].shape == (2, 5)
    assert out["num_detections"].tolist() == [[0], [0]] and (out["classes"] == -1).all()
    _same(reference_detections({"out": head}, DetectionConfig("yolov8", max_det=5)), out)


def test_priors_given_as_an_array_must_be_a_by_4():
    import torch

    from trtflow.vision.priors import resolve_priors

    for bad in (np.zeros((8, 3), np.float32), np.zeros((2, 4, 4), np.float32), torch.zeros(8, 2)):
        with pytest.raises(UsageError, match=r"\[A, 4\]"):
            resolve_priors(bad, 64, 64)
    loc = np.zeros((1, RETINAFACE.count(64, 64), 4), np.float32)
    conf = np.zeros((1, loc.shape[1], 2), np.float32)
    with pytest.raises(UsageError, match=r"\[A, 4\]"):
        decode_detections({"loc": loc, "conf": conf}, "ssd", input_size=(64, 64), priors=np.zeros((loc.shape[1], 3)))


def test_outputs_of_different_batch_sizes_are_refused():
    rng = np.random.default_rng(1)
    a = RETINAFACE.count(64, 64)
    loc, conf = np.zeros((2, a, 4), np.float32), rng.uniform(0, 1, (2, a, 2)).astype(np.float32)
    marks = np.zeros((2, a, 10), np.float32)
    boxes = np.tile(np.array([0, 0, 10, 10], np.float32), (2, 30, 1))
    cases = [({"loc": loc, "conf": conf[:1]}, "ssd"),  # gave 1 image: the second image's boxes were dropped
             ({"loc": loc, "conf": conf, "landmarks": marks[:1]}, "retinaface"),
             ({"boxes": boxes[:1], "scores": rng.uniform(0, 1, (2, 30, 3)).astype(np.float32)}, "boxes-scores")]
    for outputs, fmt in cases:
        with pytest.raises(UsageError, match="disagree on the batch"):
            decode_detections(outputs, fmt, input_size=(64, 64), priors="retinaface")


def test_bad_thresholds_counts_and_sizes_are_usage_errors():
    head = np.zeros((1, 7, 20), np.float32)
    for kwargs in ({"score_thr": "0.5"}, {"score_thr": float("nan")}, {"max_det": 2.5}, {"pre_nms_topk": 2.5},
                   {"variances": (0.1,)}):
        with pytest.raises(UsageError):
            decode_detections({"out": head}, "yolov8", **kwargs)
    assert decode_detections({"out": head}, "yolov8", max_det=np.int64(3))["boxes"].shape == (1, 3, 4)
    loc = np.zeros((1, RETINAFACE.count(64, 64), 4), np.float32)
    conf = np.zeros((1, loc.shape[1], 2), np.float32)
    for size in ((64,), "64x64", (0, 64), (-64, 64), (64.5, 64)):
        with pytest.raises(UsageError, match="input_size"):
            decode_detections({"loc": loc, "conf": conf}, "retinaface", input_size=size)
        with pytest.raises(UsageError, match="input_size"):
            reference_detections({"loc": loc, "conf": conf}, DetectionConfig("retinaface"), input_size=size)
    assert decode_detections({"loc": loc, "conf": conf}, "retinaface", input_size=64)["boxes"].shape == (1, 100, 4)


def test_priors_files_and_arrays_that_are_not_numbers_are_refused(tmp_path):
    from trtflow.errors import ModelLoadError
    from trtflow.vision.priors import resolve_priors

    archive = tmp_path / "priors.npy"
    with open(archive, "wb") as f:  # an .npz archive under a .npy name
        np.savez(f, priors=np.zeros((3, 4), np.float32))
    with pytest.raises(ModelLoadError, match="not a .npy array"):
        resolve_priors(archive, 64, 64)
    text = tmp_path / "text.npy"
    np.save(text, np.array([["a", "b", "c", "d"]]))
    with pytest.raises(ModelLoadError, match="<U1"):
        resolve_priors(text, 64, 64)
    with pytest.raises(UsageError, match="<U1"):
        resolve_priors(np.array([["a", "b", "c", "d"]]), 64, 64)
    upper = tmp_path / "PRIORS.NPY"
    with open(upper, "wb") as f:
        np.save(f, np.ones((3, 4), np.float64))
    assert resolve_priors(str(upper), 64, 64).dtype == np.float32


def test_one_output_named_for_two_roles_is_refused():
    rng = np.random.default_rng(2)
    outputs = {"a": rng.uniform(0, 1, (1, 5, 4)).astype(np.float32), "b": rng.uniform(0, 1, (1, 5, 4)).astype(np.float32)}
    for check in (False, True):  # the boxes were read as the scores too / the check named another format
        with pytest.raises(UsageError, match="'a' is given for both boxes and scores"):
            decode_detections(outputs, "boxes-scores", names={"boxes": "a", "scores": "a"}, check_format=check)


def test_a_priors_file_goes_to_the_tensors_device_once_per_version_of_it(tmp_path, monkeypatch):
    """Torch outputs with a .npy priors path had the priors copied to their device on every batch, where
    presets were copied once; now once per version of the file (its size and mtime) too."""
    torch = pytest.importorskip("torch")
    import os

    import trtflow.vision.priors as priors_module
    from trtflow.vision.formats import DetectionConfig, decode_raw

    path = tmp_path / "priors.npy"
    rng = np.random.default_rng(0)
    first, second = rng.uniform(0.2, 0.8, (2, 6, 4)).astype(np.float32)
    np.save(path, first)
    config = DetectionConfig("ssd", priors=str(path))
    outputs = {"loc": rng.normal(size=(1, 6, 4)).astype(np.float32), "conf": rng.random((1, 6, 3), dtype=np.float32)}
    tensors = {k: torch.from_numpy(v) for k, v in outputs.items()}
    want = decode_raw(outputs, config, (32, 48))[0]  # numpy outputs: the priors as an array
    resolved = []
    resolve = priors_module.resolve_priors
    monkeypatch.setattr(priors_module, "resolve_priors", lambda spec, h, w: resolved.append(spec) or resolve(spec, h, w))
    for _ in range(4):
        torch.testing.assert_close(decode_raw(tensors, config, (32, 48))[0], torch.from_numpy(want))
    assert len(resolved) == 1
    np.save(path, second)
    later = os.stat(path).st_mtime_ns + 10**9  # a new version, whatever the clock's resolution
    os.utime(path, ns=(later, later))
    got = decode_raw(tensors, config, (32, 48))[0]
    assert len(resolved) == 2
    torch.testing.assert_close(got, torch.from_numpy(decode_raw(outputs, config, (32, 48))[0]))
    assert not torch.allclose(got, torch.from_numpy(want))


def test_a_priors_file_is_read_once_per_version_of_it(tmp_path, monkeypatch):
    """A .npy priors path was read from disk on every batch of a stream; now once per (size, mtime) of the
    file, each caller getting its own copy; a rewritten file is read again."""
    import os

    import trtflow.vision.priors as priors_module

    path = tmp_path / "priors.npy"
    first = np.random.default_rng(0).random((6, 4), dtype=np.float32)
    np.save(path, first)
    reads = []
    real_load = np.load
    monkeypatch.setattr(np, "load", lambda *a, **k: reads.append(a[0]) or real_load(*a, **k))
    got = [priors_module.resolve_priors(str(path), None, None) for _ in range(5)]
    assert len(reads) == 1 and all(np.array_equal(g, first) for g in got)
    got[0][:] = 0  # a caller's copy, not the remembered array
    assert np.array_equal(priors_module.load_priors(path), first)
    second = first[::-1].copy()
    np.save(path, second)
    later = os.stat(path).st_mtime_ns + 10**9  # a new version, whatever the clock's resolution
    os.utime(path, ns=(later, later))
    assert np.array_equal(priors_module.load_priors(path), second) and len(reads) == 2
