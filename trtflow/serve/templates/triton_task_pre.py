"""Triton Python-backend model: a trtflow task's preprocessing, the first step of a
``trtflow triton-repo --ensemble`` ensemble (copied as is into ``REPO/NAME_pre/1/model.py``).

Input ``IMAGE``: uint8 RGB frames ``[n, H, W, 3]``. Outputs: ``INPUT`` (the network input the task
prepares, e.g. ``[n, 3, 224, 224]`` float32) and ``META`` (``[n, 8]`` float32: source height, width,
network height, width, scale x, y, pad left, top: the task's FrameMeta, for the post step).
Parameters as in ``triton_python_model.py`` (``trtflow_model`` may be a path relative to this
version folder, e.g. the model step's file).
"""

import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        from trtflow.serve.repo.ensemble import load_step_task

        self.task, _ = load_step_task(args)

    def execute(self, requests):
        responses = []
        for request in requests:
            try:
                frames = pb_utils.get_input_tensor_by_name(request, "IMAGE").as_numpy()
                feed, metas = self.task.prepare(list(frames))
                x = np.ascontiguousarray(np.asarray(feed[self.task.input_name]))
                meta = np.array([[*m.size, *m.input_size, *m.scale, *m.pad] for m in metas], dtype=np.float32)
                responses.append(pb_utils.InferenceResponse([pb_utils.Tensor("INPUT", x), pb_utils.Tensor("META", meta)]))
            except Exception as exc:
                responses.append(pb_utils.InferenceResponse(output_tensors=[], error=pb_utils.TritonError(
                    f"{type(exc).__name__}: {exc}")))
        return responses

    def finalize(self):
        self.task.close()
