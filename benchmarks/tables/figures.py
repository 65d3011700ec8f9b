"""Figures 1 to 5 of the Mono-Forward paper as pure functions of loaded run folders.

Each ``*_data`` function turns runs (``benchmarks.run.folders.load_run`` dicts, plus the memory timeline
files they point to) into plain numbers; each ``*_figure`` function turns those numbers into a
matplotlib ``Figure``; ``save`` writes it as PNG and PDF. Nothing here trains or measures, so
``make plots`` can redraw every figure from ``results/`` on any machine.

Runs are picked by the spec name in their ``tag``. When several profiles of one spec are present
(e.g. ``quick`` runs on a subset and ``paper`` runs on everything), a figure uses the most complete
set (``most_complete``): the whole training set before any subset, then more epochs; the figure
says which it used and how many seeds.
"""

from __future__ import annotations

import statistics
from collections import defaultdict
from pathlib import Path
from typing import Any, Iterable

import matplotlib

matplotlib.use("Agg")  # files only; no display needed
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from benchmarks.common.files import read_jsonl  # noqa: E402

MB = 1e6  # figures use decimal megabytes (10^6 bytes)
ALGO_LABEL = {"bp": "BP", "mf": "MF", "fa": "FA", "dfa": "DFA", "ff": "FF"}
COLORS = {"bp": "tab:blue", "mf": "tab:red", "fa": "tab:green", "dfa": "tab:purple", "ff": "tab:orange"}


# -- picking runs --------------------------------------------------------------------------------

def runs_with_tag(runs: Iterable[dict], tag: str) -> list[dict]:
    """Completed runs whose config carries ``tag`` (the spec name)."""
    return [r for r in runs if r["config"].get("tag") == tag and r["summary"].get("status") == "completed"]


def _completeness(run: dict) -> tuple:
    limit = run["config"].get("train_limit")
    return (limit is None, limit or 0, run["config"].get("epochs", 0))


def most_complete(runs: list[dict]) -> tuple[list[dict], str]:
    """The runs of the most complete profile present, and a few words saying what it was."""
    if not runs:
        return [], "no runs"
    best = max(_completeness(r) for r in runs)
    chosen = [r for r in runs if _completeness(r) == best]
    full, limit, epochs = best
    data = "full training set" if full else f"training subset of {limit}"
    return chosen, f"{data}, {epochs} epoch{'s' if epochs != 1 else ''}"


def width_label(run: dict) -> str:
    """e.g. "15x1000" for an MLP of fifteen 1000-unit layers, "64-128" for mixed widths."""
    widths = run["config"].get("arch_args", {}).get("widths") or run["config"].get("arch_args", {}).get("channels", [])
    if widths and len(set(widths)) == 1:
        return f"{len(widths)}x{widths[0]}"
    return "-".join(map(str, widths))


def depth(run: dict) -> int:
    return len(run["config"].get("arch_args", {}).get("widths", ())) or len(
        run["config"].get("arch_args", {}).get("channels", ()))


# -- Figures 1 and 2: memory over training time --------------------------------------------------

def memory_timeline_data(run: dict) -> dict[str, Any]:
    """Per-step memory of one run: CUDA allocator figures where recorded, else the CPU meter's."""
    run_dir = Path(run["run_dir"])
    cuda = read_jsonl(run_dir / "memory_cuda.jsonl")
    cpu = read_jsonl(run_dir / "memory_cpu.jsonl")
    out: dict[str, Any] = {"algorithm": run["config"]["algorithm"], "device": run["config"].get("device")}
    if cuda:
        out["source"] = "CUDA allocator (torch.cuda.memory_allocated; peak per step)"
        out["t"] = [r["t_s"] for r in cuda]
        out["step_peak_mb"] = [r["step_peak_allocated_bytes"] / MB for r in cuda]
        out["after_step_mb"] = [r["allocated_bytes"] / MB for r in cuda]
        out["phase"] = [r["phase"] for r in cuda]
    elif cpu:
        out["source"] = "CPU: parameters, gradients, optimiser state + autograd saved tensors (saved-tensor hooks)"
        out["t"] = [r["t_s"] for r in cpu]
        out["step_peak_mb"] = [r["peak_bytes"] / MB for r in cpu]
        out["after_step_mb"] = [r["state_bytes"] / MB for r in cpu]
        out["phase"] = [r["phase"] for r in cpu]
        base_rss = run["summary"].get("measurements", {}).get("cpu_memory", {}).get("baseline_rss_bytes")
        if base_rss is not None and all(r.get("rss_bytes") is not None for r in cpu):
            out["rss_above_start_mb"] = [(r["rss_bytes"] - base_rss) / MB for r in cpu]
        # event-by-event trace of the first steps of each epoch: the state held during step s (that after
        # step s-1, or the parameters alone where that row was not kept) plus the live saved tensors
        after = {r["step"]: r["state_bytes"] for r in cpu}
        params = {r["step"]: r["param_bytes"] for r in cpu}
        trace = read_jsonl(run_dir / "memory_cpu_trace.jsonl")
        out["trace_t"] = [e["t_s"] for e in trace]
        out["trace_mb"] = [(after.get(e["step"] - 1, params.get(e["step"], 0)) + e["saved_live_bytes"]) / MB
                           for e in trace]
    else:
        out["source"] = "no memory timeline in this run"
        out["t"] = []
    return out


