"""Image-folder datasets (``<split>/<class>/<image>``, from a folder or a zip), and CIFAR through
torchvision when online.

``cifar10-jpeg`` is the lossy JPEG copy in ../shared/data/cifar10-jpeg/: it keeps its own name in every
result (never "cifar10"). ``imagefolder:PATH`` is a user's own folder or zip of the same layout
(``train/`` and ``test/`` splits; classes are the class-folder names, sorted; every image of one
size, any size; grey, RGBA and palette images become RGB).

Decoding 60000 JPEGs takes a while, so the decoded arrays are cached as one ``.npz`` under
data/cache/, keyed by the content fingerprint of the images (``fingerprint.py``) and the class
list: other pictures, or changed files under the same name, never reuse another set's cache.
"""

from __future__ import annotations

import hashlib
import io
import os
import sys
import zipfile
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from .base import (DATASET_KINDS, DATASETS, FINGERPRINTERS, DatasetCorrupt, DatasetKind, DatasetUnavailable,
                   NoArgs, RawDataset, find_file)
from .fingerprint import cache_dir, fingerprint_tree
from .online import download_with_torchvision

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp")
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")


def _list_members(source: Path) -> list[tuple[str, str, str]]:
    """(split, class, member name) of every image under ``source`` (a folder or a zip)."""
    if source.is_dir():
        names = [p.relative_to(source).as_posix() for p in source.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES]
    else:
        try:
            with zipfile.ZipFile(source) as zf:
                names = [n for n in zf.namelist() if Path(n).suffix.lower() in IMAGE_SUFFIXES]
        except (zipfile.BadZipFile, OSError) as exc:
            raise DatasetCorrupt(f"{source} is not a readable zip file ({type(exc).__name__}: {exc})") from None
    out = []
    for name in sorted(names):
        parts = Path(name).parts
        if len(parts) >= 3 and parts[-3] in ("train", "test"):
            out.append((parts[-3], parts[-2], name))
    return out


def read_image_folder(source: Path, classes: Sequence[str] | None = None) -> dict[str, np.ndarray]:
    """Decode every image into uint8 (N, H, W, C) arrays per split, labels by class-folder order."""
    from PIL import Image, UnidentifiedImageError

    members = _list_members(source)
    if not members:
        raise DatasetUnavailable(f"{source} holds no <split>/<class>/<image> files (split = train or test)")
    missing = [split for split in ("train", "test") if not any(s == split for s, _, _ in members)]
    if missing:
        raise DatasetUnavailable(f"{source} has no {missing[0]}/<class>/<image> files; it needs train/ and test/")
    in_train = sorted({c for s, c, _ in members if s == "train"})
    if len(in_train) < 2:
        raise DatasetCorrupt(f"{source}: train/ holds a single class ({in_train[0]!r}); a classifier needs at "
                             "least two class folders")
    classes = list(classes) if classes else sorted({c for _, c, _ in members})
    label_of = {c: i for i, c in enumerate(classes)}
    zf = zipfile.ZipFile(source) if source.is_file() else None
    arrays: dict[str, list] = {"train_x": [], "train_y": [], "test_x": [], "test_y": []}
    first = None  # (member name, shape) of the first image: every other must match it
    try:
        for split, cls, name in members:
            if cls not in label_of:
                raise DatasetUnavailable(f"{source}: class folder {cls!r} is not one of {classes}")
            try:
                raw = zf.read(name) if zf else (source / name).read_bytes()
                image = np.asarray(Image.open(io.BytesIO(raw)).convert("RGB"))
            except (UnidentifiedImageError, OSError, zipfile.BadZipFile, ValueError) as exc:
                raise DatasetCorrupt(f"{source}: {name} is not a readable image ({type(exc).__name__})") from None
            if first is None:
                first = (name, image.shape)
            elif image.shape != first[1]:
                raise DatasetCorrupt(f"{source}: {name} is {image.shape[1]}x{image.shape[0]} but {first[0]} is "
                                     f"{first[1][1]}x{first[1][0]}; every image must have one size")
            arrays[f"{split}_x"].append(image)
            arrays[f"{split}_y"].append(label_of[cls])
    finally:
        if zf:
            zf.close()
    return {k: np.stack(v) if k.endswith("_x") else np.asarray(v, dtype=np.int64) for k, v in arrays.items()}


DECODE_VERSION = 1  # part of the decode cache's key: change it whenever read_image_folder changes


def image_fingerprint(source: Path) -> str:
    """Content fingerprint of an image folder's images (or of a zip's bytes)."""
    return fingerprint_tree(source, IMAGE_SUFFIXES)


def _cached_image_folder(source: Path, classes: Sequence[str] | None, fingerprint: str
                         ) -> dict[str, np.ndarray]:
    """Decoded arrays of ``source``, cached by its content fingerprint and the class list."""
    key = f"{fingerprint}|{list(classes) if classes else 'sorted'}|{DECODE_VERSION}"
    try:
        cache = cache_dir() / f"images-{hashlib.sha256(key.encode()).hexdigest()[:20]}.npz"
    except OSError:  # no cache folder can be made (read-only, full disk): decode every time
        return read_image_folder(source, classes)
    if cache.exists():
        try:
            with np.load(cache) as f:
                return dict(f)
        except (OSError, ValueError, EOFError, zipfile.BadZipFile):  # a damaged cache file: decode again
            cache.unlink(missing_ok=True)
    arrays = read_image_folder(source, classes)
    tmp = cache.with_name(f".{cache.stem}.{os.getpid()}.tmp.npz")
    try:
        np.savez(tmp, **arrays)
        tmp.replace(cache)
    except OSError as exc:  # e.g. a full disk: only the cache is skipped, the run goes on
        tmp.unlink(missing_ok=True)
        print(f"note: decode cache {cache} not written ({exc.strerror or exc}); the images are decoded again "
              "next time", file=sys.stderr)
    return arrays


