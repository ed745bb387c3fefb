"""trtflow triton-repo: config.pbtxt parsed with Triton's own model_config_pb2, model files loaded by
the matching trtflow engine (TensorRT-RTX builds plans on the CPU; their I/O is read from the sidecar)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from trtflow.cli.main import main

pb2 = pytest.importorskip("tritonclient.grpc.model_config_pb2")
from google.protobuf import text_format  # noqa: E402  (after the skip: protobuf comes with tritonclient)

TEMPLATE = Path(__file__).resolve().parents[1] / "trtflow" / "serve" / "templates" / "triton_python_model.py"


def _cli_json(capsys, *args) -> dict:
    code = main(["triton-repo", *map(str, args), "--json"])
    out = capsys.readouterr()
    assert code == 0, out.err
    return json.loads(out.out)


def _parse(path: Path):
    config = pb2.ModelConfig()
    text_format.Parse(path.read_text(), config)
    return config


def _params(config) -> dict:
    return {k: v.string_value for k, v in config.parameters.items()}


def test_onnxruntime_repository(tiny_onnx, tmp_path, capsys):
    result = _cli_json(capsys, tiny_onnx, "--out", tmp_path, "--name", "tiny", "--max-batch", 16, "--instances", 2,
                       "--max-queue-delay-us", 500, "--preferred-batch-sizes", "4,8", "--threads", 1)
    config = _parse(tmp_path / "tiny" / "config.pbtxt")
    assert config.name == "tiny" and config.backend == "onnxruntime" and config.max_batch_size == 16
    assert [(t.name, list(t.dims), pb2.DataType.Name(t.data_type)) for t in config.input] == [("x", [3, 16, 16], "TYPE_FP32")]
    assert {t.name: list(t.dims) for t in config.output} == {"logits": [5], "feat": [8]}
    assert config.dynamic_batching.max_queue_delay_microseconds == 500
    assert list(config.dynamic_batching.preferred_batch_size) == [4, 8]
    group = config.instance_group[0]
    assert group.count == 2 and group.kind == pb2.ModelInstanceGroup.KIND_CPU
    assert _params(config) == {"intra_op_thread_count": "1"}
    assert result["files"] == [str(tmp_path / "tiny" / "1" / "model.onnx")]

    import trtflow

    x = np.random.default_rng(0).standard_normal((3, 3, 16, 16), dtype=np.float32)
    with trtflow.load(tiny_onnx, "ort") as ref, trtflow.load(tmp_path / "tiny" / "1" / "model.onnx", "ort") as copy:
        want, got = ref.infer({"x": x}), copy.infer({"x": x})
    np.testing.assert_array_equal(got["logits"], want["logits"])


def test_python_repository_carries_the_engine(tiny_onnx, tmp_path, capsys):
    result = _cli_json(capsys, tiny_onnx, "--out", tmp_path, "--backend", "python", "--threads", 1,
                       "--engine-option", 'optimization="basic"', "--no-dynamic-batching")
    folder = tmp_path / "tiny" / "1"
    config = _parse(tmp_path / "tiny" / "config.pbtxt")
    assert config.backend == "python" and config.max_batch_size == 8 and not config.HasField("dynamic_batching")
    params = _params(config)
    assert params["trtflow_model"] == "tiny.onnx" and params["trtflow_engine"] == "ort"
    assert json.loads(params["trtflow_options"]) == {"threads": 1, "optimization": "basic", "spinning": False}
    assert (folder / "model.py").read_text() == TEMPLATE.read_text()
    assert result["backend"] == "python" and (folder / "tiny.onnx").is_file()

    import trtflow

    with trtflow.load(folder / params["trtflow_model"], params["trtflow_engine"], **json.loads(params["trtflow_options"])) as e:
        assert [s.name for s in e.inputs] == [t.name for t in config.input]
        assert [s.name for s in e.outputs] == [t.name for t in config.output]


def test_task_repository_takes_images(tiny_onnx, tmp_path, capsys):
    _cli_json(capsys, tiny_onnx, "--out", tmp_path, "--backend", "python", "--task", "classify",
              "--task-option", "top_k=3")
    config = _parse(tmp_path / "tiny" / "config.pbtxt")
    assert [(t.name, list(t.dims), pb2.DataType.Name(t.data_type)) for t in config.input] == [("IMAGE", [-1, -1, 3], "TYPE_UINT8")]
    assert [(t.name, list(t.dims), pb2.DataType.Name(t.data_type)) for t in config.output] == [("RESULT", [1], "TYPE_STRING")]
    assert _params(config)["trtflow_task"] == "classify"
    assert json.loads(_params(config)["trtflow_task_options"]) == {"top_k": 3}


def test_ensemble_of_a_task(tiny_onnx, tmp_path, capsys):
    result = _cli_json(capsys, tiny_onnx, "--out", tmp_path, "--name", "cls", "--task", "classify", "--ensemble",
                       "--max-batch", 4, "--task-option", "top_k=2")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cls", "cls_model", "cls_post", "cls_pre"]
    ens = _parse(tmp_path / "cls" / "config.pbtxt")
    assert ens.platform == "ensemble" and ens.max_batch_size == 4 and (tmp_path / "cls" / "1").is_dir()
    steps = ens.ensemble_scheduling.step
    assert [s.model_name for s in steps] == ["cls_pre", "cls_model", "cls_post"]
    assert dict(steps[1].input_map) == {"x": "prepared"}
    assert dict(steps[2].input_map) == {"logits": "out_logits", "feat": "out_feat", "META": "meta"}
    model = _parse(tmp_path / "cls_model" / "config.pbtxt")
    assert model.backend == "onnxruntime" and model.max_batch_size == 4
    pre, post = _parse(tmp_path / "cls_pre" / "config.pbtxt"), _parse(tmp_path / "cls_post" / "config.pbtxt")
    assert [(t.name, list(t.dims)) for t in pre.output] == [("INPUT", [3, 16, 16]), ("META", [8])]
    assert {t.name for t in post.input} == {"logits", "feat", "META"}
    assert _params(pre)["trtflow_model"] == "../../cls_model/1/model.onnx" == _params(post)["trtflow_model"]
    templates = TEMPLATE.parent
    assert (tmp_path / "cls_pre" / "1" / "model.py").read_text() == (templates / "triton_task_pre.py").read_text()
    assert (tmp_path / "cls_post" / "1" / "model.py").read_text() == (templates / "triton_task_post.py").read_text()
    assert result["backend"] == "ensemble"


def test_ensemble_needs_a_task(tiny_onnx, tmp_path, capsys):
    assert main(["triton-repo", str(tiny_onnx), "--out", str(tmp_path), "--ensemble"]) == 2
    assert "--ensemble needs --task" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())


def test_tensorrt_repository_from_a_plan(flavor, tiny_onnx, tmp_path, capsys):
    from trtflow.backends.tensorrt import BuildConfig, build_engine
    from trtflow.backends.tensorrt.runner import read_plan_io
    from trtflow.backends.tensorrt.sidecar import write_plan
    from trtflow.spec import make_profile

    shape = lambda n: {"x": (n, 3, 16, 16)}  # noqa: E731
    profiles = [make_profile(shape(1), shape(2), shape(4)), make_profile(shape(5), shape(8), shape(16))]
    plan = tmp_path / "tiny.plan"
    write_plan(plan, build_engine(tiny_onnx, BuildConfig(profiles=profiles)))
    result = _cli_json(capsys, plan, "--out", tmp_path / "repo")
    config = _parse(tmp_path / "repo" / "tiny" / "config.pbtxt")
    assert config.backend == "tensorrt" and config.max_batch_size == 16  # the profiles' bound
    assert list(config.instance_group[0].profile) == ["0", "1"]
    assert config.instance_group[0].kind == pb2.ModelInstanceGroup.KIND_GPU
    assert [list(t.dims) for t in config.input] == [[3, 16, 16]]
    copied = tmp_path / "repo" / "tiny" / "1" / "model.plan"
    assert copied.read_bytes() == plan.read_bytes()
    io = read_plan_io(copied)  # executes nowhere here: the sidecar beside it answers
    assert [s.name for s in io["inputs"]] == ["x"] and len(io["profiles"]) == 2
    if flavor == "tensorrt_rtx" or "rtx" in str(flavor):
        assert any("TensorRT-RTX" in n for n in result["notes"])


def test_python_repository_of_a_plan_reads_the_sidecar(flavor, tiny_onnx, tmp_path, capsys):
    from trtflow.backends.tensorrt import BuildConfig, build_engine
    from trtflow.backends.tensorrt.sidecar import write_plan

    plan = tmp_path / "tiny.plan"
    write_plan(plan, build_engine(tiny_onnx, BuildConfig(max_batch=4)))
    _cli_json(capsys, plan, "--out", tmp_path / "repo", "--backend", "python", "--engine", "tensorrt", "--version", 2)
    folder = tmp_path / "repo" / "tiny" / "2"
    assert sorted(p.name for p in folder.iterdir()) == ["model.py", "tiny.plan", "tiny.plan.json"]
    config = _parse(tmp_path / "repo" / "tiny" / "config.pbtxt")
    assert config.max_batch_size == 4 and config.instance_group[0].kind == pb2.ModelInstanceGroup.KIND_GPU
    assert _params(config)["trtflow_engine"] == "tensorrt"


def test_tensorrt_repository_builds_from_onnx(flavor, tiny_onnx, tmp_path, capsys):
    result = _cli_json(capsys, tiny_onnx, "--out", tmp_path, "--backend", "tensorrt", "--max-batch", 4)
    config = _parse(tmp_path / "tiny" / "config.pbtxt")
    assert config.max_batch_size == 4 and (tmp_path / "tiny" / "1" / "model.plan").stat().st_size > 0
    assert any("built a TensorRT plan" in n for n in result["notes"])


def test_max_batch_zero_keeps_the_batch_dim(tiny_onnx, tmp_path, capsys):
    _cli_json(capsys, tiny_onnx, "--out", tmp_path, "--max-batch", 0)
    config = _parse(tmp_path / "tiny" / "config.pbtxt")
    assert config.max_batch_size == 0 and list(config.input[0].dims) == [-1, 3, 16, 16]
    assert not config.HasField("dynamic_batching")


def _static_onnx(path: Path) -> Path:
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "static",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path


@pytest.mark.parametrize("extra, message", [
    (["--max-batch", "4"], "dim 0 is fixed at 1"),
    (["--backend", "onnxruntime", "--task", "classify"], "--task needs --backend python"),
])
def test_refusals_are_one_line(tmp_path, capsys, extra, message):
    model = _static_onnx(tmp_path / "static.onnx")
    assert main(["triton-repo", str(model), "--out", str(tmp_path / "repo"), *extra]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "repo" / "static").exists()  # nothing half-written


def test_static_model_gets_max_batch_zero_and_existing_folder_is_kept(tmp_path, capsys):
    model = _static_onnx(tmp_path / "static.onnx")
    result = _cli_json(capsys, model, "--out", tmp_path / "repo")
    assert result["max_batch"] == 0
    assert main(["triton-repo", str(model), "--out", str(tmp_path / "repo")]) == 2
    assert "--overwrite" in capsys.readouterr().err


def test_validation_refuses_text_triton_would_refuse():
    from trtflow.errors import UsageError
    from trtflow.serve.repo import validate_pbtxt

    with pytest.raises(UsageError, match="ModelConfig"):
        validate_pbtxt('name: "m" backend: "python" max_batch_size: 8 input { name: "x" data_type: TYPE_FLOAT32 }')
    with pytest.raises(UsageError, match="lacks output"):
        validate_pbtxt('name: "m" backend: "python" input { name: "x" data_type: TYPE_FP32 dims: 4 }')


def _dynamic_onnx(path: Path) -> Path:
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "dynamic",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4])])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path


@pytest.mark.parametrize("extra, message", [
    (["--preferred-batch-sizes", "16"], "max_batch_size 8"),  # Triton: preferred size must be <= max batch size
    (["--preferred-batch-sizes", "0,4"], "must be >= 1"),  # Triton: preferred size must be positive
    (["--preferred-batch-sizes", "4", "--no-dynamic-batching"], "--no-dynamic-batching"),
])
def test_preferred_batch_sizes_triton_would_refuse_are_refused(tmp_path, capsys, extra, message):
    model = _dynamic_onnx(tmp_path / "dyn.onnx")
    assert main(["triton-repo", str(model), "--out", str(tmp_path / "repo"), *extra]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "repo" / "dyn").exists()


def test_preferred_batch_sizes_of_a_model_without_a_batch_dim_are_refused(tmp_path):
    from trtflow.errors import UsageError
    from trtflow.serve.repo import RepoOptions, write_repository

    model = _static_onnx(tmp_path / "static.onnx")
    with pytest.raises(UsageError, match="max_batch_size 0"):
        write_repository(model, tmp_path / "repo", RepoOptions(preferred_batch_sizes=[2]))
    assert not (tmp_path / "repo" / "static").exists()


def test_a_refused_overwrite_keeps_the_model_folder_it_would_replace(tmp_path, capsys):
    model = _static_onnx(tmp_path / "static.onnx")
    _cli_json(capsys, model, "--out", tmp_path / "repo")
    before = {p.relative_to(tmp_path): p.read_bytes() for p in (tmp_path / "repo").rglob("*") if p.is_file()}
    assert main(["triton-repo", str(model), "--out", str(tmp_path / "repo"), "--max-batch", "4", "--overwrite"]) == 2
    assert "dim 0 is fixed" in capsys.readouterr().err
    after = {p.relative_to(tmp_path): p.read_bytes() for p in (tmp_path / "repo").rglob("*") if p.is_file()}
    assert after == before  # nothing lost, nothing left beside it
    assert sorted(p.name for p in (tmp_path / "repo").iterdir()) == ["static"]
    _cli_json(capsys, model, "--out", tmp_path / "repo", "--overwrite", "--version", 3)  # a good overwrite writes
    assert sorted(p.name for p in (tmp_path / "repo" / "static").iterdir()) == ["1", "3", "config.pbtxt"]
    assert sorted(p.name for p in (tmp_path / "repo").iterdir()) == ["static"]


def _two_inputs_onnx(path: Path) -> Path:
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph([helper.make_node("Add", ["a", "b"], ["y"])], "two",
                              [helper.make_tensor_value_info(n, TensorProto.FLOAT, ["N", 3, 16, 16]) for n in "ab"],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3, 16, 16])])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path


def test_a_refused_ensemble_overwrite_keeps_the_four_models(tiny_onnx, tmp_path, capsys):
    repo = tmp_path / "repo"
    _cli_json(capsys, tiny_onnx, "--out", repo, "--name", "cls", "--task", "classify", "--ensemble")
    before = {p.relative_to(repo): p.read_bytes() for p in repo.rglob("*") if p.is_file()}
    model = _two_inputs_onnx(tmp_path / "two.onnx")
    code = main(["triton-repo", str(model), "--out", str(repo), "--name", "cls", "--task", "classify", "--ensemble",
                 "--overwrite"])
    assert code == 2 and "one image input" in capsys.readouterr().err
    assert {p.relative_to(repo): p.read_bytes() for p in repo.rglob("*") if p.is_file()} == before
    assert sorted(p.name for p in repo.iterdir()) == ["cls", "cls_model", "cls_post", "cls_pre"]


def test_overwrite_from_the_model_file_inside_the_folder_it_replaces(tmp_path, capsys):
    model = _static_onnx(tmp_path / "static.onnx")
    _cli_json(capsys, model, "--out", tmp_path / "repo")
    inside = tmp_path / "repo" / "static" / "1" / "model.onnx"
    data = inside.read_bytes()
    result = _cli_json(capsys, inside, "--out", tmp_path / "repo", "--name", "static", "--overwrite", "--version", 2)
    assert result["files"] == [str(tmp_path / "repo" / "static" / "2" / "model.onnx")]
    assert (tmp_path / "repo" / "static" / "2" / "model.onnx").read_bytes() == data
    assert sorted(p.name for p in (tmp_path / "repo").iterdir()) == ["static"]


@pytest.mark.parametrize("kind", [[], ["--kind", "cpu"]])
def test_gpus_for_cpu_instances_are_refused_not_dropped(tmp_path, capsys, kind):
    model = _dynamic_onnx(tmp_path / "dyn.onnx")
    assert main(["triton-repo", str(model), "--out", str(tmp_path / "repo"), "--gpus", "0,1", *kind]) == 2
    err = capsys.readouterr().err
    assert "--kind gpu" in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "repo" / "dyn").exists()
    _cli_json(capsys, model, "--out", tmp_path / "repo", "--gpus", "0,1", "--kind", "gpu")
    group = _parse(tmp_path / "repo" / "dyn" / "config.pbtxt").instance_group[0]
    assert group.kind == pb2.ModelInstanceGroup.KIND_GPU and list(group.gpus) == [0, 1]


def _row_sums_onnx(path: Path) -> Path:
    """x (N, 4) -> s (N,): an output with nothing but the batch dim."""
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph([helper.make_node("ReduceSum", ["x", "axes"], ["s"], keepdims=0)], "sums",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
                              [helper.make_tensor_value_info("s", TensorProto.FLOAT, ["N"])],
                              initializer=[helper.make_tensor("axes", TensorProto.INT64, [1], [1])])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path


def test_a_tensor_with_only_the_batch_dim_gets_max_batch_zero(tmp_path, capsys):
    # Triton refuses the model when a tensor has no dims after the batch dim ("must specify 'dims'")
    model = _row_sums_onnx(tmp_path / "sums.onnx")
    result = _cli_json(capsys, model, "--out", tmp_path / "repo")
    config = _parse(tmp_path / "repo" / "sums" / "config.pbtxt")
    assert result["max_batch"] == 0 == config.max_batch_size and not config.HasField("dynamic_batching")
    assert [list(t.dims) for t in config.input] == [[-1, 4]] and [list(t.dims) for t in config.output] == [[-1]]
    assert all(list(t.dims) for t in [*config.input, *config.output])
    assert main(["triton-repo", str(model), "--out", str(tmp_path / "repo2"), "--max-batch", "4"]) == 2
    err = capsys.readouterr().err
    assert "'s'" in err and "--max-batch 0" in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "repo2" / "sums").exists()


@pytest.fixture
def fake_plan(monkeypatch, tmp_path) -> Path:
    """A plan of the TensorRT test double (TensorRT cannot run here): a, b (N, 4) -> c, profiles up to batch 4 and 16."""
    from tests import fake_tensorrt as fake
    from trtflow.backends.tensorrt import runner
    from trtflow.backends.tensorrt.flavor import Flavor

    cuda = fake.FakeCuda()
    trt = fake.FakeTensorRT(cuda)
    monkeypatch.setattr(runner, "open_device", lambda index: cuda)
    monkeypatch.setattr(runner, "load_flavor", lambda: Flavor("tensorrt", trt.__version__, trt))
    plan = tmp_path / "add.plan"
    small, large = [(1, 4), (2, 4), (4, 4)], [(5, 4), (8, 4), (16, 4)]
    plan.write_bytes(fake.plan_bytes("add", [{"a": small, "b": small}, {"a": large, "b": large}]))
    return plan


def test_max_batch_above_the_plans_profiles_is_refused(fake_plan, tmp_path):
    from trtflow.errors import UsageError
    from trtflow.serve.repo import RepoOptions, write_repository

    with pytest.raises(UsageError, match="up to 16") as info:
        write_repository(fake_plan, tmp_path / "repo", RepoOptions(max_batch=32))
    assert "--max-batch" in str(info.value)
    assert not (tmp_path / "repo" / "add").exists()
    result = write_repository(fake_plan, tmp_path / "repo", RepoOptions(max_batch=16))
    assert result.max_batch == 16 == _parse(result.config_path).max_batch_size


@pytest.mark.parametrize("name", ["a b", "a\nb", "tab\t", "a:b", "a\\b", "a\x00b", " "])
def test_model_names_outside_letters_digits_dash_underscore_dot_are_refused(tmp_path, name):
    from trtflow.errors import UsageError
    from trtflow.serve.repo import RepoOptions, write_repository

    model = _dynamic_onnx(tmp_path / "dyn.onnx")
    with pytest.raises(UsageError, match="bad model name"):
        write_repository(model, tmp_path / "repo", RepoOptions(name=name))
    assert not (tmp_path / "repo").exists() or not any((tmp_path / "repo").iterdir())


@pytest.mark.parametrize("name", ["model.v2", "mödel-1_x"])
def test_model_names_with_dots_and_unicode_letters_are_kept(tmp_path, capsys, name):
    model = _dynamic_onnx(tmp_path / "dyn.onnx")
    _cli_json(capsys, model, "--out", tmp_path / "repo", "--name", name)
    assert _parse(tmp_path / "repo" / name / "config.pbtxt").name == name


@pytest.mark.parametrize("field, value", [("version", 0), ("version", -1), ("version", True), ("version", "2"),
                                          ("instances", 0), ("max_batch", -1), ("threads", -2),
                                          ("max_queue_delay_us", -5)])
def test_repo_options_refuse_numbers_triton_would_ignore_or_refuse(tmp_path, field, value):
    # Triton ignores a version folder named 0 or not a positive number: the model would have no version
    from trtflow.errors import UsageError
    from trtflow.serve.repo import RepoOptions

    with pytest.raises(UsageError, match=field):
        RepoOptions(**{field: value})


def test_python_repository_of_an_onnx_with_external_weights_runs_from_the_repository(tmp_path, capsys):
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    import trtflow

    weight = numpy_helper.from_array(np.full((4, 4), 3, np.float32), "w")
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"])], "ext",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4])], initializer=[weight])
    model = tmp_path / "src" / "ext.onnx"
    model.parent.mkdir()
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), model,
              save_as_external_data=True, location="ext.weights", size_threshold=0)
    result = _cli_json(capsys, model, "--out", tmp_path / "repo", "--backend", "python")
    params = _params(_parse(tmp_path / "repo" / "ext" / "config.pbtxt"))
    copied = tmp_path / "repo" / "ext" / "1" / params["trtflow_model"]
    assert str(copied) in result["files"]
    with trtflow.load(copied, params["trtflow_engine"]) as engine:  # as model.py loads it inside Triton
        out = engine.infer({"x": np.ones((2, 4), np.float32)})
    np.testing.assert_array_equal(out["y"], np.full((2, 4), 12, np.float32))


@pytest.mark.parametrize("model_of, extra", [(_static_onnx, []), (_dynamic_onnx, ["--no-dynamic-batching"])])
def test_a_queue_delay_without_a_dynamic_batcher_is_refused_not_dropped(tmp_path, capsys, model_of, extra):
    model = model_of(tmp_path / "m.onnx")
    assert main(["triton-repo", str(model), "--out", str(tmp_path / "repo"), "--max-queue-delay-us", "500", *extra]) == 2
    err = capsys.readouterr().err
    assert "--max-queue-delay-us" in err and "dynamic batcher" in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "repo" / "m").exists()


def test_task_repository_without_batching_takes_one_frame(tiny_onnx, tmp_path, capsys):
    # with max_batch_size 0 model.py gets one request's IMAGE as is and runs it as one frame
    _cli_json(capsys, tiny_onnx, "--out", tmp_path, "--backend", "python", "--task", "classify", "--max-batch", 0)
    config = _parse(tmp_path / "tiny" / "config.pbtxt")
    assert config.max_batch_size == 0
    assert [(t.name, list(t.dims)) for t in config.input] == [("IMAGE", [-1, -1, 3])]
    assert [(t.name, list(t.dims)) for t in config.output] == [("RESULT", [1])]


@pytest.mark.parametrize("engine", ["auto", "trt", "TensorRT"])
def test_python_repository_of_a_plan_names_the_engine_that_runs_it(fake_plan, tmp_path, engine):
    # model.py places tensorrt on the instance's GPU only when the engine is named "tensorrt"
    from trtflow.serve.repo import RepoOptions, write_repository

    result = write_repository(fake_plan, tmp_path / "repo", RepoOptions(backend="python", engine=engine))
    config = _parse(result.config_path)
    assert _params(config)["trtflow_engine"] == "tensorrt"
    assert config.instance_group[0].kind == pb2.ModelInstanceGroup.KIND_GPU


def test_python_repository_takes_the_onnxruntime_alias_as_ort(tiny_onnx, tmp_path, capsys):
    _cli_json(capsys, tiny_onnx, "--out", tmp_path, "--backend", "python", "--engine", "onnxruntime", "--threads", 1)
    params = _params(_parse(tmp_path / "tiny" / "config.pbtxt"))
    assert params["trtflow_engine"] == "ort"
    assert json.loads(params["trtflow_options"]) == {"threads": 1, "spinning": False}


def test_ensemble_of_a_model_with_an_output_named_meta_is_refused(tmp_path, capsys):
    # the post step takes the model's outputs and the pre step's META: two inputs of one name
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph([helper.make_node("ReduceMean", ["x", "axes"], ["META"], keepdims=0)], "meta",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 16, 16])],
                              [helper.make_tensor_value_info("META", TensorProto.FLOAT, ["N", 3])],
                              initializer=[helper.make_tensor("axes", TensorProto.INT64, [2], [2, 3])])
    model = tmp_path / "meta.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), model)
    code = main(["triton-repo", str(model), "--out", str(tmp_path / "repo"), "--task", "classify", "--ensemble"])
    err = capsys.readouterr().err
    assert code == 2 and "'META'" in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "repo").exists() or not any((tmp_path / "repo").iterdir())


def test_lists_separated_by_spaces_are_not_run_together(tmp_path, capsys):
    model = _dynamic_onnx(tmp_path / "dyn.onnx")
    _cli_json(capsys, model, "--out", tmp_path / "repo", "--kind", "gpu", "--gpus", "0 1",
              "--preferred-batch-sizes", "2, 4 8")
    config = _parse(tmp_path / "repo" / "dyn" / "config.pbtxt")
    assert list(config.instance_group[0].gpus) == [0, 1]  # "0 1" was read as GPU 1 ("01")
    assert list(config.dynamic_batching.preferred_batch_size) == [2, 4, 8]


def test_a_scalar_tensor_is_refused_at_any_max_batch(tmp_path, capsys):
    """x (4,) -> s (): config.pbtxt cannot describe a scalar (Triton: "must specify 'dims'"), so the
    model was written and Triton refused it; with --max-batch 4 the error said to use --max-batch 0,
    which writes that same refused config."""
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph([helper.make_node("ReduceSum", ["x"], ["s"], keepdims=0)], "total",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4])],
                              [helper.make_tensor_value_info("s", TensorProto.FLOAT, [])])
    model = tmp_path / "total.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), model)
    for flags in ([], ["--max-batch", "0"], ["--max-batch", "4"]):
        assert main(["triton-repo", str(model), "--out", str(tmp_path / "repo"), *flags]) == 2
        err = capsys.readouterr().err
        assert "'s'" in err and "scalar" in err and "--max-batch 0" not in err, (flags, err)
        assert not (tmp_path / "repo" / "total").exists()


def _odd_output_onnx(path: Path, second: str) -> Path:
    """x (N, 4) -> y (N, 4), plus a second output whose dim 0 is not the batch: "fixed" anchors (100, 4)
    (a constant), or "other" z (K, N), the transpose of w (N, K)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    nodes = [helper.make_node("Relu", ["x"], ["y"])]
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])]
    outputs = [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4])]
    if second == "fixed":
        nodes.append(helper.make_node("Constant", [], ["anchors"],
                                      value=numpy_helper.from_array(np.zeros((100, 4), np.float32))))
        outputs.append(helper.make_tensor_value_info("anchors", TensorProto.FLOAT, [100, 4]))
    else:
        nodes.append(helper.make_node("Transpose", ["w"], ["z"], perm=[1, 0]))
        inputs.append(helper.make_tensor_value_info("w", TensorProto.FLOAT, ["N", "K"]))
        outputs.append(helper.make_tensor_value_info("z", TensorProto.FLOAT, ["K", "N"]))
    graph = helper.make_graph(nodes, "odd", inputs, outputs)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path


