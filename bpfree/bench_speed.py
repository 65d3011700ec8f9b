"""Speed benchmark: the suite's training epoch against a plain PyTorch loop and the step's floor.

    bpfree bench-speed                     # MF, BP, FA, DFA, FF; batch 64 and 256; Fashion-MNIST 2x1000
    bpfree bench-speed --algorithms mf,bp --batch-sizes 256 --repeats 3 --train-limit 20000
    bpfree bench-speed --arch cnn --dataset cifar10-jpeg --train-limit 2000 --channels-last --precision bf16
    bpfree bench-speed --eval              # a run's per-epoch evaluation against its training epoch, MNIST 2x1000

For every algorithm and batch size it times, alternating within one run, full epochs of (1) the
suite's own training path (``benchmarks.run.runner.train_epoch`` calling ``trainer.update``, the epoch
timer attached, denormals flushed as in a run) and (2) a plain loop doing the same work
(``benchmarks.measure.speed`` for the MLP, ``benchmarks.measure.speed_cnn`` for ``--arch cnn``: same
layers, fused Adam, the same fixes), after a warm-up (50 steps for the MLP, 5 for the CNN, and the
epoch's last smaller batch); and (3) the floor, the step's GEMMs (and for the CNN its convolutions)
plus one fused Adam step timed in isolation, times the steps of an epoch. It prints the median
steady-state epochs and their ratios (suite/plain, suite/floor, MF/BP), and writes every epoch time to
results/bench/speed.json (``--arch cnn``: results/bench/speed_cnn_<dataset>.json).

``--arch cnn`` is the suite's ``cnn`` (the Mono-Forward paper's Table 2 CNN; ``--channels`` defaults to
the table2 spec's 64,128,256,512) for BP, MF, DFA and FA; FF has no CNN path. Variants, each timed in
the same run beside the fp32 baseline: ``--channels-last`` (model and input in torch.channels_last, CNN
only), ``--precision bf16`` (torch.autocast bfloat16 around every step, weights and Adam in float32;
with ``--channels-last`` also both together) and ``--compile`` (torch.compile of the plain step, fp32;
the suite is not compiled). A loop that fails in a variant (the suite's FA conv under bf16, a compile
that fails here) is skipped with a note in the output and the JSON. The JSON also records the CPU's
native bfloat16 support (``cpu_bf16``: avx512_bf16, amx_bf16, amx_tile from /proc/cpuinfo).

Evaluation row (``--eval-limit``, default 10000; 0: none): every prediction mode once on the first
images of the test split (the runner's ``accuracies``, one ``predict_all`` per batch of
``--eval-batch-size``), with the suite's trainer of each variant; ``eval/epoch`` is that time over the
measured training epoch, ``eval/train per image`` the same per image (multiply by evaluated / trained
images to get a run's ratio).

``--eval``: instead of the speed rows, the evaluation-cost table (``benchmarks.run.eval_cost``):
per algorithm (MLP, first ``--batch-sizes`` entry, default MNIST), one training epoch on
``--train-limit`` images (default 6000) and the runner's own evaluation of each part it scores (the
training-accuracy sample, validation, test; ``--eval-images`` images each), scaled per image to a
run's sizes (``--sizes``, default the paper profile's 54000/6000/10000, and ``--train-eval-limit``);
eval/train for an epoch that scores test and a lean one that does not (target: lean <= 0.25); JSON to
results/bench/eval_cost.json. Targets (2 CPU cores, MLP): suite within 1.05x of plain for MF and BP;
MF within 1.3x of its floor at batch 256 and 1.6x at 64; suite MF/BP <= 0.85.
A benchmark, not a test: ratios are measured within one run on one machine.
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from algorithms import ALGORITHMS, ConfigError, UnknownNameError
from algorithms.networks import CNNArgs, LayerFactory, build_network
from benchmarks.common.files import write_json
from benchmarks.common.numerics import autocast, run_numerics
from benchmarks.datasets import DatasetUnavailable, load_dataset, prepare_splits
from benchmarks.measure import METERS
from benchmarks.measure.base import RunContext, synchronize
from benchmarks.measure.speed import PLAIN_ALGORITHMS, cpu_bf16_support, floor_step_seconds, plain_step
from benchmarks.measure.speed_cnn import CNN_ALGORITHMS, PlainCNN, cnn_floor_step_seconds
from benchmarks.run.config import ExperimentConfig
from benchmarks.run.environment import describe_environment
from benchmarks.run.runner import accuracies, train_epoch

TARGETS = {"suite/plain": 1.05, "mf suite/floor b256": 1.3, "mf suite/floor b64": 1.6, "mf/bp": 0.85}
CNN_TARGETS = {"run eval/epoch": 0.25}  # a run's evaluation at most a quarter of its training epoch
WARMUP_STEPS = {"mlp": 50, "cnn": 5}  # lazy optimiser state, allocator, kernel choice (a CNN step is ~100x an MLP's)
FLOOR_METHOD = {
    "mlp": "each (m, k, n) GEMM as torch.mm, and one fused Adam step, timed alone by torch.utils.benchmark",
    "cnn": "each conv's forward (F.conv2d), input gradient (aten.convolution_backward, mask True,False,False) and "
           "weight+bias gradient (mask False,True,True), each GEMM (torch.mm) and one fused Adam step, timed alone "
           "by torch.utils.benchmark; ReLU, pooling, losses and casts left out"}


@dataclass(frozen=True)
class Variant:
    """How a loop runs: the fp32 baseline, or one of the speed-ups the flags add."""

    name: str
    channels_last: bool = False
    precision: str = "fp32"
    compile: bool = False

    def key(self, loop: str) -> str:
        return loop if self.name == "fp32" else f"{loop} {self.name}"

    @property
    def dtype(self) -> torch.dtype:
        return torch.bfloat16 if self.precision == "bf16" else torch.float32


BASE = Variant("fp32")


def variants_of(args) -> list[Variant]:
    out = [BASE]
    if args.channels_last:
        out.append(Variant("channels_last", channels_last=True))
    if args.precision == "bf16":
        out.append(Variant("bf16", precision="bf16"))
        if args.channels_last:
            out.append(Variant("channels_last+bf16", channels_last=True, precision="bf16"))
    if args.compile:
        out.append(Variant("compile", compile=True))
    return out


@dataclass(frozen=True)
class Model:
    arch: str  # mlp or cnn
    arch_args: dict
    input_shape: tuple[int, ...]
    classes: int


def make_suite(algorithm: str, model: Model, device, fused: bool, variant: Variant = BASE):
    trainer = ALGORITHMS.get(algorithm)(model.input_shape, model.classes, model.arch, model.arch_args,
                                        {"fused": fused})
    trainer.to(device).train(True)
    if variant.channels_last:
        trainer.to(memory_format=torch.channels_last)
    trainer.start_epoch(0, 1)
    timer = METERS.get("time")()
    timer.start_run(RunContext(trainer=trainer, device=device, run_dir=None, config=None))

    def epoch(xs, ys, bs):
        timer.start_epoch(0)
        train_epoch(trainer, xs, ys, bs, [timer], precision=variant.precision)
        timer.end_epoch(0)

    epoch.trainer = trainer
    return epoch


def make_plain(algorithm: str, model: Model, device, variant: Variant = BASE):
    if model.arch == "mlp":
        step = plain_step(algorithm, math.prod(model.input_shape), list(model.arch_args["widths"]), model.classes,
                          device)
    else:
        defaults = CNNArgs()
        step = PlainCNN(algorithm, model.input_shape, list(model.arch_args["channels"]), model.classes, device,
                        defaults.kernel_size, defaults.pool, channels_last=variant.channels_last).step
    if variant.compile:
        step = torch.compile(step)
    mixed = autocast(device, variant.precision)
    flatten = model.arch == "mlp"

    def epoch(xs, ys, bs):
        xs = xs.flatten(1) if flatten else xs
        for start in range(0, len(ys), bs):
            with mixed:
                step(xs[start:start + bs], ys[start:start + bs])

    return epoch


def floor_seconds(algorithm: str, bs: int, model: Model, device, variant: Variant, min_time: float) -> dict:
    if model.arch == "mlp":
        return floor_step_seconds(algorithm, bs, math.prod(model.input_shape), list(model.arch_args["widths"]),
                                  model.classes, device, min_time, dtype=variant.dtype)
    defaults = CNNArgs()
    return cnn_floor_step_seconds(algorithm, bs, model.input_shape, list(model.arch_args["channels"]), model.classes,
                                  device, defaults.kernel_size, defaults.pool, dtype=variant.dtype,
                                  channels_last=variant.channels_last, min_run_time=min_time)


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


def eval_cost(trainer, x, y, batch_size: int, precision: str, device) -> dict:
    """Seconds to score every prediction mode once on (x, y), as a run's evaluation does."""
    trainer.train(False)
    with autocast(device, precision):
        accuracies(trainer, x[:batch_size], y[:batch_size], batch_size)  # warm-up: kernel choice for the shapes
        synchronize(device)
        t0 = time.perf_counter()
        accuracies(trainer, x, y, batch_size)
        synchronize(device)
        seconds = time.perf_counter() - t0
    trainer.train(True)
    return {"images": len(y), "modes": list(trainer.prediction_modes), "eval_s": seconds}


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"[:300]


