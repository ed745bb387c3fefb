"""Frictions new users of the guides hit: class-id outputs, two-file compare, NHWC feeds, batches
outside the profile, letterbox on numpy, random export inputs named."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from trtflow.cli.main import main  # noqa: E402
from trtflow.compare.core import diff_one  # noqa: E402
from trtflow.errors import InputShapeError  # noqa: E402

SEG_MODULE = '''
import torch


class Seg(torch.nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv, self.head = torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.Conv2d(8, 21, 1)

    def forward(self, x):
        return self.head(torch.relu(self.conv(x))).argmax(1, keepdim=True)


def make():
    return Seg().eval(), (torch.rand(1, 3, 32, 32),)
'''


@pytest.fixture(scope="module")
def seg(tmp_path_factory):
    """An argmax segmenter: its ONNX file, an FP16 copy, and the module's spec (on sys.path)."""
    from trtflow import edits
    from trtflow.export import from_torch
    from trtflow.graph.io import save_onnx

    folder = tmp_path_factory.mktemp("seg")
    (folder / "segfric.py").write_text(SEG_MODULE)
    sys.path.insert(0, str(folder))
    import segfric

    module, example = segfric.make()
    onnx_path = folder / "seg.onnx"
    from_torch(module, example, onnx_path, input_names=["x"], output_names=["classes"],
               dynamic={"x": {2: "h", 3: "w"}, "classes": {2: "h", 3: "w"}}, exporter="torchscript")
    fp16, _ = edits.apply("fp16", onnx_path, verify_config=edits.VerifyConfig(shapes={"x": (1, 3, 64, 64)},
                                                                            min_agreement=0.5))
    yield {"onnx": onnx_path, "fp16": save_onnx(fp16, folder / "seg16.onnx"), "spec": "segfric:make"}
    sys.path.remove(str(folder))


def test_integer_outputs_judged_by_agreement():
    a = np.zeros((100,), np.int64)
    b = a.copy()
    b[:3] = 18  # three class ids flipped: max abs 18 means nothing for class ids
    strict = diff_one("classes", a, b, atol=1e-5, rtol=1e-5)
    assert not strict.passed and strict.agreement == pytest.approx(0.97) and "97.00% equal" in strict.note
    assert diff_one("classes", a, b, 1e-5, 1e-5, min_agreement=0.95).passed


