"""The Mono-Forward paper's claims from its tables and figures (accuracy against BP, prediction speed,
memory per layer, epoch time, each layer's readout, convergence with depth), judged on the tables that
``bpfree plots`` wrote, the latency records (results/latency) and, for convergence, the Figure 5 run
folders. The published figures are those of the paper's v1 (January 2025); every rule is in ``rules``."""

from __future__ import annotations

from pathlib import Path

import benchmarks.report.rules as rules
from .common import (ACCURACY_TABLES, MONO_FORWARD, V2_NOTE, Claim, best_profile_cells, fmt, num, read_csv,
                     versus_bp)


def mf_vs_bp_accuracy(tables_dir: Path) -> list[Claim]:
    """One claim per table cell where MF and BP both have rows: MF matches or beats BP, by the paired
    statistics over the seeds both have (``rules.matches_or_beats``, Holm over the family)."""
    claims = []
    for table in ACCURACY_TABLES:
        for (profile, network, dataset), by_row in best_profile_cells(tables_dir, table).items():
            bp = by_row.get("BP")
            for label in ("MF (FF pred)", "MF (BP pred)", "MF"):
                mf = by_row.get(label)
                if bp is None or mf is None:
                    continue
                claims.append(_accuracy_claim(table, profile, network, dataset, label, bp, mf))
    rules.judge_paired(claims)
    return claims


def _accuracy_claim(table, profile, network, dataset, label, bp, mf) -> Claim:
    published = (f"{label} {fmt(num(mf['published_mean']))} vs BP {fmt(num(bp['published_mean']))}"
                 if mf.get("published_mean") else "—")
    source = f"{MONO_FORWARD}, Table {table[5:]}"
    claim = f"{label} matches or beats BP: {network}, {dataset}"
    n = f"{int(mf['n'] or 0)} / {int(bp['n'] or 0)}"
    link = [mf.get("file") or f"tables/{table}.md"]
    compared = versus_bp(bp, mf)
    if compared is None:
        verdict, why = rules.missing(mf.get("note") or bp.get("note") or "")
        return Claim(source, claim, published, "—", profile, n, verdict, why, link, note=V2_NOTE)
    paired, ours = compared
    return Claim(source, claim, published, ours, profile, f"{n} ({paired.n} paired)", "inconclusive", "", link,
                 note=V2_NOTE, paired=paired, rule="matches or beats", profile=profile)


def _latency_calls(latency_dir: Path) -> dict[str, dict]:
    """Per Table 4 device (as the table names it): the record's profile and, per row, the fewest timed
    calls of its one-image and batch figures (results/latency/table4_*.json)."""
    import json

    out = {}
    for path in sorted(latency_dir.glob("table4_*.json")):
        rec = json.loads(path.read_text())
        env = rec.get("environment", {})
        device = env.get("gpu_model") or f"{env.get('cpu_model')} ({env.get('cpu_threads')} threads)"
        calls = {r["row"]: {k: int(r.get(k, {}).get("calls", r.get(k, {}).get("repeats", 0)) or 0)
                            for k in ("single", "batch")} for r in rec.get("rows", [])}
        out[device] = {"profile": rec.get("profile") or "quick", "calls": calls, "file": path.name}
    return out


def prediction_speed(tables_dir: Path, latency_dir: Path | None = None) -> list[Claim]:
    """Table 4: MF's BP-mode prediction is as fast as BP's (same layers' work), from a paper-profile
    latency record with enough timed calls (``rules.prediction_as_fast``)."""
    rows = read_csv(tables_dir / "table4.csv")
    records = _latency_calls(latency_dir if latency_dir is not None else tables_dir.parent / "latency")
    out = []
    for device in sorted({r["device"] for r in rows}):
        by_row = {r["row"]: r for r in rows if r["device"] == device}
        bp, mf = by_row.get("BP"), by_row.get("MF (BP pred)")
        if not bp or not mf:
            continue
        ratios = {k: num(mf[k]) / num(bp[k]) for k in ("single_ms", "batch_ms") if num(mf[k]) and num(bp[k])}
        paper = f"{mf.get('paper_single_ms') or '—'} vs {bp.get('paper_single_ms') or '—'} ms (1 image)"
        ours = ", ".join(f"{'1 image' if k == 'single_ms' else 'batch'} MF/BP {v:.2f}" for k, v in ratios.items())
        rec = records.get(device, {"profile": "unknown (no latency record)", "calls": {}})
        calls = {f"{'1 image' if k == 'single_ms' else 'batch'}": min(
            rec["calls"].get(row, {}).get(k[:-3], 0) for row in ("MF (BP pred)", "BP")) for k in ratios}
        verdict, why = rules.prediction_as_fast(ratios, rec["profile"], calls)
        n = ", ".join(f"{k}: {v} timed calls" for k, v in calls.items()) or "timer blocks"
        out.append(Claim(f"{MONO_FORWARD}, Table 4", "MF (BP pred) predicts as fast as BP", paper, ours,
                         f"latency, {device}, {rec['profile']} profile", n, verdict, why, ["tables/table4.md"]))
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
        s_bp, s_mf = num(bp["slope_mb_per_layer"]), num(mf["slope_mb_per_layer"])
        paper = (f"MF {mf['paper_slope_mb_per_layer']} vs BP {bp['paper_slope_mb_per_layer']} MB/layer"
                 if mf.get("paper_slope_mb_per_layer") else "—")
        quick = "quick" in (mf.get("runs") or "")
        protocol = f"{arch}, batch {mf['batch']}, {mf['method']}; {mf.get('runs') or 'paper profile'}"
        verdict, why = rules.memory_slope(s_mf, s_bp, "quick" if quick else "paper")
        ours = f"MF {fmt(s_mf, 1)} vs BP {fmt(s_bp, 1)} MB/layer"
        out.append(Claim(f"{MONO_FORWARD}, Figure 3", f"MF's memory grows far slower with depth than BP's ({arch})",
                         paper, ours, protocol, "1 run per depth", verdict, why, ["tables/fig3_slopes.md"]))
    return out


