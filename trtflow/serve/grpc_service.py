"""``inference.GRPCInferenceService`` (KServe v2 / Triton gRPC) on grpc.aio, with the generated
classes tritonclient ships. Tensors travel as ``raw_input_contents`` / ``raw_output_contents``
(typed ``contents`` are accepted too); errors abort with the gRPC code of Triton's HTTP status."""

from __future__ import annotations

import asyncio
import logging
import math
import socket

import numpy as np

from trtflow.deps import require
from trtflow.errors import TrtflowError
from trtflow.serve import protocol
from trtflow.serve.protocol import InferRequest, ProtocolError, RequestedOutput

grpc = require("grpc", "trtflow serve (gRPC)")
pb = require("tritonclient.grpc.service_pb2", "trtflow serve (gRPC)")
pb_grpc = require("tritonclient.grpc.service_pb2_grpc", "trtflow serve (gRPC)")
config_pb = require("tritonclient.grpc.model_config_pb2", "trtflow serve (gRPC)")
json_format = require("google.protobuf.json_format", "trtflow serve (gRPC)")

log = logging.getLogger(__name__)

CODES = {400: grpc.StatusCode.INVALID_ARGUMENT, 404: grpc.StatusCode.NOT_FOUND,
         413: grpc.StatusCode.RESOURCE_EXHAUSTED, 503: grpc.StatusCode.UNAVAILABLE}
CONTENTS = {"BOOL": "bool_contents", "INT8": "int_contents", "INT16": "int_contents", "INT32": "int_contents",
            "INT64": "int64_contents", "UINT8": "uint_contents", "UINT16": "uint_contents", "UINT32": "uint_contents",
            "UINT64": "uint64_contents", "FP32": "fp32_contents", "FP64": "fp64_contents", "BYTES": "bytes_contents"}


def _param(p) -> object:
    return getattr(p, p.WhichOneof("parameter_choice")) if p.WhichOneof("parameter_choice") else None


def decode(request) -> InferRequest:
    """A ``ModelInferRequest`` -> the protocol's ``InferRequest``."""
    raw = request.raw_input_contents
    if raw and len(raw) != len(request.inputs):
        raise ProtocolError(f"the request has {len(request.inputs)} inputs but {len(raw)} raw_input_contents")
    inputs = {}
    for i, item in enumerate(request.inputs):
        shape = tuple(item.shape)
        protocol.no_shared_memory(item.parameters, "input", item.name)
        if item.name in inputs:
            raise ProtocolError(f"input '{item.name}' is given more than once")
        if raw:
            if item.HasField("contents"):  # which one holds the tensor? Triton refuses it too
                raise ProtocolError(f"input '{item.name}' has both typed contents and raw_input_contents; send "
                                    "each input one way (all inputs raw, or all in contents)")
            inputs[item.name] = protocol.array_from_raw(raw[i], item.datatype, shape, item.name)
        else:
            shape = protocol.request_shape(shape, item.name)  # as raw tensors: a negative dim is a 400
            datatype = item.datatype.upper()
            field = CONTENTS.get(datatype)
            if field is None:
                raise ProtocolError(f"input '{item.name}': datatype {item.datatype} needs raw_input_contents")
            values = getattr(item.contents, field)
            if datatype == "BYTES":
                arr = np.array(list(values), dtype=object)
            else:
                try:
                    arr = np.asarray(values, dtype=protocol.numpy_dtype(item.datatype))
                except (OverflowError, ValueError) as exc:  # 300 in int_contents of an INT8 input
                    raise ProtocolError(f"input '{item.name}': contents do not fit datatype {item.datatype}: {exc}") from None
            count = math.prod(shape)
            if arr.size != count:
                raise ProtocolError(f"input '{item.name}' has {arr.size} values; shape {list(shape)} needs {count}")
            inputs[item.name] = arr.reshape(shape)
    outputs = None
    if request.outputs:
        for o in request.outputs:
            protocol.no_shared_memory(o.parameters, "output", o.name)
        outputs = [RequestedOutput(o.name, True, protocol.class_count(_param(o.parameters["classification"]), o.name)
                                   if "classification" in o.parameters else 0) for o in request.outputs]
    return InferRequest(inputs, request.id, outputs, True)


def encode(model, outputs: dict, request: InferRequest):
    """Outputs -> a ``ModelInferResponse`` with raw output contents."""
    response = pb.ModelInferResponse(model_name=model.name, model_version=model.version, id=request.id)
    for want, arr in protocol.requested_outputs(outputs, request, model.batched, model.labels):
        response.outputs.add(name=want.name, datatype=protocol.triton_dtype(arr.dtype), shape=list(arr.shape))
        response.raw_output_contents.append(protocol.raw_from_array(arr))
    return response