def summarise(times: dict[str, list[float]], floor: dict, steps: int) -> dict:
    med = {k: statistics.median(v) for k, v in times.items()}
    floor_epoch = floor["step_s"] * steps
    out = {"epoch_s": times, "median_s": med, "floor_epoch_s": floor_epoch, "floor_step": floor, "steps": steps}
    if "suite" in med and "plain" in med:
        out["suite/plain"] = med["suite"] / med["plain"]
    for loop in ("suite", "plain"):
        if loop in med:
            out[f"{loop}/floor"] = med[loop] / floor_epoch
    return out


def bench_one(name, bs, splits, model: Model, device, args, variants, gen, evals: dict) -> dict:
    torch.manual_seed(0)
    if any(v.compile for v in variants):
        # a fresh compile cache: the plain steps of every algorithm and batch size share code objects, and
        # dynamo falls back to eager, silently, once one has been recompiled cache_size_limit (8) times
        torch._dynamo.reset()
    loops: dict[str, tuple[Variant, object]] = {}
    for v in variants:
        if not v.compile:
            loops[v.key("suite")] = (v, make_suite(name, model, device, True, v))
        loops[v.key("plain")] = (v, make_plain(name, model, device, v))
    if args.compare_unfused:
        loops["suite_unfused"] = (BASE, make_suite(name, model, device, False))
    n, skipped = len(splits.train_y), {}
    warm = min(n, bs * WARMUP_STEPS[model.arch])
    for key, (v, loop) in list(loops.items()):
        x = splits.train_x[:warm].contiguous(memory_format=torch.channels_last) if v.channels_last \
            else splits.train_x[:warm]
        try:
            loop(x, splits.train_y[:warm], bs)
            if n % bs:  # the epoch's last, smaller batch: its kernels (and a compiled step's shapes) too
                loop(x[:n % bs], splits.train_y[:n % bs], bs)
        except Exception as exc:  # noqa: BLE001 - a variant this machine or the suite cannot run is skipped
            if v is BASE:
                raise
            skipped[key] = _first_line(exc)
            del loops[key]
    times: dict[str, list[float]] = {k: [] for k in loops}
    for r in range(args.repeats):
        perm = torch.randperm(n, generator=gen).to(device)
        xs, ys = splits.train_x[perm], splits.train_y[perm]
        inputs = {False: xs}
        if any(v.channels_last for v, _ in loops.values()):
            inputs[True] = xs.contiguous(memory_format=torch.channels_last)
        order = list(loops) if r % 2 == 0 else list(reversed(loops))  # alternate to cancel drift
        for key in order:
            v, loop = loops[key]
            times[key].append(timed(loop, inputs[v.channels_last], ys, bs, device))
    steps = -(-n // bs)
    floors: dict[tuple, dict] = {}
    rows: dict[str, dict] = {}
    for v in variants:
        mine = {loop: times[v.key(loop)] for loop in ("suite", "plain") if v.key(loop) in times}
        if v is BASE and "suite_unfused" in times:
            mine["suite_unfused"] = times["suite_unfused"]
        fkey = (v.channels_last, v.precision)
        if fkey not in floors:
            floors[fkey] = floor_seconds(name, bs, model, device, v, args.floor_min_time)
        row = summarise(mine, floors[fkey], steps)
        if v is not BASE:
            base_med = rows["fp32"]["median_s"]
            row["fp32/this"] = {k: base_med[k] / t for k, t in row["median_s"].items() if k in base_med}
        notes = {loop: skipped[v.key(loop)] for loop in ("suite", "plain") if v.key(loop) in skipped}
        if notes:
            row["skipped"] = notes
        if args.eval_limit and v.key("suite") in loops:
            ekey = (name, v.name)
            if ekey not in evals:  # once per algorithm and variant: evaluation does not depend on the batch size
                x = splits.test_x[:args.eval_limit]
                x = x.contiguous(memory_format=torch.channels_last) if v.channels_last else x
                evals[ekey] = eval_cost(loops[v.key("suite")][1].trainer, x, splits.test_y[:args.eval_limit],
                                        args.eval_batch_size, v.precision, device)
            e, epoch_s = evals[ekey], row["median_s"]["suite"]
            row["eval"] = {**e, "eval/epoch": e["eval_s"] / epoch_s,
                           "eval/train per image": (e["eval_s"] / e["images"]) / (epoch_s / n)}
        rows[v.name] = row
    out = rows.pop("fp32")
    if "suite_unfused" in out["median_s"]:
        out["unfused/fused"] = out["median_s"]["suite_unfused"] / out["median_s"]["suite"]
    if rows:
        out["variants"] = rows
    if args.profile_ops:  # on a fifth of the data: the profiler's own cost grows with the events
        k = max(bs, len(ys) // 5)
        out["suite_op_profile"] = op_profile(loops["suite"][1], xs[:k], ys[:k], bs)
    return out


def _line(label: str, r: dict) -> str:
    med = r["median_s"]
    parts = [f"{loop} {med[loop]:.2f}" for loop in ("suite", "plain") if loop in med]
    text = f"{label}: {', '.join(parts)} s/epoch, floor {r['floor_epoch_s']:.2f}"
    ratios = [f"{k} {r[k]:.2f}" for k in ("suite/plain", "suite/floor", "plain/floor") if k in r]
    if "fp32/this" in r:
        ratios += [f"fp32/this {loop} {x:.2f}" for loop, x in r["fp32/this"].items()]
    if "unfused/fused" in r:
        ratios.append(f"unfused/fused {r['unfused/fused']:.2f}")
    return f"{text}; {', '.join(ratios)}"


def print_row(bs: int, name: str, r: dict) -> None:
    print(_line(f"batch {bs:>4} {name:>4}", r), flush=True)
    for v, vr in [("fp32", r), *r.get("variants", {}).items()]:
        if v != "fp32":
            print("      " + _line(v, vr))
        for loop, why in vr.get("skipped", {}).items():
            print(f"      {v} {loop}: skipped ({why})")
        if "eval" in vr:
            e = vr["eval"]
            print(f"      {v} eval: {e['images']} images x {len(e['modes'])} modes {e['eval_s']:.2f} s = "
                  f"{e['eval/epoch']:.2f} of the epoch, {e['eval/train per image']:.2f} of training per image")
    for op in r.get("suite_op_profile", []):
        print(f"      {op['share']:6.1%}  {op['op']} ({op['calls']} calls)")
    sys.stdout.flush()


def mf_over_bp(row: dict) -> dict:
    def ratio(mf, bp):
        out = {k: mf["median_s"][k] / bp["median_s"][k] for k in ("suite", "plain")
               if k in mf["median_s"] and k in bp["median_s"]}
        return {**out, "floor": mf["floor_epoch_s"] / bp["floor_epoch_s"]}

    out = ratio(row["mf"], row["bp"])
    variants = {v: ratio(r, row["bp"]["variants"][v]) for v, r in row["mf"].get("variants", {}).items()
                if v in row["bp"].get("variants", {})}
    return {**out, "variants": variants} if variants else out


def table2_channels() -> list[int]:
    """The cnn channels the table2 spec trains (benchmarks/specs/table2.yaml), else cnn's default."""
    from benchmarks.sweep.expand import load_spec

    for group in load_spec("table2")["groups"]:
        if group.get("arch") == "cnn" and "channels" in (group.get("arch_args") or {}):
            return [int(c) for c in group["arch_args"]["channels"]]
    return list(CNNArgs().channels)


def _ints(text: str, what: str) -> list[int]:
    try:
        return [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise ValueError(f"{what} must be whole numbers separated by commas, got {text!r}") from None


def parse(argv):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--arch", choices=("mlp", "cnn"), default="mlp")
    p.add_argument("--dataset", help="default: fmnist (mlp), cifar10-jpeg (cnn)")
    p.add_argument("--algorithms",
                   help=f"default: {','.join(PLAIN_ALGORITHMS)} (mlp), {','.join(CNN_ALGORITHMS)} (cnn)")
    p.add_argument("--widths", help="mlp hidden widths (default 1000,1000)")
    p.add_argument("--channels", help="cnn conv channels (default: the table2 spec's, 64,128,256,512)")
    p.add_argument("--batch-sizes", help="default: 64,256 (--eval: 64, the first one given)")
    p.add_argument("--repeats", type=int, default=3, help="timed epochs of each loop, after a warm-up")
    p.add_argument("--train-limit", type=int, help="epoch over this many samples (default: all)")
    p.add_argument("--threads", type=int, help="torch threads (default: torch's choice)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--channels-last", action="store_true",
                   help="also time suite and plain with model and input in torch.channels_last (cnn)")
    p.add_argument("--precision", choices=("fp32", "bf16"), default="fp32",
                   help="bf16: also time suite and plain under torch.autocast bfloat16 (weights fp32)")
    p.add_argument("--compile", action="store_true", help="also time the plain step under torch.compile (fp32)")
    p.add_argument("--eval-limit", type=int, default=10000,
                   help="time evaluating every prediction mode on this many test images (0: not)")
    p.add_argument("--eval-batch-size", type=int, default=ExperimentConfig.eval_batch_size)
    p.add_argument("--floor-min-time", type=float, default=0.2,
                   help="seconds torch.utils.benchmark spends on each of the floor's kernels (at least)")
    p.add_argument("--compare-unfused", action="store_true", help="also time the suite with fused: false")
    p.add_argument("--profile-ops", action="store_true",
                   help="also print where one suite epoch's time goes (torch.profiler, top operators by self time)")
    p.add_argument("--eval", action="store_true",
                   help="print the evaluation-cost table (a run's per-epoch evaluation / its training epoch) instead")
    p.add_argument("--eval-images", type=int, default=1000,
                   help="--eval: images each evaluated part is timed on (then scaled per image)")
    p.add_argument("--train-eval-limit", type=int, default=ExperimentConfig.train_eval_limit,
                   help="--eval: the config's train_eval_limit (training images scored for train accuracy)")
    p.add_argument("--sizes", default="54000,6000,10000",
                   help="--eval: train,val,test images of the run the times are scaled to (default: MNIST paper)")
    p.add_argument("--out", help="default: results/bench/speed.json (mlp), results/bench/speed_cnn_<dataset>.json, "
                                 "results/bench/eval_cost.json (--eval)")
    return p.parse_args(argv)


def main_eval(args) -> int:
    """``--eval``: the evaluation-cost table (``benchmarks.run.eval_cost``)."""
    from benchmarks.run.eval_cost import TARGET, eval_cost, print_table
    from benchmarks.run.runner import train_eval_images

    try:
        if args.arch != "mlp":
            raise ValueError("--eval times the MLP (--arch mlp)")
        names = [a for a in (args.algorithms or ",".join(PLAIN_ALGORITHMS)).split(",") if a]
        for name in names:
            ALGORITHMS.get(name)
        widths = _ints(args.widths or "1000,1000", "--widths")
        bs = (_ints(args.batch_sizes, "--batch-sizes") or [0])[0] if args.batch_sizes else 64
        sizes_given = _ints(args.sizes, "--sizes")
        if len(sizes_given) != 3:
            raise ValueError(f"--sizes takes train,val,test image counts, got {args.sizes!r}")
        train, val, test = sizes_given
        cfg = ExperimentConfig(train_eval_limit=args.train_eval_limit, eval_batch_size=args.eval_batch_size)
        if min(widths, default=0) < 1 or bs < 1 or args.repeats < 1 or args.eval_images < 1 \
                or train < 1 or min(val, test) < 0:
            raise ValueError("widths, batch size, repeats, --eval-images and the training size must be positive")
        cfg.validate()
        device = torch.device(args.device)
        dataset = args.dataset or "mnist"
        splits = prepare_splits(load_dataset(dataset), 0.0, 0, device,
                                train_limit=max(args.train_limit or 6000, args.eval_images))
    except (DatasetUnavailable, ValueError, RuntimeError, ConfigError, UnknownNameError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.threads:
        torch.set_num_threads(args.threads)
    sizes = {"train": train, "val": val, "test": test}
    header = (f"evaluation cost: {dataset}, mlp {'x'.join(map(str, widths))}, batch {bs}, {torch.get_num_threads()} "
              f"thread(s), {args.device}; training timed on {args.train_limit or 6000} images, each evaluated part "
              f"on {args.eval_images}; scaled to {train} training, {val} validation, {test} test images, train "
              f"accuracy on {train_eval_images(cfg, train, val)} (train_eval_limit {args.train_eval_limit}), eval "
              f"batch {args.eval_batch_size}")
    rows = []
    with run_numerics(device) as numerics:
        print(header, flush=True)
        for name in names:
            try:
                rows.append(eval_cost(name, splits, widths=widths, batch_size=bs,
                                      train_images=args.train_limit or 6000, eval_images=args.eval_images,
                                      repeats=args.repeats, sizes=sizes, cfg=cfg, device=device))
            except ConfigError as exc:  # e.g. an algorithm that trains no MLP
                print(f"{name}: skipped ({exc})", flush=True)
        print_table(rows, "every epoch: train sample + validation + test (every epoch with test_every_epoch: "
                          "true; otherwise an epoch with a new best validation accuracy of some mode, or the last); "
                          "lean: train sample + validation (every other epoch)")
    out = Path(args.out or "results/bench/eval_cost.json")
    write_json(out, {"what": "a run's per-epoch evaluation (runner.evaluate, every prediction mode) over its training "
                             "epoch (runner.train_epoch), each timed per image and scaled to the run's sizes",
                     "target_lean": TARGET, "dataset": dataset, "widths": widths, "batch_size": bs, "sizes": sizes,
                     "train_eval_limit": args.train_eval_limit, "eval_batch_size": args.eval_batch_size,
                     "threads": torch.get_num_threads(), "machine_may_be_loaded": True,
                     "environment": {**describe_environment(device), **numerics}, "rows": rows})
    print(f"written {out}")
    return 0


def main(argv=None) -> int:
    args = parse(argv)
    if args.eval:
        return main_eval(args)
    cnn = args.arch == "cnn"
    known = CNN_ALGORITHMS if cnn else PLAIN_ALGORITHMS
    try:
        names = [a for a in (args.algorithms or ",".join(known)).split(",") if a]
        for name in names:
            if cnn and name == "ff":
                raise ValueError(f"ff has no cnn path here (FF trains MLPs only); --arch cnn takes {', '.join(known)}")
            if name not in known:
                raise ValueError(f"no plain loop for {name!r}; choose from {', '.join(known)}")
        if (args.widths and cnn) or (args.channels and not cnn):
            raise ValueError("--widths is for --arch mlp, --channels for --arch cnn")
        if args.channels_last and not cnn:
            raise ValueError("--channels-last is for --arch cnn (an MLP has no image layout)")
        sizes = _ints(args.channels, "--channels") if args.channels else (table2_channels() if cnn else None)
        sizes = sizes or _ints(args.widths or "1000,1000", "--widths")
        batch_sizes = _ints(args.batch_sizes or "64,256", "--batch-sizes")
        if args.repeats < 1 or min(batch_sizes, default=0) < 1 or min(sizes, default=0) < 1:
            raise ValueError("repeats, batch sizes, widths and channels must be positive")
        if args.eval_limit < 0 or args.eval_batch_size < 1 or not args.floor_min_time > 0:
            raise ValueError("--eval-limit must be >= 0, --eval-batch-size >= 1 and --floor-min-time > 0")
        device = torch.device(args.device)
        if device.type == "cuda" and not torch.cuda.is_available():
            raise ValueError("--device cuda, but CUDA is not available here")
        dataset = args.dataset or ("cifar10-jpeg" if cnn else "fmnist")
        splits = prepare_splits(load_dataset(dataset), 0.0, 0, device, train_limit=args.train_limit)
        model = Model(args.arch, {"channels" if cnn else "widths": sizes}, tuple(splits.input_shape),
                      splits.num_classes)
        if cnn:  # the suite's own checks: image input, enough side for every pooling
            build_network("cnn", model.input_shape, model.classes, model.arch_args, LayerFactory())
    except (DatasetUnavailable, ValueError, RuntimeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.threads:
        torch.set_num_threads(args.threads)
    variants = variants_of(args)
    gen = torch.Generator().manual_seed(0)
    results: dict[str, dict] = {}
    evals: dict = {}
    with run_numerics(device) as numerics:
        for bs in batch_sizes:
            for name in names:
                r = results.setdefault(f"b{bs}", {})[name] = bench_one(name, bs, splits, model, device, args,
                                                                        variants, gen, evals)
                print_row(bs, name, r)
            if {"mf", "bp"} <= set(results[f"b{bs}"]):
                row = results[f"b{bs}"]
                row["mf/bp"] = mf_over_bp(row)
                print(f"batch {bs:>4} MF/BP epoch: " + ", ".join(
                    f"{k} {v:.2f}" for k, v in row["mf/bp"].items() if k != "variants"))
    out = Path(args.out or ("results/bench/speed.json" if not cnn else f"results/bench/speed_cnn_{dataset}.json"))
    cnn_args = {"channels": sizes, "kernel_size": CNNArgs().kernel_size, "pool": CNNArgs().pool}
    write_json(out, {
        "what": "median wall time of a steady-state training epoch (shuffle and evaluation excluded): the suite, "
                "a plain PyTorch loop with the same fixes, and the floor (" + FLOOR_METHOD[args.arch] +
                ", summed, times the epoch's steps); variants beside the fp32 baseline, fp32/this = speed-up",
        "targets": CNN_TARGETS if cnn else TARGETS, "arch": args.arch,
        "arch_args": cnn_args if cnn else {"widths": sizes},
        **({} if cnn else {"widths": sizes}), "dataset": splits.name, "input_shape": list(model.input_shape),
        "train_samples": len(splits.train_y), "batch_sizes": batch_sizes, "variants": [v.name for v in variants],
        "cpu_bf16": cpu_bf16_support(), "floor_method": FLOOR_METHOD[args.arch],
        "eval": {"split": "test", "limit": args.eval_limit, "batch_size": args.eval_batch_size,
                 "run eval/epoch": "eval/train per image x images a run evaluates per epoch / images it trains on"},
        "repeats": args.repeats, "threads": torch.get_num_threads(),
        "environment": {**describe_environment(device), **numerics}, "results": results})
    print(f"written {out}")
    return 0
