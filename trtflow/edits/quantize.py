"""``quantize``: INT8 post-training quantization with Q/DQ nodes, the way TensorRT reads them.

ONNX Runtime's ``quantize_static`` does the work: QDQ format, INT8 weights per output channel,
symmetric INT8 activations (zero point 0, what TensorRT's explicit quantization expects), ranges
calibrated with minmax, entropy or percentile on a calibration set. Samples are split: most
calibrate, the held-back rest measures the accuracy change against FP32 (top-1 agreement for
classifier-like outputs, max/mean absolute error of every output).
"""

from __future__ import annotations

import logging
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

import numpy as np

from trtflow.capture import capture_output
from trtflow.deps import require
from trtflow.edits import fields
from trtflow.edits.calibration import CalibrationSet, ImagePreprocess, load_calibration, parse_preprocess
from trtflow.edits.registry import Edit, register
from trtflow.edits.verify import VerifyConfig, run_ort
from trtflow.errors import GraphError, MismatchError, UsageError
from trtflow.graph.io import load_onnx
from trtflow.graph.ir import lift_ir3, onnx_opset
from trtflow.progress import Progress, report as progress_of

log = logging.getLogger(__name__)

METHODS = ("minmax", "entropy", "percentile")
HISTOGRAM_BINS = 2048  # TensorRT's entropy calibrator histogram
QUANTIZED_BINS = 128


@dataclass(frozen=True)
class QuantizeConfig:
    """How to quantize.

    Attributes:
        method: calibration method: "minmax", "entropy" or "percentile".
        percentile: the percentile kept by the "percentile" method.
        per_channel: per-output-channel weight scales (TensorRT's default for Conv/Gemm weights).
        symmetric_activations: zero point 0 for activations (TensorRT needs it).
        op_types: op types to quantize (None: every op ONNX Runtime can quantize).
        exclude_nodes: node names left in float.
        preprocess: run ONNX Runtime's quantization pre-processing (shape inference, fusions) first.
    """

    method: str = "percentile"
    percentile: float = 99.99
    per_channel: bool = True
    symmetric_activations: bool = True
    op_types: Sequence[str] | None = None
    exclude_nodes: Sequence[str] = field(default_factory=tuple)
    preprocess: bool = True

    def __post_init__(self):
        if self.method not in METHODS:
            raise UsageError(f"calibration method '{self.method}': choose one of {METHODS}")
        if not 0 < self.percentile <= 100:
            raise UsageError(f"percentile {self.percentile}: expected a value in (0, 100]")


class _Reader:
    """onnxruntime.quantization's CalibrationDataReader over a list of feeds."""

    def __init__(self, feeds: Sequence[Mapping[str, np.ndarray]]):
        self._iter: Iterator = iter(feeds)

    def get_next(self):
        return next(self._iter, None)

    def rewind(self) -> None:  # pragma: no cover - ORT calls it only for some methods
        pass


def _histogram_ranges(q, model: Path, tmp: Path, reader: _Reader, config: QuantizeConfig) -> Path:
    """Entropy / percentile ranges with TensorRT's histogram sizes, saved as ORT's calibration cache.

    quantize_static builds these calibrators with 128 bins for entropy, as many as it quantizes to,
    which leaves the KL search a single candidate (the min/max range); this uses 2048 bins.
    """
    from onnxruntime.quantization.calibrate import create_calibrator, save_tensors_data

    method = q.CalibrationMethod.Entropy if config.method == "entropy" else q.CalibrationMethod.Percentile
    options = {"symmetric": config.symmetric_activations, "num_bins": HISTOGRAM_BINS,
               "num_quantized_bins": QUANTIZED_BINS, "percentile": config.percentile}
    try:
        calibrator = create_calibrator(model, list(config.op_types or []), augmented_model_path=str(tmp / "augmented.onnx"),
                                       calibrate_method=method, extra_options=options)
        calibrator.collect_data(reader)
        ranges = calibrator.compute_data()
    except Exception as exc:  # ORT raises plain Exceptions from its calibrators
        raise GraphError(f"ONNX Runtime {config.method} calibration failed ({type(exc).__name__}: {exc})") from None
    path = tmp / "ranges.json"
    save_tensors_data(ranges, path)
    return path


