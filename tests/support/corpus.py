"""Model corpus for the pyfuse exactness tests.

Every entry of ``MODELS`` is a :class:`CorpusModel`: ``factory()`` returns a fresh,
deterministically initialised ``nn.Module`` (``torch.manual_seed`` inside, left in
train mode: the test picks ``.eval()`` or ``.train()``), ``example_inputs_factory()``
returns a fresh tuple of seeded example inputs, and ``backends`` names the backend
configs (keys of ``BACKENDS``) the model is checked with.

The "real" models mimic the block structure of well-known architectures (ResNet,
MobileNetV2, EfficientNet, VGG, DenseNet, 3D ResNets, MLPs, 1d audio nets, decoders)
with narrow channels and small inputs so the whole corpus runs quickly on a CPU.
The small models pin down individual matching rules of the reference
(``torch.ao.quantization.fx.fuse.fuse``, torch/ao/quantization/fx/fuse.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F
import torch.nn.utils.parametrize as parametrize

# backend_config's builders use this submodule without importing it
import torch.ao.quantization.backend_config.utils  # noqa: F401

# --------------------------------------------------------------------------------------
# Backend configs
# --------------------------------------------------------------------------------------


def _native():
    from torch.ao.quantization.backend_config import get_native_backend_config

    return get_native_backend_config()


def _fbgemm():
    from torch.ao.quantization.backend_config import get_fbgemm_backend_config

    return get_fbgemm_backend_config()


def _qnnpack():
    from torch.ao.quantization.backend_config import get_qnnpack_backend_config

    return get_qnnpack_backend_config()


def _x86():
    from torch.ao.quantization.backend_config.x86 import get_x86_backend_config

    return get_x86_backend_config()


def _onednn():
    from torch.ao.quantization.backend_config import get_onednn_backend_config

    return get_onednn_backend_config()


def _tensorrt():
    from torch.ao.quantization.backend_config import get_tensorrt_backend_config

    return get_tensorrt_backend_config()


def _executorch():
    from torch.ao.quantization.backend_config.executorch import (
        get_executorch_backend_config,
    )

    return get_executorch_backend_config()


#: backend name -> zero-argument function returning a fresh ``BackendConfig``
BACKENDS: dict[str, Callable] = {
    "native": _native,
    "fbgemm": _fbgemm,
    "qnnpack": _qnnpack,
    "x86": _x86,
    "onednn": _onednn,
    "tensorrt": _tensorrt,
    "executorch": _executorch,
}


@dataclass(frozen=True)
class CorpusModel:
    name: str
    factory: Callable[[], nn.Module]
    example_inputs_factory: Callable[[], tuple]
    backends: tuple[str, ...] = ("native",)
    #: free-form note on what the model exercises
    note: str = field(default="", compare=False)


def _inputs(*shapes, dtype=torch.float32, seed=1234):
    def make():
        g = torch.Generator().manual_seed(seed)
        return tuple(torch.randn(*s, generator=g, dtype=dtype) for s in shapes)

    return make


def _seeded(cls, *args, seed=0, **kwargs):
    """Factory building ``cls(*args, **kwargs)`` under a fixed seed, with BN stats randomised."""

    def make():
        torch.manual_seed(seed)
        m = cls(*args, **kwargs)
        _randomize_bn_stats(m)
        return m

    make.__name__ = f"make_{cls.__name__}"
    return make


def _randomize_bn_stats(model: nn.Module) -> None:
    """Give every BN non-trivial running stats and affine params, so BN folding matters.

    Uses the global RNG, which the factory has just seeded.
    """
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                if m.running_mean is not None:
                    m.running_mean.copy_(torch.randn_like(m.running_mean) * 0.1)
                    m.running_var.copy_(torch.rand_like(m.running_var) + 0.5)
                if m.affine:
                    m.weight.copy_(torch.rand_like(m.weight) + 0.5)
                    m.bias.copy_(torch.randn_like(m.bias) * 0.1)


# --------------------------------------------------------------------------------------
# Tiny models
# --------------------------------------------------------------------------------------


class TinyConvBnReLU(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.relu = nn.ReLU()

    def forward(self, x):
        return self.relu(self.bn(self.conv(x)))


class TinyConvBnFReLUNoBias(nn.Module):
    """Conv without bias + BN + F.relu(inplace=True) (kwarg); run in float64."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 5, 3, bias=False)
        self.bn = nn.BatchNorm2d(5)

    def forward(self, x):
        return F.relu(self.bn(self.conv(x)), inplace=True)


def _tiny_double():
    torch.manual_seed(0)
    m = TinyConvBnFReLUNoBias()
    _randomize_bn_stats(m)
    return m.double()


class TinyLinearReLU(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(8, 6)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x):
        return self.relu(self.fc(x))


