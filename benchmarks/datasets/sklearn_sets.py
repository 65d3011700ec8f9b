"""Datasets bundled with scikit-learn: real data that needs no download anywhere.

``digits`` (1797 8x8 grey images, 10 classes) is the suite's embedded default; ``breast_cancer``
(569 samples, 30 features, 2 classes) is the paper's Table 6 tabular set. Neither has an official
test split, so a fixed stratified 20 % is held out with a constant seed: the test set never changes
with the run's seed, only the train/validation split does.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from .base import DATASETS, RawDataset

TEST_FRACTION = 0.2
TEST_SPLIT_SEED = 0  # fixed: every run and every seed is scored on the same test samples


def _fixed_split(x: np.ndarray, y: np.ndarray, name: str, source: str) -> RawDataset:
    from sklearn.model_selection import train_test_split

    tr_x, te_x, tr_y, te_y = train_test_split(x, y, test_size=TEST_FRACTION, random_state=TEST_SPLIT_SEED,
                                              stratify=y)
    f = lambda a: torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32))  # noqa: E731
    g = lambda a: torch.from_numpy(a.astype(np.int64))  # noqa: E731
    return RawDataset(name, f(tr_x), g(tr_y), f(te_x), g(te_y), int(y.max()) + 1, source, exact=True)


@DATASETS.register("digits")
def load_digits(data_dirs: list[Path]) -> RawDataset:
    from sklearn.datasets import load_digits as sk_digits

    d = sk_digits()
    images = d.images.reshape(-1, 1, 8, 8) / 16.0  # pixel values are 0..16
    return _fixed_split(images, d.target, "digits", "scikit-learn load_digits (bundled)")


@DATASETS.register("breast_cancer")
def load_breast_cancer(data_dirs: list[Path]) -> RawDataset:
    from sklearn.datasets import load_breast_cancer as sk_bc

    d = sk_bc()
    return _fixed_split(d.data, d.target, "breast_cancer", "scikit-learn load_breast_cancer (bundled)")
