"""trtflow video SOURCE [SOURCE...]: files, image folders, cameras and streams through a task."""

from __future__ import annotations

import argparse
from pathlib import Path

from trtflow.cli import options, output
from trtflow.errors import UsageError
from trtflow.spec import parse_pairs

HELP = "run a task (face, detect, sr, classify, segment, custom) over videos, image folders, cameras or streams"

TASK_NAMES = ("face", "detect", "sr", "classify", "segment", "custom")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("sources", nargs="*", metavar="SOURCE",
                        help="video file, image folder, /dev/videoN, or rtsp:// http(s):// udp:// URL (several: one stream each)")
    parser.add_argument("--source", action="append", default=[], metavar="SOURCE", help="one more source (repeatable)")
    parser.add_argument("--task", required=True, choices=TASK_NAMES, help="what to run on each frame")
    parser.add_argument("--model", help="ONNX, engine plan or .pt2 (default: the task's shipped model where one exists; "
                        "--task face --model mtcnn: facenet-pytorch's MTCNN on the torch engine)")
    parser.add_argument("--format", help="detect: yolov8, yolov5, boxes-scores, retinaface, ssd, nms; segment: argmax, probability, logits")
    parser.add_argument("--labels", metavar="FILE", help="class names, one per line")
    parser.add_argument("--post", metavar="MODULE:FUNCTION", help="custom task: post-processing function")
    parser.add_argument("--input-size", metavar="HxW", help="network input size for engines with dynamic H/W (e.g. 640x640)")
    parser.add_argument("--resize", choices=("letterbox", "stretch", "crop", "none"), help="how frames fit the input (default: per task)")
    parser.add_argument("--score-threshold", type=options.number(0.0), help="detection score / mask threshold")
    parser.add_argument("--out", metavar="OUT.mp4", help="annotated H.264 video (several sources: OUT-s0.mp4, OUT-s1.mp4, ...)")
    parser.add_argument("--jsonl", metavar="OUT.jsonl", help="one JSON record per frame")
    parser.add_argument("--batch", type=options.count(1), default=8, help="frames per inference batch (default: %(default)s)")
    parser.add_argument("--push-timeout-ms", type=options.number(0.0), default=40.0,
                        help="send a partial batch after its first frame waited this long (default: %(default)s)")
    parser.add_argument("--decode", choices=("cpu", "nvdec"), default="cpu", help="decoder (default: %(default)s)")
    parser.add_argument("--device", help="torch device for preprocessing, e.g. cuda (default: the engine's)")
    parser.add_argument("--drop-when-behind", action="store_true",
                        help="live sources drop their oldest frames when inference falls behind (counted)")
    parser.add_argument("--max-frames", type=options.count(1), help="frames to read per source")
    parser.add_argument("--no-audio", action="store_true", help="do not copy the source's audio into --out")
    parser.add_argument("--timeout", type=options.number(0.1), default=10.0,
                        help="seconds to open a network source or camera, and per read (default: %(default)s)")
    parser.add_argument("--av-option", action="append", default=[], metavar="KEY=VALUE",
                        help="FFmpeg demuxer option for cameras and streams, e.g. rtsp_transport=udp (repeatable; "
                        "names FFmpeg does not know are refused)")
    options.add_gpus(parser, help="one engine per GPU, e.g. 0,1 or all; batches go to the least-loaded one "
                     "(each with its own CUDA streams and pinned buffers)")
    options.add_engine(parser)
    options.add_shapes(parser)
    options.add_precision(parser)
    options.add_json(parser)


def _size(text: str | None):
    from trtflow.tasks.prepare import as_size

    if not text:
        return None
    try:
        return as_size(text)
    except UsageError:
        raise UsageError(f"--input-size '{text}': expected HxW, e.g. 640x640") from None


