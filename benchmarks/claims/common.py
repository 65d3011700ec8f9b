"""What the three claim experiments share: profiles, data, trainers, data order, local steps, results.

A profile fixes every setting of every experiment, so that a result file says what was run. Data
order is the runner's (one ``torch.randperm`` per epoch from a generator seeded with the run's
seed), so a network trained here sees the batches a run of the runner with the same seed sees.
"""

from __future__ import annotations

import copy
import json
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from algorithms import ALGORITHMS, ConfigError
from algorithms.base import Trainer, make_optimizer
from benchmarks.run.config import ExperimentConfig
from benchmarks.datasets import Splits, load_dataset, prepare_splits
from benchmarks.run.runner import CHECKPOINT, seed_everything
from benchmarks.common.files import read_json, write_json

EXPERIMENTS = ("hotplug", "damage", "parallel")

# quick: 2 CPU cores shared with other work, minutes per experiment; paper: the paper's data in full
# and enough epochs to converge (meant for a GPU). Batch 64 and Adam 1e-3 are the suite's defaults.
PROFILES: dict[str, dict[str, Any]] = {
    "quick": {
        "hotplug": {"datasets": ["mnist"], "width": 1000, "train_limit": 10000, "epochs": 5, "seed": 0},
        "damage": {"datasets": ["mnist", "fmnist"], "nets": [[1000, 1000], [1000, 1000, 1000]],
                   "train_limit": 10000, "epochs": 5, "seed": 0, "layers": [2],
                   "noise": [0.5, 1.0, 2.0, 4.0], "zero": [0.5, 0.9],
                   "retrain": ["noise_1", "zero_0.5", "reinit"], "retrain_epochs": 3},
        "parallel": {"dataset": "mnist", "widths": [1000, 1000, 1000, 1000], "train_limit": 10000,
                     "epochs": 1, "repeats": 2, "processes": 2, "seed": 0},
    },
    "paper": {
        "hotplug": {"datasets": ["mnist", "fmnist"], "width": 1000, "train_limit": None, "epochs": 20, "seed": 0},
        "damage": {"datasets": ["mnist", "fmnist"], "nets": [[1000, 1000], [1000, 1000, 1000]],
                   "train_limit": None, "epochs": 20, "seed": 0, "layers": [1, 2, 3],
                   "noise": [0.25, 0.5, 1.0, 2.0, 4.0], "zero": [0.25, 0.5, 0.9],
                   # every damage is scored without retraining; the three that hurt most are retrained, 5 epochs:
                   # in the quick profile one epoch already recovered most of the accuracy, and the milder
                   # damages cost at most a few tenths of a point (each retraining: ~25 s here, one core)
                   "retrain": ["noise_4", "zero_0.9", "reinit"], "retrain_epochs": 5},
        "parallel": {"dataset": "mnist", "widths": [1000, 1000, 1000, 1000], "train_limit": None,
                     "epochs": 1, "repeats": 3, "processes": 2, "seed": 0},
    },
}
BATCH = 64  # the paper's Table 5 mini-batch, the suite's default
EVAL_BATCH = 2000
VAL_FRACTION = 0.1  # as every run of the suite: validation carved from the training split


def profile(name: str, experiment: str) -> dict[str, Any]:
    if name not in PROFILES:
        raise ConfigError(f"unknown profile {name!r}; choose one of: {', '.join(PROFILES)}")
    return dict(PROFILES[name][experiment])


def result_path(results: Path, experiment: str, profile_name: str) -> Path:
    return Path(results) / "claims" / f"{experiment}_{profile_name}.json"


def write_result(results: Path, experiment: str, profile_name: str, value: dict) -> Path:
    path = result_path(results, experiment, profile_name)
    write_json(path, value)
    return path


def read_result(results: Path, experiment: str, profile_name: str) -> dict | None:
    path = result_path(results, experiment, profile_name)
    return json.loads(path.read_text()) if path.exists() else None


def pick_device(name: str = "auto") -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(name)


def load_splits(dataset: str, seed: int, train_limit: int | None, device: torch.device,
                data_dirs: list[str] | None = None) -> Splits:
    return prepare_splits(load_dataset(dataset, data_dirs), VAL_FRACTION, seed, device, train_limit)


def build(algorithm: str, splits: Splits, widths: list[int], seed: int, device: torch.device,
          hparams: dict | None = None) -> Trainer:
    """A fresh trainer as the runner builds it: global seed first, then the constructor."""
    seed_everything(seed)
    return ALGORITHMS.get(algorithm)(splits.input_shape, splits.num_classes, "mlp",
                                     {"widths": list(widths)}, hparams or {}).to(device)


def orders(n: int, seed: int, epochs: int) -> list[torch.Tensor]:
    """The runner's data order: one permutation per epoch from a generator seeded with ``seed``."""
    g = torch.Generator().manual_seed(seed)
    return [torch.randperm(n, generator=g) for _ in range(epochs)]


def batches(n: int, batch_size: int = BATCH) -> list[tuple[int, int]]:
    return [(s, min(batch_size, n - s)) for s in range(0, n, batch_size)]


