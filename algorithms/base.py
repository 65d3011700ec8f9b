"""The one trainer interface every algorithm implements, and what they share.

A trainer is an ``nn.Module`` with two verbs:

* ``update(x, y) -> dict[str, Tensor]``: one training step on a mini-batch; returns detached
  scalar losses (kept as tensors so that a GPU is not synchronised on every step).
* ``predict(x, mode) -> Tensor``: class scores ``(N, num_classes)``; ``mode`` is one of
  ``prediction_modes`` (the first is the default), e.g. MF's ``ff``, ``bp``, ``layer1``.
  ``predict_all(x)`` gives every mode's scores at once (evaluation uses it).

Between epochs the runner calls ``start_epoch(epoch, num_epochs)`` so that schedules (MF's
layer-by-layer training) can change what learns, and so that every optimiser's learning rate follows
the shared per-epoch decay ``lr_decay`` (:meth:`Trainer.set_epoch_lr`: an override calls it, with its
own factor where it has a schedule of its own, FF's cooldown); ``phase`` names what is learning now, so that
measurements wrapped around the trainer can report per phase, and ``final_phase`` says whether every
part a prediction uses has started learning (False in MF's sequential schedule before its last layer):
a run selects its best epoch and stops early only among final-phase epochs. Nothing in
``algorithms`` knows about timing, memory, energy or files.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Iterable

import torch
from torch import nn

from .networks import LayerFactory, Network, build_network
from .typed_config import ConfigError, check, dataclass_from_dict


@dataclass
class TrainerHParams:
    """Settings every trainer has; algorithms subclass this and add their own."""

    optimizer: str = "adam"  # the Mono-Forward paper trains every network with Adam
    lr: float = 1e-3  # Adam's usual default; the paper's Figure 4/5 protocol uses it too
    weight_decay: float = 0.0
    momentum: float = 0.9  # used by sgd only
    # One fused kernel for Adam/AdamW's whole update (torch >= 2.4 on CPU and CUDA): 0.64 ms against
    # 1.9 ms (foreach) for the 1.8M parameters of a 2x1000 MLP on 2 CPU cores. It computes the same
    # update up to float rounding, so it changes speed, not results, and is left out of a run's
    # identity; ``fused: false`` gives torch's default (foreach) to show the difference.
    fused: bool = True
    # Per-epoch factor of every optimiser's learning rate: epoch e (0-based) trains at ``lr * lr_decay**e``
    # (times a trainer's own schedule, FF's cooldown); 1 keeps it constant, as every run before the field
    # (and its run ids: benchmarks/run/config.py). Nøkland 2016 trained DFA "with decay"; a spec's tuning
    # searches it for every row of a profile or for none (``tune_shared``, algorithms/search_spaces.py).
    lr_decay: float = 1.0

    def validate(self) -> None:
        check(self.optimizer in OPTIMIZERS, f"unknown optimizer {self.optimizer!r}; choose one of: {', '.join(OPTIMIZERS)}")
        check(self.lr > 0, f"lr must be > 0, got {self.lr}")
        check(self.weight_decay >= 0, f"weight_decay must be >= 0, got {self.weight_decay}")
        check(0 <= self.momentum < 1, f"momentum must be in [0, 1), got {self.momentum}")
        check(0 < self.lr_decay <= 1, f"lr_decay must be in (0, 1], got {self.lr_decay}")


OPTIMIZERS = ("adam", "adamw", "sgd")


#: hyperparameters that change how fast a run goes, not what it computes (beyond float rounding);
#: run identities leave them out, so a run made either way is the same run
EXECUTION_HPARAMS = ("fused",)


#: the param-group key that holds a group's learning rate before any epoch's factor (torch's LR schedulers
#: use the same key for the same thing); it travels with the optimiser's state dict, so that a resumed
#: run scales from the base rate, not from the rate its stopped attempt had reached
BASE_LR = "initial_lr"


def make_optimizer(params: Iterable[nn.Parameter], hp: TrainerHParams) -> torch.optim.Optimizer:
    """The optimiser ``hp`` names over ``params``; Adam and AdamW fused unless ``hp.fused`` is off.

    The fused kernel needs every parameter on one device type that has it (CPU or CUDA, floating
    point); a model moved to another device after this call keeps working because torch checks at
    ``step``, so trainers build their optimisers once, in ``__init__``, on whatever device. Each param
    group's base learning rate is recorded under ``BASE_LR`` (:meth:`Trainer.set_epoch_lr` scales it)."""
    params = list(params)
    if hp.optimizer in ("adam", "adamw"):
        cls = torch.optim.Adam if hp.optimizer == "adam" else torch.optim.AdamW
        opt = cls(params, lr=hp.lr, weight_decay=hp.weight_decay, fused=True if hp.fused else None)
    else:
        opt = torch.optim.SGD(params, lr=hp.lr, momentum=hp.momentum, weight_decay=hp.weight_decay)
    for group in opt.param_groups:
        group[BASE_LR] = group["lr"]
    return opt


