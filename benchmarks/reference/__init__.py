"""The published numbers the suite is compared with, copied into the project so that every table
regenerates from a fresh clone.

* ``mono_forward_tables.csv``: every number in the tables of the Mono-Forward paper (Gong, Li,
  Abdulla 2025, arXiv 2501.09238), one a row: ``table, algorithm, architecture, dataset, metric,
  mean, std, unit, note`` (copied unchanged from ``../shared/paper/mono_forward_tables.csv``).
* ``spyra2025_summary.csv``: the published summary of the energy study (Spyra 2025, "Beyond
  Backpropagation: Exploring Innovative Algorithms for Energy-Efficient Deep Neural Network
  Training"), transcribed from ``../shared/paper/README.md``: differences to BP on the same network,
  one number a row: ``algorithm, network, dataset, metric, value, unit, note``. ``algorithm`` is the
  suite's name (``mf``, ``ff``, ``cafo-rand``, ``cafo-dfa``, ``bp``), ``network`` the label of the
  group in ``benchmarks/specs/energy_study.yaml``, ``dataset`` the study's (``cifar10`` is the
  original CIFAR-10); metrics ``acc_diff`` (points), ``time_diff`` and ``energy_diff`` (% of BP),
  ``test_accuracy`` (%). The study published no memory differences.
* ``local_learning_tables.csv``: the tables ``sff`` (Scalable Forward-Forward, Krutsylo 2025, arXiv
  2501.03176) and ``fg`` (forward gradient with local losses, Ren et al. 2023, arXiv 2210.03310) of
  ``benchmarks/specs/sff.yaml`` and ``fg.yaml``, in the Mono-Forward file's columns. Both papers report
  other networks than the suite's cells (ResNet-18 and MobileNetV3; their own MLP and LocalMixer
  configurations), so every cell has a row without a value whose note says so; rows of metric ``claim``
  hold the papers' stated claims (from the abstracts) for the claim-by-claim report.

* ``spyra_canonical_v2.csv``: the rebuilt Spyra study's ("canonical v2") MF-minus-BP accuracy differences
  under its two budget protocols (``own``: each to its convergence; ``matched``: the same data passes),
  ``algorithm, network, dataset, budget, metric, value, unit, note``, as the suite's issue 25 summarises
  them (not checked against the study's repository here): the figures the fair verdict is set beside.

``load_reference(table)`` looks the table up in both table files (``TABLE_FILES``).

``VERSIONS`` says which version of each source the files were read from, for the claims that cite
them: the Mono-Forward numbers are those of the paper's first version (arXiv 2501.09238v1, January
2025); its second version (v2, May 2026) withdraws v1's "consistently matches or surpasses" BP, which
the claims about accuracy against BP say (``MONO_FORWARD_V2_NOTE``).
"""

from __future__ import annotations

import csv
from pathlib import Path

HERE = Path(__file__).resolve().parent
MONO_FORWARD_CSV = HERE / "mono_forward_tables.csv"
SPYRA2025_CSV = HERE / "spyra2025_summary.csv"
# Our dataset names -> the paper's; cifar10-jpeg is our lossy stand-in, compared with the paper's CIFAR-10
PAPER_DATASET = {"cifar10-jpeg": "cifar10", "breast_cancer": "breast-cancer", "santander": "santander-transaction"}


TABLE_FILES = (MONO_FORWARD_CSV, HERE / "local_learning_tables.csv")

# the version of each source the reference files hold, by the file (or the table of local_learning_tables.csv)
VERSIONS = {
    "mono_forward": "v1 (arXiv 2501.09238v1, January 2025)",
    "spyra2025": "September 2025 (\"Beyond Backpropagation: Exploring Innovative Algorithms for Energy-Efficient "
                 "Deep Neural Network Training\")",
    "sff": "arXiv 2501.03176v1 (abstract and project page only: no table could be read)",
    "fg": "ICLR 2023 camera-ready (arXiv 2210.03310)",
}
MONO_FORWARD_V2_NOTE = "the paper's v2 (arXiv 2501.09238v2, May 2026) withdraws v1's \"consistently matches or surpasses\" BP"


def load_reference(table: str, path: Path | None = None) -> list[dict[str, str]]:
    """Published rows of ``table`` (e.g. "3", "4", "fig3", "sff"), from ``path`` or every table file here."""
    rows = []
    for p in [path] if path is not None else TABLE_FILES:
        with open(p, newline="") as f:
            rows += [r for r in csv.DictReader(f) if r["table"] == table]
    return rows


SPYRA_V2_CSV = HERE / "spyra_canonical_v2.csv"


def load_spyra_v2(path: Path = SPYRA_V2_CSV) -> dict[tuple[str, str, str, str], float]:
    """The canonical v2 differences by ``(algorithm, network, dataset, budget)`` (points, MF minus BP)."""
    with open(path, newline="") as f:
        return {(r["algorithm"], r["network"], r["dataset"], r["budget"]): float(r["value"]) for r in csv.DictReader(f)}


def load_spyra2025(path: Path = SPYRA2025_CSV) -> dict[tuple[str, str, str, str], float]:
    """The energy study's published numbers by ``(algorithm, network, dataset, metric)``."""
    with open(path, newline="") as f:
        return {(r["algorithm"], r["network"], r["dataset"], r["metric"]): float(r["value"]) for r in csv.DictReader(f)}
