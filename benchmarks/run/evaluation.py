"""What a run scores after each epoch: accuracy of every prediction mode on a training sample,
validation and test, and on which epochs test is scored at all (``scores_test``). The runner
(``benchmarks/run/runner.py``) calls these between epochs; ``bpfree bench-speed --eval`` times them.
"""

from __future__ import annotations

import torch

from algorithms.base import Trainer
from benchmarks.common.numerics import autocast
from benchmarks.datasets import Splits
from benchmarks.run.config import ExperimentConfig

TRAIN_EVAL_FLOOR = 2000  # train accuracy on at least this many images (or all) where validation holds fewer


@torch.no_grad()
def accuracies(trainer: Trainer, x: torch.Tensor, y: torch.Tensor, batch_size: int) -> dict[str, float | None]:
    """Accuracy in % of every prediction mode on (x, y), from one ``predict_all`` per batch."""
    if len(y) == 0:
        return {mode: None for mode in trainer.prediction_modes}
    correct = {mode: 0 for mode in trainer.prediction_modes}
    for start in range(0, len(y), batch_size):
        target = y[start:start + batch_size]
        for mode, scores in trainer.predict_all(x[start:start + batch_size]).items():
            correct[mode] += int((scores.argmax(1) == target).sum())
    return {mode: 100.0 * c / len(y) for mode, c in correct.items()}


def train_eval_images(cfg: ExperimentConfig, train_size: int, val_size: int = 0) -> int:
    """How many of the first training images train accuracy is scored on: ``cfg.train_eval_limit`` at
    most and, where there is a validation split, no more than it holds (but ``TRAIN_EVAL_FLOOR`` at
    least): a diagnostic that no table reads then costs no more each epoch than model selection does
    (FF's goodness prediction runs every label through the network, 10 passes a sample)."""
    n = min(cfg.train_eval_limit, train_size)
    return min(n, max(val_size, TRAIN_EVAL_FLOOR)) if val_size else n


def evaluate(trainer: Trainer, splits: Splits, cfg: ExperimentConfig,
             parts: tuple[str, ...] = ("train", "val", "test")) -> dict[str, float | None]:
    """Accuracy in % for every prediction mode on each of ``parts``: train (a bounded subset:
    ``train_eval_images``), val, test."""
    trainer.train(False)  # no batch statistics are taken while predicting
    n = train_eval_images(cfg, len(splits.train_y), len(splits.val_y))
    data = {"train": (splits.train_x[:n], splits.train_y[:n]), "val": (splits.val_x, splits.val_y),
            "test": (splits.test_x, splits.test_y)}
    out = {}
    with autocast(splits.train_x.device, cfg.precision):
        for split in parts:
            x, y = data[split]
            out.update({f"{split}_acc_{mode}": acc
                        for mode, acc in accuracies(trainer, x, y, cfg.eval_batch_size).items()})
    trainer.train(True)
    return out


def scores_test(cfg: ExperimentConfig, row: dict, epoch: int, modes: tuple[str, ...], selectable: bool,
                best_val: dict[tuple[str, str], float], stops: bool) -> bool:
    """Whether the epoch of ``row`` (its train and val accuracies in) scores test, and ``best_val`` updated.

    Never without ``cfg.score_test`` (a tuning trial); every epoch with ``cfg.test_every_epoch``. Otherwise only where test accuracy can be read: an epoch
    that can be selected (``selectable``: a final-phase epoch of a run with validation) whose validation
    accuracy of some prediction mode is above that mode's best among the earlier such epochs of the same
    phase (the summary reads the default mode's best epoch, the accuracy tables each row's mode at its own
    best: ``tables.accuracy.selected_on_own_validation``; the first of equal ones wins in both), and the
    run's last epoch (``epochs`` reached, or early stopping now: ``stops``; the summary's ``final`` row,
    and the selected one of a run without validation). The other rows hold no test keys."""
    if not cfg.score_test:
        return False
    improves = False
    if selectable:
        for mode in modes:
            value, key = row.get(f"val_acc_{mode}"), (row["phase"], mode)
            if value is not None and (key not in best_val or value > best_val[key]):
                best_val[key], improves = value, True
    return cfg.test_every_epoch or improves or stops or epoch == cfg.epochs - 1
