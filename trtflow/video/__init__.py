"""Video and images through any engine: sources (files, folders, cameras, network streams),
CPU or NVDEC decoding, DeepStream-style batching across streams, overlapped stages, annotated
H.264 and JSON Lines outputs, and the ``Predictor`` API.

Nothing heavy is imported here; PyAV loads when a source is opened.
"""

import importlib

_LAZY = {
    "Frame": "trtflow.video.sources",
    "Source": "trtflow.video.sources",
    "open_sources": "trtflow.video.sources",
    "Muxer": "trtflow.video.muxer",
    "VideoConfig": "trtflow.video.config",
    "FrameResult": "trtflow.video.config",
    "Pipeline": "trtflow.video.pipeline",
    "run_video": "trtflow.video.pipeline",
    "Summary": "trtflow.video.summary",
    "Predictor": "trtflow.video.predictor",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'trtflow.video' has no attribute '{name}'")
