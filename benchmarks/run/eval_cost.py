"""What a run's per-epoch evaluation costs beside its training epoch (``bpfree bench-speed --eval``).

For each algorithm, on the suite's own code: one training epoch (``runner.train_epoch`` over
``train_images`` shuffled images) and then the runner's own ``evaluate`` of each part it scores after
an epoch: the training-accuracy sample, the validation split and the test split, every prediction mode
(``trainer.predict_all``, one pass per batch of ``eval_batch_size``). Each part is timed on
``eval_images`` images and everything is scaled *per image* to a run's sizes (default: the paper
profile of MNIST, 54000 training images, 6000 validation, 10000 test, and the config's
``train_eval_limit`` training images for train accuracy; the runner's ``train_eval_images`` gives
how many it scores). Per-image costs are what batched training and prediction have (every batch but
the last is full), so the scaled times are the run's up to its batches' rounding.

It reports eval/train two ways, each against one training epoch: ``every epoch`` (train sample,
validation and test: each epoch of a run with ``test_every_epoch: true``, and otherwise an epoch with
a new best validation accuracy of some mode, or the run's last; before the runner scored test only
there, every epoch cost this, with a train sample of up to ``train_eval_limit``) and ``lean`` (train
sample and validation: every other epoch). Target: lean at most a quarter (``TARGET``).

Both times of a ratio are measured in one process, one after the other, so the ratio holds on a
machine that other jobs load too (the absolute seconds do not).
"""

from __future__ import annotations

import dataclasses
import statistics
import time
from typing import Any

import torch

from algorithms import ALGORITHMS
from benchmarks.datasets import Splits
from benchmarks.measure.base import synchronize
from benchmarks.run.config import ExperimentConfig

TARGET = 0.25  # a lean epoch's evaluation at most a quarter of its training epoch
PAPER_SIZES = {"train": 54000, "val": 6000, "test": 10000}  # MNIST's paper profile (val_fraction 0.1)
PARTS = ("train", "val", "test")


def _timed(fn, device) -> float:
    synchronize(device)
    t0 = time.perf_counter()
    fn()
    synchronize(device)
    return time.perf_counter() - t0


def _part_splits(splits: Splits, part: str, n: int) -> Splits:
    """``splits`` with ``n`` images in ``part`` (taken from the training split's head for train and
    val, from test for test) and the other evaluated parts empty, so that ``evaluate`` scores one part."""
    empty_x, empty_y = splits.train_x[:0], splits.train_y[:0]
    src_x, src_y = (splits.test_x, splits.test_y) if part == "test" else (splits.train_x, splits.train_y)
    x, y = src_x[:n], src_y[:n]
    return dataclasses.replace(
        splits, train_x=x if part == "train" else empty_x, train_y=y if part == "train" else empty_y,
        val_x=x if part == "val" else empty_x, val_y=y if part == "val" else empty_y,
        test_x=x if part == "test" else empty_x, test_y=y if part == "test" else empty_y)


def eval_cost(algorithm: str, splits: Splits, *, widths: list[int], batch_size: int = 64, train_images: int = 6000,
              eval_images: int = 1000, repeats: int = 3, sizes: dict[str, int] | None = None,
              cfg: ExperimentConfig | None = None, device: torch.device | str = "cpu") -> dict[str, Any]:
    """One algorithm's row: seconds per image of training and of each evaluated part, scaled to ``sizes``."""
    from benchmarks.run.runner import evaluate, train_eval_images, train_epoch

    device = torch.device(device)
    cfg = cfg or ExperimentConfig()
    sizes = {**PAPER_SIZES, **(sizes or {})}
    torch.manual_seed(0)
    trainer = ALGORITHMS.get(algorithm)(splits.input_shape, splits.num_classes, "mlp", {"widths": list(widths)}, {})
    trainer.to(device).train(True)
    trainer.start_epoch(0, 1)
    n = min(train_images, len(splits.train_y))
    gen = torch.Generator().manual_seed(0)
    xs, ys = splits.train_x[:n], splits.train_y[:n]
    train_epoch(trainer, xs[:batch_size * 20], ys[:batch_size * 20], batch_size)  # warm-up: allocator, Adam state
    perm = torch.randperm(n, generator=gen).to(device)
    train_s = _timed(lambda: train_epoch(trainer, xs[perm], ys[perm], batch_size), device)
    # every evaluated part's per-image cost, by the runner's own evaluate (test scored alone: part="test")
    m = min(eval_images, len(splits.train_y), len(splits.test_y))
    per_image: dict[str, list[float]] = {p: [] for p in PARTS}
    one_cfg = dataclasses.replace(cfg, train_eval_limit=m)
    evaluate(trainer, _part_splits(splits, "train", min(m, cfg.eval_batch_size)), one_cfg, PARTS)  # warm-up
    for _ in range(repeats):
        for part in PARTS:
            part_splits = _part_splits(splits, part, m)
            per_image[part].append(_timed(lambda: evaluate(trainer, part_splits, one_cfg, (part,)), device) / m)
    train_per_image = train_s / n
    counts = {"train": train_eval_images(cfg, sizes["train"], sizes["val"]), "val": sizes["val"], "test": sizes["test"]}
    seconds = {p: statistics.median(per_image[p]) * counts[p] for p in PARTS}
    epoch_s = train_per_image * sizes["train"]
    lean = seconds["train"] + seconds["val"]
    return {"algorithm": algorithm, "modes": list(trainer.prediction_modes), "train_images_timed": n,
            "eval_images_timed": m, "evaluated": counts, "train_epoch_s": epoch_s, "eval_s": seconds,
            "eval_per_image_over_train_per_image": statistics.median(per_image["val"]) / train_per_image,
            "every epoch": (lean + seconds["test"]) / epoch_s, "lean": lean / epoch_s}


def print_table(rows: list[dict[str, Any]], header: str) -> None:
    print(header)
    print("(seconds scaled per image to the sizes above; the machine may be loaded by other jobs: the ratios are "
          "measured within one process, the seconds are not comparable across machines or loads)")
    print(f"{'algorithm':>9} {'modes':>5} {'train epoch s':>13} {'train-acc s':>11} {'val s':>7} {'test s':>7} "
          f"{'eval/train per image':>20} {'every epoch':>11} {'lean':>6}  (eval/train; target: lean <= {TARGET:g})")
    for r in rows:
        e = r["eval_s"]
        flag = "" if r["lean"] <= TARGET else "  over"
        print(f"{r['algorithm']:>9} {len(r['modes']):>5} {r['train_epoch_s']:>13.2f} {e['train']:>11.2f} "
              f"{e['val']:>7.2f} {e['test']:>7.2f} {r['eval_per_image_over_train_per_image']:>20.2f} "
              f"{r['every epoch']:>11.2f} {r['lean']:>6.2f}{flag}", flush=True)
