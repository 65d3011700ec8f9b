"""MNIST and Fashion-MNIST from their original IDX files (``.gz`` or not), with torchvision's
download as the fallback when the files are not on this machine and the internet is reachable."""

from __future__ import annotations

import gzip
import zlib
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from .base import DATASETS, FINGERPRINTERS, DatasetCorrupt, DatasetUnavailable, RawDataset, find_file
from .fingerprint import fingerprint_files
from .online import DOWNLOAD_ROOT, download_with_torchvision

IDX_FILES = {"train_x": "train-images-idx3-ubyte", "train_y": "train-labels-idx1-ubyte",
             "test_x": "t10k-images-idx3-ubyte", "test_y": "t10k-labels-idx1-ubyte"}
IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path: Path) -> np.ndarray:
    """Parse one IDX file: two zero bytes, a dtype code, the number of dims, big-endian sizes, data.

    A file that cannot be read as one (a truncated or non-gzip ``.gz``, a wrong magic number, fewer
    values than the header says) raises ``DatasetCorrupt`` naming the file."""
    try:
        with (gzip.open if path.suffix == ".gz" else open)(path, "rb") as f:
            data = f.read()
    except (OSError, EOFError, zlib.error) as exc:  # gzip.BadGzipFile is an OSError
        raise DatasetCorrupt(f"{path} cannot be read: {type(exc).__name__}: {exc} (a truncated or not gzip file?)"
                             ) from None
    if len(data) < 4 or data[:2] != b"\x00\x00" or data[2] not in IDX_DTYPES:
        raise DatasetCorrupt(f"{path} is not an IDX file (wrong magic number {data[:4].hex() or 'none'})")
    ndim = data[3]
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DatasetCorrupt(f"{path}: truncated IDX header")
    shape = tuple(int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    dtype = np.dtype(IDX_DTYPES[data[2]])
    if (len(data) - header) != int(np.prod(shape)) * dtype.itemsize:
        raise DatasetCorrupt(f"{path}: header says {shape} but holds {(len(data) - header) // dtype.itemsize} "
                             f"values (truncated?)")
    return np.frombuffer(data, dtype=dtype, offset=header).reshape(shape)


def _find_idx_dir(data_dirs: Sequence[Path], folders: Sequence[str]) -> Path | None:
    names = [f"{folder}/{IDX_FILES['train_x']}{ext}" for folder in folders for ext in (".gz", "")]
    hit = find_file(data_dirs, names)
    return hit.parent if hit else None


def _split_files(folder: Path) -> dict[str, Path]:
    out = {}
    for key, stem in IDX_FILES.items():
        path = folder / f"{stem}.gz" if (folder / f"{stem}.gz").exists() else folder / stem
        if not path.exists():
            raise DatasetUnavailable(f"{folder} lacks {stem}[.gz]; it needs all four IDX files")
        out[key] = path
    return out


def _read_split(folder: Path) -> dict[str, np.ndarray]:
    arrays = {key: read_idx(path) for key, path in _split_files(folder).items()}
    for split in ("train", "test"):
        if len(arrays[f"{split}_x"]) != len(arrays[f"{split}_y"]):
            raise DatasetCorrupt(f"{folder}: {len(arrays[f'{split}_x'])} {split} images but "
                                 f"{len(arrays[f'{split}_y'])} labels")
    return arrays


def idx_dataset(name: str, folders: Sequence[str], torchvision_class: str, how_to_get: str):
    def load(data_dirs: list[Path]) -> RawDataset:
        folder = _find_idx_dir(data_dirs, folders)
        if folder is not None:
            arrays, source = _read_split(folder), f"IDX files in {folder}"
        else:
            looked_for = (f"{IDX_FILES['train_x']}[.gz] (and the other three IDX files) under "
                          f"{', '.join(folders)} in {', '.join(map(str, data_dirs))}")
            train, test = (download_with_torchvision(torchvision_class, name, looked_for, how_to_get, train=t)
                           for t in (True, False))
            arrays = {"train_x": train.data.numpy(), "train_y": train.targets.numpy(),
                      "test_x": test.data.numpy(), "test_y": test.targets.numpy()}
            source = f"torchvision download into {DOWNLOAD_ROOT}"
        as_images = lambda a: torch.from_numpy(a.astype(np.float32) / 255.0).unsqueeze(1)  # noqa: E731
        return RawDataset(name, as_images(arrays["train_x"]), torch.from_numpy(arrays["train_y"].astype(np.int64)),
                          as_images(arrays["test_x"]), torch.from_numpy(arrays["test_y"].astype(np.int64)),
                          num_classes=10, source=source, exact=True)

    def fingerprint(data_dirs: list[Path]) -> str | None:
        folder = _find_idx_dir(data_dirs, folders)
        if folder is None:
            return None  # a torchvision download: its arrays are hashed once loaded
        return fingerprint_files([(p.name, p) for p in _split_files(folder).values()])

    DATASETS.register(name)(load)
    FINGERPRINTERS[name] = fingerprint
    return load


load_mnist = idx_dataset("mnist", ["MNIST/raw", "mnist"], "MNIST",
                         "put the four IDX files (.gz or not) in data/MNIST/raw/, or go online for torchvision's download")
load_fmnist = idx_dataset("fmnist", ["fashion-mnist", "FashionMNIST/raw", "fmnist"], "FashionMNIST",
                          "`apt-get install dataset-fashion-mnist` (files land in /usr/share/datasets/fashion-mnist/), "
                          "or go online for torchvision's download")
