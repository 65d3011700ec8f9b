"""What every part of the claim-by-claim report shares: the ``Claim`` row, the verdicts, reading the
tables' CSV files, and picking each cell's most complete profile."""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks.reference import MONO_FORWARD_V2_NOTE, VERSIONS

ACCURACY_TABLES = ("table1", "table2", "table3", "table6")
VERDICTS = ("confirmed", "not confirmed", "inconclusive", "not run", "not measurable here")

# each source with its version (benchmarks/reference.VERSIONS); "Mono-Forward paper v1, Table 3" etc.
MONO_FORWARD = "Mono-Forward paper v1"
SPYRA = "Spyra 2025 (September 2025)"
SFF = "Krutsylo 2025 (Scalable FF, arXiv 2501.03176v1)"
FG = "Ren et al. 2023 (forward gradient, ICLR 2023)"
SOURCE_VERSIONS = {MONO_FORWARD: VERSIONS["mono_forward"], SPYRA: VERSIONS["spyra2025"], SFF: VERSIONS["sff"],
                   FG: VERSIONS["fg"]}
V2_NOTE = MONO_FORWARD_V2_NOTE


@dataclass
class Claim:
    source: str  # which paper (and its version), and where in it
    claim: str
    published: str
    ours: str
    protocol: str
    n: str
    verdict: str
    why: str = ""
    links: list[str] = field(default_factory=list)
    note: str = ""  # about the source rather than our numbers (e.g. a later version withdraws the claim)
    version: str = ""  # the source's version the published figure comes from (SOURCE_VERSIONS)
    paired: Any = None  # a stats.Paired for a claim judged by paired statistics, else None
    rule: str = ""  # for a paired claim: the rule (rules.PAIRED_RULES) that turns it into a verdict
    profile: str = ""  # for a paired claim: the profile its numbers come from
    forest: dict | None = None  # for a fair-verdict claim: its line of the forest plot (fair.forest_figure)

    def __post_init__(self):
        if not self.version:
            self.version = next((v for name, v in SOURCE_VERSIONS.items() if self.source.startswith(name)), "")

    def as_dict(self) -> dict:
        """The claim for report.json: its fields, the paired comparison's numbers in place of the object."""
        out = {k: v for k, v in self.__dict__.items() if k != "paired"}
        out["paired"] = self.paired.numbers() if self.paired is not None else None
        return out


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


def versus_bp(bp: dict[str, str], other: dict[str, str], margin: float | None = None):
    """``(stats.Paired of other against BP over the seeds both have, the words)``, or None where one of
    them has no mean. The pairs come from the tables' ``values`` column (seed:accuracy)."""
    from benchmarks.tables.accuracy_render import parse_seed_values

    import benchmarks.report.stats as stats

    m_other, m_bp = num(other.get("mean")), num(bp.get("mean"))
    if m_other is None or m_bp is None:
        return None
    paired = stats.compare(parse_seed_values(other.get("values")), parse_seed_values(bp.get("values")),
                           margin=stats.MARGIN if margin is None else margin)
    return paired, f"{m_other:.2f} vs {m_bp:.2f} ({m_other - m_bp:+.2f} points)"
