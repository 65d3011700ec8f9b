"""Draw Figures 1 to 5 and write Tables 1 to 6 from the results folder alone (no training).

    bpfree plots                         # everything that has results
    bpfree plots --only fig3 table5      # some of it
    bpfree plots --only table3 --profile quick
    bpfree plots --results tests/fixtures/measure/results --out /tmp/plots

Reads run folders under <results>/runs, sweep status files under <results>/sweeps and latency files
under <results>/latency; writes <out>/figures/figN.{png,pdf}, <out>/tables/{table4,table5,fig3_slopes,local_cost}.{md,csv}
and the accuracy tables <out>/tables/{table1,table2,table3,table6,sff,fg}.{md,csv,tex}, printing each table.

--profile NAME uses the runs of that profile of each target's spec (those whose run key matches
`sweep.expand(spec, NAME)`). Without it, an accuracy table shows `paper` if any of its paper runs
finished, else `quick`; a figure (and Tables 4-5) uses the most complete runs present. A figure whose
runs are missing is skipped with a note saying which `make reproduce-...` target produces them; an
accuracy table is always written, its empty cells saying why.
Exit codes: 0 done (even if some figures had no runs), 2 bad input.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from algorithms import ConfigError, UnknownNameError
from benchmarks.tables import accuracy as accuracy_tables, cost as cost_tables, figures
from benchmarks.claims import report as claims_report
from benchmarks.tables.energy_study import write_energy_study
from benchmarks.run.environment import machine_of
from benchmarks.tables.local_cost import TIME_TAGS, local_cost_rows
from benchmarks.reference import load_reference
from benchmarks.run.folders import load_runs, prefer
from benchmarks.sweep.expand import SPECS_DIR, latest_statuses, load_spec, run_key, status_file

# sff, fg: the local-learning specs; fair: the ablation ladder under two budget protocols
ACCURACY_TABLES = ("table1", "table2", "table3", "table6", "sff", "fg", "fair")
TARGETS = ("fig1", "fig2", "fig3", "fig4", "fig5", "table4", "table5", *ACCURACY_TABLES, "local_cost", "energy_study",
           "claims")
SPEC_OF = {"fig1": "fig1", "fig2": "fig1", "fig3": "fig3", "fig4": "fig4", "fig5": "fig5", "table5": "table5",
           "local_cost": "local_cost",
           **{t: t for t in ACCURACY_TABLES}}  # table4 has no runs of its own (its accuracy: table3's runs)


class Picker:
    """Chooses a spec's runs: those of ``profile`` (by run key) when one is given, else the most complete."""

    def __init__(self, runs: list[dict], profile: str | None, params_file: str | None = None):
        self.runs, self.profile, self.params_file = runs, profile, params_file
        self._keys: dict[str, set[str]] = {}

    def keys(self, spec_name: str) -> set[str]:
        if spec_name not in self._keys:
            spec = load_spec(spec_name)
            self._keys[spec_name] = accuracy_tables.expected_keys(spec, self.profile, self.params_file) \
                if self.profile in spec["profiles"] else set()
        return self._keys[spec_name]

    def tagged(self, spec_name: str) -> list[dict]:
        """The spec's completed runs, one folder per run key (the newest with a data fingerprint where
        a run was made again)."""
        return list(prefer(figures.runs_with_tag(self.runs, spec_name), lambda r: run_key(r["config"])).values())

    def profile_of(self, spec_name: str, runs: list[dict]) -> str | None:
        """The first profile of the spec that asks for every one of ``runs``, if any."""
        spec = load_spec(spec_name)
        for profile in spec["profiles"]:
            keys = accuracy_tables.expected_keys(spec, profile, self.params_file)
            if runs and all(run_key(r["config"]) in keys for r in runs):
                return profile
        return None

    def __call__(self, spec_name: str, where=None) -> tuple[list[dict], str]:
        """The runs to draw (those ``where(run)`` accepts, if given) and a few words saying what they are."""
        tagged = [r for r in self.tagged(spec_name) if where is None or where(r)]
        if self.profile is None:
            chosen, words = figures.most_complete(tagged)
            profile = self.profile_of(spec_name, chosen)
            return chosen, f"{profile} profile, {words}" if profile else words
        keys = self.keys(spec_name)
        chosen = [r for r in tagged if run_key(r["config"]) in keys]
        return chosen, f"{self.profile} profile, {figures.most_complete(chosen)[1]}"

    def missing(self, spec_name: str) -> str:
        """How to make the runs that are not there."""
        profile = f" PROFILE={self.profile}" if self.profile else ""
        which = f" of profile {self.profile}" if self.profile else ""
        return f"no runs{which} tagged {spec_name} (make reproduce-{spec_name}{profile})"


