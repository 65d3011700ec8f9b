"""When a run has diverged: three tests after every epoch, with thresholds that are config settings.

1. **Not finite**: the epoch's mean loss (or a loss looked at during the epoch) is NaN or infinite.
2. **Loss blow-up**: the epoch's mean loss exceeds ``diverge_loss_factor`` times the loss of the
   run's very first step (at least 1): Adam at lr 10 drives a cross-entropy of 2.3 to ~1e20
   without ever reaching inf. Default 100; ``null`` turns the test off.
3. **Stuck at chance**: after ``chance_epochs`` epochs (default 3; ``null``: off) the training
   accuracy of the default prediction mode has never risen more than ``chance_margin`` points
   (default 1.0) above chance, where chance is the share of the most frequent class in the
   training split (what a constant prediction scores; 10 % on a balanced 10-class set).

A diverged run is recorded with the reason and the epoch (``summary.json``: ``status: diverged``,
``diverged_reason``, ``diverged_epoch``), the command exits 3, and it never counts as a table cell.
These settings judge a run; they do not change what it computes, so they stay out of its identity
(``config.VERDICT_FIELDS``), and each summary records the thresholds it was judged by.
"""

from __future__ import annotations

import math
from typing import Any

import torch


def chance_accuracy(labels: torch.Tensor) -> float:
    """Accuracy (%) of always predicting the most frequent class of ``labels``."""
    if len(labels) == 0:
        return 0.0
    return 100.0 * float(torch.bincount(labels.long().cpu()).max()) / len(labels)


def thresholds(cfg) -> dict[str, Any]:
    return {"diverge_loss_factor": cfg.diverge_loss_factor, "chance_epochs": cfg.chance_epochs,
            "chance_margin": cfg.chance_margin}


def verdict(cfg, row: dict[str, Any], history: list[dict[str, Any]], first_loss: float | None,
            chance: float, mode: str) -> str | None:
    """Why the run has diverged after ``row`` (its metrics; ``history`` the rows before it), or None."""
    loss = row.get("loss")
    if loss is None or not math.isfinite(loss):
        return f"loss became non-finite ({loss}) in epoch {row['epoch']}"
    factor = cfg.diverge_loss_factor
    if factor is not None and first_loss is not None and math.isfinite(first_loss):
        limit = factor * max(abs(first_loss), 1.0)
        if loss > limit:
            return (f"loss grew to {loss:.3g} in epoch {row['epoch']}, more than {factor:g} times its first "
                    f"step's {first_loss:.3g}")
    epochs = cfg.chance_epochs
    key = f"train_acc_{mode}"
    if epochs is not None and row["epoch"] == epochs and key in row:
        seen = [r.get(key) for r in (*history, row)]
        if all(a is not None and a <= chance + cfg.chance_margin for a in seen):
            return (f"training accuracy stayed at chance ({max(seen):.2f} % <= {chance:.2f} % + "
                    f"{cfg.chance_margin:g}) for the first {epochs} epochs")
    return None
