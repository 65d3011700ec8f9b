"""The meter protocol and what every meter needs."""

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


class Meter:
    """Base class: every hook is optional. Figures returned must be JSON-serialisable."""

    name = "meter"

    def start_run(self, ctx: RunContext) -> None:
        self.ctx = ctx

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
