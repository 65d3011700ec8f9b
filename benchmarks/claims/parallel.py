"""Layer-parallel Mono-Forward across processes (torch.distributed), against BP with DDP.

**Pipelined MF.** Process r (a *stage*) owns consecutive blocks ``bounds[r]``. For every mini-batch
in the epoch's order it takes its input (the data for stage 0, else the activation stage r-1 sent),
and for each of its blocks does exactly what ``MonoForward.update`` does for that block: forward on
the detached input, local cross-entropy through its projection, backward, step. The last block's
output, computed before the step as in ``update``, goes to stage r+1 with a non-blocking send
*before* this stage's backward, so stage r+1 starts on batch t while stage r is still updating on
it and then moves on to batch t+1. Block i at batch t therefore sees the outputs of blocks below it
after t-1 updates of theirs, as in one process: the updates are those of one-process MF. Labels are
not sent (every stage knows the data order), and the next input is received ahead (``irecv``).

**BP with DistributedDataParallel** on the same number of processes: each takes an equal share of
every 64-sample batch, DDP averages the gradients (an all-reduce of every parameter's gradient each
step), so the update is that of one-process BP on the whole batch. Bytes handed to the all-reduce
are counted with a communication hook.

Backends: gloo on the CPU (one thread a process), NCCL on CUDA (one GPU a stage). Processes are
started with ``torch.multiprocessing.spawn``; under ``torchrun`` (RANK/WORLD_SIZE in the
environment) ``python -m benchmarks.claims.parallel`` runs one pipelined MF epoch as one stage.
"""

from __future__ import annotations

import os
import socket
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F

from algorithms.base import make_optimizer

from .common import BATCH, batches, load_splits, orders, pick_device, profile, sync, write_result


def stage_bounds(n_blocks: int, stages: int) -> list[tuple[int, int]]:
    """Consecutive blocks per stage, as even as counts allow (earlier stages get the extra block)."""
    if not 1 <= stages <= n_blocks:
        raise ValueError(f"{stages} stages for {n_blocks} blocks: need 1 <= stages <= blocks")
    base, extra = divmod(n_blocks, stages)
    out, start = [], 0
    for s in range(stages):
        stop = start + base + (s < extra)
        out.append((start, stop))
        start = stop
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _init(rank: int, world: int, spec: dict) -> torch.device:
    torch.set_num_threads(spec.get("threads", 1))
    cuda = spec["device"] == "cuda"
    if spec.get("init_method") == "env://":
        dist.init_process_group("nccl" if cuda else "gloo", init_method="env://")
    else:
        dist.init_process_group("nccl" if cuda else "gloo", init_method=f"tcp://127.0.0.1:{spec['port']}",
                                rank=rank, world_size=world)
    if cuda:
        torch.cuda.set_device(rank % torch.cuda.device_count())
        return torch.device("cuda", rank % torch.cuda.device_count())
    return torch.device("cpu")


def _trainer(spec: dict, algorithm: str, device: torch.device):
    from algorithms import ALGORITHMS
    torch.manual_seed(spec["seed"])  # every process builds the same initial network
    return ALGORITHMS.get(algorithm)(spec["input_shape"], spec["num_classes"], "mlp", {"widths": spec["widths"]},
                                     spec.get("hparams", {})).to(device)


def _ping(rank: int, shape: tuple[int, ...], device, repeats: int = 20) -> float | None:
    """One-way time of one activation message between stages 0 and 1 (half a round trip)."""
    if rank > 1:
        return None
    buf = torch.zeros(shape, device=device)
    for i in range(repeats + 2):  # two warm-up round trips
        if i == 2:
            sync(device)
            t0 = time.perf_counter()
        if rank == 0:
            dist.send(buf, 1)
            dist.recv(buf, 1)
        else:
            dist.recv(buf, 0)
            dist.send(buf, 0)
    sync(device)
    return (time.perf_counter() - t0) / repeats / 2


