"""Tables 4 and 5 of the Mono-Forward paper (the cost tables) from measurement files and run folders.

* Table 4, prediction latency: ``results/latency/table4_<device>.json`` (written by
  ``bpfree latency``), one table per device, with the test accuracy of each mode
  taken from the training runs of the same network (MNIST 2x1000 MLP; Table 3's runs when present).
* Table 5, epoch time of BP and MF with mini-batches and full batch: the runs tagged ``table5``.

Pure functions: rows in, rows and markdown out; the published numbers sit beside ours.
"""

from __future__ import annotations

import csv
import json
import statistics
from collections import defaultdict
from pathlib import Path
from typing import Any, Iterable

from benchmarks.run.environment import machine_of
from benchmarks.tables.figures import most_complete, runs_with_tag, width_label
from benchmarks.reference import PAPER_DATASET, load_reference


def _mean_std(values: list[float]) -> tuple[float | None, float | None, int]:
    if not values:
        return None, None, 0
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0), len(values)


def _fmt(mean, std=None, digits=2) -> str:
    if mean is None:
        return "—"
    return f"{mean:.{digits}f}" + (f" ± {std:.{digits}f}" if std else "")


def _widths(widths: list[int]) -> str:
    return f"{len(widths)}x{widths[0]}" if len(set(widths)) == 1 else "-".join(map(str, widths))


def _count(value) -> str:
    return "—" if value is None else f"{int(value):,}"


# -- Table 5 -------------------------------------------------------------------------------------

def batch_label(run: dict) -> str:
    n_train = run.get("measurement", {}).get("data", {}).get("train")
    bs = run["config"]["batch_size"]
    return "full batch" if n_train is not None and bs >= n_train else f"mini-batch {bs}"


def table5_rows(runs: Iterable[dict]) -> tuple[list[dict[str, Any]], str]:
    """Mean epoch times of BP and MF, one table per machine: seeds timed on different machines are
    never averaged together (a finished run is reused, so a later seed may come from another one)."""
    chosen, profile = most_complete(runs_with_tag(runs, "table5"))
    times: dict[tuple, list[float]] = defaultdict(list)
    for r in chosen:
        t = r["summary"].get("measurements", {}).get("epoch_time_mean_s")
        if t is not None:
            times[(machine_of(r), r["config"]["dataset"], batch_label(r), r["config"]["algorithm"])].append(t)
    nets = sorted({width_label(r) + " " + r["config"]["arch"] for r in chosen})
    # the paper's Table 5 is the 2x1000 MLP; other networks are not compared with it
    ref = {} if nets != ["2x1000 mlp"] else {
        (row["dataset"], row["algorithm"], row["metric"]): float(row["mean"]) for row in load_reference("5")}
    rows = []
    for device, dataset, label in sorted({key[:3] for key in times}):
        bp = _mean_std(times.get((device, dataset, label, "bp"), []))
        mf = _mean_std(times.get((device, dataset, label, "mf"), []))
        paper_label = "mini-batch 64" if label.startswith("mini-batch") else label
        pd = PAPER_DATASET.get(dataset, dataset)
        rows.append({"device": device, "dataset": dataset, "batch": label,
                     "bp_s": bp[0], "bp_std": bp[1], "bp_n": bp[2], "mf_s": mf[0], "mf_std": mf[1], "mf_n": mf[2],
                     "ratio_bp_over_mf": bp[0] / mf[0] if bp[0] and mf[0] else None,
                     "paper_bp_s": ref.get((pd, "BP", f"epoch_time {paper_label}")),
                     "paper_mf_s": ref.get((pd, "MF", f"epoch_time {paper_label}")),
                     "paper_ratio": ref.get((pd, "MF", f"speed_ratio_bp_over_mf {paper_label}")),
                     "scale": profile})
    head = ("| dataset | batch | BP epoch (s) | MF epoch (s) | BP/MF | paper BP | paper MF | paper BP/MF |\n"
            "|---|---|---|---|---|---|---|---|\n")
    blocks = []
    for device in sorted({r["device"] for r in rows}):
        mine = [r for r in rows if r["device"] == device]
        n = max([r["bp_n"] for r in mine] + [r["mf_n"] for r in mine])
        blocks.append(
            f"**Table 5: mean epoch time of BP and MF, {', '.join(nets)}, on {device}** ({profile}; mean ± std "
            f"over up to {n} seed{'s' if n != 1 else ''} of each run's mean epoch time without epoch 1; paper: RTX 4080 laptop GPU)\n\n"
            + head + "".join(
                f"| {r['dataset']} | {r['batch']} | {_fmt(r['bp_s'], r['bp_std'], 3)} | {_fmt(r['mf_s'], r['mf_std'], 3)} | "
                f"{_fmt(r['ratio_bp_over_mf'])} | {_fmt(r['paper_bp_s'])} | {_fmt(r['paper_mf_s'])} | "
                f"{_fmt(r['paper_ratio'])} |\n" for r in mine))
    md = "\n".join(blocks) if blocks else (
        "**Table 5: mean epoch time of BP and MF**\n\nNo table5 runs in the results folder: run "
        "`make reproduce-table5`.\n")
    return rows, md


# -- Table 4 -------------------------------------------------------------------------------------

