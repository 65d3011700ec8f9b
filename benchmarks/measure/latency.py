"""Prediction latency (Table 4 of the Mono-Forward paper), measured around ``trainer.predict``.

For each prediction mode the call ``trainer.predict(x, mode)`` is timed with
``torch.utils.benchmark.Timer`` (the field's standard: it fixes the thread count, synchronises a
CUDA device around the timed blocks, and chooses how many calls make a block, adaptively, so that
the clock's resolution and Python's loop cost do not enter a 0.2 ms figure), after ``warmup``
untimed calls (allocator growth, kernel selection, lazy initialisation), for at least
``min_run_time`` seconds. The figure is the median over the timed blocks of the time per call;
mean, std, min and max over the blocks are kept beside it. Every call runs under
``torch.no_grad`` in eval mode, as prediction does. The parameter count is the one the mode uses
(``trainer.inference_parameters(mode)``): MF's ``bp`` mode skips the projections of the lower
layers, FF's one-pass mode adds its softmax head.

The time of dense matrix products does not depend on the weights' values, so the timed trainer
need not be a trained one; the accuracy column of Table 4 comes from the training runs.
"""

from __future__ import annotations

import statistics
from typing import Any, Callable

import torch
from torch.utils import benchmark

from benchmarks.measure.base import synchronize

# Table 4's rows: (algorithm, prediction mode) -> the paper's row label
TABLE4_ROWS = {("ff", "goodness"): "FF", ("ff", "onepass"): "One-pass FF", ("bp", "output"): "BP",
               ("mf", "ff"): "MF (FF pred)", ("mf", "bp"): "MF (BP pred)"}


def time_calls(fn: Callable[[], Any], device: torch.device | str, min_run_time: float, warmup: int
               ) -> dict[str, float]:
    """Milliseconds per call of ``fn`` by ``torch.utils.benchmark``: median over blocks (the figure),
    mean, std, min, max; ``warmup`` calls untimed first."""
    if min_run_time <= 0 or warmup < 0:
        raise ValueError(f"min_run_time must be > 0 and warmup >= 0, got {min_run_time} and {warmup}")
    for _ in range(warmup):
        fn()
    synchronize(device)
    m = benchmark.Timer(stmt="fn()", globals={"fn": fn}, num_threads=torch.get_num_threads()
                        ).blocked_autorange(min_run_time=min_run_time)
    times = [t * 1e3 for t in m.times]  # each: seconds per call, averaged over one block of calls
    return {"median_ms": statistics.median(times), "mean_ms": statistics.fmean(times),
            "std_ms": statistics.stdev(times) if len(times) > 1 else 0.0, "min_ms": min(times),
            "max_ms": max(times), "blocks": len(times), "calls": len(times) * m.number_per_run,
            "min_run_time_s": min_run_time, "warmup": warmup}


def prediction_latency(trainer, x: torch.Tensor, mode: str, min_run_time: float, warmup: int) -> dict[str, float]:
    """Latency of ``trainer.predict(x, mode)`` on ``x`` (already on the trainer's device)."""
    was_training = trainer.training
    trainer.train(False)
    try:
        with torch.no_grad():
            return time_calls(lambda: trainer.predict(x, mode), x.device, min_run_time, warmup)
    finally:
        trainer.train(was_training)


def latency_rows(trainers: dict[str, Any], single: torch.Tensor, batch: torch.Tensor, time_single: float,
                 time_batch: float, warmup: int) -> list[dict[str, Any]]:
    """One row per (algorithm, mode) of Table 4 that the given trainers offer."""
    rows = []
    for (alg, mode), label in TABLE4_ROWS.items():
        trainer = trainers.get(alg)
        if trainer is None or mode not in trainer.prediction_modes:
            continue
        rows.append({"row": label, "algorithm": alg, "mode": mode,
                     "parameters": trainer.inference_parameters(mode),
                     "single": prediction_latency(trainer, single, mode, time_single, warmup),
                     "batch": prediction_latency(trainer, batch, mode, time_batch, warmup),
                     "batch_size": len(batch)})
    return rows
