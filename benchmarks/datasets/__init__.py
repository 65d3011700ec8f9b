"""Datasets by name: ``load_dataset(name)`` finds the files, ``prepare_splits`` makes the tensors.

Each source module registers its datasets in ``DATASETS`` on import.
"""

from .base import (DATASET_KINDS, DATASETS, DatasetCorrupt, DatasetUnavailable, RawDataset, Splits,
                   check_dataset_name, dataset_fingerprint, default_data_dirs, load_dataset, prepare_splits)
from . import idx, images, sklearn_sets, tabular, text, user_csv  # noqa: F401  (registration)

__all__ = ["DATASET_KINDS", "DATASETS", "DatasetCorrupt", "DatasetUnavailable", "RawDataset", "Splits",
           "check_dataset_name", "dataset_fingerprint", "default_data_dirs", "load_dataset", "prepare_splits"]
