"""The Mono-Forward paper's Section 3.3 claims: hot-plugging, a damaged layer, layer-parallel training.

    bpfree claims all --profile quick          # the three experiments, then their tables and figures
    bpfree claims hotplug --profile paper      # one of them
    bpfree claims damage --from-run results/claims/runs/mf_mnist_mlp_s0_...   # start from finished runs
    bpfree claims --from-results               # tables and figures from results/claims/*.json alone

Each experiment writes <results>/claims/<experiment>_<profile>.json; the tables go to
<out>/tables/claims_<experiment>.md and the figures to <out>/figures/claims_<experiment>_<profile>.{png,pdf}.
Every process uses one thread (the quick profile is sized for 2 shared CPU cores).
Exit codes: 0 done, 2 bad input or missing data.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from algorithms import ConfigError, UnknownNameError
from benchmarks.claims import damage, hotplug, parallel, report
from benchmarks.claims.common import EXPERIMENTS, PROFILES
from benchmarks.datasets import DatasetUnavailable

RUN = {"hotplug": hotplug.run, "damage": damage.run, "parallel": parallel.run}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("experiment", nargs="?", choices=[*EXPERIMENTS, "all"],
                   help="what to run (omit with --from-results)")
    p.add_argument("--profile", default="quick", help=f"one of: {', '.join(PROFILES)}")
    p.add_argument("--from-results", action="store_true", help="no training: tables and figures from the result files")
    p.add_argument("--from-run", action="append", default=[], metavar="RUN_DIR",
                   help="damage: start from this finished run folder (kept weights) instead of the profile's runs")
    p.add_argument("--results", default="results", help="results folder (claims/ inside)")
    p.add_argument("--out", help="where tables/ and figures/ go (default: the results folder)")
    p.add_argument("--data-dir", action="append", help="where datasets are looked for (repeatable)")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda")
    args = p.parse_args(argv)
    try:
        if args.profile not in PROFILES:
            raise ConfigError(f"unknown profile {args.profile!r}; choose one of: {', '.join(PROFILES)}")
        if args.experiment is None and not args.from_results:
            raise ConfigError("name an experiment (hotplug, damage, parallel, all) or give --from-results")
        if args.from_run and args.experiment != "damage":
            raise ConfigError("--from-run is for the damage experiment")
        for run_dir in args.from_run:
            if not Path(run_dir, "config.json").is_file():
                raise ConfigError(f"{run_dir} is not a run folder (no config.json)")
        results = Path(args.results)
        todo = [] if args.experiment is None else list(EXPERIMENTS) if args.experiment == "all" else [args.experiment]
        torch.set_num_threads(1)  # one thread a process: the machine is shared, and parallel measures per core
        for exp in todo:
            kwargs = {"from_runs": args.from_run} if exp == "damage" else {}
            print(f"wrote {RUN[exp](args.profile, results, data_dirs=args.data_dir, device=args.device, **kwargs)}")
        only = todo or list(EXPERIMENTS)
        # every profile present gets its section in the tables
        for note in report.write_all(results, Path(args.out) if args.out else None, experiments=only):
            print(note)
    except (ConfigError, UnknownNameError, DatasetUnavailable) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0
