"""Each surgeon edit's command-line flags, and their conversion into the edit's options dataclass.

``EDIT_FLAGS[name] = (add_flags(group), options_from(namespace))``. The edit modules know nothing
of argparse: they take ``FixShapesOptions``, ``Fp16Options``, ...; string flags ("x:1x3x224x224",
"old=new", "1/255") are parsed here, with the library's string parsers.
"""

from __future__ import annotations

import argparse
from typing import Any, Callable

from trtflow.errors import UsageError


def _simplify_flags(group) -> None:
    from trtflow.edits.simplify import PASSES

    group.add_argument("--skip", action="append", choices=PASSES, help="skip one onnxslim pass (repeatable)")
    group.add_argument("--size-threshold", type=int, default=None, metavar="BYTES",
                       help="do not fold constants larger than this")


def _simplify_options(ns: argparse.Namespace):
    from trtflow.edits.simplify import SimplifyOptions

    return SimplifyOptions(skip=tuple(ns.skip or ()), size_threshold=ns.size_threshold)


def _fix_shapes_flags(group) -> None:
    group.add_argument("--shape", action="append", metavar="NAME:1x3x640x640",
                       help="static shape of one input (repeatable)")
    group.add_argument("--dim", action="append", metavar="NAME=SIZE",
                       help="size of a named dynamic dim in every input using it, e.g. batch=1 (repeatable)")
    group.add_argument("--no-fold", dest="fold", action="store_false", help="skip constant folding")


def _fix_shapes_options(ns: argparse.Namespace):
    from trtflow.edits.shapes import FixShapesOptions, parse_dims
    from trtflow.spec import parse_shapes

    return FixShapesOptions(shapes=parse_shapes(ns.shape), dims=parse_dims(ns.dim), fold=ns.fold)


def _preprocess_flags(group) -> None:
    from trtflow.edits.preprocess import LAYOUTS

    group.add_argument("--layout", choices=LAYOUTS, default="nhwc", help="layout of the raw frames (default: nhwc)")
    group.add_argument("--scale", default="1/255", help="multiplier applied first (default: 1/255)")
    group.add_argument("--mean", metavar="M[,M,M]", help="per-channel mean, after scaling, model channel order")
    group.add_argument("--std", metavar="S[,S,S]", help="per-channel std, after scaling")
    order = group.add_mutually_exclusive_group()
    order.add_argument("--bgr-to-rgb", dest="channel_order", action="store_const", const="bgr-to-rgb",
                       help="frames are BGR (OpenCV), the model wants RGB")
    order.add_argument("--rgb-to-bgr", dest="channel_order", action="store_const", const="rgb-to-bgr",
                       help="frames are RGB, the model wants BGR")
    group.add_argument("--resize", metavar="HxW", help="raw frame size; frames are resized (bilinear) to the model's")
    group.add_argument("--image-input", metavar="NAME",
                       help="the model input taking images (default: the only 4-D one)")
    group.add_argument("--dtype", default="uint8", metavar="DTYPE",
                       help="dtype of the raw frames: uint8 (default), or float32/float16 for float NHWC frames "
                       "(with --scale 1 when they are already in the model's range)")


def _preprocess_options(ns: argparse.Namespace):
    from trtflow.edits.fields import parse_floats, parse_number
    from trtflow.edits.preprocess import PreprocessOptions
    from trtflow.spec import parse_shape

    size = None
    if ns.resize:
        size = parse_shape(ns.resize)
        if len(size) != 2:
            raise UsageError(f"bad --resize '{ns.resize}': expected the raw frame size HxW, e.g. 720x1280")
    return PreprocessOptions(layout=ns.layout, scale=parse_number(ns.scale, "--scale"),
                             mean=parse_floats(ns.mean, "--mean"), std=parse_floats(ns.std, "--std"),
                             channel_order=ns.channel_order or "keep", input_size=size, input_name=ns.image_input,
                             dtype=ns.dtype)


