"""trtflow.compare.core on outputs off the common path: complex values."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from trtflow.compare.core import diff_one
from trtflow.errors import UsageError


def test_complex_outputs_compare_both_parts():
    ref = np.array([1 + 1j, 2 - 1j], np.complex64)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the imaginary part is never dropped with a ComplexWarning
        off = diff_one("z", ref, np.array([1 + 5j, 2 - 1j], np.complex64), 1e-5, 1e-5)
        same = diff_one("z", ref, ref.copy(), 1e-5, 1e-5)
    assert not off.passed and off.first_fail == (0,) and off.max_abs == 4.0
    assert same.passed and same.max_abs == 0.0
    nan = diff_one("z", np.array([complex(1, np.nan)]), np.array([complex(1, np.nan)]), 1e-5, 1e-5)
    assert not nan.passed


class _Doubler:
    """An engine that doubles its input; ``in_place`` ones write into the array they are given
    (a torch module doing ``x.mul_(2)`` on a CPU feed it shares memory with)."""

    def __init__(self, in_place: bool):
        from trtflow.spec import TensorSpec

        self.in_place = in_place
        self.inputs = [TensorSpec("x", "float32", (2,))]
        self.outputs = [TensorSpec("y", "float32", (2,))]

    def infer(self, feed):
        x = feed["x"]
        if self.in_place:
            x *= 2
            return {"y": x}
        return {"y": x * 2}


def test_every_engine_gets_the_feed_unchanged_by_the_engines_before_it():
    from trtflow.compare import compare_engines

    feed = {"x": np.array([1.0, 2.0], np.float32)}
    report = compare_engines({"a": _Doubler(True), "b": _Doubler(False)}, feed)
    assert report.passed, report.to_dict()
    assert feed["x"].tolist() == [1.0, 2.0]  # the caller's feed is left as it was


def _raised(reference, candidate):
    import pytest

    from trtflow.compare import CompareReport, EngineComparison, compare_outputs
    from trtflow.errors import MismatchError

    report = CompareReport("m", ["a", "b"], {}, [EngineComparison("a", "b", compare_outputs(reference, candidate))])
    with pytest.raises(MismatchError) as info:
        report.raise_for_mismatch()
    return str(info.value)


def test_a_shape_mismatch_does_not_send_the_user_to_the_tolerances():
    text = _raised({"boxes": np.zeros((7, 4))}, {"boxes": np.zeros((5, 4))})
    assert "--atol" not in text and "shape" in text, text


def test_nans_at_the_same_places_name_equal_nan():
    text = _raised({"y": np.array([np.nan, 1.0])}, {"y": np.array([np.nan, 1.0])})
    assert "--equal-nan" in text, text


def test_equal_infinities_pass_with_rtol_zero():
    ref = np.array([np.inf, -np.inf, 1.0])
    for atol, rtol in ((1e-3, 0.0), (0.0, 0.0), (1e-5, 1e-5)):
        same = diff_one("y", ref, ref.copy(), atol, rtol)
        assert same.passed and same.fail_fraction == 0.0, (atol, rtol, same)
    flipped = diff_one("y", ref, np.array([-np.inf, -np.inf, 1.0]), 1e-3, 0.0)
    assert not flipped.passed and flipped.first_fail == (0,)


def test_an_agreement_exactly_at_min_agreement_passes():
    ref = np.arange(100, dtype=np.int64)
    got = ref.copy()
    got[:7] += 1  # 93 of 100 equal
    diff = diff_one("ids", ref, got, 0.0, 0.0, min_agreement=0.93)
    assert diff.agreement == 0.93 and diff.passed, diff
    assert not diff_one("ids", ref, got, 0.0, 0.0, min_agreement=0.94).passed


def _onnx(path, outputs):
    """A model with float input 'x' (2, 4) and one Identity output per name in ``outputs``."""
    import onnx
    from onnx import TensorProto, helper

    nodes = [helper.make_node("Identity", ["x"], [name]) for name in outputs]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 4])],
                              [helper.make_tensor_value_info(n, TensorProto.FLOAT, [2, 4]) for n in outputs])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8), path)
    return path


def test_an_output_only_the_candidate_has_is_reported_missing(tmp_path):
    """docs/guides.md: an output missing on one side is reported as missing, whichever side lacks it."""
    from tests.conftest import call_cli

    one = _onnx(tmp_path / "one.onnx", ["y"])
    two = _onnx(tmp_path / "two.onnx", ["y", "extra"])
    proc = call_cli("compare", one, two, "--json")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    report = __import__("json").loads(proc.stdout)
    outputs = report["comparisons"][0]["outputs"]
    assert outputs["y"]["passed"] and not outputs["extra"]["passed"], outputs
    assert "missing from the reference" in outputs["extra"]["note"]
    assert "extra: missing (the reference has no output of that name)" in proc.stderr, proc.stderr
    assert call_cli("compare", two, one).returncode == 1  # and the other way round, as before


def test_dtypes_for_two_onnx_files_is_refused_as_for_one(tmp_path):
    """--dtypes sets a MODULE:FACTORY's example inputs: two ONNX files ran float32 while asked for float16."""
    from tests.conftest import call_cli

    one = _onnx(tmp_path / "one.onnx", ["y"])
    for models in ((one,), (one, one)):
        proc = call_cli("compare", *models, "--engines", "ort" + (",tensorrt" if len(models) == 1 else ""),
                        "--dtypes", "x:float16")
        assert proc.returncode == 2 and "--dtypes" in proc.stderr, (models, proc.stdout, proc.stderr)


