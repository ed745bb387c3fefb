"""Between ONNX protos and onnx-graphsurgeon graphs: typed import, export that keeps the model's metadata."""

from __future__ import annotations

import logging
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

from trtflow.deps import require
from trtflow.errors import GraphError
from trtflow.graph.io import save_onnx, serialized

log = logging.getLogger(__name__)


def infer_shapes(proto: Any, strict: bool = False) -> Any:
    """ONNX shape and type inference (data propagation on), returning a new proto.

    A model above protobuf's 2 GB limit cannot be inferred in memory: it is written to a temporary
    folder (``TMPDIR``), its weights in a data file beside it, and inferred there.

    Raises:
        GraphError: ``strict`` and inference found an inconsistency, or the temporary copy of a model
            above 2 GB could not be written.
    """
    import onnx

    try:
        data = serialized(proto)
        if data is None:
            return _infer_shapes_on_disk(proto, strict)
        return onnx.shape_inference.infer_shapes(data, check_type=strict, strict_mode=strict, data_prop=True)
    except OSError as exc:  # the temporary copy of a model above 2 GB could not be written
        if strict:
            raise GraphError(f"ONNX shape inference could not write the model to a temporary folder ({exc}); "
                             "set TMPDIR to a folder with room for it") from None
        log.warning("shapes not inferred: the model is above 2 GB and could not be written to a temporary "
                    "folder (%s); set TMPDIR to a folder with room for it", exc)
        return proto
    except Exception as exc:  # onnx raises InferenceError / ValidationError
        if strict:
            raise GraphError(f"ONNX shape inference failed: {exc}") from None
        log.debug("shape inference failed, keeping the model's own value_info: %s", exc)
        return proto


def _infer_shapes_on_disk(proto: Any, strict: bool) -> Any:
    """``infer_shapes`` through files, for a model protobuf cannot serialize in one piece."""
    import onnx

    with tempfile.TemporaryDirectory(prefix="trtflow-infer-") as folder:
        path = save_onnx(proto, Path(folder) / "model.onnx")  # the caller's proto keeps its weights
        out = Path(folder) / "inferred.onnx"
        onnx.shape_inference.infer_shapes_path(path, out, check_type=strict, strict_mode=strict, data_prop=True)
        return onnx.load(str(out))  # its weights read from the data file beside it


def import_graph(proto: Any, infer: bool = True):
    """An onnx-graphsurgeon Graph of ``proto``, with inferred types and shapes on its tensors."""
    gs = require("onnx_graphsurgeon", "graph edits")
    return gs.import_onnx(infer_shapes(proto) if infer else proto)


def export_graph(graph: Any, like: Any | None = None, clean: bool = True) -> Any:
    """The ONNX proto of ``graph`` (after ``cleanup().toposort()`` unless ``clean`` is False); with ``like``,
    its ir_version (IR 3 becomes 4 where the graph needs it) and the fields ``keep_model_info`` restores."""
    gs = require("onnx_graphsurgeon", "graph edits")
    if clean:
        graph.cleanup().toposort()
    proto = gs.export_onnx(graph)
    if like is not None:
        proto.ir_version = like.ir_version
        keep_model_info(proto, like)
    return proto


def keep_model_info(proto: Any, like: Any) -> Any:
    """Give ``proto`` (an edit of ``like``) the model's own fields back: producer, domain, model_version,
    doc strings (model and main graph) and metadata_props; an IR 3 model whose initializers are no longer
    all graph inputs becomes IR 4. Returns ``proto``, changed in place."""
    proto.producer_name = like.producer_name or proto.producer_name
    proto.producer_version = like.producer_version or proto.producer_version
    proto.domain = like.domain
    proto.model_version = like.model_version
    proto.doc_string = like.doc_string
    proto.graph.doc_string = proto.graph.doc_string or like.graph.doc_string
    del proto.metadata_props[:]
    proto.metadata_props.extend(like.metadata_props)
    return lift_ir3(proto)


def lift_ir3(proto: Any) -> Any:
    """IR 4 for an IR 3 ``proto`` whose initializers are not all graph inputs (IR 3 requires they are;
    edited graphs list only the real inputs). Returns ``proto``, changed in place."""
    if proto.ir_version < 4:
        inputs = {v.name for v in proto.graph.input}
        if any(init.name not in inputs for init in proto.graph.initializer):
            proto.ir_version = 4
    return proto


def onnx_opset(proto: Any, default: int = 0) -> int:
    """The model's ai.onnx opset version (``default`` when it imports none)."""
    return next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), default)


def op_counts(proto: Any) -> Counter:
    """How many nodes of each op type the main graph holds."""
    return Counter(n.op_type for n in proto.graph.node)


def tensor_types(proto: Any) -> dict[str, int]:
    """ONNX elem_type of every typed value in the graph: inputs, outputs, value_info, initializers."""
    types: dict[str, int] = {}
    g = proto.graph
    for v in (*g.input, *g.output, *g.value_info):
        if v.type.HasField("tensor_type") and v.type.tensor_type.elem_type:
            types[v.name] = v.type.tensor_type.elem_type
    for init in g.initializer:
        types[init.name] = init.data_type
    return types
