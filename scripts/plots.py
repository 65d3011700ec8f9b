#!/usr/bin/env python
"""Draw Figures 1 to 5 and write Tables 4 and 5 from the results folder alone (no training).

    python scripts/plots.py                         # everything that has results
    python scripts/plots.py --only fig3 table5      # some of it
    python scripts/plots.py --results tests/fixtures/measure/results --out /tmp/plots

Reads run folders under <results>/runs and latency files under <results>/latency; writes
<out>/figures/figN.{png,pdf} and <out>/tables/{table4,table5,fig3_slopes}.{md,csv}. A figure whose
runs are missing is skipped with a note saying which `make reproduce-...` target produces them.
Exit codes: 0 done (even if some figures had no runs), 2 bad input.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from benchmarks import cost_tables, figures
from benchmarks.runs import iter_runs, load_run

TARGETS = ("fig1", "fig2", "fig3", "fig4", "fig5", "table4", "table5")


def _title(base: str, runs: list[dict], profile: str) -> str:
    devices = sorted({figures.device_of(r) for r in runs})
    return f"{base}\n{profile}; {', '.join(devices)}"


def fig1_2(runs, out, only) -> list[str]:
    chosen, profile = figures.most_complete(figures.runs_with_tag(runs, "fig1"))
    if not chosen:
        return ["fig1/fig2: no runs tagged fig1 (make reproduce-fig1)"]
    series = {}
    for alg in ("bp", "mf"):
        mine = sorted((r for r in chosen if r["config"]["algorithm"] == alg), key=lambda r: r["config"]["seed"])
        if mine:
            series[alg] = (mine[0], figures.memory_timeline_data(mine[0]))
    top = max((max(s["step_peak_mb"] + s.get("trace_mb", []) + [0]) for _, s in series.values()), default=0)
    notes = []
    for name, alg in (("fig1", "bp"), ("fig2", "mf")):
        if name not in only:
            continue
        if alg not in series:
            notes.append(f"{name}: no {alg} run tagged fig1")
            continue
        run, s = series[alg]
        title = _title(f"Figure {name[-1]}: memory over training, {figures.ALGO_LABEL[alg]}, "
                       f"{figures.width_label(run)} {run['config']['arch']}, {run['config']['dataset']}, "
                       f"batch {run['config']['batch_size']}", [run], profile)
        notes += [str(p) for p in figures.save(figures.memory_timeline_figure(s, title, ylim=top * 1.1 or None),
                                               out / "figures", name)]
    return notes


def fig3(runs, out) -> list[str]:
    chosen, profile = figures.most_complete(figures.runs_with_tag(runs, "fig3"))
    if not chosen:
        return ["fig3: no runs tagged fig3 (make reproduce-fig3)"]
    reference = {row["algorithm"].lower(): float(row["mean"]) for row in cost_tables.load_reference("fig3")}
    notes, lines = [], []
    for arch in sorted({r["config"]["arch"] for r in chosen}):
        data = figures.depth_data(chosen, arch)
        mine = [r for r in chosen if r["config"]["arch"] == arch]
        bs = sorted({r["config"]["batch_size"] for r in mine})
        title = _title(f"Figure 3: peak training memory against depth ({arch}, {mine[0]['config']['dataset']}, "
                       f"batch {'/'.join(map(str, bs))})", mine, profile)
        # the paper's slopes are for 1000-unit MLP layers on MNIST; other networks get none beside them
        same_as_paper = arch == "mlp" and all(figures.width_label(r).endswith("x1000") and
                                              r["config"]["dataset"] == "mnist" for r in mine)
        ref = reference if same_as_paper else {}
        name = "fig3" if arch == "mlp" else f"fig3_{arch}"
        notes += [str(p) for p in figures.save(figures.depth_figure(data, ref, title), out / "figures", name)]
        for alg, d in data["algorithms"].items():
            slope = d["slope_mb_per_layer"]
            lines.append({"arch": arch, "algorithm": alg, "dataset": mine[0]["config"]["dataset"],
                          "batch": "/".join(map(str, bs)), "depths": " ".join(map(str, d["depths"])),
                          "slope_mb_per_layer": slope, "paper_slope_mb_per_layer": ref.get(alg),
                          "method": data["method"], "runs": profile})
    md = ("**Figure 3 slopes: peak training memory per added layer (MB = 10^6 bytes; "
          "paper: MNIST, full batch of 60000, GPU)**\n\n"
          "| arch | dataset | batch | algorithm | depths | slope (MB/layer) | paper (MB/layer) | measured as |\n"
          "|---|---|---|---|---|---|---|---|\n"
          + "".join(f"| {r['arch']} | {r['dataset']} | {r['batch']} | "
                    f"{figures.ALGO_LABEL.get(r['algorithm'], r['algorithm'])} | {r['depths']} | "
                    f"{cost_tables._fmt(r['slope_mb_per_layer'], None, 1)} | "
                    f"{cost_tables._fmt(r['paper_slope_mb_per_layer'], None, 2)} | {r['method']} ({r['runs']}) |\n"
                    for r in lines))
    notes += [str(p) for p in cost_tables.write_table(lines, md, out / "tables", "fig3_slopes")]
    print(md)
    return notes


def fig4(runs, out) -> list[str]:
    chosen, profile = figures.most_complete(figures.runs_with_tag(runs, "fig4"))
    if not chosen:
        return ["fig4: no runs tagged fig4 (make reproduce-fig4)"]
    curves = figures.convergence_data(chosen, lambda r: (r["config"]["dataset"], r["config"]["algorithm"]))
    panels: dict[str, dict] = {}
    for (dataset, alg), c in curves.items():
        panels.setdefault(dataset, {})[figures.ALGO_LABEL.get(alg, alg)] = c
    title = _title("Figure 4: test error per epoch, 4x1000 MLP, Adam 1e-3, batch 256 (mean ± std over seeds)",
                   chosen, profile)
    return [str(p) for p in figures.save(figures.convergence_figure(panels, title), out / "figures", "fig4")]


def fig5(runs, out) -> list[str]:
    chosen, profile = figures.most_complete(figures.runs_with_tag(runs, "fig5"))
    if not chosen:
        return ["fig5: no runs tagged fig5 (make reproduce-fig5)"]
    curves = figures.convergence_data(chosen, lambda r: (r["config"]["algorithm"], figures.depth(r)))
    deep = max((d for _, d in curves), default=0)
    shallow = min((d for a, d in curves if a == "mf"), default=0)
    deep_label = next(figures.width_label(r) for r in chosen if figures.depth(r) == deep)
    panels = {f"{deep_label}: BP vs MF": {f"{figures.ALGO_LABEL.get(a, a)} {d} layers": c
                                         for (a, d), c in curves.items() if d == deep},
              f"MF: {deep} vs {shallow} layers": {f"MF {d} layers": c for (a, d), c in curves.items() if a == "mf"}}
    title = _title("Figure 5: test error per epoch, deep MLP (mean ± std over seeds)", chosen, profile)
    return [str(p) for p in figures.save(figures.convergence_figure(panels, title), out / "figures", "fig5")]


def table4(runs, out, results) -> list[str]:
    records = cost_tables.load_latency_records(results / "latency")
    rows, md = cost_tables.table4_rows(records, runs)
    print(md)
    return [str(p) for p in cost_tables.write_table(rows, md, out / "tables", "table4")] if records else \
        ["table4: no latency measurement (make reproduce-table4)"]


def table5(runs, out) -> list[str]:
    rows, md = cost_tables.table5_rows(runs)
    print(md)
    return [str(p) for p in cost_tables.write_table(rows, md, out / "tables", "table5")] if rows else \
        ["table5: no runs tagged table5 (make reproduce-table5)"]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--results", default="results", help="results folder (runs/ and latency/ inside)")
    p.add_argument("--out", help="where figures/ and tables/ go (default: the results folder)")
    p.add_argument("--only", nargs="+", choices=TARGETS, default=list(TARGETS))
    args = p.parse_args(argv)
    results = Path(args.results)
    if not results.is_dir():
        print(f"error: results folder {results} not found", file=sys.stderr)
        return 2
    out = Path(args.out) if args.out else results
    runs = [load_run(d) for d in iter_runs(results / "runs")]
    only = set(args.only)
    notes: list[str] = []
    if only & {"fig1", "fig2"}:
        notes += fig1_2(runs, out, only)
    if "fig3" in only:
        notes += fig3(runs, out)
    if "fig4" in only:
        notes += fig4(runs, out)
    if "fig5" in only:
        notes += fig5(runs, out)
    if "table4" in only:
        notes += table4(runs, out, results)
    if "table5" in only:
        notes += table5(runs, out)
    for note in notes:
        print(note)
    return 0


if __name__ == "__main__":
    sys.exit(main())