@pytest.mark.parametrize("second, name, dims", [("fixed", "anchors", [100, 4]), ("other", "z", [-1, -1])])
def test_an_output_whose_dim_0_is_not_the_batch_gets_max_batch_zero(tmp_path, capsys, second, name, dims):
    # Triton batches a model only when dim 0 of every input and output is one dynamic batch dim: batched,
    # 'anchors' (100, 4) was written as dims [4] and 'z' (K, N) as [-1], and Triton refuses or splits them wrong
    model = _odd_output_onnx(tmp_path / "odd.onnx", second)
    result = _cli_json(capsys, model, "--out", tmp_path / "repo")
    config = _parse(tmp_path / "repo" / "odd" / "config.pbtxt")
    assert result["max_batch"] == 0 == config.max_batch_size and not config.HasField("dynamic_batching")
    assert {t.name: list(t.dims) for t in config.output} == {"y": [-1, 4], name: dims}
    assert [list(t.dims) for t in config.input][0] == [-1, 4]
    assert any(f"'{name}'" in n and "max_batch_size 0" in n for n in result["notes"]), result["notes"]
    assert main(["triton-repo", str(model), "--out", str(tmp_path / "repo2"), "--max-batch", "4"]) == 2
    err = capsys.readouterr().err
    assert f"'{name}'" in err and "--max-batch 0" in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "repo2" / "odd").exists()


