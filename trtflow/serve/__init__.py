"""Serving: Triton's KServe v2 protocol over HTTP and gRPC with dynamic batching (``trtflow serve``),
and the load generator (``trtflow loadgen``)."""
