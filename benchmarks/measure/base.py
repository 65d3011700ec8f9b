"""The meter protocol and what every meter needs.

Order of the hooks, as the runner calls them: ``start_run``; per epoch ``start_epoch`` (meters in
their config order), per step the ``step_context`` and ``after_step``, then ``end_epoch`` in the
*reverse* order, so that the meters nest: a clock started last is stopped first, and a meter's own
work at an epoch's end (a snapshot dump, a counter read) falls outside every window opened after it;
``end_run`` once training is done. ``close`` is called whatever happened, after ``end_run`` or when
the run ended with an exception (a pruned trial, out of memory): it must release what the meter
holds (threads, NVML, trackers) and be safe to call twice.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from algorithms.base import Trainer
from algorithms.registry import Registry

METERS: Registry[type] = Registry("measurement")


def synchronize(device: torch.device | str) -> None:
    """Wait for queued GPU work, so that a clock read afterwards covers it."""
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


@dataclass
class RunContext:
    trainer: Trainer
    device: torch.device
    run_dir: Any  # pathlib.Path of the run folder, for meters that write files of their own
    config: Any
    # the epoch's shuffled copy of the training split (inputs, labels), set by the runner before
    # start_epoch: memory meters leave it out (it is data, not training state) and count a batch
    # that autograd saves as the batch's own bytes, not as the whole copy it is a view of
    epoch_data: tuple = ()


class Meter:
    """Base class: every hook is optional. Figures returned must be JSON-serialisable."""

    name = "meter"
    #: whether the meter can take over the epochs of a stopped attempt of its run (``resume``): a run
    #: goes on from a mid-run checkpoint only where every meter can (benchmarks/run/resume.py)
    resumes = False

    def start_run(self, ctx: RunContext) -> None:
        self.ctx = ctx

    def resume(self, history: list[dict[str, Any]]) -> None:
        """Take over the metrics rows of the epochs an earlier attempt trained (only where ``resumes``)."""

    def start_epoch(self, epoch: int) -> None: ...

    def step_context(self):
        """A context manager entered around every ``trainer.update`` call, or None (the default).

        For meters that must observe the step from inside, e.g. saved-tensor hooks."""
        return None

    def after_step(self) -> None: ...

    def end_epoch(self, epoch: int) -> dict[str, Any]:
        return {}

    def end_run(self) -> dict[str, Any]:
        return {}

    def describe(self) -> dict[str, Any]:
        """How the figures were measured; recorded in the run folder."""
        return {}

    def close(self) -> None:
        """Release what the meter holds; called after ``end_run`` or when the run failed. Idempotent."""


def close_meters(meters) -> list[str]:
    """``close`` every meter, each even if another's fails; the failures, one line each."""
    errors = []
    for meter in meters:
        try:
            meter.close()
        except Exception as exc:  # noqa: BLE001  (closing must reach every meter)
            errors.append(f"{getattr(meter, 'name', type(meter).__name__)}: {type(exc).__name__}: {exc}")
    return errors


def tensor_bytes(tensors, device: torch.device | str | None = None) -> int:
    """Bytes of the distinct storages of ``tensors`` (on ``device`` only, when given)."""
    want = None if device is None else torch.device(device)
    seen, total = set(), 0
    for t in tensors:
        if not isinstance(t, torch.Tensor):
            continue
        if want is not None and (t.device.type != want.type or (want.index is not None and t.device.index != want.index)):
            continue
        storage = t.untyped_storage()
        if storage.data_ptr() not in seen:
            seen.add(storage.data_ptr())
            total += storage.nbytes()
    return total
