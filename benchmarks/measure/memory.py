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
* ``cuda-memory``: ``torch.cuda.memory_allocated`` / ``memory_reserved`` after every step and the
  allocator's peak within every step (``reset_peak_memory_stats`` before it); no device
  synchronisation is needed, the caching allocator counts on the host when work is queued.
* ``cuda-memory-history``: ``cuda-memory`` plus ``torch.cuda.memory._record_memory_history`` for
  the first epoch, dumped as ``cuda_memory_snapshot.pickle`` (open it at pytorch.org/memory_viz).
* ``memory``: ``cpu-memory`` everywhere plus ``cuda-memory`` when the run is on a CUDA device, so
  one spec serves both machines.

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
from typing import Any

import torch

from ..runs import append_jsonl
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
    """Live and peak bytes of the distinct storages the autograd graph keeps for backward."""

    def __init__(self, exclude_ptrs: set[int] = frozenset(), trace: list | None = None, t0: float = 0.0):
        self.exclude = set(exclude_ptrs)
        self.refs: dict[int, list[int]] = {}  # storage data_ptr -> [nbytes, number of saved tensors]
        self.live = 0
        self.peak = 0
        self.saved_calls = 0
        self.lock = threading.Lock()  # on CUDA, backward nodes run (and release) on another thread
        self.trace = trace
        self.t0 = t0

    def reset_peak(self) -> None:
        with self.lock:
            self.peak = self.live

    def _record(self) -> None:
        if self.trace is not None:
            self.trace.append((time.perf_counter() - self.t0, self.live))

    def add(self, ptr: int, nbytes: int) -> None:
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

    def release(self, ptr: int) -> None:
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
                if p and p not in counter.exclude:
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


def find_optimizers(obj: Any) -> list[torch.optim.Optimizer]:
    """Optimisers held by a trainer's attributes (directly or in lists, tuples, dicts)."""
    found: list[torch.optim.Optimizer] = []

    def visit(value, depth):
        if isinstance(value, torch.optim.Optimizer):
            if not any(value is o for o in found):
                found.append(value)
        elif depth < 2 and isinstance(value, (list, tuple)):
            for v in value:
                visit(v, depth + 1)
        elif depth < 2 and isinstance(value, dict):
            for v in value.values():
                visit(v, depth + 1)

    for value in vars(obj).values():
        visit(value, 0)
    return found


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
            "buffers left out; released when autograd drops them); state_bytes: parameters, buffers, gradients "
            "and optimiser state after the step; peak_bytes = state_bytes + saved_peak_bytes; rss_bytes: "
            "resident set size after the step (/proc/self/statm); rss_peak_bytes: VmHWM within the step after "
            "resetting it via /proc/self/clear_refs" + ("" if getattr(self, "hwm_ok", True) else
                                                         " (not available on this machine: null)")
            + f"; rows in {self.timeline} for the first {TIMELINE_HEAD} steps of each epoch and every "
              f"{TIMELINE_EVERY}th after (peaks over every step), the first {TRACE_STEPS} steps of each epoch event by "
              f"event in {self.trace_file}; the hooks slow training, so epoch times of this run are not "
              "timing figures")}


# -- CUDA ----------------------------------------------------------------------------------------

def require_cuda(device: torch.device, meter: str) -> int:
    """The CUDA device index, or a one-line error saying the meter is not available here."""
    if not torch.cuda.is_available():
        raise MeterUnavailable(f"{meter}: not available here (no CUDA device visible to torch "
                               f"{torch.__version__}); use cpu-memory or memory")
    if torch.device(device).type != "cuda":
        raise MeterUnavailable(f"{meter}: not available here (the run is on {device}, not on a CUDA device)")
    d = torch.device(device)
    return d.index if d.index is not None else torch.cuda.current_device()


@METERS.register("cuda-memory")
class CUDAMemoryMeter(_StepPeaks):
    name = "cuda-memory"
    timeline = "memory_cuda.jsonl"
    record_history = False
    KEYS = ["allocated_bytes", "reserved_bytes", "step_peak_allocated_bytes", "step_peak_reserved_bytes"]
    prefix = "cuda"

    def start_run(self, ctx) -> None:
        super().start_run(ctx)
        self.index = require_cuda(ctx.device, self.name)
        self.t0 = time.perf_counter()
        self.peaks: dict[str, dict[str, float]] = {}
        self.steps = 0
        self.step = 0
        self.baseline = torch.cuda.memory_allocated(self.index)
        if self.record_history:
            torch.cuda.memory._record_memory_history(max_entries=100_000)  # bounded: a long run stays small
            self.recording = True

    def start_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        self.epoch_step = 0
        self.phase = self.ctx.trainer.phase
        self.epoch_peaks: dict[str, dict[str, float]] = {}

    def step_context(self):
        return self._step()

    @contextlib.contextmanager
    def _step(self):
        torch.cuda.reset_peak_memory_stats(self.index)
        yield

    def after_step(self) -> None:
        i = self.index
        row = {"epoch": self.epoch + 1, "step": self.step, "phase": self.phase, "t_s": time.perf_counter() - self.t0,
               "allocated_bytes": torch.cuda.memory_allocated(i), "reserved_bytes": torch.cuda.memory_reserved(i),
               "step_peak_allocated_bytes": torch.cuda.max_memory_allocated(i),
               "step_peak_reserved_bytes": torch.cuda.max_memory_reserved(i)}
        if self.epoch_step < TIMELINE_HEAD or self.epoch_step % TIMELINE_EVERY == 0:
            append_jsonl(Path(self.ctx.run_dir) / self.timeline, row)
        self._record(row)
        self.step += 1
        self.epoch_step += 1

    def end_epoch(self, epoch: int) -> dict:
        if self.record_history and getattr(self, "recording", False):
            torch.cuda.memory._dump_snapshot(str(Path(self.ctx.run_dir) / "cuda_memory_snapshot.pickle"))
            torch.cuda.memory._record_memory_history(enabled=None)
            self.recording = False
        return super().end_epoch(epoch)

    def end_run(self) -> dict:
        if getattr(self, "recording", False):
            torch.cuda.memory._record_memory_history(enabled=None)
        return super().end_run()

    def _extra(self) -> dict:
        return {"baseline_allocated_bytes": self.baseline, "device_name": torch.cuda.get_device_name(self.index)}

    def describe(self) -> dict:
        text = ("torch.cuda.memory_allocated/memory_reserved after every step; step_peak_*: "
                "max_memory_allocated/max_memory_reserved within the step after reset_peak_memory_stats; "
                f"rows in {self.timeline} for the first {TIMELINE_HEAD} steps of each epoch and every "
                f"{TIMELINE_EVERY}th after; peaks over every step, per phase, in the summary")
        if self.record_history:
            text += "; allocator history of epoch 1 in cuda_memory_snapshot.pickle (torch.cuda.memory._dump_snapshot)"
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

    def describe(self) -> dict:
        out = CPUMemoryMeter().describe()
        out["cuda-memory"] = ("on a CUDA device: " + CUDAMemoryMeter().describe()["cuda-memory"]
                              + "; on the CPU: not measured (no CUDA allocator)")
        return out
