"""Datasets by name: ``load_dataset(name)`` finds the files, ``prepare_splits`` makes the tensors.

Each source module registers its datasets in ``DATASETS`` on import.
"""

from .base import (DATASETS, DatasetUnavailable, RawDataset, Splits, default_data_dirs, load_dataset,
                   prepare_splits)
from . import idx, images, sklearn_sets, tabular, text  # noqa: F401  (registration)

__all__ = ["DATASETS", "DatasetUnavailable", "RawDataset", "Splits", "default_data_dirs", "load_dataset",
           "prepare_splits"]