def epoch_time(tables_dir: Path) -> list[Claim]:
    """Table 5: an MF epoch is cheaper than a BP epoch (BP/MF > 1)."""
    out = []
    for r in read_csv(tables_dir / "table5.csv"):
        ratio, paper = num(r["ratio_bp_over_mf"]), num(r["paper_ratio"])
        profile = "paper" if "full training set" in (r.get("scale") or "") else "quick"
        verdict, why = rules.faster_beyond_noise(ratio, profile)
        why = "; ".join(w for w in (why, "the paper's ratios are GPU ones; ours are this machine's") if w)
        out.append(Claim(f"{MONO_FORWARD}, Table 5", f"MF's epoch is cheaper than BP's: {r['dataset']}, {r['batch']}",
                         f"BP/MF {fmt(paper)}", f"BP/MF {fmt(ratio)}", f"{profile} profile, {r['device']}",
                         f"{r['bp_n']} / {r['mf_n']}",
                         verdict, why, ["tables/table5.md"]))
    return out


def layer_accuracy(tables_dir: Path) -> list[Claim]:
    """Table 1: every MF layer's own readout classifies; the deepest is the best (``rules.layer_readouts``)."""
    rows = read_csv(tables_dir / "table1.csv")
    out = []
    for (profile, network, dataset) in sorted({(r["profile"], r["network"], r["dataset"]) for r in rows}):
        layers = [r for r in rows if (r["profile"], r["network"], r["dataset"]) == (profile, network, dataset)
                  and r["row"].lower().startswith("mf layer")]
        values = [(r["row"], num(r["mean"])) for r in layers]
        if not values or any(v is None for _, v in values):
            continue
        ours = ", ".join(f"{name[3:]} {v:.2f}" for name, v in values)
        paper = ", ".join(f"{r['row'][3:]} {r['published_mean']}" for r in layers if r["published_mean"])
        verdict, why = rules.layer_readouts([(name[3:], v) for name, v in values], dataset, profile)
        out.append(Claim(f"{MONO_FORWARD}, Table 1",
                         f"each MF layer's own readout classifies, deeper ones best: {network}",
                         paper or "—", ours, f"{profile} profile, {dataset}", layers[0]["n"], verdict, why,
                         ["tables/table1.md"]))
    return out


def depth_convergence(runs_dir: Path) -> list[Claim]:
    """Figure 5: MF with 15 layers converges as fast as with 4 (epochs to reach its best test error)."""
    from benchmarks.run.folders import load_runs

    curves: dict[int, list[list[float]]] = {}
    profiles = set()
    for run in load_runs(runs_dir):  # a folder with a damaged file is skipped and named
        cfg = run["config"]
        if cfg.get("tag") != "fig5" or cfg.get("algorithm") != "mf":
            continue
        profiles.add("quick" if cfg.get("train_limit") else "paper")
        accs = [row.get("test_acc_ff") for row in run["epochs"]]
        if not accs or None in accs:  # test not scored every epoch (test_every_epoch false): no curve to read
            continue
        curves.setdefault(len(cfg["arch_args"]["widths"]), []).append([100 - a for a in accs])
    if not {4, 15} <= set(curves):
        return [Claim(f"{MONO_FORWARD}, Figure 5", "MF converges as fast with 15 layers as with 4", "curves overlap",
                      "—", "fig5 runs", "0", "not run", "no finished Figure 5 runs of both depths")]
    summary = {}
    for depth in (4, 15):
        within = [next(i + 1 for i, e in enumerate(c) if e <= min(c) + 1.0) for c in curves[depth]]  # epoch within 1 point of its best
        summary[depth] = (sum(within) / len(within), sum(min(c) for c in curves[depth]) / len(curves[depth]))
    profile = "paper" if profiles == {"paper"} else "quick"
    verdict, why = rules.converges_as_fast(summary[4][0], summary[15][0], summary[4][1], summary[15][1], profile)
    ours = (f"epochs to within 1 point of best: 4 layers {summary[4][0]:.1f}, 15 layers {summary[15][0]:.1f}; "
            f"best test error {summary[4][1]:.2f} vs {summary[15][1]:.2f} %")
    return [Claim(f"{MONO_FORWARD}, Figure 5", "MF converges as fast with 15 layers as with 4", "curves overlap", ours,
                  f"{profile} profile, MNIST, batch 256", f"{len(curves[4])} / {len(curves[15])}", verdict, why,
                  ["figures/fig5.png"])]
