"""ONNX -> TensorRT engine: ``build_engine(onnx, BuildConfig(...))`` and the engine cache.

| module            | what                                                     |
|-------------------|----------------------------------------------------------|
| config.py         | BuildConfig (trtexec's flags), --memPoolSize parsing     |
| flavor.py         | which TensorRT (10/11 or TensorRT-RTX), which GPU        |
| profiles.py       | checks given profiles, infers missing ones               |
| precision.py      | builder flags (TensorRT 10) or FP16 ONNX conversion      |
| parser_errors.py  | failures as node name, op, reason, fix                   |
| builder.py        | build_engine                                             |
| cache.py          | engines cached by ONNX bytes, config, TensorRT and GPU   |

Nothing heavy is imported here: TensorRT loads when a build starts.
"""

from trtflow.build.config import BuildConfig

__all__ = ["BuildConfig", "BuildResult", "EngineCache", "build_engine"]


def __getattr__(name: str):
    if name in ("build_engine", "BuildResult"):
        from trtflow.build import builder

        return getattr(builder, name)
    if name == "EngineCache":
        from trtflow.build.cache import EngineCache

        return EngineCache
    raise AttributeError(name)
