"""Wall time of training epochs.

The clock is ``time.perf_counter``; the device is synchronised before each reading, so queued GPU
work is counted in the epoch it belongs to. The runner shuffles an epoch's data before the clock
starts and evaluates after it stops, so neither is counted as training time. Epoch 1 contains the
warm-up (allocator growth, kernel selection, lazy optimiser state), so the summary's mean leaves it
out whenever there is more than one epoch.
"""

from __future__ import annotations

import statistics
import time

from .base import METERS, Meter, synchronize


@METERS.register("time")
class EpochTimer(Meter):
    name = "time"

    def start_run(self, ctx) -> None:
        super().start_run(ctx)
        self.epoch_times: list[float] = []

    def start_epoch(self, epoch: int) -> None:
        synchronize(self.ctx.device)
        self.t0 = time.perf_counter()

    def end_epoch(self, epoch: int) -> dict:
        synchronize(self.ctx.device)
        elapsed = time.perf_counter() - self.t0
        self.epoch_times.append(elapsed)
        return {"epoch_time_s": elapsed}

    def end_run(self) -> dict:
        times = self.epoch_times[1:] if len(self.epoch_times) > 1 else self.epoch_times
        if not times:
            return {}
        return {"train_time_s": sum(self.epoch_times),
                "epoch_time_mean_s": statistics.fmean(times),
                "epoch_time_std_s": statistics.stdev(times) if len(times) > 1 else 0.0,
                "epoch_time_n": len(times)}

    def describe(self) -> dict:
        return {"time": "time.perf_counter around each epoch's training steps, device synchronised; "
                        "shuffling and evaluation excluded; epoch_time_mean_s leaves out epoch 1 (warm-up) "
                        "when there are several epochs"}
