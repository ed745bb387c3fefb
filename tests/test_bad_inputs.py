"""The bad-input corpus: every case is a command line over generated files that must end with
exactly one line on stderr (``trtflow CMD: error: ...`` naming the problem), the right exit code
(2 bad input, 1 a check that ran and failed) and no traceback. Run in-process through
``trtflow.cli.main.main``; a few cases also as real processes. Then the Python API's misuses,
each raising an error of trtflow's tree.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

import trtflow
from tests.conftest import call_cli, run_cli
from trtflow.errors import EngineError, InputError, ModelLoadError, TrtflowError, UsageError

HUGE = "1000000000000x3x16x16"  # ~11 TiB of float32: refused before allocating


@pytest.fixture(scope="session")
def corpus(tmp_path_factory, tiny_onnx) -> dict:
    """Generated bad (and a few good) files, by placeholder name."""
    import onnx
    from onnx import TensorProto, helper

    d = tmp_path_factory.mktemp("corpus")
    data = tiny_onnx.read_bytes()
    (d / "truncated.onnx").write_bytes(data[: len(data) // 2])
    (d / "notes.onnx").write_text("this is a text file, not a model\n")
    (d / "empty.onnx").write_bytes(b"")
    (d / "picture.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)))
    (d / "folder.onnx").mkdir()
    (d / "out.npz").mkdir()  # a folder named like an output file
    (d / "plan_dir").mkdir()
    (d / "a_file").write_text("not a folder\n")
    (d / "garbage.npy").write_bytes(b"\x93NUMPY\x01\x00garbage" + bytes(100))
    (d / "data.txt").write_text("1 2 3\n")
    np.save(d / "pickled.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    np.save(d / "rank2.npy", np.zeros((3, 16), np.float32))
    np.save(d / "ints.npy", np.zeros((1, 3, 16, 16), np.int64))
    np.savez(d / "feed.npz", images=np.zeros((1, 3, 16, 16), np.float32))
    proto = onnx.load(str(tiny_onnx))
    (d / "ext").mkdir()
    onnx.save_model(proto, str(d / "ext" / "model.onnx"), save_as_external_data=True, location="model.data",
                    size_threshold=0)
    (d / "ext" / "model.data").unlink()  # the weights file is gone
    node = helper.make_node("Identity", ["s"], ["o"])
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("s", TensorProto.STRING, ["n"])],
                              [helper.make_tensor_value_info("o", TensorProto.STRING, ["n"])])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8), str(d / "strings.onnx"))
    const = helper.make_node("Constant", [], ["o"], value=helper.make_tensor("c", TensorProto.FLOAT, [2], [1.0, 2.0]))
    graph = helper.make_graph([const], "g", [], [helper.make_tensor_value_info("o", TensorProto.FLOAT, [2])])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8), str(d / "noinputs.onnx"))
    return {"dir": d, "tiny": tiny_onnx, **{p.stem: p for p in d.iterdir()}}


# (argv with {placeholders}, exit code, words the line must hold[, env])
CASES = [
    # argparse, every command: one line naming the command, never the usage dump
    (["nope"], 2, ["trtflow: error:", "invalid choice"]),
    ([], 2, ["trtflow: error: give a command", "(see trtflow --help)"]),
    (["run"], 2, ["trtflow run: error:", "required: model", "(see trtflow run --help)"]),
    (["run", "{tiny}", "--bogus"], 2, ["trtflow run: error: unrecognized arguments: --bogus"]),
    (["inspect", "{tiny}", "--json", "--bogus"], 2, ["trtflow inspect: error: unrecognized"]),
    (["cache", "bogus"], 2, ["trtflow cache: error:", "invalid choice"]),
    (["build", "{tiny}"], 2, ["trtflow build: error:", "--saveEngine"]),
    (["surgeon", "simplify", "{tiny}"], 2, ["trtflow surgeon: error:", "-o"]),
    # unchecked numbers
    (["bench", "{tiny}", "--duration", "nan"], 2, ["--duration", "finite"]),
    (["bench", "{tiny}", "--duration", "inf"], 2, ["--duration", "finite"]),
    (["bench", "{tiny}", "--duration", "-1"], 2, ["--duration"]),
    (["bench", "{tiny}", "--warmUp", "nan"], 2, ["--warmUp", "finite"]),
    (["bench", "{tiny}", "--iterations", "0"], 2, ["--iterations", ">= 1"]),
    (["bench", "{tiny}", "--iterations", "1.5"], 2, ["--iterations"]),
    (["bench", "{tiny}", "--streams", "0"], 2, ["--streams"]),
    (["run", "{tiny}", "--seed", "-1"], 2, ["--seed", ">= 0"]),
    (["build", "{tiny}", "-o", "{dir}/t.plan", "--builderOptimizationLevel", "-1"], 2, ["--builderOptimizationLevel"]),
    (["build", "{tiny}", "-o", "{dir}/t.plan", "--max-batch", "0"], 2, ["--max-batch"]),
    (["export", "tests.models.tiny:make", "-o", "{dir}/m.onnx", "--shapes", "x:1x3x16x16", "--opset", "0"], 2, ["--opset"]),
    (["quickstart", "--batch-images", "0"], 2, ["--batch-images"]),
    # absurd shapes: refused before allocating
    (["run", "{tiny}", "--shapes", f"x:{HUGE}"], 2, ["would take", "PiB", "memory"]),
    (["run", "{tiny}", "--shapes", "x:100000000x3x16x16"], 2, ["running the model at x:100000000x3x16x16 would take"]),
    (["bench", "{tiny}", "--shapes", f"x:{HUGE}"], 2, ["would take", "memory"]),
    (["bench", "tests.models.tiny:make", "--device", "cpu", "--shapes", f"x:{HUGE}"], 2, ["would take", "memory"]),
    (["run", "{tiny}", "--shapes", "x:99999999999999999999999x3"], 2, ["too large"]),
    (["run", "{tiny}", "--shapes", "x:1e12x3x16x16"], 2, ["bad shape"]),
    (["run", "{tiny}", "--shapes", "x1x3x16x16"], 2, ["NAME:DIMS"]),
    (["check", "{tiny}", "--shapes", "x:-1x3x16x16"], 2, ["bad shape"]),
    (["build", "{tiny}", "-o", "{dir}/t.plan", "--profile", "bogus"], 2, ["--profile"]),
    (["build", "{tiny}", "-o", "{dir}/t.plan", "--memPoolSize", "workspace:lots"], 2, ["bad size"]),
    # --input: one rule, no silent random
    (["run", "{tiny}", "--input", "x=feed.npz"], 2, ["not found"]),
    (["run", "{tiny}", "--input", "x={feed}"], 2, ["holds no array 'x'", "images", ":KEY"]),
    (["run", "{tiny}", "--input", "x={feed}:nope"], 2, ["holds no array 'nope'"]),
    (["run", "{tiny}", "--input", "x={garbage}"], 2, ["cannot read"]),
    (["run", "{tiny}", "--input", "x={pickled}"], 2, ["pickles"]),
    (["run", "{tiny}", "--input", "x={data}"], 2, ["bad --input", "NAME=FILE.npy"]),
    (["run", "{tiny}", "--input", "x:1x3x16x16"], 2, ["--shapes x:1x3x16x16"]),
    (["run", "{tiny}", "--input", "y=random"], 2, ["'y'", "not a model input"]),
    (["run", "{tiny}", "--input", "x={rank2}"], 2, ["rank"]),
    (["run", "{tiny}", "--input", "x={ints}"], 2, ["int64", "float32"]),
    (["run", "{tiny}", "--input", "x={out}"], 2, ["is a folder"]),
    (["bench", "{tiny}", "--input", "x={feed}"], 2, ["holds no array 'x'"]),
    # unguarded file I/O
    (["run", "{dir}/missing.onnx"], 2, ["no such file"]),
    (["run", "{truncated}"], 2, ["truncated"]),
    (["inspect", "{notes}"], 2, ["text file"]),
    (["inspect", "{picture}"], 2, ["PNG image"]),
    (["inspect", "{empty}"], 2, ["empty"]),
    (["run", "{folder}"], 2, ["folder"]),
    (["inspect", "{dir}/ext/model.onnx"], 2, ["external data", "beside"]),
    (["run", "{dir}/ext/model.onnx"], 2, ["external data"]),
    (["build", "{dir}/ext/model.onnx", "-o", "{dir}/e.plan"], 2, ["external data"]),
    (["run", "{tiny}", "--shapes", "x:1x3x16x16", "-o", "{dir}/missing/out.npz"], 2, ["does not exist"]),
    (["run", "{tiny}", "--shapes", "x:1x3x16x16", "-o", "{out}"], 2, ["is a folder"]),
    (["run", "{tiny}", "--shapes", "x:1x3x16x16", "-o", "{dir}/out.txt"], 2, [".npz"]),
    (["run", "{tiny}", "--shapes", "x:1x3x16x16", "--save-inputs", "{dir}/missing/in.npz"], 2, ["does not exist"]),
    (["build", "{tiny}", "--saveEngine", "{plan_dir}"], 2, ["is a folder"]),
    (["build", "{tiny}", "-o", "{dir}/missing/t.plan"], 2, ["does not exist"]),
    (["bench", "{tiny}", "--exportJson", "{dir}/missing/b.json"], 2, ["does not exist"]),
    (["bench", "{tiny}", "--plot", "{dir}/b.jpg"], 2, [".png"]),
    (["export", "tests.models.tiny:make", "-o", "{dir}/m.txt", "--shapes", "x:1x3x16x16"], 2, [".onnx"]),
    (["cache", "list"], 2, ["TRTFLOW_CACHE_DIR", "a file, not a folder"], {"TRTFLOW_CACHE_DIR": "{a_file}"}),
    (["build", "{tiny}", "-o", "{dir}/c.plan"], 2, ["TRTFLOW_CACHE_DIR"], {"TRTFLOW_CACHE_DIR": "{a_file}"}),
    # engines and flags that do not fit
    (["run", "{tiny}", "--engine", "warp"], 2, ["unknown engine 'warp'"]),
    (["run", "{tiny}", "--providers", ","], 2, ["names no provider"]),
    (["run", "{tiny}", "--providers", "rocm"], 2, ["not available", "providers=['cpu'] (--providers cpu)"]),
    (["compare", "{tiny}", "--engines", "ort"], 2, ["at least two"]),
    (["compare", "{tiny}", "--atol", "nan"], 2, ["bad --atol"]),
    (["compare", "{tiny}", "--rtol", "logits:0.1"], 2, ["bad --rtol", "NAME=NUMBER"]),
    (["compare", "{tiny}", "--dtypes", "x:int64"], 2, ["--dtypes", "MODULE:FACTORY"]),
    (["bench", "{tiny}", "--useCudaGraph"], 2, ["torch engine"]),
    (["bench", "tests.models.tiny:make", "--device", "cpu", "--useCudaGraph", "--shapes", "x:1x3x16x16"], 2,
     ["cuda_graphs=True (--useCudaGraph) needs a CUDA device"]),
    (["quickstart", "--engine", "warp"], 2, ["unknown engine 'warp'"]),
    # export: examples
    (["export", "{picture}", "-o", "{dir}/m.onnx"], 2, ["not a MODULE:FACTORY spec"]),
    (["export", "no_such_package.models:make", "-o", "{dir}/m.onnx", "--shapes", "x:1"], 2, ["cannot import"]),
    (["export", "tests.models.tiny:make", "-o", "{dir}/m.onnx"], 2, ["--shapes"]),
    (["export", "tests.models.tiny:make", "-o", "{dir}/m.onnx", "--input", "x:1x3x16x16:int64"], 2,
     ["--shapes x:1x3x16x16 --dtypes x:int64"]),
    (["export", "tests.models.tiny:make", "-o", "{dir}/m.onnx", "--shapes", "x:1x3x16x16", "--dtypes", "y:int64"], 2,
     ["--dtypes names ['y']"]),
    (["export", "tests.models.tiny:make", "-o", "{dir}/m.onnx", "--shapes", "x:1x3x16x16", "--dtypes", "x:int5"], 2,
     ["bad --dtypes"]),
    (["export", "tests.models.tiny:make", "-o", "{dir}/m.onnx", "--shapes", "x:1x3x16x16", "--atol", "-1"], 2,
     ["bad --atol"]),
]


def _fill(items, files):
    return [str(a).format(**{k: str(v) for k, v in files.items()}) for a in items]


def _assert_one_line(proc, code, words, command=None):
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == code, (proc.returncode, proc.stderr, proc.stdout[-500:])
    assert len(lines) == 1, proc.stderr
    assert "Traceback" not in proc.stderr and " error: " in lines[0]
    if command:
        assert lines[0].startswith(f"trtflow {command}: error: ") or lines[0].startswith("trtflow: error: ")
    for word in words:
        assert word in lines[0], lines[0]
    return lines[0]


@pytest.mark.parametrize("case", CASES, ids=lambda c: " ".join(c[0])[:60] or "(no command)")
def test_bad_input_is_one_line(case, corpus):
    argv, code, words, *env = case
    env = {k: v.format(**{n: str(p) for n, p in corpus.items()}) for k, v in (env[0] if env else {}).items()}
    proc = call_cli(*_fill(argv, corpus), env=env)
    _assert_one_line(proc, code, words, argv[0] if argv and not argv[0].startswith("-") else None)


def test_corpus_size():
    assert len(CASES) >= 70


@pytest.mark.parametrize("argv, words", [
    (["bench", "{tiny}", "--duration", "nan"], ["--duration"]),
    (["run", "{tiny}", "--input", "x={feed}"], ["holds no array 'x'"]),
    (["cache", "list"], ["TRTFLOW_CACHE_DIR"]),
])
def test_bad_input_as_a_real_process(argv, words, corpus):
    proc = run_cli(*_fill(argv, corpus), env={"TRTFLOW_CACHE_DIR": str(corpus["a_file"])})
    _assert_one_line(proc, 2, words, argv[0])


# -- valid inputs that used to break the contract ---------------------------------------------

def test_string_tensors_and_a_model_without_inputs_run(corpus, tmp_path):
    with trtflow.load(corpus["strings"], engine="ort") as engine:
        assert engine.inputs[0].dtype == "string"
        out = engine.infer({"s": np.array(["a", "bc"])})["o"]
        assert out.dtype == object and out.tolist() == ["a", "bc"]
        assert engine.infer({"s": np.array([b"x"], dtype=object)})["o"].tolist() == ["x"]  # bytes decoded, not "b'x'"
    with trtflow.load(corpus["noinputs"], engine="ort") as engine:
        assert engine.inputs == [] and engine.infer({})["o"].tolist() == [1.0, 2.0]
    proc = call_cli("run", corpus["strings"], "--shapes", "s:3", "-o", tmp_path / "s.npz", "--json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["outputs"]["o"]["shape"] == [3]
    assert np.load(tmp_path / "s.npz")["o"].shape == (3,)
    proc = call_cli("run", corpus["noinputs"], "--json")
    assert proc.returncode == 0 and json.loads(proc.stdout)["outputs"]["o"]["max"] == 2.0


def test_json_output_is_strict_json_with_nan(tmp_path):
    """A NaN in an output's statistics is written as "nan", never as a bare NaN token."""
    import onnx
    from onnx import TensorProto, helper

    node = helper.make_node("Log", ["x"], ["y"])
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8), str(tmp_path / "log.onnx"))
    np.save(tmp_path / "neg.npy", np.array([-1.0, 0.0], np.float32))
    proc = call_cli("run", tmp_path / "log.onnx", "--input", f"x={tmp_path / 'neg.npy'}", "--json")
    assert proc.returncode == 0, proc.stderr
    stats = json.loads(proc.stdout, parse_constant=lambda c: pytest.fail(f"bare {c} in the JSON"))["outputs"]["y"]
    assert stats["nan"] == 1 and stats["max"] == "nan"