@torch.no_grad()
def test_acc(trainer: Trainer, splits: Splits, mode: str | None = None) -> float:
    """Test accuracy in % of ``trainer.predict(x, mode)``."""
    trainer.train(False)
    correct = 0
    for s in range(0, len(splits.test_y), EVAL_BATCH):
        scores = trainer.predict(splits.test_x[s:s + EVAL_BATCH], mode)
        correct += int((scores.argmax(1) == splits.test_y[s:s + EVAL_BATCH]).sum())
    trainer.train(True)
    return 100.0 * correct / len(splits.test_y)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def train_epochs(trainer: Trainer, splits: Splits, seed: int, epochs: int, step=None,
                 mode: str | None = None, extra=None) -> list[dict[str, float]]:
    """``epochs`` epochs in the runner's data order; ``step(x, y)`` defaults to ``trainer.update``.

    Returns per epoch the training time (steps only, device synchronised) and the test accuracy in
    ``mode``, and what ``extra()`` returns after that epoch; evaluation is outside the timed part.
    """
    step = step or trainer.update
    device = splits.train_x.device
    rows = []
    for epoch, perm in enumerate(orders(len(splits.train_y), seed, epochs)):
        trainer.start_epoch(epoch, epochs)
        xs, ys = splits.train_x[perm.to(device)], splits.train_y[perm.to(device)]
        sync(device)
        t0 = time.perf_counter()
        for start, size in batches(len(ys)):
            step(xs[start:start + size], ys[start:start + size])
        sync(device)
        elapsed = time.perf_counter() - t0
        rows.append({"epoch": epoch + 1, "time_s": elapsed, "test_acc": test_acc(trainer, splits, mode),
                     **(extra() if extra else {})})
    return rows


def linear_of(block: torch.nn.Module) -> torch.nn.Linear:
    return next(m for m in block.modules() if isinstance(m, torch.nn.Linear))


def mf_local_step(trainer: Trainer, k: int, optimizer: torch.optim.Optimizer):
    """MF's rule for block ``k`` (0-based) alone: blocks below only feed it (no graph), its own local
    cross-entropy through its projection, one step of ``optimizer``. The blocks above do not run."""
    def step(x, y):
        with torch.no_grad():
            for block in trainer.net.blocks[:k]:
                x = block(x)
        loss = F.cross_entropy(trainer.scores(k, trainer.net.blocks[k](x)), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return step


def bp_layer_step(trainer: Trainer, k: int, optimizer: torch.optim.Optimizer):
    """BP with every block below ``k`` frozen (forward only): the loss at the head, gradients through
    the blocks above ``k`` to the parameters ``optimizer`` holds (block k, or block k and the head)."""
    def step(x, y):
        with torch.no_grad():
            for block in trainer.net.blocks[:k]:
                x = block(x)
        for block in trainer.net.blocks[k:]:
            x = block(x)
        loss = F.cross_entropy(trainer.net.head(x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return step


def fresh_optimizer(trainer: Trainer, params) -> torch.optim.Optimizer:
    """A new optimiser of the trainer's kind and settings (no state from earlier training)."""
    return make_optimizer(params, trainer.hp)


def clone(trainer: Trainer) -> Trainer:
    return copy.deepcopy(trainer)


# -- starting from a finished run ------------------------------------------------------------------

def base_config(algorithm: str, dataset: str, widths: list[int], prof: dict, results: Path, tag: str,
                data_dirs: list[str] | None = None) -> ExperimentConfig:
    """The run a claim experiment starts from: the runner's, with its weights kept (save=final)."""
    return ExperimentConfig(algorithm=algorithm, dataset=dataset, arch="mlp", arch_args={"widths": list(widths)},
                            epochs=prof["epochs"], batch_size=BATCH, seed=prof["seed"], val_fraction=VAL_FRACTION,
                            train_limit=prof["train_limit"], train_eval_limit=2000, tag=tag, quiet=True,
                            save="final", data_dirs=data_dirs, results_dir=str(Path(results) / "claims" / "runs"))


def trainer_from_run(run_dir: str | Path, device: torch.device | None = None,
                     data_dirs: list[str] | None = None) -> tuple[dict, Trainer, Splits]:
    """A finished run folder with a checkpoint -> (its config, the trained trainer, its data splits)."""
    run_dir = Path(run_dir)
    if not (run_dir / "config.json").is_file():
        raise ConfigError(f"{run_dir} is not a run folder (no config.json)")
    if not (run_dir / CHECKPOINT).is_file():
        raise ConfigError(f"run {run_dir.name} kept no weights ({CHECKPOINT}); "
                          "run it again with save=final or save=best")
    cfg = read_json(run_dir / "config.json")
    if cfg["arch"] != "mlp":
        raise ConfigError(f"the claim experiments take MLP runs, {run_dir.name} is a {cfg['arch']}")
    device = device or pick_device(cfg["device"] if cfg["device"] != "cuda" or torch.cuda.is_available() else "cpu")
    splits = prepare_splits(load_dataset(cfg["dataset"], data_dirs or cfg.get("data_dirs")), cfg["val_fraction"],
                            cfg["seed"], device, cfg["train_limit"], cfg["test_limit"])
    trainer = ALGORITHMS.get(cfg["algorithm"])(splits.input_shape, splits.num_classes, cfg["arch"], cfg["arch_args"],
                                               cfg["hparams"]).to(device)
    trainer.load_state_dict(torch.load(run_dir / CHECKPOINT, map_location=device, weights_only=True))
    return cfg, trainer, splits
