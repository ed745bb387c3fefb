"""Load and save ONNX models with errors that name the fix, and read their I/O specs."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Optional, Union

from trtflow.arrays import ONNX_DTYPES
from trtflow.errors import ModelLoadError, UsageError
from trtflow.spec import TensorSpec

ModelLike = Union[str, os.PathLike, bytes, Any]  # path, serialized bytes or onnx.ModelProto

TWO_GB = 2**31 - 1


def load_onnx(model: ModelLike, load_external_data: bool = True):
    """Load an ONNX model from a path, bytes or a ModelProto.

    Raises:
        ModelLoadError: the file is missing, empty, truncated or not ONNX.
    """
    import onnx
    from google.protobuf.message import DecodeError

    if isinstance(model, onnx.ModelProto):
        return model
    if isinstance(model, (bytes, bytearray)):
        try:
            proto = onnx.load_from_string(bytes(model))
        except (DecodeError, ValueError) as exc:
            raise ModelLoadError(f"the bytes given are not an ONNX model ({exc})") from None
        return _check_nonempty(proto, "the bytes given")
    if not isinstance(model, (str, os.PathLike)):
        raise ModelLoadError(
            f"an ONNX model is a path, bytes or an onnx.ModelProto; got {type(model).__name__}"
        )
    path = Path(model)
    if not path.exists():
        raise ModelLoadError(f"no such file: {path}. Check the path, or export a model with `trtflow export`.")
    if path.is_dir():
        raise ModelLoadError(f"{path} is a folder; give the path of an .onnx file")
    if path.stat().st_size == 0:
        raise ModelLoadError(f"{path} is empty (0 bytes); re-export or re-download the model")
    try:
        proto = onnx.load(str(path), load_external_data=load_external_data)
    except onnx.checker.ValidationError as exc:  # external data missing or outside the model's folder
        raise ModelLoadError(
            f"{path}: its weights are stored in external data that cannot be read ({exc}). Keep the data "
            "file(s) beside the .onnx file under the name the model records, or re-export it as one file"
        ) from None
    except PermissionError as exc:
        raise ModelLoadError(f"{path} cannot be read ({exc.strerror}); check its permissions") from None
    except (DecodeError, ValueError, RuntimeError, OSError) as exc:
        if "external data" in str(exc).lower():  # the .onnx parsed; its data file is short or damaged
            raise ModelLoadError(
                f"{path}: its weights are stored in external data that cannot be read ({exc}). The data file "
                "beside it is truncated or from another export: copy it again with the .onnx file, or re-export"
            ) from None
        raise ModelLoadError(
            f"{path} is not a readable ONNX model ({type(exc).__name__}: {exc}). {_guess_format(path)}"
        ) from None
    if not proto.opset_import:
        raise ModelLoadError(
            f"{path} parsed but declares no opset: it is truncated or not an ONNX model. {_guess_format(path)}"
        )
    return _check_nonempty(proto, str(path))


# a plan: what works from run/bench/video/serve (--engine) and from the commands that read ONNX only
_PLAN_FIX = ("run it with --engine tensorrt where a command takes --engine (run, bench, video, serve) or "
             "trtflow.load(path, engine=\"tensorrt\"); commands that read ONNX (inspect, surgeon, build, "
             "check, tune) need the .onnx model it was built from")

# leading bytes of formats people pass by mistake -> what the file is and the fix
_MAGIC = {
    b"\x89PNG": "it is a PNG image, not a model; give the path of an .onnx file",
    b"\xff\xd8\xff": "it is a JPEG image, not a model; give the path of an .onnx file",
    b"PK\x03\x04": "it is a zip archive (a PyTorch .pt/.pth checkpoint?); export the module with `trtflow export`",
    b"\x80": "it looks like a pickle (a PyTorch checkpoint?); export the module with `trtflow export`",
    b"ftrt": "it is a TensorRT plan (engine), not ONNX; " + _PLAN_FIX,
    b"vtrt": "it is a TensorRT-RTX plan (engine), not ONNX; " + _PLAN_FIX,
}
_PLAN_SUFFIXES = (".engine", ".plan", ".trt")
_PT2 = ("it is a .pt2 package (AOTInductor), not ONNX: the torch engine runs it (--engine torch where a command "
        "takes --engine: run, bench, video, serve; trtflow.load(path, engine=\"torch\")); commands that read ONNX "
        "(inspect, surgeon, build, check, tune) need the module exported to ONNX (`trtflow export`)")


def _guess_format(path: Path) -> str:
    """One sentence on what a file that failed to parse probably is, and the fix."""
    try:
        with open(path, "rb") as f:
            head = f.read(512)
    except OSError:
        return "It cannot be read back; check the file and its permissions."
    if head.startswith(b"PK\x03\x04") and path.suffix.lower() == ".pt2":  # a zip, like a .pt checkpoint
        return f"Its name and first bytes say {_PT2}."
    for magic, what in _MAGIC.items():
        if head.startswith(magic):
            return f"Its first bytes say {what}."
    if path.suffix.lower() in _PLAN_SUFFIXES:
        return f"Its name says it is a TensorRT plan (engine), not ONNX; {_PLAN_FIX}."
    try:
        head.decode("utf-8")
        if all(c.isprintable() or c.isspace() for c in head.decode("utf-8")):
            return "It is a text file, not a binary ONNX model; give the path of the .onnx file."
    except UnicodeDecodeError:
        pass
    return "The file may be truncated or another format; re-export or re-download it (`trtflow export`)."


def _check_nonempty(proto, what: str):
    if not proto.graph.node and not proto.graph.output:
        raise ModelLoadError(
            f"{what} parsed as protobuf but holds no ONNX graph (no nodes, no outputs); "
            "it is probably not an ONNX file"
        )
    return proto


def serialized(proto) -> Optional[bytes]:
    """The bytes of ``proto``, or None above protobuf's 2 GB limit (it must then go to files, its weights
    as external data). ``ByteSize()`` would serialize it as well (upb, protobuf's default, has no other
    way to size a message): test the size of these bytes instead of serializing twice."""
    try:
        data = proto.SerializeToString()
    except ValueError:  # protobuf's cpp backend refuses a message above 2 GB ("exceeds maximum protobuf size")
        return None
    return data if len(data) < TWO_GB else None


def check_onnx_out(path: Path) -> None:
    """Refuse an output path that is a folder or lies under a file (``from_torch`` asks it before its work).

    Raises:
        UsageError: naming the path and the fix.
    """
    if path.is_dir():
        raise UsageError(f"{path} is a folder; give the path of the .onnx file to write, e.g. {path / 'model.onnx'}")
    for parent in path.parents:
        if parent.exists():
            if not parent.is_dir():
                raise UsageError(f"cannot write {path}: {parent} is a file, not a folder; choose another output path")
            return


def save_onnx(proto, path: str | os.PathLike) -> Path:
    """Write one self-contained file (external data only above protobuf's 2 GB limit).

    Raises:
        UsageError: ``path`` is a folder or lies under a file (``check_onnx_out``).
        OSError: the file cannot be written (no temporary file is left behind, ``proto`` keeps its weights).
    """
    path = Path(path)
    check_onnx_out(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = serialized(proto)
    if data is not None:
        tmp = path.with_name(path.name + ".tmp")
        try:
            tmp.write_bytes(data)
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)
        return path
    import onnx

    # onnx appends to an existing data file and moves the weights out of the proto it saves: write
    # both files into a fresh folder beside the target, move them over it, and read the weights back
    folder = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    try:
        data = path.name + ".data"
        try:
            onnx.save_model(proto, str(folder / path.name), save_as_external_data=True, location=data)
        finally:  # also when the save failed part way (a full disk): the caller's proto stays whole
            _weights_back(proto, folder)
        os.replace(folder / data, path.with_name(data))
        os.replace(folder / path.name, path)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return path


def _weights_back(proto, folder: Path) -> None:
    """Undo ``onnx.save_model``'s moving the weights of ``proto`` out to ``folder``: the tensors it wrote
    are read back, those it only marked as external (before a failure) are unmarked."""
    import onnx
    from onnx.external_data_helper import _get_all_tensors, load_external_data_for_tensor, uses_external_data

    for tensor in _get_all_tensors(proto):
        if uses_external_data(tensor):
            if not tensor.HasField("raw_data"):  # written out (one that was not still has its bytes)
                load_external_data_for_tensor(tensor, str(folder))
            tensor.data_location = onnx.TensorProto.DEFAULT
            del tensor.external_data[:]


def value_spec(value) -> TensorSpec:
    """The spec of one ONNX ValueInfo (a value of unknown rank reads as a scalar: see ``is_unranked``)."""
    ttype = value.type.tensor_type
    dims: list = []
    for i, d in enumerate(ttype.shape.dim):
        if d.HasField("dim_value"):
            dims.append(int(d.dim_value))
        else:
            dims.append(d.dim_param or f"{value.name}_dim{i}")
    return TensorSpec(value.name, ONNX_DTYPES.get(ttype.elem_type, f"onnx:{ttype.elem_type}"), tuple(dims))


def graph_inputs(proto) -> list:
    """The graph inputs of ``proto`` a feed gives: the ValueInfos of ``graph.input`` less the initializers
    also listed there (IR 3 lists every weight among the inputs; it has a value, it is not fed)."""
    inits = {i.name for i in proto.graph.initializer}
    return [v for v in proto.graph.input if v.name not in inits]


def unranked_inputs(proto) -> list[str]:
    """The graph inputs of ``proto`` (initializers aside) that are tensors with no shape in the model:
    their rank is unknown."""
    return [v.name for v in graph_inputs(proto) if is_unranked(v)]


def is_unranked(value) -> bool:
    """A tensor value with no shape in the model (unknown rank, not a scalar)."""
    return value.type.HasField("tensor_type") and not value.type.tensor_type.HasField("shape")


def give_shape(value, shape) -> None:
    """Give a value of unknown rank (no shape field) the static ``shape`` (rank 0 for ())."""
    value.type.tensor_type.shape.SetInParent()
    for size in shape:
        value.type.tensor_type.shape.dim.add().dim_value = int(size)


def onnx_specs(proto) -> tuple[list[TensorSpec], list[TensorSpec]]:
    """Input and output specs of an ONNX graph (initializers listed as inputs are skipped).

    Raises:
        ModelLoadError: a tensor input has no shape (unknown rank): a spec would make it a scalar.
    """
    import onnx

    inputs = graph_inputs(proto)
    for v in inputs:
        if is_unranked(v):
            elem = onnx.TensorProto.DataType.Name(v.type.tensor_type.elem_type)
            raise ModelLoadError(
                f"input '{v.name}' has no shape in the model: its rank is unknown (not a scalar), and trtflow "
                "needs each input's rank to check feeds and make shapes. Give the input a shape: "
                f"`trtflow surgeon fix-shapes MODEL --shape {v.name}:DIMS -o FIXED.onnx` (DIMS like 1x3x640x640), "
                "or re-export the model with one, or replace the graph input with "
                f"onnx.helper.make_tensor_value_info('{v.name}', TensorProto.{elem}, [...]) holding one size or dim "
                "name per axis"
            )
    inputs = [value_spec(v) for v in inputs]
    outputs = [value_spec(v) for v in proto.graph.output]
    return inputs, outputs
