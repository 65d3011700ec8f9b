"""Cascaded Forward (CaFo, Zhao et al. 2023): blocks with their own linear predictors.

The network is a cascade of blocks (the paper's ``cafo-cnn``: Conv3x3 -> ReLU -> MaxPool2 ->
BatchNorm with 32, 128, 512 channels, registered below; any architecture works). Each block i
has a linear *predictor* on its flattened output that gives class scores ``z_i``. Prediction
(mode ``sum``) adds the blocks' predicted distributions (``softmax(z_i)`` for the ``ce`` loss,
``sparsemax(z_i)`` for ``sl``, the regression output ``z_i`` itself for ``mse``, which already
estimates the one-hot target); mode ``blockK`` uses block K's predictor alone.

A predictor's input is always detached: no loss ever sends a gradient into a block. Predictors
learn from their own loss only:

* ``ce`` (cross-entropy) or ``sl`` (sparsemax loss), by gradient steps with the run's optimiser;
* ``mse`` in closed form: every step adds the batch's ``F^T F`` and ``F^T Y`` (features with a
  bias column, one-hot targets) to running sums, and at the end of the epoch the predictor is set
  to the ridge solution ``W = (F^T F / n + ridge * D)^-1 F^T Y / n`` (``D`` the identity without
  the bias entry) over the whole epoch's training data. The solve runs in ``end_epoch()``, which
  the runner calls after an epoch's last step inside the timed region; ``predict`` solves too if
  sums are pending, so direct users of ``update`` get the same answer.

Blocks:

* ``cafo-rand`` keeps the blocks as initialised (random); only the predictors learn. BatchNorm's
  running statistics are still estimated from training batches (they are statistics, not
  learned weights).
* ``cafo-dfa`` first trains the blocks by direct feedback alignment for ``block_epochs`` epochs
  (phase ``blocks``), then freezes them and trains the predictors (phase ``predictors``), as the
  paper pre-trains its blocks with DFA before fitting the predictors. Block i's output receives
  ``B_i e`` with a fixed random ``B_i`` and the output error ``e``: with ``dfa_error=predictors``
  (default) ``e = softmax(sum_i z_i) - onehot(y)``, the error of CaFo's own output, while the
  predictors learn from their losses at the same time (so the network predicts in every epoch and
  validation-based early stopping works from the start); with ``dfa_error=head``, the paper's
  pre-training as we read it, ``e`` is the error of a temporary linear output layer on the last
  block (trained by its own gradient, dropped afterwards) and the predictors start learning only in
  the predictor phase. Each block's input is detached and the block is updated with
  ``torch.autograd.backward(block_out, B_i e)``, so no backpropagated gradient is ever computed
  through the blocks (a public implementation ran a full BP pass and then overwrote the gradients).

BatchNorm uses batch statistics during ``update`` (train mode) and its running statistics in
``predict``, which always runs the blocks in eval mode, so predicting never reads or changes batch
statistics of the data it predicts (e.g. the test set).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .base import Trainer, TrainerHParams, make_optimizer
from .typed_config import check
from .networks import LayerFactory
from .registry import ALGORITHMS, ARCHITECTURES

LOSSES = ("ce", "mse", "sl")
DFA_ERRORS = ("predictors", "head")


# -- the architecture ---------------------------------------------------------------------------

@dataclass
class CaFoCNNArgs:
    channels: tuple[int, ...] = (32, 128, 512)  # the paper's three blocks

    def validate(self) -> None:
        self.channels = tuple(int(c) for c in self.channels)
        check(len(self.channels) >= 1, "cafo-cnn needs at least one block (channels)")
        check(all(c > 0 for c in self.channels), f"every channel count must be > 0, got {list(self.channels)}")


@ARCHITECTURES.register("cafo-cnn")
class CaFoCNN:
    """Blocks Conv3x3(pad 1) -> ReLU -> MaxPool2 -> BatchNorm; each halves the image side."""

    Args = CaFoCNNArgs

    @staticmethod
    def blocks(args: CaFoCNNArgs, input_shape: tuple[int, ...], layers: LayerFactory) -> list[nn.Module]:
        check(len(input_shape) == 3, f"cafo-cnn needs image input (C, H, W), got shape {tuple(input_shape)}")
        c_in, h, w = input_shape
        check(min(h, w) >= 2 ** len(args.channels),
               f"cafo-cnn with {len(args.channels)} blocks halves the image {len(args.channels)} times; "
               f"input {h}x{w} is too small")
        blocks = []
        for c_out in args.channels:
            blocks.append(nn.Sequential(layers.conv2d(c_in, c_out, 3, padding=1), nn.ReLU(),
                                        nn.MaxPool2d(2), nn.BatchNorm2d(c_out)))
            c_in = c_out
        for block in blocks:  # build_network's dry run (one zero image) must neither fail on a 1x1 map nor
            block.eval()      # move BatchNorm's running statistics; trainers switch to train mode themselves
        return blocks


# -- losses -------------------------------------------------------------------------------------

def sparsemax(z: torch.Tensor) -> torch.Tensor:
    """Euclidean projection of each row of ``z`` onto the probability simplex (Martins & Astudillo 2016)."""
    return (z - _sparsemax_threshold(z)).clamp_min(0)


def _sparsemax_threshold(z: torch.Tensor) -> torch.Tensor:
    zs = z.sort(1, descending=True).values
    k = torch.arange(1, z.shape[1] + 1, device=z.device, dtype=z.dtype)
    cumsum = zs.cumsum(1)
    support = (1 + k * zs > cumsum).sum(1, keepdim=True)  # size of the support, >= 1
    return (cumsum.gather(1, support - 1) - 1) / support.to(z.dtype)


def sparsemax_loss(z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Mean sparsemax loss; its gradient in ``z`` is ``sparsemax(z) - onehot(y)``."""
    tau = _sparsemax_threshold(z)
    support = (z > tau).to(z.dtype)
    per_sample = -z.gather(1, y[:, None]).squeeze(1) + 0.5 * (support * (z ** 2 - tau ** 2)).sum(1) + 0.5
    return per_sample.mean()