def _nms_flags(group) -> None:
    from trtflow.edits.nms import PLUGINS
    from trtflow.vision.formats import FORMATS
    from trtflow.vision.priors import PRESETS

    group.add_argument("--format", required=True, choices=FORMATS, help="layout of the raw head outputs")
    group.add_argument("--score-thr", type=float, default=0.25, help="keep scores above this (default: %(default)s)")
    group.add_argument("--iou-thr", type=float, default=0.45, help="suppress IoU above this (default: %(default)s)")
    group.add_argument("--max-det", type=int, default=100,
                       help="detections per image, outputs padded to it (default: %(default)s)")
    group.add_argument("--class-agnostic", action="store_true", help="NMS across classes on each anchor's best class")
    group.add_argument("--boxes", metavar="NAME", help="raw output with the boxes (yolo head, loc for retinaface/ssd)")
    group.add_argument("--scores", metavar="NAME", help="raw output with the scores (conf for retinaface/ssd)")
    group.add_argument("--landmarks", metavar="NAME", help="raw RetinaFace landmarks output")
    group.add_argument("--priors", metavar="PRESET|FILE.npy",
                       help=f"retinaface/ssd priors: {', '.join(PRESETS)} (computed in the graph from the input size) "
                            "or a .npy [A, 4] of normalized cx,cy,w,h (fixed input size); default: the format's preset")
    group.add_argument("--variances", default="0.1,0.2",
                       help="retinaface/ssd center,size variances (default: %(default)s)")
    group.add_argument("--plugin", choices=PLUGINS, default="none",
                       help="none: standard NonMaxSuppression; efficientnms: EfficientNMS_TRT node (TensorRT 10 only)")
    group.add_argument("--no-format-check", dest="check_format", action="store_false",
                       help="skip the check that the raw outputs fit --format (shapes and score ranges on one "
                            "ONNX Runtime run; priors count)")


def _nms_options(ns: argparse.Namespace):
    from trtflow.edits.fields import parse_floats
    from trtflow.edits.nms import NmsOptions

    variances = parse_floats(ns.variances, "--variances")
    if len(variances) != 2:
        raise UsageError(f"--variances '{ns.variances}': expected two numbers, e.g. 0.1,0.2")
    return NmsOptions(ns.format, ns.score_thr, ns.iou_thr, ns.max_det, ns.class_agnostic, boxes=ns.boxes,
                      scores=ns.scores, landmarks=ns.landmarks, priors=ns.priors, variances=variances, plugin=ns.plugin,
                      check_format=ns.check_format)


def _fp16_flags(group) -> None:
    group.add_argument("--keep-io-types", dest="keep_io_types", action=argparse.BooleanOptionalAction, default=True,
                       help="keep float32 model inputs/outputs (default: on)")
    group.add_argument("--block", action="append", metavar="OP[,OP]",
                       help="also keep these op types in FP32 (e.g. Resize)")
    group.add_argument("--allow", action="append", metavar="OP[,OP]",
                       help="convert these op types even though they are blocked by default")
    group.add_argument("--range-check", dest="range_check", action=argparse.BooleanOptionalAction, default=True,
                       help="run the FP32 model on the verification inputs (--input files and random) first "
                            "and keep in FP32 the nodes whose values exceed float16's range (default: on; "
                            "ONNX Runtime's CPU FP16 kernels compute in FP32, so the verification alone "
                            "does not see such overflows)")


def _fp16_options(ns: argparse.Namespace):
    from trtflow.edits.fp16 import Fp16Options

    return Fp16Options(keep_io_types=ns.keep_io_types, block=tuple(ns.block or ()), allow=tuple(ns.allow or ()),
                       range_check=ns.range_check)


def _quantize_flags(group) -> None:
    from trtflow.edits.quantize import METHODS

    group.add_argument("--calib-dir", metavar="DIR", help="calibration images (png/jpg) or .npy samples")
    group.add_argument("--calib-preprocess", metavar="SPEC",
                       help='image preprocessing, e.g. "resize=256,crop=224,mean=0.485,0.456,0.406,'
                            'std=0.229,0.224,0.225,layout=nchw" (keys: resize, crop, scale, mean, std, '
                            'layout, bgr)')
    group.add_argument("--method", choices=METHODS, default="percentile",
                       help="calibration method (default: percentile)")
    group.add_argument("--percentile", type=float, default=99.99, help="for --method percentile (default: 99.99)")
    group.add_argument("--per-channel", dest="per_channel", action=argparse.BooleanOptionalAction, default=True,
                       help="per-channel weight scales (default: on)")
    group.add_argument("--op-types", metavar="OP[,OP]", help="quantize only these op types (e.g. Conv,Gemm,MatMul)")
    group.add_argument("--exclude-nodes", metavar="NAME[,NAME]", help="nodes to keep in float")
    group.add_argument("--holdout", type=float, default=0.2,
                       help="held-back samples for the accuracy check: a fraction (<1) or a count (default: 0.2)")
    group.add_argument("--calib-limit", type=int, default=None, help="use at most this many samples")
    group.add_argument("--seed-calib", type=int, default=0, help="seed of the calibration/held-back split")
    group.add_argument("--max-rel-error", type=float, default=0.5,
                       help="fail when an output's mean abs error exceeds this fraction of its mean |FP32| "
                            "value (default: 0.5)")
    group.add_argument("--min-agreement", type=float, default=None,
                       help="fail when top-1 agreement with FP32 on a classifier output is below this (0..1)")
    group.add_argument("--no-preprocess", dest="preprocess", action="store_false",
                       help="skip ONNX Runtime's quantization pre-processing")


