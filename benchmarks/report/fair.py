"""The fair verdict (spec ``fair``): every rung of the ablation ladder against BP, per dataset and budget
protocol, paired by seed, and its picture (``results/figures/verdicts.{png,pdf}``, a forest plot).

Reads the tables ``bpfree plots --only fair`` wrote, one per budget protocol (``tables/fair_<budget>.csv``
for the table's profile, ``tables/fair_<profile>_<budget>.csv`` for the others), each cell's per-seed
values in its ``values`` column. Per (budget, network, dataset) it takes the paper profile where BP has
values there, else the most complete other profile (whose verdicts are never ``confirmed``). Each rung
(BP-DS, MF-joint, MF in both prediction modes) is compared with BP over the seeds both have
(``stats.compare``) and judged by ``rules.matches_or_beats`` after Holm's correction over the report's
family of paper-profile accuracy claims. Beside ours: the MF paper's v1 difference (Table 3, its own
protocol) and the rebuilt Spyra study's (canonical v2) for the same protocol, where it has one.
"""

from __future__ import annotations

from pathlib import Path

from benchmarks.reference import load_reference, load_spyra_v2
from benchmarks.run.config import BUDGETS
from benchmarks.tables.accuracy_render import parse_seed_values

import benchmarks.report.rules as rules
import benchmarks.report.stats as stats
from .common import MONO_FORWARD, Claim, num, read_csv

SPEC = "fair"
SOURCE = "Fair verdict (this suite; the Spyra canonical v2 protocols)"
LADDER = ("BP-DS", "MF-joint (FF pred)", "MF (FF pred)", "MF (BP pred)")  # bottom to top of the ladder
PAPER_ROW = {"MF (FF pred)": "MF (FF pred)", "MF (BP pred)": "MF (BP pred)"}  # rows the MF paper has


def fair_cells(tables_dir: Path) -> dict[tuple[str, str, str, str], dict[str, dict[str, str]]]:
    """``{(profile, budget, network, dataset): {row: csv row}}``: per budget, network and dataset the
    paper profile's cell where BP has per-seed values, else the other profile with most BP seeds."""
    found: dict[tuple[str, str, str], dict[str, dict[str, dict[str, str]]]] = {}
    for path in sorted(tables_dir.glob(f"{SPEC}_*.csv")):
        budget = path.stem.rsplit("_", 1)[-1]
        if budget not in BUDGETS:
            continue
        for r in read_csv(path):
            r["file"] = f"tables/{path.stem}.md"
            found.setdefault((budget, r["network"], r["dataset"]), {}).setdefault(r["profile"], {})[r["row"]] = r
    cells = {}
    for (budget, network, dataset), by_profile in found.items():
        def seeds(p: str) -> int:
            return len(parse_seed_values(by_profile[p].get("BP", {}).get("values")))
        profile = max(by_profile, key=lambda p: (p == "paper" and seeds(p) > 0, seeds(p), p == "paper"))
        cells[(profile, budget, network, dataset)] = by_profile[profile]
    return cells


def _published(row: str, dataset: str, budget: str, paper: dict, spyra: dict) -> tuple[str, float | None, float | None]:
    """Words, the MF paper's v1 difference to BP and canonical v2's for this protocol (None where none)."""
    v1 = v2 = None
    if row in PAPER_ROW and (PAPER_ROW[row], dataset) in paper and ("BP", dataset) in paper:
        v1 = paper[(PAPER_ROW[row], dataset)] - paper[("BP", dataset)]
    if row.startswith("MF ("):
        v2 = spyra.get(("mf", "2x1000", dataset, budget))
    words = "; ".join(w for w in (f"MF paper v1 {v1:+.2f} (its protocol, test-set tuning)" if v1 is not None else "",
                                  f"canonical v2 {v2:+.2f} ({budget})" if v2 is not None else "") if w)
    return words or "—", v1, v2


