"""Feedback alignment (FA, Lillicrap et al. 2016).

Training is BP's, except that the backward pass of every weight layer carries the error to its
input through a fixed random matrix ``B`` of the weight's shape instead of the transposed weight.
The weight's own gradient is the usual one (error times input). This is done with custom
``torch.autograd.Function``s, not module backward hooks (those break on newer PyTorch).

Linear, conv and locally connected layers (``lc-mlp``) have feedback versions; a locally connected
layer's feedback ``B`` has its weight's shape, so each position sends its error back through a
fixed random kernel of its own.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F
from torch.nn.grad import conv2d_input, conv2d_weight

from .bp import Backprop
from .local import LocallyConnected2d
from .networks import LayerFactory
from .registry import ALGORITHMS


class _FALinearFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias, feedback):
        ctx.save_for_backward(x, weight, feedback)
        ctx.has_bias = bias is not None
        return F.linear(x, weight, bias)

    @staticmethod
    def backward(ctx, grad_out):
        x, weight, feedback = ctx.saved_tensors
        # BP would use grad_out @ weight; nothing for an input that needs no gradient (the first layer)
        grad_x = grad_out @ feedback if ctx.needs_input_grad[0] else None
        grad_w = grad_out.flatten(0, -2).T @ x.flatten(0, -2)
        grad_b = grad_out.flatten(0, -2).sum(0) if ctx.has_bias else None
        return grad_x, grad_w, grad_b, None


class _FAConv2dFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias, feedback, padding):
        ctx.save_for_backward(x, weight, feedback)
        ctx.padding, ctx.has_bias = padding, bias is not None
        return F.conv2d(x, weight, bias, padding=padding)

    @staticmethod
    def backward(ctx, grad_out):
        x, weight, feedback = ctx.saved_tensors
        dt = grad_out.dtype  # bf16 under autocast: compute in it, hand each gradient back in its input's dtype
        grad_x = conv2d_input(x.shape, feedback.to(dt), grad_out, padding=ctx.padding).to(x.dtype) \
            if ctx.needs_input_grad[0] else None
        grad_w = conv2d_weight(x.to(dt), weight.shape, grad_out, padding=ctx.padding).to(weight.dtype)
        grad_b = grad_out.sum((0, 2, 3)).to(weight.dtype) if ctx.has_bias else None
        return grad_x, grad_w, grad_b, None, None


class _FALocalFn(torch.autograd.Function):
    """Position-batched product ``(P, N, K) @ (P, K, C_out)`` of a locally connected layer."""

    @staticmethod
    def forward(ctx, cols, weight, feedback):
        ctx.save_for_backward(cols, feedback)
        return torch.bmm(cols, weight.transpose(1, 2))

    @staticmethod
    def backward(ctx, grad_out):
        cols, feedback = ctx.saved_tensors
        grad_cols = torch.bmm(grad_out, feedback) if ctx.needs_input_grad[0] else None  # BP: the weight
        grad_w = torch.bmm(grad_out.transpose(1, 2), cols)
        return grad_cols, grad_w, None


def _random_like(weight: torch.Tensor) -> torch.Tensor:
    """A fixed feedback matrix drawn like the weight's own default initialisation."""
    feedback = torch.empty_like(weight)
    nn.init.kaiming_uniform_(feedback, a=math.sqrt(5))
    return feedback


class FALinear(nn.Linear):
    def __init__(self, in_features: int, out_features: int, bias: bool = True):
        super().__init__(in_features, out_features, bias=bias)
        self.register_buffer("feedback", _random_like(self.weight))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _FALinearFn.apply(x, self.weight, self.bias, self.feedback)


class FAConv2d(nn.Conv2d):
    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, padding: int = 0, bias: bool = True):
        super().__init__(in_channels, out_channels, kernel_size, padding=padding, bias=bias)
        self.register_buffer("feedback", _random_like(self.weight))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _FAConv2dFn.apply(x, self.weight, self.bias, self.feedback, self.padding)


class FALocal2d(LocallyConnected2d):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        feedback = torch.empty_like(self.weight)
        bound = 1 / math.sqrt(self.weight.shape[2])  # drawn like the weight itself
        nn.init.uniform_(feedback, -bound, bound)
        self.register_buffer("feedback", feedback)

    def local_product(self, cols: torch.Tensor) -> torch.Tensor:
        out = _FALocalFn.apply(cols, self.weight, self.feedback)
        return out if self.bias is None else out + self.bias.flatten(1).T.unsqueeze(1)

    def dense_product(self, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            feedback = self.dense_matrix(self.feedback)
        bias = None if self.bias is None else self.bias.reshape(-1)
        return _FALinearFn.apply(x, self.dense_matrix(self.weight), bias, feedback)


class FALayerFactory(LayerFactory):
    def linear(self, in_features, out_features, bias=True):
        return FALinear(in_features, out_features, bias)

    def conv2d(self, in_channels, out_channels, kernel_size, padding=0, bias=True):
        return FAConv2d(in_channels, out_channels, kernel_size, padding, bias)

    def local2d(self, in_shape, out_channels, kernel_size, stride=1, padding="same", bias=True):
        return FALocal2d(in_shape, out_channels, kernel_size, stride, padding, bias)


@ALGORITHMS.register("fa")
class FeedbackAlignment(Backprop):
    layer_factory = FALayerFactory()