def mf_stage(rank: int, world: int, spec: dict) -> None:
    """One pipeline stage of MF (see the module docstring); writes its blocks and timings to spec['out']."""
    device = _init(rank, world, spec)
    trainer = _trainer(spec, "mf", device)
    lo, hi = stage_bounds(len(trainer.net.blocks), world)[rank]
    in_shape = tuple(spec["input_shape"]) if lo == 0 else tuple(trainer.net.feature_shapes[lo - 1])
    x, y = spec["x"].to(device), spec["y"].to(device)
    steps = [(perm, start, size) for perm in spec["orders"] for start, size in batches(len(perm), BATCH)]
    if spec.get("max_steps"):
        steps = steps[: spec["max_steps"]]
    ping = _ping(rank, (BATCH, *trainer.net.feature_shapes[0]), device) if world > 1 and spec.get("ping") else None
    dist.barrier()
    timing = {"compute_s": 0.0, "wait_s": 0.0, "sent_bytes": 0, "messages": 0}
    pending, recv = [], None

    def post_recv(t):
        buf = torch.empty((steps[t][2], *in_shape), device=device)
        return buf, dist.irecv(buf, rank - 1)

    sync(device)
    t_start = time.perf_counter()
    if rank > 0:
        recv = post_recv(0)
    for t, (perm, start, size) in enumerate(steps):
        idx = perm[start:start + size].to(device)
        if rank == 0:
            h = x[idx]
        else:
            t0 = time.perf_counter()
            recv[1].wait()
            h = recv[0]
            timing["wait_s"] += time.perf_counter() - t0
            if t + 1 < len(steps):
                recv = post_recv(t + 1)
        yt = y[idx]
        t0 = time.perf_counter()
        for i in range(lo, hi):
            out = trainer.net.blocks[i](h.detach())
            loss = F.cross_entropy(trainer.scores(i, out), yt)
            if i == hi - 1 and rank < world - 1:
                msg = out.detach()
                pending.append((msg, dist.isend(msg, rank + 1)))
                timing["sent_bytes"] += msg.numel() * msg.element_size()
                timing["messages"] += 1
            trainer.optimizer.zero_grad(set_to_none=True)  # only block i's gradients: the step moves it alone
            loss.backward()
            trainer.optimizer.step()
            h = out
        if len(pending) > 2:  # keep a sent tensor alive until its send is done; two in flight suffice
            pending.pop(0)[1].wait()
        sync(device)
        timing["compute_s"] += time.perf_counter() - t0
    for _, req in pending:
        req.wait()
    sync(device)
    timing["epoch_s"] = time.perf_counter() - t_start
    dist.barrier()
    timing["total_s"] = time.perf_counter() - t_start  # until the last stage is done too
    timing.update(rank=rank, blocks=[lo, hi], ping_one_way_s=ping, steps=len(steps))
    state = {f"net.blocks.{i}.{k}": v.cpu() for i in range(lo, hi)
             for k, v in trainer.net.blocks[i].state_dict().items()}
    state.update({f"projections.{i}": trainer.projections[i].detach().cpu() for i in range(lo, hi)})
    torch.save({"state": state, "timing": timing}, Path(spec["out"]) / f"stage{rank}.pt")
    dist.destroy_process_group()


