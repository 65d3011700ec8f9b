"""Backpropagation (BP): the reference every other algorithm is compared with.

The whole network, hidden blocks and output head, is trained end to end on the cross-entropy of
the head's output, with one optimiser.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .base import Trainer, make_optimizer
from .registry import ALGORITHMS


@ALGORITHMS.register("bp")
class Backprop(Trainer):
    prediction_modes = ("output",)

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.optimizer = make_optimizer(self.parameters(), self.hp)

    def update(self, x: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
        loss = F.cross_entropy(self.net(x), y)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        return {"loss": loss.detach()}

    @torch.no_grad()
    def predict(self, x: torch.Tensor, mode: str | None = None) -> torch.Tensor:
        self._mode(mode)
        return self.net(x)
