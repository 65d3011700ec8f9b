"""The claim-by-claim report: every claim of the Mono-Forward paper, of the energy study and of the
two local-learning papers (Scalable FF, forward gradient), judged on this suite's results
(``make report`` -> results/report.md).

A pure function of the results folder: it reads the tables that ``scripts/plots.py`` wrote from the
run folders (results/tables/*.csv), the claims experiments' records (results/claims/*.json) and, for
the convergence claim, the Figure 5 run folders; it trains nothing. One module per source of claims:
``mono_forward`` (the paper's tables and figures), ``section_3_3``, ``energy`` (Spyra 2025),
``local_learning`` (SFF, FG); ``common`` holds the ``Claim`` row and the table readers. Each row gives the published figure, ours, the protocol and machine behind ours,
n, and a verdict:

* ``confirmed``: ours, in the paper's protocol (a ``paper`` profile or a full-scale measurement),
  agrees with the claim;
* ``not confirmed``: ours disagrees, or only reduced-profile (``quick``) numbers exist; a quick
  verdict always says so and is never ``confirmed``;
* ``not measurable here``: what the claim needs is not on this machine (a GPU, a dataset), with
  the reason.

The accuracy rule: MF "matches or beats" BP where MF's mean is at least BP's less one standard
error of the difference (n >= 2 seeds each); with one seed, MF's mean must be at least BP's.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterable

from .common import VERDICTS, Claim
from .energy import energy_study
from .local_learning import local_learning
from .mono_forward import (depth_convergence, epoch_time, layer_accuracy, memory_slopes, mf_vs_bp_accuracy,
                           prediction_speed)
from .section_3_3 import section_3_3

__all__ = ["Claim", "all_claims", "to_markdown", "write_report"]


def all_claims(results_dir: Path) -> list[Claim]:
    tables = results_dir / "tables"
    return [*mf_vs_bp_accuracy(tables), *prediction_speed(tables), *memory_slopes(tables), *epoch_time(tables),
            *layer_accuracy(tables), *depth_convergence(results_dir / "runs"), *section_3_3(results_dir / "claims"),
            *energy_study(tables), *local_learning(tables)]


def to_markdown(claims: Iterable[Claim]) -> str:
    claims = list(claims)
    counts = {v: sum(c.verdict == v for c in claims) for v in VERDICTS}
    head = ("# Claim by claim: the Mono-Forward paper, the energy study, Scalable FF and forward gradient, judged on "
            "this suite's results\n\n"
            "Written by `make report` from results/ alone (benchmarks/report/). A claim judged on quick-profile "
            "numbers says so and is never `confirmed` on them (an exact equality, which no scale changes, excepted). "
            + ", ".join(f"{n} {v}" for v, n in counts.items()) + ".\n\n"
            "| source | claim | published | ours | protocol / machine | n | verdict | why | where |\n"
            "|---|---|---|---|---|---|---|---|---|\n")
    cell = lambda text: str(text).replace("|", "\\|")  # noqa: E731
    lines = [f"| {cell(c.source)} | {cell(c.claim)} | {cell(c.published)} | {cell(c.ours)} | {cell(c.protocol)} | "
             f"{cell(c.n)} | **{c.verdict}** | {cell(c.why)} | {', '.join(f'[{p}]({p})' for p in c.links)} |\n"
             for c in claims]
    return head + "".join(lines)


def write_report(results_dir: str | Path = "results", out: str | Path | None = None) -> Path:
    results_dir = Path(results_dir)
    out = Path(out) if out else results_dir / "report.md"
    claims = all_claims(results_dir)
    out.write_text(to_markdown(claims))
    out.with_suffix(".json").write_text(json.dumps([c.__dict__ for c in claims], indent=1) + "\n")
    return out
