"""Wall time of training epochs.

The clock is ``time.perf_counter``; the device is synchronised before each reading, so queued GPU
work is counted in the epoch it belongs to. The runner shuffles an epoch's data before the clock
starts and evaluates after it stops, so neither is counted as training time.

Epoch 1 carries the warm-up (on a GPU: CUDA context and kernel selection, allocator growth; lazy
optimiser state everywhere), so the steady-state figures leave it out whenever there is more than
one epoch: ``epoch_time_mean_s`` (Table 5) and ``train_time_s``, the sum of the epochs after the
first (the energy study's training time). ``train_time_all_s`` is every epoch, ``first_epoch_time_s``
the first alone; ``train_time_excludes_first_epoch`` says whether ``train_time_s`` could leave it
out (a run of one epoch cannot).
"""

from __future__ import annotations

import statistics
import time

from .base import METERS, Meter, synchronize


def steady_state(values: list[float]) -> tuple[list[float], bool]:
    """The values after the first (the warm-up), or all of them when there is only one; and which."""
    return (values[1:], True) if len(values) > 1 else (list(values), False)


@METERS.register("time")
class EpochTimer(Meter):
    name = "time"
    resumes = True  # an epoch's time is in its row

    def start_run(self, ctx) -> None:
        super().start_run(ctx)
        self.epoch_times: list[float] = []

    def resume(self, history: list[dict]) -> None:
        self.epoch_times = [row["epoch_time_s"] for row in history]

    def start_epoch(self, epoch: int) -> None:
        synchronize(self.ctx.device)
        self.t0 = time.perf_counter()

    def end_epoch(self, epoch: int) -> dict:
        synchronize(self.ctx.device)
        elapsed = time.perf_counter() - self.t0
        self.epoch_times.append(elapsed)
        return {"epoch_time_s": elapsed}

    def end_run(self) -> dict:
        times, excluded = steady_state(self.epoch_times)
        if not times:
            return {}
        return {"train_time_s": sum(times), "train_time_all_s": sum(self.epoch_times),
                "first_epoch_time_s": self.epoch_times[0], "train_time_excludes_first_epoch": excluded,
                "epoch_time_mean_s": statistics.fmean(times),
                "epoch_time_std_s": statistics.stdev(times) if len(times) > 1 else 0.0,
                "epoch_time_n": len(times)}

    def describe(self) -> dict:
        return {"time": "time.perf_counter around each epoch's training steps, device synchronised; "
                        "shuffling and evaluation excluded; train_time_s and epoch_time_mean_s leave out epoch 1 "
                        "(warm-up) when there are several epochs (train_time_all_s keeps it)"}
