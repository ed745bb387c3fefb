"""Serving: Triton's KServe v2 protocol over HTTP and gRPC with dynamic batching (``trtflow serve``),
and the load generator (``trtflow loadgen``).

One process: ``server`` (``Server``, ``serve``, ``BackgroundServer``) with ``http``, ``grpc_service``,
``batcher``, ``model``, ``metrics``, ``protocol``. Several (``--workers``): ``workers`` starts one
``engine_process`` and front ends (``frontend``) that share requests through ``ipc`` (shared-memory
slots, framed messages); ``gather`` assembles batches on CUDA engines."""