class TinyConvReLUGraphOutput(nn.Module):
    """Two outputs: a fused chain feeding the output directly and a plain conv."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 4, 1)
        self.conv2 = nn.Conv2d(3, 4, 1)
        self.bn2 = nn.BatchNorm2d(4)

    def forward(self, x):
        return F.relu(self.conv1(x)), self.bn2(self.conv2(x))


# --------------------------------------------------------------------------------------
# ResNet family
# --------------------------------------------------------------------------------------


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, inplanes, planes, stride=1, downsample=None):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample

    def forward(self, x):
        identity = x
        out = self.conv1(x)
        out = self.bn1(out)
        out = self.relu(out)
        out = self.conv2(out)
        out = self.bn2(out)
        if self.downsample is not None:
            identity = self.downsample(x)
        out += identity  # operator.iadd, as in torchvision
        out = self.relu(out)
        return out


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, inplanes, planes, stride=1, downsample=None, add="op"):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * self.expansion, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)  # shared, called three times
        self.downsample = downsample
        self.add = add

    def forward(self, x):
        identity = x
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        if self.downsample is not None:
            identity = self.downsample(x)
        if self.add == "op":
            out = out + identity
        elif self.add == "torch":
            out = torch.add(out, identity)
        else:
            out = identity + out
        return self.relu(out)


class ResNet(nn.Module):
    def __init__(self, block, layers, width=8, num_classes=10, adds=("op",), frozen_stem=False):
        super().__init__()
        self.inplanes = width
        self.conv1 = nn.Conv2d(3, width, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        self._adds = adds
        self._nblk = 0
        self.layer1 = self._make_layer(block, width, layers[0])
        self.layer2 = self._make_layer(block, width * 2, layers[1], stride=2)
        self.layer3 = self._make_layer(block, width * 4, layers[2], stride=2)
        self.layer4 = self._make_layer(block, width * 8, layers[3], stride=2)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(width * 8 * block.expansion, num_classes)
        if frozen_stem:
            for p in list(self.conv1.parameters()) + list(self.bn1.parameters()):
                p.requires_grad_(False)

    def _make_layer(self, block, planes, blocks, stride=1):
        downsample = None
        if stride != 1 or self.inplanes != planes * block.expansion:
            downsample = nn.Sequential(
                nn.Conv2d(self.inplanes, planes * block.expansion, 1, stride, bias=False),
                nn.BatchNorm2d(planes * block.expansion),
            )
        layers = []
        for i in range(blocks):
            kw = {}
            if block is Bottleneck:
                kw["add"] = self._adds[self._nblk % len(self._adds)]
            self._nblk += 1
            layers.append(block(self.inplanes, planes, stride if i == 0 else 1,
                                downsample if i == 0 else None, **kw))
            self.inplanes = planes * block.expansion
        return nn.Sequential(*layers)

    def forward(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer1(x)
        x = self.layer2(x)
        x = self.layer3(x)
        x = self.layer4(x)
        x = torch.flatten(self.avgpool(x), 1)
        return self.fc(x)


def _resnet18():
    torch.manual_seed(0)
    m = ResNet(BasicBlock, [2, 2, 2, 2], width=8, frozen_stem=True)
    _randomize_bn_stats(m)
    return m


def _resnet34():
    torch.manual_seed(1)
    m = ResNet(BasicBlock, [3, 4, 6, 3], width=4)
    _randomize_bn_stats(m)
    return m


def _resnet50():
    torch.manual_seed(2)
    m = ResNet(Bottleneck, [3, 4, 6, 3], width=4, adds=("op", "torch", "rev"))
    _randomize_bn_stats(m)
    return m


def _resnet152():
    torch.manual_seed(3)
    m = ResNet(Bottleneck, [3, 8, 36, 3], width=2, adds=("torch", "op", "rev"))
    _randomize_bn_stats(m)
    return m


# --------------------------------------------------------------------------------------
# MobileNetV2
# --------------------------------------------------------------------------------------


class ConvBNReLU6(nn.Sequential):
    def __init__(self, cin, cout, k=3, stride=1, groups=1):
        super().__init__(
            nn.Conv2d(cin, cout, k, stride, (k - 1) // 2, groups=groups, bias=False),
            nn.BatchNorm2d(cout),
            nn.ReLU6(inplace=True),
        )


class InvertedResidual(nn.Module):
    def __init__(self, cin, cout, stride, expand):
        super().__init__()
        hidden = cin * expand
        self.use_res = stride == 1 and cin == cout
        layers = []
        if expand != 1:
            layers.append(ConvBNReLU6(cin, hidden, k=1))
        layers += [
            ConvBNReLU6(hidden, hidden, stride=stride, groups=hidden),  # depthwise
            nn.Conv2d(hidden, cout, 1, bias=False),
            nn.BatchNorm2d(cout),
        ]
        self.conv = nn.Sequential(*layers)

    def forward(self, x):
        if self.use_res:
            return x + self.conv(x)
        return self.conv(x)


class MobileNetV2(nn.Module):
    def __init__(self, width=0.25, num_classes=10):
        super().__init__()
        cfg = [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2),
               (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1)]
        cin = max(int(32 * width), 4)
        feats = [ConvBNReLU6(3, cin, stride=2)]
        for t, c, n, s in cfg:
            cout = max(int(c * width), 4)
            for i in range(n):
                feats.append(InvertedResidual(cin, cout, s if i == 0 else 1, t))
                cin = cout
        feats.append(ConvBNReLU6(cin, 64, k=1))
        self.features = nn.Sequential(*feats)
        self.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(64, num_classes))

    def forward(self, x):
        x = self.features(x)
        x = F.adaptive_avg_pool2d(x, 1).reshape(x.shape[0], -1)
        return self.classifier(x)


# --------------------------------------------------------------------------------------
# EfficientNet
# --------------------------------------------------------------------------------------


class SqueezeExcite(nn.Module):
    """SE with either 1x1 convs (conv + ReLU fusable) or Linear layers (linear + ReLU)."""

    def __init__(self, c, squeeze, kind):
        super().__init__()
        self.kind = kind
        if kind == "conv":
            self.fc1 = nn.Conv2d(c, squeeze, 1)
            self.fc2 = nn.Conv2d(squeeze, c, 1)
        else:
            self.fc1 = nn.Linear(c, squeeze)
            self.fc2 = nn.Linear(squeeze, c)
        self.act = nn.ReLU()
        self.gate = nn.Sigmoid()

    def forward(self, x):
        if self.kind == "conv":
            s = F.adaptive_avg_pool2d(x, 1)
            s = self.gate(self.fc2(self.act(self.fc1(s))))
            return x * s
        s = x.mean((2, 3))
        s = self.gate(self.fc2(F.relu(self.fc1(s))))
        return x * s[:, :, None, None]


class MBConv(nn.Module):
    def __init__(self, cin, cout, k, stride, expand, se_kind):
        super().__init__()
        hidden = cin * expand
        self.use_res = stride == 1 and cin == cout
        self.expand = None
        if expand != 1:
            self.expand = nn.Sequential(nn.Conv2d(cin, hidden, 1, bias=False),
                                        nn.BatchNorm2d(hidden), nn.SiLU())
        self.dw_conv = nn.Conv2d(hidden, hidden, k, stride, k // 2, groups=hidden, bias=False)
        self.dw_bn = nn.BatchNorm2d(hidden)
        self.dw_act = nn.SiLU()
        self.se = SqueezeExcite(hidden, max(1, cin // 4), se_kind)
        self.project_conv = nn.Conv2d(hidden, cout, 1, bias=False)
        self.project_bn = nn.BatchNorm2d(cout)

    def forward(self, x):
        out = x
        if self.expand is not None:
            out = self.expand(out)
        out = self.dw_act(self.dw_bn(self.dw_conv(out)))
        out = self.se(out)
        out = self.project_bn(self.project_conv(out))
        if self.use_res:
            out = out + x
        return out


class EfficientNet(nn.Module):
    def __init__(self, num_classes=10):
        super().__init__()
        cfg = [(1, 3, 1, 1, 8), (6, 3, 2, 2, 12), (6, 5, 2, 2, 16), (6, 3, 3, 2, 24),
               (6, 5, 3, 1, 32), (6, 5, 4, 2, 40), (6, 3, 1, 1, 48)]
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, 2, 1, bias=False), nn.BatchNorm2d(8), nn.SiLU())
        blocks = []
        cin = 8
        idx = 0
        for t, k, n, s, c in cfg:
            for i in range(n):
                blocks.append(MBConv(cin, c, k, s if i == 0 else 1, t,
                                     "conv" if idx % 2 == 0 else "linear"))
                cin = c
                idx += 1
        self.blocks = nn.Sequential(*blocks)
        self.head = nn.Sequential(nn.Conv2d(cin, 64, 1, bias=False), nn.BatchNorm2d(64), nn.SiLU())
        self.fc = nn.Linear(64, num_classes)

    def forward(self, x):
        x = self.head(self.blocks(self.stem(x)))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


# --------------------------------------------------------------------------------------
# VGG with every flavour of relu
# --------------------------------------------------------------------------------------


class VGG(nn.Module):
    """VGG-16 layout; the relu after each conv cycles through many spellings.

    Fusable with a conv: nn.ReLU(inplace=True), nn.ReLU(), F.relu(x), F.relu(x, inplace=True).
    Not fusable: x.relu() (call_method), torch.relu (different callable),
    F.relu(x, True) (two positional args: arity mismatch), F.relu(input=x) (no args).
    """

    CFG = [16, 16, "M", 32, 32, "M", 64, 64, 64, "M", 64, 64, 64, "M", 64, 64, 64, "M"]
    RELUS = ["module_inplace", "functional", "method", "module", "torch", "functional_inplace_kw",
             "functional_inplace_pos", "functional_kwonly"]

    def __init__(self, batch_norm: bool, num_classes=10):
        super().__init__()
        self.convs = nn.ModuleList()
        self.bns = nn.ModuleList()
        self.acts = nn.ModuleDict()
        self.plan = []
        cin = 3
        i = 0
        for v in self.CFG:
            if v == "M":
                self.plan.append(("pool", None))
                continue
            self.convs.append(nn.Conv2d(cin, v, 3, padding=1))
            if batch_norm:
                self.bns.append(nn.BatchNorm2d(v))
            kind = self.RELUS[i % len(self.RELUS)]
            if kind == "module_inplace":
                self.acts[str(i)] = nn.ReLU(inplace=True)
            elif kind == "module":
                self.acts[str(i)] = nn.ReLU()
            self.plan.append((kind, i))
            cin = v
            i += 1
        self.batch_norm = batch_norm
        self.pool = nn.MaxPool2d(2)
        self.classifier = nn.Sequential(
            nn.Linear(64, 32), nn.ReLU(True), nn.Dropout(),
            nn.Linear(32, 32), nn.ReLU(True), nn.Dropout(),
            nn.Linear(32, num_classes),
        )

    def forward(self, x):
        for kind, i in self.plan:
            if kind == "pool":
                x = self.pool(x)
                continue
            x = self.convs[i](x)
            if self.batch_norm:
                x = self.bns[i](x)
            if kind in ("module_inplace", "module"):
                x = self.acts[str(i)](x)
            elif kind == "functional":
                x = F.relu(x)
            elif kind == "method":
                x = x.relu()
            elif kind == "torch":
                x = torch.relu(x)
            elif kind == "functional_inplace_kw":
                x = F.relu(x, inplace=True)
            elif kind == "functional_inplace_pos":
                x = F.relu(x, True)
            else:
                x = F.relu(input=x)
        x = torch.flatten(x, 1)
        return self.classifier(x)


# --------------------------------------------------------------------------------------
# DenseNet
# --------------------------------------------------------------------------------------


class DenseLayer(nn.Module):
    def __init__(self, cin, growth, bn_size):
        super().__init__()
        self.norm1 = nn.BatchNorm2d(cin)
        self.relu1 = nn.ReLU(inplace=True)
        self.conv1 = nn.Conv2d(cin, bn_size * growth, 1, bias=False)
        self.norm2 = nn.BatchNorm2d(bn_size * growth)
        self.relu2 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(bn_size * growth, growth, 3, padding=1, bias=False)

    def forward(self, features):
        x = torch.cat(features, 1)
        x = self.conv1(self.relu1(self.norm1(x)))
        return self.conv2(self.relu2(self.norm2(x)))


class DenseBlock(nn.ModuleDict):
    def __init__(self, n, cin, growth, bn_size):
        super().__init__()
        for i in range(n):
            self[f"denselayer{i + 1}"] = DenseLayer(cin + i * growth, growth, bn_size)

    def forward(self, x):
        features = [x]
        for layer in self.values():
            features.append(layer(features))
        return torch.cat(features, 1)


class Transition(nn.Sequential):
    def __init__(self, cin, cout):
        super().__init__()
        self.norm = nn.BatchNorm2d(cin)
        self.relu = nn.ReLU(inplace=True)
        self.conv = nn.Conv2d(cin, cout, 1, bias=False)
        self.pool = nn.AvgPool2d(2, 2)


class DenseNet(nn.Module):
    def __init__(self, growth=4, block_config=(6, 12, 24, 16), init=8, bn_size=2, num_classes=10):
        super().__init__()
        self.features = nn.Sequential()
        self.features.add_module("conv0", nn.Conv2d(3, init, 3, 1, 1, bias=False))
        self.features.add_module("norm0", nn.BatchNorm2d(init))
        self.features.add_module("relu0", nn.ReLU(inplace=True))
        c = init
        for i, n in enumerate(block_config):
            self.features.add_module(f"denseblock{i + 1}", DenseBlock(n, c, growth, bn_size))
            c = c + n * growth
            if i != len(block_config) - 1:
                self.features.add_module(f"transition{i + 1}", Transition(c, c // 2))
                c = c // 2
        self.features.add_module("norm5", nn.BatchNorm2d(c))
        self.classifier = nn.Linear(c, num_classes)

    def forward(self, x):
        f = self.features(x)
        out = F.relu(f, inplace=True)
        out = torch.flatten(F.adaptive_avg_pool2d(out, 1), 1)
        return self.classifier(out)


# --------------------------------------------------------------------------------------
# 3D video
# --------------------------------------------------------------------------------------


class Block3d(nn.Module):
    """Post-activation conv3d-bn3d-relu plus a pre-activation bn3d-relu-conv3d branch."""

    def __init__(self, c):
        super().__init__()
        self.conv1 = nn.Conv3d(c, c, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm3d(c)
        self.relu = nn.ReLU(inplace=True)
        self.pre_bn = nn.BatchNorm3d(c)
        self.conv2 = nn.Conv3d(c, c, (1, 3, 3), padding=(0, 1, 1))

    def forward(self, x):
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.conv2(F.relu(self.pre_bn(out)))
        return self.relu(out + x)


class Video3d(nn.Module):
    def __init__(self, num_classes=5):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv3d(3, 8, (3, 5, 5), (1, 2, 2), (1, 2, 2), bias=False),
                                  nn.BatchNorm3d(8), nn.ReLU(inplace=True))
        self.blocks = nn.Sequential(*[Block3d(8) for _ in range(4)])
        self.down = nn.Conv3d(8, 16, 3, 2, 1)
        self.down_relu = nn.ReLU()
        self.tail_bn = nn.BatchNorm3d(16)
        self.pool = nn.AdaptiveAvgPool3d(1)
        self.fc = nn.Linear(16, num_classes)

    def forward(self, x):
        x = self.blocks(self.stem(x))
        x = self.down_relu(self.down(x))
        x = F.relu(self.tail_bn(x))
        return self.fc(self.pool(x).flatten(1))


# --------------------------------------------------------------------------------------
# MLP, 1d audio, decoders
# --------------------------------------------------------------------------------------


class MLP(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(16, 32)
        self.bn1 = nn.BatchNorm1d(32)
        self.relu = nn.ReLU()
        self.fc2 = nn.Linear(32, 32)
        self.bn2 = nn.BatchNorm1d(32)
        self.fc3 = nn.Linear(32, 32)
        self.drop = nn.Dropout(0.3)
        self.fc4 = nn.Linear(32, 32)
        self.fc5 = nn.Linear(32, 32, bias=False)
        self.bn5 = nn.BatchNorm1d(32)
        self.head = nn.Linear(32, 4)

    def forward(self, x):
        x = self.relu(self.bn1(self.fc1(x)))  # native: linear-bn fused, relu stays
        x = F.relu(self.bn2(self.fc2(x)))
        x = self.drop(self.relu(self.fc3(x)))  # linear-relu
        x = F.relu(self.fc4(x))  # linear + F.relu
        x = self.bn5(self.fc5(x))
        return self.head(x)


class Audio1d(nn.Module):
    def __init__(self):
        super().__init__()
        self.front = nn.Sequential(nn.Conv1d(1, 8, 9, 2, 4), nn.BatchNorm1d(8), nn.ReLU())
        self.body = nn.ModuleList()
        for i in range(6):
            self.body.append(nn.ModuleDict({
                "conv": nn.Conv1d(8, 8, 5, padding=2 * (i % 3 + 1), dilation=i % 3 + 1, bias=i % 2 == 0),
                "bn": nn.BatchNorm1d(8),
            }))
        self.pw = nn.Conv1d(8, 16, 1)
        self.pw_relu = nn.ReLU(inplace=True)
        self.out = nn.Conv1d(16, 4, 1)
        self.out_bn = nn.BatchNorm1d(4)

    def forward(self, x):
        x = self.front(x)
        for i, blk in enumerate(self.body):
            y = blk["bn"](blk["conv"](x))
            x = x + F.relu(y) if i % 2 == 0 else self.pw_relu(y) + x
        x = self.pw_relu(self.pw(x))
        return self.out_bn(self.out(x)).mean(-1)


class DecoderTranspose(nn.Module):
    """ConvTranspose1d/2d/3d + BatchNorm (groups=1); QAT fusion of these raises in the reference.

    ``relu`` after the 2d chain: the reference visits relu first and claims bn+relu
    (BNReLU2d), so the ConvTranspose2d stays unfused in configs that have bn-relu.
    """

    def __init__(self):
        super().__init__()
        self.up1 = nn.ConvTranspose1d(4, 6, 4, 2, 1)
        self.bn1 = nn.BatchNorm1d(6)
        self.up2 = nn.ConvTranspose2d(4, 6, 3, 2, 1, output_padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(6)
        self.up2b = nn.ConvTranspose2d(6, 6, 3, 1, 1)
        self.bn2b = nn.BatchNorm2d(6)
        self.relu = nn.ReLU()
        self.up3 = nn.ConvTranspose3d(2, 3, 2, 2)
        self.bn3 = nn.BatchNorm3d(3)

    def forward(self, a, b, c):
        a = self.bn1(self.up1(a))
        b = self.bn2(self.up2(b))
        b = self.relu(self.bn2b(self.up2b(b)))
        c = self.bn3(self.up3(c))
        return a.sum() + b.sum() + c.sum(), b


class BNReLUOnly(nn.Module):
    def __init__(self):
        super().__init__()
        self.bn2 = nn.BatchNorm2d(3)
        self.relu = nn.ReLU()
        self.bn3 = nn.BatchNorm3d(2)
        self.bn2b = nn.BatchNorm2d(3)

    def forward(self, x, v):
        y = self.relu(self.bn2(x))
        z = F.relu(self.bn3(v))
        w = F.relu(self.bn2b(y), inplace=True)
        return y, z, w


# --------------------------------------------------------------------------------------
# Special cases
# --------------------------------------------------------------------------------------


class _Scale2(nn.Module):
    def forward(self, w):
        return w * 2.0

    def right_inverse(self, w):
        return w / 2.0


class _Positive(nn.Module):
    def forward(self, w):
        return w.abs()


class ParametrizedFusable(nn.Module):
    """Parametrized conv + relu and parametrized linear + relu: they match by the original class."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        parametrize.register_parametrization(self.conv, "weight", _Scale2())
        self.relu = nn.ReLU()
        self.conv2 = nn.Conv2d(4, 4, 1)
        parametrize.register_parametrization(self.conv2, "weight", _Positive())
        self.fc = nn.Linear(4, 6)
        parametrize.register_parametrization(self.fc, "weight", _Scale2())

    def forward(self, x):
        x = self.relu(self.conv(x))
        x = F.relu(self.conv2(x))
        return F.relu(self.fc(x.mean((2, 3))))


