"""Training memory, measured around the trainer from the outside, on the CPU and on CUDA.

Meters (select them in a config's ``measure`` list):

* ``cpu-memory`` works on any device. Inside every ``trainer.update`` a
  ``torch.autograd.graph.saved_tensors_hooks`` pair sees each tensor the autograd graph keeps for
  the backward pass; it counts the bytes of the tensor's storage once per distinct storage
  (tensors that share memory, e.g. a ReLU output that the next layer also saves, count once) and
  releases them when autograd drops the saved tensor (after its backward node ran, or when the
  graph is freed). Parameters and buffers are left out of this count: they live anyway. Alongside
  it: the *state* bytes (parameters, gradients, optimiser state, found by walking the trainer's
  attributes for ``torch.optim.Optimizer`` objects) and the process's resident set size (RSS)
  from ``/proc/self/statm``; on Linux the RSS peak within each step is read from ``VmHWM`` after
  resetting it through ``/proc/self/clear_refs``.
* ``cuda-memory``, ``cuda-memory-history`` and ``memory`` (``cpu-memory`` plus ``cuda-memory`` on a
  CUDA device) live in ``cuda_memory.py``.

A batch is a view of the epoch's shuffled copy of the training split; where autograd saves it (the
first layer's input), it counts as the batch's own bytes, not as the whole copy whose storage it
shares (``RunContext.epoch_data``).

Every step's figures go to a timeline file in the run folder (``memory_cpu.jsonl``,
``memory_cuda.jsonl``, one row per step); the first ``TRACE_STEPS`` steps of each epoch are also
traced event by event (``memory_cpu_trace.jsonl``: live saved bytes at every save and release),
which shows the rise in the forward pass and the fall in the backward pass. Peaks go into the
epoch metrics and, per phase (``trainer.phase``: MF's sequential schedule has one per layer), into
the run summary, so that no phase goes unsampled.

The hooks cost time: do not combine memory meters with ``time`` for timing tables.
"""

from __future__ import annotations

import contextlib
import re
import threading
import time
from pathlib import Path

import torch

from algorithms.base import find_optimizers
from benchmarks.common.files import append_jsonl
from .base import METERS, Meter

MB = 1e6
TRACE_STEPS = 3  # steps per epoch traced event by event; enough to show a step's shape, small files
# Timeline rows: every one of the first TIMELINE_HEAD steps of an epoch, then every TIMELINE_EVERY-th, so a
# long mini-batch run stays a few MB in git; peaks are still taken over every step.
TIMELINE_HEAD = 20
TIMELINE_EVERY = 20
_PAGE = None


class MeterUnavailable(RuntimeError):
    """A meter cannot measure on this machine; the message says why, in one line."""


# -- process memory ------------------------------------------------------------------------------

def rss_bytes() -> int | None:
    """Resident set size of this process, or None where it cannot be read."""
    global _PAGE
    try:
        import os
        if _PAGE is None:
            _PAGE = os.sysconf("SC_PAGE_SIZE")
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * _PAGE
    except (OSError, ValueError, IndexError):
        try:
            import psutil
            return psutil.Process().memory_info().rss
        except Exception:  # noqa: BLE001  (no way to read it here)
            return None


def _read_hwm() -> int | None:
    try:
        with open("/proc/self/status") as f:
            match = re.search(r"VmHWM:\s+(\d+)\s+kB", f.read())
        return int(match.group(1)) * 1024 if match else None
    except OSError:
        return None


