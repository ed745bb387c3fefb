"""Inference-only graph fusions for the torch engine on CUDA (``TorchEngine(fuse=True)``).

1. Fold each ``BatchNorm2d`` into the ``Conv2d`` before it (eval statistics).
2. Run ``conv -> relu`` as ``torch.cudnn_convolution_relu`` and ``conv -> add(residual) -> relu``
   as ``torch.cudnn_convolution_add_relu``: cuDNN applies bias, residual and ReLU in the
   convolution's epilogue, so the activation is written once instead of three times. Only
   ungrouped convolutions: with grouped and depthwise ones on these kernels too, fused + CUDA
   graphs ran at 0.47x (MobileNetV3-Large) and 0.85x (RegNetY-1.6GF) of eager + graphs on an
   H200, so those keep their ReLU as a separate op (their batch norm is still folded).
3. When the residual of a fused ``conv -> add -> relu`` is itself a convolution used only there
   (ResNet's downsample branch), move that convolution's bias into the fused one's: Inductor runs a
   convolution's bias as a separate kernel over the whole output, which here nothing else absorbs.
4. With ``pad_channels`` (channels-last engines), a fused conv + ReLU on 3 input channels takes them
   zero-padded to 4 (``PAD_TO``): cuDNN's channels-last FP16 kernels pad such an input with a kernel
   of their own, slower than the pad Inductor generates. ResNet-50 at batch 256, FP16, on an H200:
   1.005x-1.022x in four processes. Unfused stems (MobileNetV3's hardswish, EfficientNet's SiLU)
   keep 3 channels: padded, they ran at 0.96x and 0.98x.

The module is traced with ``torch.fx.symbolic_trace``; patterns that do not match exactly (a
conv output used twice, a non-zero padding mode, string padding) are left as they are.
"""

from __future__ import annotations

import logging
import operator
from typing import Any

from trtflow.errors import UsageError

log = logging.getLogger(__name__)


PAD_TO = {3: 4}  # input channels of a convolution -> channels it takes padded (rewrite 4)


