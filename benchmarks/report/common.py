"""What every part of the claim-by-claim report shares: the ``Claim`` row, the verdicts, reading the
tables' CSV files, and picking each cell's most complete profile."""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass, field
from pathlib import Path

ACCURACY_TABLES = ("table1", "table2", "table3", "table6")
VERDICTS = ("confirmed", "not confirmed", "not measurable here")


@dataclass
class Claim:
    source: str  # which paper, and where in it
    claim: str
    published: str
    ours: str
    protocol: str
    n: str
    verdict: str
    why: str = ""
    links: list[str] = field(default_factory=list)


def read_csv(path: Path) -> list[dict[str, str]]:
    if not path.exists():
        return []
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def num(text: str | None) -> float | None:
    try:
        value = float(text) if text not in (None, "") else None
    except ValueError:
        return None
    return value if value is not None and math.isfinite(value) else None


def fmt(value: float | None, digits: int = 2) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


def quick_note(profile: str) -> str:
    return "" if profile == "paper" else f"{profile} profile only (reduced data and epochs): never confirmed on it"


def best_profile_cells(tables_dir: Path, table: str) -> dict[tuple[str, str, str], dict[str, dict[str, str]]]:
    """``{(profile, network, dataset): {row: csv row}}`` from ``<table>.csv`` and the other profiles'
    ``<table>_<profile>.csv``: per network and dataset, the paper profile's cell where BP has a
    number there, else another profile's (quick) that has one, else one that says the dataset is
    unavailable, else the paper's. Each row keeps the table file it came from as ``file``."""
    found: dict[tuple[str, str], dict[str, dict[str, dict[str, str]]]] = {}
    for path in [tables_dir / f"{table}.csv", *sorted(tables_dir.glob(f"{table}_*.csv"))]:
        for r in read_csv(path):
            r["file"] = f"tables/{path.stem}.md"
            found.setdefault((r["network"], r["dataset"]), {}).setdefault(r["profile"], {})[r["row"]] = r
    cells = {}
    for (network, dataset), by_profile in found.items():
        def rank(p: str) -> tuple:
            bp = by_profile[p].get("BP", {})
            return (num(bp.get("mean")) is None, "unavailable" not in (bp.get("note") or ""), p != "paper", p)
        profile = min(by_profile, key=rank)
        cells[(profile, network, dataset)] = by_profile[profile]
    return cells


def versus_bp(bp: dict[str, str], other: dict[str, str]) -> tuple[float, float, str] | None:
    """(other's mean less BP's, the standard error of that difference, the words) or None."""
    m_other, m_bp = num(other.get("mean")), num(bp.get("mean"))
    if m_other is None or m_bp is None:
        return None
    n_o, n_b = int(other.get("n") or 0), int(bp.get("n") or 0)
    s_o, s_b = num(other.get("std")) or 0.0, num(bp.get("std")) or 0.0
    se = math.sqrt(s_o ** 2 / n_o + s_b ** 2 / n_b) if min(n_o, n_b) >= 2 else 0.0
    diff = m_other - m_bp
    return diff, se, f"{m_other:.2f} vs {m_bp:.2f} ({diff:+.2f} points" + (f", s.e. {se:.2f})" if se else ")")
