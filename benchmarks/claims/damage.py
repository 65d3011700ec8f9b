"""A damaged layer (Section 3.3 of the Mono-Forward paper): predict around it, retrain it alone.

Layer k (1-based) of a trained MF net and of a trained BP net (runs of the runner that kept their
weights, or any finished run named by its folder) is damaged in one of three ways, on the weight
matrix of its linear layer (biases untouched, MF's projection ``M_k`` kept):

* ``noise_s``: Gaussian noise of standard deviation s times the weight matrix's own std;
* ``zero_f``: a fraction f of the layer's units switched off (their rows of W and their biases 0);
* ``reinit``: the layer drawn again as at construction (PyTorch's default Linear init).

The same seeded draw damages MF and BP. Without retraining, BP predicts through its damaged stack
and MF both through the damaged stack (``ff``, every layer's readout) and from the readouts of the
undamaged layers below k alone. Then only layer k is retrained, epoch by epoch, with a fresh Adam:
MF from its local loss (the layers above are left as they are), BP from the output loss through
the frozen layers above it.
"""

from __future__ import annotations

import time
from pathlib import Path

import torch

from benchmarks.run.runner import run_experiment

from .common import (EVAL_BATCH, base_config, bp_layer_step, clone, fresh_optimizer, linear_of, mf_local_step,
                     pick_device, profile, test_acc, train_epochs, trainer_from_run, write_result)


def damage_names(prof: dict) -> list[str]:
    return [*(f"noise_{s:g}" for s in prof["noise"]), *(f"zero_{f:g}" for f in prof["zero"]), "reinit"]


@torch.no_grad()
def damage(trainer, k: int, name: str, seed: int) -> None:
    """Damage layer ``k`` (1-based) of ``trainer`` in place; ``seed`` fixes the random draw."""
    layer = linear_of(trainer.net.blocks[k - 1])
    w = layer.weight
    g = torch.Generator(device="cpu").manual_seed(seed)
    kind, _, value = name.partition("_")
    if kind == "noise":
        w.add_(float(value) * w.std() * torch.randn(w.shape, generator=g).to(w.device))
    elif kind == "zero":
        off = torch.randperm(w.shape[0], generator=g)[: round(float(value) * w.shape[0])].to(w.device)
        w[off] = 0
        if layer.bias is not None:
            layer.bias[off] = 0
    elif name == "reinit":
        state = torch.random.get_rng_state()
        torch.manual_seed(seed)  # reset_parameters draws from the global generator
        layer.reset_parameters()
        torch.random.set_rng_state(state)
    else:
        raise ValueError(f"unknown damage {name!r}")


def mf_sum_acc(trainer, splits, layers: range) -> float | None:
    """MF's test accuracy from the summed readouts of ``layers`` (1-based) alone; None if empty."""
    if not layers:
        return None
    trainer.train(False)
    correct = 0
    with torch.no_grad():
        for s in range(0, len(splits.test_y), EVAL_BATCH):
            x = splits.test_x[s:s + EVAL_BATCH]
            scores = sum(trainer.predict(x, f"layer{i}") for i in layers)
            correct += int((scores.argmax(1) == splits.test_y[s:s + EVAL_BATCH]).sum())
    trainer.train(True)
    return 100.0 * correct / len(splits.test_y)


def accuracies(trainer, algorithm: str, splits, k: int) -> dict:
    """BP: its output. MF: every layer (``ff``), the layers below k (``below``), layers 1..k (``upto``)."""
    if algorithm == "bp":
        return {"output": test_acc(trainer, splits)}
    return {"ff": test_acc(trainer, splits, "ff"), "below": mf_sum_acc(trainer, splits, range(1, k)),
            "upto": mf_sum_acc(trainer, splits, range(1, k + 1))}


def retrain(trainer, algorithm: str, splits, k: int, seed: int, epochs: int) -> list[dict]:
    """Retrain layer k alone for ``epochs`` epochs; per epoch its time and the accuracies."""
    block = trainer.net.blocks[k - 1]
    if algorithm == "mf":
        opt = fresh_optimizer(trainer, [*block.parameters(), trainer.projections[k - 1]])
        step = mf_local_step(trainer, k - 1, opt)
    else:
        for p in trainer.parameters():
            p.requires_grad_(False)
        for p in block.parameters():
            p.requires_grad_(True)
        opt = fresh_optimizer(trainer, block.parameters())
        step = bp_layer_step(trainer, k - 1, opt)
    # the retraining sees a data order of its own (seed + 1): not the batches of the first training
    return train_epochs(trainer, splits, seed + 1, epochs, step=step,
                        extra=lambda: accuracies(trainer, algorithm, splits, k))


def study_run(run_dir: Path, prof: dict, device, data_dirs=None, log=print) -> dict:
    """Every damage of every profile layer of one finished run."""
    cfg, trainer, splits = trainer_from_run(run_dir, device, data_dirs)
    algorithm, depth = cfg["algorithm"], len(cfg["arch_args"]["widths"])
    if algorithm not in ("mf", "bp"):
        raise ValueError(f"the damage study compares MF and BP, {run_dir.name} is {algorithm}")
    out = {"run": run_dir.name, "algorithm": algorithm, "dataset": cfg["dataset"], "widths": cfg["arch_args"]["widths"],
           "train": len(splits.train_y), "epochs": cfg["epochs"],
           "undamaged": accuracies(trainer, algorithm, splits, depth),
           "layers": {}}
    for k in [k for k in prof["layers"] if k <= depth]:
        per = {"undamaged": accuracies(trainer, algorithm, splits, k), "damages": {}}
        for i, name in enumerate(damage_names(prof)):
            t = clone(trainer)
            damage(t, k, name, seed=1000 * k + i)  # one draw per (layer, damage), the same for MF and BP
            row = {"no_retraining": accuracies(t, algorithm, splits, k)}
            if name in prof["retrain"]:
                log(f"damage {run_dir.name}: layer {k} {name}, retraining it")
                row["retraining"] = retrain(t, algorithm, splits, k, cfg["seed"], prof["retrain_epochs"])
            per["damages"][name] = row
        out["layers"][str(k)] = per
    return out


def run(profile_name: str, results: Path, data_dirs=None, device: str = "auto", from_runs=(), log=print) -> Path:
    """The profile's MF and BP base runs (trained by the runner with save=final, reused when done),
    or the finished runs named in ``from_runs``, each damaged and retrained."""
    prof = profile(profile_name, "damage")
    dev = pick_device(device)
    started = time.perf_counter()
    run_dirs = [Path(r) for r in from_runs]
    if not run_dirs:
        for dataset in prof["datasets"]:
            for widths in prof["nets"]:
                for algorithm in ("mf", "bp"):
                    cfg = base_config(algorithm, dataset, widths, prof, results, "claims_damage", data_dirs)
                    cfg.device = str(dev)
                    log(f"damage: base run {algorithm} {dataset} {'x'.join(map(str, widths))}")
                    run_dirs.append(run_experiment(cfg).run_dir)
    studies = [study_run(d, prof, dev, data_dirs, log) for d in run_dirs]
    value = {"experiment": "damage", "profile": profile_name, "settings": prof, "device": str(dev),
             "torch": torch.__version__, "threads": torch.get_num_threads(), "runs": studies,
             "wall_time_s": time.perf_counter() - started}
    return write_result(results, "damage", profile_name, value)