def test_uint64_and_int64_ids_are_compared_by_value_not_wrapped():
    """2**64 - 1 (uint64) is not -1 (int64): both were cast to int64 and compared equal."""
    diff = diff_one("ids", np.array([2**64 - 1, 3], np.uint64), np.array([-1, 3], np.int64), 0.0, 0.0)
    assert not diff.passed and diff.agreement == 0.5 and diff.first_fail == (0,), diff


def test_two_files_taking_other_input_dtypes_name_the_fix(tmp_path):
    """A float32 model against its float16-input copy: the random float32 values cannot feed the copy;
    the error named an array to convert that the user never gave."""
    import onnx
    from onnx import TensorProto

    from tests.conftest import call_cli

    one = _onnx(tmp_path / "one.onnx", ["y"])
    model = onnx.load(one)
    for value in (*model.graph.input, *model.graph.output):
        value.type.tensor_type.elem_type = TensorProto.FLOAT16
    half = tmp_path / "half.onnx"
    onnx.save(model, half)
    proc = call_cli("compare", one, half)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "float16" in proc.stderr and str(half) in proc.stderr and "--input x=" in proc.stderr, proc.stderr
    assert "astype" not in proc.stderr, proc.stderr
    np.save(tmp_path / "x.npy", np.ones((2, 4), np.float16))
    assert call_cli("compare", one, half, "--input", f"x={tmp_path / 'x.npy'}").returncode == 0  # the fix works


def test_compare_engines_refuses_engines_the_feed_cannot_feed_before_any_run(tmp_path):
    """compare_engines (not only the CLI) refuses engines taking other input names, or an input in a dtype
    the feed's values cannot be cast to without loss, naming both engines and the fix, before any runs."""
    import onnx
    from onnx import TensorProto

    import trtflow
    from trtflow.compare import compare_engines

    one = _onnx(tmp_path / "one.onnx", ["y"])
    model = onnx.load(one)
    for value in (*model.graph.input, *model.graph.output):
        value.type.tensor_type.elem_type = TensorProto.FLOAT16
    onnx.save(model, tmp_path / "half.onnx")
    model = onnx.load(one)
    model.graph.input[0].name = model.graph.node[0].input[0] = "images"
    onnx.save(model, tmp_path / "renamed.onnx")
    feed = {"x": np.ones((2, 4), np.float32)}
    with trtflow.load(one, engine="ort") as a, trtflow.load(tmp_path / "half.onnx", engine="ort") as half, \
            trtflow.load(tmp_path / "renamed.onnx", engine="ort") as renamed:
        with pytest.raises(UsageError, match=r"'x' is float32 .* but half takes float16.*--input x="):
            compare_engines({"one": a, "half": half}, feed)
        with pytest.raises(UsageError, match=r"one takes inputs \['x'\] but renamed takes \['images'\]"):
            compare_engines({"one": a, "renamed": renamed}, feed)
        report = compare_engines({"one": a, "half": half}, {"x": np.ones((2, 4), np.float16)})  # both take these
    assert report.passed, report.to_dict()


def test_numpy_scalar_tolerances_are_numbers():
    """Tolerances(atol=np.float32(1e-3)) was refused as 'not a finite number >= 0'."""
    from trtflow.compare import Tolerances, compare_outputs

    tol = Tolerances(atol=np.float32(1e-3), rtol=np.int64(0), per_output_atol={"y": np.float16(0.5)},
                     min_agreement=np.float32(0.5))
    assert tol.for_output("y") == (0.5, 0) and tol.for_output("z")[0] == pytest.approx(1e-3)
    (diff,) = compare_outputs({"y": np.ones(2)}, {"y": np.ones(2)}, tol)
    __import__("json").dumps(diff.to_dict())  # plain floats in the report
    for bad in (np.float32("nan"), np.float32(-1), np.bool_(True)):
        with pytest.raises(UsageError):
            Tolerances(atol=bad)