class ParametrizedConvBn(nn.Module):
    """Parametrized conv + bn: matched, but the reference's fuser raises (KeyError in eval)."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        parametrize.register_parametrization(self.conv, "weight", _Scale2())
        self.bn = nn.BatchNorm2d(4)

    def forward(self, x):
        return self.bn(self.conv(x))


class MyConv2d(nn.Conv2d):
    pass


class MyReLU(nn.ReLU):
    pass


class SubclassNoFuse(nn.Module):
    """Subclasses of Conv2d / ReLU must not match (exact type); plain convs around them do."""

    def __init__(self):
        super().__init__()
        self.conv = MyConv2d(3, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.conv2 = nn.Conv2d(4, 4, 3, padding=1)
        self.relu = MyReLU()
        self.conv3 = nn.Conv2d(4, 4, 1)
        self.bn3 = nn.BatchNorm2d(4)

    def forward(self, x):
        x = self.bn(self.conv(x))
        x = self.relu(self.conv2(x))
        return F.relu(self.bn3(self.conv3(x)))


class MultiUser(nn.Module):
    """Chains broken by nodes with several users, and a BN module shared by two convs."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 4, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(4)
        self.conv2 = nn.Conv2d(4, 4, 3, padding=1)
        self.bn2 = nn.BatchNorm2d(4)
        self.relu = nn.ReLU()
        self.conv3 = nn.Conv2d(4, 4, 1)
        self.conv4 = nn.Conv2d(4, 4, 1)
        self.shared_bn = nn.BatchNorm2d(4)
        self.conv5 = nn.Conv2d(4, 4, 1)
        self.bn5 = nn.BatchNorm2d(4)

    def forward(self, x):
        c1 = self.conv1(x)  # used twice: conv1-bn1 must not fuse
        y = self.bn1(c1) + c1
        b2 = self.bn2(self.conv2(y))  # bn used twice: relu(bn(conv)) can't fuse, conv-bn can
        y = self.relu(b2) * b2
        z = self.shared_bn(self.conv3(y)) + self.shared_bn(self.conv4(y))
        c5 = self.conv5(z)
        w = F.relu(self.bn5(c5))  # conv output also feeds the return value
        return w, c5


