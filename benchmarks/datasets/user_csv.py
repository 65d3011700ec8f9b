"""``csv:PATH``: a user's own table of numeric features and a class label.

PATH is a CSV file with a header row (the training data, and the test data too unless a test file
is given), or a folder holding ``train.csv`` and, optionally, ``test.csv``. Settings (the config's
``data_args``):

* ``label`` (default ``"label"``): the column that holds the class; any values (numbers or text),
  mapped to 0..K-1 in sorted order of the training file's values;
* ``test`` (default none): a CSV file of the test split, with the same columns;
* ``test_fraction`` (default 0.2) and ``split_seed`` (default 0): without a test file, a stratified
  test split carved from the file with that seed, fixed whatever the run's seed (as for the bundled
  scikit-learn sets), so every run of a table is scored on the same rows.

Every other column must be numeric and every value finite. The fingerprint covers the file(s) and
these settings.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from algorithms.typed_config import check

from .base import DATASET_KINDS, DatasetCorrupt, DatasetKind, DatasetUnavailable, RawDataset
from .fingerprint import fingerprint_files


@dataclass
class CsvArgs:
    label: str = "label"
    test: str | None = None
    test_fraction: float = 0.2
    split_seed: int = 0

    def validate(self) -> None:
        check(bool(self.label), "csv dataset: label must name a column")
        check(0 < self.test_fraction < 1, f"csv dataset: test_fraction must be in (0, 1), got {self.test_fraction}")
        check(self.split_seed >= 0, f"csv dataset: split_seed must be >= 0, got {self.split_seed}")


def _files(path: Path, args: CsvArgs) -> tuple[Path, Path | None]:
    """(training file, test file or None)."""
    test = Path(args.test).expanduser() if args.test else None
    if path.is_dir():
        train = path / "train.csv"
        if test is None and (path / "test.csv").is_file():
            test = path / "test.csv"
    else:
        train = path
    if not train.is_file():
        raise DatasetUnavailable(f"dataset csv:{path}: {train} does not exist"
                                 + (" (a folder needs train.csv)" if path.is_dir() else ""))
    if test is not None and not test.is_file():
        raise DatasetUnavailable(f"dataset csv:{path}: test file {test} does not exist")
    return train, test


def _read(path: Path, label: str):
    import pandas as pd

    try:
        frame = pd.read_csv(path)
    except (ValueError, UnicodeDecodeError, OSError) as exc:  # pandas' parser errors are ValueErrors
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise DatasetCorrupt(f"{path} is not a readable CSV file: {reason}") from None
    if len(frame) == 0:
        raise DatasetCorrupt(f"{path} has a header ({', '.join(map(str, frame.columns[:8]))}) but no rows")
    if label not in frame.columns:
        raise DatasetCorrupt(f"{path} has no label column {label!r} (columns: {', '.join(map(str, frame.columns[:8]))}"
                             f"{', ...' if len(frame.columns) > 8 else ''}); name it with data_args label=...")
    features = frame.drop(columns=[label])
    if features.shape[1] == 0:
        raise DatasetCorrupt(f"{path} has no feature column besides {label!r}")
    text = [str(c) for c in features.columns if not pd.api.types.is_numeric_dtype(features[c])]
    if text:
        raise DatasetCorrupt(f"{path}: column {text[0]!r} is not numeric; every feature must be a number")
    x = features.to_numpy(dtype=np.float32)
    if not np.isfinite(x).all():
        raise DatasetCorrupt(f"{path}: missing or non-finite feature values")
    if frame[label].isna().any():
        raise DatasetCorrupt(f"{path}: the label column {label!r} has missing values")
    return x, frame[label].to_numpy(), [str(c) for c in features.columns]


def load_csv(path: Path, data_dirs: list[Path], args: CsvArgs) -> RawDataset:
    from sklearn.model_selection import train_test_split

    train_path, test_path = _files(path, args)
    x, labels, columns = _read(train_path, args.label)
    classes = sorted(set(labels.tolist()), key=str)
    if len(classes) < 2:
        raise DatasetCorrupt(f"{train_path}: the label column {args.label!r} holds a single class")
    index = {c: i for i, c in enumerate(classes)}
    y = np.array([index[v] for v in labels.tolist()], dtype=np.int64)
    if test_path is not None:
        te_x, te_labels, te_columns = _read(test_path, args.label)
        if te_columns != columns:
            raise DatasetCorrupt(f"{test_path} has other feature columns than {train_path}")
        unknown = sorted({str(v) for v in te_labels.tolist() if v not in index})
        if unknown:
            raise DatasetCorrupt(f"{test_path}: label(s) {unknown[:5]} never occur in {train_path}")
        te_y = np.array([index[v] for v in te_labels.tolist()], dtype=np.int64)
        tr_x, tr_y, how = x, y, f"test split {test_path}"
    else:
        counts = np.bincount(y)
        stratify = y if counts.min() >= 2 else None
        try:
            tr_x, te_x, tr_y, te_y = train_test_split(x, y, test_size=args.test_fraction,
                                                      random_state=args.split_seed, stratify=stratify)
        except ValueError as exc:
            raise DatasetCorrupt(f"{train_path}: cannot carve a test split ({exc})") from None
        how = f"test split: {args.test_fraction:.0%} carved with seed {args.split_seed}"
    f = lambda a: torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32))  # noqa: E731
    source = (f"CSV {train_path} ({len(y)} rows, {x.shape[1]} features, label {args.label!r} with "
              f"{len(classes)} classes; {how})")
    return RawDataset(f"csv:{path}", f(tr_x), torch.from_numpy(tr_y), f(te_x), torch.from_numpy(te_y),
                      len(classes), source, exact=True)


def csv_fingerprint(path: Path, data_dirs: list[Path], args: CsvArgs) -> str:
    train, test = _files(path, args)
    files = [("train", train)] + ([("test", test)] if test is not None else [])
    return fingerprint_files(files, {"label": args.label, "test_fraction": None if test else args.test_fraction,
                                     "split_seed": None if test else args.split_seed})


DATASET_KINDS.register("csv")(DatasetKind(load_csv, csv_fingerprint, CsvArgs))
