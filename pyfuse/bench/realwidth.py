"""Real-width image models for the benchmark, written in plain ``torch.nn``.

The synthetic workloads use 4-channel convolutions, where folding BatchNorm into
the weights costs next to nothing; in real models it is most of an eval fusion
(ResNet-50's 53 conv+BN pairs hold 23.5M conv weights). These builders follow
torchvision's architectures at their published widths (module names, layer
counts, channels, kernel sizes, strides, the order of operations in ``forward``),
so the traced graphs and the fused weights are those of the torchvision models,
without needing torchvision:

* :func:`resnet50`: Bottleneck blocks [3, 4, 6, 3], 25.6M parameters.
* :func:`mobilenet_v2`: inverted residuals, ReLU6, 3.5M parameters.
* :func:`efficientnet_b0`: MBConv with squeeze-excitation and SiLU, 5.3M
  parameters (stochastic depth left out: it is the identity in eval and an
  unfusable function node in training; it changes no fusion).
* :func:`densenet121`: dense blocks [6, 12, 24, 16], growth 32, 8.0M parameters
  (the plain forward, without torchvision's checkpointing branches).

Weights are initialised from a fixed seed without touching the global RNG, and
every BatchNorm gets non-trivial running statistics and affine parameters, so
folding computes real values. The models are never run by the benchmark.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from .specs import _randomize_stats

__all__ = [
    "MODELS",
    "build_model",
    "densenet121",
    "efficientnet_b0",
    "mobilenet_v2",
    "resnet50",
]


# ---------------------------------------------------------------------------
# ResNet-50


class Bottleneck(nn.Module):
    """torchvision's ResNet Bottleneck (stride on the 3x3 conv, expansion 4)."""

    expansion = 4

    def __init__(
        self,
        inplanes: int,
        planes: int,
        stride: int = 1,
        downsample: nn.Module | None = None,
    ) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * self.expansion, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        if self.downsample is not None:
            identity = self.downsample(x)
        out += identity
        return self.relu(out)  # type: ignore[no-any-return]