def test_overwrite_replaces_only_the_version_it_writes(tmp_path, capsys):
    model = _dynamic_onnx(tmp_path / "dyn.onnx")
    repo = tmp_path / "repo"
    _cli_json(capsys, model, "--out", repo)
    for version in (2, 3):
        _cli_json(capsys, model, "--out", repo, "--version", version, "--overwrite")
    assert sorted(p.name for p in (repo / "dyn").iterdir()) == ["1", "2", "3", "config.pbtxt"]
    kept = {p.relative_to(repo): p.read_bytes() for v in ("1", "3") for p in (repo / "dyn" / v).rglob("*")}
    (repo / "dyn" / "2" / "stale.txt").write_text("from the version replaced")
    result = _cli_json(capsys, model, "--out", repo, "--version", 2, "--overwrite", "--instances", 2)
    assert sorted(p.name for p in (repo / "dyn").iterdir()) == ["1", "2", "3", "config.pbtxt"]
    assert {p.relative_to(repo): p.read_bytes() for v in ("1", "3") for p in (repo / "dyn" / v).rglob("*")} == kept
    assert sorted(p.name for p in (repo / "dyn" / "2").iterdir()) == ["model.onnx"]
    assert result["files"] == [str(repo / "dyn" / "2" / "model.onnx")]
    assert _parse(repo / "dyn" / "config.pbtxt").instance_group[0].count == 2  # settings every version shares
    assert any("[1, 3]" in n for n in result["notes"]), result["notes"]
    # config.pbtxt describes every version: one written for other tensors would break the versions kept
    before = {p.relative_to(repo): p.read_bytes() for p in repo.rglob("*") if p.is_file()}
    other = _static_onnx(tmp_path / "other.onnx")
    assert main(["triton-repo", str(other), "--out", str(repo), "--name", "dyn", "--version", "2", "--overwrite"]) == 2
    err = capsys.readouterr().err
    assert "[1, 3]" in err and "--name" in err and len(err.strip().splitlines()) == 1, err
    assert {p.relative_to(repo): p.read_bytes() for p in repo.rglob("*") if p.is_file()} == before


