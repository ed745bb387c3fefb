"""``trtflow tune``: the fastest configuration of an engine within an accuracy bound, saved and reused.

::

    import trtflow
    result = trtflow.tune(model, shapes={"x": (64, 3, 224, 224)}, engine="torch", precisions=("fp32", "fp16"))
    print(result.chosen)                       # e.g. "fp16 compile+graphs cl"
    engine = trtflow.load(model, engine="torch", tune=True, example_inputs={"x": x})   # the winner, no measuring

This package is importable as a function too (``trtflow.tune(...)`` is ``trtflow.tune.tune(...)``).
"""

from __future__ import annotations

import sys
import types

from trtflow.tune.accuracy import Bound
from trtflow.tune.result import ConfigResult, TuneResult
from trtflow.tune.search import TuneOptions
from trtflow.tune.tuner import tune

__all__ = ["Bound", "ConfigResult", "TuneOptions", "TuneResult", "tune"]


class _CallableModule(types.ModuleType):
    """``trtflow.tune`` is both this package and the ``tune`` function."""

    def __call__(self, *args, **kwargs) -> TuneResult:
        return tune(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