def bp_ddp_worker(rank: int, world: int, spec: dict) -> None:
    """BP on ``world`` processes with DistributedDataParallel: an equal share of each batch each."""
    from torch.distributed.algorithms.ddp_comm_hooks.default_hooks import allreduce_hook
    from torch.nn.parallel import DistributedDataParallel

    device = _init(rank, world, spec)
    trainer = _trainer(spec, "bp", device)
    model = DistributedDataParallel(trainer.net, device_ids=[device.index] if device.type == "cuda" else None)
    counted = {"bytes": 0}

    def hook(state, bucket):
        counted["bytes"] += bucket.buffer().numel() * bucket.buffer().element_size()
        return allreduce_hook(None, bucket)

    model.register_comm_hook(None, hook)
    # the optimiser every other arm uses (fused Adam, algorithms.base.make_optimizer): a plain Adam here
    # made this arm's step 47 ms against its own model's 24.6 (an unfair baseline)
    opt = make_optimizer(model.parameters(), trainer.hp)
    grad = torch.zeros(sum(p.numel() for p in model.parameters()), device=device)
    for _ in range(2):  # warm-up of the all-reduce alone
        dist.all_reduce(grad)
    sync(device)
    t0 = time.perf_counter()
    for _ in range(5):
        dist.all_reduce(grad)
    sync(device)
    allreduce_s = (time.perf_counter() - t0) / 5
    x, y = spec["x"].to(device), spec["y"].to(device)
    steps = [(perm, start, size) for perm in spec["orders"] for start, size in batches(len(perm), BATCH)]
    dist.barrier()
    sync(device)
    t_start = time.perf_counter()
    for perm, start, size in steps:
        share = -(-size // world)
        idx = perm[start + rank * share:start + min(size, (rank + 1) * share)].to(device)
        loss = F.cross_entropy(model(x[idx]), y[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    sync(device)
    epoch_s = time.perf_counter() - t_start
    dist.barrier()
    timing = {"rank": rank, "epoch_s": epoch_s, "total_s": time.perf_counter() - t_start, "steps": len(steps),
              "allreduce_payload_bytes": counted["bytes"], "allreduce_s": allreduce_s,
              "grad_bytes": grad.numel() * grad.element_size()}
    torch.save({"timing": timing}, Path(spec["out"]) / f"stage{rank}.pt")
    dist.destroy_process_group()


def spawn(fn, world: int, spec: dict) -> list[dict]:
    """Run ``fn`` on ``world`` processes; returns what each wrote (its state and timing)."""
    with tempfile.TemporaryDirectory() as out:
        # fork is quicker (torch is already imported) but unsafe once CUDA is initialised
        method = "fork" if sys.platform == "linux" and not torch.cuda.is_initialized() else "spawn"
        mp.start_processes(fn, args=(world, {**spec, "out": out, "port": free_port()}), nprocs=world, join=True,
                           start_method=method)
        return [torch.load(Path(out) / f"stage{r}.pt", weights_only=True) for r in range(world)]


def pipeline_state(results: list[dict]) -> dict[str, torch.Tensor]:
    """The whole MF network's blocks and projections, merged from every stage."""
    return {k: v for r in results for k, v in r["state"].items()}


# -- the measurement -------------------------------------------------------------------------------

def _epoch_one_process(trainer, x, y, epoch_orders, device) -> float:
    """One-process training through ``trainer.update`` over the same batches; seconds."""
    sync(device)
    t0 = time.perf_counter()
    for perm in epoch_orders:
        for start, size in batches(len(perm), BATCH):
            idx = perm[start:start + size].to(device)
            trainer.update(x[idx], y[idx])
    sync(device)
    return time.perf_counter() - t0


def _block_times(trainer, x, y, order, device, steps: int = 100) -> list[float]:
    """Seconds per step of each MF block's own work (forward, local loss, backward, step), one process."""
    totals = [0.0] * len(trainer.net.blocks)
    for start, size in batches(len(order), BATCH)[:steps]:
        idx = order[start:start + size].to(device)
        h, yt = x[idx], y[idx]
        for i, block in enumerate(trainer.net.blocks):
            sync(device)
            t0 = time.perf_counter()
            out = block(h.detach())
            loss = F.cross_entropy(trainer.scores(i, out), yt)
            trainer.optimizer.zero_grad(set_to_none=True)  # only block i's gradients: the step moves it alone
            loss.backward()
            trainer.optimizer.step()
            sync(device)
            totals[i] += time.perf_counter() - t0
            h = out
    n = min(steps, len(batches(len(order), BATCH)))
    return [t / n for t in totals]


def _bp_step_time(spec, batch: int, x, y, device, steps: int = 50) -> float:
    trainer = _trainer(spec, "bp", device)
    xb, yb = x[:batch], y[:batch]
    for _ in range(5):
        trainer.update(xb, yb)
    sync(device)
    t0 = time.perf_counter()
    for _ in range(steps):
        trainer.update(xb, yb)
    sync(device)
    return (time.perf_counter() - t0) / steps


def model_speedups(block_s: list[float], transfer_s: float, bp_step_s: dict[int, float], allreduce_2_s: float,
                   steps: int) -> dict:
    """Speed-up over one process for k = 1..blocks processes.

    MF, k stages: stage s costs c_s (its blocks' measured times) plus one message time per boundary
    it has (a receive, a send); the pipeline runs at the pace of its slowest stage P, and fills in
    k-1 steps: epoch = (steps + k - 1) * P against steps * sum(block times).
    BP, k DDP processes: a step is the measured BP step on a 64/k share plus a ring all-reduce of every
    gradient, 2 (k-1)/k of the gradient bytes at the bandwidth the 2-process all-reduce showed (its
    ring factor is 1); the model leaves out DDP's overlap of the all-reduce with the backward pass.
    """
    one = sum(block_s)
    mf, bp = {}, {}
    for k in range(1, len(block_s) + 1):
        pace = max(sum(block_s[lo:hi]) + transfer_s * ((lo > 0) + (hi < len(block_s)))
                   for lo, hi in stage_bounds(len(block_s), k))
        mf[k] = steps * one / ((steps + k - 1) * pace)
        share = -(-BATCH // k)
        if share in bp_step_s:
            bp[k] = bp_step_s[BATCH] / (bp_step_s[share] + (2 * (k - 1) / k) * allreduce_2_s)
    return {"mf": mf, "bp": bp}


def run(profile_name: str, results: Path, data_dirs=None, device: str = "auto", log=print) -> Path:
    prof = profile(profile_name, "parallel")
    dev = pick_device(device)
    world = prof["processes"]
    if dev.type == "cuda" and torch.cuda.device_count() < world:  # NCCL takes one GPU per process
        log(f"parallel: {torch.cuda.device_count()} GPU(s) for {world} processes: measuring on the CPU (gloo)")
        dev = torch.device("cpu")
    torch.set_num_threads(1)  # one thread a process, in this process too
    splits = load_splits(prof["dataset"], prof["seed"], prof["train_limit"], torch.device("cpu"), data_dirs)
    epoch_orders = orders(len(splits.train_y), prof["seed"], prof["epochs"])
    spec = {"seed": prof["seed"], "widths": prof["widths"], "input_shape": list(splits.input_shape),
            "num_classes": splits.num_classes, "device": dev.type, "x": splits.train_x, "y": splits.train_y,
            "orders": epoch_orders, "threads": 1, "ping": True}
    x, y = splits.train_x.to(dev), splits.train_y.to(dev)
    steps = len(batches(len(splits.train_y))) * prof["epochs"]
    out = {"experiment": "parallel", "profile": profile_name, "settings": prof, "device": str(dev),
           "torch": torch.__version__, "threads_per_process": 1, "processes": world, "steps": steps,
           "cores": os.cpu_count(), "backend": "nccl" if dev.type == "cuda" else "gloo",
           "load_average_before": os.getloadavg()[0]}  # other work on the machine: it only ever adds time
    runs = {"mf_one": [], "bp_one": [], "mf_one_threaded": [], "bp_one_threaded": [], "mf_pipe": [], "bp_ddp": []}
    started = time.perf_counter()
    for rep in range(prof["repeats"]):  # alternated, so that a busy moment of the machine hits all alike
        log(f"parallel: repeat {rep + 1}/{prof['repeats']}: one-process MF and BP, one thread and {world}")
        mf_one = _trainer(spec, "mf", dev)
        runs["mf_one"].append(_epoch_one_process(mf_one, x, y, epoch_orders, dev))
        runs["bp_one"].append(_epoch_one_process(_trainer(spec, "bp", dev), x, y, epoch_orders, dev))
        # the other way to use the same cores: one process with as many threads as the arms have processes
        torch.set_num_threads(world)
        for algorithm in ("mf", "bp"):
            runs[f"{algorithm}_one_threaded"].append(
                _epoch_one_process(_trainer(spec, algorithm, dev), x, y, epoch_orders, dev))
        torch.set_num_threads(1)
        log(f"parallel: repeat {rep + 1}: MF pipelined on {world} processes, BP with DDP on {world}")
        pipe = spawn(mf_stage, world, spec)
        runs["mf_pipe"].append(pipe)
        runs["bp_ddp"].append(spawn(bp_ddp_worker, world, spec))
    merged = pipeline_state(runs["mf_pipe"][-1])
    reference = {k: v.cpu() for k, v in mf_one.state_dict().items() if k in merged}
    out["pipeline_equals_one_process"] = {
        "bitwise_equal": all(torch.equal(merged[k], reference[k]) for k in merged),
        "max_abs_diff": max(float((merged[k] - reference[k]).abs().max()) for k in merged)}

    def pick(key):  # the fastest repeat: other processes on the machine only ever add time
        return min(runs[key], key=lambda stages: max(s["timing"]["epoch_s"] for s in stages))

    pipe, ddp = pick("mf_pipe"), pick("bp_ddp")
    out["measured"] = {
        "mf_one_process_epoch_s": min(runs["mf_one"]), "bp_one_process_epoch_s": min(runs["bp_one"]),
        "mf_pipeline_epoch_s": max(s["timing"]["epoch_s"] for s in pipe),
        "bp_ddp_epoch_s": max(s["timing"]["epoch_s"] for s in ddp),
        "mf_pipeline_stages": [s["timing"] for s in pipe], "bp_ddp_workers": [s["timing"] for s in ddp],
        "mf_sent_bytes_per_epoch": sum(s["timing"]["sent_bytes"] for s in pipe),
        "bp_allreduce_payload_bytes_per_epoch_per_process": ddp[0]["timing"]["allreduce_payload_bytes"],
        "bp_ring_sent_bytes_per_epoch_per_process":
            ddp[0]["timing"]["allreduce_payload_bytes"] * 2 * (world - 1) / world,
        "all_repeats_s": {k: [v if isinstance(v, float) else max(s["timing"]["epoch_s"] for s in v) for v in vs]
                          for k, vs in runs.items()}}
    m = out["measured"]
    m["mf_speedup"] = m["mf_one_process_epoch_s"] / m["mf_pipeline_epoch_s"]
    m["bp_speedup"] = m["bp_one_process_epoch_s"] / m["bp_ddp_epoch_s"]
    for algorithm, arm in (("mf", "mf_pipeline_epoch_s"), ("bp", "bp_ddp_epoch_s")):
        # the same cores as one process with `world` threads: what a user gets without torch.distributed
        m[f"{algorithm}_one_process_{world}_threads_epoch_s"] = min(runs[f"{algorithm}_one_threaded"])
        m[f"{algorithm}_speedup_over_{world}_threads"] = min(runs[f"{algorithm}_one_threaded"]) / m[arm]
    log("parallel: per-block and per-batch-size step times for the model")
    block_s = _block_times(_trainer(spec, "mf", dev), x, y, epoch_orders[0], dev)
    shares = sorted({-(-BATCH // k) for k in range(1, len(block_s) + 1)})
    bp_step = {b: _bp_step_time(spec, b, x, y, dev) for b in shares}
    transfer = pipe[0]["timing"]["ping_one_way_s"] or 0.0
    allreduce = ddp[0]["timing"]["allreduce_s"]
    out["model_inputs"] = {"block_step_s": block_s, "transfer_one_way_s": transfer, "bp_step_s": bp_step,
                           "allreduce_2_processes_s": allreduce, "grad_bytes": ddp[0]["timing"]["grad_bytes"],
                           "activation_bytes_per_message": BATCH * prof["widths"][0] * 4}
    out["model"] = model_speedups(block_s, transfer, bp_step, allreduce, steps)
    out["wall_time_s"] = time.perf_counter() - started
    out["load_average_after"] = os.getloadavg()[0]
    return write_result(results, "parallel", profile_name, out)


def torchrun_main() -> int:
    """One stage of a pipelined MF epoch when started by torchrun (one process a stage)."""
    import argparse
    p = argparse.ArgumentParser(description="pipelined MF, one stage per torchrun process")
    p.add_argument("--profile", default="quick")
    p.add_argument("--out", default="results/claims/torchrun")
    args = p.parse_args()
    if "RANK" not in os.environ:
        print("error: start this under torchrun (RANK and WORLD_SIZE come from it)", file=sys.stderr)
        return 2
    prof = profile(args.profile, "parallel")
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    splits = load_splits(prof["dataset"], prof["seed"], prof["train_limit"], torch.device("cpu"))
    Path(args.out).mkdir(parents=True, exist_ok=True)
    spec = {"seed": prof["seed"], "widths": prof["widths"], "input_shape": list(splits.input_shape),
            "num_classes": splits.num_classes, "device": pick_device().type, "x": splits.train_x,
            "y": splits.train_y, "orders": orders(len(splits.train_y), prof["seed"], prof["epochs"]),
            "init_method": "env://", "out": args.out}
    mf_stage(rank, world, spec)
    t = torch.load(Path(args.out) / f"stage{rank}.pt", weights_only=True)["timing"]
    print(f"stage {rank}/{world}: blocks {t['blocks']}, epoch {t['epoch_s']:.2f} s, sent {t['sent_bytes']} bytes")
    return 0


if __name__ == "__main__":
    raise SystemExit(torchrun_main())