def test_the_folder_a_write_replaces_waits_where_a_polling_triton_does_not_look(tmp_path):
    # Triton's poll takes every folder in the repository root for a model (hidden ones too), and every
    # folder in a model folder whose name reads as a number (std::stoll) for a version of it
    import re

    from trtflow.serve.repo import RepoOptions, write_repository

    model = _dynamic_onnx(tmp_path / "dyn.onnx")
    repo = tmp_path / "repo"
    write_repository(model, repo)
    before = {p.relative_to(repo): p.read_bytes() for p in repo.rglob("*") if p.is_file()}
    seen = []

    def look(step, done=None, total=None):
        if step == "writing the repository":
            seen.append(([p.name for p in repo.iterdir()],
                         [p.name for p in (repo / "dyn").iterdir() if p.is_dir() and re.match(r"\s*[-+]?\d", p.name)]))
            if len(seen) == 2:
                raise KeyboardInterrupt  # a write stopped half-way

    write_repository(model, repo, RepoOptions(overwrite=True), progress=look)
    assert seen == [(["dyn"], ["1"])]
    with pytest.raises(KeyboardInterrupt):
        write_repository(model, repo, RepoOptions(overwrite=True), progress=look)
    assert {p.relative_to(repo): p.read_bytes() for p in repo.rglob("*") if p.is_file()} == before
    assert sorted(p.name for p in repo.rglob("*")) == ["1", "config.pbtxt", "dyn", "model.onnx"]


