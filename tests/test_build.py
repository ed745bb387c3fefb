"""ONNX -> TensorRT builds, for real, with the installed flavor (TensorRT-RTX builds on the CPU)."""

from __future__ import annotations

import argparse
import json

import pytest

from tests.conftest import call_cli
from tests.trt_models import MB_PROFILES, mobilenet_onnx, nms_model, retinaface_bytes, unsupported_model
from trtflow.backends.tensorrt.config import BuildConfig, hardware_level, parse_mem_pool_size, parse_size
from trtflow.backends.tensorrt.profiles import complete_profiles
from trtflow.cli.options import profiles_of
from trtflow.errors import BuildError, UsageError
from trtflow.spec import TensorSpec, make_profile

@pytest.fixture(scope="module")
def mobilenet(models_dir):
    return mobilenet_onnx(models_dir / "mobilenet_v2.onnx")


@pytest.fixture(scope="module")
def mobilenet_build(flavor, mobilenet):
    from trtflow.backends.tensorrt import build_engine

    return build_engine(mobilenet, BuildConfig(profiles=MB_PROFILES))


# -- plain-Python pieces ---------------------------------------------------------------------

@pytest.mark.parametrize(
    "text, expected",
    [("4096", 4096 * 2**20), ("1G", 2**30), ("512K", 512 * 2**10), ("100B", 100), ("1.5M", 3 * 2**19)],
)
def test_sizes_use_trtexec_units(text, expected):
    assert parse_size(text) == expected


def test_mem_pool_size_parsing():
    assert parse_mem_pool_size("workspace:4096,tacticSharedMem:48K") == {"workspace": 4096 * 2**20, "tacticSharedMem": 48 * 2**10}
    for bad in ("workspace", "wrkspace:10", "workspace:ten"):
        with pytest.raises(UsageError):
            parse_mem_pool_size(bad)


def test_hardware_levels():
    assert hardware_level("ampere+") == "AMPERE_PLUS"
    assert hardware_level("sameComputeCapability") == "SAME_COMPUTE_CAPABILITY"
    with pytest.raises(UsageError, match="ampere"):
        hardware_level("hopper+")


def _spec(name, *shape):
    return TensorSpec(name, "float32", tuple(shape))


def test_batch_profile_is_inferred_and_reported():
    profiles, notes = complete_profiles([_spec("x", "batch", 3, 224, 224)], [], max_batch=16)
    assert profiles[0].min["x"] == (1, 3, 224, 224) and profiles[0].max["x"] == (16, 3, 224, 224)
    assert len(notes) == 1 and "'x'" in notes[0] and "1..16" in notes[0]


def test_non_batch_dynamic_dim_needs_shapes():
    with pytest.raises(UsageError) as info:
        complete_profiles([_spec("image", "batch", 3, "height", "width")], [])
    msg = str(info.value)
    assert "'image'" in msg and "dim 2" in msg and "'height'" in msg and "--minShapes image:" in msg


def test_missing_input_takes_shared_dim_from_given_one():
    inputs = [_spec("a", "batch", 8), _spec("b", "batch", 4)]
    given = [make_profile({"a": (2, 8)}, {"a": (4, 8)}, {"a": (6, 8)})]
    profiles, notes = complete_profiles(inputs, given)
    assert profiles[0].bounds("b").max == (6, 4) and profiles[0].bounds("b").min == (2, 4)
    assert "'b'" in notes[0]


def test_given_profile_checked_against_model():
    inputs = [_spec("x", "batch", 3, 16, 16)]
    with pytest.raises(UsageError, match="fixes at 3"):
        complete_profiles(inputs, [make_profile({"x": (1, 4, 16, 16)})])
    with pytest.raises(UsageError, match="unknown input"):
        complete_profiles(inputs, [make_profile({"y": (1, 3, 16, 16)})])
    assert complete_profiles([_spec("s", 1, 3)], []) == ([], [])


def test_repeated_shape_flags_make_profiles_as_in_trtexec():
    ns = argparse.Namespace(
        shapes=None, profile=None,
        minShapes=["x:1x3", "x:9x3"], optShapes=["x:4x3", "x:16x3"], maxShapes=["x:8x3", "x:32x3"],
    )
    profiles = profiles_of(ns)
    assert [p.max["x"] for p in profiles] == [(8, 3), (32, 3)]
    merged = profiles_of(argparse.Namespace(shapes=None, profile=None, minShapes=["a:1x3", "b:1x4"], optShapes=None, maxShapes=None))
    assert len(merged) == 1 and set(merged[0].min) == {"a", "b"}


# -- real builds -----------------------------------------------------------------------------