def quantize_int8(proto: Any, calibration: Sequence[Mapping[str, np.ndarray]],
                  config: QuantizeConfig | None = None, progress: Progress | None = None) -> tuple[Any, dict]:
    """Quantize ``proto`` to INT8 Q/DQ, calibrating on ``calibration``.

    Args:
        proto: a float32 onnx.ModelProto, or a path or bytes of one.
        calibration: feeds (input name -> array with a batch dim), e.g. ``CalibrationSet.calib``.
        config: method and options.
        progress: told when calibration and quantization start.

    Returns:
        ``(new_proto, report)``: ``method``, ``calibration_samples``, ``quantized_ops`` (op type -> how many
        of its nodes read a dequantized tensor), ``qdq_nodes`` and the settings used.

    Raises:
        UsageError: an empty calibration set, or per-channel scales on a model below opset 13.
        GraphError: ONNX Runtime could not quantize the model.
    """
    import onnx

    config = config or QuantizeConfig()
    proto = load_onnx(proto)
    progress = progress_of(progress)
    if not calibration:
        raise UsageError("quantize needs calibration samples: give --calib-dir with images or .npy files")
    opset = onnx_opset(proto)
    if config.per_channel and opset < 13:  # ORT's quantizer writes the axis anyway: a model nothing loads
        raise UsageError(f"per-channel weight scales need ONNX opset >= 13 (DequantizeLinear's axis); the model "
                         f"has opset {opset}. Re-export it with --opset 13 or newer, or quantize per tensor with "
                         "--no-per-channel (per_channel=False)")
    q = require("onnxruntime.quantization", "INT8 quantization")
    method = {"minmax": q.CalibrationMethod.MinMax, "entropy": q.CalibrationMethod.Entropy,
              "percentile": q.CalibrationMethod.Percentile}[config.method]
    extra = {"ActivationSymmetric": config.symmetric_activations, "WeightSymmetric": True}
    if config.method == "percentile":
        extra["CalibPercentile"] = config.percentile
    # ORT's quantizer prints progress on stdout (kept off it for --json) and warns through the root logger
    quiet = capture_output(("root", "onnxruntime"), log=log)
    with tempfile.TemporaryDirectory(prefix="trtflow-quant-") as tmp, quiet:
        src = Path(tmp) / "float.onnx"
        src.write_bytes(proto.SerializeToString())
        if config.preprocess:
            pre = Path(tmp) / "pre.onnx"
            try:
                q.shape_inference.quant_pre_process(str(src), str(pre), skip_symbolic_shape=False)
                src = pre
            except Exception as exc:  # ORT's pre-processing is best effort
                log.warning("quantization pre-processing skipped: %s", exc)
        out = Path(tmp) / "int8.onnx"
        reader, cache = _Reader(list(calibration)), None
        progress(f"quantize: calibrating ({config.method}, {len(calibration)} samples)")
        if config.method != "minmax":
            cache = _histogram_ranges(q, src, Path(tmp), reader, config)
            reader = None
        try:
            q.quantize_static(
                str(src), str(out), reader, quant_format=q.QuantFormat.QDQ, calibration_cache_path=cache,
                op_types_to_quantize=list(config.op_types) if config.op_types else None,
                per_channel=config.per_channel, activation_type=q.QuantType.QInt8, weight_type=q.QuantType.QInt8,
                nodes_to_exclude=list(config.exclude_nodes), calibrate_method=method, extra_options=extra,
            )
        except Exception as exc:  # ORT raises plain Exceptions from its quantizers
            raise GraphError(f"ONNX Runtime could not quantize the model ({type(exc).__name__}: {exc})") from None
        new = lift_ir3(onnx.load(str(out)))  # the Q/DQ scales are initializers an IR 3 graph would list as inputs
    quantized: dict[str, int] = {}
    produced = {o: n for n in new.graph.node for o in n.output}
    for node in new.graph.node:
        if node.op_type in ("QuantizeLinear", "DequantizeLinear"):
            continue
        if any(produced.get(i) is not None and produced[i].op_type == "DequantizeLinear" for i in node.input):
            quantized[node.op_type] = quantized.get(node.op_type, 0) + 1
    report = {
        "method": config.method,
        "percentile": config.percentile if config.method == "percentile" else None,
        "calibration_samples": len(calibration),
        "per_channel": config.per_channel,
        "symmetric_activations": config.symmetric_activations,
        "quantized_ops": dict(sorted(quantized.items())),
        "qdq_nodes": sum(n.op_type in ("QuantizeLinear", "DequantizeLinear") for n in new.graph.node),
    }
    return new, report