def _triton_view(repo: Path) -> dict:
    """What a polling Triton reads: every folder of the root as a model (hidden ones too), and in each its
    config.pbtxt and the folders whose name reads as a number (std::stoll), with all they hold."""
    import re

    view = {}
    for model in repo.iterdir():
        view[Path(model.name)] = None
        for p in model.rglob("*"):
            inside = p.relative_to(model)
            if inside == Path("config.pbtxt") or re.match(r"\s*[-+]?\d", inside.parts[0]):
                view[p.relative_to(repo)] = p.read_bytes() if p.is_file() else None
    return view


@pytest.mark.parametrize("case", ["new model", "new version", "replaced version", "ensemble"])
def test_a_polling_triton_sees_a_model_or_version_only_once_it_is_complete(tiny_onnx, tmp_path, case):
    from trtflow.serve.repo import RepoOptions, write_ensemble, write_repository

    model = _dynamic_onnx(tmp_path / "dyn.onnx")
    repo = tmp_path / "repo"
    write_repository(_static_onnx(tmp_path / "static.onnx"), repo)  # a model the write leaves alone
    write, options = write_repository, RepoOptions()
    if case == "ensemble":
        model, write, options = tiny_onnx, write_ensemble, RepoOptions(name="cls", task="classify")
    elif case != "new model":
        write_repository(model, repo)
        options = RepoOptions(overwrite=True, instances=2, version=2 if case == "new version" else 1)
    beside, before, seen = sorted(tmp_path.iterdir()), _triton_view(repo), []

    def look(step, done=None, total=None):
        seen.append((step, _triton_view(repo)))

    write(model, repo, options, progress=look)
    after = _triton_view(repo)
    assert after != before and len(seen) >= 2
    for step, view in seen:  # at every step, the models and versions Triton finds are whole, old or new
        assert view in (before, after), step
    assert sorted(tmp_path.iterdir()) == beside  # no folder left beside the repository
    assert not [p for p in repo.rglob(".*")], "a staging folder or file left in the repository"