def reset_rss_peak() -> bool:
    """Reset the kernel's peak-RSS counter (Linux >= 4.0); False where that is not possible."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # "5" resets the peak resident set size (VmHWM) only
        return True
    except OSError:
        return False


# -- autograd saved tensors ----------------------------------------------------------------------

class SavedTensorCounter:
    """Live and peak bytes of the distinct storages the autograd graph keeps for backward.

    A saved tensor whose storage is in ``view_ptrs`` (a batch sliced out of the epoch's data)
    counts as its own bytes, keyed by its address and size, instead of its whole storage."""

    def __init__(self, exclude_ptrs: set[int] = frozenset(), trace: list | None = None, t0: float = 0.0):
        self.exclude = set(exclude_ptrs)
        self.refs: dict[int, list[int]] = {}  # storage data_ptr -> [nbytes, number of saved tensors]
        self.live = 0
        self.peak = 0
        self.saved_calls = 0
        # Re-entrant: on CUDA backward nodes run (and release) on another thread, and a release can also
        # come from a finaliser (garbage collection) on the very thread that already holds the lock.
        self.lock = threading.RLock()
        self.view_ptrs: set[int] = set()  # storages whose saved views count as their own bytes (the epoch's data)
        self.trace = trace
        self.t0 = t0

    def reset_peak(self) -> None:
        with self.lock:
            self.peak = self.live

    def _record(self) -> None:
        if self.trace is not None:
            self.trace.append((time.perf_counter() - self.t0, self.live))

    def add(self, ptr, nbytes: int) -> None:
        with self.lock:
            self.saved_calls += 1
            entry = self.refs.get(ptr)
            if entry is None:
                self.refs[ptr] = [nbytes, 1]
                self.live += nbytes
                self.peak = max(self.peak, self.live)
                self._record()
            else:
                entry[1] += 1

    def release(self, ptr) -> None:
        with self.lock:
            entry = self.refs.get(ptr)
            if entry is None:
                return
            entry[1] -= 1
            if entry[1] == 0:
                del self.refs[ptr]
                self.live -= entry[0]
                self._record()

    def hooks(self):
        """A ``saved_tensors_hooks`` context that feeds this counter."""
        counter = self

        class Saved:  # holds the tensor as autograd would; its deletion is the release
            __slots__ = ("tensor", "ptr")

            def __init__(self, tensor, ptr):
                self.tensor, self.ptr = tensor, ptr

            def __del__(self):
                if self.ptr is not None:
                    counter.release(self.ptr)

        def pack(tensor):
            ptr = None
            try:
                storage = tensor.untyped_storage()
                p = storage.data_ptr()
                if p and p in counter.view_ptrs:
                    nbytes = tensor.numel() * tensor.element_size()
                    ptr = (tensor.data_ptr(), nbytes)
                    counter.add(ptr, nbytes)
                elif p and p not in counter.exclude:
                    ptr = p
                    counter.add(p, storage.nbytes())
            except (RuntimeError, NotImplementedError):  # tensors without a plain storage
                pass
            return Saved(tensor, ptr)

        def unpack(saved):
            return saved.tensor

        return torch.autograd.graph.saved_tensors_hooks(pack, unpack)


def _storage_ptrs(tensors) -> set[int]:
    return {t.untyped_storage().data_ptr() for t in tensors}


def state_bytes(trainer: torch.nn.Module) -> dict[str, int]:
    """Bytes of parameters (and buffers), their gradients and the optimisers' state, each storage once."""
    seen: set[int] = set()

    def count(tensors) -> int:
        total = 0
        for t in tensors:
            if t is None or not isinstance(t, torch.Tensor):
                continue
            s = t.untyped_storage()
            if s.data_ptr() in seen:
                continue
            seen.add(s.data_ptr())
            total += s.nbytes()
        return total

    params = list(trainer.parameters())
    out = {"param_bytes": count([*params, *trainer.buffers()]),
           "grad_bytes": count(p.grad for p in params),
           "optimizer_bytes": count(v for opt in find_optimizers(trainer) for st in opt.state.values()
                                    for v in (st.values() if isinstance(st, dict) else []))}
    out["state_bytes"] = sum(out.values())
    return out


def _update_peaks(peaks: dict[str, dict[str, float]], group: str, row: dict, keys: list[str]) -> None:
    """Running maximum of ``keys`` under ``peaks[group]`` (a phase, an epoch or "all")."""
    bucket = peaks.setdefault(group, {})
    for key in keys:
        value = row.get(key)
        if value is not None:
            bucket[key] = max(bucket.get(key, value), value)


class _StepPeaks(Meter):
    """Running peaks of a meter's per-step figures: per epoch, per phase and over the run."""

    KEYS: list[str] = []
    prefix = ""
    timeline = ""

    def _record(self, row: dict) -> None:
        for peaks, group in ((self.peaks, row["phase"]), (self.peaks, "all"), (self.epoch_peaks, "epoch")):
            _update_peaks(peaks, group, row, self.KEYS)
        self.steps += 1

    def end_epoch(self, epoch: int) -> dict:
        return {f"{self.prefix}_{k}": v for k, v in self.epoch_peaks.get("epoch", {}).items()}

    def end_run(self) -> dict:
        if not self.steps:
            return {}
        by_phase = {k: v for k, v in self.peaks.items() if k != "all"}
        return {f"{self.prefix}_memory": {"peak": self.peaks["all"], "peak_by_phase": by_phase, "steps": self.steps,
                                          "timeline": self.timeline, **self._extra()}}

    def _extra(self) -> dict:
        return {}


@METERS.register("cpu-memory")
class CPUMemoryMeter(_StepPeaks):
    name = "cpu-memory"
    timeline = "memory_cpu.jsonl"
    trace_file = "memory_cpu_trace.jsonl"

    def start_run(self, ctx) -> None:
        super().start_run(ctx)
        self.t0 = time.perf_counter()
        trainer = ctx.trainer
        self.exclude = _storage_ptrs([*trainer.parameters(), *trainer.buffers()])
        self.trace: list = []
        self.counter = SavedTensorCounter(self.exclude, trace=None, t0=self.t0)
        self.peaks: dict[str, dict[str, float]] = {}  # per phase, plus "all"
        self.steps = 0
        self.hwm_ok = reset_rss_peak() and _read_hwm() is not None
        self.step = 0
        self.epoch = 0
        self.baseline_rss = rss_bytes()

    def start_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        self.epoch_step = 0
        self.phase = self.ctx.trainer.phase  # the runner calls trainer.start_epoch first
        self.epoch_peaks: dict[str, dict[str, float]] = {}
        self.counter.view_ptrs = _storage_ptrs(t for t in self.ctx.epoch_data if isinstance(t, torch.Tensor))

    def step_context(self):
        return self._step()

    @contextlib.contextmanager
    def _step(self):
        tracing = self.epoch_step < TRACE_STEPS
        self.trace = [] if tracing else None
        self.counter.trace = self.trace
        self.counter.reset_peak()
        if self.hwm_ok:
            reset_rss_peak()
        with self.counter.hooks():
            yield

    def after_step(self) -> None:
        state = state_bytes(self.ctx.trainer)
        row = {"epoch": self.epoch + 1, "step": self.step, "phase": self.phase,
               "t_s": time.perf_counter() - self.t0,
               "saved_peak_bytes": self.counter.peak, "saved_live_bytes": self.counter.live,
               **state, "peak_bytes": state["state_bytes"] + self.counter.peak,
               "rss_bytes": rss_bytes(), "rss_peak_bytes": _read_hwm() if self.hwm_ok else None}
        if self.epoch_step < TIMELINE_HEAD or self.epoch_step % TIMELINE_EVERY == 0:
            append_jsonl(Path(self.ctx.run_dir) / self.timeline, row)
        if self.trace:
            path = Path(self.ctx.run_dir) / self.trace_file
            with open(path, "a") as f:
                for t, live in self.trace:
                    f.write(f'{{"epoch": {self.epoch + 1}, "step": {self.step}, "t_s": {t:.6f}, '
                            f'"saved_live_bytes": {live}}}\n')
        self.trace = None
        self.counter.trace = None
        self._record(row)
        self.step += 1
        self.epoch_step += 1

    KEYS = ["saved_peak_bytes", "peak_bytes", "state_bytes", "rss_bytes", "rss_peak_bytes"]
    prefix = "cpu"

    def _extra(self) -> dict:
        return {"baseline_rss_bytes": self.baseline_rss, "trace": self.trace_file}

    def describe(self) -> dict:
        return {"cpu-memory": (
            "saved_peak_bytes: peak within each training step of the bytes of distinct tensor storages the "
            "autograd graph keeps for backward (torch.autograd.graph.saved_tensors_hooks; parameters and "
            "buffers left out; a saved batch, a view of the epoch's shuffled data, counted as its own bytes; "
            "released when autograd drops them); state_bytes: parameters, buffers, gradients "
            "and optimiser state after the step; peak_bytes = state_bytes + saved_peak_bytes; rss_bytes: "
            "resident set size after the step (/proc/self/statm); rss_peak_bytes: VmHWM within the step after "
            "resetting it via /proc/self/clear_refs" + ("" if getattr(self, "hwm_ok", True) else
                                                         " (not available on this machine: null)")
            + f"; rows in {self.timeline} for the first {TIMELINE_HEAD} steps of each epoch and every "
              f"{TIMELINE_EVERY}th after (peaks over every step), the first {TRACE_STEPS} steps of each epoch event by "
              f"event in {self.trace_file}; the hooks slow training, so epoch times of this run are not "
              "timing figures")}
