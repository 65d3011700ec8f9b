"""Residual networks (He et al. 2016) as stacks of blocks: the ``resnet`` architecture.

Two families, chosen by ``depth``:

* ``18`` and ``34``: the ImageNet ResNets of basic blocks (2-2-2-2 and 3-4-6-3 blocks in four stages of
  ``width``, 2x, 4x, 8x channels; ``width`` 64 is the standard ResNet-18 that Scalable Forward-Forward
  trains), with the usual CIFAR stem: one 3x3 conv at stride 1 instead of the 7x7 conv and max pooling
  that would leave a 32x32 image only 8x8 maps after the stem.
* ``6n+2`` (8, 14, 20, 32, 44, 56, 110): the small CIFAR ResNets of He et al. Section 4.2, three stages of
  ``n`` basic blocks with ``width``, 2x, 4x channels (``width`` 16 in the paper); ResNet-8 and -20 train
  on a CPU.

The network's blocks are the stem (conv-BN-ReLU) and then every residual block, so that algorithms that
train block by block (MF, SFF) see a residual block with its shortcut as one unit, while ``parts()`` of a
residual block splits it into its two conv layers for SFF's layer-by-layer granularity. The head is
global average pooling and a linear layer, as in the paper. A strided conv is a stride-1 conv followed by
taking every second position (the same numbers): the layer factory (FA's feedback layers) has no stride.

BatchNorm layers come in eval mode, so that ``build_network``'s one-image dry run neither fails on a 1x1
map nor moves the running statistics; the runner switches the trainer to train mode for training.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from .networks import LayerFactory, _whole
from .typed_config import check
from .registry import ARCHITECTURES

IMAGENET_STAGES = {18: (2, 2, 2, 2), 34: (3, 4, 6, 3)}


class Subsample(nn.Module):
    """Every ``stride``-th position of a map: a stride-1 conv followed by this is the strided conv."""

    def __init__(self, stride: int):
        super().__init__()
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x[:, :, ::self.stride, ::self.stride]


def conv_bn(layers: LayerFactory, c_in: int, c_out: int, kernel: int, stride: int) -> list[nn.Module]:
    parts = [layers.conv2d(c_in, c_out, kernel, padding=kernel // 2, bias=False)]  # BN follows: no bias
    if stride > 1:
        parts.append(Subsample(stride))
    return parts + [nn.BatchNorm2d(c_out)]


class BasicBlock(nn.Module):
    """relu(bn2(conv2(relu(bn1(conv1(x))))) + shortcut(x)); the shortcut is 1x1 conv + BN when the shape changes."""

    def __init__(self, layers: LayerFactory, c_in: int, c_out: int, stride: int):
        super().__init__()
        self.first = nn.Sequential(*conv_bn(layers, c_in, c_out, 3, stride), nn.ReLU())
        self.second = nn.Sequential(*conv_bn(layers, c_out, c_out, 3, 1))
        same = stride == 1 and c_in == c_out
        self.shortcut = nn.Identity() if same else nn.Sequential(*conv_bn(layers, c_in, c_out, 1, stride))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.second(self.first(x)) + self.shortcut(x))

    def parts(self) -> list[tuple[nn.Module, object]]:
        """The block as its two conv layers: ``(modules, f)`` pairs where ``f(x, h)`` maps the block's
        input ``x`` and the previous part's output ``h`` to this part's output. The shortcut belongs to the
        second part (it adds the block's input to the second conv's output)."""
        return [(nn.ModuleList([self.first]), lambda x, h: self.first(x)),
                (nn.ModuleList([self.second, self.shortcut]),
                 lambda x, h: torch.relu(self.second(h) + self.shortcut(x)))]


@dataclass
class ResNetArgs:
    depth: int = 20  # 18/34: ImageNet ResNets (the SFF paper's ResNet-18); 6n+2: CIFAR ResNets (20: He et al.)
    width: int | None = None  # channels of the first stage; None: 64 for depth 18/34, 16 for 6n+2 (both papers')

    def validate(self) -> None:
        self.depth = _whole(self.depth, "resnet's depth")
        check(self.depth in IMAGENET_STAGES or (self.depth >= 8 and (self.depth - 2) % 6 == 0),
               f"resnet's depth must be 18, 34 or 6n+2 (8, 14, 20, 32, ...), got {self.depth}")
        if self.width is not None:
            self.width = _whole(self.width, "resnet's width")
            check(self.width >= 1, f"resnet's width must be >= 1, got {self.width}")

    def stages(self) -> tuple[tuple[int, ...], tuple[int, ...]]:
        """Blocks per stage and channels per stage."""
        if self.depth in IMAGENET_STAGES:
            w = self.width or 64
            return IMAGENET_STAGES[self.depth], (w, 2 * w, 4 * w, 8 * w)
        w, n = self.width or 16, (self.depth - 2) // 6
        return (n, n, n), (w, 2 * w, 4 * w)


@ARCHITECTURES.register("resnet")
class ResNet:
    """The stem, then every residual block; each stage after the first halves the map's side."""

    Args = ResNetArgs

    @staticmethod
    def blocks(args: ResNetArgs, input_shape: tuple[int, ...], layers: LayerFactory) -> list[nn.Module]:
        check(len(input_shape) == 3, f"resnet needs image input (C, H, W), got shape {tuple(input_shape)}")
        counts, channels = args.stages()
        c_in, h, w = input_shape
        side = 2 ** (len(counts) - 1)
        check(min(h, w) >= side, f"resnet-{args.depth} halves the image {len(counts) - 1} times, so the input "
                                  f"must be at least {side}x{side}, got {h}x{w}")
        blocks: list[nn.Module] = [nn.Sequential(*conv_bn(layers, c_in, channels[0], 3, 1), nn.ReLU())]
        c_in = channels[0]
        for stage, (count, c_out) in enumerate(zip(counts, channels)):
            for i in range(count):
                stride = 2 if stage > 0 and i == 0 else 1
                blocks.append(BasicBlock(layers, c_in, c_out, stride))
                c_in = c_out
        for block in blocks:
            block.eval()  # see the module docstring: the dry run must not use or move batch statistics
        return blocks

    @staticmethod
    def head(feature_shape: tuple[int, ...], num_classes: int, layers: LayerFactory) -> nn.Module:
        """Global average pooling and a linear layer to the classes."""
        return nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), layers.linear(feature_shape[0], num_classes))