def fuse_conv_bn_act(module: Any, pad_channels: bool = False):
    """Return an ``fx.GraphModule`` equivalent to ``module`` (in eval mode) with the fusions applied.

    The graph module shares ``module``'s submodules and changes them: ``module`` is switched to eval
    mode, a fused convolution without a bias gets a zero one, and rewrites 3 and 4 give the
    convolutions they change new bias and weight parameters (a residual convolution loses its bias).
    Rewrites that change a module (1, 3, 4) apply only to modules the graph uses once: a module
    called twice, or whose parameters the forward reads, is left as it is. Pass a module of your
    own (the torch engine passes its copy, never the caller's).

    Raises:
        UsageError: the module cannot be traced by ``torch.fx``.
    """
    import torch
    from torch import fx, nn
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    try:
        gm = fx.symbolic_trace(module.eval())
    except Exception as exc:
        raise UsageError(f"fuse=True needs a module torch.fx can trace; tracing failed: {type(exc).__name__}: {exc}") from exc
    modules = dict(gm.named_modules())
    uses = _uses(gm)  # before any rewrite turns a call into reads of the module's parameters

    def module_of(node, kind):
        if node.op == "call_module" and isinstance(modules.get(node.target), kind):
            return modules[node.target]
        return None

    folded = 0
    for node in list(gm.graph.nodes):
        bn = module_of(node, nn.BatchNorm2d)
        src = node.args[0] if node.args else None
        conv = module_of(src, nn.Conv2d) if isinstance(src, fx.Node) else None
        if bn is None or conv is None or len(src.users) != 1 or uses[src.target] != 1:
            continue
        _set_module(gm, src.target, fuse_conv_bn_eval(conv, bn))
        modules[src.target] = _get_module(gm, src.target)
        node.replace_all_uses_with(src)
        gm.graph.erase_node(node)
        folded += 1

    def is_relu(node):
        return (module_of(node, nn.ReLU) is not None
                or node.op == "call_function" and node.target in (torch.relu, torch.nn.functional.relu)
                or node.op == "call_method" and node.target == "relu")

    def fusable_conv(node):
        conv = module_of(node, nn.Conv2d) if isinstance(node, fx.Node) else None
        if conv is None or len(node.users) != 1 or conv.padding_mode != "zeros" or isinstance(conv.padding, str) \
                or conv.groups != 1:
            return None
        return conv

    fused = moved = padded = 0
    for node in list(gm.graph.nodes):
        if not is_relu(node) or not isinstance(node.args[0], fx.Node):
            continue
        src = node.args[0]
        conv, residual = fusable_conv(src), None
        if conv is None and src.op == "call_function" and src.target in (operator.add, operator.iadd, torch.add) \
                and len(src.users) == 1 and len(src.args) == 2 and not src.kwargs:
            a, b = src.args
            if fusable_conv(a) is not None:
                src, conv, residual = a, fusable_conv(a), b
            elif fusable_conv(b) is not None:
                src, conv, residual = b, fusable_conv(b), a
            if not isinstance(residual, fx.Node) or residual is src:  # conv + 1.0, or y + y
                conv = None
        if conv is None:
            continue
        if conv.bias is None:
            conv.bias = nn.Parameter(torch.zeros(conv.out_channels, dtype=conv.weight.dtype, device=conv.weight.device))
        once = uses[src.target] == 1  # a module used twice keeps its bias and channels
        moved += once and residual is not None and _take_bias(modules, uses, residual, conv)
        with gm.graph.inserting_before(node):
            source = src.args[0]
            if once and pad_channels and conv.in_channels in PAD_TO:
                source = _pad_input(gm, conv, source)
                padded += 1
            weight = gm.graph.get_attr(f"{src.target}.weight")
            bias = gm.graph.get_attr(f"{src.target}.bias")
            geometry = (list(conv.stride), list(conv.padding), list(conv.dilation), conv.groups)
            if residual is None:
                new = gm.graph.call_function(torch.cudnn_convolution_relu, (source, weight, bias, *geometry))
            else:
                new = gm.graph.call_function(
                    torch.cudnn_convolution_add_relu, (source, weight, residual, 1.0, bias, *geometry))
        old_add = node.args[0]
        node.replace_all_uses_with(new)
        gm.graph.erase_node(node)
        if old_add is not src:
            gm.graph.erase_node(old_add)
        gm.graph.erase_node(src)
        fused += 1
    gm.graph.lint()
    gm.delete_all_unused_submodules()
    gm.recompile()
    log.info("fused %d batch norms into convolutions and %d convolutions with their activation; moved %d "
             "residual biases; padded the input channels of %d convolutions", folded, fused, moved, padded)
    return gm


def _uses(gm) -> dict:
    """Module name -> how often the graph uses it: its calls and the reads of its parameters."""
    from collections import Counter

    uses = Counter()
    for node in gm.graph.nodes:
        if node.op == "call_module":
            uses[node.target] += 1
        elif node.op == "get_attr":
            uses[node.target.rpartition(".")[0]] += 1
    return uses


def _take_bias(modules: dict, uses: dict, residual, conv) -> bool:
    """Give ``conv`` a new bias, its own plus that of ``residual`` (a convolution node used once, feeding
    only the fused add), and drop the residual's (a parameter tied elsewhere keeps its values)."""
    import torch
    from torch import nn

    other = modules.get(residual.target) if residual.op == "call_module" else None
    if not isinstance(other, nn.Conv2d) or other.bias is None or len(residual.users) != 1 \
            or other.out_channels != conv.out_channels or uses[residual.target] != 1:
        return False
    with torch.no_grad():
        conv.bias = nn.Parameter(conv.bias + other.bias.to(conv.bias.dtype), requires_grad=False)
    other.bias = None
    return True


def _pad_input(gm, conv, source):
    """Rewrite 4: widen ``conv``'s weight with zero input channels to ``PAD_TO``; return ``source`` padded to match."""
    import torch
    from torch import nn

    extra = PAD_TO[conv.in_channels] - conv.in_channels
    with torch.no_grad():
        weight = torch.cat([conv.weight, conv.weight.new_zeros(conv.out_channels, extra, *conv.kernel_size)], 1)
    conv.weight, conv.in_channels = nn.Parameter(weight, requires_grad=False), conv.in_channels + extra
    return gm.graph.call_function(torch.nn.functional.pad, (source, (0, 0, 0, 0, 0, extra)))


def _get_module(root, target: str):
    for part in target.split("."):
        root = getattr(root, part)
    return root


def _set_module(root, target: str, value) -> None:
    *parents, last = target.split(".")
    for part in parents:
        root = getattr(root, part)
    setattr(root, last, value)