def _load_options(args: argparse.Namespace, engine: str) -> dict:
    opts = options.engine_options(args, engine)
    if engine != "torch":
        return opts
    error = options.pt2_precision_error(args) if str(args.model or "").endswith(".pt2") else None
    if error:
        raise error
    dtype = options.torch_dtype(args)  # the rule bench and build follow: --bf16 wins over --fp16/--best
    if dtype != "fp32":
        opts["dtype"] = dtype
    return opts


def run(args: argparse.Namespace) -> int:
    from trtflow.tasks import make_task
    from trtflow.tasks.factory import resolve_engine
    from trtflow.video.pipeline import Pipeline, VideoConfig
    from trtflow.video.sources import open_sources
    from trtflow.video.summary import stage_rows

    sources = list(args.sources) + list(args.source)
    if not sources:
        raise UsageError("give at least one SOURCE (a video file, an image folder, /dev/videoN or a URL)")
    gpus = options.gpus_of(args)
    if gpus is not None and args.device:
        raise UsageError("--gpus preprocesses on each engine's GPU; drop --device")
    for flag, path in (("--out", args.out), ("--jsonl", args.jsonl)):
        if path and not Path(path).resolve().parent.is_dir():
            raise UsageError(f"{flag} {path}: the folder {Path(path).parent} does not exist; create it first")
        if path and Path(path).is_dir():
            raise UsageError(f"{flag} {path} is a folder; give a file name")
    config = VideoConfig(
        batch=args.batch, push_timeout_ms=args.push_timeout_ms, decode=args.decode,
        drop_when_behind=args.drop_when_behind, out=args.out, jsonl=args.jsonl, audio=not args.no_audio,
        source_options=parse_pairs(args.av_option, "--av-option", "KEY=VALUE, e.g. rtsp_transport=udp"), timeout_s=args.timeout,
        max_frames=args.max_frames, device=args.device)
    opened = open_sources(sources, config.decode, config.source_options, config.timeout_s, config.max_frames,
                          audio=bool(config.out and config.audio))
    tasks: list = []
    try:
        engine = resolve_engine(args.engine, args.model)
        for gpu in gpus or [None]:
            tasks.append(make_task(args.task, args.model, engine=engine, format=args.format, labels=args.labels,
                                   post=args.post, input_size=_size(args.input_size), resize=args.resize,
                                   score_threshold=args.score_threshold, device=args.device, gpu=gpu,
                                   **_load_options(args, engine)))
    except BaseException:
        for s in opened:
            s.close()
        for t in tasks:
            t.close()
        raise
    try:
        with output.bar("video", enabled=not args.json) as progress:
            summary = Pipeline(tasks if gpus else tasks[0], opened, config, progress).run()
    except BaseException:  # a pipeline that could not be built leaves them open (closing twice is a no-op)
        for s in opened:
            s.close()
        raise
    finally:
        for t in tasks:
            t.close()
    result = summary.to_dict()
    if args.json:
        output.print_json(result)
        return 0
    out = output.console()
    for s in summary.streams:
        out.print(f"stream {s['stream']}: {s['source']} ({s['kind']}, {s['width']}x{s['height']}, decoder {s['decoder']}): "
                  f"{s['decoded']} frames, {s['dropped']} dropped, {s['corrupt']} corrupt, {s['missing']} missing"
                  + (", ENDED EARLY" if s["ended_early"] else ""))
        for message in s["messages"]:
            out.print(f"  {message}")
    output.print_table(
        f"{summary.frames_out} frames through {args.task} on {summary.engine} in {summary.wall_s:.2f} s "
        f"({summary.fps:.1f} frames/s; bottleneck: {summary.bottleneck})",
        ["stage", "frames", "busy s", "frames/s", "busy share of wall"], stage_rows(summary))
    out.print(f"frames in {summary.frames_in}, out {summary.frames_out}, dropped {summary.dropped}, "
              f"corrupt {summary.corrupt}, missing {summary.missing}")
    for path in summary.outputs:
        out.print(f"wrote {path}")
    if not summary.outputs:
        out.print("no --out or --jsonl given: only this summary was written")
    return 0
