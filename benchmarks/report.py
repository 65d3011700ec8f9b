"""The claim-by-claim report: every claim of the Mono-Forward paper, of the energy study and of the
two local-learning papers (Scalable FF, forward gradient), judged on this suite's results (``make report`` -> results/report.md).

A pure function of the results folder: it reads the tables that ``scripts/plots.py`` wrote from the
run folders (results/tables/*.csv) and, for the convergence claim, the Figure 5 run folders; it
trains nothing. Each row gives the published figure, ours, the protocol and machine behind ours,
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

import csv
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

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


def _num(text: str | None) -> float | None:
    try:
        value = float(text) if text not in (None, "") else None
    except ValueError:
        return None
    return value if value is not None and math.isfinite(value) else None


def _fmt(value: float | None, digits: int = 2) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


def _quick_note(profile: str) -> str:
    return "" if profile == "paper" else f"{profile} profile only (reduced data and epochs): never confirmed on it"


def mf_vs_bp_accuracy(tables_dir: Path) -> list[Claim]:
    """One claim per table cell where MF and BP both have numbers: MF matches or beats BP."""
    claims = []
    for table in ACCURACY_TABLES:
        for (profile, network, dataset), by_row in _best_profile_cells(tables_dir, table).items():
            bp = by_row.get("BP")
            for label in ("MF (FF pred)", "MF (BP pred)", "MF"):
                mf = by_row.get(label)
                if bp is None or mf is None:
                    continue
                claims.append(_accuracy_claim(table, profile, network, dataset, label, bp, mf))
    return claims


def _best_profile_cells(tables_dir: Path, table: str) -> dict[tuple[str, str, str], dict[str, dict[str, str]]]:
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
            return (_num(bp.get("mean")) is None, "unavailable" not in (bp.get("note") or ""), p != "paper", p)
        profile = min(by_profile, key=rank)
        cells[(profile, network, dataset)] = by_profile[profile]
    return cells


def _accuracy_claim(table, profile, network, dataset, label, bp, mf) -> Claim:
    published = (f"{label} {_fmt(_num(mf['published_mean']))} vs BP {_fmt(_num(bp['published_mean']))}"
                 if mf.get("published_mean") else "—")
    source = f"Mono-Forward paper, Table {table[5:]}"
    claim = f"{label} matches or beats BP: {network}, {dataset}"
    m_mf, m_bp = _num(mf["mean"]), _num(bp["mean"])
    n_mf, n_bp = int(mf["n"] or 0), int(bp["n"] or 0)
    n = f"{n_mf} / {n_bp}"
    link = [mf.get("file") or f"tables/{table}.md"]
    if m_mf is None or m_bp is None:
        why = mf.get("note") or bp.get("note") or "no finished run"
        verdict = "not measurable here" if "unavailable" in why else "not confirmed"
        return Claim(source, claim, published, "—", profile, n, verdict, why, link)
    diff = m_mf - m_bp
    s_mf, s_bp = _num(mf["std"]) or 0.0, _num(bp["std"]) or 0.0
    se = math.sqrt(s_mf ** 2 / n_mf + s_bp ** 2 / n_bp) if min(n_mf, n_bp) >= 2 else 0.0
    agrees = diff >= -se - 1e-3  # level within one standard error (tolerance: the CSV keeps 4 decimals)
    ours = f"{m_mf:.2f} vs {m_bp:.2f} ({diff:+.2f} points" + (f", s.e. {se:.2f})" if se else ")")
    if profile != "paper":
        return Claim(source, claim, published, ours, profile, n, "not confirmed",
                     _quick_note(profile) + ("; MF ahead or level there" if agrees else "; MF behind there"), link)
    return Claim(source, claim, published, ours, profile, n, "confirmed" if agrees else "not confirmed",
                 "" if agrees else "MF below BP by more than one standard error" if se else
                 "MF below BP (fewer than 2 seeds of one of them: no standard error yet)", link)


# -- the local-learning papers (issue 14): Scalable Forward-Forward and forward gradient ------------

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


def _versus_bp(bp: dict[str, str], other: dict[str, str]) -> tuple[float, float, str] | None:
    """(other's mean less BP's, the standard error of that difference, the words) or None."""
    m_other, m_bp = _num(other.get("mean")), _num(bp.get("mean"))
    if m_other is None or m_bp is None:
        return None
    n_o, n_b = int(other.get("n") or 0), int(bp.get("n") or 0)
    s_o, s_b = _num(other.get("std")) or 0.0, _num(bp.get("std")) or 0.0
    se = math.sqrt(s_o ** 2 / n_o + s_b ** 2 / n_b) if min(n_o, n_b) >= 2 else 0.0
    diff = m_other - m_bp
    return diff, se, f"{m_other:.2f} vs {m_bp:.2f} ({diff:+.2f} points" + (f", s.e. {se:.2f})" if se else ")")


def _local_accuracy_claim(source: str, claim: str, profile: str, bp, other, rule: str, link: str) -> Claim:
    """``other`` against BP, judged by ``RULES[rule]``."""
    n = f"{other.get('n') or 0} / {bp.get('n') or 0}"
    compared = _versus_bp(bp, other)
    if compared is None:
        why = other.get("note") or bp.get("note") or "no finished run"
        return Claim(source, claim, "claimed (no number could be read here)", "—", profile, n,
                     "not measurable here" if "unavailable" in why else "not confirmed", why, [link])
    diff, se, ours = compared
    agrees = RULES[rule](diff, se)
    if profile != "paper":
        return Claim(source, claim, "claimed (no number could be read here)", ours, profile, n, "not confirmed",
                     _quick_note(profile) + ("; agrees there" if agrees else "; disagrees there"), [link])
    return Claim(source, claim, "claimed (no number could be read here)", ours, profile, n,
                 "confirmed" if agrees else "not confirmed", "" if agrees else "the difference says otherwise", [link])


def local_learning(tables_dir: Path) -> list[Claim]:
    """SFF: comparable to BP; the hybrid better than BP at similar speed; lighter on memory. FG: matches BP."""
    out = []
    cells = _best_profile_cells(tables_dir, "sff")
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
        memory, time = _num(r["peak_vs_bp"]), _num(r["epoch_vs_bp"])
        quick = "paper" not in r["memory_runs"]
        out.append(Claim(SFF_SOURCE, f"{r['algorithm']} is lighter on memory than BP: {where}",
                         "often lighter, architecture-dependent", f"peak memory {_fmt(memory)}x BP's",
                         f"{r['memory_runs']}; {r['memory_method']}", "1", "not confirmed" if quick or memory is None
                         or memory >= 1 else "confirmed", _quick_note("quick") if quick else
                         ("" if memory is not None and memory < 1 else "not lighter here"), [r["file"]]))
        if r["algorithm"] == "SFF hybrid":
            timed_quick = "subset" in (r["epoch_runs"] or "subset")
            similar = time is not None and time <= SIMILAR_SPEED
            out.append(Claim(SFF_SOURCE, f"the SFF hybrid trains at a speed similar to BP's: {where}",
                             "similar training speed", f"epoch {_fmt(time)}x BP's", r["epoch_runs"] or "no timed run",
                             r["epoch_n"] or "0", "confirmed" if similar and not timed_quick else "not confirmed",
                             _quick_note("quick") if timed_quick else ("" if similar else
                                                                       f"more than {SIMILAR_SPEED}x BP's epoch"),
                             [r["file"]]))
    for (profile, network, dataset), rows in _best_profile_cells(tables_dir, "fg").items():
        if "FG-A (local)" in rows and rows.get("BP"):  # the groups of FG-A, where BP and MF stand too
            out.append(_local_accuracy_claim(FG_SOURCE, f"FG with local losses (activity perturbation) matches BP: "
                                             f"{network}, {dataset}", profile, rows["BP"], rows["FG-A (local)"],
                                             "matches", rows["FG-A (local)"]["file"]))
    return out


def prediction_speed(tables_dir: Path) -> list[Claim]:
    """Table 4: MF's BP-mode prediction is as fast as BP's (same layers' work)."""
    rows = read_csv(tables_dir / "table4.csv")
    out = []
    for device in sorted({r["device"] for r in rows}):
        by_row = {r["row"]: r for r in rows if r["device"] == device}
        bp, mf = by_row.get("BP"), by_row.get("MF (BP pred)")
        if not bp or not mf:
            continue
        ratios = {k: _num(mf[k]) / _num(bp[k]) for k in ("single_ms", "batch_ms") if _num(mf[k]) and _num(bp[k])}
        paper = f"{mf.get('paper_single_ms') or '—'} vs {bp.get('paper_single_ms') or '—'} ms (1 image)"
        ours = ", ".join(f"{'1 image' if k == 'single_ms' else 'batch'} MF/BP {v:.2f}" for k, v in ratios.items())
        agrees = bool(ratios) and all(v <= 1.10 for v in ratios.values())  # within 10 %: the same work
        out.append(Claim("Mono-Forward paper, Table 4", "MF (BP pred) predicts as fast as BP", paper, ours,
                         f"latency, {device}", "timer blocks", "confirmed" if agrees else "not confirmed",
                         "" if agrees else "MF's BP-mode prediction more than 10 % slower than BP's",
                         ["tables/table4.md"]))
    return out


def memory_slopes(tables_dir: Path) -> list[Claim]:
    """Figure 3: peak memory per added layer, MF far below BP."""
    rows = read_csv(tables_dir / "fig3_slopes.csv")
    out = []
    for arch in sorted({r["arch"] for r in rows}):
        by_alg = {r["algorithm"]: r for r in rows if r["arch"] == arch}
        bp, mf = by_alg.get("bp"), by_alg.get("mf")
        if not bp or not mf:
            continue
        s_bp, s_mf = _num(bp["slope_mb_per_layer"]), _num(mf["slope_mb_per_layer"])
        paper = (f"MF {mf['paper_slope_mb_per_layer']} vs BP {bp['paper_slope_mb_per_layer']} MB/layer"
                 if mf.get("paper_slope_mb_per_layer") else "—")
        quick = "quick" in (mf.get("runs") or "")
        protocol = f"{arch}, batch {mf['batch']}, {mf['method']}; {mf.get('runs') or 'paper profile'}"
        agrees = s_bp is not None and s_mf is not None and s_mf < 0.5 * s_bp
        ours = f"MF {_fmt(s_mf, 1)} vs BP {_fmt(s_bp, 1)} MB/layer"
        verdict = "not confirmed" if quick or not agrees else "confirmed"
        why = _quick_note("quick") if quick else ("" if agrees else "MF's slope is not well below BP's")
        out.append(Claim("Mono-Forward paper, Figure 3", f"MF's memory grows far slower with depth than BP's ({arch})",
                         paper, ours, protocol, "1 run per depth", verdict, why, ["tables/fig3_slopes.md"]))
    return out


def epoch_time(tables_dir: Path) -> list[Claim]:
    """Table 5: an MF epoch is cheaper than a BP epoch (BP/MF > 1)."""
    out = []
    for r in read_csv(tables_dir / "table5.csv"):
        ratio, paper = _num(r["ratio_bp_over_mf"]), _num(r["paper_ratio"])
        profile = "paper" if "full training set" in (r.get("scale") or "") else "quick"
        agrees = ratio is not None and ratio > 1.0
        verdict = "confirmed" if agrees and profile == "paper" else "not confirmed"
        why = _quick_note(profile) if profile != "paper" else ("" if agrees else "BP's epoch is not slower")
        why = "; ".join(w for w in (why, "the paper's ratios are GPU ones; ours are this machine's") if w)
        out.append(Claim("Mono-Forward paper, Table 5", f"MF's epoch is cheaper than BP's: {r['dataset']}, {r['batch']}",
                         f"BP/MF {_fmt(paper)}", f"BP/MF {_fmt(ratio)}", f"{profile} profile", f"{r['bp_n']} / {r['mf_n']}",
                         verdict, why, ["tables/table5.md"]))
    return out


def layer_accuracy(tables_dir: Path) -> list[Claim]:
    """Table 1: every MF layer's own readout classifies; the last layers are the most accurate."""
    rows = read_csv(tables_dir / "table1.csv")
    out = []
    for (profile, network, dataset) in sorted({(r["profile"], r["network"], r["dataset"]) for r in rows}):
        layers = [r for r in rows if (r["profile"], r["network"], r["dataset"]) == (profile, network, dataset)
                  and r["row"].lower().startswith("mf layer")]
        values = [(r["row"], _num(r["mean"])) for r in layers]
        if not values or any(v is None for _, v in values):
            continue
        ours = ", ".join(f"{name[3:]} {v:.2f}" for name, v in values)
        paper = ", ".join(f"{r['row'][3:]} {r['published_mean']}" for r in layers if r["published_mean"])
        first_below_best = values[0][1] <= max(v for _, v in values)
        verdict = "not confirmed" if profile != "paper" or not first_below_best else "confirmed"
        out.append(Claim("Mono-Forward paper, Table 1", f"each MF layer's own readout classifies, deeper ones best: {network}",
                         paper or "—", ours, f"{profile} profile, {dataset}", layers[0]["n"], verdict,
                         _quick_note(profile), ["tables/table1.md"]))
    return out


def depth_convergence(runs_dir: Path) -> list[Claim]:
    """Figure 5: MF with 15 layers converges as fast as with 4 (epochs to reach its best test error)."""
    from .runs import iter_runs, load_run

    curves: dict[int, list[list[float]]] = {}
    profiles = set()
    for run_dir in iter_runs(runs_dir):
        run = load_run(run_dir)
        cfg = run["config"]
        if cfg.get("tag") != "fig5" or cfg.get("algorithm") != "mf":
            continue
        profiles.add("quick" if cfg.get("train_limit") else "paper")
        errors = [100 - row["test_acc_ff"] for row in run["epochs"] if row.get("test_acc_ff") is not None]
        curves.setdefault(len(cfg["arch_args"]["widths"]), []).append(errors)
    if not {4, 15} <= set(curves):
        return [Claim("Mono-Forward paper, Figure 5", "MF converges as fast with 15 layers as with 4", "curves overlap",
                      "—", "fig5 runs", "0", "not measurable here", "no finished Figure 5 runs of both depths")]
    summary = {}
    for depth in (4, 15):
        within = [next(i + 1 for i, e in enumerate(c) if e <= min(c) + 1.0) for c in curves[depth]]  # epoch within 1 point of its best
        summary[depth] = (sum(within) / len(within), sum(min(c) for c in curves[depth]) / len(curves[depth]))
    profile = "paper" if profiles == {"paper"} else "quick"
    agrees = summary[15][0] <= summary[4][0] + 1 and summary[15][1] <= summary[4][1] + 1.0
    ours = (f"epochs to within 1 point of best: 4 layers {summary[4][0]:.1f}, 15 layers {summary[15][0]:.1f}; "
            f"best test error {summary[4][1]:.2f} vs {summary[15][1]:.2f} %")
    verdict = "confirmed" if agrees and profile == "paper" else "not confirmed"
    return [Claim("Mono-Forward paper, Figure 5", "MF converges as fast with 15 layers as with 4", "curves overlap", ours,
                  f"{profile} profile, MNIST, batch 256", f"{len(curves[4])} / {len(curves[15])}", verdict,
                  _quick_note(profile) if profile != "paper" else "", ["figures/fig5.png"])]


def energy_study(tables_dir: Path) -> list[Claim]:
    """Spyra 2025: FF, CaFo and MF against BP in accuracy, training time and training energy."""
    out = []
    for r in read_csv(tables_dir / "energy_study.csv"):
        if r["algorithm"] == "bp":
            continue
        label = f"{r['algorithm'].upper()} vs BP: {r['network']}, {r['dataset']}"
        profile = "paper" if "quick" not in (r.get("note") or "") and _num(r.get("trials")) and _num(r["trials"]) >= 30 \
            else "quick"
        if r["status"] != "completed":
            out.append(Claim("Spyra 2025", label, "—", "—", "energy study", r["n"], "not measurable here",
                             r.get("note") or r["status"], ["tables/energy_study.md"]))
            continue
        for what, ours_key, study_key, unit in (("accuracy", "acc_diff_points", "study_acc_diff_points", " points"),
                                                ("training time", "time_diff_pct", "study_time_diff_pct", " %"),
                                                ("energy", "energy_diff_pct", "study_energy_diff_pct", " %")):
            ours, study = _num(r[ours_key]), _num(r[study_key])
            if study is None:
                continue
            why = _quick_note(profile)
            if what == "energy" and "whole run" in (r.get("energy_source") or ""):
                out.append(Claim("Spyra 2025", f"{label}: {what}", f"{study:+.2f}{unit}",
                                 "—" if ours is None else f"{ours:+.2f}{unit}",
                                 f"{profile} profile, {r['energy_source']}", r["n"], "not measurable here",
                                 "the committed energy covers whole runs (evaluation in every prediction mode "
                                 "included) and is CodeCarbon's estimate; the study compares training alone",
                                 ["tables/energy_study.md"]))
                continue
            same_sign = ours is not None and (ours >= 0) == (study >= 0)
            verdict = "confirmed" if same_sign and profile == "paper" else "not confirmed"
            out.append(Claim("Spyra 2025", f"{label}: {what}", f"{study:+.2f}{unit}",
                             "—" if ours is None else f"{ours:+.2f}{unit}", f"{profile} profile", r["n"], verdict,
                             why or ("" if same_sign else "the difference has the other sign"),
                             ["tables/energy_study.md"]))
    return out


def section_3_3(claims_dir: Path) -> list[Claim]:
    """Section 3.3's claims, from results/claims/*.json (benchmarks/claims): hot-plugging, a damaged
    layer, layer-parallel training. An exact equality is a fact of the code, whatever the profile;
    an accuracy or speed-up from the quick profile is never confirmed."""
    out, source = [], "Mono-Forward paper, Section 3.3"
    for path in sorted(claims_dir.glob("hotplug_*.json")):
        record, profile = json.loads(path.read_text()), path.stem.split("_", 1)[1]
        for dataset, d in record.get("datasets", {}).items():
            mf = d.get("equality_mf", {}).get("same_start", {})
            bp = d.get("equality_bp", {}).get("after_training", {})
            equal = mf.get("all_bitwise_equal")
            out.append(Claim(source, f"a trained 2-layer MF net's layers equal the first two of a trained 3-layer "
                             f"one ({dataset})", "identical outputs", f"MF bit for bit equal: {equal}; BP: "
                             f"{bp.get('all_bitwise_equal')}", f"{profile} profile, same seed, data order and "
                             "initial layers", "1", "confirmed" if equal else "not confirmed",
                             "" if equal else "the layers differ", ["tables/claims_hotplug.md"]))
    for path in sorted(claims_dir.glob("parallel_*.json")):
        record, profile = json.loads(path.read_text()), path.stem.split("_", 1)[1]
        m = record.get("measured", {})
        mf, bp = m.get("mf_speedup"), m.get("bp_speedup")
        same = (record.get("pipeline_equals_one_process") or {}).get("bitwise_equal")
        agrees = mf is not None and bp is not None and mf > 1 and mf > bp
        load = record.get("load_average_before")
        load = round(load, 1) if isinstance(load, (int, float)) else load
        why = _quick_note(profile) if profile != "paper" else ("" if agrees else "no speed-up over one process")
        if load:
            why += f"; load average {load} during the run" if why else f"load average {load} during the run"
        out.append(Claim(source, "MF trains layer-parallel, faster than BP with data parallelism",
                         "claimed, not measured", f"2 processes: MF {_fmt(mf)}x, BP (DDP) {_fmt(bp)}x; pipeline "
                         f"equals one process: {same}", f"{profile} profile, {record.get('backend')}, "
                         f"{record.get('cores')} cores", "1", "confirmed" if agrees and profile == "paper"
                         else "not confirmed", why, ["tables/claims_parallel.md"]))
    return out


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
            "Written by `make report` from results/ alone (benchmarks/report.py). A claim judged on quick-profile "
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