@pytest.mark.parametrize("dtype", ["float64", "float16", "int8", "uint8", "int16", "uint16", "int32", "uint32",
                                   "int64", "uint64", "bool"])
def test_every_numeric_onnx_runtime_dtype_goes_through_unchanged(dtype, tmp_path):
    import onnx
    from onnx import helper

    elem = onnx.helper.np_dtype_to_tensor_dtype(np.dtype(dtype))
    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", elem, [3])], [helper.make_tensor_value_info("y", elem, [3])])
    path = tmp_path / "id.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8), str(path))
    x = np.array([0, 1, 1]).astype(dtype)
    with trtflow.load(path, engine="ort") as engine:
        assert engine.inputs[0].dtype == dtype
        y = engine.infer({"x": x})["y"]
    assert y.dtype == np.dtype(dtype) and (y == x).all()


@pytest.mark.parametrize("x_type, y_type, named", [("BFLOAT16", "FLOAT", "input 'x'"), ("FLOAT", "BFLOAT16", "output 'y'")])
def test_onnx_runtime_refuses_bfloat16_io_at_load(x_type, y_type, named, tmp_path):
    """ONNX Runtime's Python API takes and returns no bfloat16 arrays: refused at load, naming the fix,
    not at the first run with ORT's own message."""
    import onnx
    from onnx import TensorProto, helper

    x, y = getattr(TensorProto, x_type), getattr(TensorProto, y_type)
    graph = helper.make_graph([helper.make_node("Cast", ["x"], ["y"], to=y)], "g",
                              [helper.make_tensor_value_info("x", x, [1, 4])], [helper.make_tensor_value_info("y", y, [1, 4])])
    path = tmp_path / "bf16.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8), str(path))
    with pytest.raises(ModelLoadError, match=f"{named} is bfloat16.*float32 or float16.*engine='tensorrt'"):
        trtflow.load(path, engine="ort")
    proc = call_cli("run", path, "--engine", "ort")
    assert proc.returncode == 2 and f"{named} is bfloat16" in proc.stderr and "Traceback" not in proc.stderr


