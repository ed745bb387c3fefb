"""The inspect / run / export / compare commands in-process (``main(argv)``), good inputs and bad ones;
the entry points themselves (``python -m trtflow``, the ``trtflow`` script) as subprocesses.

Bad input anywhere: one line on stderr saying what is wrong and the fix, exit code 2, no
traceback (unless --verbose). A comparison that ran and failed: exit code 1.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

import trtflow
from tests.conftest import call_cli, run_cli
from trtflow.errors import ModelLoadError, UsageError


@pytest.fixture(scope="session")
def bad_files(tmp_path_factory, tiny_onnx) -> dict:
    """A missing path, a truncated .onnx (half its bytes), a text file and a PNG image."""
    folder = tmp_path_factory.mktemp("bad")
    data = tiny_onnx.read_bytes()
    (folder / "truncated.onnx").write_bytes(data[: len(data) // 2])
    (folder / "notes.onnx").write_text("this is a text file, not a model\n")
    png = folder / "picture.png"
    try:
        from skimage import data as skdata, io

        io.imsave(str(png), skdata.chelsea()[:16, :16], check_contrast=False)
    except ImportError:
        png.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)))
    return {
        "missing": folder / "missing.onnx",
        "truncated": folder / "truncated.onnx",
        "text": folder / "notes.onnx",
        "png": png,
    }


@pytest.fixture(scope="session")
def embedding_onnx(models_dir):
    """An ONNX model whose input is int64 token ids (batch, seq)."""
    torch = pytest.importorskip("torch")
    from tests.models.export_zoo import embedding
    from trtflow.export import from_torch

    out = models_dir / "embedding.onnx"
    from_torch(embedding(), {"ids": torch.randint(0, 10, (2, 5))}, out, exporter="torchscript",
               dynamic={"ids": {0: "batch", 1: "seq"}})
    return out


def _one_line_error(proc, code=2, *words):
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == code, proc.stderr
    assert len(lines) == 1, proc.stderr
    assert "Traceback" not in proc.stderr and "error:" in lines[0]
    for w in words:
        assert w in lines[0], lines[0]
    return lines[0]


# -- bad input, every command ------------------------------------------------------------

WORDS = {
    "missing": ["no such file"],
    "truncated": ["not a readable ONNX model", "truncated"],
    "text": ["text file"],
    "png": ["PNG image"],
}


@pytest.mark.parametrize("kind", sorted(WORDS))
@pytest.mark.parametrize("command", ["inspect", "run", "compare"])
def test_bad_model_files(command, kind, bad_files):
    args = [command, str(bad_files[kind])]
    if command == "compare":
        args += ["--engines", "ort,tensorrt"]  # the file fails to load before any engine runs
    line = _one_line_error(call_cli(*args), 2, *WORDS[kind])
    assert f"trtflow {command}: error:" in line


def test_bad_file_given_to_export_is_not_a_module_spec(bad_files):
    _one_line_error(call_cli("export", str(bad_files["png"]), "--out", "x.onnx", "--shapes", "x:1x3"), 2,
                    "not a MODULE:FACTORY spec")


@pytest.mark.parametrize("command", ["export", "compare"])
def test_module_spec_that_does_not_import(command, tmp_path):
    args = [command, "no_such_package.models:make", "--shapes", "x:1x3x16x16"]
    if command == "export":
        args += ["--out", str(tmp_path / "m.onnx")]
    _one_line_error(call_cli(*args), 2, "cannot import module 'no_such_package.models'", "PYTHONPATH")


def test_unknown_engine(tiny_onnx):
    _one_line_error(call_cli("run", str(tiny_onnx), "--engine", "warp"), 2, "unknown engine 'warp'")
    _one_line_error(call_cli("compare", str(tiny_onnx), "--engines", "ort,warp"), 2, "unknown engine 'warp'")
    _one_line_error(call_cli("quickstart", "--engine", "warp"), 2, "unknown engine 'warp'")


def test_unknown_exporter(tmp_path):
    proc = call_cli("export", "tests.models.tiny:make", "--out", str(tmp_path / "m.onnx"), "--shapes", "x:1x3x16x16",
                    "--exporter", "magic")
    _one_line_error(proc, 2, "unknown exporter 'magic'")


def test_verbose_shows_the_traceback(bad_files):
    proc = run_cli("--verbose", "inspect", str(bad_files["truncated"]))
    assert proc.returncode != 0 and "Traceback" in proc.stderr and "ModelLoadError" in proc.stderr


def test_python_api_raises_trtflow_errors(bad_files, tiny_onnx):
    from trtflow.export.factory import load_factory
    from trtflow.graph.io import load_onnx

    for kind, words in WORDS.items():
        with pytest.raises(ModelLoadError, match=words[0]):
            load_onnx(bad_files[kind])
        with pytest.raises(ModelLoadError):
            trtflow.load(bad_files[kind], engine="ort")
    with pytest.raises(UsageError, match="unknown engine"):
        trtflow.load(tiny_onnx, engine="warp")
    with pytest.raises(ModelLoadError, match="cannot import"):
        load_factory("no_such_package.models:make")


# -- inspect / run ----------------------------------------------------------------------

def test_inspect_json(tiny_onnx):
    proc = call_cli("inspect", str(tiny_onnx), "--json")
    assert proc.returncode == 0, proc.stderr
    info = json.loads(proc.stdout)
    assert [s["name"] for s in info["inputs"]] == ["x"] and info["nodes"] > 0


def test_run_json_random_int_inputs_and_saved_outputs(embedding_onnx, tmp_path):
    out = tmp_path / "out.npz"
    proc = call_cli("run", str(embedding_onnx), "--shapes", "ids:3x6", "--json", "-o", str(out))
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["engine"] == "ort"
    assert result["inputs"]["ids"] == {"shape": [3, 6], "dtype": "int64"}
    assert result["outputs"]["output"]["shape"] == [3, 3] and result["outputs"]["output"]["dtype"] == "float32"
    saved = np.load(out)
    assert saved["output"].shape == (3, 3) and np.isfinite(saved["output"]).all()


def test_run_needs_a_shape_for_dynamic_inputs(embedding_onnx):
    _one_line_error(call_cli("run", str(embedding_onnx)), 2, "--shapes ids:")


# -- export -----------------------------------------------------------------------------

def test_export_json_writes_a_verified_file(tmp_path):
    out = tmp_path / "tiny.onnx"
    proc = call_cli("export", "tests.models.tiny:make", "-o", str(out), "--shapes", "x:2x3x16x16",
                    "--dynamic", "x:0=batch", "--output-names", "logits,feat", "--atol", "feat=1e-3", "--json")
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["verified"] is True and result["exporter"] == "dynamo"
    tolerances = {o["name"]: o["atol"] for o in result["verification"][0]["outputs"]}
    assert tolerances == {"logits": 1e-4, "feat": 1e-3}
    assert [c["input_shapes"]["x"][0] for c in result["verification"]] == [2, 4]
    assert set(result["max_errors"]) == {"logits", "feat"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tiny.onnx"]
    with trtflow.load(out, engine="ort") as engine:
        assert engine.inputs[0].shape[0] == "batch"


def test_export_takes_examples_from_the_factory(tmp_path):
    proc = call_cli("export", "tests.models.export_zoo:with_examples", "--out", str(tmp_path / "m.onnx"),
                   "--exporter", "torchscript")
    assert proc.returncode == 0, proc.stderr
    assert "wrote" in proc.stdout and "ok" in proc.stdout


def test_export_mismatch_exits_1(tmp_path):
    proc = call_cli("export", "tests.models.export_zoo:baked", "--out", str(tmp_path / "b.onnx"), "--shapes", "x:2x3",
                   "--dynamic", "x:0=batch", "--exporter", "torchscript")
    _one_line_error(proc, 1, "does not match PyTorch")


# -- compare ----------------------------------------------------------------------------

def test_compare_module_torch_vs_its_onnx_export():
    proc = call_cli("compare", "tests.models.tiny:make", "--shapes", "x:5x3x16x16", "--dynamic", "x:0=batch",
                    "--output-names", "logits,feat", "--exporter", "torchscript",
                   "--atol", "1e-4", "--json")
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["engines"] == ["torch", "ort"] and report["passed"] is True
    assert report["inputs"]["x"]["shape"] == [5, 3, 16, 16]
    diff = report["comparisons"][0]["outputs"]["logits"]
    assert diff["max_abs"] < 1e-4 and diff["first_fail"] is None and diff["atol"] == 1e-4


def test_compare_mismatch_exits_1(tmp_path):
    np.save(tmp_path / "four.npy", np.random.default_rng(0).standard_normal((4, 3)).astype(np.float32))
    proc = call_cli("compare", "tests.models.export_zoo:baked", "--shapes", "x:2x3", "--dynamic", "x:0=batch",
                    "--input", f"x={tmp_path / 'four.npy'}", "--exporter", "torchscript")
    line = _one_line_error(proc, 1, "differ beyond tolerance", "ort vs torch")
    assert "first at" in line
    assert "FAILED" in proc.stdout


def test_compare_onnx_with_tensorrt_gives_the_engines_own_error(tiny_onnx):
    proc = call_cli("compare", str(tiny_onnx), "--engines", "ort,tensorrt", "--shapes", "x:1x3x16x16")
    if trtflow.backends.tensorrt_usable():
        assert proc.returncode in (0, 1), proc.stderr
    else:
        _one_line_error(proc, 2, "TensorRT")


def test_compare_engine_list_errors(tiny_onnx):
    proc = call_cli("compare", str(tiny_onnx), "--engines", "ort,onnxruntime", "--shapes", "x:2x3x16x16")
    _one_line_error(proc, 2, "lists an engine twice")
    proc = call_cli("compare", str(tiny_onnx), "--engines", "ort,torch", "--shapes", "x:2x3x16x16")
    _one_line_error(proc, 2, "MODULE:FACTORY")


# -- the entry points, as real processes ------------------------------------------------

def test_entry_points_exit_codes(tiny_onnx, tmp_path):
    import shutil
    import sys
    from pathlib import Path

    ok = run_cli("inspect", str(tiny_onnx), "--json")
    assert ok.returncode == 0 and json.loads(ok.stdout)["inputs"][0]["name"] == "x"
    script = shutil.which("trtflow") or str(Path(sys.executable).with_name("trtflow"))
    import subprocess

    bad = subprocess.run([script, "run", str(tiny_onnx), "--shapes", "x:2x3x16x16", "--bogus"], capture_output=True,
                         text=True, timeout=300)
    _one_line_error(bad, 2, "trtflow run: error: unrecognized arguments: --bogus (see trtflow run --help)")


@pytest.mark.parametrize("engine", ["PyTorch", "TORCH", "pt"])
def test_engine_aliases_any_case_in_the_torch_checks(engine, monkeypatch):
    """The torch-only checks of bench and tune take --engine aliases in any case, as load() does."""
    import argparse

    from trtflow.cli import bench, tune

    with pytest.raises(UsageError, match="tunes a MODULE:FACTORY model"):
        tune._model(argparse.Namespace(model="model.onnx", engine=engine))
    monkeypatch.setattr(bench, "_load_factory", lambda args: "loaded")
    assert bench._load(argparse.Namespace(model="mypkg.models:make", engine=engine)) == "loaded"


@pytest.mark.parametrize("flag,says", [("--best", "drop --best"), ("--int8", "drop --int8"), ("--bf16", "drop --bf16"),
                                       ("--channels-last", "drop --channels-last")])
def test_bench_pt2_names_the_flag_it_cannot_apply(flag, says):
    """bench with a .pt2 package refuses each precision or layout flag by its own name (as serve and video do)."""
    proc = call_cli("bench", "m.pt2", flag)
    assert proc.returncode == 2 and ".pt2 package keeps the" in proc.stderr and says in proc.stderr


def test_run_prints_names_and_paths_with_brackets_as_they_are(tmp_path):
    """The run table read output names and paths as rich markup: an output "probs[b]" printed as a bold
    "probs", a folder "[raw]" vanished from the -o line, and an output named "y[/]" crashed the command."""
    from onnx import TensorProto, helper, save

    vi = helper.make_tensor_value_info
    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y[/]"]), helper.make_node("Relu", ["x"], ["probs[b]"])],
                              "g", [vi("x", TensorProto.FLOAT, [2])],
                              [vi("y[/]", TensorProto.FLOAT, [2]), vi("probs[b]", TensorProto.FLOAT, [2])])
    save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8), tmp_path / "m.onnx")
    (tmp_path / "[raw]").mkdir()
    out = tmp_path / "[raw]" / "o.npz"
    proc = call_cli("run", str(tmp_path / "m.onnx"), "-o", str(out))
    assert proc.returncode == 0, proc.stderr
    assert "y[/]" in proc.stdout and "probs[b]" in proc.stdout and f"saved to {out}" in proc.stdout, proc.stdout


def test_inspect_shows_a_value_of_unknown_rank_as_such(tmp_path):
    """inspect refused a model with an input of unknown rank (the error it gave says to inspect it and fix
    the shape), and showed an output of unknown rank as a scalar (shape [], an empty cell)."""
    from onnx import TensorProto, helper, save

    vi = helper.make_tensor_value_info
    graph = helper.make_graph([helper.make_node("Identity", ["y"], ["o"]), helper.make_node("Identity", ["u"], ["s"])],
                              "g", [vi("y", TensorProto.FLOAT, None), vi("u", TensorProto.FLOAT, [])],
                              [vi("o", TensorProto.FLOAT, None), vi("s", TensorProto.FLOAT, [])])
    save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8), tmp_path / "m.onnx")
    proc = call_cli("inspect", str(tmp_path / "m.onnx"), "--json")
    assert proc.returncode == 0, proc.stderr
    info = json.loads(proc.stdout)
    assert [(s["name"], s["shape"]) for s in info["inputs"] + info["outputs"]] == [
        ("y", None), ("u", []), ("o", None), ("s", [])]
    table = call_cli("inspect", str(tmp_path / "m.onnx"))
    assert table.stdout.count("rank unknown") == 2 and table.stdout.count("scalar") == 2, table.stdout


def test_inspect_and_an_edit_report_describe_io_alike(tmp_path):
    """inspect built its own input/output dicts beside an edit's report's, and the two read a
    sequence-typed output differently (shape [] in one, None in the other). A value that is not a
    tensor (a sequence, an optional) has no rank: shape None and a dtype naming its kind, not a
    scalar of dtype 'onnx:0'."""
    from onnx import TensorProto, helper, save

    from trtflow.cli.inspect import summary
    from trtflow.edits.report import describe_change
    from trtflow.graph.io import load_onnx

    vi = helper.make_tensor_value_info
    optional = helper.make_value_info(
        "p", helper.make_optional_type_proto(helper.make_tensor_type_proto(TensorProto.INT64, [2, "n"])))
    graph = helper.make_graph(
        [helper.make_node("Identity", ["y"], ["o"]), helper.make_node("SequenceConstruct", ["u"], ["q"]),
         helper.make_node("Optional", ["k"], ["p"])], "g",
        [vi("y", TensorProto.FLOAT, None), vi("u", TensorProto.FLOAT, [2, "n"]), vi("k", TensorProto.INT64, [2, "n"])],
        [vi("o", TensorProto.FLOAT, None), helper.make_tensor_sequence_value_info("q", TensorProto.FLOAT, None),
         optional])
    save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8), tmp_path / "m.onnx")
    info, proto = summary(tmp_path / "m.onnx"), load_onnx(tmp_path / "m.onnx")
    change = describe_change(proto, proto)
    assert (info["inputs"], info["outputs"]) == (change["inputs"]["after"], change["outputs"]["after"])
    assert [(s["dtype"], s["shape"]) for s in info["inputs"] + info["outputs"]] == [
        ("float32", None), ("float32", [2, "n"]), ("int64", [2, "n"]), ("float32", None),
        ("sequence<float32>", None), ("optional<int64>", None)]
    table = call_cli("inspect", str(tmp_path / "m.onnx"))
    assert table.returncode == 0 and table.stdout.count("rank unknown") == 4, table.stdout
    assert "sequence<float32>" in table.stdout and "scalar" not in table.stdout, table.stdout
