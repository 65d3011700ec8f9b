"""Tables and figures of the claim experiments, as pure functions of ``results/claims/*.json``.

``write_all(results, out)`` reads every ``<experiment>_<profile>.json`` present and writes
``<out>/tables/claims_<experiment>.md`` (one section per profile, paper first) and
``<out>/figures/claims_<experiment>_<profile>.{png,pdf}``. Nothing here trains or measures.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
from matplotlib.ticker import MaxNLocator

from benchmarks.tables.figures import save

from .common import EXPERIMENTS, PROFILES, read_result
from .damage import damage_names

ALG = {"mf": "MF", "bp": "BP"}


def _f(v, digits=2) -> str:
    return "-" if v is None else f"{v:.{digits}f}"


def _yes(v: bool) -> str:
    return "**yes**" if v else "no"


def _size(n: float) -> str:
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= scale:
            return f"{n / scale:.2f} {unit}"
    return f"{n:.0f} B"


def _header(r: dict, data: str) -> str:
    return (f"## {r['profile']} profile\n\n{data}; batch 64, Adam 1e-3, seed {r['settings']['seed']}; "
            f"{r['device']}, torch {r['torch']}, {r.get('threads', r.get('threads_per_process'))} thread(s) "
            f"per process.\n")


# -- hot-plugging ----------------------------------------------------------------------------------

def _worst(cmp: dict) -> tuple[float, float]:
    return (max(p["max_abs_diff"] for p in cmp["params"].values()),
            max(p["rel_diff"] for p in cmp["params"].values()))


def hotplug_md(r: dict) -> str:
    s = r["settings"]
    train = {d: v["data"]["train"] for d, v in r["datasets"].items()}
    data = ", ".join(f"{d} ({n} training images)" for d, n in train.items())
    lines = [_header(r, f"MLPs of {s['width']}-unit layers, {data}, {s['epochs']} epochs each, simultaneous MF "
                        "schedule, the runner's data order")]
    for d, v in r["datasets"].items():
        eq, seed_only, bp = v["equality_mf"]["same_start"], v["equality_mf"]["same_seed_only"], v["equality_bp"]
        lines += [f"### {d}: first two layers of a trained 2-layer and 3-layer net\n",
                  "| pair | how they start | layers 1-2 bit for bit equal (weights and test-set outputs) | "
                  "largest abs. difference | largest relative difference |", "|---|---|---|---:|---:|"]
        a, rel = _worst(eq)
        lines.append(f"| MF 2 vs 3 layers | layers 1-2 equal (blocks and M_1, M_2) | {_yes(eq['all_bitwise_equal'])} | "
                     f"{a:.3g} | {rel:.3g} |")
        a0, _ = _worst({"params": seed_only["at_init"]})
        a, rel = _worst(seed_only["after_training"])
        lines.append(f"| MF 2 vs 3 layers | same seed only: blocks equal, M_1, M_2 differ at the start "
                     f"(max {a0:.3g}; drawn after every block) | "
                     f"{_yes(seed_only['after_training']['all_bitwise_equal'])} | {a:.3g} | {rel:.3g} |")
        a, rel = _worst(bp["after_training"])
        moved = max(p["moved_from_init_rel"] for p in bp["after_training"]["params"].values())
        lines.append(f"| BP 2 vs 3 layers | same seed: blocks 1-2 equal ({_yes(bp['init_bitwise_equal'])}) | "
                     f"{_yes(bp['after_training']['all_bitwise_equal'])} | {a:.3g} | {rel:.3g} (each weight moved "
                     f"up to {moved:.3g} of its norm from its start) |")
        lines += ["", f"### {d}: plug a third layer onto the trained 2-layer net, train only it\n",
                  "| algorithm | network | what trains | test acc per epoch (%) | final test acc (%) "
                  "| training time (s) |",
                  "|---|---|---|---|---:|---:|"]
        for alg in ("mf", "bp"):
            p = v["plug"][alg]
            what = {"base_2_layers": ("2 layers", "all"), "scratch_3_layers": ("3 layers from scratch", "all"),
                    "plugged": ("trained 2 layers + new layer 3",
                                "layer 3 only" + ("" if alg == "mf" else " and a new head"))}
            for key, (net, trains) in what.items():
                q = p[key]
                lines.append(f"| {ALG[alg]} | {net} | {trains} | {' '.join(_f(e['test_acc']) for e in q['epochs'])} | "
                             f"{_f(q['final_test_acc'])} | {_f(q['total_time_s'], 1)} |")
        mfp, bpp = v["plug"]["mf"], v["plug"]["bp"]
        ratio = {a: q["plugged"]["total_time_s"] / q["scratch_3_layers"]["total_time_s"] for a, q in v["plug"].items()}
        lines += ["", f"Plugging costs {ratio['mf']:.2f} of the 3-layer MF net's training time "
                      f"({_f(mfp['plugged']['final_test_acc'])} % against "
                      f"{_f(mfp['scratch_3_layers']['final_test_acc'])} %), "
                      f"and {ratio['bp']:.2f} of BP's ({_f(bpp['plugged']['final_test_acc'])} % against "
                      f"{_f(bpp['scratch_3_layers']['final_test_acc'])} %). "
                      f"MF's plugged layer 3 alone: {_f(mfp['plugged_layer3_alone_test_acc'])} % (from scratch: "
                      f"{_f(mfp['scratch_layer3_alone_test_acc'])} %).",
                  "", f"### {d}: unplug the top layer of the trained 3-layer net\n",
                  "| algorithm | 3 layers (%) | top layer dropped (%) | the 2-layer net trained alone (%) |",
                  "|---|---:|---:|---:|"]
        for alg in ("mf", "bp"):
            u = v["unplug"][alg]
            lines.append(f"| {ALG[alg]} | {_f(u['full_3_layers'])} | {_f(u['unplugged_2_layers'])} | "
                         f"{_f(u['trained_2_layers'])} |")
        lines.append("\nMF drops layer 3 by summing the readouts of layers 1-2; BP feeds block 2 into the head that "
                     "was trained on block 3's output.\n")
    return "\n".join(lines)


def hotplug_figure(r: dict):
    rows = list(r["datasets"].items())
    fig, axes = plt.subplots(len(rows), 2, figsize=(10, 3.6 * len(rows)), squeeze=False)
    for (d, v), ax_row in zip(rows, axes):
        for ax, alg in zip(ax_row, ("mf", "bp")):
            p = v["plug"][alg]
            base_t = p["base_2_layers"]["total_time_s"]
            for key, label, offset, style in (("base_2_layers", "2 layers", 0.0, "o-"),
                                              ("scratch_3_layers", "3 layers from scratch", 0.0, "s-"),
                                              ("plugged", "2 layers + plugged layer 3 (after the 2-layer training)",
                                               base_t, "^-")):
                t, acc = offset, []
                xs = []
                for e in p[key]["epochs"]:
                    t += e["time_s"]
                    xs.append(t)
                    acc.append(e["test_acc"])
                ax.plot(xs, acc, style, label=label, ms=4)
            ax.set_title(f"{ALG[alg]}, {d}", fontsize=9)
            ax.set_xlabel("cumulative training time (s)")
            ax.set_ylabel("test accuracy (%)")
            ax.legend(fontsize=7)
    fig.suptitle(f"Hot-plugging a third layer ({r['profile']} profile, {r['device']})", fontsize=10)
    fig.tight_layout()
    return fig


# -- damaged layer ---------------------------------------------------------------------------------

def _pairs(r: dict) -> dict[tuple, dict]:
    """(dataset, widths label, layer) -> {algorithm: that run's layer entry, plus the run}."""
    out: dict[tuple, dict] = {}
    for run in r["runs"]:
        label = f"{len(run['widths'])}x{run['widths'][0]}"
        for k, entry in run["layers"].items():
            out.setdefault((run["dataset"], label, int(k)), {})[run["algorithm"]] = dict(entry, run=run)
    return out


def _main_acc(alg: str, acc: dict) -> float | None:
    return acc["output"] if alg == "bp" else acc["ff"]


def damage_md(r: dict) -> str:
    s = r["settings"]
    lines = [_header(r, f"MLPs of {r['runs'][0]['widths'][0]}-unit layers trained {s['epochs']} epochs on "
                        f"{s['train_limit'] or 'all'} training images (runs kept with save=final); layer k damaged, "
                        f"then retrained alone {s['retrain_epochs']} epochs with a fresh Adam"),
             "Test accuracy (%). BP: through its damaged stack. MF *all*: every layer's readout summed (the damaged "
             "stack); MF *below k*: the readouts of the undamaged layers 1..k-1 alone. Retraining: MF from layer k's "
             "local loss, BP from the output loss through the frozen layers above k; *ep 1* and *ep N* after the "
             "first and last retraining epoch (MF: all layers); s/ep: seconds of training per retraining epoch.\n"]
    for (d, net, k), algs in sorted(_pairs(r).items()):
        if not {"mf", "bp"} <= set(algs):
            continue
        mf, bp = algs["mf"], algs["bp"]
        lines += [f"### {d}, {net}, layer {k} damaged\n",
                  "| damage | BP | MF all | MF below k | BP ep 1 | BP ep N | MF ep 1 | MF ep N | BP s/ep | MF s/ep |",
                  "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
                  f"| none | {_f(bp['undamaged']['output'])} | {_f(mf['undamaged']['ff'])} | "
                  f"{_f(mf['undamaged']['below'])} | | | | | | |"]
        for name in damage_names(s):  # the result file keeps its keys sorted; this is the profile's order
            m, b = mf["damages"][name], bp["damages"][name]
            cells = [_f(b["no_retraining"]["output"]), _f(m["no_retraining"]["ff"]), _f(m["no_retraining"]["below"])]
            if "retraining" in m and "retraining" in b:
                br, mr = b["retraining"], m["retraining"]
                cells += [_f(br[0]["test_acc"]), _f(br[-1]["test_acc"]), _f(mr[0]["ff"]), _f(mr[-1]["ff"]),
                          _f(sum(e["time_s"] for e in br) / len(br)), _f(sum(e["time_s"] for e in mr) / len(mr))]
            else:
                cells += [""] * 6
            lines.append(f"| {name.replace('_', ' ')} | " + " | ".join(cells) + " |")
        lines.append("")
    lines.append("noise s: Gaussian noise of s times the weight matrix's std added to it; zero f: a fraction f of "
                 "the layer's units off; reinit: the layer drawn again. The same draw damages MF and BP.\n")
    return "\n".join(lines)


def _damage_grid(r: dict, what: str, xlabel: str):
    """The grid both damage figures share: one row per (dataset, network) in run order, one column per damaged
    layer k; the cells of layers a network lacks are turned off. Returns the figure and {(row, k): axes}."""
    pairs = {key: algs for key, algs in _pairs(r).items() if {"mf", "bp"} <= set(algs)}
    rows = list(dict.fromkeys((d, net) for d, net, _ in pairs))  # _pairs keeps the runs' order
    cols = sorted({k for _, _, k in pairs})
    fig, axes = plt.subplots(len(rows), len(cols), figsize=(max(3.9 * len(cols), 7.0), 2.5 * len(rows) + 1.3),
                             squeeze=False, sharex=True, sharey=True, layout="constrained")
    cells = {}
    for i, (d, net) in enumerate(rows):
        for j, k in enumerate(cols):
            if (d, net, k) in pairs:
                cells[(d, net, k)] = axes[i, j]
            else:
                axes[i, j].set_axis_off()
    for (d, net, k), ax in cells.items():
        i, j = rows.index((d, net)), cols.index(k)
        below = any((*row, k) in cells for row in rows[i + 1:])  # the x axis is shared: label the lowest cell
        left = any((d, net, kk) in cells for kk in cols[:j])
        ax.tick_params(labelbottom=not below, labelleft=not left, labelsize=7)
        if not left:
            ax.set_ylabel("test accuracy (%)", fontsize=8)
        if not below:
            ax.set_xlabel(xlabel, fontsize=8)
        ax.set_ylim(0, 100)
        ax.grid(alpha=0.3)
        ax.set_title(f"{d} {net}, layer {k}", fontsize=9)
    fig.suptitle(f"A damaged layer k, {what}\n{r['profile']} profile, {r['device']}", fontsize=11)
    return fig, {key: (ax, pairs[key]) for key, ax in cells.items()}


def _shared_legend(fig, cells: dict, ncol: int) -> None:
    """One legend for the whole figure, below its panels: every line label once, in the order first drawn."""
    seen = {}
    for ax, _ in cells.values():
        for h, label in zip(*ax.get_legend_handles_labels()):
            seen.setdefault(label, h)
    ncol = min(ncol if fig.get_figwidth() >= 9 else 3, len(seen))  # a one-column grid: three entries a line
    fig.legend(list(seen.values()), list(seen), loc="outside lower center", ncol=ncol, fontsize=8, frameon=False)


def damage_no_retraining_figure(r: dict):
    names = damage_names(r["settings"])
    xs = list(range(len(names) + 1))
    fig, cells = _damage_grid(r, "no retraining: test accuracy after the damage", "damage to layer k")
    for (d, net, k), (ax, algs) in cells.items():
        mf, bp = algs["mf"], algs["bp"]
        ax.plot(xs, [bp["undamaged"]["output"], *(bp["damages"][n]["no_retraining"]["output"] for n in names)],
                "o-", color="tab:blue", ms=4, label="BP (damaged stack)")
        ax.plot(xs, [mf["undamaged"]["ff"], *(mf["damages"][n]["no_retraining"]["ff"] for n in names)],
                "s-", color="tab:red", ms=4, label="MF all layers (damaged stack)")
        if mf["undamaged"]["below"] is not None:
            ax.plot(xs, [mf["undamaged"]["below"], *(mf["damages"][n]["no_retraining"]["below"] for n in names)],
                    "^--", color="tab:red", ms=4, label="MF layers below k (undamaged)")
        ax.set_xticks(xs, ["none", *(n.replace("_", " ") for n in names)], rotation=45, ha="right",
                      rotation_mode="anchor")
    _shared_legend(fig, cells, ncol=3)
    return fig


# the retraining curves: a colour per damage, a style per algorithm (blue and red stay BP and MF elsewhere)
RETRAIN_COLORS = ("tab:green", "tab:purple", "tab:orange", "tab:brown", "tab:pink", "tab:olive", "tab:cyan")


def damage_retraining_figure(r: dict):
    names = damage_names(r["settings"])
    fig, cells = _damage_grid(r, "retraining it alone: test accuracy per epoch, epoch 0 = damaged",
                              "epochs retraining layer k alone")
    for (d, net, k), (ax, algs) in cells.items():
        for i, n in enumerate(n for n in names if "retraining" in algs["mf"]["damages"][n]):
            c = RETRAIN_COLORS[i % len(RETRAIN_COLORS)]
            for alg, key, style in (("bp", "test_acc", "o-"), ("mf", "ff", "s--")):
                dmg = algs[alg]["damages"][n]
                ys = [_main_acc(alg, dmg["no_retraining"]), *(e[key] for e in dmg["retraining"])]
                ax.plot(range(len(ys)), ys, style, color=c, ms=3, label=f"{ALG[alg]} {n.replace('_', ' ')}")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    _shared_legend(fig, cells, ncol=6)
    return fig


def damage_figures(r: dict) -> dict:
    """``claims_damage_<profile>`` (no retraining) and ``claims_damage_<profile>_retraining``."""
    return {"": damage_no_retraining_figure(r), "_retraining": damage_retraining_figure(r)}


# -- layer-parallel --------------------------------------------------------------------------------

def parallel_md(r: dict) -> str:
    s, m, mi = r["settings"], r["measured"], r["model_inputs"]
    k, steps = r["processes"], r["steps"]
    widths = "x".join([str(len(s["widths"])), str(s["widths"][0])])
    lines = [_header(r, f"{widths} MLP on {s['dataset']} ({s['train_limit'] or 'all'} training images), "
                        f"{s['epochs']} epoch of {steps} steps, {r['backend']} between processes on a machine with "
                        f"{r['cores']} cores; the fastest of {s['repeats']} alternated repeats"),
             "| training | processes | epoch (s) | speed-up over one process | sent per process per epoch | per step |",
             "|---|---:|---:|---:|---:|---:|"]
    pipe_sent = max(t["sent_bytes"] for t in m["mf_pipeline_stages"])
    ring = m["bp_ring_sent_bytes_per_epoch_per_process"]
    lines += [f"| MF, one process (`update`) | 1 | {_f(m['mf_one_process_epoch_s'])} | 1 | - | - |",
              f"| MF, pipelined stages | {k} | {_f(m['mf_pipeline_epoch_s'])} | {_f(m['mf_speedup'])} | "
              f"{_size(pipe_sent)} (activations) | {_size(pipe_sent / steps)} |",
              f"| BP, one process | 1 | {_f(m['bp_one_process_epoch_s'])} | 1 | - | - |",
              f"| BP, DistributedDataParallel | {k} | {_f(m['bp_ddp_epoch_s'])} | {_f(m['bp_speedup'])} | "
              f"{_size(ring)} (ring all-reduce of {_size(m['bp_allreduce_payload_bytes_per_epoch_per_process'])} "
              f"of gradients) | {_size(ring / steps)} |"]
    for alg, arm in (("mf", "mf_pipeline_epoch_s"), ("bp", "bp_ddp_epoch_s")):
        threaded = m.get(f"{alg}_one_process_{k}_threads_epoch_s")
        lines.append(f"| {ALG[alg]}, one process with {k} threads | 1 | " + (
            "not measured in this record (it predates this arm) | | | |" if threaded is None else
            f"{_f(threaded)} | {_f(m[f'{alg}_one_process_epoch_s'] / threaded)} (the {k}-process arm: "
            f"{_f(threaded / m[arm])}x this) | - | - |"))
    lines.append("")
    eq = r["pipeline_equals_one_process"]
    stages = "; ".join(f"stage {t['rank']} blocks {t['blocks'][0] + 1}-{t['blocks'][1]}: computing (and sending) "
                       f"{t['compute_s']:.2f} s, waiting for input {t['wait_s']:.2f} s"
                       for t in m["mf_pipeline_stages"])
    lines.append(f"The pipelined MF weights after the epoch equal one-process MF's bit for bit: "
                 f"{_yes(eq['bitwise_equal'])} (largest difference {eq['max_abs_diff']:.3g}). Stages: {stages}.\n")
    lines += ["### Model of the speed-up for k processes\n",
              "From one-process measurements: each block's step time (" +
              ", ".join(f"{t * 1e3:.2f}" for t in mi["block_step_s"]) + " ms), the one-way time of one activation "
              f"message ({mi['transfer_one_way_s'] * 1e3:.3f} ms for {_size(mi['activation_bytes_per_message'])}), "
              "BP's step "
              "time on a 64/k share (" + ", ".join(f"batch {b}: {t * 1e3:.2f} ms" for b, t in mi["bp_step_s"].items()) +
              f"), and the 2-process all-reduce of every gradient ({_size(mi['grad_bytes'])}: "
              f"{mi['allreduce_2_processes_s'] * 1e3:.2f} ms). MF: the slowest stage (its blocks plus one message per "
              "boundary) sets the pace, plus k-1 steps to fill the pipeline. BP: the share's step plus a ring "
              "all-reduce, 2(k-1)/k of the gradients, at the measured bandwidth (no overlap with backward).\n",
              "| k | MF model | MF measured | BP model | BP measured |", "|---:|---:|---:|---:|---:|"]
    for kk in sorted({int(x) for x in r["model"]["mf"]} | {int(x) for x in r["model"]["bp"]}):
        meas_mf = _f(m["mf_speedup"]) if kk == k else ("1" if kk == 1 else "")
        meas_bp = _f(m["bp_speedup"]) if kk == k else ("1" if kk == 1 else "")
        model_mf, model_bp = r["model"]["mf"].get(str(kk)), r["model"]["bp"].get(str(kk))
        lines.append(f"| {kk} | {_f(model_mf)} | {meas_mf} | {_f(model_bp)} | {meas_bp} |")
    lines.append(f"\nMeasured with {k} processes on {r['cores']} cores, one thread each, while other work kept the "
                 f"machine's 1-minute load average at {_f(r.get('load_average_before'), 1)} (before) and "
                 f"{_f(r.get('load_average_after'), 1)} (after); the model's k > {r['cores']} assumes one free core "
                 "(or GPU) per process.\n")
    return "\n".join(lines)


def parallel_figure(r: dict):
    fig, ax = plt.subplots(figsize=(5.5, 4))
    for alg, color in (("mf", "tab:red"), ("bp", "tab:blue")):
        model = {int(k): v for k, v in r["model"][alg].items()}
        ks = sorted(model)
        ax.plot(ks, [model[k] for k in ks], "-", color=color, label=f"{ALG[alg]} model")
        ax.plot([r["processes"]], [r["measured"][f"{alg}_speedup"]], "o", color=color, ms=8,
                label=f"{ALG[alg]} measured ({r['processes']} processes)")
    top = max(int(k) for k in r["model"]["mf"])
    ax.plot([1, top], [1, top], ":", color="grey", label="ideal")
    ax.set_xlabel("processes (MF: pipeline stages; BP: DDP workers)")
    ax.set_ylabel("speed-up of an epoch over one process")
    ax.set_xticks(range(1, top + 1))
    ax.legend(fontsize=7)
    s = r["settings"]
    ax.set_title(f"Layer-parallel MF vs data-parallel BP, {len(s['widths'])}x{s['widths'][0]}, {s['dataset']}\n"
                 f"{r['profile']} profile, {r['device']}, {r['cores']} cores", fontsize=9)
    fig.tight_layout()
    return fig


# experiment -> (markdown of one result, its figure): a Figure, saved as claims_<experiment>_<profile>, or a dict
# {suffix: Figure}, each saved as claims_<experiment>_<profile><suffix>
RENDER = {"hotplug": (hotplug_md, hotplug_figure), "damage": (damage_md, damage_figures),
          "parallel": (parallel_md, parallel_figure)}
TITLES = {"hotplug": "Hot-plugging layers", "damage": "A damaged layer", "parallel": "Layer-parallel training"}


def write_all(results: Path, out: Path | None = None, profile: str | None = None,
              experiments=EXPERIMENTS) -> list[str]:
    """Every table and figure whose result files exist; returns the paths written and notes."""
    results, out = Path(results), Path(out or results)
    notes = []
    for exp in experiments:
        order = sorted(PROFILES, key=lambda p: (p != "paper", p != "quick", p))  # paper first, then quick
        found = [r for p in (order if profile is None else [profile])
                 if p in PROFILES and (r := read_result(results, exp, p)) is not None]
        if not found:
            notes.append(f"claims_{exp}: no results/claims/{exp}_*.json (make reproduce-claims)")
            continue
        to_md, to_fig = RENDER[exp]
        md = (f"# {TITLES[exp]} (Mono-Forward paper, Section 3.3)\n\nWritten from "
              + ", ".join(f"`claims/{exp}_{r['profile']}.json`" for r in found)
              + " by `bpfree claims --from-results`.\n\n"
              + "\n".join(to_md(r) for r in found))
        path = out / "tables" / f"claims_{exp}.md"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(md)
        notes.append(str(path))
        for r in found:
            figs = to_fig(r)
            for suffix, fig in (figs.items() if isinstance(figs, dict) else [("", figs)]):
                notes += [str(p) for p in save(fig, out / "figures", f"claims_{exp}_{r['profile']}{suffix}")]
    return notes