def test_a_feed_whose_activations_cannot_fit_is_refused_before_running(tiny_onnx, monkeypatch):
    """The ONNX Runtime engine estimates a large feed's peak memory with shape inference first."""
    import trtflow.feeds as feeds

    x = np.zeros((40000, 3, 16, 16), np.float32)  # 123 MB in; the convolution's output is 328 MB
    monkeypatch.setattr(feeds, "available_memory", lambda: 400 * 2**20)
    with trtflow.load(tiny_onnx, engine="ort") as engine:
        with pytest.raises(UsageError, match="running the model at x:40000x3x16x16 would take"):
            engine.infer({"x": x})
        monkeypatch.setattr(feeds, "available_memory", lambda: 64 * 2**30)
        assert engine.infer({"x": x[:2]})["logits"].shape == (2, 5)


# -- Python API misuse: trtflow errors only ----------------------------------------------------

def test_api_misuse_raises_trtflow_errors(tiny_onnx):
    from trtflow.compare import Tolerances
    from trtflow.feeds import random_feed
    from trtflow.spec import TensorSpec

    with pytest.raises(ModelLoadError, match="None"):
        trtflow.load(None)
    with pytest.raises(ModelLoadError):
        trtflow.load("no/such/model.onnx")
    with pytest.raises(ModelLoadError):
        trtflow.load(12345)
    with pytest.raises(UsageError):
        trtflow.load(tiny_onnx, engine=3)
    with pytest.raises(ModelLoadError, match="got list"):
        trtflow.load([str(tiny_onnx)], engine="ort")
    with pytest.raises(ModelLoadError, match="not an ONNX model"):
        trtflow.load(b"garbage", engine="ort")
    with pytest.raises(UsageError, match="providers"):
        trtflow.load(tiny_onnx, engine="ort", providers=[1])
    with pytest.raises(UsageError, match="threads"):
        trtflow.load(tiny_onnx, engine="ort", threads=-1)
    with trtflow.load(tiny_onnx, engine="ort", providers="cpu") as engine:  # a string, not ['c', 'p', 'u']
        assert engine.providers == ["CPUExecutionProvider"]
        with pytest.raises(InputError):
            engine.infer({"x": object()})
        with pytest.raises(InputError):
            engine.infer([np.zeros((1, 3, 16, 16), np.float32)])
    with pytest.raises(EngineError, match="closed"):
        engine.infer({"x": np.zeros((1, 3, 16, 16), np.float32)})
    with pytest.raises(UsageError, match="seed"):
        random_feed([TensorSpec("x", "float32", (2,))], seed=-1)
    with pytest.raises(UsageError, match="would take"):
        random_feed([TensorSpec("x", "float32", (2**40, 2**20))])
    with pytest.raises(UsageError, match="finite"):
        Tolerances(rtol=float("inf"))
    from trtflow.bench import BenchConfig

    for bad in ({"duration_s": float("nan")}, {"warmup_ms": float("inf")}, {"iterations": 2.5}):
        with pytest.raises(UsageError):
            BenchConfig(**bad)