class GetAttrOfFused(nn.Module):
    """Reads ``self.conv.weight`` (a get_attr node) besides calling the conv that gets fused."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.bn = nn.BatchNorm2d(4)

    def forward(self, x):
        return self.bn(self.conv(x)), self.conv.weight.sum()


class OnednnResidual(nn.Module):
    """Residual adds in every operand order for the onednn conv(-bn)-add(-relu) patterns."""

    def __init__(self):
        super().__init__()
        c = 4
        self.stem = nn.Conv2d(3, c, 3, padding=1)
        for i in range(1, 11):
            setattr(self, f"conv{i}", nn.Conv2d(c, c, 3, padding=1))
        for i in (1, 2, 3, 4, 7, 8, 10):
            setattr(self, f"bn{i}", nn.BatchNorm2d(c))
        self.relu = nn.ReLU()

    def forward(self, x):
        x = self.stem(x)
        a = self.bn1(self.conv1(x)) + x  # conv-bn + add, left, operator.add
        b = torch.add(a, self.bn2(self.conv2(a)))  # conv-bn + add, right, torch.add
        c = self.relu(torch.add(self.bn3(self.conv3(b)), b))  # conv-bn-add-relu, left
        d = self.relu(c + self.bn4(self.conv4(c)))  # conv-bn-add-relu, right
        e = self.relu(self.conv5(d) + d)  # conv-add-relu, left
        f = self.relu(torch.add(e, self.conv6(e)))  # conv-add-relu, right
        g = self.conv7(f) + self.bn7(self.conv8(f))  # both operands are convs
        h = torch.add(self.conv9(g), g)  # conv + add, left
        i = self.bn10(self.conv10(h))
        return F.relu(i + h)  # F.relu does not match the add-relu patterns


class OnednnLinearAct(nn.Module):
    """Linear + LeakyReLU / Tanh modules (onednn fuses them; native has only linear-relu)."""

    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(8, 16)
        self.lrelu = nn.LeakyReLU(0.1)
        self.fc2 = nn.Linear(16, 16)
        self.tanh = nn.Tanh()
        self.fc3 = nn.Linear(16, 16)
        self.relu = nn.ReLU()
        self.fc4 = nn.Linear(16, 16)
        self.lrelu4 = nn.LeakyReLU(0.2, inplace=True)
        self.fc5 = nn.Linear(16, 4)

    def forward(self, x):
        x = self.lrelu(self.fc1(x))
        x = self.tanh(self.fc2(x))
        x = self.relu(self.fc3(x))
        x = self.lrelu4(self.fc4(x))
        return self.tanh(self.fc5(x))


class OnednnLinearBnLeaky(nn.Module):
    """Linear + BN1d + LeakyReLU: onednn fuses in eval; its fuser raises in QAT."""

    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(8, 16)
        self.bn1 = nn.BatchNorm1d(16)
        self.lrelu = nn.LeakyReLU(0.2)
        self.fc2 = nn.Linear(16, 4)
        self.bn2 = nn.BatchNorm1d(4)

    def forward(self, x):
        return self.bn2(self.fc2(self.lrelu(self.bn1(self.fc1(x)))))


class OnednnLinearFunctionalAct(nn.Module):
    """F.leaky_relu / torch.tanh after Linear: onednn matches them, but its fuser raises."""

    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(8, 16)
        self.fc2 = nn.Linear(16, 16)
        self.fc3 = nn.Linear(16, 4)

    def forward(self, x):
        x = F.leaky_relu(self.fc1(x), 0.05)
        x = torch.tanh(self.fc2(x))
        return F.relu(self.fc3(x))


class AddScalar(nn.Module):
    """``conv(x) + 1.0``: the onednn (add, Conv2d, MatchAllNode) pattern reaches a float
    literal and the reference raises AttributeError; no add patterns in native."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 1)
        self.bn = nn.BatchNorm2d(4)

    def forward(self, x):
        return self.bn(self.conv(x)) + 1.0