class ResNet(nn.Module):
    """torchvision's ResNet with Bottleneck blocks."""

    def __init__(self, layers: tuple[int, int, int, int], num_classes: int = 1000):
        super().__init__()
        self.inplanes = 64
        self.conv1 = nn.Conv2d(3, 64, 7, 2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, padding=1)
        self.layer1 = self._make_layer(64, layers[0])
        self.layer2 = self._make_layer(128, layers[1], 2)
        self.layer3 = self._make_layer(256, layers[2], 2)
        self.layer4 = self._make_layer(512, layers[3], 2)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(512 * Bottleneck.expansion, num_classes)

    def _make_layer(self, planes: int, blocks: int, stride: int = 1) -> nn.Sequential:
        downsample = None
        out = planes * Bottleneck.expansion
        if stride != 1 or self.inplanes != out:
            downsample = nn.Sequential(
                nn.Conv2d(self.inplanes, out, 1, stride, bias=False),
                nn.BatchNorm2d(out),
            )
        layers = [Bottleneck(self.inplanes, planes, stride, downsample)]
        self.inplanes = out
        layers += [Bottleneck(out, planes) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        x = torch.flatten(self.avgpool(x), 1)
        return self.fc(x)  # type: ignore[no-any-return]


# ---------------------------------------------------------------------------
# MobileNetV2 and EfficientNet-B0 building blocks


def _make_divisible(v: float, divisor: int = 8) -> int:
    new_v = max(divisor, int(v + divisor / 2) // divisor * divisor)
    if new_v < 0.9 * v:
        new_v += divisor
    return new_v


class ConvNormActivation(nn.Sequential):
    """torchvision's Conv2dNormActivation: conv (no bias), BN, optional activation."""

    def __init__(
        self,
        cin: int,
        cout: int,
        kernel_size: int = 3,
        stride: int = 1,
        groups: int = 1,
        activation: Callable[[], nn.Module] | None = nn.ReLU6,
    ) -> None:
        layers: list[nn.Module] = [
            nn.Conv2d(
                cin,
                cout,
                kernel_size,
                stride,
                (kernel_size - 1) // 2,
                groups=groups,
                bias=False,
            ),
            nn.BatchNorm2d(cout),
        ]
        if activation is not None:
            layers.append(activation())
        super().__init__(*layers)


class InvertedResidual(nn.Module):
    """MobileNetV2's block: expand 1x1, depthwise 3x3, linear 1x1 projection."""

    def __init__(self, cin: int, cout: int, stride: int, expand_ratio: int) -> None:
        super().__init__()
        hidden = round(cin * expand_ratio)
        self.use_res_connect = stride == 1 and cin == cout
        layers: list[nn.Module] = []
        if expand_ratio != 1:
            layers.append(ConvNormActivation(cin, hidden, 1))
        layers += [
            ConvNormActivation(hidden, hidden, 3, stride, groups=hidden),
            nn.Conv2d(hidden, cout, 1, bias=False),
            nn.BatchNorm2d(cout),
        ]
        self.conv = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.use_res_connect:
            return x + self.conv(x)  # type: ignore[no-any-return]
        return self.conv(x)  # type: ignore[no-any-return]


class MobileNetV2(nn.Module):
    """torchvision's MobileNetV2 at width 1.0."""

    SETTINGS = (
        (1, 16, 1, 1),
        (6, 24, 2, 2),
        (6, 32, 3, 2),
        (6, 64, 4, 2),
        (6, 96, 3, 1),
        (6, 160, 3, 2),
        (6, 320, 1, 1),
    )

    def __init__(self, num_classes: int = 1000) -> None:
        super().__init__()
        cin = 32
        last = 1280
        features: list[nn.Module] = [ConvNormActivation(3, cin, stride=2)]
        for t, c, n, s in self.SETTINGS:
            cout = _make_divisible(c)
            for i in range(n):
                features.append(InvertedResidual(cin, cout, s if i == 0 else 1, t))
                cin = cout
        features.append(ConvNormActivation(cin, last, 1))
        self.features = nn.Sequential(*features)
        self.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(last, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(x)
        x = F.adaptive_avg_pool2d(x, (1, 1))
        x = torch.flatten(x, 1)
        return self.classifier(x)  # type: ignore[no-any-return]


class SqueezeExcitation(nn.Module):
    """torchvision's SqueezeExcitation (SiLU inside, sigmoid gate)."""

    def __init__(self, channels: int, squeeze: int) -> None:
        super().__init__()
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc1 = nn.Conv2d(channels, squeeze, 1)
        self.fc2 = nn.Conv2d(squeeze, channels, 1)
        self.activation = nn.SiLU(inplace=True)
        self.scale_activation = nn.Sigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scale = self.avgpool(x)
        scale = self.fc2(self.activation(self.fc1(scale)))
        return self.scale_activation(scale) * x  # type: ignore[no-any-return]


class MBConv(nn.Module):
    """EfficientNet's block: expand, depthwise, squeeze-excitation, project."""

    def __init__(
        self, cin: int, cout: int, kernel: int, stride: int, expand_ratio: int
    ) -> None:
        super().__init__()
        self.use_res_connect = stride == 1 and cin == cout
        hidden = _make_divisible(cin * expand_ratio)
        layers: list[nn.Module] = []
        if hidden != cin:
            layers.append(ConvNormActivation(cin, hidden, 1, activation=nn.SiLU))
        layers += [
            ConvNormActivation(
                hidden, hidden, kernel, stride, groups=hidden, activation=nn.SiLU
            ),
            SqueezeExcitation(hidden, max(1, cin // 4)),
            ConvNormActivation(hidden, cout, 1, activation=None),
        ]
        self.block = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        result = self.block(x)
        if self.use_res_connect:
            result = result + x
        return result  # type: ignore[no-any-return]


class EfficientNet(nn.Module):
    """torchvision's EfficientNet-B0 (width and depth multipliers 1.0)."""

    # expand ratio, kernel, stride, in, out, layers
    STAGES = (
        (1, 3, 1, 32, 16, 1),
        (6, 3, 2, 16, 24, 2),
        (6, 5, 2, 24, 40, 2),
        (6, 3, 2, 40, 80, 3),
        (6, 5, 1, 80, 112, 3),
        (6, 5, 2, 112, 192, 4),
        (6, 3, 1, 192, 320, 1),
    )

    def __init__(self, num_classes: int = 1000) -> None:
        super().__init__()
        layers: list[nn.Module] = [ConvNormActivation(3, 32, 3, 2, activation=nn.SiLU)]
        for expand, k, stride, cin, cout, n in self.STAGES:
            stage = [
                MBConv(
                    cin if i == 0 else cout, cout, k, stride if i == 0 else 1, expand
                )
                for i in range(n)
            ]
            layers.append(nn.Sequential(*stage))
        last = 4 * 320
        layers.append(ConvNormActivation(320, last, 1, activation=nn.SiLU))
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(
            nn.Dropout(0.2, inplace=True), nn.Linear(last, num_classes)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.avgpool(self.features(x))
        x = torch.flatten(x, 1)
        return self.classifier(x)  # type: ignore[no-any-return]


# ---------------------------------------------------------------------------
# DenseNet-121


class DenseLayer(nn.Module):
    """BN-ReLU-conv 1x1 (bottleneck), BN-ReLU-conv 3x3 (growth)."""

    def __init__(self, cin: int, growth: int, bn_size: int) -> None:
        super().__init__()
        self.norm1 = nn.BatchNorm2d(cin)
        self.relu1 = nn.ReLU(inplace=True)
        self.conv1 = nn.Conv2d(cin, bn_size * growth, 1, bias=False)
        self.norm2 = nn.BatchNorm2d(bn_size * growth)
        self.relu2 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(bn_size * growth, growth, 3, padding=1, bias=False)

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        concated = torch.cat(features, 1)
        bottleneck = self.conv1(self.relu1(self.norm1(concated)))
        return self.conv2(self.relu2(self.norm2(bottleneck)))  # type: ignore[no-any-return]


class DenseBlock(nn.ModuleDict):
    def __init__(self, n: int, cin: int, growth: int, bn_size: int) -> None:
        super().__init__()
        for i in range(n):
            self.add_module(
                f"denselayer{i + 1}", DenseLayer(cin + i * growth, growth, bn_size)
            )

    def forward(self, init: torch.Tensor) -> torch.Tensor:
        features = [init]
        for layer in self.values():
            features.append(layer(features))
        return torch.cat(features, 1)


class Transition(nn.Sequential):
    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.add_module("norm", nn.BatchNorm2d(cin))
        self.add_module("relu", nn.ReLU(inplace=True))
        self.add_module("conv", nn.Conv2d(cin, cout, 1, bias=False))
        self.add_module("pool", nn.AvgPool2d(2, 2))


class DenseNet(nn.Module):
    """torchvision's DenseNet-121 (growth 32, blocks 6/12/24/16, 64 initial)."""

    def __init__(
        self,
        growth: int = 32,
        block_config: tuple[int, ...] = (6, 12, 24, 16),
        init_features: int = 64,
        bn_size: int = 4,
        num_classes: int = 1000,
    ) -> None:
        super().__init__()
        self.features = nn.Sequential()
        self.features.add_module(
            "conv0", nn.Conv2d(3, init_features, 7, 2, 3, bias=False)
        )
        self.features.add_module("norm0", nn.BatchNorm2d(init_features))
        self.features.add_module("relu0", nn.ReLU(inplace=True))
        self.features.add_module("pool0", nn.MaxPool2d(3, 2, 1))
        c = init_features
        for i, n in enumerate(block_config):
            self.features.add_module(
                f"denseblock{i + 1}", DenseBlock(n, c, growth, bn_size)
            )
            c += n * growth
            if i != len(block_config) - 1:
                self.features.add_module(f"transition{i + 1}", Transition(c, c // 2))
                c //= 2
        self.features.add_module("norm5", nn.BatchNorm2d(c))
        self.classifier = nn.Linear(c, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.features(x), inplace=True)
        out = F.adaptive_avg_pool2d(out, (1, 1))
        out = torch.flatten(out, 1)
        return self.classifier(out)  # type: ignore[no-any-return]


# ---------------------------------------------------------------------------
# builders


def resnet50() -> nn.Module:
    return ResNet((3, 4, 6, 3))


def mobilenet_v2() -> nn.Module:
    return MobileNetV2()


def efficientnet_b0() -> nn.Module:
    return EfficientNet()


def densenet121() -> nn.Module:
    return DenseNet()


#: name -> builder of the untrained-but-initialised model
MODELS: dict[str, Callable[[], nn.Module]] = {
    "resnet50": resnet50,
    "mobilenet_v2": mobilenet_v2,
    "efficientnet_b0": efficientnet_b0,
    "densenet121": densenet121,
}


def build_model(name: str, *, train: bool = False, seed: int = 0) -> nn.Module:
    """The model ``name`` of :data:`MODELS`, seeded, with random BN statistics,
    in train mode (for QAT fusion) or eval mode."""
    try:
        factory = MODELS[name]
    except KeyError:
        raise ValueError(
            f"unknown real-width model {name!r}; expected one of {sorted(MODELS)}"
        ) from None
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = factory()
        for m in model.modules():
            _randomize_stats(m)
    model.train(train)
    return model
