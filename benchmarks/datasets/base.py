"""The dataset registry, the raw-dataset record, and splitting into train/val/test tensors.

A dataset source registers a loader ``fn(data_dirs) -> RawDataset`` under its name in ``DATASETS``,
and, when its files can be found without decoding them, a fingerprinter ``fn(data_dirs) -> str``
in ``FINGERPRINTERS`` (see ``fingerprint.py``). A user's own data is named ``kind:PATH``
(``imagefolder:...``, ``csv:...``), its loader ``fn(path, data_dirs)`` registered in ``DATASET_KINDS``.
A named dataset with settings (the config's ``data_args``) puts their dataclass in ``DATASET_ARGS``;
its loader is then called ``fn(data_dirs, args)``.
Every loaded dataset carries its content fingerprint, which is part of every run's identity.
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

from algorithms.typed_config import ConfigError, dataclass_from_dict
from algorithms.registry import Registry

from .fingerprint import fingerprint_arrays

DATA_DIR_ENV = "BPFREE_DATA_DIR"


class DatasetUnavailable(FileNotFoundError):
    """A dataset's files are not on this machine; the message says what was looked for and how to get it."""


class DatasetCorrupt(DatasetUnavailable):
    """A dataset's file is there but cannot be read (truncated, wrong format); the message names it."""


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
    fingerprint: str = ""  # sha256 of the content read (see fingerprint.py); filled in by load_dataset


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
#: name -> fn(data_dirs) -> fingerprint of the files the loader would read (None: hash the loaded arrays)
FINGERPRINTERS: dict[str, Callable[[list[Path]], str | None]] = {}
#: name -> the dataclass of a named dataset's settings (its loader takes them as a second argument)
DATASET_ARGS: dict[str, type] = {}


@dataclass(frozen=True)
class DatasetKind:
    """A user's data of one kind: ``load(path, data_dirs, args)``, ``fingerprint(path, data_dirs, args)``
    and the dataclass of its settings (the config's ``data_args``)."""

    load: Callable[..., "RawDataset"]
    fingerprint: Callable[..., str]
    Args: type


@dataclass
class NoArgs:
    """A dataset without settings."""


DATASET_KINDS: Registry[DatasetKind] = Registry("dataset kind")


def check_dataset_name(name: str) -> None:
    """Refuse an unknown dataset name (or ``kind:PATH`` with an unknown kind or no path)."""
    if not isinstance(name, str):
        raise ConfigError(f"dataset must be a name, got {name!r}")
    kind, sep, path = name.partition(":")
    if sep:
        DATASET_KINDS.get(kind)
        if not path:
            raise ConfigError(f"dataset {name!r} names no path; write {kind}:PATH")
    else:
        DATASETS.get(name)


def data_args_class(name: str) -> type:
    """The settings dataclass of dataset ``name`` (``NoArgs`` for a named dataset without settings)."""
    kind, sep, _ = name.partition(":")
    return DATASET_KINDS.get(kind).Args if sep else DATASET_ARGS.get(name, NoArgs)


def _args(name: str, data_args: dict | None):
    return dataclass_from_dict(data_args_class(name), dict(data_args or {}), f"dataset {name} setting")


def default_data_dirs() -> list[Path]:
    """Where datasets are looked for, in order: $BPFREE_DATA_DIR (colon-separated), ./data,
    ../shared/data (the offline copies beside the repository), /usr/share/datasets (Debian packages)."""
    dirs = [Path(p) for p in os.environ.get(DATA_DIR_ENV, "").split(os.pathsep) if p]
    return dirs + [Path("data"), Path("../shared/data"), Path("/usr/share/datasets")]


def _dirs(data_dirs: Sequence[str | Path] | None) -> list[Path]:
    return [Path(d) for d in data_dirs] if data_dirs else default_data_dirs()


def _files_fingerprint(name: str, dirs: list[Path], data_args: dict | None = None) -> str | None:
    kind, sep, path = name.partition(":")
    if sep:
        return DATASET_KINDS.get(kind).fingerprint(Path(path).expanduser(), dirs, _args(name, data_args))
    fingerprinter = FINGERPRINTERS.get(name)
    return fingerprinter(dirs) if fingerprinter else None


def _arrays_fingerprint(raw: RawDataset) -> str:
    return fingerprint_arrays({"train_x": raw.train_x, "train_y": raw.train_y, "test_x": raw.test_x,
                               "test_y": raw.test_y}, {"num_classes": raw.num_classes})


def load_dataset(name: str, data_dirs: Sequence[str | Path] | None = None,
                 data_args: dict | None = None) -> RawDataset:
    """The dataset ``name`` (a registered name or ``kind:PATH`` with settings ``data_args``), its
    content fingerprint filled in."""
    check_dataset_name(name)
    dirs = _dirs(data_dirs)
    kind, sep, path = name.partition(":")
    args = _args(name, data_args)
    if sep:
        raw = DATASET_KINDS.get(kind).load(Path(path).expanduser(), dirs, args)
    else:
        raw = DATASETS.get(name)(dirs, args) if name in DATASET_ARGS else DATASETS.get(name)(dirs)
    if len(raw.train_y) and (raw.num_classes < 2 or len(torch.unique(raw.train_y)) < 2):
        raise DatasetCorrupt(f"dataset {name}: its training split holds a single class; a classifier needs at "
                             "least two")
    if not raw.fingerprint:
        raw.fingerprint = _files_fingerprint(name, dirs, data_args) or _arrays_fingerprint(raw)
    return raw


def dataset_fingerprint(name: str, data_dirs: Sequence[str | Path] | None = None,
                        data_args: dict | None = None) -> str | None:
    """The fingerprint a run of ``name`` will train with, without decoding the data where the files
    can be hashed directly (then only the files' sizes and dates are read once their hash is
    cached). None when the dataset is not on this machine."""
    dirs = _dirs(data_dirs)
    try:
        return _files_fingerprint(name, dirs, data_args) or load_dataset(name, dirs, data_args).fingerprint
    except DatasetUnavailable:
        return None


def find_file(data_dirs: Sequence[Path], candidates: Sequence[str]) -> Path | None:
    """The first ``dir/candidate`` that exists."""
    for d in data_dirs:
        for c in candidates:
            if (d / c).exists():
                return d / c
    return None


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
