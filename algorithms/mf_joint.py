"""MF-joint: Mono-Forward's heads and losses without its detach (a rung of the BP -> MF ablation ladder).

The ladder (as in the Spyra study's canonical v2 rebuild) goes BP -> ``bp-ds`` (BP plus MF's per-layer
heads) -> ``mf-joint`` -> ``mf``. This rung is MF in everything but one point: the network, the
projection matrices ``M_i``, their initialisation, the ``readout`` of conv blocks, the local scores
``G_i = a_i M_i^T`` and the prediction modes (``ff``, ``bp``, ``layerK``) are MF's own (the class
subclasses :class:`~algorithms.mf.MonoForward`), but the model is trained as one: the loss is the plain
sum of every block's local cross-entropy, with one backward pass, NO detach between blocks and one
optimiser over all parameters. Block i therefore learns from its own local loss and from the local
losses of every block above it. The detach alone is the step ``mf-joint -> mf``.

Only the simultaneous schedule: in MF's sequential schedule the blocks below the learning one are
frozen, so no gradient would reach them with or without a detach, and a sequential ``mf-joint`` would
be MF's sequential schedule exactly. The ``schedule`` setting is therefore not offered.

``update`` returns ``loss_layerK`` (each block's local cross-entropy) and ``loss``, their mean, as MF
reports it, so that the two rungs' training losses read alike; the sum is what is minimised.
"""

from __future__ import annotations


import torch
import torch.nn.functional as F

from .base import make_optimizer
from .mf import MonoForward, ReadoutHParams
from .registry import ALGORITHMS


@ALGORITHMS.register("mf-joint")
class MonoForwardJoint(MonoForward):
    HParams = ReadoutHParams
    uses_head = False

    def _make_optimizers(self) -> None:
        self.optimizer = make_optimizer(self.parameters(), self.hp)  # one, over every block and M_i

    def start_epoch(self, epoch: int, num_epochs: int) -> None:
        self.set_epoch_lr(epoch)
        self.active = list(range(len(self.net.blocks)))
        self.phase = "all layers"
        self.final_phase = True

    def update(self, x: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
        """One forward pass through every block (no detach), the sum of the local losses, one step."""
        local = []
        h = x
        for i, block in enumerate(self._blocks):
            h = block(h)
            local.append(F.cross_entropy(self.scores(i, h), y))
        self.optimizer.zero_grad(set_to_none=True)
        torch.stack(local).sum().backward()
        self.optimizer.step()
        losses = {f"loss_layer{i + 1}": loss.detach() for i, loss in enumerate(local)}
        losses["loss"] = torch.stack(list(losses.values())).mean()
        return losses