def test_mobilenet_two_profiles(mobilenet_build, flavor):
    r = mobilenet_build
    assert r.flavor == flavor.name and r.version == flavor.version
    assert r.engine_bytes == len(r.plan) > 100_000
    assert len(r.profiles) == 2 and r.notes == []
    (inp,) = r.inputs
    assert inp.name == "input" and inp.shape == ("batch", 3, 224, 224)
    assert inp.bounds.min == (1, 3, 224, 224) and inp.bounds.max == (32, 3, 224, 224)
    assert [o.name for o in r.outputs] == ["logits"] and r.outputs[0].shape == ("batch", 1000)


def test_fp16_on_strongly_typed_flavor_converts_the_onnx(flavor, mobilenet, mobilenet_build):
    from trtflow.backends.tensorrt import build_engine

    if not flavor.always_strongly_typed:
        pytest.skip(f"{flavor.label} takes --fp16 as a builder flag")
    r = build_engine(mobilenet, BuildConfig(profiles=MB_PROFILES, fp16=True))
    assert r.precision["strongly_typed"] and r.precision["builder_flags"] == []
    assert "converted to FP16" in r.precision["path"]
    assert r.precision["fp16_conversion"]["converted_nodes"] > 50
    assert r.inputs[0].dtype == "float32"  # keep_io_types
    assert r.engine_bytes < 0.75 * mobilenet_build.engine_bytes  # FP16 weights


@pytest.mark.parametrize("flag", ["int8", "bf16", "best"])
def test_flags_a_strongly_typed_flavor_cannot_honour(flavor, tiny_onnx, flag):
    from trtflow.backends.tensorrt import build_engine

    if not flavor.always_strongly_typed:
        pytest.skip(f"{flavor.label} has precision builder flags")
    with pytest.raises(UsageError) as info:
        build_engine(tiny_onnx, BuildConfig(**{flag: True}))
    assert f"--{flag}" in str(info.value) and ("--fp16" in str(info.value))


def test_retinaface_dynamic_height_width(flavor, models_dir):
    from trtflow.backends.tensorrt import build_engine

    data = retinaface_bytes()
    with pytest.raises(UsageError, match="height"):
        build_engine(data, BuildConfig())
    profile = make_profile({"input": (1, 3, 320, 320)}, {"input": (1, 3, 640, 640)}, {"input": (2, 3, 1024, 1024)})
    r = build_engine(data, BuildConfig(profiles=[profile]))
    assert [o.name for o in r.outputs] == ["loc", "conf", "landmarks"]
    assert r.inputs[0].shape == ("batch_size", 3, "height", "width") and r.engine_bytes > 1_000_000


def test_unsupported_nodes_are_all_named(flavor, models_dir):
    from trtflow.backends.tensorrt import build_engine

    model = unsupported_model(models_dir / "unsupported.onnx")
    with pytest.raises(BuildError) as info:
        build_engine(model)
    failures = info.value.failures
    assert [(f["node"], f["op"]) for f in failures] == [("unique_0", "Unique"), ("unique_1", "Unique")]
    assert all("plugin" in f["fix"] and "surgeon extract" in f["fix"] for f in failures)
    assert "unique_0" in str(info.value) and "unique_1" in str(info.value)


def test_nms_fails_on_rtx_with_the_fix(flavor, models_dir):
    from trtflow.backends.tensorrt import build_engine

    model = nms_model(models_dir / "nms.onnx")
    if not flavor.is_rtx:
        r = build_engine(model)  # full TensorRT maps ONNX NMS to its NMS layer
        assert r.outputs[0].shape[0] != 3
        return
    with pytest.raises(BuildError) as info:
        build_engine(model)
    (failure,) = info.value.failures
    assert failure["node"] == "nms_0" and failure["op"] == "NonMaxSuppression"
    assert "no runners" in failure["reason"]
    assert "surgeon extract" in failure["fix"] and "decode_detections" in failure["fix"]


def test_timing_cache_file(flavor, tiny_onnx, tmp_path, caplog):
    from trtflow.backends.tensorrt import build_engine

    cache = tmp_path / "timing.cache"
    r = build_engine(tiny_onnx, BuildConfig(timing_cache_file=str(cache), builder_optimization_level=1,
                                            mem_pool_size={"workspace": 2**28}))
    assert r.engine_bytes > 0
    if flavor.is_rtx:  # TensorRT-RTX has no timing cache: said, not silently dropped
        assert not cache.exists() and "timingCacheFile" in caplog.text
    else:
        assert cache.stat().st_size > 0


# -- CLI (in-process) ------------------------------------------------------------------------

