"""The claim-by-claim report: every claim of the Mono-Forward paper, of the energy study and of the
two local-learning papers (Scalable FF, forward gradient), judged on this suite's results
(``make report`` -> results/report.md).

A pure function of the results folder: it reads the tables that ``bpfree plots`` wrote from the
run folders (results/tables/*.csv), the claims experiments' records (results/claims/*.json) and, for
the convergence claim, the Figure 5 run folders; it trains nothing. One module per source of claims:
``mono_forward`` (the paper's tables and figures), ``section_3_3``, ``energy`` (Spyra 2025),
``local_learning`` (SFF, FG), ``fair`` (the ablation ladder under two budgets, and its forest plot); ``common`` holds the ``Claim`` row and the table readers. Each row gives the published figure, ours, the protocol and machine behind ours,
n, and a verdict (``common.VERDICTS``):

* ``confirmed``: ours, in the paper's protocol (a ``paper`` profile or a full-scale measurement),
  agrees with the claim by its rule;
* ``not confirmed``: ours disagrees, or only reduced-profile (``quick``) numbers exist; a quick
  verdict always says so and is never ``confirmed``;
* ``inconclusive``: the numbers cannot tell (fewer than ``stats.MIN_PAIRS`` paired seeds, a difference
  inside the run-to-run noise, too few timed calls);
* ``not run``: nothing was run that the claim needs;
* ``not measurable here``: what the claim needs is not on this machine (a GPU, a dataset), with
  the reason.

Every rule is one function of ``rules``. Accuracy claims against BP are paired by seed (``stats``: the
mean paired difference, its 95 % CI, one-sided paired t-tests, TOST equivalence at ±0.25 points, Holm's
correction over the report's family of paper-profile accuracy claims): "matches or beats" is
``confirmed`` when the paired verdict is ``better`` or ``equivalent``, ``not confirmed`` when ``worse``,
``inconclusive`` otherwise. Each claim names its source and the version its published figure comes
from (``benchmarks.reference.VERSIONS``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterable

import benchmarks.report.rules as rules
import benchmarks.report.stats as stats
from .common import V2_NOTE, VERDICTS, Claim
from .energy import energy_study
from .fair import fair_claims, write_forest
from .local_learning import local_learning
from .mono_forward import (depth_convergence, epoch_time, layer_accuracy, memory_slopes, mf_vs_bp_accuracy,
                           prediction_speed)
from .section_3_3 import section_3_3

__all__ = ["Claim", "all_claims", "to_markdown", "write_report"]


def all_claims(results_dir: Path) -> list[Claim]:
    """Every claim, judged; the paired accuracy claims once more over the whole report's family (Holm)."""
    tables = results_dir / "tables"
    claims = [*mf_vs_bp_accuracy(tables), *prediction_speed(tables, results_dir / "latency"), *memory_slopes(tables),
              *epoch_time(tables), *layer_accuracy(tables), *depth_convergence(results_dir / "runs"),
              *section_3_3(results_dir / "claims"), *energy_study(tables), *local_learning(tables),
              *fair_claims(tables)]
    rules.judge_paired(claims)
    return claims


def to_markdown(claims: Iterable[Claim]) -> str:
    claims = list(claims)
    counts = {v: sum(c.verdict == v for c in claims) for v in VERDICTS}
    family = sum(1 for c in claims if c.paired is not None and c.profile == "paper" and c.paired.testable)
    head = ("# Claim by claim: the Mono-Forward paper, the energy study, Scalable FF and forward gradient, judged on "
            "this suite's results\n\n"
            "Written by `make report` from results/ alone (benchmarks/report/; every rule is one function of "
            "benchmarks/report/rules.py). A claim judged on quick-profile numbers says so and is never `confirmed` "
            "on them (an exact equality, which no scale changes, excepted). "
            + ", ".join(f"{n} {v}" for v, n in counts.items()) + ".\n\n"
            "Accuracy against BP is compared seed by seed (the suite's seed k gives every algorithm the same split "
            "and data order): the mean paired difference with its 95 % CI (t), one-sided paired t-tests (ahead, "
            f"behind) and a TOST equivalence test at ±{stats.MARGIN:g} points (±{rules.COMPARABLE_POINTS:g} for SFF's "
            f"\"comparable\"), Holm-corrected over the family of the {family} paper-profile accuracy claims with at "
            f"least {stats.MIN_PAIRS} paired seeds, each question (ahead, behind, equivalent) separately. `better`: "
            f"CI above 0 and Holm p(ahead) < {stats.ALPHA:g}; `worse`: the same below; `equivalent`: Holm TOST p < "
            f"{stats.ALPHA:g}; fewer than {stats.MIN_PAIRS} paired seeds: inconclusive (n too small), nothing is "
            "claimed. \"Matches or beats\" is confirmed when `better` or `equivalent`, not confirmed when `worse`, "
            "inconclusive otherwise.\n\n"
            "Sources and versions: Mono-Forward paper v1 = Gong, Li, Abdulla, arXiv 2501.09238v1 (January 2025), "
            "the version every published Mono-Forward figure here comes from; " + V2_NOTE + ". Spyra 2025 = "
            "Spyra, \"Beyond Backpropagation: Exploring Innovative Algorithms for Energy-Efficient Deep Neural "
            "Network Training\" (September 2025). Krutsylo 2025 = arXiv 2501.03176v1 (abstract and project page). "
            "Ren et al. 2023 = ICLR 2023 (arXiv 2210.03310).\n\n"
            "| source | claim | published | ours | protocol / machine | n | verdict | why | where |\n"
            "|---|---|---|---|---|---|---|---|---|\n")
    cell = lambda text: str(text).replace("|", "\\|")  # noqa: E731
    why = lambda c: "; ".join(w for w in (c.why, c.note) if w)  # noqa: E731
    lines = [f"| {cell(c.source)} | {cell(c.claim)} | {cell(c.published)} | {cell(c.ours)} | {cell(c.protocol)} | "
             f"{cell(c.n)} | **{c.verdict}** | {cell(why(c))} | {', '.join(f'[{p}]({p})' for p in c.links)} |\n"
             for c in claims]
    return head + "".join(lines)


def write_report(results_dir: str | Path = "results", out: str | Path | None = None) -> Path:
    results_dir = Path(results_dir)
    out = Path(out) if out else results_dir / "report.md"
    claims = all_claims(results_dir)
    out.write_text(to_markdown(claims))
    out.with_suffix(".json").write_text(json.dumps([c.as_dict() for c in claims], indent=1) + "\n")
    write_forest(claims, out.parent / "figures")  # results/figures/verdicts.{png,pdf}
    return out
