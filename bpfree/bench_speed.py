"""Speed benchmark: the suite's training epoch against a plain PyTorch loop and the step's floor.

    python scripts/bench_speed.py                     # MF, BP, FA, DFA, FF; batch 64 and 256; Fashion-MNIST 2x1000
    python scripts/bench_speed.py --algorithms mf,bp --batch-sizes 256 --repeats 3 --train-limit 20000

For every algorithm and batch size it times, alternating within one run, full epochs of (1) the
suite's own training path (``benchmarks.runner.train_epoch`` calling ``trainer.update``, the epoch
timer attached, denormals flushed as in a run) and (2) a plain loop doing the same work
(``benchmarks.speed``: same layers, fused Adam, the same fixes), after one warm-up epoch each; and
(3) the floor, the step's GEMMs plus one fused Adam step timed in isolation, times the steps of an
epoch. It prints the median steady-state epochs and their ratios (suite/plain, suite/floor, MF/BP),
and writes every epoch time to results/bench/speed.json. Targets (2 CPU cores): suite within 1.05x
of plain for MF and BP; MF within 1.3x of its floor at batch 256 and 1.6x at 64; suite MF/BP <= 0.85.
A benchmark, not a test: ratios are measured within one run on one machine.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from algorithms import ALGORITHMS  # noqa: E402
from benchmarks.datasets import DatasetUnavailable, load_dataset, prepare_splits  # noqa: E402
from benchmarks.environment import describe_environment  # noqa: E402
from benchmarks.measure import METERS  # noqa: E402
from benchmarks.measure.base import RunContext, synchronize  # noqa: E402
from benchmarks.numerics import run_numerics  # noqa: E402
from benchmarks.runner import train_epoch  # noqa: E402
from benchmarks.runs import write_json  # noqa: E402
from benchmarks.speed import PLAIN_ALGORITHMS, floor_step_seconds, plain_step  # noqa: E402

TARGETS = {"suite/plain": 1.05, "mf suite/floor b256": 1.3, "mf suite/floor b64": 1.6, "mf/bp": 0.85}


def make_suite(algorithm: str, splits, widths: list[int], device, fused: bool):
    trainer = ALGORITHMS.get(algorithm)(splits.input_shape, splits.num_classes, "mlp", {"widths": widths},
                                        {"fused": fused})
    trainer.to(device).train(True)
    trainer.start_epoch(0, 1)
    timer = METERS.get("time")()
    timer.start_run(RunContext(trainer=trainer, device=device, run_dir=None, config=None))

    def epoch(xs, ys, bs):
        timer.start_epoch(0)
        train_epoch(trainer, xs, ys, bs, [timer])
        timer.end_epoch(0)

    return epoch


def make_plain(algorithm: str, in_features: int, widths: list[int], classes: int, device):
    step = plain_step(algorithm, in_features, widths, classes, device)

    def epoch(xs, ys, bs):
        xs = xs.flatten(1)
        for start in range(0, len(ys), bs):
            step(xs[start:start + bs], ys[start:start + bs])

    return epoch


def timed(fn, xs, ys, bs, device) -> float:
    synchronize(device)
    t0 = time.perf_counter()
    fn(xs, ys, bs)
    synchronize(device)
    return time.perf_counter() - t0


def op_profile(epoch, xs, ys, bs, top: int = 8) -> list[dict]:
    """The operators one epoch spends its time in, by self CPU time (torch.profiler)."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        epoch(xs, ys, bs)
    events = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
    total = sum(e.self_cpu_time_total for e in events) or 1
    return [{"op": e.key, "calls": e.count, "self_s": e.self_cpu_time_total / 1e6,
             "share": e.self_cpu_time_total / total} for e in events[:top]]


