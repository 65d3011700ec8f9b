"""MobileNetV3-Small (Howard et al. 2019, arXiv 1905.02244) as a stack of blocks: the ``mobilenetv3`` architecture.

The second network Scalable Forward-Forward trains beside ResNet-18: inverted residual blocks (1x1
expansion, depthwise 3x3 or 5x5 conv, optional squeeze-and-excitation, linear 1x1 projection, an identity
shortcut where the shape is kept) with ReLU early and hard-swish late, as in the paper's Table 2. Adapted
to 32x32 inputs the usual CIFAR way: the stem conv and the first block run at stride 1 (the paper's stride
2 each), so a 32x32 image is halved three times (by blocks 2, 4 and 9) to 4x4 maps instead of five
times to 1x1. ``width`` multiplies every channel count, rounded to a multiple of 8 (at least 8) as the MobileNets'
released code does; ``width`` 0.25 trains on a CPU.

The network's blocks are the stem (conv-BN-hard-swish), every inverted residual block with its own
shortcut, and the last 1x1 conv (6x the last block's channels, the paper's 576 at width 1), so MF and SFF
train every conv of the paper's network block by block; ``parts()`` splits an inverted residual block
into its convs (expansion, depthwise with SE, projection with the shortcut) for SFF's layer granularity.
The head is the paper's classifier: global average pooling, a hard-swish layer of 1024/576 times the last
conv's channels (1024 at width 1) and a linear layer (no dropout, as in the suite's other networks).

As in ``resnet``: a strided depthwise conv is a stride-1 conv followed by taking every second position, and
BatchNorm layers come in eval mode for ``build_network``'s one-image dry run. The depthwise convs are
plain ``nn.Conv2d`` with ``groups`` (the layer factory has no groups), so FA, whose factory swaps every
conv for a feedback one, is refused; BP, MF, SFF (and DFA) train this network.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from .networks import LayerFactory
from .typed_config import check
from .registry import ARCHITECTURES
from .resnet import Subsample, conv_bn

# Table 2 of the paper, MobileNetV3-Small: (kernel, expansion channels, output channels, SE, activation,
# stride). The first block's stride is 1 here (2 in the paper): see the module docstring.
SMALL = ((3, 16, 16, True, "relu", 1),
         (3, 72, 24, False, "relu", 2),
         (3, 88, 24, False, "relu", 1),
         (5, 96, 40, True, "hswish", 2),
         (5, 240, 40, True, "hswish", 1),
         (5, 240, 40, True, "hswish", 1),
         (5, 120, 48, True, "hswish", 1),
         (5, 144, 48, True, "hswish", 1),
         (5, 288, 96, True, "hswish", 2),
         (5, 576, 96, True, "hswish", 1),
         (5, 576, 96, True, "hswish", 1))
STEM, LAST_EXPANSION, HIDDEN = 16, 6, 1024  # the paper's stem, last 1x1 conv (6 x 96 = 576) and classifier widths
ACT = {"relu": nn.ReLU, "hswish": nn.Hardswish}


def channels(c: float, width: float) -> int:
    """``c * width`` rounded to the nearest multiple of 8 (at least 8), never more than 10 % below it:
    the MobileNets' usual rounding (their released code), which keeps channel counts friendly to vector units."""
    c = c * width
    rounded = max(8, int(c + 4) // 8 * 8)
    return rounded + 8 if rounded < 0.9 * c else rounded


class SqueezeExcite(nn.Module):
    """x * hard_sigmoid(W2 relu(W1 mean_hw(x))): per-channel gates from the map's channel means."""

    def __init__(self, layers: LayerFactory, c: int):
        super().__init__()
        squeeze = channels(c / 4, 1.0)  # a quarter of the expansion channels (the paper's Section 5.3)
        self.gate = nn.Sequential(nn.AdaptiveAvgPool2d(1), layers.conv2d(c, squeeze, 1), nn.ReLU(),
                                  layers.conv2d(squeeze, c, 1), nn.Hardsigmoid())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gate(x)


class InvertedResidual(nn.Module):
    """project(depthwise(expand(x))) (+ x where the shape is kept): the 1x1 expansion is left out when it
    would not widen the map, the projection has no activation (the linear bottleneck), and a block that
    changes the shape has no shortcut (MobileNetV3 has no 1x1-conv shortcuts)."""

    def __init__(self, layers: LayerFactory, c_in: int, kernel: int, c_exp: int, c_out: int, se: bool,
                 act: str, stride: int):
        super().__init__()
        self.expand = nn.Sequential(*conv_bn(layers, c_in, c_exp, 1, 1), ACT[act]()) if c_exp != c_in else None
        depthwise = [nn.Conv2d(c_exp, c_exp, kernel, padding=kernel // 2, groups=c_exp, bias=False)]
        depthwise += [Subsample(stride)] if stride > 1 else []
        depthwise += [nn.BatchNorm2d(c_exp), ACT[act]()] + ([SqueezeExcite(layers, c_exp)] if se else [])
        self.depthwise = nn.Sequential(*depthwise)
        self.project = nn.Sequential(*conv_bn(layers, c_exp, c_out, 1, 1))
        self.residual = stride == 1 and c_in == c_out

    def _out(self, x: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        h = self.project(h)
        return h + x if self.residual else h

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._out(x, self.depthwise(x if self.expand is None else self.expand(x)))

    def parts(self) -> list[tuple[nn.Module, object]]:
        """The block as its convs, ``(modules, f)`` pairs as ``resnet.BasicBlock.parts``: ``f(x, h)`` maps the
        block's input ``x`` and the previous part's output ``h`` to this part's output; the shortcut belongs
        to the projection (it adds the block's input to the projection's output)."""
        parts = []
        if self.expand is not None:
            parts.append((nn.ModuleList([self.expand]), lambda x, h: self.expand(x)))
        first = self.expand is None  # without an expansion the depthwise conv reads the block's input
        parts.append((nn.ModuleList([self.depthwise]), lambda x, h: self.depthwise(x if first else h)))
        parts.append((nn.ModuleList([self.project]), self._out))
        return parts


@dataclass
class MobileNetV3Args:
    width: float = 1.0  # multiplies every channel count (the paper's width multiplier); 0.25 trains on a CPU

    def validate(self) -> None:
        check(not isinstance(self.width, bool) and isinstance(self.width, (int, float))
               and math.isfinite(self.width) and self.width > 0,
               f"mobilenetv3's width must be a number > 0, got {self.width!r}")
        self.width = float(self.width)


@ARCHITECTURES.register("mobilenetv3")
class MobileNetV3:
    """The stem, every inverted residual block, the last 1x1 conv; blocks 2, 4 and 9 halve the map's side."""

    Args = MobileNetV3Args

    @staticmethod
    def blocks(args: MobileNetV3Args, input_shape: tuple[int, ...], layers: LayerFactory) -> list[nn.Module]:
        check(len(input_shape) == 3, f"mobilenetv3 needs image input (C, H, W), got shape {tuple(input_shape)}")
        check(type(layers).conv2d is LayerFactory.conv2d,
               "mobilenetv3's depthwise convs have no feedback-alignment version: train it with bp, mf, sff or dfa")
        c_in, h, w = input_shape
        side = 2 ** sum(stride > 1 for *_, stride in SMALL)
        check(min(h, w) >= side, f"mobilenetv3 halves the image {side.bit_length() - 1} times, so the input "
                                  f"must be at least {side}x{side}, got {h}x{w}")
        c_out = channels(STEM, args.width)
        blocks: list[nn.Module] = [nn.Sequential(*conv_bn(layers, c_in, c_out, 3, 1), nn.Hardswish())]
        c_in = c_out
        for kernel, c_exp, c_out, se, act, stride in SMALL:
            c_exp, c_out = channels(c_exp, args.width), channels(c_out, args.width)
            blocks.append(InvertedResidual(layers, c_in, kernel, c_exp, c_out, se, act, stride))
            c_in = c_out
        # Table 2 marks SE on this conv; common implementations (torchvision's) leave it out, and so does this one
        blocks.append(nn.Sequential(*conv_bn(layers, c_in, LAST_EXPANSION * c_in, 1, 1), nn.Hardswish()))
        for block in blocks:
            block.eval()  # see the module docstring: the dry run must not use or move batch statistics
        return blocks

    @staticmethod
    def head(feature_shape: tuple[int, ...], num_classes: int, layers: LayerFactory) -> nn.Module:
        """Global average pooling, the paper's hard-swish layer of 1024/576 times the last conv's channels
        (1024 at width 1) and a linear layer."""
        hidden = channels(HIDDEN / 576 * feature_shape[0], 1.0)
        return nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), layers.linear(feature_shape[0], hidden),
                             nn.Hardswish(), layers.linear(hidden, num_classes))