def _title(base: str, runs: list[dict], profile: str) -> str:
    devices = sorted({machine_of(r) for r in runs})
    return f"{base}\n{profile}; {', '.join(devices)}"


def fig1_2(pick, out, only) -> list[str]:
    chosen, profile = pick("fig1")
    if not chosen:
        return [f"fig1/fig2: {pick.missing('fig1')}"]
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


def fig3(pick, out) -> list[str]:
    chosen, _ = pick("fig3")
    if not chosen:
        return [f"fig3: {pick.missing('fig3')}"]
    reference = {row["algorithm"].lower(): float(row["mean"]) for row in load_reference("fig3")}
    notes, lines = [], []
    # each network on its own: the networks of one spec may train on different subsets
    for arch in sorted({r["config"]["arch"] for r in pick.tagged("fig3")}):
        mine, described = pick("fig3", lambda r, arch=arch: r["config"]["arch"] == arch)
        if not mine:
            continue
        data = figures.depth_data(mine, arch)
        bs = sorted({r["config"]["batch_size"] for r in mine})
        title = _title(f"Figure 3: peak training memory against depth ({arch}, {mine[0]['config']['dataset']}, "
                       f"batch {'/'.join(map(str, bs))})", mine, described)
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
                          "method": data["method"], "runs": described})
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


def fig4(pick, out) -> list[str]:
    chosen, profile = pick("fig4")
    if not chosen:
        return [f"fig4: {pick.missing('fig4')}"]
    curves = figures.convergence_data(chosen, lambda r: (r["config"]["dataset"], r["config"]["algorithm"]))
    panels: dict[str, dict] = {}
    for (dataset, alg), c in curves.items():
        panels.setdefault(dataset, {})[figures.ALGO_LABEL.get(alg, alg)] = c
    title = _title("Figure 4: test error per epoch, 4x1000 MLP, Adam 1e-3, batch 256 (mean ± std over seeds)",
                   chosen, profile)
    return [str(p) for p in figures.save(figures.convergence_figure(panels, title), out / "figures", "fig4")]


def fig5(pick, out) -> list[str]:
    chosen, profile = pick("fig5")
    if not chosen:
        return [f"fig5: {pick.missing('fig5')}"]
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


def table5(pick, out) -> list[str]:
    rows, md = cost_tables.table5_rows(pick("table5")[0])
    print(md)
    return [str(p) for p in cost_tables.write_table(rows, md, out / "tables", "table5")] if rows else \
        [f"table5: {pick.missing('table5')}"]


def local_cost(pick, out) -> list[str]:
    """local_cost.{md,csv} from the profile asked for (or the most complete present), and, without
    --profile, local_cost_<profile>.{md,csv} for each other profile with runs (e.g. quick's narrow
    networks, whose epoch times the sff and fg quick tables give)."""
    chosen, described = pick("local_cost")
    if not chosen:
        return [f"local_cost: {pick.missing('local_cost')}"]
    timed = [r for tag in TIME_TAGS for r in pick.tagged(tag)]
    tables = [("local_cost", chosen, described)]
    if pick.profile is None:
        shown = pick.profile_of("local_cost", chosen)
        for profile in load_spec("local_cost")["profiles"]:
            if profile != shown:
                others, words = Picker(pick.runs, profile, pick.params_file)("local_cost")
                tables += [(f"local_cost_{profile}", others, words)] if others else []
    written = []
    for name, runs, words in tables:
        rows, md = local_cost_rows(runs, words, timed)
        written += [str(p) for p in cost_tables.write_table(rows, md, out / "tables", name)]
    return written


