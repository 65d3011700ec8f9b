"""Training memory on CUDA, from the caching allocator, and the combined ``memory`` meter.

* ``cuda-memory``: ``memory_allocated`` / ``memory_reserved`` after every step and the allocator's
  peak within every step (``reset_peak_memory_stats`` before it); no device synchronisation is
  needed, the caching allocator counts on the host when work is queued.

  - The epoch's shuffled copy of the training split (``RunContext.epoch_data``, made before the
    epoch starts) is data, not training memory: its bytes (``epoch_data_bytes``) are subtracted
    from ``allocated_bytes`` and ``step_peak_allocated_bytes``. The resident splits stay in, as
    ``baseline_allocated_bytes`` (with the parameters, before any step) says. Reserved bytes are
    the allocator's, as it reports them.
  - What ``trainer.end_epoch`` allocates after the last step (CaFo's closed-form solve of its
    predictors) is read at the epoch's end into a row of its own (``"kind": "epoch end"``) and
    into the peaks.
  - At each run's start the previous run's cached blocks are released (``empty_cache``) and the
    peaks reset, so runs in one process (a sweep in-process, tuning trials) do not inherit each
    other's reserved memory.
* ``cuda-memory-history``: ``cuda-memory`` plus the allocator's history
  (``torch.cuda.memory._record_memory_history`` with Python stacks only, no C++ frames, at most
  ``HISTORY_ENTRIES`` events) over the first ``HISTORY_STEPS`` steps of epoch 1; the snapshot is
  taken then and written at the run's end, outside every timed epoch, as
  ``cuda_memory_snapshot.pickle`` (open it at pytorch.org/memory_viz).
* ``memory``: ``cpu-memory`` everywhere plus ``cuda-memory`` when the run is on a CUDA device, so
  one spec serves both machines.

Without CUDA these meters fail at the run's start with "not available here" (``MeterUnavailable``).
The CUDA module is the class attribute ``cuda`` (``torch.cuda``), so the tests can put a fake there.
"""

from __future__ import annotations

import contextlib
import gc
import pickle
import time
from pathlib import Path

import torch

from benchmarks.common.files import append_jsonl
from .base import METERS, Meter, tensor_bytes
from .memory import TIMELINE_EVERY, TIMELINE_HEAD, CPUMemoryMeter, MeterUnavailable, _StepPeaks, _update_peaks

HISTORY_STEPS = 5  # steps of epoch 1 whose every allocation and free the history keeps: a step's whole shape
HISTORY_ENTRIES = 20_000  # bound on the events kept (a ring buffer); the snapshot stays a few MB
SNAPSHOT_FILE = "cuda_memory_snapshot.pickle"


def require_cuda(device: torch.device, meter: str, cuda=torch.cuda) -> int:
    """The CUDA device index, or a one-line error saying the meter is not available here."""
    if not cuda.is_available():
        raise MeterUnavailable(f"{meter}: not available here (no CUDA device visible to torch "
                               f"{torch.__version__}); use cpu-memory or memory")
    if torch.device(device).type != "cuda":
        raise MeterUnavailable(f"{meter}: not available here (the run is on {device}, not on a CUDA device)")
    d = torch.device(device)
    return d.index if d.index is not None else cuda.current_device()