def _images_to_tensor(x: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(x).permute(0, 3, 1, 2).float().div_(255.0).contiguous()


def _raw_from_arrays(name, arrays, num_classes, source, exact) -> RawDataset:
    return RawDataset(name, _images_to_tensor(arrays["train_x"]), torch.from_numpy(arrays["train_y"]),
                      _images_to_tensor(arrays["test_x"]), torch.from_numpy(arrays["test_y"]),
                      num_classes, source, exact)


ORDER_SEED = 0  # fixed: every run sees the same order, so the same test subset under a test_limit


def _interleave_classes(arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """An image folder is read class by class; put each split in one fixed random order, so that its
    first n samples (``test_limit``) hold every class, as in the original datasets' files."""
    rng = np.random.default_rng(ORDER_SEED)
    out = {}
    for split in ("train", "test"):
        order = rng.permutation(len(arrays[f"{split}_y"]))
        out[f"{split}_x"], out[f"{split}_y"] = arrays[f"{split}_x"][order], arrays[f"{split}_y"][order]
    return out


def _find_cifar10_jpeg(data_dirs: list[Path]) -> Path:
    candidates = ["cifar10-jpeg/cifar10-jpeg.zip", "cifar10-jpeg.zip", "cifar10-jpeg"]
    source = find_file(data_dirs, candidates)
    if source is None:
        raise DatasetUnavailable(
            f"dataset 'cifar10-jpeg' not found: looked for {', '.join(candidates)} in "
            f"{', '.join(map(str, data_dirs))}; it is the lossy JPEG copy of CIFAR-10 in "
            f"../shared/data/cifar10-jpeg/ (a folder of other images is the dataset imagefolder:PATH)")
    return source


@DATASETS.register("cifar10-jpeg")
def load_cifar10_jpeg(data_dirs: list[Path]) -> RawDataset:
    source = _find_cifar10_jpeg(data_dirs)
    fingerprint = image_fingerprint(source)
    arrays = _interleave_classes(_cached_image_folder(source, CIFAR10_CLASSES, fingerprint))
    raw = _raw_from_arrays("cifar10-jpeg", arrays, 10, f"JPEG image folder {source} (lossy copy of CIFAR-10)",
                           exact=False)
    raw.fingerprint = fingerprint
    return raw


FINGERPRINTERS["cifar10-jpeg"] = lambda data_dirs: image_fingerprint(_find_cifar10_jpeg(data_dirs))


def load_image_folder(path: Path, data_dirs: list[Path], args=None) -> RawDataset:
    """``imagefolder:PATH``: a user's ``<split>/<class>/<image>`` folder or zip."""
    if not path.exists():
        raise DatasetUnavailable(f"dataset imagefolder:{path}: {path} does not exist")
    fingerprint = image_fingerprint(path)
    arrays = _interleave_classes(_cached_image_folder(path, None, fingerprint))
    classes = sorted({c for _, c, _ in _list_members(path)})
    raw = _raw_from_arrays(f"imagefolder:{path}", arrays, len(classes),
                           f"image folder {path} ({len(classes)} classes: {', '.join(classes[:10])}"
                           f"{', ...' if len(classes) > 10 else ''})", exact=True)
    raw.fingerprint = fingerprint
    return raw


def _image_folder_fingerprint(path: Path, data_dirs: list[Path], args=None) -> str:
    if not path.exists():
        raise DatasetUnavailable(f"dataset imagefolder:{path}: {path} does not exist")
    return image_fingerprint(path)


DATASET_KINDS.register("imagefolder")(DatasetKind(load_image_folder, _image_folder_fingerprint, NoArgs))


def _torchvision_cifar(name: str, class_name: str, num_classes: int):
    def load(data_dirs: list[Path]) -> RawDataset:
        how = "go online for torchvision's download (no offline copy exists" + (
            "; the lossy offline copy is the dataset 'cifar10-jpeg')" if name == "cifar10" else ")")
        looked_for = f"torchvision's {class_name} files under {Path('data')}"
        train, test = (download_with_torchvision(class_name, name, looked_for, how, train=t) for t in (True, False))
        arrays = {"train_x": train.data, "train_y": np.asarray(train.targets, dtype=np.int64),
                  "test_x": test.data, "test_y": np.asarray(test.targets, dtype=np.int64)}
        return _raw_from_arrays(name, arrays, num_classes, f"torchvision {class_name} in data/", exact=True)

    DATASETS.register(name)(load)
    return load


load_cifar10 = _torchvision_cifar("cifar10", "CIFAR10", 10)
load_cifar100 = _torchvision_cifar("cifar100", "CIFAR100", 100)
