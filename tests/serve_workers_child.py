"""A ``serve_workers`` server of a small conv net, run as a script by tests/test_serve_workers.py.

    python tests/serve_workers_child.py DEVICE HTTP_PORT GRPC_PORT     # DEVICE: cpu or cuda

Launched the way bench/serve_bench.py launches its GPU server (a script whose factory the spawned
engine process imports by file, the repository root on sys.path), not through a test module: the
spawned processes then import no pytest. Prints one JSON line when every process listens.
"""

from __future__ import annotations

import functools
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def conv_net_models(device: str) -> list:
    """Conv + BN + ReLU + pool + linear, channels-last; on CUDA FP16 with FP16 I/O, fused, CUDA
    graphs (the GPU benchmark's setup), on the CPU FP32 (the same serving path but the CUDA gather)."""
    import torch

    import trtflow
    from trtflow.serve.model import BatchConfig, ServedModel

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 16, 3, padding=1), torch.nn.BatchNorm2d(16), torch.nn.ReLU(),
                              torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(16, 10))
    cuda = device == "cuda"
    extra = dict(dtype="fp16", keep_io_types=False, fuse=True, cuda_graphs=True, max_graphs=9) if cuda else {}
    engine = trtflow.load(net.eval(), engine="torch", device=device, example_inputs=[torch.randn(2, 3, 32, 32)],
                          input_names=["x"], dynamic={"x": {0: "batch"}}, min_shapes={"x": (1, 3, 32, 32)},
                          max_shapes={"x": (8, 3, 32, 32)}, output_names=["logits"], channels_last=True, **extra)
    return [ServedModel("net", [engine], BatchConfig(max_batch=8, delay_us=20000))]


def main(argv: list[str]) -> int:
    from trtflow.serve.server import ServeOptions
    from trtflow.serve.workers import WorkerOptions, serve_workers

    device, http, grpc = argv[0], int(argv[1]), int(argv[2])

    def ready(r) -> None:
        print(json.dumps({"kind": r.kind, "pids": r.pids}), flush=True)

    return serve_workers(functools.partial(conv_net_models, device), ServeOptions(http_port=http, grpc_port=grpc),
                         WorkerOptions(2), on_ready=ready)


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