def test_compare_two_onnx_files_class_ids(seg, capsys):
    argv = ["compare", str(seg["onnx"]), str(seg["fp16"]), "--shapes", "x:1x3x64x64"]
    code = main(argv)
    err = capsys.readouterr().err
    if code == 1:  # FP16 flipped near-tied classes: the message speaks of agreement, not --atol
        assert "of the elements equal" in err and "--min-agreement" in err and "--atol" not in err
        assert main([*argv, "--min-agreement", "0.5"]) == 0
    else:
        assert code == 0
    capsys.readouterr()
    assert main(["compare", str(seg["onnx"]), str(seg["onnx"]), "--shapes", "x:1x3x16x16", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["comparisons"][0]["outputs"]["classes"]["agreement"] == 1.0


def test_compare_module_against_onnx_file(seg, capsys):
    assert main(["compare", seg["spec"], str(seg["onnx"]), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["engines"][0].startswith("torch:") and report["engines"][1].startswith("ort:")


def test_missing_output_reported_as_missing():
    from trtflow.compare.core import compare_outputs
    from trtflow.compare.report import CompareReport, EngineComparison
    from trtflow.errors import MismatchError

    diffs = compare_outputs({"boxes": np.zeros(3)}, {"boxes_0": np.zeros(3)})
    report = CompareReport("m", ["a", "b"], {}, [EngineComparison("a", "b", diffs)])
    with pytest.raises(MismatchError, match="boxes: missing") as info:
        report.raise_for_mismatch()
    assert "--atol" not in str(info.value) and "matched by name" in str(info.value)


def test_nhwc_feed_into_nchw_model_says_transpose(seg):
    import trtflow

    with trtflow.load(seg["onnx"], engine="ort") as engine, pytest.raises(InputShapeError) as info:
        engine.infer({"x": np.zeros((1, 64, 64, 3), np.float32)})
    assert "channels-last" in str(info.value) and "embed-preprocess --layout nhwc" in str(info.value)


def test_split_batches_static_engine(tmp_path):
    import trtflow
    from trtflow import edits
    from trtflow.export import from_torch
    from trtflow.graph.io import save_onnx

    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 1), torch.nn.Flatten(), torch.nn.Linear(4 * 8 * 8, 5)).eval()
    path = tmp_path / "m.onnx"
    from_torch(net, torch.rand(2, 3, 8, 8), path, input_names=["x"], output_names=["y"], dynamic={"x": {0: "n"}},
               exporter="torchscript")
    static = save_onnx(edits.apply("fix-shapes", path, dims={"n": 4}, verify=False)[0], tmp_path / "m4.onnx")
    x = np.random.default_rng(0).random((10, 3, 8, 8), dtype=np.float32)
    with torch.no_grad():
        expected = net(torch.from_numpy(x)).numpy()
    with trtflow.load(static, engine="ort") as plain, pytest.raises(InputShapeError, match="split_batches"):
        plain.infer({"x": x})
    with trtflow.load(static, engine="ort", split_batches=True) as engine:
        np.testing.assert_allclose(engine.infer({"x": x})["y"], expected, atol=1e-5)       # 4 + 4 + 2 (padded)
        got = engine.infer({"x": torch.from_numpy(x[:3])})["y"]                            # one partial batch
        assert isinstance(got, torch.Tensor) and got.shape == (3, 5)


def test_split_batches_refuses_an_output_without_a_batch_dim(tmp_path):
    """A scalar output (a sum over the batch) crashed joining with a raw numpy ValueError; a 1-D output
    of another size would have been concatenated chunk after chunk, silently."""
    import onnx
    from onnx import TensorProto, helper

    import trtflow
    from trtflow.errors import UsageError

    for out_dims in ([], [4]):
        axes = [helper.make_tensor("axes", TensorProto.INT64, [1], [0])] if out_dims else []  # over the batch
        reduce = helper.make_node("ReduceSum", ["x", "axes"] if out_dims else ["x"], ["s"], keepdims=0)
        graph = helper.make_graph(
            [helper.make_node("Mul", ["x", "x"], ["y"]), reduce], "g",
            [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 4])],
            [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 4]),
             helper.make_tensor_value_info("s", TensorProto.FLOAT, out_dims)],
            initializer=axes)
        path = tmp_path / f"sum{len(out_dims)}.onnx"
        onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), path)
        x = np.arange(20, dtype=np.float32).reshape(5, 4)
        with trtflow.load(path, engine="ort", split_batches=True) as engine, pytest.raises(UsageError) as info:
            engine.infer({"x": x})
        assert "'s'" in str(info.value) and "no batch dimension" in str(info.value)
        with trtflow.load(path, engine="ort", split_batches=True) as engine:  # a batch it takes runs as before
            np.testing.assert_array_equal(engine.infer({"x": x[:2]})["y"], x[:2] ** 2)


def test_letterbox_numpy_lists_and_bottom_right():
    from trtflow.vision.preprocess import letterbox, unletterbox_boxes

    images = [np.ones((3, 60, 80), np.float32), np.ones((3, 100, 50), np.float32)]
    batch, boxes = letterbox(images, 64, pad_value=0.0, pad="bottom-right")
    assert isinstance(batch, np.ndarray) and batch.shape == (2, 3, 64, 64) and len(boxes) == 2
    assert boxes[0].pad == (0, 0) and batch[0, :, :48].min() == 1.0 and batch[0, :, 48:].max() == 0.0
    centred, box = letterbox(torch.ones(1, 3, 60, 80), 64, pad="center")
    assert box.pad == (0, 8) and isinstance(centred, torch.Tensor)
    back = unletterbox_boxes(np.array([[0.0, 8.0, 64.0, 56.0]]), box)
    np.testing.assert_allclose(back, [[0, 0, 80, 60]], atol=1e-4)
    with pytest.raises(Exception, match="bottom-right"):
        letterbox(images, 64, pad="top")