def find_optimizers(obj: Any) -> list[torch.optim.Optimizer]:
    """Optimisers held by an object's attributes (directly or in lists, tuples, dicts), each once."""
    found: list[torch.optim.Optimizer] = []

    def visit(value, depth):
        if isinstance(value, torch.optim.Optimizer):
            if not any(value is o for o in found):
                found.append(value)
        elif depth < 2 and isinstance(value, (list, tuple)):
            for v in value:
                visit(v, depth + 1)
        elif depth < 2 and isinstance(value, dict):
            for v in value.values():
                visit(v, depth + 1)

    for value in vars(obj).values():
        visit(value, 0)
    return found


class Trainer(nn.Module):
    """Base class of every algorithm. Subclasses set ``HParams`` and implement the verbs."""

    HParams: ClassVar[type[TrainerHParams]] = TrainerHParams
    layer_factory: ClassVar[LayerFactory] = LayerFactory()
    #: whether the architecture's output head is part of the model (MF and FF replace it)
    uses_head: ClassVar[bool] = True

    def __init__(self, input_shape: tuple[int, ...], num_classes: int, arch: str,
                 arch_args: dict[str, Any] | None = None, hparams: TrainerHParams | dict | None = None):
        super().__init__()
        if not isinstance(hparams, TrainerHParams):
            hparams = dataclass_from_dict(self.HParams, dict(hparams or {}), f"{type(self).__name__} hyperparameter")
        self.hp = hparams
        self.input_shape = tuple(input_shape)
        self.num_classes = num_classes
        self.net: Network = build_network(arch, self.input_shape, num_classes, arch_args or {},
                                          self.layer_factory, with_head=self.uses_head)
        self.phase = "train"
        self.final_phase = True  # False while a schedule still has parts to train (see the module docstring)

    # -- the interface ---------------------------------------------------------------------------
    prediction_modes: tuple[str, ...] = ("output",)

    def start_epoch(self, epoch: int, num_epochs: int) -> None:
        """Called before each epoch (0-based); schedules override it, and an override calls
        :meth:`set_epoch_lr` (every registered trainer is tested to follow ``lr_decay``)."""
        self.set_epoch_lr(epoch)

    def set_epoch_lr(self, epoch: int, factor: float = 1.0) -> None:
        """Set every optimiser's learning rate for ``epoch``: each param group's base rate (``BASE_LR``,
        recorded by :func:`make_optimizer`; a group without one takes its rate now as its base) times
        ``factor`` (a trainer's own schedule, e.g. FF's cooldown) times ``lr_decay**epoch``."""
        decay = self.hp.lr_decay ** epoch
        for opt in find_optimizers(self):
            for group in opt.param_groups:
                group["lr"] = group.setdefault(BASE_LR, group["lr"]) * factor * decay

    def end_epoch(self) -> None:
        """Called after an epoch's last update, still inside the epoch's measurements; work that
        needs the whole epoch's data (CaFo's closed-form predictors) is done here."""

    def update(self, x: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def predict(self, x: torch.Tensor, mode: str | None = None) -> torch.Tensor:
        raise NotImplementedError

    @torch.no_grad()
    def predict_all(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Class scores of every prediction mode; trainers whose modes share a forward pass
        override it to run that pass once (evaluation calls this, not ``predict`` per mode)."""
        return {mode: self.predict(x, mode) for mode in self.prediction_modes}

    def inference_parameters(self, mode: str | None = None) -> int:
        """Number of parameters that prediction in ``mode`` uses (Table 4 of the paper)."""
        return sum(p.numel() for p in self.parameters())

    # -- helpers for subclasses ------------------------------------------------------------------
    def _mode(self, mode: str | None) -> str:
        mode = mode or self.prediction_modes[0]
        if mode not in self.prediction_modes:
            raise ConfigError(f"unknown prediction mode {mode!r} for {type(self).__name__}; "
                              f"choose one of: {', '.join(self.prediction_modes)}")
        return mode