@pytest.mark.parametrize("case", ["new model", "new version", "replaced version", "ensemble"])
def test_a_write_stopped_half_way_leaves_the_repository_as_it_was(tiny_onnx, tmp_path, case):
    from trtflow.serve.repo import RepoOptions, write_ensemble, write_repository

    model = _dynamic_onnx(tmp_path / "dyn.onnx")
    repo = tmp_path / "repo"
    write_repository(_static_onnx(tmp_path / "static.onnx"), repo)
    write, options, last = write_repository, RepoOptions(), "writing the repository"
    if case == "ensemble":  # stopped once the model step is written, before the pre and post steps
        model, write, options = tiny_onnx, write_ensemble, RepoOptions(name="cls", task="classify")
        last = "writing the pre and post steps"
    elif case != "new model":
        write_repository(model, repo)
        options = RepoOptions(overwrite=True, version=2 if case == "new version" else 1)
    beside = sorted(tmp_path.iterdir())
    before = {p.relative_to(repo): p.read_bytes() if p.is_file() else None for p in repo.rglob("*")}

    def stop(step, done=None, total=None):
        if step == last:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        write(model, repo, options, progress=stop)
    assert {p.relative_to(repo): p.read_bytes() if p.is_file() else None for p in repo.rglob("*")} == before
    assert sorted(tmp_path.iterdir()) == beside