def accuracy_table(name, all_runs, out, results, profile, params_file) -> list[str]:
    """Table 1, 2, 3 or 6: every cell of the spec under the profile asked for (default: paper if any of
    its runs finished, else quick), written as .md, .csv and .tex and printed. Without --profile, every
    other profile with a finished run is written too, as ``<name>_<profile>`` (so that the quick table
    stays beside a paper one that is still partly empty)."""
    spec = load_spec(name)
    asked = profile
    profile = profile or accuracy_tables.default_profile(spec, all_runs, params_file)
    if profile not in spec["profiles"]:
        return [f"{name}: the spec has no profile {profile!r} (choose one of: {', '.join(spec['profiles'])})"]
    written = []
    others = [] if asked else [p for p in spec["profiles"] if p != profile
                               and accuracy_tables.has_finished_runs(spec, p, all_runs, params_file, own=False)]
    for each in (profile, *others):
        statuses = latest_statuses(status_file(results, spec["name"], each))
        budgets = accuracy_tables.budgets_of(spec, each)
        for budget in budgets:  # one table per budget protocol where a profile has several: <name>[_<profile>]_<budget>
            table = accuracy_tables.build_table(spec, each, all_runs, statuses, params_file=params_file,
                                                budget=budget if len(budgets) > 1 else None)
            if each == profile:
                print(table.markdown)
            stem = name if each == profile else f"{name}_{each}"
            written += accuracy_tables.write_table(table, out / "tables", stem if len(budgets) == 1 else f"{stem}_{budget}")
    return [str(p) for p in written]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.error = lambda message: p.exit(2, f"error: {message} (see --help)\n")  # one line, as every bad input
    p.add_argument("--results", default="results", help="results folder (runs/ and latency/ inside)")
    p.add_argument("--out", help="where figures/ and tables/ go (default: the results folder)")
    p.add_argument("--only", nargs="+", choices=TARGETS, default=list(TARGETS))
    p.add_argument("--profile", help="use the runs of this profile of each spec (e.g. quick, paper); default: "
                                     "accuracy tables paper if any of its runs finished, else quick; figures "
                                     "the most complete runs present")
    p.add_argument("--params-file", help="tuned settings the sweep ran with (as bpfree sweep --params-file), "
                                         "so that the tuned runs are the ones found")
    args = p.parse_args(argv)
    results = Path(args.results)
    if not results.is_dir():
        print(f"error: results folder {results} not found", file=sys.stderr)
        return 2
    out = Path(args.out) if args.out else results
    only = set(args.only)
    try:
        if args.profile is not None:  # a name no spec of the targets knows is a typo
            known = {prof for t in only if t in SPEC_OF and (SPECS_DIR / f"{SPEC_OF[t]}.yaml").exists()
                     for prof in load_spec(SPEC_OF[t])["profiles"]}
            if known and args.profile not in known:
                raise ConfigError(f"unknown profile {args.profile!r}; choose one of: {', '.join(sorted(known))}")
        # every run folder, finished or not: an accuracy table says why a cell is empty; figures use finished ones
        # (a folder with a damaged file is skipped and named on stderr)
        all_runs = list(load_runs(results / "runs", finished_only=False))
        runs = [r for r in all_runs if r["done"]]
        pick = Picker(runs, args.profile, args.params_file)
        notes: list[str] = []
        if only & {"fig1", "fig2"}:
            notes += fig1_2(pick, out, only)
        if "fig3" in only:
            notes += fig3(pick, out)
        if "fig4" in only:
            notes += fig4(pick, out)
        if "fig5" in only:
            notes += fig5(pick, out)
        if "table4" in only:
            # accuracy beside the latency: Table 3's runs of the profile asked for, when one is
            table4_runs = runs if args.profile is None else \
                [r for r in runs if r["config"].get("tag") != "table3" or run_key(r["config"]) in pick.keys("table3")]
            notes += table4(table4_runs, out, results)
        if "table5" in only:
            notes += table5(pick, out)
        if "local_cost" in only:
            notes += local_cost(pick, out)
        for name in ACCURACY_TABLES:
            if name in only:
                try:
                    notes += accuracy_table(name, all_runs, out, results, args.profile, args.params_file)
                except (ConfigError, UnknownNameError) as exc:  # e.g. a broken spec: the other targets go on
                    notes.append(f"{name}: {exc}")
        if "energy_study" in only:
            notes += write_energy_study(results, out, profile=args.profile)
        if "claims" in only:  # Section 3.3's claims, from results/claims/*.json (bpfree claims)
            notes += claims_report.write_all(results, out, profile=args.profile)
    except (ConfigError, UnknownNameError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for note in notes:
        print(note)
    return 0
