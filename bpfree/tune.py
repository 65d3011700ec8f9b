"""Tune one algorithm on one dataset and architecture with Optuna (TPE, median pruning, early stopping).

    bpfree tune -a mf -d fmnist --widths 1000,1000 --epochs 20 --patience 5 --trials 30
    bpfree tune -a mf -d fmnist --widths 1000,1000 --epochs 20 --patience 5 --trials 30   # resumes
    bpfree tune ... --storage postgresql://user@host/db --worker-id 1   # one of many workers

Every flag of bpfree run sets the base config (epochs and patience are the budget of
each trial; the algorithm's search space, algorithms/search_spaces.py, sets the rest). The objective
is the best epoch's validation accuracy. Writes results/studies/<study>.log (the study), <study>/runs/
(one run folder per trial), <study>.csv (all trials), <study>.best.json, and the best settings into
the params file under "<algorithm>/<dataset>/<label>". Watch a study live:
optuna-dashboard results/studies/<study>.log

Exit codes: 0 done, 1 a file of the study could not be written (e.g. a full disk: one line names it;
resuming later retries the failed trials, the defaults trial too), 2 bad input or missing data (a
study name that is not a plain file name of at most 100 characters, a --storage that is a folder or
not a journal, a database that does not answer), 4 the study exists with another base config.
"""

from __future__ import annotations

import sys
from pathlib import Path

from bpfree.run import build_parser as experiment_parser, config_from_args

from algorithms import ConfigError, UnknownNameError
from benchmarks.datasets import DatasetUnavailable
from benchmarks.common.files import check_writable
from benchmarks.tuning import HEARTBEAT_INTERVAL, PARAMS_FILE, STUDIES_DIR, TuningError, tune


def build_parser():
    p = experiment_parser()
    p.description = __doc__.split("\n\n")[0]
    p.epilog = __doc__.split("\n\n", 1)[1]
    t = p.add_argument_group("tuning")
    t.add_argument("--trials", type=int, required=False,
                   help="total finished (complete or pruned) trials of the study, across resumes and workers")
    t.add_argument("--study", help="study name (default <algorithm>_<dataset>_<label>[_<tag>])")
    t.add_argument("--label", help="architecture label in the params-file key (default e.g. 2x1000)")
    t.add_argument("--storage", help="journal file *.log (default results/studies/<study>.log) or a "
                                     "database URL, e.g. postgresql://user@host:5432/db")
    t.add_argument("--studies-dir", default=STUDIES_DIR, help=f"where studies, runs and CSVs go ({STUDIES_DIR})")
    t.add_argument("--params-file", help=f"JSON file of best settings (default <studies dir>/best_params.json, "
                                         f"i.e. {PARAMS_FILE}); 'none' writes none")
    t.add_argument("--tune-seed", type=int, default=0, help="seed of the TPE sampler (the run seed is --seed)")
    t.add_argument("--worker-id", type=int, default=0,
                   help="give each of several parallel workers its own id (their samplers differ)")
    t.add_argument("--pruner", default="median", choices=["median", "none"])
    t.add_argument("--tune-shared", nargs="+", default=[], metavar="DIM",
                   help="optional shared dimensions to search beside the algorithm's space: lr_decay (the "
                        "per-epoch learning-rate decay, 0.7-1); a spec's profile gives them to every row "
                        "(tune_shared), so compare only studies that searched the same")
    t.add_argument("--heartbeat", type=int, default=HEARTBEAT_INTERVAL,
                   help="seconds between heartbeats of a running trial; a trial silent for 3x this is failed")
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.list:
        from bpfree.run import main as experiment_main
        return experiment_main(["--list"])
    if args.trials is None:
        parser.error("--trials N is required")
    if args.force:
        parser.error("--force does not apply to tuning (finished trial runs are reused)")
    params_file = (None if args.params_file == "none" else args.params_file or
                   str(Path(args.studies_dir) / Path(PARAMS_FILE).name))
    try:
        if args.trials < 1:
            raise ConfigError(f"--trials must be >= 1, got {args.trials}")
        check_writable(args.studies_dir)
        outcome = tune(config_from_args(args), args.trials, study_name=args.study, storage=args.storage,
                       studies_dir=args.studies_dir, label=args.label, seed=args.tune_seed,
                       worker_id=args.worker_id, pruner=args.pruner,
                       params_file=params_file, shared=args.tune_shared,
                       heartbeat_interval=args.heartbeat)
    except (ConfigError, UnknownNameError, DatasetUnavailable) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except TuningError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 4
    except OSError as exc:  # a study or run file could not be written (WriteFailed names it)
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0 if outcome is not None else 1
