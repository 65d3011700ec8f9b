"""Prediction latency (Table 4 of the Mono-Forward paper), measured around ``trainer.predict``.

For each prediction mode the call ``trainer.predict(x, mode)`` is timed with ``time.perf_counter``,
the device synchronised before and after every call (queued GPU work is counted), after
``warmup`` untimed calls (allocator growth, kernel selection, lazy initialisation). The figure is
the median of ``repeats`` calls; mean, std, min and max are kept beside it. Every call runs under
``torch.no_grad`` in eval mode, as prediction does. The parameter count is the one the mode uses
(``trainer.inference_parameters(mode)``): MF's ``bp`` mode skips the projections of the lower
layers, FF's one-pass mode adds its softmax head.

The time of dense matrix products does not depend on the weights' values, so the timed trainer
need not be a trained one; the accuracy column of Table 4 comes from the training runs.
"""

from __future__ import annotations

import statistics
import time
from typing import Any, Callable

import torch

from .measure.base import synchronize

# Table 4's rows: (algorithm, prediction mode) -> the paper's row label
TABLE4_ROWS = {("ff", "goodness"): "FF", ("ff", "onepass"): "One-pass FF", ("bp", "output"): "BP",
               ("mf", "ff"): "MF (FF pred)", ("mf", "bp"): "MF (BP pred)"}


def time_calls(fn: Callable[[], Any], device: torch.device | str, repeats: int, warmup: int) -> dict[str, float]:
    """Milliseconds per call of ``fn``: median (the figure), mean, std, min, max; warm-up calls untimed."""
    if repeats < 1 or warmup < 0:
        raise ValueError(f"repeats must be >= 1 and warmup >= 0, got {repeats} and {warmup}")
    for _ in range(warmup):
        fn()
    synchronize(device)
    times = []
    for _ in range(repeats):
        synchronize(device)
        t0 = time.perf_counter()
        fn()
        synchronize(device)
        times.append((time.perf_counter() - t0) * 1e3)
    return {"median_ms": statistics.median(times), "mean_ms": statistics.fmean(times),
            "std_ms": statistics.stdev(times) if len(times) > 1 else 0.0, "min_ms": min(times),
            "max_ms": max(times), "repeats": repeats, "warmup": warmup}


def prediction_latency(trainer, x: torch.Tensor, mode: str, repeats: int, warmup: int) -> dict[str, float]:
    """Latency of ``trainer.predict(x, mode)`` on ``x`` (already on the trainer's device)."""
    was_training = trainer.training
    trainer.train(False)
    try:
        with torch.no_grad():
            return time_calls(lambda: trainer.predict(x, mode), x.device, repeats, warmup)
    finally:
        trainer.train(was_training)


def latency_rows(trainers: dict[str, Any], single: torch.Tensor, batch: torch.Tensor, repeats_single: int,
                 repeats_batch: int, warmup: int) -> list[dict[str, Any]]:
    """One row per (algorithm, mode) of Table 4 that the given trainers offer."""
    rows = []
    for (alg, mode), label in TABLE4_ROWS.items():
        trainer = trainers.get(alg)
        if trainer is None or mode not in trainer.prediction_modes:
            continue
        rows.append({"row": label, "algorithm": alg, "mode": mode,
                     "parameters": trainer.inference_parameters(mode),
                     "single": prediction_latency(trainer, single, mode, repeats_single, warmup),
                     "batch": prediction_latency(trainer, batch, mode, repeats_batch, warmup),
                     "batch_size": len(batch)})
    return rows