@METERS.register("cuda-memory")
class CUDAMemoryMeter(_StepPeaks):
    name = "cuda-memory"
    timeline = "memory_cuda.jsonl"
    record_history = False
    cuda = torch.cuda
    KEYS = ["allocated_bytes", "reserved_bytes", "step_peak_allocated_bytes", "step_peak_reserved_bytes"]
    prefix = "cuda"

    def start_run(self, ctx) -> None:
        super().start_run(ctx)
        cuda = self.cuda
        self.index = require_cuda(ctx.device, self.name, cuda)
        gc.collect()  # the previous run's tensors, if unreachable, go before the cache is emptied
        cuda.synchronize(self.index)
        cuda.empty_cache()
        cuda.reset_peak_memory_stats(self.index)
        self.t0 = time.perf_counter()
        self.peaks: dict[str, dict[str, float]] = {}
        self.steps = 0
        self.step = 0
        self.data_bytes = 0
        self.baseline = cuda.memory_allocated(self.index)
        self.baseline_reserved = cuda.memory_reserved(self.index)
        self.recording, self.snapshot = False, None
        if self.record_history:
            cuda.memory._record_memory_history(enabled="all", context="alloc", stacks="python",
                                               max_entries=HISTORY_ENTRIES)
            self.recording = True

    def start_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        self.epoch_step = 0
        self.phase = self.ctx.trainer.phase
        self.epoch_peaks: dict[str, dict[str, float]] = {}
        self.data_bytes = tensor_bytes(self.ctx.epoch_data, self.ctx.device)

    def step_context(self):
        return self._step()

    @contextlib.contextmanager
    def _step(self):
        self.cuda.reset_peak_memory_stats(self.index)
        yield

    def _row(self, **extra) -> dict:
        i, cuda, data = self.index, self.cuda, self.data_bytes
        return {"epoch": self.epoch + 1, "step": self.step, "phase": self.phase, "t_s": time.perf_counter() - self.t0,
                "allocated_bytes": cuda.memory_allocated(i) - data, "reserved_bytes": cuda.memory_reserved(i),
                "step_peak_allocated_bytes": cuda.max_memory_allocated(i) - data,
                "step_peak_reserved_bytes": cuda.max_memory_reserved(i), "epoch_data_bytes": data, **extra}

    def after_step(self) -> None:
        row = self._row()
        self.cuda.reset_peak_memory_stats(self.index)  # the epoch-end row then sees only what follows the steps
        if self.epoch_step < TIMELINE_HEAD or self.epoch_step % TIMELINE_EVERY == 0:
            append_jsonl(Path(self.ctx.run_dir) / self.timeline, row)
        self._record(row)
        self.step += 1
        self.epoch_step += 1
        if self.recording and self.epoch == 0 and self.epoch_step >= HISTORY_STEPS:
            self._take_snapshot()

    def _take_snapshot(self) -> None:
        self.snapshot = self.cuda.memory._snapshot()
        self._stop_recording()

    def _stop_recording(self) -> None:
        if self.recording:
            self.recording = False
            self.cuda.memory._record_memory_history(enabled=None)

    def end_epoch(self, epoch: int) -> dict:
        # after the last step: trainer.end_epoch (CaFo's closed-form solve) ran since the last reset
        row = self._row(kind="epoch end")
        append_jsonl(Path(self.ctx.run_dir) / self.timeline, row)
        for peaks, group in ((self.peaks, row["phase"]), (self.peaks, "all"), (self.epoch_peaks, "epoch")):
            _update_peaks(peaks, group, row, self.KEYS)
        if self.recording:  # an epoch 1 shorter than HISTORY_STEPS
            self._take_snapshot()
        return super().end_epoch(epoch)

    def end_run(self) -> dict:
        self._stop_recording()
        if self.snapshot is not None:
            with open(Path(self.ctx.run_dir) / SNAPSHOT_FILE, "wb") as f:
                pickle.dump(self.snapshot, f)
            self.snapshot = None
        return super().end_run()

    def close(self) -> None:
        self._stop_recording()
        self.snapshot = None

    def _extra(self) -> dict:
        return {"baseline_allocated_bytes": self.baseline, "reserved_at_start_bytes": self.baseline_reserved,
                "device_name": self.cuda.get_device_name(self.index)}

    def describe(self) -> dict:
        text = ("torch.cuda.memory_allocated/memory_reserved after every step; step_peak_*: "
                "max_memory_allocated/max_memory_reserved within the step after reset_peak_memory_stats; the epoch's "
                "shuffled copy of the training split (epoch_data_bytes) subtracted from the allocated figures; a row "
                "at each epoch's end for what trainer.end_epoch allocates (CaFo's solve); cache emptied and peaks "
                f"reset at the run's start; rows in {self.timeline} for the first {TIMELINE_HEAD} steps of each epoch "
                f"and every {TIMELINE_EVERY}th after; peaks over every step, per phase, in the summary")
        if self.record_history:
            text += (f"; allocator history (Python stacks, no C++) of the first {HISTORY_STEPS} steps of epoch 1 in "
                     f"{SNAPSHOT_FILE}, written at the run's end")
        return {self.name: text}


@METERS.register("cuda-memory-history")
class CUDAMemoryHistoryMeter(CUDAMemoryMeter):
    name = "cuda-memory-history"
    record_history = True


@METERS.register("memory")
class MemoryMeter(Meter):
    """``cpu-memory`` on every device, plus ``cuda-memory`` when the run is on CUDA."""

    name = "memory"

    def start_run(self, ctx) -> None:
        super().start_run(ctx)
        self.parts: list[Meter] = [CPUMemoryMeter()]
        if torch.device(ctx.device).type == "cuda":
            self.parts.append(CUDAMemoryMeter())
        for part in self.parts:
            part.start_run(ctx)

    def start_epoch(self, epoch: int) -> None:
        for part in self.parts:
            part.start_epoch(epoch)

    def step_context(self):
        return self._step()

    @contextlib.contextmanager
    def _step(self):  # entered only when the runner enters it, like the parts' own contexts
        with contextlib.ExitStack() as stack:
            for part in self.parts:
                stack.enter_context(part.step_context())
            yield

    def after_step(self) -> None:
        for part in self.parts:
            part.after_step()

    def end_epoch(self, epoch: int) -> dict:
        return {k: v for part in self.parts for k, v in part.end_epoch(epoch).items()}

    def end_run(self) -> dict:
        return {k: v for part in self.parts for k, v in part.end_run().items()}

    def close(self) -> None:
        for part in getattr(self, "parts", []):
            part.close()

    def describe(self) -> dict:
        out = CPUMemoryMeter().describe()
        out["cuda-memory"] = ("on a CUDA device: " + CUDAMemoryMeter().describe()["cuda-memory"]
                              + "; on the CPU: not measured (no CUDA allocator)")
        return out
