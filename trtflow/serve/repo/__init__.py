"""Triton model repositories (``trtflow triton-repo``) and the bundled tritonserver that loads them.

| module      | what                                                                  |
|-------------|-----------------------------------------------------------------------|
| config.py   | config.pbtxt as Triton's ModelConfig protobuf, validated by parsing   |
| writer.py   | write_repository: tensorrt / onnxruntime / python (trtflow inside)    |
| ensemble.py | write_ensemble: a task's pre -> model -> post as a Triton ensemble    |
| launcher.py | TritonServer: nvidia-pytriton's tritonserver binary on a repository   |

The Python backend's ``model.py`` is ``trtflow/serve/templates/triton_python_model.py`` (and
``triton_task_pre.py`` / ``triton_task_post.py`` for an ensemble's steps).
"""

from trtflow.serve.repo.config import ConfigSpec, build_config, to_pbtxt, validate_pbtxt
from trtflow.serve.repo.ensemble import write_ensemble
from trtflow.serve.repo.launcher import BundledTriton, TritonServer, find_bundled_tritonserver
from trtflow.serve.repo.writer import RepoOptions, RepoResult, write_repository

__all__ = [
    "BundledTriton", "ConfigSpec", "RepoOptions", "RepoResult", "TritonServer", "build_config",
    "find_bundled_tritonserver", "to_pbtxt", "validate_pbtxt", "write_ensemble", "write_repository",
]
