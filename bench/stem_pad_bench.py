"""ResNet-50's first convolution with its 3 input channels zero-padded to 4 or 8, compile + cuDNN fusions + graphs.

Usage::

    python3 bench/stem_pad_bench.py OUTDIR [--batch 256]

Channels-last FP16 convolutions with 3 input channels may miss cuDNN's tensor-core kernels; padding
the input (inside the compiled graph) and the stem's weights with zeros gives the same result with
4 or 8 channels. One process on one GPU: the three engines (FP16 I/O, channels-last, as tune's
``compile+fused+graphs cl``) built, their outputs compared with the unpadded one's, each timed by
``run_bench`` (CUDA events, 2 s of queries) three times, interleaved. Random weights (speed only).
Writes OUTDIR/stem_pad.json and prints a table.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.tune_bench import model_of  # noqa: E402
from trtflow.backends.torch.runner import TorchEngine  # noqa: E402
from trtflow.bench import BenchConfig, run_bench  # noqa: E402
from trtflow.bench.report import throughput  # noqa: E402


class PaddedStem(torch.nn.Module):
    """``model`` with ``conv1`` taking ``channels`` inputs (the extra weights zero) and its input padded to match."""

    def __init__(self, model, channels: int):
        super().__init__()
        conv = model.conv1
        wide = torch.nn.Conv2d(channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding, bias=False)
        with torch.no_grad():
            wide.weight.zero_()
            wide.weight[:, : conv.in_channels] = conv.weight
        model.conv1 = wide
        self.model, self.extra = model, channels - conv.in_channels

    def forward(self, x):
        return self.model(F.pad(x, (0, 0, 0, 0, 0, self.extra)))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("outdir")
    ap.add_argument("--batch", type=int, default=256)
    args = ap.parse_args(argv)
    out = Path(args.outdir)
    out.mkdir(parents=True, exist_ok=True)
    b = args.batch
    x = torch.randn(b, 3, 224, 224, device="cuda", dtype=torch.float16).contiguous(memory_format=torch.channels_last)
    engines, rows, ref = {}, {}, None
    for name, channels in (("base", 3), ("pad4", 4), ("pad8", 8)):
        model = model_of("resnet50")
        model = model if channels == 3 else PaddedStem(model, channels)
        t0 = time.perf_counter()
        engine = TorchEngine(model, {"x": torch.randn(b, 3, 224, 224)}, dtype="fp16", keep_io_types=False,
                             channels_last=True, compile="default", cuda_graphs=True, fuse=True)
        for _ in range(3):
            y = engine.infer({"x": x})
        torch.cuda.synchronize()
        y = next(iter(y.values())).float()
        ref = y if ref is None else ref
        rows[name] = {"compile_s": round(time.perf_counter() - t0, 1), "max_abs_diff": float((y - ref).abs().max()),
                      "peak": float(ref.abs().max()), "img_s": []}
        engines[name] = engine
    feed = {"x": torch.randn(b, 3, 224, 224).numpy()}
    for _ in range(3):
        for name, engine in engines.items():
            result = run_bench(engine, feed, BenchConfig(iterations=5, duration_s=2.0, warmup_ms=200, data_transfers=False))
            rows[name]["img_s"].append(round(throughput(result)["inferences_per_s"]))
    (out / "stem_pad.json").write_text(json.dumps({"batch": b, "device": torch.cuda.get_device_name(), "rows": rows},
                                                  indent=1))
    print("| stem input channels | img/s (3 timings) | max abs diff vs unpadded | compile s |")
    print("|---|---|---|---|")
    for name, r in rows.items():
        print(f"| {name} | {', '.join(f'{v:,}' for v in r['img_s'])} | {r['max_abs_diff']:.3g} | {r['compile_s']} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