class Service(pb_grpc.GRPCInferenceServiceServicer):
    """The gRPC face of a ``trtflow.serve.server.Server``."""

    def __init__(self, server):
        self.server = server

    async def _guard(self, context, fn):
        try:
            return await fn()
        except Exception as exc:  # a ProtocolError's status, 400 for bad input, else 500 (INTERNAL), as HTTP
            if not isinstance(exc, TrtflowError):
                log.exception("unhandled error on a gRPC request")
            status, message = protocol.error_status(exc)
            await context.abort(CODES.get(status, grpc.StatusCode.INTERNAL), message)

    async def ServerLive(self, request, context):
        return pb.ServerLiveResponse(live=True)

    async def ServerReady(self, request, context):
        return pb.ServerReadyResponse(ready=not self.server.draining)

    async def ModelReady(self, request, context):
        model = self.server.models.get(request.name)
        ready = model is not None and request.version in ("", model.version) and not self.server.draining
        return pb.ModelReadyResponse(ready=ready)

    async def ServerMetadata(self, request, context):
        return json_format.ParseDict(self.server.metadata(), pb.ServerMetadataResponse())

    async def ModelMetadata(self, request, context):
        async def run():
            meta = self.server.model(request.name, request.version).metadata()
            return json_format.ParseDict(meta, pb.ModelMetadataResponse())
        return await self._guard(context, run)

    async def ModelConfig(self, request, context):
        async def run():
            cfg = self.server.model(request.name, request.version).model_config(self.server.kind)
            return pb.ModelConfigResponse(config=json_format.ParseDict(cfg, config_pb.ModelConfig()))
        return await self._guard(context, run)

    async def ModelStatistics(self, request, context):
        async def run():
            await self.server.refresh_stats()
            stats = self.server.statistics(request.name or None, request.version or None)
            return json_format.ParseDict(stats, pb.ModelStatisticsResponse(), ignore_unknown_fields=True)
        return await self._guard(context, run)

    async def RepositoryIndex(self, request, context):
        return pb.RepositoryIndexResponse(models=[pb.RepositoryIndexResponse.ModelIndex(**m)
                                                  for m in self.server.repository_index()])

    async def _infer(self, request):
        model = self.server.model(request.model_name, request.model_version)
        decoded = decode(request)
        protocol.check_outputs(decoded, model.outputs)
        outputs = await self.server.infer(model.name, decoded.inputs)
        return encode(model, outputs, decoded)

    async def ModelInfer(self, request, context):
        return await self._guard(context, lambda: self._infer(request))

    async def ModelStreamInfer(self, request_iterator, context):
        """Bidirectional stream: requests run concurrently, responses come back as they finish."""
        done: asyncio.Queue = asyncio.Queue()
        pending = 0

        async def one(req):
            try:
                done.put_nowait(pb.ModelStreamInferResponse(infer_response=await self._infer(req)))
            except Exception as exc:  # noqa: BLE001 - every request gets its answer, or the stream never ends
                if not isinstance(exc, TrtflowError):
                    log.error("unhandled error on a gRPC stream request", exc_info=exc)
                # the id tells the client which request failed, as Triton does
                done.put_nowait(pb.ModelStreamInferResponse(error_message=protocol.error_status(exc)[1],
                                                            infer_response=pb.ModelInferResponse(id=req.id)))

        async def reader():
            nonlocal pending
            async for req in request_iterator:
                pending += 1
                asyncio.ensure_future(one(req))
            done.put_nowait(None)

        asyncio.ensure_future(reader())
        finished = False
        while not finished or pending:
            item = await done.get()
            if item is None:
                finished = True
                continue
            pending -= 1
            yield item


async def start_grpc(server, host: str, port: int, reuse_port: bool = False):
    """Start the grpc.aio server; returns it and the bound port."""
    # the body limit is on requests; answers of any size go, as over HTTP (-1: no limit)
    grpc_server = grpc.aio.server(options=[("grpc.max_receive_message_length", server.max_body),
                                           ("grpc.max_send_message_length", -1),
                                           ("grpc.so_reuseport", int(reuse_port))])
    pb_grpc.add_GRPCInferenceServiceServicer_to_server(Service(server), grpc_server)
    if port:
        _check_free(host, port, reuse_port)  # a plain OSError, before gRPC's core logs its own
    try:
        bound = grpc_server.add_insecure_port(f"{host}:{port}")
    except RuntimeError as exc:
        raise OSError(f"gRPC could not bind {host}:{port}: {exc}") from None
    if not bound:
        raise OSError(f"gRPC could not bind {host}:{port}")
    await grpc_server.start()
    return grpc_server, bound


def _check_free(host: str, port: int, reuse_port: bool) -> None:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        probe.bind((host, port))
