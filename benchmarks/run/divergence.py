"""When a run has diverged: three tests after every epoch, with thresholds that are config settings.

1. **Not finite**: the epoch's mean loss (or a loss looked at during the epoch) is NaN or infinite.
2. **Loss blow-up**: the epoch's mean loss exceeds ``diverge_loss_factor`` times the loss of the
   run's very first step (at least 1): Adam at lr 10 drives a cross-entropy of 2.3 to ~1e20
   without ever reaching inf. Default 100; ``null`` turns the test off.
3. **Stuck at chance**: after ``chance_epochs`` epochs (default 3; ``null``: off) the training
   accuracy of the default prediction mode has never risen more than ``chance_margin`` points
   (default 1.0) above chance, where chance is the share of the most frequent class in the
   training split (what a constant prediction scores; 10 % on a balanced 10-class set), over the
   whole training split's labels, not over the ``train_eval_limit`` samples that training accuracy
   is evaluated on (a single evaluated label would make chance 100 %).

A diverged run is recorded with the reason and the epoch (``summary.json``: ``status: diverged``,
``diverged_reason``, ``diverged_epoch``), the command exits 3, and it never counts as a table cell.
These settings judge a run; they do not change what it computes, so they stay out of its identity
(``config.VERDICT_FIELDS``), and each summary records the thresholds it was judged by. A diverged
folder whose verdict a config's thresholds could overturn (a blow-up under another factor, "at chance"
under other chance settings or from before chance came from the training labels, ``CHANCE``) is not
reused for that config but trained again (``verdict_stands``, ``runner.reusable_summary``); a
non-finite loss stands under any thresholds.
"""

from __future__ import annotations

import math
from typing import Any

import torch


CHANCE = "most frequent class of the training split"  # recorded with the thresholds: how chance was taken
NON_FINITE = "loss became non-finite"  # how each verdict's reason starts
LOSS_GREW = "loss grew"
AT_CHANCE = "training accuracy stayed at chance"


def chance_accuracy(labels: torch.Tensor, num_classes: int | None = None) -> float:
    """Accuracy (%) of always predicting the most frequent class of ``labels`` (the training split's)."""
    if len(labels) == 0:
        return 0.0
    counts = torch.bincount(labels.long().cpu(), minlength=num_classes or 0)
    return 100.0 * float(counts.max()) / len(labels)


def thresholds(cfg) -> dict[str, Any]:
    return {"diverge_loss_factor": cfg.diverge_loss_factor, "chance_epochs": cfg.chance_epochs,
            "chance_margin": cfg.chance_margin, "chance": CHANCE}


def verdict(cfg, row: dict[str, Any], history: list[dict[str, Any]], first_loss: float | None,
            chance: float, mode: str) -> str | None:
    """Why the run has diverged after ``row`` (its metrics; ``history`` the rows before it), or None."""
    loss = row.get("loss")
    if loss is None or not math.isfinite(loss):
        return f"{NON_FINITE} ({loss}) in epoch {row['epoch']}"
    factor = cfg.diverge_loss_factor
    if factor is not None and first_loss is not None and math.isfinite(first_loss):
        limit = factor * max(abs(first_loss), 1.0)
        if loss > limit:
            return (f"{LOSS_GREW} to {loss:.3g} in epoch {row['epoch']}, more than {factor:g} times its first "
                    f"step's {first_loss:.3g}")
    epochs = cfg.chance_epochs
    key = f"train_acc_{mode}"
    if epochs is not None and row["epoch"] == epochs and key in row:
        seen = [r.get(key) for r in (*history, row)]
        if all(a is not None and a <= chance + cfg.chance_margin for a in seen):
            return (f"{AT_CHANCE} ({max(seen):.2f} % <= {chance:.2f} % + "
                    f"{cfg.chance_margin:g}) for the first {epochs} epochs")
    return None


def verdict_stands(summary: dict[str, Any], cfg) -> bool:
    """Whether a diverged run's recorded verdict holds under ``cfg``'s thresholds: a non-finite loss
    always; a loss blow-up under the same ``diverge_loss_factor``; "at chance" under the same chance
    settings with chance taken as now (``CHANCE``: older folders took it from the evaluated labels)."""
    reason = str(summary.get("diverged_reason") or "")
    judged, now = summary.get("divergence_thresholds") or {}, thresholds(cfg)
    if reason.startswith(NON_FINITE):
        return True
    if reason.startswith(LOSS_GREW):
        return judged.get("diverge_loss_factor") == now["diverge_loss_factor"]
    if reason.startswith(AT_CHANCE):
        return all(judged.get(k) == now[k] for k in ("chance_epochs", "chance_margin", "chance"))
    return judged == now
