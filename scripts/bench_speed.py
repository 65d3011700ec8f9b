"""Speed benchmark: one training epoch through the suite vs a minimal plain-PyTorch loop.

For MF and BP on an MLP (default 2x1000, Fashion-MNIST, batch 64), each repeat times one epoch of
the suite's own training path (``benchmarks.runner.train_epoch`` calling ``trainer.update``, with the
epoch timer attached, as in a real run) and one epoch of a hand-written loop doing the same work
(same layers, Adam per layer for MF, same batches), in alternating order. It prints the fastest and
the median epoch time of each and the ratio of the fastest (as ``timeit`` does: other processes only
ever add time, so the minimum is the least disturbed reading), and writes every epoch time to
results/bench/speed.json. The target is suite/plain <= 1.2. A benchmark, not a test: ratios are
measured within one run on one machine.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from algorithms import ALGORITHMS  # noqa: E402
from benchmarks.datasets import DatasetUnavailable, load_dataset, prepare_splits  # noqa: E402
from benchmarks.environment import describe_environment  # noqa: E402
from benchmarks.measure import METERS  # noqa: E402
from benchmarks.measure.base import RunContext, synchronize  # noqa: E402
from benchmarks.runner import train_epoch  # noqa: E402
from benchmarks.runs import write_json  # noqa: E402

TARGET_RATIO = 1.2


def plain_mlp(in_features: int, widths: list[int]) -> list[nn.Module]:
    layers, width_in = [], in_features
    for w in widths:
        layers.append(nn.Sequential(nn.Linear(width_in, w), nn.ReLU()))
        width_in = w
    return layers


def plain_bp_epoch(model: nn.Module, opt, xs, ys, bs) -> None:
    for start in range(0, len(ys), bs):
        loss = F.cross_entropy(model(xs[start:start + bs]), ys[start:start + bs])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()


def plain_mf_epoch(layers, projections, opts, xs, ys, bs) -> None:
    for start in range(0, len(ys), bs):
        h, y = xs[start:start + bs], ys[start:start + bs]
        for layer, m, opt in zip(layers, projections, opts):
            h = layer(h.detach())
            loss = F.cross_entropy(h @ m.T, y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()


def make_plain(algorithm: str, in_features: int, widths: list[int], classes: int, lr: float):
    layers = plain_mlp(in_features, widths)
    if algorithm == "bp":
        model = nn.Sequential(*layers, nn.Linear(widths[-1], classes))
        opt = torch.optim.Adam(model.parameters(), lr=lr)
        return lambda xs, ys, bs: plain_bp_epoch(model, opt, xs.flatten(1), ys, bs)
    projections = [nn.Parameter(torch.randn(classes, w) / w ** 0.5) for w in widths]
    opts = [torch.optim.Adam([*layer.parameters(), m], lr=lr) for layer, m in zip(layers, projections)]
    return lambda xs, ys, bs: plain_mf_epoch(layers, projections, opts, xs.flatten(1), ys, bs)


def make_suite(algorithm: str, splits, widths: list[int], device):
    trainer = ALGORITHMS.get(algorithm)(splits.input_shape, splits.num_classes, "mlp", {"widths": widths}, {})
    trainer.to(device).train(True)
    trainer.start_epoch(0, 1)
    timer = METERS.get("time")()
    timer.start_run(RunContext(trainer=trainer, device=device, run_dir=None, config=None))

    def epoch(xs, ys, bs):
        timer.start_epoch(0)
        train_epoch(trainer, xs, ys, bs, [timer])
        timer.end_epoch(0)

    return epoch


def timed(fn, xs, ys, bs, device) -> float:
    synchronize(device)
    t0 = time.perf_counter()
    fn(xs, ys, bs)
    synchronize(device)
    return time.perf_counter() - t0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dataset", default="fmnist")
    p.add_argument("--algorithms", default="mf,bp")
    p.add_argument("--widths", default="1000,1000")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--repeats", type=int, default=5, help="timed epochs of each loop, after one warm-up epoch")
    p.add_argument("--train-limit", type=int, help="epoch over this many samples (default: all)")
    p.add_argument("--threads", type=int, help="torch threads (default: torch's choice)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--out", default="results/bench/speed.json")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    try:
        splits = prepare_splits(load_dataset(args.dataset), 0.0, 0, device, train_limit=args.train_limit)
        names = [a for a in args.algorithms.split(",") if a]
        for name in names:
            if name not in ("bp", "mf"):
                raise ValueError(f"the plain reference loop exists for bp and mf only, got {name!r}")
    except (DatasetUnavailable, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    widths = [int(w) for w in args.widths.split(",")]
    in_features = int(torch.tensor(splits.input_shape).prod())
    gen = torch.Generator().manual_seed(0)
    results = {}
    for name in names:
        torch.manual_seed(0)
        loops = {"suite": make_suite(name, splits, widths, device),
                 "plain": make_plain(name, in_features, widths, splits.num_classes, 1e-3)}
        for loop in loops.values():  # warm-up: lazy optimiser state, allocator, kernel choice
            loop(splits.train_x[:args.batch_size * 20], splits.train_y[:args.batch_size * 20], args.batch_size)
        times = {"suite": [], "plain": []}
        for r in range(args.repeats):
            perm = torch.randperm(len(splits.train_y), generator=gen).to(device)
            xs, ys = splits.train_x[perm], splits.train_y[perm]
            order = ("plain", "suite") if r % 2 == 0 else ("suite", "plain")  # alternate to cancel drift
            for key in order:
                times[key].append(timed(loops[key], xs, ys, args.batch_size, device))
        best = {k: min(v) for k, v in times.items()}
        med = {k: statistics.median(v) for k, v in times.items()}
        ratio = best["suite"] / best["plain"]
        results[name] = {"suite_epoch_s": times["suite"], "plain_epoch_s": times["plain"],
                         "suite_min_s": best["suite"], "plain_min_s": best["plain"],
                         "suite_median_s": med["suite"], "plain_median_s": med["plain"], "ratio": ratio,
                         "ratio_of_medians": med["suite"] / med["plain"]}
        verdict = "ok" if ratio <= TARGET_RATIO else f"ABOVE the {TARGET_RATIO}x target"
        print(f"{name}: suite {best['suite']:.2f} s/epoch (median {med['suite']:.2f}), plain PyTorch "
              f"{best['plain']:.2f} s/epoch (median {med['plain']:.2f}); ratio {ratio:.3f} ({verdict}), "
              f"ratio of medians {med['suite'] / med['plain']:.3f}; {args.repeats} repeats", flush=True)
    if {"bp", "mf"} <= set(results):
        print(f"epoch time BP/MF: suite {results['bp']['suite_min_s'] / results['mf']['suite_min_s']:.2f}, "
              f"plain {results['bp']['plain_min_s'] / results['mf']['plain_min_s']:.2f}")
    write_json(Path(args.out), {
        "what": "wall time of one training epoch (shuffle and evaluation excluded), suite vs plain loop; ratio of the fastest",
        "dataset": splits.name, "train_samples": len(splits.train_y), "widths": widths,
        "batch_size": args.batch_size, "repeats": args.repeats, "threads": torch.get_num_threads(),
        "environment": describe_environment(device), "results": results})
    print(f"written {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