class AddKwarg(nn.Module):
    """``torch.add(conv(x), other=y)``: one positional arg, so the add patterns don't match."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 4, 1)
        self.conv = nn.Conv2d(4, 4, 1)
        self.relu = nn.ReLU()

    def forward(self, x):
        y = self.stem(x)
        return self.relu(torch.add(self.conv(y), other=y))


class _Holder(nn.Module):
    pass


class CrossParent(nn.Module):
    """conv, bn and relu live in different parents; the parents of bn/relu end up empty."""

    def __init__(self):
        super().__init__()
        self.a = _Holder()
        self.a.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.b = _Holder()
        self.b.inner = nn.ModuleList([nn.BatchNorm2d(4)])
        self.c = nn.ModuleDict({"act": nn.ReLU()})
        self.keep = nn.Sequential(nn.Conv2d(4, 4, 1), nn.Sigmoid())

    def forward(self, x):
        return self.keep(self.c["act"](self.b.inner[0](self.a.conv(x))))


class DeepChain(nn.Module):
    """A long stack (~1,100 nodes) of small conv-bn-relu / bn-relu / linear blocks."""

    def __init__(self, depth=150):
        super().__init__()
        self.layers = nn.ModuleList()
        for i in range(depth):
            self.layers.append(nn.ModuleDict({
                "conv": nn.Conv2d(4, 4, 3, padding=1, bias=i % 3 == 0),
                "bn": nn.BatchNorm2d(4),
                "conv_b": nn.Conv2d(4, 4, 1),
                "bn_b": nn.BatchNorm2d(4),
            }))
        self.relu = nn.ReLU()

    def forward(self, x):
        for i, layer in enumerate(self.layers):
            y = layer["bn"](layer["conv"](x))
            y = self.relu(y) if i % 2 == 0 else F.relu(y)
            z = layer["conv_b"](y)
            if i % 5 == 4:
                z = z + y  # conv_b has two users of y ... and is followed by add
            z = layer["bn_b"](z)
            x = self.relu(z) + x if i % 3 else torch.relu(z) - x
        return x


def _mobilenet():
    return _seeded(MobileNetV2, seed=4)()


# --------------------------------------------------------------------------------------
# The corpus
# --------------------------------------------------------------------------------------

ALL_BACKENDS = ("native", "fbgemm", "qnnpack", "x86", "onednn", "tensorrt", "executorch")

MODELS: list[CorpusModel] = [
    CorpusModel("tiny_conv_bn_relu", _seeded(TinyConvBnReLU, seed=10), _inputs((2, 3, 6, 6)),
                ALL_BACKENDS, "one conv-bn-relu"),
    CorpusModel("tiny_conv_bn_frelu_f64", _tiny_double, _inputs((2, 3, 6, 6), dtype=torch.float64),
                ("native", "onednn", "tensorrt"), "bias-free conv, F.relu(inplace=True), float64"),
    CorpusModel("tiny_linear_relu", _seeded(TinyLinearReLU, seed=11), _inputs((3, 8)),
                ("native", "fbgemm", "executorch"), "linear + ReLU(inplace)"),
    CorpusModel("tiny_two_outputs", _seeded(TinyConvReLUGraphOutput, seed=12), _inputs((2, 3, 5, 5)),
                ("native", "qnnpack"), "fused nodes feeding the graph output tuple"),
    CorpusModel("resnet18", _resnet18, _inputs((2, 3, 32, 32)),
                ALL_BACKENDS, "BasicBlock, shared self.relu, out += identity, frozen stem"),
    CorpusModel("resnet34", _resnet34, _inputs((2, 3, 32, 32)),
                ("native", "onednn"), "deeper BasicBlock net"),
    CorpusModel("resnet50", _resnet50, _inputs((2, 3, 32, 32)),
                ALL_BACKENDS, "Bottleneck, shared relu x3, +/torch.add/reversed add"),
    CorpusModel("resnet152", _resnet152, _inputs((2, 3, 32, 32)),
                ("native", "onednn"), "50 Bottlenecks"),
    CorpusModel("mobilenet_v2", _mobilenet, _inputs((2, 3, 32, 32)),
                ("native", "fbgemm", "qnnpack", "x86", "executorch"), "depthwise, ReLU6 not fused"),
    CorpusModel("efficientnet", _seeded(EfficientNet, seed=5), _inputs((2, 3, 32, 32)),
                ("native", "x86", "onednn", "tensorrt"), "SiLU, SE with conv/linear + relu"),
    CorpusModel("vgg16", _seeded(VGG, False, seed=6), _inputs((2, 3, 32, 32)),
                ("native", "qnnpack", "executorch"), "conv-relu in many spellings"),
    CorpusModel("vgg16_bn", _seeded(VGG, True, seed=7), _inputs((2, 3, 32, 32)),
                ("native", "fbgemm", "onednn", "tensorrt", "executorch"), "conv-bn-relu, many spellings"),
    CorpusModel("densenet121", _seeded(DenseNet, seed=8), _inputs((2, 3, 16, 16)),
                ("native", "tensorrt"), "bn-relu-conv with torch.cat"),
    CorpusModel("video3d", _seeded(Video3d, seed=9), _inputs((2, 3, 4, 16, 16)),
                ("native", "fbgemm", "onednn", "tensorrt", "executorch"), "Conv3d/BN3d/ReLU, BN3d+ReLU"),
    CorpusModel("mlp", _seeded(MLP, seed=13), _inputs((4, 16)),
                ("native", "fbgemm", "qnnpack", "onednn", "tensorrt", "executorch"), "linear-bn1d(-relu)"),
    CorpusModel("audio1d", _seeded(Audio1d, seed=14), _inputs((2, 1, 64)),
                ("native", "x86", "tensorrt", "executorch"), "Conv1d/BN1d/ReLU, dilations"),
    CorpusModel("decoder_transpose", _seeded(DecoderTranspose, seed=15),
                _inputs((2, 4, 5), (2, 4, 4, 4), (2, 2, 2, 3, 3)),
                ("native", "qnnpack", "onednn", "tensorrt"), "ConvTranspose1d/2d/3d + BN"),
    CorpusModel("bn_relu", _seeded(BNReLUOnly, seed=16), _inputs((2, 3, 4, 4), (2, 2, 3, 3, 3)),
                ("native", "fbgemm", "tensorrt"), "BatchNorm2d/3d + ReLU"),
    CorpusModel("parametrized_fusable", _seeded(ParametrizedFusable, seed=17), _inputs((2, 3, 6, 6)),
                ("native", "onednn"), "register_parametrization on conv/linear weights"),
    CorpusModel("parametrized_conv_bn", _seeded(ParametrizedConvBn, seed=18), _inputs((2, 3, 6, 6)),
                ("native",), "reference raises when fusing a parametrized conv with bn"),
    CorpusModel("subclass_no_fuse", _seeded(SubclassNoFuse, seed=19), _inputs((2, 3, 6, 6)),
                ("native", "onednn"), "Conv2d / ReLU subclasses must not match"),
    CorpusModel("multi_user", _seeded(MultiUser, seed=20), _inputs((2, 3, 6, 6)),
                ("native", "onednn", "tensorrt"), "several users break chains; shared bn"),
    # get_attr_of_fused and add_scalar with onednn hit reference defects (it changes
    # the model's result / crashes): pyfuse is checked for correctness on them in
    # test_defects.py instead of for identity here.
    CorpusModel("onednn_residual", _seeded(OnednnResidual, seed=22), _inputs((2, 3, 6, 6)),
                ("native", "onednn", "x86"), "conv(-bn)-add(-relu), both operand orders"),
    CorpusModel("onednn_linear_act", _seeded(OnednnLinearAct, seed=23), _inputs((4, 8)),
                ("native", "onednn", "fbgemm"), "linear + LeakyReLU/Tanh modules"),
    CorpusModel("onednn_linear_bn_leaky", _seeded(OnednnLinearBnLeaky, seed=25), _inputs((4, 8)),
                ("native", "onednn", "tensorrt"), "linear-bn1d-leaky_relu"),
    CorpusModel("onednn_linear_functional_act", _seeded(OnednnLinearFunctionalAct, seed=26), _inputs((4, 8)),
                ("native", "onednn"), "F.leaky_relu / torch.tanh after linear (onednn fuser raises)"),
    CorpusModel("add_scalar", _seeded(AddScalar, seed=27), _inputs((2, 3, 4, 4)),
                ("native",), "conv-bn + float literal"),
    CorpusModel("add_kwarg", _seeded(AddKwarg, seed=28), _inputs((2, 3, 4, 4)),
                ("native", "onednn"), "torch.add(conv, other=y): arity mismatch"),
    CorpusModel("cross_parent", _seeded(CrossParent, seed=29), _inputs((2, 3, 4, 4)),
                ("native", "tensorrt", "executorch"), "conv/bn/relu in different parent modules"),
    CorpusModel("deep_chain", _seeded(DeepChain, seed=24), _inputs((2, 4, 4, 4)),
                ("native", "onednn"), "~1,100 nodes"),
]

MODELS_BY_NAME: dict[str, CorpusModel] = {m.name: m for m in MODELS}
assert len(MODELS_BY_NAME) == len(MODELS), "duplicate corpus model names"
for _m in MODELS:
    assert "native" in _m.backends, _m.name
    assert set(_m.backends) <= set(BACKENDS), _m.name