def test_export_names_random_inputs_and_takes_files(seg, tmp_path, capsys):
    out = tmp_path / "e.onnx"
    assert main(["export", seg["spec"], "-o", str(out), "--shapes", "x:1x3x16x16", "--exporter", "torchscript",
                 "--json"]) == 0
    notes = json.loads(capsys.readouterr().out)["notes"]
    assert any("random: standard normal" in n and "--input NAME=FILE.npy" in n for n in notes)
    np.save(tmp_path / "x.npy", np.random.default_rng(0).random((1, 3, 16, 16), dtype=np.float32))
    assert main(["export", seg["spec"], "-o", str(out), "--input", f"x={tmp_path / 'x.npy'}", "--exporter",
                 "torchscript", "--json"]) == 0
    assert not any("random" in n for n in json.loads(capsys.readouterr().out)["notes"])


def test_surgeon_integer_outputs_use_agreement(seg, tmp_path, capsys):
    argv = ["surgeon", "fp16", str(seg["onnx"]), "-o", str(tmp_path / "s16.onnx"), "--shapes", "x:1x3x64x64"]
    code = main(argv)
    err = capsys.readouterr().err
    if code != 0:
        assert "exact agreement" in err and "--min-agreement" in err
        assert main([*argv, "--min-agreement", "0.5"]) == 0


@pytest.fixture(scope="module")
def nms_model(tmp_path_factory):
    """A boxes-scores head (outputs 'bboxes', 'classification') with add-nms on top."""
    from trtflow import edits
    from trtflow.export import from_torch
    from trtflow.graph.io import save_onnx

    class Head(torch.nn.Module):
        def forward(self, x):
            p = x.flatten(2).transpose(1, 2)  # 1, 64, 6
            return torch.cat([p[..., :2], p[..., :2] + p[..., 2:4].abs()], -1), torch.sigmoid(p[..., 4:6])

    folder = tmp_path_factory.mktemp("nms")
    from_torch(Head(), torch.rand(1, 6, 8, 8), folder / "raw.onnx", input_names=["x"],
               output_names=["bboxes", "classification"], exporter="torchscript")
    nms, _ = edits.apply("add-nms", folder / "raw.onnx", format="boxes-scores", verify=False)
    return save_onnx(nms, folder / "nms.onnx")


def test_extract_warns_on_outputs_behind_nms(nms_model, caplog):
    from trtflow import edits

    _, report = edits.apply("extract", nms_model, outputs=("boxes", "scores"), verify=False)
    warning = report["details"]["warning"]
    assert "NonMaxSuppression" in warning and "--outputs bboxes,classification" in warning
    _, report = edits.apply("extract", nms_model, outputs=("bboxes", "classification"), verify=False)
    assert "warning" not in report["details"]


def test_nms_build_failure_names_the_raw_tensors(nms_model):
    pytest.importorskip("tensorrt_rtx")
    from trtflow.backends.tensorrt.builder import build_engine
    from trtflow.errors import BuildError

    with pytest.raises(BuildError) as info:
        build_engine(nms_model)
    fixes = [f["fix"] for f in info.value.failures if f["op"] == "NonMaxSuppression"]
    assert fixes and "--outputs bboxes,classification" in fixes[0] and "<boxes>" not in fixes[0]


