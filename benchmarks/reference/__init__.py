"""The published numbers the suite is compared with, copied into the project so that every table
regenerates from a fresh clone.

* ``mono_forward_tables.csv``: every number in the tables of the Mono-Forward paper (Gong, Li,
  Abdulla 2025, arXiv 2501.09238), one a row: ``table, algorithm, architecture, dataset, metric,
  mean, std, unit, note`` (copied unchanged from ``../shared/paper/mono_forward_tables.csv``).
"""

from __future__ import annotations

import csv
from pathlib import Path

HERE = Path(__file__).resolve().parent
MONO_FORWARD_CSV = HERE / "mono_forward_tables.csv"
PAPER_DATASET = {"cifar10-jpeg": "cifar10"}  # our lossy stand-in is compared with the paper's CIFAR-10


def load_reference(table: str, path: Path = MONO_FORWARD_CSV) -> list[dict[str, str]]:
    """Published rows of ``table`` (e.g. "3", "4", "fig3")."""
    with open(path, newline="") as f:
        return [r for r in csv.DictReader(f) if r["table"] == table]