def test_a_module_against_an_onnx_file_runs_on_the_input_files_shape(tiny_onnx, tmp_path):
    """compare MODULE:FACTORY model.onnx --input x=FILE: PyTorch ran at the --shapes example's shape, so a
    file of another batch was refused (naming a --split-batches compare lacks), and without --shapes the
    file's own shape was not taken."""
    pytest.importorskip("torch")
    from tests.conftest import call_cli

    np.save(tmp_path / "x.npy", np.random.default_rng(0).standard_normal((5, 3, 16, 16)).astype(np.float32))
    for shapes in (("--shapes", "x:5x3x16x16"), ()):
        proc = call_cli("compare", "tests.models.tiny:make", tiny_onnx, *shapes, "--input", f"x={tmp_path / 'x.npy'}",
                        "--atol", "1e-4", "--json")
        assert proc.returncode == 0, (shapes, proc.stderr)
        assert __import__("json").loads(proc.stdout)["inputs"]["x"]["shape"] == [5, 3, 16, 16]
    proc = call_cli("compare", "tests.models.tiny:make", tiny_onnx, "--input", f"q={tmp_path / 'x.npy'}")
    assert proc.returncode == 2 and "'q'" in proc.stderr and "['x']" in proc.stderr, proc.stderr


def test_a_factory_returning_a_tuple_or_a_tensor_of_examples_compares(tmp_path, monkeypatch):
    """docs: a factory may return (module, example_inputs), a tensor or a sequence of tensors as
    from_torch takes them; compare MODULE:FACTORY took only a dict (AttributeError on a tuple)."""
    pytest.importorskip("torch")
    from tests.conftest import call_cli

    (tmp_path / "cmp_factories.py").write_text(
        "import torch\n"
        "class Add(torch.nn.Module):\n"
        "    def forward(self, x, w):\n"
        "        return x + w\n"
        "class Twice(torch.nn.Module):\n"
        "    def forward(self, x):\n"
        "        return x * 2\n"
        "def pair():\n"
        "    return Add(), (torch.randn(2, 4), torch.randn(1, 4))\n"
        "def single():\n"
        "    return Twice(), torch.randn(3, 4)\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    for spec, shapes in (("cmp_factories:pair", [[2, 4], [1, 4]]), ("cmp_factories:single", [[3, 4]])):
        proc = call_cli("compare", spec, "--json")
        assert proc.returncode == 0, (spec, proc.stderr)
        report = __import__("json").loads(proc.stdout)
        assert [v["shape"] for v in report["inputs"].values()] == shapes and report["passed"]


def test_two_files_with_other_input_names_name_both_models(tmp_path):
    """The engine's 'input names do not match the model' did not say which model, and no --input was given."""
    import onnx

    from tests.conftest import call_cli

    one = _onnx(tmp_path / "one.onnx", ["y"])
    model = onnx.load(one)
    model.graph.input[0].name = "images"
    model.graph.node[0].input[0] = "images"
    renamed = tmp_path / "renamed.onnx"
    onnx.save(model, renamed)
    proc = call_cli("compare", one, renamed)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert str(one) in proc.stderr and str(renamed) in proc.stderr and "['images']" in proc.stderr, proc.stderr


def test_a_module_against_an_onnx_file_takes_input_files_in_any_order(tmp_path, monkeypatch):
    """compare MODULE:FACTORY model.onnx --input b=... --input a=...: the files were fed in the order
    given, so b's values went to input 'a' (a shape error, or a wrong comparison)."""
    torch = pytest.importorskip("torch")
    from tests.conftest import call_cli

    (tmp_path / "cmp_order.py").write_text(
        "import torch\n"
        "class M(torch.nn.Module):\n"
        "    def forward(self, a, b):\n"
        "        return a.sum(-1, keepdim=True) * 2 + b.mean(-1, keepdim=True)\n"
        "def make():\n"
        "    return M()\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    from cmp_order import M

    torch.onnx.export(M(), (torch.randn(2, 3), torch.randn(2, 5)), str(tmp_path / "m.onnx"), input_names=["a", "b"],
                      output_names=["y"], dynamo=False)
    np.save(tmp_path / "a.npy", np.ones((2, 3), np.float32))
    np.save(tmp_path / "b.npy", np.full((2, 5), 3, np.float32))
    proc = call_cli("compare", "cmp_order:make", tmp_path / "m.onnx", "--input", f"b={tmp_path / 'b.npy'}",
                    "--input", f"a={tmp_path / 'a.npy'}", "--json")
    assert proc.returncode == 0, proc.stderr
    report = __import__("json").loads(proc.stdout)
    assert report["inputs"]["a"]["shape"] == [2, 3] and report["inputs"]["b"]["shape"] == [2, 5] and report["passed"]


@pytest.mark.parametrize("fields, message", [
    ({"per_output_atol": [0.1]}, "per_output_atol: expected a dict output name -> tolerance"),
    ({"per_output_rtol": 0.1}, "per_output_rtol: expected a dict"), ({"per_output_atol": {0: 0.1}}, "per_output_atol"),
    ({"per_output_atol": {"y": "0.1"}}, "finite numbers"), ({"atol": "1e-3"}, "finite numbers"),
    ({"equal_nan": "yes"}, "equal_nan: expected True or False"), ({"min_agreement": "all"}, "min_agreement"),
])
def test_tolerances_of_the_wrong_type_are_usage_errors_naming_the_form(fields, message):
    """Tolerances(per_output_atol=[0.1]) raised AttributeError ('list' object has no attribute 'values');
    equal_nan="yes" was taken as true."""
    from trtflow.compare import Tolerances

    with pytest.raises(UsageError, match=message):
        Tolerances(**fields)


def test_a_factorys_shapes_that_disagree_with_an_input_file_are_refused(tiny_onnx, tmp_path):
    """compare MODULE:FACTORY --shapes x:2x3x16x16 --input x=FILE of a batch of 5 exported a static batch of 2 and
    failed when ONNX Runtime got the file (against an ONNX file it ran at 5 without a word), and without --shapes
    the file's shape was not taken: refused before the export, as run and bench refuse it. A dynamic axis
    (--dynamic x:0=batch) may differ: exported at one batch, compared at the file's."""
    pytest.importorskip("torch")
    from tests.conftest import call_cli

    rng = np.random.default_rng(0)
    np.save(tmp_path / "x5.npy", rng.standard_normal((5, 3, 16, 16)).astype(np.float32))
    np.save(tmp_path / "x8.npy", rng.standard_normal((2, 3, 8, 8)).astype(np.float32))
    for extra, file, have in (((), "x5", "5x3x16x16"), ((tiny_onnx,), "x5", "5x3x16x16"),
                              (("--dynamic", "x:0=batch"), "x8", "2x3x8x8")):
        proc = call_cli("compare", "tests.models.tiny:make", *extra, "--shapes", "x:2x3x16x16",
                        "--input", f"x={tmp_path / f'{file}.npy'}")
        assert proc.returncode == 2 and "--shapes x:2x3x16x16" in proc.stderr and have in proc.stderr, proc.stderr
    for shapes in (("--shapes", "x:2x3x16x16", "--dynamic", "x:0=batch"), ()):  # the file alone sets the shape
        proc = call_cli("compare", "tests.models.tiny:make", *shapes, "--input", f"x={tmp_path / 'x5.npy'}",
                        "--atol", "1e-4", "--json")
        assert proc.returncode == 0, (shapes, proc.stderr)
        assert __import__("json").loads(proc.stdout)["inputs"]["x"]["shape"] == [5, 3, 16, 16]


def test_a_file_for_one_of_a_factorys_inputs_takes_its_place_among_the_factorys_examples(tmp_path):
    """Without --shapes, --input files for only some of the inputs of a factory that returns examples
    exported from the files alone (one input of two) and failed; then the file was ignored without a
    word. The file takes its input's place; files for unnamed examples are refused, naming the fix."""
    pytest.importorskip("torch")
    from tests.conftest import call_cli

    np.save(tmp_path / "x.npy", np.random.default_rng(0).standard_normal((2, 3)).astype(np.float32))
    np.save(tmp_path / "x5.npy", np.random.default_rng(0).standard_normal((5, 3)).astype(np.float32))
    proc = call_cli("compare", "tests.models.export_zoo:pair_with_examples", "--input", f"x={tmp_path / 'x.npy'}",
                    "--atol", "1e-5", "--json")
    assert proc.returncode == 0, proc.stderr
    assert set(__import__("json").loads(proc.stdout)["inputs"]) == {"x", "y"}
    proc = call_cli("compare", "tests.models.export_zoo:pair_with_examples", "--input", f"x={tmp_path / 'x5.npy'}")
    assert proc.returncode == 2 and "'x': (5, 3), 'y': (2, 3)" in proc.stderr, proc.stderr  # the file's x ran
    proc = call_cli("compare", "tests.models.export_zoo:dict_out_examples_unnamed", "--input", f"x={tmp_path / 'x.npy'}")
    assert proc.returncode == 2 and "--input x" in proc.stderr and "--shapes" in proc.stderr, proc.stderr
