"""Measurements wrapped around a trainer from the outside.

A *meter* is told when a run, an epoch and each training step start and end; it returns figures
that the runner merges into the epoch's metrics and the run's summary, and ``describe()`` says how
they were taken (which clock, which counter), which the run folder records. No algorithm knows
about meters. Meters are selected by name in the config's ``measure`` list.
"""

from __future__ import annotations

from .base import METERS, Meter, RunContext, close_meters, synchronize
from . import timing  # noqa: F401  (registers "time")
from . import memory  # noqa: F401  (registers "cpu-memory")
from . import cuda_memory  # noqa: F401  (registers "cuda-memory", "cuda-memory-history", "memory")
from . import energy  # noqa: F401  (registers "energy")

__all__ = ["METERS", "Meter", "RunContext", "close_meters", "synchronize"]
