"""Direct feedback alignment (DFA, Nøkland 2016).

The output error ``e = dL/dlogits = softmax(logits) - onehot(y)`` (averaged over the batch) reaches
every hidden block directly through its own fixed random matrix ``B_i`` (block width x classes):
the gradient injected at block i's output is ``B_i e``, from where it flows back through that
block's activation (and pooling) to its weights only; block inputs are detached, so no error
travels from one block to the one below. The output head learns with its true gradient.

``lr_decay`` (DFA's own until every trainer got it, ``TrainerHParams``, with the same rule and
default): the learning rate of epoch e (0-based) is ``lr * lr_decay**e``. Nøkland trained DFA
"with decay", the learning rate and its decay chosen on a validation set; at a constant rate, Adam's
normalised steps stay full-sized while DFA's projected errors shrink, and validation accuracy swings by
half a point from epoch to epoch late in training (MNIST 2x1000: 97.15 to 98.12 %, seeds 0-2).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .base import Trainer, make_optimizer
from .registry import ALGORITHMS


@ALGORITHMS.register("dfa")
class DirectFeedbackAlignment(Trainer):
    # HParams: the shared ones (TrainerHParams), lr_decay among them (the module docstring)
    prediction_modes = ("output",)

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        for i, shape in enumerate(self.net.feature_shapes):
            feedback = torch.empty(math.prod(shape), self.num_classes)
            nn.init.kaiming_uniform_(feedback, a=math.sqrt(5))  # like a Linear(classes -> width)
            self.register_buffer(f"feedback{i}", feedback)
        self.optimizer = make_optimizer(self.parameters(), self.hp)

    def feedback(self, i: int) -> torch.Tensor:
        return getattr(self, f"feedback{i}")

    def update(self, x: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
        hidden = []
        h = x
        for block in self.net.blocks:
            h = block(h.detach())
            hidden.append(h)
        logits = self.net.head(h.detach())
        loss = F.cross_entropy(logits, y)
        with torch.no_grad():
            error = (logits.softmax(1) - F.one_hot(y, self.num_classes).to(logits.dtype)) / len(y)
            injected = [(error @ self.feedback(i).T).view_as(h_i) for i, h_i in enumerate(hidden)]
        self.optimizer.zero_grad(set_to_none=True)
        torch.autograd.backward([loss, *hidden], [None, *injected])
        self.optimizer.step()
        return {"loss": loss.detach()}

    @torch.no_grad()
    def predict(self, x: torch.Tensor, mode: str | None = None) -> torch.Tensor:
        self._mode(mode)
        return self.net(x)
