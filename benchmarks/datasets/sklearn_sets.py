"""Datasets bundled with scikit-learn: real data that needs no download anywhere.

``digits`` (1797 8x8 grey images, 10 classes) is the suite's embedded default; ``breast_cancer``
(569 samples, 30 features, 2 classes) is the paper's Table 6 tabular set. Neither has an official
test split, so a fixed 20 % is held out with a constant seed: the test set never changes with the
run's seed, only the train/validation split does. Which 20 % is a setting (``data_args``):
``test_split_seed`` and ``stratify`` are scikit-learn's ``train_test_split`` arguments.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .base import DATASET_ARGS, DATASETS, RawDataset

TEST_FRACTION = 0.2


@dataclass
class SplitArgs:
    """Which fixed 20 % is the test split: ``train_test_split(test_size=0.2, random_state=test_split_seed,
    stratify=y if stratify else None)``. The default keeps the class ratio; ``{test_split_seed: 42,
    stratify: false}`` is the split of most published Breast Cancer results (see specs/table6.yaml)."""

    test_split_seed: int = 0  # fixed: every run and every seed is scored on the same test samples
    stratify: bool = True


def _fixed_split(x: np.ndarray, y: np.ndarray, name: str, source: str, args: SplitArgs) -> RawDataset:
    from sklearn.model_selection import train_test_split

    tr_x, te_x, tr_y, te_y = train_test_split(x, y, test_size=TEST_FRACTION, random_state=args.test_split_seed,
                                              stratify=y if args.stratify else None)
    f = lambda a: torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32))  # noqa: E731
    g = lambda a: torch.from_numpy(a.astype(np.int64))  # noqa: E731
    split = (f"; test split: {len(te_y)} samples, train_test_split(test_size={TEST_FRACTION}, "
             f"random_state={args.test_split_seed}{', stratified' if args.stratify else ''})")
    return RawDataset(name, f(tr_x), g(tr_y), f(te_x), g(te_y), int(y.max()) + 1, source + split, exact=True)


@DATASETS.register("digits")
def load_digits(data_dirs: list[Path], args: SplitArgs) -> RawDataset:
    from sklearn.datasets import load_digits as sk_digits

    d = sk_digits()
    images = d.images.reshape(-1, 1, 8, 8) / 16.0  # pixel values are 0..16
    return _fixed_split(images, d.target, "digits", "scikit-learn load_digits (bundled)", args)


@DATASETS.register("breast_cancer")
def load_breast_cancer(data_dirs: list[Path], args: SplitArgs) -> RawDataset:
    from sklearn.datasets import load_breast_cancer as sk_bc

    d = sk_bc()
    return _fixed_split(d.data, d.target, "breast_cancer", "scikit-learn load_breast_cancer (bundled)", args)


DATASET_ARGS.update(digits=SplitArgs, breast_cancer=SplitArgs)
