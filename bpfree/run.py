"""Run one algorithm on one dataset and architecture with one seed; write its run folder.

    bpfree run --algorithm mf --dataset fmnist --widths 1000,1000 --epochs 10
    bpfree run --config my_run.yaml --hp lr=0.0005
    bpfree run --list            # what can be chosen

Flags override the config file. Exit codes: 0 finished (or reused), 1 the run folder could not be
written (e.g. a full disk: one line names the file; the folder is left unfinished, never counted),
2 bad input or missing data (nothing written), 3 the run diverged (recorded in its folder), 5 another
process is training the same run and --no-wait was given (without it, this one waits and then reuses
that result).
"""

from __future__ import annotations

import argparse
import json
import sys

from algorithms import ALGORITHMS, ARCHITECTURES, ConfigError, UnknownNameError
from benchmarks.run.config import ExperimentConfig, load_config_file, parse_assignments
from benchmarks.datasets import DATASETS, DatasetUnavailable
from benchmarks.measure import METERS
from benchmarks.run.runner import RunBusy, RunDiverged, run_experiment


class OneLineParser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (``error: ...``) and exit 2, as every other bad input."""

    def error(self, message: str):
        self.exit(2, f"error: {message} (see --help)\n")


def build_parser() -> argparse.ArgumentParser:
    p = OneLineParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", help="JSON or YAML file of ExperimentConfig keys")
    p.add_argument("--algorithm", "-a")
    p.add_argument("--dataset", "-d")
    p.add_argument("--arch")
    p.add_argument("--widths", help="hidden widths, comma-separated (MLP), e.g. 1000,1000")
    p.add_argument("--epochs", type=int)
    p.add_argument("--batch-size", type=int)
    p.add_argument("--lr", type=float, help="learning rate (shortcut for --hp lr=...)")
    p.add_argument("--seed", type=int)
    p.add_argument("--val-fraction", type=float)
    p.add_argument("--train-limit", type=int)
    p.add_argument("--test-limit", type=int)
    p.add_argument("--patience", type=int, help="early stopping patience in epochs (validation accuracy)")
    p.add_argument("--device", help="auto, cpu or cuda[:N]")
    p.add_argument("--measure", help="comma-separated meters, e.g. time,memory,energy")
    p.add_argument("--hp", action="append", default=[], metavar="KEY=VALUE", help="algorithm hyperparameter")
    p.add_argument("--arch-arg", action="append", default=[], metavar="KEY=VALUE", help="architecture argument")
    p.add_argument("--data-arg", action="append", default=[], metavar="KEY=VALUE",
                   help="setting of a csv:PATH dataset: label=COLUMN, test=PATH, test_fraction=0.2, split_seed=0")
    p.add_argument("--data-dir", action="append", help="where datasets are looked for (repeatable; "
                                                        "default: $BPFREE_DATA_DIR, data, ../shared/data, /usr/share/datasets)")
    p.add_argument("--results-dir", help="parent of run folders (default results/runs)")
    p.add_argument("--tag")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="any config field, value as JSON, e.g. train_eval_limit=5000 or hparams={\"lr\":0.01}")
    p.add_argument("--force", action="store_true", help="run again even if a finished run exists")
    p.add_argument("--quiet", action="store_true", help="no progress bar or epoch lines")
    p.add_argument("--no-wait", action="store_true",
                   help="if another process is training the same run, exit 5 at once instead of waiting for it")
    p.add_argument("--list", action="store_true", help="list algorithms, architectures, datasets and meters")
    return p


def config_from_args(args: argparse.Namespace) -> ExperimentConfig:
    values = load_config_file(args.config) if args.config else {}
    simple = {"algorithm": args.algorithm, "dataset": args.dataset, "arch": args.arch, "epochs": args.epochs,
              "batch_size": args.batch_size, "seed": args.seed, "val_fraction": args.val_fraction,
              "train_limit": args.train_limit, "test_limit": args.test_limit, "patience": args.patience,
              "device": args.device, "results_dir": args.results_dir, "tag": args.tag,
              "data_dirs": args.data_dir}
    values.update(parse_assignments(args.set))
    values.update({k: v for k, v in simple.items() if v is not None})
    if args.quiet:
        values["quiet"] = True
    if args.measure:
        values["measure"] = [m for m in args.measure.split(",") if m]
    for key in ("hparams", "arch_args", "data_args"):
        if not isinstance(values.get(key, {}), dict):
            raise ConfigError(f"{key} must be a mapping of keys to values, got {values[key]!r}")
    hparams = dict(values.get("hparams", {}), **parse_assignments(args.hp))
    if args.lr is not None:
        hparams["lr"] = args.lr
    arch_args = dict(values.get("arch_args", {}), **parse_assignments(args.arch_arg))
    if args.widths is not None:
        try:
            arch_args["widths"] = [int(w) for w in args.widths.split(",")]
        except ValueError:
            raise ConfigError(f"--widths takes comma-separated integers, e.g. 1000,1000, got {args.widths!r}") from None
    data_args = dict(values.get("data_args", {}), **parse_assignments(args.data_arg))
    values.update(hparams=hparams, arch_args=arch_args)
    if data_args:
        values["data_args"] = data_args
    return ExperimentConfig.from_dict(values)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.list:
        for title, registry in (("algorithms", ALGORITHMS), ("architectures", ARCHITECTURES),
                                ("datasets", DATASETS), ("measurements", METERS)):
            print(f"{title}: {', '.join(registry.names())}")
        return 0
    try:
        config = config_from_args(args)
        try:
            result = run_experiment(config, force=args.force, wait=False)
        except RunBusy as exc:
            if args.no_wait:
                print(f"busy: {exc}", file=sys.stderr)
                return 5
            print(f"waiting: {str(exc).split(';')[0]}; its result will be reused", file=sys.stderr, flush=True)
            result = run_experiment(config, wait=True)
    except (ConfigError, UnknownNameError, DatasetUnavailable) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except RunDiverged as exc:
        print(f"diverged: {exc}", file=sys.stderr)
        return 3
    except OSError as exc:  # a write into the run folder failed (WriteFailed names the file)
        print(f"error: {exc}", file=sys.stderr)
        return 1
    summary = result.summary
    if summary.get("status") == "diverged":
        print(f"diverged: reused run {result.run_dir} diverged in epoch {summary['diverged_epoch']}", file=sys.stderr)
        return 3
    note = " (reused a finished run; --force runs it again)" if result.reused else ""
    accs = {k.removeprefix("test_acc_"): round(v, 2) for k, v in summary["selected"].items()
            if k.startswith("test_acc_") and v is not None}
    print(f"{result.run_dir}{note}\ntest accuracy (%), epoch {summary['selected_epoch']} "
          f"({summary['selection']}): {json.dumps(accs)}")
    return 0
