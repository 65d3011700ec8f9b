"""Mono-Forward (MF, Gong, Li and Abdulla 2025).

Every hidden block i has a projection matrix ``M_i`` (classes x block width) and local class
scores ``G_i = a_i M_i^T`` from its output ``a_i``; each block and its ``M_i`` learn from the
cross-entropy of ``G_i`` alone, with an optimiser of their own. The input of every block is
detached, so no gradient ever crosses from one block to another. There is no separate output
layer: prediction sums ``G_i`` over blocks (mode ``ff``), takes the last block's (``bp``), or any
one block's (``layerK``).

Schedules: ``simultaneous`` trains every block on every batch; ``sequential`` splits the epochs
evenly over the blocks and trains them one after the other, earlier blocks frozen. Before the last
block's share the later blocks are untrained (``bp`` mode is at chance), so a sequential run selects
its epoch and stops early only within the last block's share (``final_phase``).

Convolutional blocks need their feature maps turned into a vector before ``M_i``: ``flatten``
keeps every position (``M_i`` is classes x C*H*W) and ``gap`` averages each channel over space
(``M_i`` is classes x C). ``flatten`` is the default and the paper tables' setting: it is the
paper's ``G_i = a_i M_i^T`` on the block's whole output, as for an MLP layer, while ``gap`` leaves
an early block's local classifier only C averages to learn from (``cnn`` 64-128-256-512 on
cifar10-jpeg, 5000 training images, 3 epochs, seed 0: 64.2 % test with ``flatten``, 46.8 % with
``gap``). Blocks with flat outputs (``mlp``, ``lc-mlp``) are always read out whole.

The local heads (:func:`make_projections`, :func:`local_scores`) are shared with the ablation ladder
between BP and MF: ``bp-ds`` (:mod:`algorithms.bp_ds`) and ``mf-joint`` (:mod:`algorithms.mf_joint`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .base import Trainer, TrainerHParams, make_optimizer
from .typed_config import check
from .registry import ALGORITHMS

SCHEDULES = ("simultaneous", "sequential")
READOUTS = ("flatten", "gap")


@dataclass
class ReadoutHParams(TrainerHParams):
    """What every trainer with MF's per-layer heads has (MF, and the ladder's bp-ds and mf-joint)."""
    readout: str = "flatten"  # how a conv block's maps become the vector M_i projects

    def validate(self) -> None:
        super().validate()
        check(self.readout in READOUTS, f"unknown readout {self.readout!r}; choose one of: {', '.join(READOUTS)}")


def make_projections(num_classes: int, feature_shapes: list[tuple[int, ...]], readout: str) -> nn.ParameterList:
    """MF's projection matrices: one ``M_i`` (classes x width) per block output shape, where width is
    the channel count of a conv block read out by ``gap`` and the whole output's size otherwise."""
    projections = nn.ParameterList()
    for shape in feature_shapes:
        width = shape[0] if (readout == "gap" and len(shape) == 3) else math.prod(shape)
        m = torch.empty(num_classes, width)
        nn.init.kaiming_uniform_(m, a=math.sqrt(5))  # like a Linear(width -> classes) without bias
        projections.append(nn.Parameter(m))
    return projections


def local_scores(a: torch.Tensor, m: torch.Tensor, readout: str) -> torch.Tensor:
    """Local class scores ``G = a M^T`` of a block's output ``a`` (conv maps averaged first by ``gap``)."""
    if a.dim() == 4 and readout == "gap":
        a = a.mean((2, 3))
    return F.linear(a.flatten(1), m)


@dataclass
class MFHParams(ReadoutHParams):
    schedule: str = "simultaneous"  # the paper trains all layers together on each batch

    def validate(self) -> None:
        super().validate()
        check(self.schedule in SCHEDULES, f"unknown schedule {self.schedule!r}; choose one of: {', '.join(SCHEDULES)}")


