"""Verify a graph edit: ONNX Runtime outputs of the model before vs after, on random and given inputs.

Feeds are built from the *before* model's inputs: random values (seeded) and any arrays the caller
gives. Dynamic dims take the caller's shapes, else the after model's static dims of the same input,
else 1 for a leading (batch) dim. Inputs and outputs are matched by name; an edit that renames
them passes ``input_map`` / ``output_map`` (old -> new). Failure raises MismatchError carrying the
per-output table.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass, field
from typing import Any, Mapping

import numpy as np

from trtflow.compare.core import OutputDiff, Tolerances, compare_outputs
from trtflow.edits import fields
from trtflow.errors import MismatchError, UsageError
from trtflow.graph.io import onnx_specs
from trtflow.progress import Progress, report as progress_of
from trtflow.spec import Shape, TensorSpec, format_shape

log = logging.getLogger(__name__)


DEFAULT_ATOL = DEFAULT_RTOL = 1e-4  # tolerances of a VerifyConfig no edit has resolved


@dataclass(frozen=True)
class VerifyConfig:
    """How an edit is verified.

    Attributes:
        atol: absolute tolerance per element (None: the edit's default).
        rtol: relative tolerance per element (None: the edit's default).
        inputs: input name -> ``.npy`` / ``.npz`` file (or "random"), fed in addition to random values.
        shapes: concrete shapes for dynamic inputs, e.g. ``{"images": (1, 3, 640, 640)}``.
        seed: seed of the random feed.
        min_agreement: integer outputs (class ids) pass when this share of elements is equal.
        per_output_atol: output name -> absolute tolerance for that output only.
        per_output_rtol: output name -> relative tolerance for that output only.

    Raises:
        UsageError: a negative or non-finite tolerance, per-output tolerances that are not a dict
            output name -> tolerance, a min_agreement outside [0, 1], a bad shape, a non-integer seed.
    """

    atol: float | None = None
    rtol: float | None = None
    inputs: Mapping[str, str] = field(default_factory=dict)
    shapes: Mapping[str, Shape] = field(default_factory=dict)
    seed: int = 0
    min_agreement: float = 1.0  # integer outputs (class ids): share of equal elements needed
    per_output_atol: Mapping[str, float] = field(default_factory=dict)
    per_output_rtol: Mapping[str, float] = field(default_factory=dict)

    def __post_init__(self):
        for name in ("atol", "rtol"):
            if getattr(self, name) is not None:
                fields.set_field(self, name, fields.number(getattr(self, name), name, 0))
        _ = self.tolerances  # refuses per-output tolerances and min_agreement of the wrong type or range
        for name in ("per_output_atol", "per_output_rtol"):
            fields.set_field(self, name, dict(getattr(self, name)))
        if not isinstance(self.inputs, Mapping):
            raise UsageError(f"inputs: expected a dict input name -> .npy/.npz file, got {self.inputs!r}")
        fields.set_field(self, "inputs", {str(k): str(v) for k, v in self.inputs.items()})
        fields.set_field(self, "shapes", fields.shape_map(self.shapes, "shapes"))
        fields.set_field(self, "seed", fields.number(self.seed, "seed", 0, integer=True))

    def resolved(self, atol: float, rtol: float) -> "VerifyConfig":
        """This config with its unset tolerances taken from an edit's defaults."""
        return dataclasses.replace(self, atol=atol if self.atol is None else self.atol,
                                   rtol=rtol if self.rtol is None else self.rtol)

    @property
    def tolerances(self) -> Tolerances:
        return Tolerances(atol=DEFAULT_ATOL if self.atol is None else self.atol,
                          rtol=DEFAULT_RTOL if self.rtol is None else self.rtol, min_agreement=self.min_agreement,
                          per_output_atol=self.per_output_atol, per_output_rtol=self.per_output_rtol)


def run_ort(proto: Any, feed: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Outputs of ``proto`` on ``feed`` with ONNX Runtime on the CPU."""
    import onnxruntime

    from trtflow.backends.onnxruntime.runner import OrtEngine

    onnxruntime.set_default_logger_severity(3)  # graph-optimizer warnings are noise here
    with OrtEngine(proto, providers=("cpu",)) as engine:
        return engine.infer(dict(feed))


def feed_shapes(before: list[TensorSpec], after: list[TensorSpec] | None, shapes: Mapping[str, Shape],
                input_map: Mapping[str, str] | None = None, skip: str = "--no-verify") -> dict[str, Shape]:
    """A concrete shape for every input of the before model; ``skip`` names the flag that skips the run
    the shapes are for.

    Raises:
        UsageError: a dynamic dim (other than a leading batch dim) with no shape to take it from.
    """
    input_map = input_map or {}
    after_by_name = {s.name: s for s in after or []}
    out: dict[str, Shape] = {}
    for spec in before:
        if spec.name in shapes:
            out[spec.name] = tuple(shapes[spec.name])
            continue
        other = after_by_name.get(input_map.get(spec.name, spec.name))
        dims = []
        for i, d in enumerate(spec.shape):
            if isinstance(d, int):
                dims.append(d)
            elif other is not None and other.rank == spec.rank and isinstance(other.shape[i], int):
                dims.append(other.shape[i])
            elif i == 0:
                dims.append(1)
            else:
                example = format_shape(x if isinstance(x, int) else 1 for x in spec.shape)
                raise UsageError(
                    f"input '{spec.name}' has dynamic dims {spec.describe_shape()}; verification needs a concrete "
                    f"shape: give --shapes {spec.name}:{example} (with real sizes), or {skip}"
                )
        out[spec.name] = tuple(dims)
    return out


def build_feeds(before: Any, after: Any | None, config: VerifyConfig, input_map: Mapping[str, str] | None = None,
                skip: str = "--no-verify") -> list[tuple[str, dict[str, np.ndarray]]]:
    """Labelled feeds for the before model: one random, plus one from the given files when any;
    ``skip`` names the flag that skips the run they are for (in the message asking for --shapes)."""
    from trtflow.errors import ModelLoadError
    from trtflow.feeds import build_feed, load_array, random_feed, split_npz

    b_in, _ = onnx_specs(before)
    a_in = onnx_specs(after)[0] if after is not None else None
    given = {k: v for k, v in config.inputs.items() if v != "random"}
    shapes = dict(config.shapes)
    for name, path in given.items():  # a given .npy or .npz[:KEY] fixes its input's shape
        if name in shapes:
            continue
        try:
            if split_npz(path)[0].suffix.lower() == ".npy":
                shapes[name] = np.load(path, mmap_mode="r").shape
            else:
                shapes[name] = load_array(path, name).shape
        except (OSError, ValueError, ModelLoadError):
            pass  # build_feed reports the unreadable file
    feeds = []
    if given:
        feed = build_feed(b_in, given, feed_shapes(b_in, a_in, shapes, input_map, skip), config.seed)
        feeds.append(("given", feed))
        shapes.update({k: v.shape for k, v in feed.items()})  # random values in the given shapes
    shapes = feed_shapes(b_in, a_in, shapes, input_map, skip)
    feeds.append((f"random(seed={config.seed})", random_feed(b_in, shapes, config.seed)))
    return feeds


def _to_after_feed(feed: Mapping[str, np.ndarray], after_inputs: list[TensorSpec],
                   input_map: Mapping[str, str]) -> dict[str, np.ndarray]:
    specs = {s.name: s for s in after_inputs}
    out = {}
    for name, value in feed.items():
        new = input_map.get(name, name)
        if new not in specs:
            continue
        dtype = specs[new].dtype
        out[new] = value.astype(dtype) if value.dtype.name != dtype and dtype.startswith("float") else value
    return out


def diff_table(diffs: list[OutputDiff], label: str = "") -> str:
    """Plain-text per-output table, for error messages and logs."""
    head = f"{'output':<28} {'shape':<16} {'max_abs':>10} {'max_rel':>10} {'mean_abs':>10} {'fail%':>7} {'atol':>8} {'rtol':>8}  ok"
    lines = [f"feed {label}:" if label else "", head]
    for d in diffs:
        lines.append(
            f"{d.name[:28]:<28} {format_shape(d.shape) or 'scalar':<16} {d.max_abs:>10.3g} {d.max_rel:>10.3g} "
            f"{d.mean_abs:>10.3g} {100 * d.fail_fraction:>6.2f}% {d.atol:>8.2g} {d.rtol:>8.2g}  "
            f"{'yes' if d.passed else 'NO'}{'  ' + d.note if d.note else ''}"
        )
    return "\n".join(line for line in lines if line)


def compare_models(
    before: Any,
    after: Any,
    feeds: list[tuple[str, dict[str, np.ndarray]]],
    tolerances: Tolerances,
    input_map: Mapping[str, str] | None = None,
    output_map: Mapping[str, str] | None = None,
    after_feeds: list[dict[str, np.ndarray]] | None = None,
    what: str = "the edited model",
    progress: Progress | None = None,
    subset: bool = False,
) -> dict:
    """Run both models on each feed and compare same-named outputs.

    Args:
        before, after: ONNX protos.
        feeds: labelled feeds of the before model.
        tolerances: per-element tolerances.
        input_map, output_map: old name -> new name, for edits that rename.
        after_feeds: the after model's feeds when they are not the before feeds renamed/cast
            (e.g. raw frames for embedded preprocessing), one per entry of ``feeds``.
        what: how the failure message names the after model.
        progress: told before each feed runs.
        subset: compare only the outputs ``after`` has (``before`` exposes more, as extract's probe);
            otherwise an output of ``before`` missing from ``after`` fails.

    Returns:
        ``{"passed": True, "atol", "rtol", "runs": [{"feed", "outputs": [OutputDiff dicts]}],
        "max_abs": {output: worst}, "mean_abs": {output: worst}}``.

    Raises:
        MismatchError: an output out of tolerance (the message holds the per-output tables).
    """
    progress = progress_of(progress)
    input_map = dict(input_map or {})
    output_map = dict(output_map or {})
    back = {new: old for old, new in output_map.items()}
    after_inputs = onnx_specs(after)[0]
    runs, tables, passed, integer_failed = [], [], True, False
    worst_max: dict[str, float] = {}
    worst_mean: dict[str, float] = {}
    for k, (label, feed) in enumerate(feeds):
        progress(f"verifying on {label}", k, len(feeds))
        ref = run_ort(before, feed)
        a_feed = after_feeds[k] if after_feeds is not None else _to_after_feed(feed, after_inputs, input_map)
        got = {back.get(n, n): v for n, v in run_ort(after, a_feed).items()}
        if subset:
            ref = {n: v for n, v in ref.items() if n in got}
        diffs = compare_outputs(ref, got, tolerances)
        for d in diffs:
            worst_max[d.name] = max(worst_max.get(d.name, 0.0), d.max_abs)
            worst_mean[d.name] = max(worst_mean.get(d.name, 0.0), d.mean_abs)
        runs.append({"feed": label, "outputs": [d.to_dict() for d in diffs]})
        tables.append(diff_table(diffs, label))
        passed &= all(d.passed for d in diffs)
        integer_failed = integer_failed or any(not d.passed and d.agreement is not None for d in diffs)
        log.debug("verify %s\n%s", label, tables[-1])
    result = {"passed": bool(passed), "atol": tolerances.atol, "rtol": tolerances.rtol, "runs": runs,
              "max_abs": worst_max, "mean_abs": worst_mean}
    if not passed:
        raise MismatchError(
            f"{what} differs from the original beyond atol={tolerances.atol:g}, rtol={tolerances.rtol:g} "
            "(ONNX Runtime, before vs after):\n" + "\n".join(tables)
            + ("\nInteger outputs are judged by exact agreement: lower --min-agreement (e.g. 0.99) if a few "
               "differing class ids are acceptable" if integer_failed else
               "\nLoosen --atol/--rtol if these errors are acceptable")
            + ", or skip with --no-verify.",
            report=result,
        )
    return result


def verify_edit(before: Any, after: Any, config: VerifyConfig | None = None,
                report: Mapping[str, Any] | None = None, progress: Progress | None = None) -> dict:
    """The default verification of an edit: before vs after on random and given inputs.

    Args:
        before, after: ONNX protos.
        config: tolerances, inputs, shapes and seed (None: the defaults).
        report: the edit's report; ``input_map`` / ``output_map`` (old -> new names) match renamed I/O.
        progress: told before each feed runs.

    Raises:
        UsageError: a dynamic dim without a shape. MismatchError: an output out of tolerance.
    """
    config = config or VerifyConfig()
    report = report or {}
    input_map = report.get("input_map") or {}
    feeds = build_feeds(before, after, config, input_map)
    return compare_models(before, after, feeds, config.tolerances, input_map, report.get("output_map"),
                          progress=progress)
