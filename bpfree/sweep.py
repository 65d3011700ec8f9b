"""Expand a table's or figure's spec into single runs; print them, or run them with a launcher.

    bpfree sweep table3 --profile quick                 # list the runs and their commands
    bpfree sweep table3 --profile quick --run --jobs 2  # run what is not finished yet
    bpfree sweep table2 --profile paper --run --launcher slurm \\
        --launcher-opt slurm_partition=gpu --launcher-opt gpus_per_node=1 --jobs 16
    bpfree sweep table3 --algorithms bp,mf --datasets mnist --run   # part of a table
    bpfree sweep energy_study --profile quick --tune 3 --run  # tune every cell, then run
    bpfree sweep --list                                  # the specs and their profiles

Specs live in benchmarks/specs/<name>.yaml (see benchmarks/sweep/expand.py for the format). Finished runs
are reused, so running the same command again continues an interrupted sweep. Each run's outcome
is appended to <results>/sweeps/<spec>_<profile>.jsonl; tables read it to mark cells that failed,
diverged or whose dataset is not on this machine.

--tune N first tunes every distinct algorithm/dataset/network (group label) of the spec with Optuna,
N trials each, every trial with the profile's epochs and patience: one budget for every algorithm
(benchmarks.tuning.tune_spec). Studies go to <results>/studies/; the best settings to the params
file (--params-file, else the profile's or the spec's params_file), which the runs then use. A
cell whose dataset is not on this machine is skipped with a note. Running it again resumes.

Exit codes: 0 every run finished (completed, diverged or its dataset unavailable: each is shown in
the table), 1 some run (or, with --tune, some study) failed, or a results file could not be written
(e.g. a full disk: one line names it; finished runs stay finished), 2 bad input.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from algorithms import ConfigError, UnknownNameError
from benchmarks.run.config import parse_assignments as parse_kv
from benchmarks.sweep.launchers import LAUNCHERS
from benchmarks.common.files import check_writable
from benchmarks.sweep.expand import expand, load_spec, profile_names, run_configs, spec_names, status_file


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n", 1)[1],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.error = lambda message: p.exit(2, f"error: {message} (see --help)\n")  # one line, as every bad input
    p.add_argument("spec", nargs="?", help="spec name (e.g. table3) or path to a spec YAML file")
    p.add_argument("--profile", default="quick", help="quick (2 CPU cores) or paper (the paper's protocol)")
    p.add_argument("--run", action="store_true", help="run the runs that are not finished (default: list them)")
    p.add_argument("--launcher", default="local", help=f"one of: {', '.join(LAUNCHERS.names())}")
    p.add_argument("--jobs", type=int, default=1, help="runs at a time (local: processes sharing the cores)")
    p.add_argument("--launcher-opt", action="append", default=[], metavar="KEY=VALUE",
                   help="launcher option, e.g. slurm_partition=gpu, timeout_min=600")
    p.add_argument("--results", default="results", help="results root: runs/, sweeps/ (default results)")
    p.add_argument("--params-file", help="tuned settings to apply (default: the spec's params_file, if any)")
    p.add_argument("--data-dir", action="append", help="where datasets are looked for (repeatable)")
    p.add_argument("--algorithms", help="only these algorithms, comma-separated")
    p.add_argument("--datasets", help="only these datasets, comma-separated")
    p.add_argument("--seeds", help="only these seeds, comma-separated")
    p.add_argument("--force", action="store_true", help="run finished runs again")
    p.add_argument("--tune", type=int, metavar="N",
                   help="first tune every algorithm/dataset/network of the spec with N Optuna trials each "
                        "(epochs and patience per trial: the profile's), then list or --run the tuned runs")
    p.add_argument("--list", action="store_true", help="list the specs and their profiles")
    return p


def _only(text: str | None) -> set[str] | None:
    return None if text is None else {t.strip() for t in text.split(",") if t.strip()}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.list or not args.spec:
            for name in spec_names():
                spec = load_spec(name)
                print(f"{name:<14} profiles: {', '.join(profile_names(spec)):<14} {spec.get('caption', '')}")
            return 0
        if args.jobs < 1:
            raise ConfigError(f"--jobs must be >= 1, got {args.jobs}")
        LAUNCHERS.get(args.launcher)
        check_writable(args.results)
        spec = load_spec(args.spec)
        algos, datasets, seeds = _only(args.algorithms), _only(args.datasets), _only(args.seeds)
        tune_failed = False
        if args.tune is not None:
            if args.tune < 1:
                raise ConfigError(f"--tune must be >= 1, got {args.tune}")
            from benchmarks.tuning import tune_spec  # imports Optuna only when tuning
            tuned = tune_spec(spec, args.profile, args.tune, params_file=args.params_file,
                              studies_dir=str(Path(args.results) / "studies"), data_dirs=args.data_dir,
                              algorithms=algos, datasets=datasets)
            tune_failed = any(t["status"] == "error" for t in tuned)
        groups = expand(spec, args.profile, params_file=args.params_file,
                        results_dir=str(Path(args.results) / "runs"), data_dirs=args.data_dir)
        configs = [c for _, cs in groups for c in cs
                   if (algos is None or c.algorithm in algos) and (datasets is None or c.dataset in datasets)
                   and (seeds is None or str(c.seed) in seeds)]
        if not configs:
            raise ConfigError("no run of the spec matches --algorithms/--datasets/--seeds")
        outcomes = run_configs(configs, dry_run=not args.run, launcher=args.launcher, jobs=args.jobs,
                               force=args.force, status_path=status_file(args.results, spec["name"], args.profile),
                               launcher_options=parse_kv(args.launcher_opt))
    except (ConfigError, UnknownNameError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # e.g. the status file on a full disk (WriteFailed names it)
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 1 if tune_failed or any(o["status"] == "failed" for o in outcomes) else 0
