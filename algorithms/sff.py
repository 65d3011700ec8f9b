"""Scalable Forward-Forward (SFF, Krutsylo 2025, arXiv 2501.03176): FF on deep convolutional networks.

The network is cut into *units* that learn alone. Every unit carries a small auxiliary convolution
``A_i`` (``aux_kernel`` x ``aux_kernel``, one output channel per class) on its output map ``a_i``; the
goodness of class k is the mean of that channel's squared activations,

    g_ik = mean_{h,w} (A_i a_i)_k[h, w]^2,

so one forward pass gives every class's goodness: the true class is the positive, every other class a
negative (no label pixels, no second pass). Each unit minimises the log-sum-exp margin of the negatives
over the positive,

    loss_i = log(1 + sum_{k != y} exp(g_ik - g_iy)) = softplus(logsumexp_{k != y}(g_ik - g_iy)),

which is the cross-entropy of the goodness vector taken as logits (the form the tests check by hand).

Training is unit by unit on every mini-batch, as MF does: forward the unit on its detached input, its
loss, backward and step at once, so one unit's graph is alive at a time. Inside a unit the gradient is
ordinary backpropagation; a unit's output is layer-normalised (per sample over C, H, W, no learned
affine; ``normalize``) and detached before the next unit, so no gradient crosses a unit boundary.

Granularity (``granularity``): ``layer`` makes every conv layer a unit (the paper's SFF; a residual
block is split into its two convs with the shortcut in the second, so the shortcut's own 1x1 conv still
learns but no gradient passes between the convs); ``block`` makes every block of the architecture a unit
(the paper's hybrid: a residual block learns with backpropagation through both convs and its shortcut).
On ``cnn`` every block is a single conv, so the two coincide.

Prediction: ``avg`` averages every unit's goodness vector (the paper's default vote), ``last`` takes the
last unit's, ``blockK`` unit K's alone (K counts units, i.e. conv layers under ``layer``).

Reading the paper: the stored copy of the paper available to us gave its abstract and the author's
summary, not the body text; the loss above is the "log-sum-exp margin over class goodnesses" those
describe, written out by us.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from .base import ConfigError, Trainer, TrainerHParams, make_optimizer
from .typed_config import check
from .registry import ALGORITHMS

GRANULARITIES = ("layer", "block")


@dataclass
class SFFHParams(TrainerHParams):
    granularity: str = "layer"  # layer: every conv learns alone (the paper's SFF); block: the paper's hybrid
    aux_kernel: int = 1  # the paper's auxiliary conv is 1x1 "or slightly larger"; odd, padded to keep the map
    normalize: bool = True  # layer-normalise a unit's output before the next unit reads it (the paper does)

    def validate(self) -> None:
        super().validate()
        check(self.granularity in GRANULARITIES,
               f"unknown granularity {self.granularity!r}; choose one of: {', '.join(GRANULARITIES)}")
        check(isinstance(self.aux_kernel, int) and self.aux_kernel >= 1 and self.aux_kernel % 2 == 1,
               f"aux_kernel must be an odd whole number >= 1, got {self.aux_kernel!r}")


def sff_loss(goodness: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Mean over the batch of log(1 + sum_{k != y} exp(g_k - g_y))."""
    positive = goodness.gather(1, y[:, None])
    negatives = goodness.masked_fill(F.one_hot(y, goodness.shape[1]).bool(), float("-inf"))
    return F.softplus(torch.logsumexp(negatives - positive, 1)).mean()


@dataclass
class Unit:
    """What learns alone: its modules (for the optimiser and parameter counts) and ``forward(x, h)``,
    which maps the input of the architecture block it belongs to (``x``) and the previous unit's
    normalised output (``h``) to the unit's output."""

    modules: nn.Module
    forward: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    starts_block: bool  # the first unit of an architecture block: its input becomes the block's input


def split_units(blocks: nn.ModuleList, granularity: str) -> list[Unit]:
    units = []
    for block in blocks:
        if granularity == "layer" and hasattr(block, "parts"):  # a residual block: its convs (resnet.BasicBlock)
            for k, (modules, fn) in enumerate(block.parts()):
                units.append(Unit(modules, fn, starts_block=k == 0))
        else:
            units.append(Unit(block, lambda x, h, block=block: block(x), starts_block=True))
    return units