def fair_claims(tables_dir: Path) -> list[Claim]:
    """One claim per (budget, network, dataset, rung): the rung matches or beats BP (judged by
    ``rules.judge_paired`` with the rest of the report's family)."""
    paper = {(r["algorithm"], r["dataset"]): float(r["mean"]) for r in load_reference("3")
             if r["architecture"] == "mlp 2x1000 relu" and num(r["mean"]) is not None}
    spyra = load_spyra_v2()
    claims = []
    for (profile, budget, network, dataset), by_row in sorted(fair_cells(tables_dir).items()):
        bp = by_row.get("BP")
        for row in LADDER:
            other = by_row.get(row)
            if bp is None or other is None:
                continue
            paired = stats.compare(parse_seed_values(other.get("values")), parse_seed_values(bp.get("values")))
            words, v1, v2 = _published(row, dataset, budget, paper, spyra)
            claim = f"{row} matches or beats BP: {network}, {dataset}, budget {budget}"
            if paired.n == 0:  # nothing to pair: why (not run yet, failed, not on this machine) from the table
                verdict, why = rules.missing(other.get("note") or bp.get("note") or "")
                claims.append(Claim(SOURCE, claim, words, "—", f"{profile} profile, budget {budget}", "0 paired seeds",
                                    verdict, why, [other["file"]]))
                continue
            ours = f"{num(other['mean']):.2f} vs {num(bp['mean']):.2f}"
            claims.append(Claim(
                SOURCE, claim, words, ours,
                f"{profile} profile, budget {budget}", f"{paired.n} paired seeds", "inconclusive", "", [other["file"]],
                note=f"published: {MONO_FORWARD}, Table 3" if v1 is not None else "", paired=paired,
                rule="matches or beats", profile=profile,
                forest={"row": row, "dataset": dataset, "network": network, "budget": budget, "v1": v1, "v2": v2}))
    return claims


def forest_figure(claims: list[Claim]):
    """One line per cell x budget x rung: the paired difference to BP with its 95 % CI, the equivalence
    band, and the published differences marked (MF paper v1: diamond; canonical v2: cross)."""
    import matplotlib.pyplot as plt

    shown = [c for c in claims if c.forest and c.paired is not None and c.paired.diff is not None]
    fig, ax = plt.subplots(figsize=(8, 1.2 + 0.32 * max(len(shown), 1)), layout="constrained")
    ax.axvspan(-stats.MARGIN, stats.MARGIN, color="0.9", label=f"equivalence band ±{stats.MARGIN:g}")
    ax.axvline(0, color="0.5", lw=0.8)
    colors = {"better": "tab:green", "equivalent": "tab:blue", "worse": "tab:red"}
    labels = []
    for y, c in enumerate(reversed(shown)):
        f, p = c.forest, c.paired
        lo, hi = p.ci if p.ci else (p.diff, p.diff)
        color = colors.get(p.verdict, "0.3")
        ax.plot([lo, hi], [y, y], color=color, lw=2)
        ax.plot(p.diff, y, "o", color=color, ms=5)
        if f["v1"] is not None:
            ax.plot(f["v1"], y, "D", color="k", ms=4, mfc="none")
        if f["v2"] is not None:
            ax.plot(f["v2"], y, "x", color="k", ms=6)
        labels.append(f"{f['dataset']} {f['network']} {f['budget']}: {f['row']} (n={p.n}, {p.verdict})"
                      + ("" if c.profile == "paper" else f" [{c.profile}]"))
    ax.set_yticks(range(len(labels)), labels, fontsize=7)
    ax.set_xlabel("test accuracy minus BP's, paired by seed (points; 95 % CI)")
    handles = [plt.Line2D([], [], color=v, lw=2, label=k) for k, v in colors.items()]
    handles += [plt.Rectangle((0, 0), 1, 1, color="0.9", label=f"equivalence band ±{stats.MARGIN:g}"),
                plt.Line2D([], [], color="0.3", lw=2, label="inconclusive"),
                plt.Line2D([], [], ls="", marker="D", mfc="none", color="k", label="MF paper v1"),
                plt.Line2D([], [], ls="", marker="x", color="k", label="canonical v2 (same protocol)")]
    ax.legend(handles=handles, fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1))
    reduced = any(c.profile != "paper" for c in shown)
    ax.set_title(("The fair verdict: each rung of the ladder against BP"
                  + ("\n[quick]: a reduced profile, shown, never a verdict" if reduced else "")) if shown else
                 "The fair verdict: no paired runs yet (bpfree sweep fair --run, then bpfree plots --only fair)",
                 fontsize=9)
    return fig


def write_forest(claims: list[Claim], figures_dir: Path) -> list[Path]:
    from benchmarks.tables.figures import save

    return save(forest_figure(claims), figures_dir, "verdicts")