def memory_timeline_figure(series: dict[str, Any], title: str, ylim: float | None = None):
    fig, ax = plt.subplots(figsize=(7, 4))
    alg = series["algorithm"]
    color = COLORS.get(alg, "black")
    if series.get("trace_t"):
        ax.plot(series["trace_t"], series["trace_mb"], ".", ms=2, color=color, alpha=0.5,
                label="within traced steps (state + live saved tensors)")
    if series["t"]:
        ax.plot(series["t"], series["step_peak_mb"], "-o", ms=3, color=color, label="peak in each step")
        ax.plot(series["t"], series["after_step_mb"], "--", color="grey", label="after each step")
    if series.get("rss_above_start_mb"):  # RSS includes allocator slack and libraries: its own axis
        ax2 = ax.twinx()
        ax2.plot(series["t"], series["rss_above_start_mb"], ":", color="black")
        ax2.set_ylabel("process RSS after each step, above run start (MB, dotted)", fontsize=8)
    ax.set_xlabel("training time (s)")
    ax.set_ylabel("memory (MB)")
    if ylim:
        ax.set_ylim(0, ylim)
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=7, loc="upper right")
    fig.text(0.01, 0.01, f"memory: {series['source']}", fontsize=6, color="grey")
    fig.tight_layout(rect=(0, 0.03, 1, 1))
    return fig


# -- Figure 3: peak memory against depth ---------------------------------------------------------

def peak_memory_mb(run: dict) -> tuple[float | None, str]:
    """Peak training memory of a run in MB and how it was measured."""
    m = run["summary"].get("measurements", {})
    if "cuda_memory" in m:
        return m["cuda_memory"]["peak"]["step_peak_allocated_bytes"] / MB, "CUDA max_memory_allocated"
    if "cpu_memory" in m:
        return m["cpu_memory"]["peak"]["peak_bytes"] / MB, "parameters + gradients + optimiser state + autograd saved tensors"
    return None, "not measured"


def fit_slope(xs: list[float], ys: list[float]) -> tuple[float, float] | None:
    """Least-squares line ``y = slope * x + intercept``; None with fewer than two depths."""
    if len(set(xs)) < 2:
        return None
    slope, intercept = np.polyfit(np.asarray(xs, float), np.asarray(ys, float), 1)
    # rounded to 1 byte (MB to 6 decimals): the fit's last bits differ between CPUs' LAPACK kernels, and
    # the committed tables must regenerate byte for byte on every machine
    return round(float(slope), 6), round(float(intercept), 6)


def depth_data(runs: list[dict], arch: str = "mlp") -> dict[str, Any]:
    """Per algorithm: (depth, mean peak MB over seeds) points and the fitted slope per layer."""
    points: dict[str, dict[int, list[float]]] = defaultdict(lambda: defaultdict(list))
    methods = set()
    for r in runs:
        if r["config"].get("arch") != arch:
            continue
        mb, method = peak_memory_mb(r)
        if mb is None:
            continue
        methods.add(method)
        points[r["config"]["algorithm"]][depth(r)].append(mb)
    out: dict[str, Any] = {"arch": arch, "method": "; ".join(sorted(methods)) or "not measured", "algorithms": {}}
    for alg, by_depth in sorted(points.items()):
        ds = sorted(by_depth)
        ys = [statistics.fmean(by_depth[d]) for d in ds]
        fit = fit_slope(ds, ys)
        out["algorithms"][alg] = {"depths": ds, "peak_mb": ys, "slope_mb_per_layer": fit[0] if fit else None,
                                  "intercept_mb": fit[1] if fit else None}
    return out


