"""The PyTorch backend: ``runner.TorchEngine`` (eager, torch.compile, CUDA graphs), ``fuse`` (cuDNN
conv fusions), ``aoti`` (loading AOTInductor packages) and ``package`` (building them)."""
