"""Train several algorithms on one dataset with one seed and print their test accuracies side by side.

The default is the README's first command: BP, FA, DFA, FF and MF on scikit-learn's bundled 8x8
digits (real data, no download) with a 2x1000 MLP, in about a minute on 2 CPU cores. Every run is a
normal run folder (under results/demo/ by default), reused when run again unless --force.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from algorithms import ALGORITHMS
from algorithms import ConfigError
from algorithms.registry import UnknownNameError
from benchmarks.run.config import ExperimentConfig
from benchmarks.datasets import DatasetUnavailable
from benchmarks.run.runner import RunDiverged, run_experiment

DEFAULT_ALGORITHMS = ("bp", "fa", "dfa", "ff", "mf")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.error = lambda message: p.exit(2, f"error: {message} (see --help)\n")  # one line, as every bad input
    p.add_argument("--algorithms", default=",".join(DEFAULT_ALGORITHMS), help="comma-separated")
    p.add_argument("--dataset", default="digits")
    p.add_argument("--widths", default="1000,1000", help="hidden widths of the MLP")
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--train-limit", type=int)
    p.add_argument("--results-dir", default="results/demo")
    p.add_argument("--force", action="store_true", help="train again even where a finished run exists")
    return p


def format_table(rows: list[dict]) -> str:
    """Markdown table: algorithm, test accuracy of the default mode, the other modes, time, epoch."""
    lines = ["| algorithm | test acc (%) | other prediction modes | selected epoch | train time (s) |",
             "|---|---:|---|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['algorithm']} | {r['acc']} | {r['others']} | {r['epoch']} | {r['time']} |")
    return "\n".join(lines)


def summarise(algorithm: str, summary: dict) -> dict:
    if summary.get("status") != "completed":
        return {"algorithm": algorithm, "acc": summary.get("status", "?"), "others": "", "epoch": "", "time": ""}
    mode, sel = summary["default_mode"], summary["selected"]
    others = ", ".join(f"{m} {sel[f'test_acc_{m}']:.2f}" for m in summary["prediction_modes"] if m != mode)
    return {"algorithm": f"{algorithm} ({mode})", "acc": f"{summary['test_acc']:.2f}", "others": others,
            "epoch": summary["selected_epoch"], "time": f"{summary['measurements'].get('train_time_s', 0):.1f}"}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    rows = []
    try:
        names = [a for a in args.algorithms.split(",") if a]
        for name in names:
            ALGORITHMS.get(name)  # fail on a typo before training anything
        try:
            widths = [int(w) for w in args.widths.split(",")]
        except ValueError:
            raise ConfigError(f"--widths takes comma-separated integers, e.g. 1000,1000, got {args.widths!r}") from None
        for name in names:
            cfg = ExperimentConfig(algorithm=name, dataset=args.dataset, arch_args={"widths": widths},
                                   epochs=args.epochs, batch_size=args.batch_size, seed=args.seed,
                                   train_limit=args.train_limit, results_dir=args.results_dir, quiet=True)
            try:
                result = run_experiment(cfg, force=args.force)
                summary = result.summary
            except RunDiverged:
                summary = {"status": "diverged"}
            rows.append(summarise(name, summary))
            print(f"{name}: test accuracy {rows[-1]['acc']}", flush=True)
    except (ConfigError, UnknownNameError, DatasetUnavailable, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"\n{args.dataset}, MLP {args.widths}, {args.epochs} epochs, batch {args.batch_size}, seed {args.seed}; "
          f"test accuracy at the epoch of best validation accuracy; run folders in {args.results_dir}/\n")
    print(format_table(rows))
    return 0
