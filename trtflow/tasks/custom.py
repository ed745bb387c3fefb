"""Any model with the user's post-processing: ``post="MODULE:FUNCTION"``.

The function is called as ``FUNCTION(outputs, metas)`` with the engine's outputs of one batch
(name -> array, batch first) and the batch's ``FrameMeta`` list (``meta.to_source(xy)`` maps
network pixels back to the frame). It returns one item per frame: a JSON-able dict (wrapped in
``Custom``) or a result object with ``to_dict()`` and ``draw(frame)``.
"""

from __future__ import annotations

import importlib
from typing import Any, Callable, Mapping, Optional, Sequence

from trtflow.errors import ModelLoadError, UsageError
from trtflow.tasks.base import FrameMeta
from trtflow.tasks.detect import _resolve_size
from trtflow.tasks.prepare import Prep, PreparedTask
from trtflow.tasks.results import Custom


def load_function(spec: str) -> Callable:
    """``"package.module:function"`` -> the function.

    Raises:
        UsageError: not of the form MODULE:FUNCTION.
        ModelLoadError: the module cannot be imported or has no such callable.
    """
    if not isinstance(spec, str) or spec.count(":") != 1:
        raise UsageError(f"post-processing '{spec}': give MODULE:FUNCTION, e.g. mypkg.post:decode")
    module_name, attr = spec.split(":")
    if not all(part.isidentifier() for part in module_name.split(".")):
        raise UsageError(f"post-processing '{spec}': '{module_name}' is not a module name; give MODULE:FUNCTION "
                         "with an importable module, e.g. mypkg.post:decode")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ModelLoadError(f"cannot import '{module_name}' for --post {spec} ({exc}); put it on PYTHONPATH") from None
    fn = getattr(module, attr, None)
    if not callable(fn):
        raise ModelLoadError(f"'{module_name}' has no function '{attr}' (from --post {spec})")
    return fn


class CustomTask(PreparedTask):
    """A model with user post-processing; preprocessing is ``prep`` (RGB 0..1 letterboxed by default).

    Args:
        engine: the loaded engine.
        post: "MODULE:FUNCTION" or a callable ``(outputs, metas) -> list``.
        labels: class names, passed on as ``task.labels``.
        input_size: network (height, width) for engines with dynamic H/W (default 640).
        resize: "letterbox" (default), "stretch", "crop" or "none".
        prep: the pixel layout.
    """

    name = "custom"
    default_size = (640, 640)

    def __init__(self, engine: Any, *, post: Any = None, labels: Optional[Sequence[str]] = None, input_size: Any = None,
                 resize: Optional[str] = None, prep: Optional[Prep] = None, stride: int = 32,
                 input_name: Optional[str] = None, device: Optional[str] = None):
        super().__init__(engine, input_name=input_name, labels=labels, device=device)
        if post is None:
            raise UsageError("the custom task needs post-processing: post='MODULE:FUNCTION' (--post)")
        self.post = post if callable(post) else load_function(post)
        base = prep or Prep()
        mode = resize or base.mode
        self.prep = Prep(mode, _resolve_size(self, input_size) if mode != "none" else None, stride, base.order,
                         base.scale, base.mean, base.std, base.pad_value, base.crop_ratio)

    def finish(self, outputs: Mapping[str, Any], metas: Sequence[FrameMeta]) -> list:
        got = self.post(dict(outputs), list(metas))
        if got is None or isinstance(got, (str, bytes, Mapping)) or not hasattr(got, "__iter__"):
            raise UsageError(f"the post-processing function returned {'None' if got is None else type(got).__name__}; "
                             "return a list with one dict per frame")
        got = list(got)
        if len(got) != len(metas):
            raise UsageError(f"the post-processing function returned {len(got)} items for {len(metas)} frames; "
                             "return one per frame")
        out = []
        for i, item in enumerate(got):
            if hasattr(item, "to_dict"):
                out.append(item)
            elif isinstance(item, Mapping):
                out.append(Custom(dict(item)))
            else:
                raise UsageError(f"the post-processing function returned a {type(item).__name__} for frame {i}; "
                                 "return a dict per frame (or a result with to_dict() and draw(frame))")
        return out
