"""trtflow.feeds: the feed of run / compare / bench from --shapes and --input."""

from __future__ import annotations

import numpy as np
import pytest

from tests.conftest import call_cli
from trtflow.errors import UsageError
from trtflow.feeds import build_feed
from trtflow.spec import Bounds, TensorSpec


def test_a_shape_for_no_model_input_is_refused(tiny_onnx):
    spec = TensorSpec("x", "float32", ("batch", 3), Bounds((1, 3), (2, 3), (8, 3)))
    assert build_feed([spec], None, {"x": (4, 3)})["x"].shape == (4, 3)
    with pytest.raises(UsageError, match=r"--shapes names 'X'.*not a model input.*\['x'\]"):
        build_feed([spec], None, {"X": (4, 3)})  # a typo would run the opt shape (2, 3) instead
    proc = call_cli("run", str(tiny_onnx), "--shapes", "x:2x3x16x16,y:1x5")
    assert proc.returncode == 2 and "'y'" in proc.stderr and "not a model input" in proc.stderr, proc.stderr


def test_a_file_that_is_not_numpy_is_not_called_a_pickle(tmp_path):
    from trtflow.errors import ModelLoadError
    from trtflow.feeds import load_array

    (tmp_path / "text.npy").write_text("1 2 3\n")
    with pytest.raises(ModelLoadError, match="not a .npy or .npz file") as info:
        load_array(str(tmp_path / "text.npy"), "x")
    assert "pickle" not in str(info.value)
    np.save(tmp_path / "objects.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(ModelLoadError, match="pickles"):
        load_array(str(tmp_path / "objects.npy"), "x")


def test_inputs_sharing_a_dim_label_get_the_given_size_when_the_engine_has_bounds():
    from trtflow.feeds import random_feed

    images = TensorSpec("images", "float32", ("batch", 3, 8, 8), Bounds((1, 3, 8, 8), (1, 3, 8, 8), (16, 3, 8, 8)))
    sizes = TensorSpec("sizes", "int64", ("batch", 2), Bounds((1, 2), (1, 2), (16, 2)))
    feed = random_feed([images, sizes], {"images": (8, 3, 8, 8)})
    assert feed["images"].shape == (8, 3, 8, 8) and feed["sizes"].shape == (8, 2)  # not the opt batch 1
    assert random_feed([images, sizes])["sizes"].shape == (1, 2)


def test_an_npz_key_may_hold_a_colon(tmp_path):
    from trtflow.feeds import load_array, parse_input_args, save_npz

    save_npz(tmp_path / "in.npz", {"input_1:0": np.ones(2, np.float32)})  # a TF-style name, as --save-inputs writes it
    value = f"{tmp_path / 'in.npz'}:input_1:0"
    assert parse_input_args([f"x={value}"]) == {"x": value}
    assert load_array(value, "x").tolist() == [1.0, 1.0]


def test_a_given_shape_with_a_negative_or_fractional_size_is_a_usage_error():
    from trtflow.feeds import random_feed

    spec = TensorSpec("x", "float32", ("batch", 3))
    assert random_feed([spec], {"x": (0, 3)})["x"].shape == (0, 3)
    for bad in ((-1, 3), (2.5, 3)):
        with pytest.raises(UsageError, match=r"input 'x'.*whole sizes >= 0"):
            random_feed([spec], {"x": bad})


def test_run_refuses_one_file_for_the_inputs_and_the_outputs(tiny_onnx, tmp_path):
    """--save-inputs F -o F would write the inputs, then replace them with the outputs: refused first."""
    path = tmp_path / "both.npz"
    proc = call_cli("run", tiny_onnx, "--shapes", "x:1x3x16x16", "-o", path, "--save-inputs", tmp_path / "." / "both.npz")
    assert proc.returncode == 2 and "--save-inputs" in proc.stderr and "--out" in proc.stderr, proc.stderr
    assert not path.exists()


def test_a_bfloat16_input_gets_bfloat16_values_and_its_outputs_are_shown_and_saved(tmp_path):
    """Random values of the spec's dtype: a bfloat16 input got float32 values, which a bfloat16 engine
    refuses (lossy), so `trtflow run` could not run it at all; its bfloat16 outputs then broke the
    statistics and --out (numpy has no bfloat16)."""
    torch = pytest.importorskip("torch")
    from tests.models.tiny import tiny_module
    from trtflow.arrays import dtype_of
    from trtflow.backends.torch.runner import TorchEngine
    from trtflow.cli.run import _stats
    from trtflow.feeds import load_array, save_npz

    eng = TorchEngine(tiny_module(), [torch.randn(2, 3, 16, 16)], dtype="bf16", keep_io_types=False, device="cpu")
    feed = build_feed(eng.inputs, shapes={"x": (2, 3, 16, 16)})
    assert dtype_of(feed["x"]) == "bfloat16"
    out = eng.infer(feed)["output_0"]
    stats = _stats(out)
    assert stats["dtype"] == "bfloat16" and stats["shape"] == [2, 5] and np.isfinite(stats["mean"])
    save_npz(tmp_path / "out.npz", {"y": out})
    saved = load_array(str(tmp_path / "out.npz"), "y")
    assert saved.dtype == np.float32 and np.array_equal(saved, out.float().numpy())  # exact: bf16 fits in float32
    save_npz(tmp_path / "in.npz", feed)  # --save-inputs, then --input x=in.npz: the same bfloat16 values
    again = build_feed(eng.inputs, {"x": str(tmp_path / "in.npz")})["x"]
    assert again.dtype == torch.bfloat16 and torch.equal(again, feed["x"])
    np.save(tmp_path / "rounded.npy", np.full((2, 3, 16, 16), 0.1, np.float32))  # not exact in bfloat16: left as is
    assert build_feed(eng.inputs, {"x": str(tmp_path / "rounded.npy")})["x"].dtype == np.float32


def test_run_refuses_an_empty_out_path(tiny_onnx):
    """-o "$UNSET" was taken as no -o: the run passed and saved nothing."""
    for flag in ("-o", "--save-inputs"):
        proc = call_cli("run", tiny_onnx, "--shapes", "x:1x3x16x16", flag, "")
        assert proc.returncode == 2 and ".npz" in proc.stderr, (flag, proc.stdout, proc.stderr)


def test_an_npz_holding_objects_is_called_one(tmp_path):
    """np.savez of an object array (strings kept as objects) was called 'not a .npy or .npz file (save
    arrays with numpy.save or numpy.savez)', the way it was saved."""
    from trtflow.errors import ModelLoadError
    from trtflow.feeds import load_array

    np.savez(tmp_path / "objects.npz", x=np.array(["a", "bc"], dtype=object))
    with pytest.raises(ModelLoadError, match="pickles") as info:
        load_array(str(tmp_path / "objects.npz"), "x")
    assert "not a .npy or .npz" not in str(info.value) and "astype(str)" in str(info.value)


def test_run_saves_a_scalar_input_and_output_as_scalars(tmp_path):
    """A 0-d input or output was saved by --save-inputs / -o as a (1,) array, so feeding the saved inputs back
    (--input u=IN.npz, as the flag's help says) was refused: "has shape (1,); the engine expects ()"."""
    from onnx import TensorProto, helper, save

    vi = helper.make_tensor_value_info
    graph = helper.make_graph([helper.make_node("Identity", ["u"], ["y"])], "g", [vi("u", TensorProto.UINT8, [])],
                              [vi("y", TensorProto.UINT8, [])])
    save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8), tmp_path / "m.onnx")
    saved_in, saved_out = tmp_path / "in.npz", tmp_path / "out.npz"
    proc = call_cli("run", str(tmp_path / "m.onnx"), "--save-inputs", str(saved_in), "-o", str(saved_out))
    assert proc.returncode == 0, proc.stderr
    assert np.load(saved_in)["u"].shape == () and np.load(saved_out)["y"].shape == ()
    again = call_cli("run", str(tmp_path / "m.onnx"), "--input", f"u={saved_in}")
    assert again.returncode == 0, again.stderr


