"""``MODULE:FACTORY`` specs: import a module and call a factory that returns an ``nn.Module``."""

from __future__ import annotations

import importlib
import sys
from typing import Any

from trtflow.errors import ModelLoadError


def is_factory_spec(text: str) -> bool:
    """True for ``pkg.module:factory`` (and not for a path such as ``C:/x.onnx`` or ``a.onnx``)."""
    mod, sep, attr = str(text).partition(":")
    return bool(sep) and attr.isidentifier() and all(p.isidentifier() for p in mod.split("."))


def load_factory(spec: str) -> Any:
    """Import ``MODULE`` and call ``FACTORY()`` from a ``MODULE:FACTORY`` spec.

    The current directory is importable, as with ``python -m``.

    Raises:
        ModelLoadError: a malformed spec, a module that does not import, a missing or failing factory.
    """
    if not is_factory_spec(spec):
        raise ModelLoadError(f"'{spec}' is not a MODULE:FACTORY spec (e.g. mypkg.models:make_model)")
    mod_name, _, attr = spec.partition(":")
    if "" not in sys.path:
        sys.path.insert(0, "")
    try:
        module = importlib.import_module(mod_name)
    except Exception as exc:
        raise ModelLoadError(
            f"cannot import module '{mod_name}' from '{spec}' ({type(exc).__name__}: {exc}). "
            "Run from the folder that contains it or add it to PYTHONPATH."
        ) from None
    factory = getattr(module, attr, None)
    if factory is None:
        raise ModelLoadError(f"module '{mod_name}' has no attribute '{attr}'")
    if not callable(factory):
        return factory
    try:
        return factory()
    except Exception as exc:
        raise ModelLoadError(f"{spec}() failed: {type(exc).__name__}: {exc}") from None
