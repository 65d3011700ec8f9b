"""The claims of the two local-learning papers (issue 14): Scalable Forward-Forward (Krutsylo 2025) and
forward gradient with local losses (Ren et al. 2023), from the sff, fg and local_cost tables."""

from __future__ import annotations

from pathlib import Path

from .common import Claim, best_profile_cells, fmt, num, quick_note, read_csv, versus_bp


SFF_SOURCE = "Krutsylo 2025 (Scalable FF)"
FG_SOURCE = "Ren et al. 2023 (forward gradient)"
COMPARABLE_POINTS = 1.0  # "comparable to BP": at most this many points below BP (or one s.e., if larger)
RULES = {  # (difference in points from BP, its standard error) -> does it agree with the claim's word?
    "comparable": lambda diff, se: diff >= -max(COMPARABLE_POINTS, se) - 1e-3,  # 1e-3: the CSV's 4 decimals
    "matches": lambda diff, se: diff >= -se - 1e-3,
    "beats": lambda diff, se: diff > se + 1e-3,
}
SIMILAR_SPEED = 1.25  # "similar training speed": an epoch at most 25 % longer than BP's
HYBRID = ", SFF hybrid"  # the sff spec labels the hybrid's group as the small resnet's label plus this


def _local_accuracy_claim(source: str, claim: str, profile: str, bp, other, rule: str, link: str) -> Claim:
    """``other`` against BP, judged by ``RULES[rule]``."""
    n = f"{other.get('n') or 0} / {bp.get('n') or 0}"
    compared = versus_bp(bp, other)
    if compared is None:
        why = other.get("note") or bp.get("note") or "no finished run"
        return Claim(source, claim, "claimed (no number could be read here)", "—", profile, n,
                     "not measurable here" if "unavailable" in why else "not confirmed", why, [link])
    diff, se, ours = compared
    agrees = RULES[rule](diff, se)
    if profile != "paper":
        return Claim(source, claim, "claimed (no number could be read here)", ours, profile, n, "not confirmed",
                     quick_note(profile) + ("; agrees there" if agrees else "; disagrees there"), [link])
    return Claim(source, claim, "claimed (no number could be read here)", ours, profile, n,
                 "confirmed" if agrees else "not confirmed", "" if agrees else "the difference says otherwise", [link])


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
        out.append(Claim(SFF_SOURCE, f"{r['algorithm']} is lighter on memory than BP: {where}",
                         "often lighter, architecture-dependent", f"peak memory {fmt(memory)}x BP's",
                         f"{r['memory_runs']}; {r['memory_method']}", "1", "not confirmed" if quick or memory is None
                         or memory >= 1 else "confirmed", quick_note("quick") if quick else
                         ("" if memory is not None and memory < 1 else "not lighter here"), [r["file"]]))
        if r["algorithm"] == "SFF hybrid":
            timed_quick = "subset" in (r["epoch_runs"] or "")
            similar = time is not None and time <= SIMILAR_SPEED
            why = ("no timed run with these settings yet (the sff table's runs of this network)" if time is None
                   else quick_note("quick") if timed_quick else "" if similar else f"more than {SIMILAR_SPEED}x BP's epoch")
            out.append(Claim(SFF_SOURCE, f"the SFF hybrid trains at a speed similar to BP's: {where}",
                             "similar training speed", f"epoch {fmt(time)}x BP's", r["epoch_runs"] or "no timed run",
                             r["epoch_n"] or "0", "confirmed" if similar and not timed_quick else "not confirmed",
                             why, [r["file"]]))
    for (profile, network, dataset), rows in best_profile_cells(tables_dir, "fg").items():
        if "FG-A (local)" in rows and rows.get("BP"):  # the groups of FG-A, where BP and MF stand too
            out.append(_local_accuracy_claim(FG_SOURCE, f"FG with local losses (activity perturbation) matches BP: "
                                             f"{network}, {dataset}", profile, rows["BP"], rows["FG-A (local)"],
                                             "matches", rows["FG-A (local)"]["file"]))
    return out
