"""The guides' workflows as examples: each script in examples/ runs here on the CPU (ONNX Runtime;
TensorRT-RTX builds where installed) and checks its own results."""

from __future__ import annotations

import importlib.util
import time
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def _load(path: Path):
    spec = importlib.util.spec_from_file_location(f"example_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(autouse=True)
def _own_cache(tmp_path, monkeypatch):
    """Engines the examples build go to a cache of the test's own."""
    monkeypatch.setenv("TRTFLOW_CACHE_DIR", str(tmp_path / "cache"))


def _run(name: str, tmp_path: Path, capsys) -> tuple[dict, str]:
    module = _load(EXAMPLES / name / f"{name}.py")
    start = time.perf_counter()
    report = module.run(tmp_path / "out")
    seconds = time.perf_counter() - start
    out = capsys.readouterr().out
    with capsys.disabled():
        print(f"\nexample {name}: {seconds:.1f} s")
    return report, out


def _rtx() -> bool:
    return importlib.util.find_spec("tensorrt_rtx") is not None or importlib.util.find_spec("tensorrt") is not None


def test_quickstart(tmp_path, capsys):
    report, out = _run("quickstart", tmp_path, capsys)
    assert report["classifier"]["predictions"] == [32, 1000]
    assert report["classifier"]["fp16_top1_agreement"] >= 0.9
    assert report["segmentation"]["class_map"] == [1, 1, 1026, 1282] and report["segmentation"]["pixel_agreement"] == 1.0
    assert "trtflow trtexec --shapes=input:1x3x1026x1282 --loadEngine=fcn-resnet101.engine" in out
    if _rtx():
        assert report["classifier"]["engines_built"] == {"fp32": True, "fp16": True}
        assert report["segmentation"]["engine_built"] is True


def test_detector(tmp_path, capsys):
    report, out = _run("detector", tmp_path, capsys)
    assert report["images"] == 6 and report["checked"] >= 1
    assert report["nms_outputs"]["outputs"] == ["num_detections", "boxes", "scores", "classes"]
    assert "trtflow trtexec --onnx=detector_b4_nms.onnx" in out
    if _rtx():
        assert report["engine_built"] is True


def test_cuda_python(tmp_path, capsys):
    report, out = _run("cuda_python", tmp_path, capsys)
    assert report["batches"] == [1, 4, 8] and report["split"] == [8, 4]
    assert "--maxShapes=input:8x3x512x512" in out
    if _rtx():
        assert report["engine_built"] is True


def test_camera(tmp_path, capsys):
    pytest.importorskip("av")
    pytest.importorskip("retinaface")
    report, out = _run("camera", tmp_path, capsys)
    assert report["frames_in"] == report["frames_out"] == 16 and report["frames_with_faces"] >= 14
    assert "trtflow video /dev/video0" in out


def test_bmf_module(tmp_path, capsys):
    report, out = _run("bmf_module", tmp_path, capsys)
    if report["face"] is not None:
        assert report["face"]["frames"] == 6 and all(n >= 1 for n in report["face"]["detections"])
    if report["sr"] is not None:
        assert report["sr"]["out_shape"] == [128, 128, 3]
    if _rtx():
        assert report["engines_built"] == {"face": True, "sr": True}
    assert "trtflow.integrations.bmf.TrtflowFaceDetect" in out