# -- the trainers -------------------------------------------------------------------------------

@dataclass
class CaFoHParams(TrainerHParams):
    loss: str = "ce"  # predictor loss: ce and sl by gradient steps, mse in closed form
    # closed-form mse: ridge on the mean Gram matrix (BatchNorm'd features have power ~1); on a 2700-image
    # MNIST subset validation accuracy was 95.9/96.5/96.9/96.3% for 1e-3/1e-2/1e-1/1: more data wants less
    ridge: float = 1e-2
    predictor_lr: float | None = None  # learning rate of the predictors (ce, sl); None: lr
    block_epochs: int | None = None  # cafo-dfa: epochs of DFA block training; None: half the run's epochs
    dfa_error: str = "predictors"  # cafo-dfa: whose output error the blocks receive (see the module docstring)

    def validate(self) -> None:
        super().validate()
        check(self.loss in LOSSES, f"unknown loss {self.loss!r}; choose one of: {', '.join(LOSSES)}")
        check(self.ridge >= 0, f"ridge must be >= 0, got {self.ridge}")
        check(self.predictor_lr is None or self.predictor_lr > 0, f"predictor_lr must be > 0, got {self.predictor_lr}")
        check(self.block_epochs is None or self.block_epochs >= 1, f"block_epochs must be >= 1, got {self.block_epochs}")
        check(self.dfa_error in DFA_ERRORS, f"unknown dfa_error {self.dfa_error!r}; choose one of: {', '.join(DFA_ERRORS)}")