@ALGORITHMS.register("mf")
class MonoForward(Trainer):
    HParams = MFHParams
    uses_head = False

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.projections = make_projections(self.num_classes, self.net.feature_shapes, self.hp.readout)
        n = len(self.net.blocks)
        self.prediction_modes = ("ff", "bp", *(f"layer{i + 1}" for i in range(n)))
        self._make_optimizers()
        self._blocks = list(self.net.blocks)  # plain list: no ModuleList slicing on every step
        self._depth = {"ff": n, "bp": n, **{f"layer{i + 1}": i + 1 for i in range(n)}}
        self.active = list(range(n))  # the blocks that learn in this epoch

    def _make_optimizers(self) -> None:
        """One optimiser, a parameter group per block (the block and its M_i), stepped once per update
        (``mf-joint`` overrides it). Adam's and SGD's updates are per parameter and skip a parameter
        without a gradient, so this equals one optimiser per block stepped after its own backward pass
        (a frozen block of the sequential schedule has none), at one fused kernel call a step instead
        of one per block (measured: 5 % of a 2x1000 MNIST step at batch 64 on one core)."""
        self.optimizer = make_optimizer([{"params": [*block.parameters(), m]}
                                         for block, m in zip(self.net.blocks, self.projections)], self.hp)

    @property
    def active(self) -> list[int]:
        return self._active

    @active.setter
    def active(self, blocks: list[int]) -> None:
        self._active, self._active_set, self._last_active = list(blocks), set(blocks), max(blocks)

    def start_epoch(self, epoch: int, num_epochs: int) -> None:
        self.set_epoch_lr(epoch)
        n = len(self.net.blocks)
        if self.hp.schedule == "sequential":
            check(num_epochs >= n, f"the sequential schedule needs at least one epoch per layer ({n}), got {num_epochs}")
            layer = min(n - 1, epoch * n // num_epochs)
            self.active = [layer]
            self.phase = f"layer{layer + 1}"
            self.final_phase = layer == n - 1
        else:
            self.active = list(range(n))
            self.phase = "all layers"
            self.final_phase = True

    def scores(self, i: int, a: torch.Tensor) -> torch.Tensor:
        """Block i's local class scores G_i = a_i M_i^T from its output a."""
        return local_scores(a, self.projections[i], self.hp.readout)

    def update(self, x: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
        """Block by block: forward on the detached input, local loss, backward; then one step of all.

        Only one block's graph is alive at a time (its backward frees it before the next block
        runs), which is where MF's memory advantage over BP comes from. Each block reads its input
        detached, so no gradient crosses blocks, and the updates equal those of stepping every block
        right after its own backward pass, or of one backward pass over the sum of every block's loss.
        """
        losses = {}
        h = x
        blocks = self._blocks
        self.optimizer.zero_grad(set_to_none=True)
        for i in range(self._last_active + 1):
            if i not in self._active_set:
                with torch.no_grad():  # a frozen block below the learning one only feeds it
                    h = blocks[i](h)
                continue
            h = blocks[i](h.detach())
            loss = F.cross_entropy(self.scores(i, h), y)
            loss.backward()
            losses[f"loss_layer{i + 1}"] = loss.detach()
        self.optimizer.step()
        losses["loss"] = torch.stack(list(losses.values())).mean()
        return losses

    @torch.no_grad()
    def predict(self, x: torch.Tensor, mode: str | None = None) -> torch.Tensor:
        mode = self._mode(mode)
        depth = self._depth[mode]
        h, total = x, None
        for i in range(depth):
            h = self._blocks[i](h)
            if mode == "ff" or i == depth - 1:
                g = self.scores(i, h)
                total = g if total is None else total + g
        return total

    @torch.no_grad()
    def predict_all(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Every prediction mode from one forward pass: each block's scores are computed once."""
        h, per_block = x, []
        for i, block in enumerate(self._blocks):
            h = block(h)
            per_block.append(self.scores(i, h))
        out = {f"layer{i + 1}": g for i, g in enumerate(per_block)}
        out["bp"] = per_block[-1]
        out["ff"] = torch.stack(per_block).sum(0)
        return {mode: out[mode] for mode in self.prediction_modes}

    def inference_parameters(self, mode: str | None = None) -> int:
        mode = self._mode(mode)
        depth = self._depth[mode]
        used = [*self.net.blocks[:depth].parameters()]
        used += list(self.projections[:depth]) if mode == "ff" else [self.projections[depth - 1]]
        return sum(p.numel() for p in used)