def bench_one(name, bs, splits, widths, device, args, gen) -> dict:
    in_features = int(torch.tensor(splits.input_shape).prod())
    torch.manual_seed(0)
    loops = {"suite": make_suite(name, splits, widths, device, fused=True),
             "plain": make_plain(name, in_features, widths, splits.num_classes, device)}
    if args.compare_unfused:
        loops["suite_unfused"] = make_suite(name, splits, widths, device, fused=False)
    for loop in loops.values():  # warm-up: lazy optimiser state, allocator, kernel choice
        loop(splits.train_x[:bs * 50], splits.train_y[:bs * 50], bs)
    times: dict[str, list[float]] = {k: [] for k in loops}
    for r in range(args.repeats):
        perm = torch.randperm(len(splits.train_y), generator=gen).to(device)
        xs, ys = splits.train_x[perm], splits.train_y[perm]
        order = list(loops) if r % 2 == 0 else list(reversed(loops))  # alternate to cancel drift
        for key in order:
            times[key].append(timed(loops[key], xs, ys, bs, device))
    steps = -(-len(splits.train_y) // bs)
    floor = floor_step_seconds(name, bs, in_features, widths, splits.num_classes, device)
    med = {k: statistics.median(v) for k, v in times.items()}
    out = {"epoch_s": times, "median_s": med, "floor_epoch_s": floor["step_s"] * steps,
           "floor_step": floor, "steps": steps,
           "suite/plain": med["suite"] / med["plain"], "suite/floor": med["suite"] / (floor["step_s"] * steps),
           "plain/floor": med["plain"] / (floor["step_s"] * steps)}
    if "suite_unfused" in med:
        out["unfused/fused"] = med["suite_unfused"] / med["suite"]
    if args.profile_ops:  # on a fifth of the data: the profiler's own cost grows with the events
        n = max(bs, len(ys) // 5)
        out["suite_op_profile"] = op_profile(loops["suite"], xs[:n], ys[:n], bs)
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dataset", default="fmnist")
    p.add_argument("--algorithms", default=",".join(PLAIN_ALGORITHMS))
    p.add_argument("--widths", default="1000,1000")
    p.add_argument("--batch-sizes", default="64,256")
    p.add_argument("--repeats", type=int, default=3, help="timed epochs of each loop, after a warm-up")
    p.add_argument("--train-limit", type=int, help="epoch over this many samples (default: all)")
    p.add_argument("--threads", type=int, help="torch threads (default: torch's choice)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--compare-unfused", action="store_true", help="also time the suite with fused: false")
    p.add_argument("--profile-ops", action="store_true",
                   help="also print where one suite epoch's time goes (torch.profiler, top operators by self time)")
    p.add_argument("--out", default="results/bench/speed.json")
    args = p.parse_args(argv)
    try:
        names = [a for a in args.algorithms.split(",") if a]
        for name in names:
            if name not in PLAIN_ALGORITHMS:
                raise ValueError(f"no plain loop for {name!r}; choose from {', '.join(PLAIN_ALGORITHMS)}")
        widths = [int(w) for w in args.widths.split(",")]
        batch_sizes = [int(b) for b in args.batch_sizes.split(",")]
        if args.repeats < 1 or min(batch_sizes) < 1 or min(widths) < 1:
            raise ValueError("repeats, batch sizes and widths must be positive")
        device = torch.device(args.device)
        if device.type == "cuda" and not torch.cuda.is_available():
            raise ValueError("--device cuda, but CUDA is not available here")
        splits = prepare_splits(load_dataset(args.dataset), 0.0, 0, device, train_limit=args.train_limit)
    except (DatasetUnavailable, ValueError, RuntimeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.threads:
        torch.set_num_threads(args.threads)
    gen = torch.Generator().manual_seed(0)
    results: dict[str, dict] = {}
    with run_numerics(device) as numerics:
        for bs in batch_sizes:
            for name in names:
                r = results.setdefault(f"b{bs}", {})[name] = bench_one(name, bs, splits, widths, device, args, gen)
                extra = f", unfused/fused {r['unfused/fused']:.2f}" if "unfused/fused" in r else ""
                print(f"batch {bs:>4} {name:>4}: suite {r['median_s']['suite']:.2f} s/epoch, plain "
                      f"{r['median_s']['plain']:.2f}, floor {r['floor_epoch_s']:.2f}; suite/plain "
                      f"{r['suite/plain']:.3f}, suite/floor {r['suite/floor']:.2f}{extra}", flush=True)
                for op in r.get("suite_op_profile", []):
                    print(f"      {op['share']:6.1%}  {op['op']} ({op['calls']} calls)")
            if {"mf", "bp"} <= set(results[f"b{bs}"]):
                row = results[f"b{bs}"]
                ratio = {k: row["mf"]["median_s"][k] / row["bp"]["median_s"][k] for k in ("suite", "plain")}
                row["mf/bp"] = {**ratio, "floor": row["mf"]["floor_epoch_s"] / row["bp"]["floor_epoch_s"]}
                print(f"batch {bs:>4} MF/BP epoch: suite {ratio['suite']:.2f}, plain {ratio['plain']:.2f}, "
                      f"floor {row['mf/bp']['floor']:.2f}")
    write_json(Path(args.out), {
        "what": "median wall time of a steady-state training epoch (shuffle and evaluation excluded): the suite, "
                "a plain PyTorch loop with the same fixes, and the floor (the step's GEMMs plus one fused Adam "
                "step, each timed alone with torch.utils.benchmark, times the epoch's steps)",
        "targets": TARGETS, "dataset": splits.name, "train_samples": len(splits.train_y), "widths": widths,
        "repeats": args.repeats, "threads": torch.get_num_threads(),
        "environment": {**describe_environment(device), **numerics}, "results": results})
    print(f"written {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
