"""trtflow triton-repo MODEL --out REPO: a Triton Inference Server model repository."""

from __future__ import annotations

import argparse
import json

from trtflow.cli import options, output
from trtflow.errors import UsageError

HELP = "write a Triton model repository (config.pbtxt + model.plan|model.onnx|model.py) for a model"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", help="an .onnx file, a TensorRT plan, or any model trtflow loads (python backend)")
    options.add_out(parser, "REPO", "the model repository folder (created when missing)", required=True)
    parser.add_argument("--name", help="model name, the folder under REPO (default: the file stem)")
    parser.add_argument("--backend", default="auto", choices=["auto", "tensorrt", "onnxruntime", "python"],
                        help="Triton backend: auto = plan -> tensorrt, .onnx -> onnxruntime, else python "
                        "(python runs the model with trtflow inside Triton; default: %(default)s)")
    parser.add_argument("--version", type=options.count(1), default=1, help="version folder (default: 1)")
    parser.add_argument("--overwrite", action="store_true", help="replace version --version of REPO/NAME and its config.pbtxt (other versions stay)")
    group = parser.add_argument_group("batching and instances (Triton's config.pbtxt)")
    group.add_argument("--max-batch", type=options.count(0),
                       help="max_batch_size; 0: no batch dim (default: the plan's profile bound, 8 for a dynamic batch dim; "
                       "0 unless dim 0 of every input and output is that one batch dim)")
    group.add_argument("--dynamic-batching", action=argparse.BooleanOptionalAction, default=True,
                       help="add Triton's dynamic batcher when max_batch_size > 0 (default: on)")
    group.add_argument("--max-queue-delay-us", type=options.count(0), default=0, metavar="US",
                       help="how long the dynamic batcher waits to fill a batch (default: 0)")
    group.add_argument("--preferred-batch-sizes", metavar="N,N", help="batch sizes the batcher aims for, e.g. 4,8")
    group.add_argument("--instances", type=options.count(1), default=1, metavar="K", help="instances (default: 1)")
    group.add_argument("--kind", default="auto", choices=["auto", "cpu", "gpu"],
                       help="instance kind: auto = gpu for tensorrt, cpu otherwise")
    group.add_argument("--gpus", metavar="I,J", help="GPU ids for gpu instances (default: every GPU)")
    group.add_argument("--threads", type=options.count(0), default=0,
                       help="ONNX Runtime intra-op threads (onnxruntime backend, or ort inside python; 0: default)")
    group = parser.add_argument_group("python backend (trtflow inside Triton)")
    group.add_argument("--engine", default="auto", help="trtflow engine model.py loads: auto, ort, torch, tensorrt")
    group.add_argument("--engine-option", action="append", metavar="KEY=JSON",
                       help="an option for trtflow.load inside model.py, e.g. providers='[\"cpu\"]' (repeatable)")
    group.add_argument("--task", help="wrap a trtflow task (classify, detect, face, segment, sr, custom): "
                       "input IMAGE (uint8 HWC), output RESULT (JSON per frame)")
    group.add_argument("--task-option", action="append", metavar="KEY=JSON",
                       help="an option for make_task, e.g. labels='\"labels.txt\"' (repeatable)")
    group.add_argument("--ensemble", action="store_true",
                       help="with --task: NAME_pre (python) -> NAME_model (--backend) -> NAME_post (python) as "
                       "a Triton ensemble NAME, so the model runs on Triton's own backend")
    options.add_json(parser)


def _int_list(text: str | None, flag: str) -> list[int]:
    if not text:
        return []
    try:
        values = [int(x) for x in text.replace(",", " ").split()]  # "4,8", "4, 8" or "4 8"
    except ValueError:
        raise UsageError(f"{flag} '{text}': expected integers separated by commas, e.g. 4,8") from None
    if any(v < 0 for v in values):
        raise UsageError(f"{flag} '{text}': values must be >= 0")
    return values


def _json_pairs(items: list[str] | None, flag: str) -> dict:
    out = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise UsageError(f"{flag} '{item}': expected KEY=VALUE, e.g. threads=2")
        try:
            out[key] = json.loads(value)
        except ValueError:
            out[key] = value  # a bare string
    return out


def run(args: argparse.Namespace) -> int:
    from trtflow.serve.repo import RepoOptions, write_ensemble, write_repository

    preferred = _int_list(args.preferred_batch_sizes, "--preferred-batch-sizes")
    if args.max_batch is not None and any(p > args.max_batch for p in preferred):
        raise UsageError(f"--preferred-batch-sizes {preferred} exceed --max-batch {args.max_batch}")
    opts = RepoOptions(
        name=args.name, backend=args.backend, max_batch=args.max_batch, instances=args.instances,
        kind=args.kind, gpus=_int_list(args.gpus, "--gpus"), dynamic_batching=args.dynamic_batching,
        max_queue_delay_us=args.max_queue_delay_us, preferred_batch_sizes=preferred, threads=args.threads,
        engine=args.engine, engine_options=_json_pairs(args.engine_option, "--engine-option"),
        task=args.task, task_options=_json_pairs(args.task_option, "--task-option"),
        version=args.version, overwrite=args.overwrite,
    )
    with output.bar("reading the model", enabled=not args.json) as progress:
        write = write_ensemble if args.ensemble else write_repository
        result = write(args.model, args.out, opts, progress=progress)
    if args.json:
        output.print_json(result.to_dict())
        return 0
    config = result.config
    rows = [(t["name"], "in", t["data_type"], "x".join(str(d) for d in t.get("dims", [])) or "scalar")
            for t in config.get("input", [])]
    rows += [(t["name"], "out", t["data_type"], "x".join(str(d) for d in t.get("dims", [])) or "scalar")
             for t in config.get("output", [])]
    output.print_table(f"{result.model_dir} ({result.backend}, max_batch_size {result.max_batch})",
                       ["tensor", "", "type", "dims (no batch)"], rows)
    console = output.console()
    for note in result.notes:
        console.print(note)
    console.print("files: " + ", ".join(str(f) for f in [result.config_path, *result.files]))
    return 0