def accuracy_report(before: Any, after: Any, samples: Sequence[Mapping[str, np.ndarray]]) -> dict:
    """FP32 vs INT8 on held-back samples: per-output errors and top-1 agreement of classifier-like outputs.

    Returns:
        ``{"samples", "outputs": {name: {"max_abs", "mean_abs", "mean_abs_reference", "relative_error",
        "top1_agreement" (2-D outputs with several classes only)}}}``.
    """
    ref_all: dict[str, list] = {}
    got_all: dict[str, list] = {}
    for feed in samples:
        for store, model in ((ref_all, before), (got_all, after)):
            for name, value in run_ort(model, feed).items():
                store.setdefault(name, []).append(np.atleast_1d(np.asarray(value, np.float64)))  # 0-d: concatenable
    outputs = {}
    for name, refs in ref_all.items():
        ref, got = np.concatenate(refs), np.concatenate(got_all[name])
        err = np.abs(ref - got)
        info = {"max_abs": float(err.max()), "mean_abs": float(err.mean()),
                "mean_abs_reference": float(np.abs(ref).mean())}
        info["relative_error"] = info["mean_abs"] / max(info["mean_abs_reference"], 1e-12)
        if ref.ndim == 2 and ref.shape[1] > 1:
            info["top1_agreement"] = float((ref.argmax(1) == got.argmax(1)).mean())
        outputs[name] = info
    return {"samples": len(samples), "outputs": outputs}


@dataclass(frozen=True)
class QuantizeOptions:
    """Options of the ``quantize`` edit: calibration set, method, and the accuracy limits.

    Attributes:
        calib_dir: folder of calibration images (png/jpg, with ``calib_preprocess``) or .npy/.npz samples.
        calib_preprocess: how images become inputs: an ``ImagePreprocess`` or its spec string,
            e.g. "resize=256,crop=224,mean=0.485,0.456,0.406,std=0.229,0.224,0.225,layout=nchw".
        method, percentile, per_channel, op_types, exclude_nodes, preprocess: as in ``QuantizeConfig``.
        holdout: held-back samples for the accuracy check: a fraction (< 1) or a count (>= 1).
        calib_limit: use at most this many samples (None: all).
        seed_calib: seed of the calibration/held-back split.
        max_rel_error: the verification fails when an output's mean abs error exceeds this
            fraction of its mean |FP32| value.
        min_agreement: the verification fails when top-1 agreement with FP32 on a classifier
            output is below this (0..1; None: not checked).
    """

    calib_dir: str | os.PathLike
    calib_preprocess: ImagePreprocess | str | None = None
    method: str = "percentile"
    percentile: float = 99.99
    per_channel: bool = True
    op_types: tuple[str, ...] | None = None
    exclude_nodes: tuple[str, ...] = ()
    preprocess: bool = True
    holdout: float = 0.2
    calib_limit: int | None = None
    seed_calib: int = 0
    max_rel_error: float = 0.5
    min_agreement: float | None = None

    def __post_init__(self):
        if not isinstance(self.calib_dir, (str, os.PathLike)) or not str(self.calib_dir):
            raise UsageError(f"quantize needs --calib-dir DIR (calib_dir= in Python: a folder), got {self.calib_dir!r}")
        if not isinstance(self.calib_preprocess, (ImagePreprocess, type(None))):
            fields.set_field(self, "calib_preprocess", parse_preprocess(str(self.calib_preprocess)))
        fields.set_field(self, "op_types", fields.names(self.op_types, "op_types") or None)
        fields.set_field(self, "exclude_nodes", fields.names(self.exclude_nodes, "exclude_nodes"))
        fields.set_field(self, "holdout", fields.number(self.holdout, "holdout", 0))
        if self.holdout >= 1 and self.holdout != int(self.holdout):
            raise UsageError(f"holdout is {self.holdout}: give a fraction below 1 or a whole count")
        if self.calib_limit is not None:
            fields.set_field(self, "calib_limit", fields.number(self.calib_limit, "calib_limit", 1, integer=True))
        fields.set_field(self, "seed_calib", fields.number(self.seed_calib, "seed_calib", 0, integer=True))
        fields.set_field(self, "max_rel_error", fields.number(self.max_rel_error, "max_rel_error", 0, low_open=True))
        if self.min_agreement is not None:
            fields.set_field(self, "min_agreement", fields.number(self.min_agreement, "min_agreement", 0, 1))
        fields.set_field(self, "per_channel", fields.boolean(self.per_channel, "per_channel"))
        fields.set_field(self, "preprocess", fields.boolean(self.preprocess, "preprocess"))
        fields.set_field(self, "percentile", fields.number(self.percentile, "percentile"))
        self.config()  # checks method and percentile

    def config(self) -> QuantizeConfig:
        """The ``QuantizeConfig`` of these options."""
        return QuantizeConfig(method=self.method, percentile=self.percentile,
                              per_channel=self.per_channel, op_types=self.op_types,
                              exclude_nodes=self.exclude_nodes, preprocess=self.preprocess)


