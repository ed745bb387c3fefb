"""Small modules for the export / compare / CLI tests (``tests.models.export_zoo:NAME`` specs)."""

from __future__ import annotations


def embedding():
    """int64 token ids (batch, seq) -> (batch, 3) float32: an Embedding, a Linear and a mean."""
    import torch

    class Embed(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.emb = torch.nn.Embedding(10, 4)
            self.lin = torch.nn.Linear(4, 3)

        def forward(self, ids):
            return self.lin(self.emb(ids)).mean(1)

    torch.manual_seed(0)
    return Embed().eval()


def baked():
    """Multiplies by the batch size as a Python int: exporters cannot keep the batch dynamic."""
    import torch

    class Baked(torch.nn.Module):
        def forward(self, x):
            return x * int(x.shape[0])

    return Baked()


def dict_out():
    """Returns a dict of two tensors: the ONNX outputs take the keys as names."""
    import torch

    class DictOut(torch.nn.Module):
        def forward(self, x, y):
            return {"total": x + y, "prod": x * y}

    return DictOut()


def with_examples():
    """A factory returning (module, example inputs): no --input needed."""
    import torch

    from tests.models.tiny import tiny_module

    return tiny_module(), (torch.randn(2, 3, 16, 16),)


def eigh():
    """Uses torch.linalg.eigh, which neither ONNX exporter can translate."""
    import torch

    class Eigh(torch.nn.Module):
        def forward(self, x):
            return torch.linalg.eigh(x @ x.T)[0]

    return Eigh()


def pair_with_examples():
    """Two inputs and a factory returning their examples by name: an --input file for one of them
    leaves the other to the factory's example."""
    import torch

    return dict_out(), {"x": torch.randn(2, 3), "y": torch.randn(2, 3)}


def dict_out_examples_unnamed():
    """``dict_out`` with its two examples as a tuple (no names)."""
    import torch

    return dict_out(), (torch.randn(2, 3), torch.randn(2, 3))
