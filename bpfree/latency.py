"""Measure Table 4: prediction time of FF, one-pass FF, BP and MF (both modes) on the 2x1000 MLP.

    bpfree latency --profile quick      # ~1 minute on 2 CPU cores
    bpfree latency --profile paper      # 100 timed calls per cell, as the paper

Times one image and a batch of 10000 test images per prediction mode (median of many calls, warm-up
excluded, device synchronised; see benchmarks/measure/latency.py) and writes
results/latency/table4_<device>.json; `make plots` turns it, with the accuracies of the training
runs, into results/tables/table4.md. Exit codes: 0 done, 2 bad input or missing data.
"""

from __future__ import annotations

import argparse
import datetime
import re
import sys
from pathlib import Path

import logging

# torch.utils.benchmark imports cpp_extension, which logs "No CUDA runtime is found" on machines
# without CUDA: a warning on every run, and a second line beside any one-line error
logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)

import torch  # noqa: E402

from algorithms import ALGORITHMS, ConfigError, UnknownNameError  # noqa: E402
from benchmarks.datasets import DatasetUnavailable, load_dataset, prepare_splits
from benchmarks.run.environment import describe_environment
from benchmarks.measure.latency import latency_rows
from benchmarks.common.files import check_writable, write_json

# profile -> (least seconds of timed calls for one image, for the batch, warm-up calls); the timer
# picks how many calls that is (one image: thousands; FF's batch of 10000 at ~2 s a call: a few)
PROFILES = {"quick": (1.0, 5.0, 2),
            "paper": (5.0, 60.0, 10)}  # the paper: mean of 100 runs
BATCH = 10000  # the paper's batch
WIDTHS = [1000, 1000]


def device_slug(env: dict) -> str:
    name = env["gpu_model"] or f"cpu-{env['cpu_model']}"
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")[:60]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.error = lambda message: p.exit(2, f"error: {message} (see --help)\n")  # one line, as every bad input
    p.add_argument("--profile", default="quick", choices=sorted(PROFILES))
    p.add_argument("--device", default="auto", help="auto, cpu or cuda[:N]")
    p.add_argument("--dataset", default="mnist")
    p.add_argument("--out", default="results/latency", help="folder for the measurement file")
    p.add_argument("--threads", type=int, help="torch CPU threads (default: torch's own choice)")
    args = p.parse_args(argv)
    try:
        if args.threads is not None and args.threads < 1:
            raise ConfigError(f"--threads must be >= 1, got {args.threads}")
        if args.device not in ("auto", "cpu") and not re.fullmatch(r"cuda(:\d+)?", args.device):
            raise ConfigError(f"--device must be auto, cpu or cuda[:N], got {args.device!r}")
        check_writable(args.out)
        if args.threads:
            torch.set_num_threads(args.threads)
        device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available()
                              else ("cpu" if args.device == "auto" else args.device))
        if device.type == "cuda" and not torch.cuda.is_available():
            raise ConfigError(f"device {device} asked for, but no CUDA device is available here")
        raw = load_dataset(args.dataset)
        # a small training part is enough: it only sets the normalisation of the timed test images
        splits = prepare_splits(raw, 0.0, 0, device, train_limit=1000, test_limit=BATCH)
        trainers = {alg: ALGORITHMS.get(alg)(splits.input_shape, splits.num_classes, "mlp", {"widths": WIDTHS}, {})
                    .to(device) for alg in ("ff", "bp", "mf")}
    except (ConfigError, UnknownNameError, DatasetUnavailable) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if len(splits.test_y) < BATCH:
        print(f"note: {args.dataset} has {len(splits.test_y)} test images; the batch is that size", file=sys.stderr)
    time_single, time_batch, warmup = PROFILES[args.profile]
    torch.manual_seed(0)
    rows = latency_rows(trainers, splits.test_x[:1], splits.test_x[:BATCH], time_single, time_batch, warmup)
    env = describe_environment(device)
    record = {"table": "table4", "profile": args.profile, "dataset": args.dataset, "arch": "mlp",
              "widths": WIDTHS, "measured_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
              "environment": env, "rows": rows,
              "method": "torch.utils.benchmark.Timer.blocked_autorange around trainer.predict(x, mode) (thread count "
                        "fixed, device synchronised, calls per block chosen adaptively), eval mode and no_grad, warm-up "
                        "calls untimed; figure = median over the timed blocks of the time per call; freshly "
                        "initialised trainers (dense timing does not depend on weight values)"}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"table4_{device_slug(env)}.json"
    write_json(path, record)
    print(f"{'row':<14} {'params':>9} {'1 image (ms)':>13} {'batch (ms)':>11}   [{env['gpu_model'] or env['cpu_model']}, "
          f"{env['cpu_threads']} threads]")
    for r in rows:
        print(f"{r['row']:<14} {r['parameters']:>9} {r['single']['median_ms']:>13.3f} {r['batch']['median_ms']:>11.2f}")
    print(f"wrote {path}")
    return 0