def _quantize_options(ns: argparse.Namespace):
    from trtflow.edits.quantize import QuantizeOptions

    if not ns.calib_dir:
        raise UsageError("quantize needs --calib-dir DIR (images with --calib-preprocess, or .npy files)")
    return QuantizeOptions(
        calib_dir=ns.calib_dir, calib_preprocess=ns.calib_preprocess, method=ns.method, percentile=ns.percentile,
        per_channel=ns.per_channel, op_types=ns.op_types, exclude_nodes=ns.exclude_nodes or (),
        preprocess=ns.preprocess, holdout=ns.holdout, calib_limit=ns.calib_limit, seed_calib=ns.seed_calib,
        max_rel_error=ns.max_rel_error, min_agreement=ns.min_agreement,
    )


def _rename_flags(group) -> None:
    group.add_argument("--rename-input", dest="rename_inputs", action="append", metavar="OLD=NEW",
                       help="rename a model input (repeatable)")
    group.add_argument("--rename-output", dest="rename_outputs", action="append", metavar="OLD=NEW",
                       help="rename a model output (repeatable)")
    # the old spellings: --output is refused with the new flag's name (--input gives verification inputs)
    group.add_argument("--output", dest="old_rename_outputs", action="append", help=argparse.SUPPRESS)


def _rename_options(ns: argparse.Namespace):
    from trtflow.edits.rename import RenameOptions
    from trtflow.spec import parse_pairs

    if ns.old_rename_outputs:
        raise UsageError(f"surgeon rename: --output {ns.old_rename_outputs[0]} is now spelled "
                         f"--rename-output {ns.old_rename_outputs[0]}")
    return RenameOptions(
        inputs=parse_pairs(ns.rename_inputs, "--rename-input", "OLD=NEW, e.g. --rename-input input.1=images"),
        outputs=parse_pairs(ns.rename_outputs, "--rename-output", "OLD=NEW, e.g. --rename-output 495=logits"))


def _extract_flags(group) -> None:
    group.add_argument("--inputs", metavar="A,B", help="tensors that become the inputs (default: the model's)")
    group.add_argument("--outputs", metavar="C,D", required=True, help="tensors that become the outputs")
    group.add_argument("--shape", action="append", metavar="NAME:1x3x640x640",
                       help="static shape of a new input whose rank shape inference cannot find (repeatable)")


def _extract_options(ns: argparse.Namespace):
    from trtflow.edits.extract import ExtractOptions
    from trtflow.spec import parse_shapes

    return ExtractOptions(outputs=ns.outputs, inputs=ns.inputs or (), shapes=parse_shapes(ns.shape))


EDIT_FLAGS: dict[str, tuple[Callable[[Any], None], Callable[[argparse.Namespace], Any]]] = {
    "simplify": (_simplify_flags, _simplify_options),
    "fix-shapes": (_fix_shapes_flags, _fix_shapes_options),
    "embed-preprocess": (_preprocess_flags, _preprocess_options),
    "add-nms": (_nms_flags, _nms_options),
    "fp16": (_fp16_flags, _fp16_options),
    "quantize": (_quantize_flags, _quantize_options),
    "rename": (_rename_flags, _rename_options),
    "extract": (_extract_flags, _extract_options),
}


def add_edit_flags(edit, group) -> None:
    """Add ``edit``'s own flags to ``group`` (an edit without CLI flags adds none)."""
    if edit.name in EDIT_FLAGS:
        EDIT_FLAGS[edit.name][0](group)


def options_from_flags(edit, ns: argparse.Namespace) -> Any:
    """The options dataclass of ``edit`` from its parsed flags.

    Raises:
        UsageError: a flag value the parsers or the options dataclass refuse.
    """
    if edit.name in EDIT_FLAGS:
        return EDIT_FLAGS[edit.name][1](ns)
    return edit.make_options()
