"""Triton Python-backend model running a trtflow engine (written by ``trtflow triton-repo``).

This file is copied as is into ``REPO/NAME/VERSION/model.py``; everything it needs comes from
the ``parameters`` of ``config.pbtxt``:

- ``trtflow_model``: the model file beside this one (ONNX, plan, ``.pt2``).
- ``trtflow_engine``: the trtflow engine ("ort", "torch", "tensorrt", "auto").
- ``trtflow_options``: JSON options for ``trtflow.load``.
- ``trtflow_task``: empty for a plain engine (inputs and outputs are the model's own), or a
  trtflow task ("classify", "detect", "face", ...): input ``IMAGE`` (uint8 HWC frames, RGB),
  output ``RESULT`` (one JSON document per frame, the task result's ``to_dict()``).
- ``trtflow_task_options``: JSON options for ``trtflow.tasks.make_task``.

trtflow must be importable by the Python that runs tritonserver's Python-backend stub.
Requests handed over together by Triton's dynamic batcher run as one engine call when their
non-batch shapes agree; each request gets its own slice of the outputs back.
"""

import json
import os

import numpy as np
import triton_python_backend_utils as pb_utils

from trtflow.serve.batcher import merge, split


def _parameters(config):
    return {k: v.get("string_value", "") for k, v in (config.get("parameters") or {}).items()}


class TritonPythonModel:
    """One instance per ``instance_group`` entry; Triton calls initialize, execute, finalize."""

    def initialize(self, args):
        import trtflow

        config = json.loads(args["model_config"])
        params = _parameters(config)
        folder = os.path.join(args["model_repository"], args["model_version"])
        model = os.path.join(folder, params["trtflow_model"])
        engine = params.get("trtflow_engine") or "auto"
        options = json.loads(params.get("trtflow_options") or "{}")
        if args.get("model_instance_kind") == "GPU" and engine in ("tensorrt", "torch"):
            options.setdefault("device", int(args["model_instance_device_id"]))
        self.batched = int(config.get("max_batch_size", 0)) > 0
        self.input_names = [t["name"] for t in config["input"]]
        self.output_names = [t["name"] for t in config["output"]]
        task = params.get("trtflow_task") or ""
        self.task = None
        self.engine = None
        if task:
            from trtflow.tasks import make_task

            task_options = json.loads(params.get("trtflow_task_options") or "{}")
            self.task = make_task(task, model, engine=engine, **task_options, **options)
        else:
            self.engine = trtflow.load(model, engine, **options)

    def execute(self, requests):
        feeds = []
        for request in requests:
            feeds.append({n: pb_utils.get_input_tensor_by_name(request, n).as_numpy() for n in self.input_names})
        responses = [None] * len(requests)
        for group in self._groups(feeds):
            try:
                outputs = self._run([feeds[i] for i in group])
            except Exception as exc:  # one failing group must not fail the others
                error = pb_utils.TritonError(f"{type(exc).__name__}: {exc}")
                for i in group:
                    responses[i] = pb_utils.InferenceResponse(output_tensors=[], error=error)
                continue
            for i, out in zip(group, outputs):
                tensors = [pb_utils.Tensor(n, np.ascontiguousarray(out[n])) for n in self.output_names]
                responses[i] = pb_utils.InferenceResponse(output_tensors=tensors)
        return responses

    def _groups(self, feeds):
        """Indices of requests that can run as one batch: same non-batch shapes and dtypes."""
        if not self.batched:
            return [[i] for i in range(len(feeds))]
        groups = {}
        for i, feed in enumerate(feeds):
            key = tuple((n, feed[n].shape[1:], feed[n].dtype.str) for n in self.input_names)
            groups.setdefault(key, []).append(i)
        return list(groups.values())

    def _run(self, feeds):
        """Run the feeds of one group; return one output dict per feed."""
        merged = merge(feeds)
        if self.task is not None:
            frames = list(merged[self.input_names[0]]) if self.batched else [merged[self.input_names[0]]]
            results = self.task.predict(frames)
            docs = np.array([[json.dumps(r.to_dict()).encode()] for r in results], dtype=object)
            outputs = {self.output_names[0]: docs if self.batched else docs[0]}
        else:
            outputs = self.engine.infer(merged)
        return split(outputs, [len(feed[self.input_names[0]]) if self.batched else 1 for feed in feeds])

    def finalize(self):
        if self.task is not None:
            self.task.close()
        if self.engine is not None:
            self.engine.close()
