"""The dataset registry, the raw-dataset record, and splitting into train/val/test tensors.

A dataset source registers a loader ``fn(data_dirs) -> RawDataset`` under its name in ``DATASETS``.
``prepare_splits`` then carves a seeded validation split out of the training data, normalises with
statistics of the training split only, and puts each split on the device as one tensor, so that the
training loop never touches per-sample Python.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import torch

from algorithms.base import ConfigError
from algorithms.registry import Registry

DATA_DIR_ENV = "BPFREE_DATA_DIR"


class DatasetUnavailable(FileNotFoundError):
    """A dataset's files are not on this machine; the message says what was looked for and how to get it."""


@dataclass
class RawDataset:
    name: str
    train_x: torch.Tensor  # images: float (N, C, H, W) in [0, 1]; tabular: float (N, F); text: long (N, L)
    train_y: torch.Tensor  # long (N,)
    test_x: torch.Tensor
    test_y: torch.Tensor
    num_classes: int
    source: str  # where the data came from, recorded in every run folder
    exact: bool  # False for lossy copies such as cifar10-jpeg
    normalise: bool = True  # False for token ids


@dataclass
class Splits:
    train_x: torch.Tensor
    train_y: torch.Tensor
    val_x: torch.Tensor
    val_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    num_classes: int
    input_shape: tuple[int, ...]
    name: str
    source: str
    mean: list[float] | None
    std: list[float] | None


DATASETS: Registry[Callable[[list[Path]], RawDataset]] = Registry("dataset")


def default_data_dirs() -> list[Path]:
    """Where datasets are looked for, in order: $BPFREE_DATA_DIR (colon-separated), ./data,
    ../shared/data (the offline copies beside the repository), /usr/share/datasets (Debian packages)."""
    dirs = [Path(p) for p in os.environ.get(DATA_DIR_ENV, "").split(os.pathsep) if p]
    return dirs + [Path("data"), Path("../shared/data"), Path("/usr/share/datasets")]


def load_dataset(name: str, data_dirs: Sequence[str | Path] | None = None) -> RawDataset:
    loader = DATASETS.get(name)
    dirs = [Path(d) for d in data_dirs] if data_dirs else default_data_dirs()
    return loader(dirs)


def find_file(data_dirs: Sequence[Path], candidates: Sequence[str]) -> Path | None:
    """The first ``dir/candidate`` that exists."""
    for d in data_dirs:
        for c in candidates:
            if (d / c).exists():
                return d / c
    return None


def cache_dir() -> Path:
    """Decoded copies of slow-to-read sources (e.g. 60000 JPEGs) go here; never into ../shared."""
    path = Path(os.environ.get("BPFREE_CACHE_DIR", "data/cache"))
    path.mkdir(parents=True, exist_ok=True)
    return path


def prepare_splits(raw: RawDataset, val_fraction: float, seed: int, device: torch.device | str = "cpu",
                   train_limit: int | None = None, test_limit: int | None = None) -> Splits:
    """Seeded train/val split, train-only normalisation, and every split on ``device`` as one tensor.

    ``train_limit`` keeps the first n of the shuffled training part (validation is carved first, so a
    limit never changes which samples validate); ``test_limit`` keeps the first n test samples.
    """
    if not 0.0 <= val_fraction < 1.0:
        raise ConfigError(f"val_fraction must be in [0, 1), got {val_fraction}")
    n = len(raw.train_y)
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    n_val = int(round(val_fraction * n))
    val_idx, train_idx = perm[:n_val], perm[n_val:]
    if train_limit is not None:
        train_idx = train_idx[:train_limit]
    test_x, test_y = raw.test_x, raw.test_y
    if test_limit is not None:
        test_x, test_y = test_x[:test_limit], test_y[:test_limit]
    train_x, val_x = raw.train_x[train_idx], raw.train_x[val_idx]

    mean = std = None
    if raw.normalise:
        # Per channel for images (N, C, H, W); per feature for tabular data (N, F).
        dims = [0] + list(range(2, train_x.dim()))
        m = train_x.float().mean(dim=dims, keepdim=True)
        s = train_x.float().std(dim=dims, keepdim=True).clamp_min(1e-8)  # constant features stay finite
        train_x, val_x, test_x = ((t.float() - m) / s for t in (train_x, val_x, test_x))
        mean, std = m.flatten().tolist(), s.flatten().tolist()

    device = torch.device(device)
    to = lambda t: t.to(device).contiguous()  # noqa: E731
    return Splits(to(train_x), to(raw.train_y[train_idx]), to(val_x), to(raw.train_y[val_idx]),
                  to(test_x), to(test_y), raw.num_classes, tuple(raw.train_x.shape[1:]), raw.name,
                  raw.source, mean, std)
