"""BP-DS: backpropagation with deep supervision from MF's per-layer heads (a rung of the BP -> MF ladder).

The ladder (as in the Spyra study's canonical v2 rebuild) goes BP -> ``bp-ds`` -> ``mf-joint`` (MF's
heads and losses, no detach) -> ``mf``. This rung asks whether MF's per-layer supervision helps BP when
every gradient stays global. The network is BP's (hidden blocks and the output head), plus one
projection matrix ``M_i`` per hidden block built exactly as MF builds them (same shapes, same
initialisation, same ``readout`` of conv blocks: :func:`algorithms.mf.make_projections`), giving local
class scores ``G_i = a_i M_i^T``. The loss is the head's cross-entropy plus the cross-entropy of every
``G_i``, a plain sum with equal weights (as the Spyra ladder; there is no ``loss_weight`` setting), with
one backward pass, no detach and one optimiser over all parameters: a block learns from its own head,
from every head above it and from the output head.

Prediction modes: ``output`` (the head; the default), ``ff`` (the sum of every ``G_i``, as MF) and
``layerK`` (block K's ``G_K``), so that the tables can read each. ``update`` returns ``loss`` (the output
head's cross-entropy, as BP reports it) and ``loss_layerK`` (each block's local cross-entropy).
"""

from __future__ import annotations


import torch
import torch.nn.functional as F

from .base import Trainer, make_optimizer
from .mf import ReadoutHParams, local_scores, make_projections
from .registry import ALGORITHMS


@ALGORITHMS.register("bp-ds")
class BackpropDeepSupervision(Trainer):
    HParams = ReadoutHParams
    uses_head = True

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.projections = make_projections(self.num_classes, self.net.feature_shapes, self.hp.readout)
        n = len(self.net.blocks)
        self.prediction_modes = ("output", "ff", *(f"layer{i + 1}" for i in range(n)))
        self._blocks = list(self.net.blocks)
        self.optimizer = make_optimizer(self.parameters(), self.hp)

    def scores(self, i: int, a: torch.Tensor) -> torch.Tensor:
        """Block i's local class scores G_i = a_i M_i^T from its output a."""
        return local_scores(a, self.projections[i], self.hp.readout)

    def update(self, x: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
        local = []
        h = x
        for i, block in enumerate(self._blocks):
            h = block(h)
            local.append(F.cross_entropy(self.scores(i, h), y))
        output = F.cross_entropy(self.net.head(h), y)
        self.optimizer.zero_grad(set_to_none=True)
        (output + torch.stack(local).sum()).backward()
        self.optimizer.step()
        losses = {"loss": output.detach()}
        losses.update({f"loss_layer{i + 1}": loss.detach() for i, loss in enumerate(local)})
        return losses

    def _depth(self, mode: str) -> int:
        return len(self._blocks) if mode in ("output", "ff") else int(mode[len("layer"):])

    @torch.no_grad()
    def predict(self, x: torch.Tensor, mode: str | None = None) -> torch.Tensor:
        mode = self._mode(mode)
        if mode == "output":
            return self.net(x)
        depth = self._depth(mode)
        h, total = x, None
        for i in range(depth):
            h = self._blocks[i](h)
            if mode == "ff" or i == depth - 1:
                g = self.scores(i, h)
                total = g if total is None else total + g
        return total

    @torch.no_grad()
    def predict_all(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Every prediction mode from one forward pass through the blocks."""
        h, out, total = x, {}, None
        for i, block in enumerate(self._blocks):
            h = block(h)
            g = self.scores(i, h)
            out[f"layer{i + 1}"] = g
            total = g if total is None else total + g  # the same additions, in the same order, as predict
        out["ff"] = total
        out["output"] = self.net.head(h)
        return {mode: out[mode] for mode in self.prediction_modes}

    def inference_parameters(self, mode: str | None = None) -> int:
        mode = self._mode(mode)
        depth = self._depth(mode)
        used = [*self.net.blocks[:depth].parameters()]
        if mode == "output":
            used += list(self.net.head.parameters())
        else:
            used += list(self.projections) if mode == "ff" else [self.projections[depth - 1]]
        return sum(p.numel() for p in used)