def test_a_repository_whose_parent_is_not_writable_gets_new_models_in_place_with_a_warning(tmp_path, caplog):
    import subprocess

    from trtflow.serve.repo import write_repository

    model = _dynamic_onnx(tmp_path / "dyn.onnx")
    parent = tmp_path / "parent"
    repo = parent / "repo"
    write_repository(_static_onnx(tmp_path / "static.onnx"), repo)
    parent.chmod(0o555)
    locked = os.access(parent, os.W_OK) and subprocess.run(["chattr", "+i", str(parent)], capture_output=True)
    try:
        if os.access(parent, os.W_OK) and (not locked or locked.returncode):
            pytest.skip("this user writes into read-only folders and cannot make one immutable")
        before, seen = _triton_view(repo), []

        def look(step, done=None, total=None):
            seen.append((step, _triton_view(repo)))
            if step == "writing the repository" and len(seen) < 4:
                raise KeyboardInterrupt  # the first write is stopped half-way

        with pytest.raises(KeyboardInterrupt):
            write_repository(model, repo, progress=look)
        assert _triton_view(repo) == before
        write_repository(model, repo, progress=look)
        after = _triton_view(repo)
        assert after != before and sorted(p.name for p in parent.iterdir()) == ["repo"]
        for step, view in seen:  # the model folder is there early, but no version before it is whole
            assert view in (before, after, {**before, Path("dyn"): None}), step
        assert f"make {parent} writable" in caplog.text
    finally:
        if locked:
            subprocess.run(["chattr", "-i", str(parent)], check=True)
        parent.chmod(0o755)


def test_a_move_into_place_that_fails_puts_back_the_models_already_moved(tiny_onnx, tmp_path):
    import shutil

    from trtflow.serve.repo import RepoOptions, write_ensemble

    repo = tmp_path / "repo"
    write_ensemble(tiny_onnx, repo, RepoOptions(name="cls", task="classify"))
    shutil.rmtree(repo / "cls")  # the ensemble itself is new to the next write; its three steps are replaced
    beside = sorted(tmp_path.iterdir())
    before = {p.relative_to(repo): p.read_bytes() for p in repo.rglob("*") if p.is_file()}

    def race(step, done=None, total=None):
        if step == "writing the pre and post steps":  # something else puts a folder where a config goes
            (repo / "cls_post" / "config.pbtxt").unlink()
            (repo / "cls_post" / "config.pbtxt").mkdir()
            (repo / "cls_post" / "config.pbtxt" / "theirs.txt").write_text("not ours")

    with pytest.raises(OSError):  # moved third of five: the model step and the pre step are in place by then
        write_ensemble(tiny_onnx, repo, RepoOptions(name="cls", task="classify", overwrite=True, instances=2),
                       progress=race)
    after = {p.relative_to(repo): p.read_bytes() for p in repo.rglob("*") if p.is_file()}
    before[Path("cls_post/config.pbtxt/theirs.txt")] = before.pop(Path("cls_post/config.pbtxt")) and b"not ours"
    assert after == before  # the steps' versions and configs as they were, the ensemble not written
    assert not [p for p in repo.rglob(".*")] and sorted(tmp_path.iterdir()) == beside


