"""Network building blocks shared by every algorithm.

A network is a stack of hidden *blocks* (each maps the previous block's output to features, e.g.
``Linear -> ReLU`` or ``Conv -> ReLU -> AvgPool``) plus an optional output *head* (flatten ->
linear to the classes). Algorithms train the same blocks in different ways: BP through the whole
stack, FA/DFA with random feedback, FF and MF one block at a time from a local loss.

Architectures are registered by name (``ARCHITECTURES``) with a dataclass of their arguments. They
create their weight layers through a :class:`LayerFactory`, so that an algorithm which needs other
layers (FA's fixed random feedback) swaps the factory, not the architecture.

Registered here: ``mlp`` (fully connected), ``cnn`` (the Mono-Forward paper's Table 2 CNN: conv
blocks with average pooling) and ``lc-mlp`` (its Table 1 locally connected network: an MLP whose
layers have local receptive fields with unshared weights). ``cafo-cnn`` lives in ``cafo.py``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from .local import LocallyConnected2d
from .registry import ARCHITECTURES
from .typed_config import check, dataclass_from_dict

ACTIVATIONS = {"relu": nn.ReLU, "tanh": nn.Tanh, "gelu": nn.GELU, "sigmoid": nn.Sigmoid}


class LayerFactory:
    """Creates the weight layers of an architecture; FA overrides it with feedback layers."""

    def linear(self, in_features: int, out_features: int, bias: bool = True) -> nn.Module:
        return nn.Linear(in_features, out_features, bias=bias)

    def conv2d(self, in_channels: int, out_channels: int, kernel_size: int, padding: int = 0,
               bias: bool = True) -> nn.Module:
        return nn.Conv2d(in_channels, out_channels, kernel_size, padding=padding, bias=bias)

    def local2d(self, in_shape: tuple[int, int, int], out_channels: int, kernel_size: int, stride: int = 1,
                padding: str | int = "same", bias: bool = True) -> nn.Module:
        return LocallyConnected2d(in_shape, out_channels, kernel_size, stride, padding, bias)


class Network(nn.Module):
    """Hidden blocks, their output shapes, and an optional head to the classes."""

    def __init__(self, blocks: list[nn.Module], head: nn.Module | None, feature_shapes: list[tuple[int, ...]]):
        super().__init__()
        self.blocks = nn.ModuleList(blocks)
        self.head = head
        self.feature_shapes = feature_shapes  # output shape of each block, batch dimension left out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = block(x)
        return self.head(x)


@dataclass
class MLPArgs:
    widths: tuple[int, ...] = (1000, 1000)  # the paper's 2x1000 MLP for MNIST and Fashion-MNIST
    activation: str = "relu"

    def validate(self) -> None:
        self.widths = tuple(int(w) for w in self.widths)
        check(len(self.widths) >= 1, "an MLP needs at least one hidden layer (widths)")
        check(all(w > 0 for w in self.widths), f"every width must be > 0, got {list(self.widths)}")
        check(self.activation in ACTIVATIONS,
               f"unknown activation {self.activation!r}; choose one of: {', '.join(ACTIVATIONS)}")


@ARCHITECTURES.register("mlp")
class MLP:
    """Fully connected ReLU network on the flattened input."""

    Args = MLPArgs

    @staticmethod
    def blocks(args: MLPArgs, input_shape: tuple[int, ...], layers: LayerFactory) -> list[nn.Module]:
        sizes = [math.prod(input_shape), *args.widths]
        blocks = []
        for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:])):
            parts = [nn.Flatten()] if i == 0 else []
            blocks.append(nn.Sequential(*parts, layers.linear(n_in, n_out), ACTIVATIONS[args.activation]()))
        return blocks


def _whole(value: Any, what: str) -> int:
    """``value`` as an int if it is a whole number (not a bool), else a one-line ConfigError."""
    try:
        if not isinstance(value, bool) and float(value) == int(value):
            return int(value)
    except (TypeError, ValueError):
        pass
    check(False, f"{what} must be a whole number, got {value!r}")


def _ints(values: Any, what: str) -> tuple[int, ...]:
    check(isinstance(values, (list, tuple)), f"{what} must be a list of whole numbers, got {values!r}")
    return tuple(_whole(v, f"every entry of {what}") for v in values)


@dataclass
class CNNArgs:
    channels: tuple[int, ...] = (64, 128, 256, 512)  # the paper's Table 2 CNN; its Figure 3 adds a fifth 512
    kernel_size: int = 3  # odd, padded by kernel_size // 2 so that a conv keeps the map's size
    pool: int = 2  # AvgPool2d window and stride after every conv; 1: no pooling

    def validate(self) -> None:
        self.channels = _ints(self.channels, "cnn's channels")
        self.kernel_size, self.pool = _whole(self.kernel_size, "cnn's kernel_size"), _whole(self.pool, "cnn's pool")
        check(len(self.channels) >= 1, "cnn needs at least one conv block (channels)")
        check(all(c > 0 for c in self.channels), f"every channel count must be > 0, got {list(self.channels)}")
        check(self.kernel_size >= 1 and self.kernel_size % 2 == 1,
               f"cnn's kernel_size must be odd and >= 1 (padding k//2 keeps the map's size), got {self.kernel_size}")
        check(self.pool >= 1, f"cnn's pool must be >= 1 (1: no pooling), got {self.pool}")


@ARCHITECTURES.register("cnn")
class CNN:
    """Blocks Conv(k x k, padding k//2) -> ReLU -> AvgPool2d(pool); each divides the image side by
    ``pool``. The output head (flatten -> linear) comes from :func:`build_network`."""

    Args = CNNArgs

    @staticmethod
    def blocks(args: CNNArgs, input_shape: tuple[int, ...], layers: LayerFactory) -> list[nn.Module]:
        check(len(input_shape) == 3, f"cnn needs image input (C, H, W), got shape {tuple(input_shape)}")
        c_in, h, w = input_shape
        n = len(args.channels)
        side = args.pool ** n
        check(min(h, w) >= side, f"cnn's {n} blocks each pool by {args.pool}, so the input must be at least "
                                  f"{side}x{side}, got {h}x{w}: use fewer channels entries or pool=1")
        blocks = []
        for c_out in args.channels:
            parts = [layers.conv2d(c_in, c_out, args.kernel_size, padding=args.kernel_size // 2), nn.ReLU()]
            if args.pool > 1:
                parts.append(nn.AvgPool2d(args.pool))
            blocks.append(nn.Sequential(*parts))
            c_in = c_out
        return blocks


@dataclass
class LCMLPArgs:
    kernels: tuple[int, ...] = (4, 8)  # receptive field side per hidden layer: Table 1 uses 4,8 and 4,8,16
    channels: Any = 3  # units per position: one number for every layer, or one per layer
    stride: int = 1
    padding: Any = "same"  # "same" (map keeps its size at stride 1), "valid", or zeros per side

    def validate(self) -> None:
        self.kernels = _ints(self.kernels, "lc-mlp's kernels")
        check(len(self.kernels) >= 1, "lc-mlp needs at least one hidden layer (kernels)")
        check(all(k >= 1 for k in self.kernels), f"every kernel must be >= 1, got {list(self.kernels)}")
        channels = self.channels if isinstance(self.channels, (list, tuple)) else [self.channels] * len(self.kernels)
        check(len(channels) == len(self.kernels),
               f"lc-mlp's channels must be one number or one per kernel ({len(self.kernels)}), got {list(channels)}")
        self.channels = _ints(channels, "lc-mlp's channels")
        check(all(c >= 1 for c in self.channels), f"every channel count must be >= 1, got {list(self.channels)}")
        self.stride = _whole(self.stride, "lc-mlp's stride")
        check(self.stride >= 1, f"lc-mlp's stride must be >= 1, got {self.stride}")
        check(self.padding in ("same", "valid") or (type(self.padding) is int and self.padding >= 0),
               f"lc-mlp's padding must be 'same', 'valid' or a number >= 0, got {self.padding!r}")


@ARCHITECTURES.register("lc-mlp")
class LocallyConnectedMLP:
    """A locally connected MLP (the paper's Table 1 network on CIFAR-10): every hidden layer is a
    :class:`~algorithms.local.LocallyConnected2d` (each output position has its own k x k kernel over
    all input channels, no weight sharing) followed by ReLU, with kernel side ``kernels[i]`` for layer i.

    The paper gives only the kernel sizes; the rest follows Hinton's (2022) locally connected CIFAR-10
    nets, which the Forward-Forward comparison of Table 1 goes back to: stride 1 and ``same`` padding
    keep every layer a map of the image's size, with 3 units per position (``channels``), so each
    hidden layer is as wide as the input (3x32x32 = 3072 units on CIFAR-10). A block outputs its map
    flattened, as an MLP layer does: positions with unshared weights are not interchangeable, so MF
    reads every layer out with ``flatten`` whatever its ``readout``, and DFA's feedback has one row per
    unit. Every kernel must fit the map it reads (no kernel larger than its input).
    """

    Args = LCMLPArgs

    @staticmethod
    def blocks(args: LCMLPArgs, input_shape: tuple[int, ...], layers: LayerFactory) -> list[nn.Module]:
        check(len(input_shape) == 3, f"lc-mlp needs image input (C, H, W), got shape {tuple(input_shape)}")
        shape = tuple(input_shape)
        blocks = []
        for i, (k, c_out) in enumerate(zip(args.kernels, args.channels)):
            _, h, w = shape
            check(k <= min(h, w), f"lc-mlp layer {i + 1}'s kernel {k} is larger than its {h}x{w} input")
            layer = layers.local2d(shape, c_out, k, stride=args.stride, padding=args.padding)
            blocks.append(nn.Sequential(layer, nn.ReLU(), nn.Flatten()))
            shape = layer.out_shape
        return blocks


def build_network(arch: str, input_shape: tuple[int, ...], num_classes: int, arch_args: dict[str, Any],
                  layers: LayerFactory, with_head: bool = True) -> Network:
    """Build architecture ``arch``; ``arch_args`` is checked against its ``Args`` dataclass."""
    spec = ARCHITECTURES.get(arch)
    args = dataclass_from_dict(spec.Args, dict(arch_args), f"{arch} architecture")
    blocks = spec.blocks(args, tuple(input_shape), layers)
    shapes = []
    with torch.no_grad():  # a dry run tells each block's output shape
        h = torch.zeros(1, *input_shape, dtype=getattr(spec, "input_dtype", torch.float32))
        for block in blocks:
            h = block(h)
            shapes.append(tuple(h.shape[1:]))
    head = None
    if with_head and hasattr(spec, "head"):  # an architecture with a head of its own (resnet: pooling + linear)
        head = spec.head(shapes[-1], num_classes, layers)
    elif with_head:
        head = nn.Sequential(nn.Flatten(), layers.linear(math.prod(shapes[-1]), num_classes))
    return Network(blocks, head, shapes)