def depth_figure(data: dict[str, Any], reference: dict[str, float], title: str):
    fig, ax = plt.subplots(figsize=(6, 4))
    for alg, d in data["algorithms"].items():
        label = ALGO_LABEL.get(alg, alg)
        slope = d["slope_mb_per_layer"]
        ref = reference.get(alg)
        text = f"{label}: {slope:.1f} MB/layer" if slope is not None else f"{label}"
        if ref is not None:
            text += f" (paper {ref:g})"
        ax.plot(d["depths"], d["peak_mb"], "o", color=COLORS.get(alg), label=text)
        if slope is not None:
            xs = np.array([min(d["depths"]), max(d["depths"])])
            ax.plot(xs, slope * xs + d["intercept_mb"], "-", color=COLORS.get(alg), alpha=0.6)
    ax.set_xlabel("number of hidden layers")
    ax.set_ylabel("peak training memory (MB)")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8)
    fig.text(0.01, 0.01, f"memory: {data['method']}", fontsize=6, color="grey")
    fig.tight_layout(rect=(0, 0.03, 1, 1))
    return fig


# -- Figures 4 and 5: convergence ----------------------------------------------------------------

def test_error_curve(runs: list[dict]) -> dict[str, Any]:
    """Test error (%) of the default prediction mode per epoch: mean and std over the runs (seeds). A run
    without a test accuracy in every epoch (made with ``test_every_epoch`` false, which scores test only at
    new best validation epochs, or without a test split) has no curve: it is left out (``left_out``)."""
    curves, left_out = [], 0
    for r in runs:
        mode = r["summary"].get("default_mode")
        accs = [e.get(f"test_acc_{mode}") for e in r["epochs"]]
        if not accs or None in accs:
            left_out += 1
            continue
        curves.append([100.0 - a for a in accs])
    length = min((len(c) for c in curves), default=0)  # early-stopped seeds end sooner: common prefix only
    arr = np.array([c[:length] for c in curves], float) if length else np.zeros((0, 0))
    return {"epochs": list(range(1, length + 1)), "mean": arr.mean(0).tolist() if length else [],
            "std": arr.std(0, ddof=1).tolist() if length and len(curves) > 1 else [0.0] * length,
            "n": len(curves), "left_out": left_out}


def convergence_data(runs: list[dict], key) -> dict[tuple, dict[str, Any]]:
    """Runs grouped by ``key(run)`` (e.g. dataset and algorithm), each a test-error curve."""
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for r in runs:
        groups[key(r)].append(r)
    return {k: test_error_curve(v) for k, v in sorted(groups.items())}


def convergence_figure(panels: dict[str, dict[str, dict[str, Any]]], title: str):
    """One panel per entry; in each, one line per label with a band of +-1 std over seeds."""
    n = max(1, len(panels))
    fig, axes = plt.subplots(1, n, figsize=(4.2 * n, 3.6), squeeze=False)
    for ax, (panel, lines) in zip(axes[0], panels.items()):
        for i, (label, c) in enumerate(lines.items()):
            if not c["epochs"]:
                continue
            x, m, s = np.array(c["epochs"]), np.array(c["mean"]), np.array(c["std"])
            color = f"C{i}"
            ax.plot(x, m, "-o", ms=3, color=color, label=f"{label} (n={c['n']})")
            ax.fill_between(x, m - s, m + s, color=color, alpha=0.2)
        ax.set_title(panel, fontsize=10)
        ax.set_xlabel("epoch")
        ax.set_ylabel("test error (%)")
        ax.legend(fontsize=7)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


# -- output --------------------------------------------------------------------------------------

def save(fig, out_dir: Path, name: str) -> list[Path]:
    """Write ``name.png`` and ``name.pdf`` into ``out_dir``; returns the paths."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = [out_dir / f"{name}.png", out_dir / f"{name}.pdf"]
    # no timestamp or version in the files: the same results draw byte-identical figures
    fig.savefig(paths[0], dpi=150, metadata={"Software": None})
    fig.savefig(paths[1], metadata={"CreationDate": None, "ModDate": None, "Producer": None, "Creator": None})
    plt.close(fig)
    return paths
