"""The TensorRT backend: ONNX -> plan (``build_engine(onnx, BuildConfig(...))``), the engine cache, and
the runner (``runner.TensorRTEngine``).

| module            | what                                                     |
|-------------------|----------------------------------------------------------|
| config.py         | BuildConfig (trtexec's flags), --memPoolSize parsing     |
| flavor.py         | which TensorRT (10/11 or TensorRT-RTX), which GPU        |
| profiles.py       | checks given profiles, infers missing ones               |
| precision.py      | builder flags (TensorRT 10) or FP16 ONNX conversion      |
| parser_errors.py  | failures as node name, op, reason, fix                   |
| builder.py        | build_engine                                             |
| cache.py          | engines cached by ONNX bytes, config, TensorRT and GPU   |
| sidecar.py        | the JSON beside each plan: I/O specs, target, versions   |
| progress.py       | TensorRT's IProgressMonitor -> trtflow.progress callback |
| buffers.py        | profile choice, dtype mapping, reusable device buffers   |
| cuda.py           | CudaOps: streams, memory, capture (the runner's seam)    |
| graphs.py         | CUDA graphs by (profile, shapes), evicted on new buffers |
| execution.py      | one execution context: bind, enqueue, capture, replay    |
| contexts.py       | a bounded pool of execution contexts across threads      |
| runner.py         | TensorRTEngine: load, check I/O, infer, close            |

Nothing heavy is imported here: TensorRT loads when a build starts.
"""

from trtflow.backends.tensorrt.config import BuildConfig

__all__ = ["BuildConfig", "BuildResult", "EngineCache", "build_engine"]


def __getattr__(name: str):
    if name in ("build_engine", "BuildResult"):
        from trtflow.backends.tensorrt import builder

        return getattr(builder, name)
    if name == "EngineCache":
        from trtflow.backends.tensorrt.cache import EngineCache

        return EngineCache
    raise AttributeError(name)