def test_an_atomic_write_commits_on_success_and_rolls_back_on_an_exception(tmp_path):
    from trtflow.serve.repo.atomic import AtomicWrite

    repo = tmp_path / "repo"
    with pytest.raises(KeyboardInterrupt):
        with AtomicWrite() as staging:
            (staging.prepare(repo / "m", 1, False) / "model.onnx").write_bytes(b"onnx")
            staging.write_config(repo / "m", 'name: "m"\n')
            raise KeyboardInterrupt
    assert list(repo.iterdir()) == [] and sorted(tmp_path.iterdir()) == [repo]
    with AtomicWrite() as staging:
        (staging.prepare(repo / "m", 1, False) / "model.onnx").write_bytes(b"onnx")
        staging.write_config(repo / "m", 'name: "m"\n')
    assert (repo / "m" / "1" / "model.onnx").read_bytes() == b"onnx"
    assert (repo / "m" / "config.pbtxt").read_text() == 'name: "m"\n' and sorted(tmp_path.iterdir()) == [repo]


KILLED_WRITE = """
import os, signal, sys
from trtflow.serve.repo import RepoOptions, write_repository

def stop(step, done=None, total=None):
    if step == "writing the repository":  # the version is staged, nothing moved into place yet
        os.kill(os.getpid(), signal.SIGKILL)

write_repository(sys.argv[1], sys.argv[2], RepoOptions(overwrite=True, version=int(sys.argv[3])), progress=stop)
"""


@pytest.mark.parametrize("case", ["new model", "new version"])
def test_what_a_killed_write_left_is_removed_by_the_next_write(tmp_path, case):
    """A write killed with SIGKILL left its hidden staging folder beside the repository or in the model
    folder for good; Triton never sees it, and the next write removes it (not a live writer's)."""
    import subprocess
    import sys

    from trtflow.serve.repo import RepoOptions, write_repository

    model, static = _dynamic_onnx(tmp_path / "dyn.onnx"), _static_onnx(tmp_path / "static.onnx")
    repo = tmp_path / "repo"
    write_repository(static, repo)
    if case == "new version":
        write_repository(model, repo)
    before = _triton_view(repo)
    killed = subprocess.run([sys.executable, "-c", KILLED_WRITE, str(model), str(repo), "2"],
                            cwd=Path(__file__).resolve().parents[1], capture_output=True, text=True, timeout=120)
    assert killed.returncode == -9, killed.stderr
    left = [*tmp_path.glob(".repo.writing-*"), *repo.rglob(".*")]
    assert len(left) == 1, left
    assert _triton_view(repo) == before  # Triton never sees it
    name = "static" if case == "new model" else "dyn"
    from trtflow.cache_dir import HOST

    live = [tmp_path / f".repo.writing-{HOST}-{os.getpid()}-x", repo / name / f".3.writing-{HOST}-{os.getpid()}"]
    for folder in live:  # a write still running (this process) keeps its folders
        folder.mkdir()
    write_repository(static if case == "new model" else model, repo, RepoOptions(name=name, overwrite=True, version=4))
    assert not any(p.exists() for p in left) and all(p.is_dir() for p in live)
    assert not [name for name in _triton_view(repo) if name.name.startswith(".")]


def test_a_version_a_killed_write_moved_aside_is_put_back_by_the_next_write(tmp_path):
    """Killed between moving version 1 aside and moving its replacement in: version 1 is missing
    until the next write puts it back (and drops the replacement it never moved in)."""
    import subprocess
    import sys

    from trtflow.serve.repo import RepoOptions, write_repository
    from trtflow.cache_dir import HOST

    model, repo = _dynamic_onnx(tmp_path / "dyn.onnx"), tmp_path / "repo"
    write_repository(model, repo)
    before = _triton_view(repo)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (repo / "dyn" / "1").rename(repo / "dyn" / f".1.replaced-{HOST}-{dead.pid}")
    (repo / "dyn" / f".1.writing-{HOST}-{dead.pid}").mkdir()
    (repo / "dyn" / f".config.pbtxt.{HOST}-{dead.pid}").write_text("half")
    write_repository(model, repo, RepoOptions(overwrite=True, version=2))
    after = _triton_view(repo)
    assert {p: v for p, v in after.items() if p.parts[1:2] != ("2",)} == before and (repo / "dyn" / "2").is_dir()
    assert not list(repo.rglob(".*"))


def test_only_this_hosts_killed_writes_are_removed(tmp_path):
    """A repository on NFS or a volume several containers mount has writers on other hosts, whose process
    ids mean nothing here: their staged folders and files (and older names, without a host) are kept;
    this host's, of a process that is gone, are removed."""
    import subprocess
    import sys

    from trtflow.serve.repo import RepoOptions, write_repository
    from trtflow.cache_dir import HOST

    model, repo = _dynamic_onnx(tmp_path / "dyn.onnx"), tmp_path / "repo"
    write_repository(model, repo)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    other = "elsewhere" if HOST != "elsewhere" else "other"
    theirs = [repo / "dyn" / f".2.writing-{other}-{dead.pid}", tmp_path / f".repo.writing-{other}-{dead.pid}-x",
              repo / "dyn" / f".2.writing-{dead.pid}", tmp_path / f".repo.writing-{dead.pid}-x"]
    mine = [repo / "dyn" / f".2.writing-{HOST}-{dead.pid}", tmp_path / f".repo.writing-{HOST}-{dead.pid}-x"]
    for folder in theirs + mine:
        folder.mkdir()
    (repo / "dyn" / f".config.pbtxt.{other}-{dead.pid}").write_text("half")
    (repo / "dyn" / f".config.pbtxt.{HOST}-{dead.pid}").write_text("half")
    write_repository(model, repo, RepoOptions(overwrite=True, version=3))
    assert all(p.is_dir() for p in theirs) and (repo / "dyn" / f".config.pbtxt.{other}-{dead.pid}").is_file()
    assert not any(p.exists() for p in mine) and not (repo / "dyn" / f".config.pbtxt.{HOST}-{dead.pid}").exists()
    assert (repo / "dyn" / "3").is_dir() and (repo / "dyn" / "1").is_dir()
