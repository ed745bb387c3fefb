"""Triton model configurations (``config.pbtxt``) built as Triton's own ``ModelConfig`` protobuf.

The configuration starts from the same JSON model config ``trtflow serve`` answers on
``/v2/models/{m}/config`` (``protocol.model_config``), is parsed into
``tritonclient.grpc.model_config_pb2.ModelConfig`` (unknown fields or enum values fail here),
gains what only a repository needs (platform parameters, optimization profiles, instance
placement) and is printed with protobuf's text format. ``validate_pbtxt`` parses the text back
with the same message type before anything is written.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

from trtflow.deps import require
from trtflow.errors import UsageError
from trtflow.serve.protocol import model_config
from trtflow.spec import TensorSpec

BACKENDS = {"tensorrt": "tensorrt", "onnxruntime": "onnxruntime", "python": "python"}
KINDS = {"cpu": "KIND_CPU", "gpu": "KIND_GPU"}


@dataclass
class ConfigSpec:
    """What goes into one ``config.pbtxt``.

    Attributes:
        name: the model's name in the repository (its folder name).
        backend: "tensorrt", "onnxruntime" or "python".
        inputs, outputs: tensor specs; with ``max_batch > 0`` dim 0 is the batch and is left out.
        max_batch: Triton's ``max_batch_size``; 0 means the model takes no batch dim.
        instances: ``instance_group.count``.
        kind: "cpu" or "gpu" (``KIND_CPU`` / ``KIND_GPU``).
        gpus: GPU ids for ``KIND_GPU`` instances (empty: all GPUs).
        dynamic_batching: add a ``dynamic_batching`` block (only when ``max_batch > 0``).
        max_queue_delay_us: ``dynamic_batching.max_queue_delay_microseconds``.
        preferred_batch_sizes: ``dynamic_batching.preferred_batch_size``.
        profiles: TensorRT optimization profile indices each instance may use (plans only).
        parameters: string parameters (``parameters { key: ... value { string_value: ... } }``).
        default_model_filename: the model file inside the version folder.
    """

    name: str
    backend: str
    inputs: Sequence[TensorSpec]
    outputs: Sequence[TensorSpec]
    max_batch: int = 0
    instances: int = 1
    kind: str = "cpu"
    gpus: Sequence[int] = ()
    dynamic_batching: bool = True
    max_queue_delay_us: int = 0
    preferred_batch_sizes: Sequence[int] = ()
    profiles: Sequence[int] = ()
    parameters: Mapping[str, str] = field(default_factory=dict)
    default_model_filename: str = ""


def protobuf_modules():
    """``(model_config_pb2, json_format, text_format)``, from tritonclient and protobuf."""
    pb2 = require("tritonclient.grpc.model_config_pb2", "trtflow triton-repo (Triton's ModelConfig)")
    from google.protobuf import json_format, text_format

    return pb2, json_format, text_format


def batch_dim_mismatch(inputs: Sequence[TensorSpec], outputs: Sequence[TensorSpec]) -> str | None:
    """Why dim 0 of these tensors is not one batch dim, or None when it is.

    Triton batches a model only when dim 0 of every input and every output is the same dynamic dim (its
    own auto-complete asks the same). Dims are compared by name; an unnamed dynamic dim ("?", or
    "TENSOR_dim0" where the model names none) may be that dim, as it may to Triton, which sees only -1.
    """
    batch = None
    for kind, tensors in (("input", inputs), ("output", outputs)):
        for t in tensors:
            d = t.shape[0] if t.rank else None
            if not isinstance(d, str):
                return f"{kind} '{t.name}' has shape {t.describe_shape()}: " + \
                    ("a scalar" if d is None else f"dim 0 is fixed at {d}")
            if d in ("?", f"{t.name}_dim0"):
                continue
            if batch is None:
                batch = (d, f"{kind} '{t.name}'")
            elif d != batch[0]:
                return (f"{kind} '{t.name}' has shape {t.describe_shape()}: dim 0 is '{d}', not '{batch[0]}' "
                        f"(dim 0 of {batch[1]})")
    return None


def check_batch_dims(spec: ConfigSpec) -> None:
    """Refuse a scalar tensor (config.pbtxt has no dims for it, so Triton refuses the model), and a
    ``max_batch > 0`` for tensors whose dim 0 cannot be a batch.

    Raises:
        UsageError: a scalar tensor; with ``max_batch > 0``, a tensor with nothing but dim 0, or dim 0
            that is not one dynamic batch dim on every input and output (``batch_dim_mismatch``).
    """
    for t in list(spec.inputs) + list(spec.outputs):
        if t.rank == 0:  # Triton: "model output 's' must specify 'dims'"
            raise UsageError(f"tensor '{t.name}' is a scalar, which config.pbtxt cannot describe (Triton needs dims); "
                             "export the model with it as shape [1] (e.g. reshape(1) in forward)")
    if spec.max_batch <= 0:
        return
    for t in list(spec.inputs) + list(spec.outputs):
        if t.rank == 1:  # Triton: "model output 's' must specify 'dims'"
            raise UsageError(f"tensor '{t.name}' has shape {t.describe_shape()}: nothing but the batch dim, which "
                             "leaves config.pbtxt no dims and Triton refuses the model; use --max-batch 0")
    problem = batch_dim_mismatch(spec.inputs, spec.outputs)
    if problem:
        raise UsageError(f"{problem}, so Triton cannot batch requests into it (it batches only when dim 0 of every "
                         "input and output is one dynamic batch dim). Export the model with that batch dim first "
                         "on every tensor, or use --max-batch 0")


def check_preferred_batch_sizes(spec: ConfigSpec) -> None:
    """Refuse preferred batch sizes Triton refuses at load (each must be 1 ..= ``max_batch_size``), or
    preferred sizes and a queue delay that would be dropped (no dynamic batcher is written).

    Raises:
        UsageError: naming the sizes and the fix.
    """
    if spec.max_queue_delay_us and (spec.max_batch <= 0 or not spec.dynamic_batching):
        why = f"max_batch_size {spec.max_batch}" if spec.max_batch <= 0 else "--no-dynamic-batching"
        raise UsageError(f"--max-queue-delay-us {spec.max_queue_delay_us} for '{spec.name}', which has no dynamic "
                         f"batcher ({why}): drop --max-queue-delay-us, or batch the model")
    sizes = list(spec.preferred_batch_sizes)
    if not sizes:
        return
    if spec.max_batch <= 0:
        raise UsageError(f"preferred batch sizes {sizes} for '{spec.name}', which has max_batch_size 0 (no batch dim, "
                         "no dynamic batcher): drop --preferred-batch-sizes, or give a batched model a --max-batch")
    if not spec.dynamic_batching:
        raise UsageError(f"preferred batch sizes {sizes} with --no-dynamic-batching: they belong to the dynamic "
                         "batcher; drop one of the two")
    bad = [s for s in sizes if not 1 <= s <= spec.max_batch]
    if bad:
        raise UsageError(f"preferred batch sizes {bad} of '{spec.name}' are outside 1..{spec.max_batch}: each must be "
                         f">= 1 and at most max_batch_size {spec.max_batch} (Triton refuses the model otherwise)")


def build_config(spec: ConfigSpec) -> Any:
    """The ``ModelConfig`` message for ``spec``.

    Raises:
        UsageError: an unknown backend or instance kind, a field Triton's schema refuses, or batch sizes
            Triton refuses (``check_batch_dims``, ``check_preferred_batch_sizes``).
        MissingDependencyError: tritonclient is not installed.
    """
    pb2, json_format, _ = protobuf_modules()
    if spec.backend not in BACKENDS:
        raise UsageError(f"unknown Triton backend '{spec.backend}'; choose one of {', '.join(BACKENDS)}")
    if spec.kind not in KINDS:
        raise UsageError(f"unknown instance kind '{spec.kind}'; choose cpu or gpu")
    if spec.gpus and spec.kind != "gpu":  # Triton refuses GPUs on a KIND_CPU instance group
        raise UsageError(f"GPUs {list(spec.gpus)} given for the cpu instances of '{spec.name}': add --kind gpu "
                         "(kind='gpu'), or drop --gpus")
    check_batch_dims(spec)
    check_preferred_batch_sizes(spec)
    doc = model_config(
        spec.name, spec.inputs, spec.outputs, spec.max_batch,
        delay_us=spec.max_queue_delay_us, preferred=spec.preferred_batch_sizes,
        instances=spec.instances, kind=KINDS[spec.kind], backend=BACKENDS[spec.backend],
    )
    doc.pop("platform", None)
    if spec.max_batch <= 0 or not spec.dynamic_batching:
        doc.pop("dynamic_batching", None)
    try:
        config = json_format.ParseDict(doc, pb2.ModelConfig())
    except json_format.ParseError as exc:
        raise UsageError(f"Triton's ModelConfig refuses the configuration of '{spec.name}': {exc}") from None
    group = config.instance_group[0]
    if spec.kind == "gpu" and spec.gpus:
        group.gpus.extend(int(g) for g in spec.gpus)
    if spec.profiles:
        group.profile.extend(str(p) for p in spec.profiles)
    for key, value in spec.parameters.items():
        config.parameters[key].string_value = str(value)
    if spec.default_model_filename:
        config.default_model_filename = spec.default_model_filename
    return config


def to_pbtxt(config: Any) -> str:
    """The text format Triton reads from ``config.pbtxt``."""
    _, _, text_format = protobuf_modules()
    return text_format.MessageToString(config)


def validate_pbtxt(text: str) -> Any:
    """Parse ``config.pbtxt`` text with Triton's ``ModelConfig``; return the message.

    Raises:
        UsageError: the text does not parse, or it lacks a name, inputs or outputs.
    """
    pb2, _, text_format = protobuf_modules()
    config = pb2.ModelConfig()
    try:
        text_format.Parse(text, config)
    except text_format.ParseError as exc:
        raise UsageError(f"config.pbtxt does not parse as Triton's ModelConfig: {exc}") from None
    missing = [f for f in ("name", "input", "output") if not getattr(config, f)]
    if missing:
        raise UsageError(f"config.pbtxt lacks {', '.join(missing)}")
    if not (config.backend or config.platform):
        raise UsageError("config.pbtxt names neither a backend nor a platform")
    return config


def config_dict(config: Any) -> dict:
    """The message as JSON-style data (what ``--json`` prints)."""
    _, json_format, _ = protobuf_modules()
    return json.loads(json_format.MessageToJson(config, preserving_proto_field_name=True))
