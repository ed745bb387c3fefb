"""raw_head: the tensors to cut at (extract's warning, TensorRT-RTX's NMS fix) name the raw detection head."""

from tests.models.detection import export_head, export_ssd, tiny_ssd_priors
from trtflow.edits.nms import NmsOptions, add_nms
from trtflow.edits.extract import ExtractOptions, extract_subgraph
from trtflow.graph.nms_head import raw_head


def test_ssd_head_is_loc_and_conf_not_the_image(tmp_path):
    """The priors read the image's size: the walk back from the boxes ended at the image input."""
    model = export_ssd(tmp_path / "ssd.onnx")
    new, _ = add_nms(str(model), NmsOptions("ssd", priors=tiny_ssd_priors(), check_format=False))
    assert raw_head(new) == ["loc", "conf"]
    cut, _ = extract_subgraph(new, ExtractOptions(outputs=tuple(raw_head(new))))
    assert [o.name for o in cut.graph.output] == ["loc", "conf"]
    assert "NonMaxSuppression" not in {n.op_type for n in cut.graph.node}


def test_yolo_head_is_named_once(tmp_path):
    model = export_head(tmp_path / "y8.onnx", "yolov8")
    new, _ = add_nms(str(model), NmsOptions("yolov8", check_format=False))
    assert raw_head(new) == ["output0"]