def test_torch_engine_misuse_raises_trtflow_errors():
    torch = pytest.importorskip("torch")
    from tests.models.tiny import tiny_module

    with pytest.raises(UsageError, match="not a torch device"):
        trtflow.load(tiny_module(), engine="torch", example_inputs=[torch.zeros(1, 3, 16, 16)], device="gpu")
    with pytest.raises(ModelLoadError, match="failed on its example inputs"):
        trtflow.load(tiny_module(), engine="torch", example_inputs=[torch.zeros(3)], device="cpu")
    with pytest.raises(UsageError, match="dtype"):
        trtflow.load(tiny_module(), engine="torch", example_inputs=[torch.zeros(1, 3, 16, 16)], dtype="int8")


def test_decode_detections_wants_a_mapping():
    pytest.importorskip("torch")
    from trtflow.vision import decode_detections

    with pytest.raises(UsageError, match="keyed by name"):
        decode_detections(np.zeros((1, 84, 10), np.float32))


def test_poisoned_sidecar_is_ignored_and_rebuilt(tiny_onnx, tmp_path, caplog, flavor):
    from trtflow.backends.tensorrt.cache import EngineCache
    from trtflow.backends.tensorrt.config import BuildConfig
    from trtflow.backends.tensorrt.sidecar import read_sidecar, sidecar_path
    from trtflow.spec import make_profile

    cache = EngineCache(tmp_path / "engines")
    config = BuildConfig(profiles=[make_profile({"x": (1, 3, 16, 16)})])
    first = cache.get_or_build(tiny_onnx, config)
    side = sidecar_path(first.plan_path)
    for poison in ({"target": "gpu0"}, {"engine_bytes": "many"}, {"inputs": [{"nope": 1}]}, {"config": [1]}):
        meta = json.loads(side.read_text())
        side.write_text(json.dumps({**meta, **poison}))
        assert read_sidecar(first.plan_path) is None and "ignoring the sidecar" in caplog.text
        assert cache.entries()[0]["complete"] is False  # cache list still works
        again = cache.get_or_build(tiny_onnx, config)
        assert again.hit is False and again.rebuilt_because and read_sidecar(again.plan_path) is not None
    side.write_text("{ not json")
    assert cache.get_or_build(tiny_onnx, config).hit is False


def test_temp_file_of_a_killed_writer_is_removed(tmp_path):
    import subprocess
    import sys

    from trtflow.backends.tensorrt.sidecar import atomic_write
    from trtflow.cache_dir import HOST

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    stale = tmp_path / f".model.plan.{HOST}-{dead.stdout.strip()}.123.tmp"
    stale.write_bytes(b"half a plan")
    atomic_write(tmp_path / "model.plan", b"plan")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.plan"]


def test_trtflow_errors_only_in_the_api_of_feeds(tmp_path):
    from trtflow.feeds import load_array

    np.savez(tmp_path / "a.npz", images=np.ones(2))
    assert load_array(f"{tmp_path / 'a.npz'}:images", "x").tolist() == [1.0, 1.0]
    with pytest.raises(ModelLoadError, match="holds no array 'x'"):
        load_array(str(tmp_path / "a.npz"), "x")
    with pytest.raises(TrtflowError):
        load_array(str(tmp_path / "nope.npy"), "x")
