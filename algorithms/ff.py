"""Forward-Forward (FF, Hinton 2022), on MLPs.

The label is written into the input: a one-hot vector (times ``label_value``) overwrites the first
``classes`` input features (``overlay``, Hinton's choice for images) or is appended to them
(``concat``, for inputs where no feature may be lost). Every layer sees its input scaled to unit
length (detached from the layer below, so no gradient crosses layers) and learns to give a high
*goodness*, the mean of its squared activations, to positive data (true label) and a low one to
negative data (a wrong label, drawn uniformly and never the true one):

    loss_i = softplus(threshold - g_pos) + softplus(g_neg - threshold)

Prediction (mode ``goodness``) runs the network once per label and picks the label with the most
goodness summed over layers. The one-pass variant (mode ``onepass``) runs it once with a neutral
label (every class 1/classes) and reads the classes from a softmax head on the concatenated
activations, trained with cross-entropy on detached activations.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .base import ConfigError, Trainer, TrainerHParams, _check, dataclass_from_dict, make_optimizer
from .registry import ALGORITHMS

LABEL_EMBEDDINGS = ("overlay", "concat")


@dataclass
class FFHParams(TrainerHParams):
    # Goodness is a mean of squares. On unit-length inputs a fresh layer's goodness is ~1e-3, so the 2.0
    # of the PyTorch FF example learns very slowly in mini-batch training (MNIST subset, 3 epochs:
    # 15 % at 2.0, 75 % at 0.2, 84 % at 0.05, lr 0.01).
    threshold: float = 0.05
    lr: float = 1e-2  # FF's local losses learn slowly at Adam's 1e-3 (MNIST subset: 56 % vs 75 % at 1e-2)
    label_embedding: str = "overlay"
    label_value: float = 1.0  # the one-hot's height; about the size of a normalised input feature
    onepass_head: bool = True  # also train the softmax head of one-pass prediction

    def validate(self) -> None:
        super().validate()
        _check(self.threshold > 0, f"threshold must be > 0, got {self.threshold}")
        _check(self.label_value > 0, f"label_value must be > 0, got {self.label_value}")
        _check(self.label_embedding in LABEL_EMBEDDINGS,
               f"unknown label_embedding {self.label_embedding!r}; choose one of: {', '.join(LABEL_EMBEDDINGS)}")


def unit_length(h: torch.Tensor) -> torch.Tensor:
    return h / (h.norm(dim=1, keepdim=True) + 1e-4)  # eps keeps an all-zero input finite


def goodness(h: torch.Tensor) -> torch.Tensor:
    return h.pow(2).mean(1)


@ALGORITHMS.register("ff")
class ForwardForward(Trainer):
    HParams = FFHParams
    uses_head = False

    def __init__(self, input_shape, num_classes, arch, arch_args=None, hparams=None):
        if arch != "mlp":
            raise ConfigError(f"ff trains MLPs only, got architecture {arch!r}")
        if not isinstance(hparams, FFHParams):
            hparams = dataclass_from_dict(FFHParams, dict(hparams or {}), "ForwardForward hyperparameter")
        features = math.prod(input_shape)
        embedding = hparams.label_embedding
        if embedding == "overlay" and features < num_classes:
            raise ConfigError(f"ff's overlay needs at least {num_classes} input features, got {features}; "
                              "use label_embedding=concat")
        width_in = features + num_classes if embedding == "concat" else features
        super().__init__((width_in,), num_classes, arch, arch_args, hparams)
        self.features = features
        self.prediction_modes = ("goodness", "onepass") if self.hp.onepass_head else ("goodness",)
        self.optimizers = [make_optimizer(block.parameters(), self.hp) for block in self.net.blocks]
        if self.hp.onepass_head:
            width = sum(shape[0] for shape in self.net.feature_shapes)
            self.onepass = nn.Linear(width, num_classes)
            self.optimizers.append(make_optimizer(self.onepass.parameters(), self.hp))

    def embed(self, x: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
        """Write ``label`` (class indices, or a (N, classes) distribution) into flattened ``x``."""
        x = x.flatten(1)
        if label.dim() == 1:
            label = F.one_hot(label, self.num_classes).to(x.dtype)
        label = label * self.hp.label_value
        if self.hp.label_embedding == "concat":
            return torch.cat([x, label], 1)
        return torch.cat([label, x[:, self.num_classes:]], 1)

    def layer_activations(self, h: torch.Tensor) -> list[torch.Tensor]:
        acts = []
        for block in self.net.blocks:
            h = block(unit_length(h.detach()))
            acts.append(h)
        return acts

    def wrong_labels(self, y: torch.Tensor) -> torch.Tensor:
        offset = torch.randint(1, self.num_classes, y.shape, device=y.device)
        return (y + offset) % self.num_classes  # uniform over the other classes, never y

    def update(self, x: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
        pos = self.layer_activations(self.embed(x, y))
        neg = self.layer_activations(self.embed(x, self.wrong_labels(y)))
        losses = {}
        for i, (hp_, hn) in enumerate(zip(pos, neg)):
            losses[f"loss_layer{i + 1}"] = (F.softplus(self.hp.threshold - goodness(hp_))
                                            + F.softplus(goodness(hn) - self.hp.threshold)).mean()
        if self.hp.onepass_head:
            with torch.no_grad():
                neutral = torch.cat(self.layer_activations(self.embed(x, self._neutral(x))), 1)
            losses["loss_onepass"] = F.cross_entropy(self.onepass(neutral), y)
        for opt in self.optimizers:
            opt.zero_grad(set_to_none=True)
        sum(losses.values()).backward()
        for opt in self.optimizers:
            opt.step()
        out = {k: v.detach() for k, v in losses.items()}
        out["loss"] = sum(v for k, v in out.items() if k.startswith("loss_layer")) / len(pos)
        return out

    def _neutral(self, x: torch.Tensor) -> torch.Tensor:
        return torch.full((len(x), self.num_classes), 1.0 / self.num_classes, device=x.device, dtype=x.dtype)

    @torch.no_grad()
    def predict(self, x: torch.Tensor, mode: str | None = None) -> torch.Tensor:
        mode = self._mode(mode)
        if mode == "onepass":
            return self.onepass(torch.cat(self.layer_activations(self.embed(x, self._neutral(x))), 1))
        scores = []
        for label in range(self.num_classes):
            y = torch.full((len(x),), label, dtype=torch.long, device=x.device)
            scores.append(sum(goodness(a) for a in self.layer_activations(self.embed(x, y))))
        return torch.stack(scores, 1)

    def inference_parameters(self, mode: str | None = None) -> int:
        mode = self._mode(mode)
        n = sum(p.numel() for p in self.net.blocks.parameters())
        return n + (sum(p.numel() for p in self.onepass.parameters()) if mode == "onepass" else 0)