def accuracy_by_mode(runs: Iterable[dict], dataset: str, widths: list[int]) -> tuple[dict, str]:
    """Test accuracy per (algorithm, mode) of completed runs of this network, mean/std/n over seeds."""
    same = [r for r in runs if r["summary"].get("status") == "completed" and r["config"].get("dataset") == dataset
            and r["config"].get("arch") == "mlp" and list(r["config"].get("arch_args", {}).get("widths", [])) == widths]
    tagged = [r for r in same if r["config"].get("tag") == "table3"]
    by_algorithm: dict[str, list[dict]] = defaultdict(list)
    for r in tagged or same:
        by_algorithm[r["config"]["algorithm"]].append(r)
    chosen, described = [], defaultdict(list)  # each algorithm's most complete runs (e.g. paper where it ran)
    for algorithm, candidates in by_algorithm.items():
        runs_of, words = most_complete(candidates)
        chosen += runs_of
        described[words].append(algorithm)
    profile = "; ".join(f"{words} ({', '.join(algs)})" if len(described) > 1 else words
                        for words, algs in described.items())
    acc: dict[tuple, list[float]] = defaultdict(list)
    for r in chosen:
        selected = r["summary"].get("selected", {})
        for mode in r["summary"].get("prediction_modes", []):
            value = selected.get(f"test_acc_{mode}")
            if value is not None:
                acc[(r["config"]["algorithm"], mode)].append(value)
    where = ("Table 3 runs, " if tagged else "runs of this network, ") + profile if chosen else "no training runs"
    return {k: _mean_std(v) for k, v in acc.items()}, where


def _how_timed(stats: dict) -> str:
    """How a latency figure was timed: a median of repeated calls (older records) or of
    torch.utils.benchmark's blocks."""
    if "blocks" in stats:
        return f"median of {stats['blocks']} torch.utils.benchmark blocks, {stats['calls']} calls"
    return f"median of {stats.get('repeats', '?')} calls"


def table4_rows(latency_records: list[dict], runs: list[dict]) -> tuple[list[dict[str, Any]], str]:
    paper: dict[tuple, float] = {(row["algorithm"], row["metric"]): float(row["mean"]) for row in load_reference("4")}
    all_rows, parts = [], []
    for rec in latency_records:
        # the paper's Table 4 is the 2x1000 MLP on MNIST; other networks are not compared with it
        ref = paper if (rec["dataset"], list(rec["widths"])) == ("mnist", [1000, 1000]) else {}
        acc, where = accuracy_by_mode(runs, rec["dataset"], rec["widths"])
        env = rec["environment"]
        device = env.get("gpu_model") or f"{env.get('cpu_model')} ({env.get('cpu_threads')} threads)"
        lines = []
        for r in rec["rows"]:
            a = acc.get((r["algorithm"], r["mode"]), (None, None, 0))
            row = {"device": device, "row": r["row"], "parameters": r["parameters"],
                   "single_ms": r["single"]["median_ms"], "batch_ms": r["batch"]["median_ms"],
                   "batch_size": r["batch_size"], "test_acc": a[0], "test_acc_std": a[1], "test_acc_n": a[2],
                   "paper_single_ms": ref.get((r["row"], "predict_time_single_image")),
                   "paper_batch_ms": ref.get((r["row"], "predict_time_batch_10000")),
                   "paper_acc": ref.get((r["row"], "test_accuracy")),
                   "paper_parameters": ref.get((r["row"], "parameters"))}
            all_rows.append(row)
            lines.append(f"| {row['row']} | {_fmt(row['single_ms'], None, 3)} | {_fmt(row['batch_ms'], None, 1)} | "
                         f"{_fmt(row['test_acc'], row['test_acc_std'])} | {row['parameters']:,} | "
                         f"{_fmt(row['paper_single_ms'], None, 1)} | {_fmt(row['paper_batch_ms'], None, 1)} | "
                         f"{_fmt(row['paper_acc'])} | {_count(row['paper_parameters'])} |\n")
        reps = rec["rows"][0] if rec["rows"] else {}
        parts.append(
            f"**Table 4: prediction time, {rec['dataset']} {_widths(rec['widths'])} MLP, on {device}** "
            f"({_how_timed(reps.get('single', {}))} for one image and {_how_timed(reps.get('batch', {}))} for a "
            f"batch of {reps.get('batch_size', '?')}, warm-up excluded; "
            f"profile {rec['profile']}, measured {rec['measured_at']}; accuracy from {where}; "
            "paper: RTX 4090, mean of 100 runs, parameters in thousands)\n\n"
            "| prediction | 1 image (ms) | batch (ms) | test acc (%) | parameters | paper 1 image | paper batch | "
            "paper acc | paper parameters |\n|---|---|---|---|---|---|---|---|---|\n" + "".join(lines))
    md = "\n".join(parts) if parts else ("**Table 4**: no latency measurement in the results folder: "
                                         "run `make reproduce-table4`.\n")
    return all_rows, md


def load_latency_records(latency_dir: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(Path(latency_dir).glob("table4_*.json"))]


def write_table(rows: list[dict], markdown: str, out_dir: Path, name: str) -> list[Path]:
    """``name.md`` and ``name.csv`` in ``out_dir``."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    md, csv_path = out_dir / f"{name}.md", out_dir / f"{name}.csv"
    md.write_text(markdown)
    with open(csv_path, "w", newline="") as f:
        if rows:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
    return [md, csv_path]
