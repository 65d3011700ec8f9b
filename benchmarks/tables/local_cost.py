"""The local-learning cost table (issue 14): peak training memory and epoch time of SFF and FG against
BP and MF on the same networks, from run folders alone (``results/tables/local_cost.{md,csv}``).

* Memory: the runs tagged ``local_cost`` (``benchmarks/specs/local_cost.yaml``, ``memory`` meter), the
  most complete profile present: the peak of parameters, gradients, optimiser state and autograd's
  saved tensors (the CUDA allocator's peak on a GPU), and the process's resident-set peak in epoch 1
  above what it held when training began.
* Epoch time: the runs of the sff and fg accuracy tables (``time`` meter alone, since memory hooks slow
  the steps they time) with exactly the same settings (dataset, network, algorithm, every
  hyperparameter, batch), each run's mean epoch time without epoch 1, averaged over the runs found.

Each figure also appears as a ratio to BP's on the same network and dataset. Pure functions: runs in,
rows and markdown out.
"""

from __future__ import annotations

import json
import statistics
from typing import Any, Iterable

from benchmarks.run.environment import machine_of
from benchmarks.tables.figures import MB, most_complete, peak_memory_mb

TIME_TAGS = ("sff", "fg")  # the specs whose runs time epochs (time meter alone) on these networks
COLUMNS = ("network", "dataset", "algorithm", "batch", "epoch_s", "epoch_n", "epoch_vs_bp", "epoch_runs", "peak_mb",
           "peak_vs_bp", "rss_mb", "rss_vs_bp", "memory_method", "memory_runs")


def algorithm_label(cfg: dict[str, Any]) -> str:
    """BP, MF, SFF (every conv layer alone), SFF hybrid (every residual block), FG-A or FG-W."""
    alg, hp = cfg["algorithm"], cfg.get("hparams", {})
    if alg == "sff":
        return "SFF hybrid" if hp.get("granularity") == "block" else "SFF"
    if alg == "fg":
        return "FG-W" if hp.get("perturb") == "weights" else "FG-A"
    return alg.upper()


def network_label(cfg: dict[str, Any]) -> str:
    """e.g. "cnn 64-128-256-512", "resnet-18, width 8", "mobilenetv3-small, width 0.25", "mlp 2x1000"."""
    arch, args = cfg["arch"], cfg.get("arch_args", {})
    if arch == "resnet":
        return f"resnet-{args.get('depth')}" + (f", width {args['width']}" if args.get("width") else "")
    if arch == "mobilenetv3":
        return f"mobilenetv3-small, width {args.get('width', 1.0)}"
    if arch == "mlp":
        widths = args.get("widths", [])
        return f"mlp {len(widths)}x{widths[0]}" if len(set(widths)) == 1 else "mlp " + "-".join(map(str, widths))
    if arch == "cnn":
        return "cnn " + "-".join(map(str, args.get("channels", [])))
    return arch  # e.g. localmixer: its own defaults


def first_epoch_rss_mb(run: dict) -> float | None:
    """The resident-set peak of epoch 1's steps above the process's RSS when training began. Epoch 1
    only: evaluation comes after it, and the heap it grows stays in the RSS of every later step."""
    baseline = run["summary"].get("measurements", {}).get("cpu_memory", {}).get("baseline_rss_bytes")
    first = (run.get("epochs") or [{}])[0].get("cpu_rss_peak_bytes")
    return (first - baseline) / MB if first is not None and baseline is not None else None


def _settings(cfg: dict[str, Any]) -> str:
    """What must be equal for an epoch time to stand beside a memory run: everything but the scale."""
    return json.dumps([cfg["dataset"], cfg["arch"], cfg.get("arch_args", {}), cfg["algorithm"],
                       cfg.get("hparams", {}), cfg.get("batch_size")], sort_keys=True)


def _network(cfg: dict[str, Any]) -> str:
    return json.dumps([cfg["dataset"], cfg["arch"], cfg.get("arch_args", {})], sort_keys=True)


def _ratio(value: float | None, bp: float | None) -> float | None:
    return value / bp if value is not None and bp else None