class ListOfDicts(torch.nn.Module):
    """Returns what torchvision detectors return: one dict per image, sizes depending on the data."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv = torch.nn.Conv2d(3, 5, 8, 8)

    def forward(self, images):
        out = []
        for image in images:
            p = self.conv(image[None]).flatten(2)[0].T
            scores = torch.sigmoid(p[:, 4])
            keep = scores > 0.5
            boxes = torch.cat([p[:, :2], p[:, :2] + p[:, 2:4].abs()], 1)[keep]
            out.append({"boxes": boxes, "scores": scores[keep], "labels": (p[:, 0] > 0).long()[keep]})
        return out


def test_list_of_dict_outputs_export_and_verify(tmp_path):
    from trtflow.export import from_torch

    result = from_torch(ListOfDicts(), torch.rand(2, 3, 32, 32), tmp_path / "det.onnx", input_names=["images"],
                        exporter="torchscript")
    names = [s.name for s in result.outputs]
    assert names == ["boxes_0", "scores_0", "labels_0", "boxes_1", "scores_1", "labels_1"]
    assert result.verified and all(d.passed for case in result.verification for d in case.diffs)
    labels = next(d for d in result.verification[0].diffs if d.name == "labels_0")
    assert labels.agreement == 1.0  # class ids: exact agreement


def test_flatten_names_and_count_notes():
    from trtflow.export.inputs import flatten_outputs

    t = torch.zeros(1)
    assert list(flatten_outputs({"a": t, "b": (t, t)})) == ["a", "b_0", "b_1"]
    assert list(flatten_outputs((t, t))) == ["output_0", "output_1"]
    assert list(flatten_outputs(({"x": t}, {"y": t}))) == ["x", "y"]  # unique keys keep their names
    with pytest.raises(Exception, match=r"boxes_0, scores_0, boxes_1, scores_1"):
        flatten_outputs([{"boxes": t, "scores": t}, {"boxes": t, "scores": t}], ["boxes", "scores"])
    note = diff_one("boxes_0", np.zeros((5, 4)), np.zeros((6, 4)), 1e-5, 1e-5).note
    assert note.startswith("count 6 differs from the reference's 5")


def test_bench_fills_shared_dim_labels(tmp_path, capsys):
    """--shapes for the image input sizes the other inputs that share its batch label."""
    from trtflow.export import from_torch

    class TwoInputs(torch.nn.Module):
        def forward(self, images, sizes):
            return images.mean((1, 2, 3))[:, None] * sizes

    path = tmp_path / "two.onnx"
    from_torch(TwoInputs(), (torch.rand(2, 3, 8, 8), torch.rand(2, 2)), path, input_names=["images", "sizes"],
               dynamic={"images": {0: "batch"}, "sizes": {0: "batch"}}, exporter="torchscript")
    code = main(["bench", str(path), "--engine", "ort", "--shapes", "images:5x3x8x8", "--iterations", "2",
                 "--duration", "0", "--warmUp", "0", "--json"])
    report = json.loads(capsys.readouterr().out)
    assert code == 0 and report["shapes"]["sizes"] == [5, 2]


def test_embed_preprocess_takes_float_nhwc(seg, tmp_path, capsys):
    out = tmp_path / "nhwc.onnx"
    assert main(["surgeon", "embed-preprocess", str(seg["onnx"]), "-o", str(out), "--layout", "nhwc", "--dtype",
                 "float32", "--scale", "1", "--shapes", "x:1x16x16x3", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["verification"]["passed"]
    import trtflow

    with trtflow.load(out, engine="ort") as engine:
        assert engine.inputs[0].dtype == "float32" and engine.inputs[0].shape[-1] == 3



def test_trtexec_verbose_is_passed_on_once(monkeypatch):
    """trtexec's --verbose, or trtflow's before the command, reaches the command it runs once (trtexec's
    was also inserted a second time)."""
    import argparse
    import logging

    from trtflow.cli import main as cli_main, trtexec

    seen = []
    monkeypatch.setattr(cli_main, "main", lambda command: seen.append(command) or 0)
    monkeypatch.setattr(logging.getLogger(), "level", logging.getLogger().level)  # restored after the test
    trtexec.run(argparse.Namespace(argv=["--onnx=m.onnx", "--verbose"], verbose=False))
    trtexec.run(argparse.Namespace(argv=["--onnx=m.onnx"], verbose=True))
    assert [c.count("--verbose") for c in seen] == [1, 1]