class CascadedForward(Trainer):
    """Shared by ``cafo-rand`` and ``cafo-dfa``: predictors, closed-form MSE, prediction."""

    HParams = CaFoHParams
    uses_head = False

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.predictors = nn.ModuleList(nn.Linear(math.prod(s), self.num_classes) for s in self.net.feature_shapes)
        n = len(self.net.blocks)
        self.prediction_modes = ("sum", *(f"block{i + 1}" for i in range(n)))
        pred_hp = self.hp if self.hp.predictor_lr is None else TrainerHParams(
            self.hp.optimizer, self.hp.predictor_lr, self.hp.weight_decay, self.hp.momentum)
        self.predictor_optimizer = make_optimizer(self.predictors.parameters(), pred_hp)
        self.phase = "predictors"
        self._reset_sums()
        self.train(True)  # cafo-cnn's blocks come in eval mode (see CaFoCNN.blocks)

    # -- schedule ---------------------------------------------------------------------------------
    def start_epoch(self, epoch: int, num_epochs: int) -> None:
        self.set_epoch_lr(epoch)  # the predictors' rate (predictor_lr) and cafo-dfa's blocks' alike
        self.phase = "predictors"
        self._reset_sums()  # the closed form is the solution over this epoch's training data

    def end_epoch(self) -> None:
        """After an epoch's last step: the closed-form predictors are solved here, and the sums freed."""
        self._solve_pending()
        self._reset_sums()

    # -- predictors -------------------------------------------------------------------------------
    def _features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Every block's output, blocks frozen (no graph); in train mode BN uses batch statistics."""
        out, h = [], x
        with torch.no_grad():
            for block in self.net.blocks:
                h = block(h)
                out.append(h)
        return out

    def _predictor_loss(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if self.hp.loss == "ce":
            return F.cross_entropy(z, y)
        if self.hp.loss == "sl":
            return sparsemax_loss(z, y)
        return F.mse_loss(z, F.one_hot(y, self.num_classes).to(z.dtype))

    def _predictor_losses(self, feats: list[torch.Tensor], y: torch.Tensor) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Each predictor's loss on its block's detached output, and its scores."""
        scores = [p(f.detach().flatten(1)) for p, f in zip(self.predictors, feats)]
        return [self._predictor_loss(z, y) for z in scores], scores

    def _train_predictors(self, feats: list[torch.Tensor], y: torch.Tensor) -> dict[str, torch.Tensor]:
        if self.hp.loss == "mse":
            self._accumulate(feats, y)
            with torch.no_grad():
                losses, _ = self._predictor_losses(feats, y)  # of the current (last solved) predictors
        else:
            losses, _ = self._predictor_losses(feats, y)
            self.predictor_optimizer.zero_grad(set_to_none=True)
            sum(losses).backward()  # predictors share no graph: each gets its own loss's gradient
            self.predictor_optimizer.step()
        return self._loss_dict(losses)

    @staticmethod
    def _loss_dict(losses: list[torch.Tensor]) -> dict[str, torch.Tensor]:
        out = {f"loss_block{i + 1}": l.detach() for i, l in enumerate(losses)}
        out["loss"] = sum(out.values()) / len(out)
        return out

    # -- closed-form MSE --------------------------------------------------------------------------
    def _reset_sums(self) -> None:
        self._gram: list[torch.Tensor | None] = [None] * len(self.predictors)
        self._cross: list[torch.Tensor | None] = [None] * len(self.predictors)
        self._count = 0
        self._pending = False

    def _accumulate(self, feats: list[torch.Tensor], y: torch.Tensor) -> None:
        # float64 sums: tens of thousands of rank-one updates of 10^3..10^4-wide features
        target = F.one_hot(y, self.num_classes).double()
        for i, f in enumerate(feats):
            a = with_bias(f.detach().flatten(1).double())
            if self._gram[i] is None:
                self._gram[i], self._cross[i] = a.T @ a, a.T @ target
            else:  # in place: the Gram matrix of a 32x32 image's first block is 8193^2 float64 (0.5 GB)
                self._gram[i].addmm_(a.T, a)
                self._cross[i].addmm_(a.T, target)
        self._count += len(y)
        self._pending = True

    @torch.no_grad()
    def _solve_pending(self) -> None:
        if not self._pending:
            return
        for predictor, gram, cross in zip(self.predictors, self._gram, self._cross):
            w = ridge_solve(gram, cross, self._count, self.hp.ridge)
            predictor.weight.copy_(w[:-1].T.to(predictor.weight.dtype))
            predictor.bias.copy_(w[-1].to(predictor.bias.dtype))
        self._pending = False

    # -- prediction -------------------------------------------------------------------------------
    def distribution(self, z: torch.Tensor) -> torch.Tensor:
        """A predictor's predicted distribution from its scores (what ``sum`` adds up)."""
        if self.hp.loss == "ce":
            return z.softmax(1)
        if self.hp.loss == "sl":
            return sparsemax(z)
        return z  # mse: the regression output already estimates the one-hot target

    def _distributions(self, x: torch.Tensor, depth: int, wanted) -> list[torch.Tensor]:
        """The predicted distributions of the blocks i < depth with ``wanted(i)``, from one pass."""
        self._solve_pending()
        was_training = self.net.training
        self.net.train(False)  # BatchNorm: running statistics, never the statistics of x
        try:
            h, out = x, []
            for i, block in enumerate(self.net.blocks[:depth]):
                h = block(h)
                if wanted(i):
                    out.append(self.distribution(self.predictors[i](h.flatten(1))))
        finally:
            self.net.train(was_training)
        return out

    @torch.no_grad()
    def predict(self, x: torch.Tensor, mode: str | None = None) -> torch.Tensor:
        mode = self._mode(mode)
        depth = len(self.net.blocks) if mode == "sum" else int(mode[5:])
        return sum(self._distributions(x, depth, lambda i: mode == "sum" or i == depth - 1))

    @torch.no_grad()
    def predict_all(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Every prediction mode from one forward pass: each predictor is applied once."""
        per_block = self._distributions(x, len(self.net.blocks), lambda i: True)
        out = {f"block{i + 1}": d for i, d in enumerate(per_block)}
        out["sum"] = sum(per_block)
        return {mode: out[mode] for mode in self.prediction_modes}

    def inference_parameters(self, mode: str | None = None) -> int:
        mode = self._mode(mode)
        depth = len(self.net.blocks) if mode == "sum" else int(mode[5:])
        used = [*self.net.blocks[:depth].parameters()]
        used += list(self.predictors[:depth].parameters()) if mode == "sum" else list(self.predictors[depth - 1].parameters())
        return sum(p.numel() for p in used)

    @staticmethod
    def search_space(trial, base) -> dict:
        """Optuna search space (see algorithms/search_spaces.py): lr, batch size, predictor loss, and
        the ridge of the closed form when the loss is mse. cafo-dfa's block_epochs stays at its
        default (half the run's epochs), as the number of epochs is the study's budget."""
        from .search_spaces import BATCH_SIZES, LR_RANGE

        hp = {"lr": trial.suggest_float("lr", *LR_RANGE, log=True),
              "loss": trial.suggest_categorical("loss", list(LOSSES))}
        if hp["loss"] == "mse":
            hp["ridge"] = trial.suggest_float("ridge", 1e-5, 1.0, log=True)
        return {"batch_size": trial.suggest_categorical("batch_size", BATCH_SIZES), "hparams": hp}


def with_bias(a: torch.Tensor) -> torch.Tensor:
    return torch.cat([a, a.new_ones(len(a), 1)], 1)


def ridge_solve(gram: torch.Tensor, cross: torch.Tensor, count: int, ridge: float) -> torch.Tensor:
    """argmin_W (1/n) ||A W - Y||^2 + ridge ||W without its last (bias) row||^2 from the sums
    ``gram = A^T A`` and ``cross = A^T Y`` over ``count = n`` samples."""
    mean_gram, mean_cross = gram / count, cross / count
    if ridge == 0:
        return torch.linalg.pinv(mean_gram, hermitian=True) @ mean_cross  # least-norm least squares
    mean_gram.diagonal()[:-1] += ridge  # the bias (last entry) is not shrunk
    return torch.linalg.solve(mean_gram, mean_cross)


@ALGORITHMS.register("cafo-rand")
class CaFoRandom(CascadedForward):
    """CaFo with random, fixed blocks: only the predictors learn."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.net.blocks.requires_grad_(False)

    def update(self, x: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
        return self._train_predictors(self._features(x), y)


@ALGORITHMS.register("cafo-dfa")
class CaFoDFA(CascadedForward):
    """CaFo with blocks trained by DFA from the output error, then frozen while predictors learn."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        for i, shape in enumerate(self.net.feature_shapes):
            feedback = torch.empty(math.prod(shape), self.num_classes)
            nn.init.kaiming_uniform_(feedback, a=math.sqrt(5))  # like a Linear(classes -> width), as in dfa.py
            self.register_buffer(f"feedback{i}", feedback)
        block_params = list(self.net.blocks.parameters())
        if self.hp.dfa_error == "head":
            self.dfa_head = nn.Linear(math.prod(self.net.feature_shapes[-1]), self.num_classes)
            block_params += list(self.dfa_head.parameters())
        self.block_optimizer = make_optimizer(block_params, self.hp)
        self.phase = "blocks"

    def feedback(self, i: int) -> torch.Tensor:
        return getattr(self, f"feedback{i}")

    def start_epoch(self, epoch: int, num_epochs: int) -> None:
        super().start_epoch(epoch, num_epochs)
        block_epochs = self.hp.block_epochs if self.hp.block_epochs is not None else max(1, num_epochs // 2)
        check(num_epochs > block_epochs, f"cafo-dfa trains blocks for {block_epochs} epoch(s) and then the "
                                          f"predictors, so it needs more than {block_epochs} epochs, got {num_epochs}")
        self.phase = "blocks" if epoch < block_epochs else "predictors"
        self.net.blocks.requires_grad_(self.phase == "blocks")
        # with dfa_error=head the predictors only start learning in their phase
        self.final_phase = self.phase == "predictors" or self.hp.dfa_error != "head"

    def update(self, x: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
        if self.phase == "predictors":
            return self._train_predictors(self._features(x), y)
        return self._dfa_step(x, y)

    def _dfa_step(self, x: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
        hidden, h = [], x
        for block in self.net.blocks:
            h = block(h.detach())  # detached input: block i's graph holds block i only
            hidden.append(h)
        onehot = F.one_hot(y, self.num_classes)
        if self.hp.dfa_error == "head":
            logits = self.dfa_head(hidden[-1].detach().flatten(1))
            losses = [F.cross_entropy(logits, y)]
            out = {"loss": losses[0].detach()}
        else:
            losses, scores = self._predictor_losses(hidden, y)
            logits = sum(z.detach() for z in scores)
            out = self._loss_dict(losses)
        with torch.no_grad():
            error = (logits.softmax(1) - onehot.to(logits.dtype)) / len(y)  # dL/dlogits of the batch-mean CE
            injected = [(error @ self.feedback(i).T).view_as(h_i) for i, h_i in enumerate(hidden)]
        self.block_optimizer.zero_grad(set_to_none=True)
        self.predictor_optimizer.zero_grad(set_to_none=True)
        # the losses reach only the head/predictors (their inputs are detached); each block gets B_i e
        torch.autograd.backward([sum(losses), *hidden], [None, *injected])
        self.block_optimizer.step()
        if self.hp.dfa_error == "predictors":
            self.predictor_optimizer.step()  # mse too moves by its gradient here: the closed form needs fixed blocks
        return out
