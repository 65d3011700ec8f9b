"""The claims of the two local-learning papers (issue 14): Scalable Forward-Forward (Krutsylo 2025) and
forward gradient with local losses (Ren et al. 2023), from the sff, fg and local_cost tables."""

from __future__ import annotations

from pathlib import Path

import benchmarks.report.rules as rules
import benchmarks.report.stats as stats
from .common import FG, SFF, Claim, best_profile_cells, fmt, num, read_csv, versus_bp

SFF_SOURCE, FG_SOURCE = SFF, FG
COMPARABLE_POINTS = rules.COMPARABLE_POINTS  # "comparable to BP": the equivalence margin, in points
# the claim's word -> (the equivalence margin of the paired comparison, the rule in rules.PAIRED_RULES)
WORDS = {"comparable": (COMPARABLE_POINTS, "matches or beats"), "matches": (stats.MARGIN, "matches or beats"),
         "beats": (stats.MARGIN, "beats")}
HYBRID = ", SFF hybrid"  # the sff spec labels the hybrid's group as the small resnet's label plus this


def _local_accuracy_claim(source: str, claim: str, profile: str, bp, other, word: str, link: str) -> Claim:
    """``other`` against BP, paired by seed, judged by the rule of the claim's word (``WORDS``)."""
    n = f"{other.get('n') or 0} / {bp.get('n') or 0}"
    margin, rule = WORDS[word]
    compared = versus_bp(bp, other, margin=margin)
    if compared is None:
        verdict, why = rules.missing(other.get("note") or bp.get("note") or "")
        return Claim(source, claim, "claimed (no number could be read here)", "—", profile, n, verdict, why, [link])
    paired, ours = compared
    return Claim(source, claim, "claimed (no number could be read here)", ours, profile,
                 f"{n} ({paired.n} paired)", "inconclusive", "", [link], paired=paired, rule=rule, profile=profile)


def local_learning(tables_dir: Path) -> list[Claim]:
    """SFF: comparable to BP; the hybrid better than BP at similar speed; lighter on memory. FG: matches BP."""
    out = []
    cells = best_profile_cells(tables_dir, "sff")
    for (profile, network, dataset), rows in cells.items():
        hybrid = HYBRID in network
        bp = cells.get((profile, network.replace(HYBRID, ""), dataset), {}).get("BP") if hybrid else rows.get("BP")
        if bp is None or "SFF" not in rows:
            continue
        claim = (f"the SFF hybrid (BP inside each block) beats BP: {network}, {dataset}" if hybrid else
                 f"SFF is comparable to BP in accuracy: {network}, {dataset}")
        out.append(_local_accuracy_claim(SFF_SOURCE, claim, profile, bp, rows["SFF"], "beats" if hybrid else
                                         "comparable", rows["SFF"]["file"]))
    for r in (dict(r, file=f"tables/{path.stem}.md") for path in sorted(tables_dir.glob("local_cost*.csv"))
              for r in read_csv(path)):
        if r["algorithm"] not in ("SFF", "SFF hybrid"):
            continue
        where = f"{r['network']}, {r['dataset']}, batch {r['batch']}"
        memory, time = num(r["peak_vs_bp"]), num(r["epoch_vs_bp"])
        quick = "paper" not in r["memory_runs"]
        verdict, why = rules.lighter_memory(memory, "quick" if quick else "paper")
        out.append(Claim(SFF_SOURCE, f"{r['algorithm']} is lighter on memory than BP: {where}",
                         "often lighter, architecture-dependent", f"peak memory {fmt(memory)}x BP's",
                         f"{r['memory_runs']}; {r['memory_method']}", "1", verdict, why, [r["file"]]))
        if r["algorithm"] == "SFF hybrid":
            timed_quick = "subset" in (r["epoch_runs"] or "")
            verdict, why = rules.similar_speed(time, "quick" if timed_quick else "paper")
            out.append(Claim(SFF_SOURCE, f"the SFF hybrid trains at a speed similar to BP's: {where}",
                             "similar training speed", f"epoch {fmt(time)}x BP's", r["epoch_runs"] or "no timed run",
                             r["epoch_n"] or "0", verdict, why, [r["file"]]))
    for (profile, network, dataset), rows in best_profile_cells(tables_dir, "fg").items():
        if "FG-A (local)" in rows and rows.get("BP"):  # the groups of FG-A, where BP and MF stand too
            out.append(_local_accuracy_claim(FG_SOURCE, f"FG with local losses (activity perturbation) matches BP: "
                                             f"{network}, {dataset}", profile, rows["BP"], rows["FG-A (local)"],
                                             "matches", rows["FG-A (local)"]["file"]))
    rules.judge_paired(out)
    return out