@pytest.fixture
def cache_env(tmp_path, monkeypatch):
    """An empty engine cache for the CLI builds of one test."""
    monkeypatch.setenv("TRTFLOW_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_cli_build_json_sidecar_and_engine_cache(flavor, tiny_onnx, tmp_path, cache_env):
    plan = tmp_path / "tiny.plan"
    args = ["build", str(tiny_onnx), "--minShapes", "x:1x3x16x16", "--optShapes", "x:2x3x16x16",
            "--maxShapes", "x:4x3x16x16", "--memPoolSize", "workspace:256", "--json"]
    proc = call_cli(*args, "--saveEngine", str(plan))
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["flavor"] == flavor.name and report["engine_bytes"] == plan.stat().st_size
    assert report["build_seconds"] > 0 and report["precision"]["path"]
    assert report["profiles"] == [{"x": {"min": [1, 3, 16, 16], "opt": [2, 3, 16, 16], "max": [4, 3, 16, 16]}}]
    side = json.loads((tmp_path / "tiny.plan.json").read_text())
    assert side["plan_sha256"] == report["plan_sha256"] and side["config"]["mem_pool_size"] == {"workspace": 256 * 2**20}
    assert report["cache"]["hit"] is False and (cache_env / "engines" / f"{report['cache']['key']}.plan").exists()
    again = call_cli(*args, "-o", str(tmp_path / "again.plan"))  # same model and flags: taken from the cache
    assert again.returncode == 0, again.stderr
    second = json.loads(again.stdout)
    assert second["cache"] == {**report["cache"], "hit": True, "note": second["cache"]["note"]}
    assert (tmp_path / "again.plan").read_bytes() == plan.read_bytes()
    fresh = json.loads(call_cli(*args, "--out", str(tmp_path / "fresh.plan"), "--no-cache").stdout)
    assert fresh["cache"]["hit"] is False and fresh["cache"]["key"] is None
    table = call_cli(*args[:-1], "-o", str(tmp_path / "t.plan"))
    assert table.returncode == 0 and "taken from the engine cache" in table.stdout


def test_no_cache_build_records_the_digest_the_cache_records(flavor, tiny_onnx, tmp_path, cache_env):
    """--no-cache wrote the hash of the .onnx file alone: for a model with external weights that is not
    what the engine cache records (its weights are part of the digest)."""
    import json

    import onnx

    path = tmp_path / "ext" / "model.onnx"
    path.parent.mkdir()
    onnx.save_model(onnx.load(str(tiny_onnx)), str(path), save_as_external_data=True, location="model.onnx.data",
                    size_threshold=0)
    args = ["build", str(path), "--shapes", "x:2x3x16x16", "--json"]
    assert call_cli(*args, "-o", str(tmp_path / "cached.plan")).returncode == 0
    assert call_cli(*args, "-o", str(tmp_path / "fresh.plan"), "--no-cache").returncode == 0
    cached, fresh = (json.loads((tmp_path / f"{n}.plan.json").read_text()) for n in ("cached", "fresh"))
    assert fresh["onnx_sha256"] == cached["onnx_sha256"]


def test_cli_build_prints_the_inferred_profile(flavor, tiny_onnx, tmp_path, cache_env, caplog):
    proc = call_cli("build", str(tiny_onnx), "--saveEngine", str(tmp_path / "t.plan"))
    assert proc.returncode == 0, proc.stderr
    assert "inferred 1x3x16x16 .. 16x3x16x16" in caplog.text


@pytest.mark.parametrize(
    "args, words",
    [
        (["--shapes", "x:1xx3"], "bad shape"),
        (["--memPoolSize", "workspace:lots"], "bad size"),
        (["--hardwareCompatibilityLevel", "hopper"], "ampere+"),
        (["--plugins", "/nonexistent/libplugin.so"], "plugin library not found"),
        (["--fp16", "--stronglyTyped", "--int8"], "Q/DQ"),
    ],
)
def test_cli_build_bad_flags_exit_2_one_line(flavor, tiny_onnx, tmp_path, args, words, cache_env):
    proc = call_cli("build", str(tiny_onnx), "--saveEngine", str(tmp_path / "t.plan"), *args)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and words in lines[0] and lines[0].startswith("trtflow build: error:")


def test_cli_build_missing_file(tmp_path):
    proc = call_cli("build", str(tmp_path / "nope.onnx"), "--saveEngine", str(tmp_path / "t.plan"))
    assert proc.returncode == 2
    (line,) = proc.stderr.strip().splitlines()
    assert line.startswith(f"trtflow build: error: no such file: {tmp_path / 'nope.onnx'}")
