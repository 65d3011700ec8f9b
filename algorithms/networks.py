"""Network building blocks shared by every algorithm.

A network is a stack of hidden *blocks* (each maps the previous block's output to features, e.g.
``Linear -> ReLU`` or ``Conv -> ReLU -> AvgPool``) plus an optional output *head* (flatten ->
linear to the classes). Algorithms train the same blocks in different ways: BP through the whole
stack, FA/DFA with random feedback, FF and MF one block at a time from a local loss.

Architectures are registered by name (``ARCHITECTURES``) with a dataclass of their arguments. They
create their weight layers through a :class:`LayerFactory`, so that an algorithm which needs other
layers (FA's fixed random feedback) swaps the factory, not the architecture.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from .registry import ARCHITECTURES

ACTIVATIONS = {"relu": nn.ReLU, "tanh": nn.Tanh, "gelu": nn.GELU, "sigmoid": nn.Sigmoid}


class LayerFactory:
    """Creates the weight layers of an architecture; FA overrides it with feedback layers."""

    def linear(self, in_features: int, out_features: int, bias: bool = True) -> nn.Module:
        return nn.Linear(in_features, out_features, bias=bias)

    def conv2d(self, in_channels: int, out_channels: int, kernel_size: int, padding: int = 0,
               bias: bool = True) -> nn.Module:
        return nn.Conv2d(in_channels, out_channels, kernel_size, padding=padding, bias=bias)


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


def _check(cond: bool, message: str) -> None:
    if not cond:
        from .base import ConfigError  # late import: base imports this module
        raise ConfigError(message)


@dataclass
class MLPArgs:
    widths: tuple[int, ...] = (1000, 1000)  # the paper's 2x1000 MLP for MNIST and Fashion-MNIST
    activation: str = "relu"

    def validate(self) -> None:
        self.widths = tuple(int(w) for w in self.widths)
        _check(len(self.widths) >= 1, "an MLP needs at least one hidden layer (widths)")
        _check(all(w > 0 for w in self.widths), f"every width must be > 0, got {list(self.widths)}")
        _check(self.activation in ACTIVATIONS,
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


def build_network(arch: str, input_shape: tuple[int, ...], num_classes: int, arch_args: dict[str, Any],
                  layers: LayerFactory, with_head: bool = True) -> Network:
    """Build architecture ``arch``; ``arch_args`` is checked against its ``Args`` dataclass."""
    from .base import dataclass_from_dict

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
    if with_head:
        head = nn.Sequential(nn.Flatten(), layers.linear(math.prod(shapes[-1]), num_classes))
    return Network(blocks, head, shapes)
