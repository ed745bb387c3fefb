"""Vision pre- and post-processing: image preprocessing, models and labels for the demos."""

__all__ = ["decode_detections"]


def __getattr__(name: str):
    if name == "decode_detections":  # detection decode + NMS after an engine (trtflow.vision.detect)
        from trtflow.vision.detect import decode_detections

        return decode_detections
    raise AttributeError(f"module 'trtflow.vision' has no attribute '{name}'")
