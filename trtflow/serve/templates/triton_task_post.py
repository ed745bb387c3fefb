"""Triton Python-backend model: a trtflow task's post-processing, the last step of a
``trtflow triton-repo --ensemble`` ensemble (copied as is into ``REPO/NAME_post/1/model.py``).

Inputs: the model step's outputs and ``META`` from the pre step. Output ``RESULT``: one JSON
document per frame (the task result's ``to_dict()``), ``[n, 1]`` BYTES. Parameters as in
``triton_task_pre.py``.
"""

import json

import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        from trtflow.serve.repo.ensemble import load_step_task

        self.task, config = load_step_task(args)
        self.outputs = [t["name"] for t in config["input"] if t["name"] != "META"]

    def execute(self, requests):
        from trtflow.tasks.base import FrameMeta

        responses = []
        for request in requests:
            try:
                outputs = {n: pb_utils.get_input_tensor_by_name(request, n).as_numpy() for n in self.outputs}
                meta = pb_utils.get_input_tensor_by_name(request, "META").as_numpy()
                metas = [FrameMeta((int(m[0]), int(m[1])), (int(m[2]), int(m[3])), (float(m[4]), float(m[5])),
                                   (float(m[6]), float(m[7]))) for m in meta]
                results = self.task.finish(outputs, metas)
                docs = np.array([[json.dumps(r.to_dict()).encode()] for r in results], dtype=object)
                responses.append(pb_utils.InferenceResponse([pb_utils.Tensor("RESULT", docs)]))
            except Exception as exc:
                responses.append(pb_utils.InferenceResponse(output_tensors=[], error=pb_utils.TritonError(
                    f"{type(exc).__name__}: {exc}")))
        return responses

    def finalize(self):
        self.task.close()