@ALGORITHMS.register("sff")
class ScalableForwardForward(Trainer):
    HParams = SFFHParams
    uses_head = False

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.units = split_units(self.net.blocks, self.hp.granularity)
        shapes = self._unit_shapes()
        flat = [s for s in shapes if len(s) != 3]
        if flat:
            raise ConfigError(f"sff needs convolutional blocks with feature maps (C, H, W); this architecture's "
                              f"blocks give shape {flat[0]}: use cnn or resnet")
        k = self.hp.aux_kernel
        self.aux = nn.ModuleList(nn.Conv2d(s[0], self.num_classes, k, padding=k // 2) for s in shapes)
        self.unit_shapes = shapes
        n = len(self.units)
        self.prediction_modes = ("avg", "last", *(f"block{i + 1}" for i in range(n)))
        self.optimizers = [make_optimizer([*unit.modules.parameters(), *aux.parameters()], self.hp)
                           for unit, aux in zip(self.units, self.aux)]
        self.phase = "all units"

    @torch.no_grad()
    def _unit_shapes(self) -> list[tuple[int, ...]]:
        modes = [(m, m.training) for m in self.modules()]
        self.eval()  # a one-image dry run: BatchNorm must use (and keep) its running statistics
        try:
            shapes, x = [], torch.zeros(1, *self.input_shape)
            for out in self._outputs(x):
                shapes.append(tuple(out.shape[1:]))
        finally:
            for m, training in modes:
                m.training = training
        return shapes

    def boundary(self, a: torch.Tensor) -> torch.Tensor:
        """What the next unit reads: the output layer-normalised per sample and detached."""
        a = a.detach()
        return F.layer_norm(a, a.shape[1:]) if self.hp.normalize else a

    def goodness(self, i: int, a: torch.Tensor) -> torch.Tensor:
        """Unit i's class goodness (N, classes): mean of the squared auxiliary channels."""
        return self.aux[i](a).pow(2).mean((2, 3))

    def _outputs(self, x: torch.Tensor, depth: int | None = None):
        """Each unit's output in turn (a generator), the boundary applied between units."""
        block_in = h = x
        for unit in self.units[:depth]:
            if unit.starts_block:
                block_in = h
            a = unit.forward(block_in, h)
            yield a
            h = self.boundary(a)

    def update(self, x: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
        """Unit by unit: forward on the detached, normalised input, local loss, backward and step at once.

        The generator computes the next unit's input from this unit's output before this unit's step,
        so the updates equal those of one backward pass over the sum of every unit's loss.
        """
        losses = {}
        for i, a in enumerate(self._outputs(x)):
            loss = sff_loss(self.goodness(i, a), y)
            self.optimizers[i].zero_grad(set_to_none=True)
            loss.backward()
            self.optimizers[i].step()
            losses[f"loss_block{i + 1}"] = loss.detach()
        losses["loss"] = sum(losses.values()) / len(self.units)
        return losses

    def _depth(self, mode: str) -> int:
        return len(self.units) if mode in ("avg", "last") else int(mode[5:])

    @torch.no_grad()
    def predict(self, x: torch.Tensor, mode: str | None = None) -> torch.Tensor:
        mode = self._mode(mode)
        depth = self._depth(mode)
        scores = [self.goodness(i, a) for i, a in enumerate(self._outputs(x, depth))
                  if mode == "avg" or i == depth - 1]
        return sum(scores) / len(scores)

    @torch.no_grad()
    def predict_all(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Every prediction mode from one forward pass: each unit's goodness is computed once."""
        scores = [self.goodness(i, a) for i, a in enumerate(self._outputs(x))]
        out = {f"block{i + 1}": g for i, g in enumerate(scores)}
        out["last"], out["avg"] = scores[-1], sum(scores) / len(scores)
        return {mode: out[mode] for mode in self.prediction_modes}

    def inference_parameters(self, mode: str | None = None) -> int:
        mode = self._mode(mode)
        depth = self._depth(mode)
        used = [p for unit in self.units[:depth] for p in unit.modules.parameters()]
        used += list(self.aux[:depth].parameters()) if mode == "avg" else list(self.aux[depth - 1].parameters())
        return sum(p.numel() for p in used)
