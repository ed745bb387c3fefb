"""Image classification: resize (ImageNet's shorter side + center crop by default), softmax top-k, labels."""

from __future__ import annotations

from typing import Any, Mapping, Optional, Sequence

import numpy as np

from trtflow.arrays import to_numpy
from trtflow.tasks.base import FrameMeta, whole_option
from trtflow.tasks.detect import _resolve_size
from trtflow.tasks.prepare import Prep, PreparedTask
from trtflow.tasks.results import Classification
from trtflow.vision.imagenet import softmax

IMAGENET = Prep(mode="crop", mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225), pad_value=0.0)


class ClassifyTask(PreparedTask):
    """Top-k classes per frame.

    Args:
        engine: input [N, 3, H, W]; output [N, classes] logits (or probabilities: rows already
            summing to 1 are not passed through softmax again).
        labels: class names by index.
        top_k: classes reported per frame.
        input_size: network (height, width) for engines with dynamic H/W (default 224).
        resize: "crop" (default: shorter side to size/0.875, center crop), "letterbox", "stretch".
        prep: the pixel layout (ImageNet mean/std on RGB 0..1 by default).
        device: move numpy frames to this torch device for preprocessing.
    """

    name = "classify"
    default_size = (224, 224)

    def __init__(self, engine: Any, *, labels: Optional[Sequence[str]] = None, top_k: int = 5,
                 input_size: Any = None, resize: Optional[str] = None, prep: Optional[Prep] = None,
                 input_name: Optional[str] = None, device: Optional[str] = None):
        super().__init__(engine, input_name=input_name, labels=labels, device=device)
        base = prep or IMAGENET
        self.prep = Prep(resize or base.mode, _resolve_size(self, input_size), base.stride, base.order, base.scale,
                         base.mean, base.std, base.pad_value, base.crop_ratio)
        self.top_k = whole_option("top_k", top_k, 1, "the number of classes to report per frame")
        self.output_name = engine.outputs[0].name

    def finish(self, outputs: Mapping[str, Any], metas: Sequence[FrameMeta]) -> list[Classification]:
        logits = to_numpy(outputs[self.output_name]).astype(np.float64).reshape(len(metas), -1)
        probs = logits
        if not (np.all(logits >= 0) and np.allclose(logits.sum(1), 1.0, atol=1e-3)):
            probs = softmax(logits)  # an overflowed (fp16) +inf logit: its class gets probability 1
        best = np.argsort(-probs, axis=1, kind="stable")[:, : self.top_k]
        return [
            Classification([{"class": int(c), "label": self.label(int(c)), "score": round(float(p[c]), 5)} for c in row])
            for row, p in zip(best, probs)
        ]
