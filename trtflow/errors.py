"""The one exception tree of trtflow.

Every error trtflow raises on purpose is a ``TrtflowError``; the CLI turns each into
one line and exit code 2 (bad input) or 1 (a check that ran and failed)::

    TrtflowError
    ├── MissingDependencyError (also ImportError)  an optional package is not installed
    ├── UsageError                                 a bad option, flag or argument value
    ├── ModelLoadError                             missing, truncated or non-ONNX file, module spec
    ├── InputError                                 a feed that does not match the engine
    │   ├── InputNameError                         unknown or missing input names
    │   ├── InputShapeError                        wrong rank, a dim outside the bounds
    │   └── InputDtypeError                        a dtype that cannot be cast without loss
    ├── ExportError                                PyTorch -> ONNX failed
    ├── GraphError                                 an ONNX edit failed
    ├── BuildError                                 ONNX -> engine failed (lists failing nodes; exit 1)
    ├── EngineIncompatibleError                    engine built for another TensorRT or GPU
    ├── EngineError                                an engine failed while running
    └── MismatchError                              a comparison or verification out of tolerance

``MismatchError`` and ``BuildError`` exit with 1: the tool ran and the model failed the check
(numbers out of tolerance, a network TensorRT cannot build); every other error is bad input (2).
"""

from __future__ import annotations


class TrtflowError(Exception):
    """Base of every trtflow error. ``exit_code`` is what the CLI returns."""

    exit_code = 2


class MissingDependencyError(TrtflowError, ImportError):
    """An optional dependency is missing; the message names the extra to install."""


class UsageError(TrtflowError):
    """A bad option, flag or argument value."""


class ModelLoadError(TrtflowError):
    """A model file or module spec could not be loaded."""


class InputError(TrtflowError):
    """A feed does not match the engine's inputs."""


class InputNameError(InputError):
    """Unknown or missing input names."""


class InputShapeError(InputError):
    """Wrong rank, or a dimension outside the engine's bounds."""


class InputDtypeError(InputError):
    """A dtype that cannot be cast to the engine's dtype without loss."""


class ExportError(TrtflowError):
    """Exporting a PyTorch module to ONNX failed."""


class GraphError(TrtflowError):
    """An ONNX graph edit failed."""


class BuildError(TrtflowError):
    """Parsing or building an engine failed.

    Attributes:
        failures: one dict per failing node: ``node``, ``op``, ``reason``, ``fix``.
        stage: "parse" (the ONNX parser refused the model) or "build" (the builder failed).
    """

    exit_code = 1

    def __init__(self, message: str, failures: list[dict] | None = None, stage: str = "build"):
        super().__init__(message)
        self.failures = failures or []
        self.stage = stage


class EngineIncompatibleError(TrtflowError):
    """A serialized engine was built for another TensorRT version or GPU."""


class EngineError(TrtflowError):
    """An engine failed while running."""


class MismatchError(TrtflowError):
    """A comparison or verification found results out of tolerance."""

    exit_code = 1

    def __init__(self, message: str, report: object | None = None):
        super().__init__(message)
        self.report = report