def local_cost_rows(memory_runs: list[dict], described: str, timed_runs: Iterable[dict]
                    ) -> tuple[list[dict[str, Any]], str]:
    """One row per memory run (network x dataset x algorithm), and the markdown table.

    ``memory_runs``: the local_cost runs to show (``described``: which profile they are);
    ``timed_runs``: runs whose epoch times may stand beside them (the sff and fg tables' runs)."""
    timed: dict[str, list[dict]] = {}
    for r in timed_runs:
        t = r["summary"].get("measurements", {}).get("epoch_time_mean_s")
        if t is not None and "memory" not in "".join(r["config"].get("measure", [])):
            timed.setdefault(_settings(r["config"]), []).append(r)
    rows, bp = [], {}
    for r in memory_runs:
        cfg = r["config"]
        peak, method = peak_memory_mb(r)
        rss = first_epoch_rss_mb(r)
        same, scale = most_complete(timed.get(_settings(cfg), []))  # the most complete profile's runs
        times = [t["summary"]["measurements"]["epoch_time_mean_s"] for t in same]
        row = {"network": network_label(cfg), "dataset": cfg["dataset"], "algorithm": algorithm_label(cfg),
               "batch": cfg.get("batch_size"), "epoch_s": statistics.fmean(times) if times else None,
               "epoch_n": len(times), "epoch_runs": scale if times else "", "peak_mb": peak, "rss_mb": rss,
               "memory_method": method, "memory_runs": described, "_net": _network(cfg)}
        rows.append(row)
        if cfg["algorithm"] == "bp":
            bp[row["_net"]] = row
    order = ("BP", "MF", "SFF", "SFF hybrid", "FG-A", "FG-W")
    rows.sort(key=lambda r: (r["dataset"], r["network"], order.index(r["algorithm"]) if r["algorithm"] in order else 99))
    for row in rows:
        base = bp.get(row.pop("_net"), {})
        for key, ratio in (("epoch_s", "epoch_vs_bp"), ("peak_mb", "peak_vs_bp"), ("rss_mb", "rss_vs_bp")):
            row[ratio] = _ratio(row[key], base.get(key))
    return [{k: row[k] for k in COLUMNS} for row in rows], to_markdown(rows, described, memory_runs)


def _num(value: float | None, digits: int = 1) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


def to_markdown(rows: list[dict[str, Any]], described: str, memory_runs: list[dict]) -> str:
    devices = ", ".join(sorted({machine_of(r) for r in memory_runs})) or "—"
    methods = "; ".join(sorted({r["memory_method"] for r in rows})) or "—"
    scales = sorted({r["epoch_runs"] for r in rows if r["epoch_runs"]})
    head = ("| network | dataset | algorithm | batch | epoch (s) | epoch ×BP | peak memory (MB) | memory ×BP | "
            "RSS peak above start, epoch 1 (MB) | RSS ×BP |\n|---|---|---|--:|--:|--:|--:|--:|--:|--:|\n")
    body = "".join(
        f"| {r['network']} | {r['dataset']} | {r['algorithm']} | {r['batch']} | {_num(r['epoch_s'], 2)} | "
        f"{_num(r['epoch_vs_bp'], 2)} | {_num(r['peak_mb'])} | {_num(r['peak_vs_bp'], 2)} | {_num(r['rss_mb'])} | "
        f"{_num(r['rss_vs_bp'], 2)} |\n" for r in rows)
    md = ("**Local learning's cost: peak training memory and epoch time of SFF and FG against BP and MF**\n\n"
          f"Memory runs: {described} ({devices}); peak memory: {methods}. Epoch time: the sff and fg tables' "
          f"runs with the same settings (time meter alone; {', '.join(scales) or 'none yet'}), mean epoch without "
          "epoch 1; — where none ran.\n\n"
          + head + body + "\n"
          "Forward gradient computes its estimate in forward mode (torch.func.jvp): its tangents are not "
          "tensors saved for a backward pass, so the saved-tensor peak leaves them out; the RSS column "
          "includes them, and also the allocator's caches and one-time workspaces, so it is the rougher "
          "figure. Only a step's memory is measured here: it depends on the network and the batch, not on "
          "the number of steps.\n")
    if not rows:
        md += "\nNo local_cost runs in the results folder: run `make reproduce-local-cost`.\n"
    return md