def calibration_set(proto: Any, options: QuantizeOptions, progress: Progress | None = None) -> CalibrationSet:
    """The calibration/held-back split of ``options.calib_dir`` for ``proto``."""
    return load_calibration(proto, options.calib_dir, options.calib_preprocess, holdout=options.holdout,
                            limit=options.calib_limit, seed=options.seed_calib, progress=progress)


def quantize_model(proto: Any, options: QuantizeOptions, progress: Progress | None = None) -> tuple[Any, dict]:
    """The ``quantize`` edit: read the calibration set, split it, quantize on the calibration part.

    Args:
        proto: a float32 onnx.ModelProto, or a path or bytes of one.
        options: calibration folder, method and limits.
        progress: told as samples are read and as calibration runs.

    Returns:
        ``(new_proto, report)``: ``quantize_int8``'s report plus ``holdout_samples`` and ``source``.

    Raises:
        ModelLoadError: a missing folder or unreadable sample. UsageError: no samples.
        GraphError: ONNX Runtime could not quantize the model.
    """
    proto = load_onnx(proto)
    calib = calibration_set(proto, options, progress)
    new, report = quantize_int8(proto, calib.calib, options.config(), progress)
    report["holdout_samples"] = len(calib.holdout)
    report["source"] = calib.source
    return new, report


def verify_quantize(before: Any, after: Any, options: QuantizeOptions, verify_config: VerifyConfig | None = None,
                    feeds=None, progress: Progress | None = None) -> dict:
    """Accuracy change on the held-back calibration samples; fails past ``max_rel_error`` / ``min_agreement``.

    Args:
        before: the FP32 model. after: the INT8 model.
        options: the quantize options (calibration folder, split, limits).
        verify_config, feeds: unused (the held-back samples are the feeds).
        progress: told as samples are read.

    Raises:
        UsageError: no held-back samples. MismatchError: an output past the limits.
    """
    calib = calibration_set(before, options, progress)
    if not calib.holdout:
        raise UsageError(f"no held-back samples to measure accuracy on ({len(calib.calib)} samples, --holdout "
                         f"{options.holdout:g}); give more calibration samples or --no-verify")
    progress_of(progress)(f"quantize: FP32 vs INT8 on {len(calib.holdout)} held-back samples")
    result = accuracy_report(before, after, calib.holdout)
    failures = []
    for name, info in result["outputs"].items():
        if info["relative_error"] > options.max_rel_error:
            failures.append(f"{name}: mean abs error {info['mean_abs']:.4g} is {100 * info['relative_error']:.1f}% of "
                            f"the mean |FP32 output| (limit {100 * options.max_rel_error:g}%)")
        agree = info.get("top1_agreement")
        if agree is not None and options.min_agreement is not None and agree < options.min_agreement:
            failures.append(f"{name}: top-1 agreement {100 * agree:.1f}% < {100 * options.min_agreement:g}%")
    result.update(passed=not failures, max_rel_error=options.max_rel_error, min_agreement=options.min_agreement,
                  reference="the FP32 model on held-back calibration samples (ONNX Runtime)")
    result["max_abs"] = {n: i["max_abs"] for n, i in result["outputs"].items()}
    result["mean_abs"] = {n: i["mean_abs"] for n, i in result["outputs"].items()}
    if failures:
        raise MismatchError("INT8 model too far from FP32 on the held-back samples: " + "; ".join(failures)
                            + ". Try --method entropy or percentile, more calibration data, or --exclude-nodes "
                            "for sensitive layers.", report=result)
    return result


register(Edit(
    name="quantize",
    help="INT8 post-training quantization (QDQ, per-channel weights, symmetric activations) from a calibration set",
    options=QuantizeOptions,
    apply=quantize_model,
    verify=verify_quantize,
    wants=("progress",),
    verify_feeds=False,
))
