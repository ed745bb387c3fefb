"""A pre -> model -> post ensemble for the vision tasks (``trtflow triton-repo --task T --ensemble``).

Four models in the repository, for a model named N::

    N_pre/    python: the task's preprocessing (templates/triton_task_pre.py): IMAGE -> INPUT, META
    N_model/  the model itself, on its own backend (tensorrt, onnxruntime or python)
    N_post/   python: the task's post-processing (templates/triton_task_post.py): outputs, META -> RESULT
    N/        platform "ensemble": IMAGE (uint8 HWC frames) in, RESULT (JSON per frame) out

The model step runs on Triton's own backend (a TensorRT plan on the GPU, ONNX Runtime) with its
dynamic batcher; pre and post run trtflow's task code, which reads the model's specs from the
model step's file (``trtflow_model`` is a path relative to their version folder).
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import replace
from pathlib import Path
from typing import Any

from trtflow.errors import UsageError
from trtflow.progress import Progress, report
from trtflow.serve.protocol import TRITON_TO_NUMPY
from trtflow.serve.repo.config import ConfigSpec, build_config, config_dict, protobuf_modules, to_pbtxt, validate_pbtxt
from trtflow.serve.repo.atomic import AtomicWrite
from trtflow.serve.repo.writer import TASK_INPUT, TASK_OUTPUT, RepoOptions, RepoResult, write_model
from trtflow.spec import TensorSpec

TEMPLATES = Path(__file__).resolve().parents[1] / "templates"
META = TensorSpec("META", "float32", ("batch", 8))


def _spec(doc: dict) -> TensorSpec:
    """A batched TensorSpec from a config.pbtxt tensor (dims without the batch dim)."""
    kind = doc["data_type"].removeprefix("TYPE_")
    dtype = TRITON_TO_NUMPY["BYTES" if kind == "STRING" else kind]
    return TensorSpec(doc["name"], dtype, ("batch", *(int(d) if int(d) >= 0 else "?" for d in doc.get("dims", []))))


def _write_python_step(repo: Path, name: str, template: str, spec: ConfigSpec, options: RepoOptions,
                       staging: AtomicWrite) -> Path:
    model_dir = repo / name
    version = staging.prepare(model_dir, options.version, options.overwrite)
    text = to_pbtxt(build_config(spec))
    validate_pbtxt(text)
    shutil.copyfile(TEMPLATES / template, version / "model.py")
    staging.write_config(model_dir, text)
    return model_dir


def load_step_task(args: dict) -> tuple[Any, dict]:
    """The task a pre or post step runs, from Triton's ``initialize`` args.

    Returns:
        (the task, the step's model config as a dict); ``trtflow_model`` is relative to the
        step's version folder (the model step's file).
    """
    from trtflow.tasks import make_task

    config = json.loads(args["model_config"])
    params = {k: v.get("string_value", "") for k, v in (config.get("parameters") or {}).items()}
    folder = os.path.join(args["model_repository"], args["model_version"])
    model = os.path.normpath(os.path.join(folder, params["trtflow_model"]))
    options = json.loads(params.get("trtflow_options") or "{}")
    task_options = json.loads(params.get("trtflow_task_options") or "{}")
    task = make_task(params["trtflow_task"], model, engine=params.get("trtflow_engine") or "auto",
                     **task_options, **options)
    return task, config


def write_ensemble(model: str | os.PathLike, repo: str | os.PathLike, options: RepoOptions,
                   progress: Progress | None = None) -> RepoResult:
    """Write the task's pre -> model -> post ensemble (four models) into ``repo``.

    Args:
        model: the model file (ONNX, plan, or anything the python backend runs).
        repo: the repository folder.
        options: as for ``write_repository``; ``task`` is required, ``backend`` is the model step's.
        progress: called as the steps advance.

    Returns:
        The ensemble model's ``RepoResult``; ``notes`` name the four models.

    Raises:
        UsageError: no task, a model with several inputs or without a batch dim.
    """
    if not options.task:
        raise UsageError("--ensemble needs --task (classify, detect, face, segment, sr, custom)")
    progress = report(progress)
    model = Path(model)
    repo = Path(repo)
    name = options.name or model.stem
    written: list[Path] = []
    with AtomicWrite() as staging:  # the four folders: all written, or the ones they replace kept
        step = write_model(model, repo, replace(options, name=f"{name}_model", task=None, task_options={}), progress,
                           staging)
        written.append(step.model_dir)
        inputs = step.config.get("input", [])
        if len(inputs) != 1:
            raise UsageError(f"--ensemble takes a model with one image input; this one has {len(inputs)}: "
                             f"{[t['name'] for t in inputs]}")
        if step.max_batch <= 0:
            raise UsageError("--ensemble needs a model with a batch dim (max_batch_size > 0)")
        model_file = next(f for f in step.files if f.name != "model.py" and not f.name.endswith(".json")) \
            if step.backend == "python" else step.files[0]
        engine = {"onnxruntime": "ort", "tensorrt": "tensorrt"}.get(step.backend, options.engine)
        params = {
            "trtflow_model": f"../../{step.model_dir.name}/{options.version}/{model_file.name}",
            "trtflow_engine": engine,
            "trtflow_options": json.dumps({"threads": 1} if engine == "ort" else {}, sort_keys=True),
            "trtflow_task": options.task,
            "trtflow_task_options": json.dumps(dict(options.task_options), sort_keys=True),
        }
        common = dict(backend="python", max_batch=step.max_batch, instances=options.instances, kind="cpu",
                      dynamic_batching=False, parameters=params)
        image_in = replace(_spec(inputs[0]), name="INPUT")
        outputs = [_spec(t) for t in step.config.get("output", [])]
        if any(t.name == META.name for t in outputs):
            raise UsageError(f"the model has an output named '{META.name}', the name of the pre step's frame placement "
                             "that the post step also takes: rename that output of the model for --ensemble")
        progress("writing the pre and post steps")
        written.append(_write_python_step(repo, f"{name}_pre", "triton_task_pre.py", ConfigSpec(
            name=f"{name}_pre", inputs=[TASK_INPUT], outputs=[image_in, META], **common), options, staging))
        written.append(_write_python_step(repo, f"{name}_post", "triton_task_post.py", ConfigSpec(
            name=f"{name}_post", inputs=[*outputs, META], outputs=[TASK_OUTPUT], **common), options, staging))
        pb2, json_format, _ = protobuf_modules()
        out_map = {t.name: f"out_{t.name}" for t in outputs}
        doc = {
            "name": name, "platform": "ensemble", "max_batch_size": step.max_batch,
            "input": [{"name": "IMAGE", "data_type": "TYPE_UINT8", "dims": [-1, -1, 3]}],
            "output": [{"name": "RESULT", "data_type": "TYPE_STRING", "dims": [1]}],
            "ensemble_scheduling": {"step": [
                {"model_name": f"{name}_pre", "model_version": -1, "input_map": {"IMAGE": "IMAGE"},
                 "output_map": {"INPUT": "prepared", "META": "meta"}},
                {"model_name": step.model_dir.name, "model_version": -1, "input_map": {inputs[0]["name"]: "prepared"},
                 "output_map": out_map},
                {"model_name": f"{name}_post", "model_version": -1,
                 "input_map": {**out_map, "META": "meta"}, "output_map": {"RESULT": "RESULT"}},
            ]},
        }
        text = to_pbtxt(json_format.ParseDict(doc, pb2.ModelConfig()))
        config = validate_pbtxt(text)
        ensemble_dir = repo / name
        staging.prepare(ensemble_dir, options.version, options.overwrite)  # an ensemble's version folder stays empty
        staging.write_config(ensemble_dir, text)
        written.append(ensemble_dir)
    notes = step.notes + [f"ensemble {name}: {name}_pre -> {step.model_dir.name} ({step.backend}) -> {name}_post"]
    files = [f for folder in written  # what this write wrote: the versions kept are not among them
             for f in sorted([folder / "config.pbtxt", *(folder / str(options.version)).rglob("*")]) if f.is_file()]
    return RepoResult(ensemble_dir, ensemble_dir / "config.pbtxt", files, "ensemble", step.max_batch,
                      config_dict(config), notes)