@pytest.mark.parametrize("command", [("run",), ("bench", "--engine", "ort", "--duration", "0.1")])
def test_shapes_contradicting_an_input_file_are_refused(tiny_onnx, tmp_path, command):
    """--shapes x:2x... with an --input file for x holding another shape ran the file's shape silently."""
    np.save(tmp_path / "x.npy", np.zeros((1, 3, 16, 16), np.float32))
    proc = call_cli(command[0], tiny_onnx, *command[1:], "--shapes", "x:2x3x16x16", "--input", f"x={tmp_path / 'x.npy'}")
    assert proc.returncode == 2 and "drop --shapes x" in proc.stderr and "1x3x16x16" in proc.stderr, proc.stderr


def test_compare_of_two_files_refuses_shapes_contradicting_an_input_file(tiny_onnx, tmp_path):
    np.save(tmp_path / "x.npy", np.zeros((1, 3, 16, 16), np.float32))
    proc = call_cli("compare", tiny_onnx, tiny_onnx, "--engine", "ort", "--shapes", "x:2x3x16x16",
                    "--input", f"x={tmp_path / 'x.npy'}")
    assert proc.returncode == 2 and "drop --shapes x" in proc.stderr and "1x3x16x16" in proc.stderr, proc.stderr


def test_load_array_lazy_maps_a_npy_file_instead_of_reading_it(tmp_path):
    """The shape checks before a build read only the header of a .npy file: lazy maps it."""
    from trtflow.feeds import load_array

    data = np.arange(12, dtype=np.float32).reshape(3, 4)
    np.save(tmp_path / "a.npy", data)
    lazy = load_array(str(tmp_path / "a.npy"), "a", lazy=True)
    assert isinstance(lazy.base, np.memmap) or isinstance(lazy, np.memmap)
    assert lazy.shape == (3, 4) and lazy.dtype == np.float32 and np.array_equal(lazy, data)
    assert not isinstance(load_array(str(tmp_path / "a.npy"), "a"), np.memmap)
