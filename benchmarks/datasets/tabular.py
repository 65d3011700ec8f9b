"""Tabular datasets read from files the user provides: the paper's Table 6 Santander set.

``santander`` is the ``train.csv`` of the Kaggle competition "santander-customer-transaction-prediction"
(columns ``ID_code, target, var_0 .. var_199``; 200000 rows; binary target, about 10 % positive).
Kaggle's ``test.csv`` has no labels, so, as for the scikit-learn sets, a fixed stratified 20 % of
``train.csv`` is held out as the test split with a constant seed: it never changes with the run's seed.

The file is looked for at ``$BPFREE_SANTANDER_CSV`` (an explicit path) or in the data dirs as
``santander/train.csv``, ``santander/train.csv.zip`` (Kaggle's single-file download) or the
competition zip ``santander-customer-transaction-prediction.zip`` (only its ``train.csv`` is read).
"""

from __future__ import annotations

import os
import re
import zipfile
from pathlib import Path

import numpy as np

from .base import DATASETS, FINGERPRINTERS, DatasetUnavailable, RawDataset, find_file
from .fingerprint import fingerprint_tree
from .sklearn_sets import SplitArgs, _fixed_split

SANTANDER_ENV = "BPFREE_SANTANDER_CSV"
SANTANDER_COMPETITION = "santander-customer-transaction-prediction"
SANTANDER_CANDIDATES = ("santander/train.csv", "santander/train.csv.zip",
                        f"santander/{SANTANDER_COMPETITION}.zip", f"{SANTANDER_COMPETITION}.zip")
SANTANDER_HOW_TO_GET = (f"`kaggle competitions download -c {SANTANDER_COMPETITION}` (accept the competition "
                        f"rules on kaggle.com first) and put the zip or its train.csv in data/santander/, "
                        f"or set ${SANTANDER_ENV} to the file")
_FEATURE = re.compile(r"var_(\d+)")


def _read_csv(path: Path, **kwargs):
    """``pandas.read_csv`` of the file itself, or of the train.csv inside a zip; one-line errors."""
    import pandas as pd

    zf = None
    source = path
    if path.suffix.lower() == ".zip":
        try:
            zf = zipfile.ZipFile(path)
        except zipfile.BadZipFile:
            raise DatasetUnavailable(f"{path} is not a readable zip file") from None
        names = [n for n in zf.namelist() if Path(n).name == "train.csv"]
        csvs = [n for n in zf.namelist() if n.lower().endswith(".csv")]
        names = names or (csvs if len(csvs) == 1 else [])
        if not names:
            zf.close()
            raise DatasetUnavailable(f"{path} holds no train.csv (it holds {', '.join(zf.namelist()[:5]) or 'nothing'})")
        source = zf.open(names[0])
    try:
        return pd.read_csv(source, engine="c", **kwargs)
    except (ValueError, UnicodeDecodeError) as exc:  # pandas' parser and empty-file errors are ValueErrors
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise DatasetUnavailable(f"{path} is not a readable Santander CSV file: {reason}") from None
    finally:
        if zf is not None:
            zf.close()


def read_santander_csv(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Features (N, F) float32 in ``var_0 .. var_{F-1}`` order and targets (N,) int64 from a train.csv.

    The header is read first, so that a wrong file is named as such before any parsing, and the
    features are parsed straight into float32 (half the memory of pandas' float64 default).
    """
    columns = [str(c) for c in _read_csv(path, nrows=0).columns]
    features = sorted((int(m.group(1)), c) for c in columns if (m := _FEATURE.fullmatch(c)))
    other = [c for c in columns if c not in ("ID_code", "target") and not _FEATURE.fullmatch(c)]
    if "target" not in columns or not features or other:
        what = ("no 'target' column" if "target" not in columns else "no var_<k> columns" if not features
                else f"unexpected column(s) {other[:5]}")
        raise DatasetUnavailable(f"{path} is not the Santander train.csv: it has {what}; expected columns "
                                 f"ID_code, target, var_0, var_1, ... (Kaggle's test.csv has no target: use train.csv)")
    if [k for k, _ in features] != list(range(len(features))):
        raise DatasetUnavailable(f"{path}: the feature columns are not var_0 .. var_{len(features) - 1} without gaps")
    names = [c for _, c in features]
    frame = _read_csv(path, usecols=["target", *names], dtype={"target": np.float64, **dict.fromkeys(names, np.float32)})
    x = frame[names].to_numpy(dtype=np.float32)
    y = frame["target"].to_numpy(dtype=np.float64)
    if not np.isfinite(x).all():
        raise DatasetUnavailable(f"{path}: missing or non-finite feature values")
    if not np.isin(y, (0, 1)).all():
        raise DatasetUnavailable(f"{path}: the target column must hold only 0 and 1")
    if len(np.unique(y)) < 2:
        raise DatasetUnavailable(f"{path}: the target column holds a single class; a stratified split needs both")
    return x, y.astype(np.int64)


def find_santander(data_dirs: list[Path]) -> Path:
    explicit = os.environ.get(SANTANDER_ENV)
    if explicit:
        path = Path(explicit)
        if not path.is_file():
            raise DatasetUnavailable(f"dataset 'santander' not found: ${SANTANDER_ENV} names {path}, which does not "
                                     f"exist; to get it: {SANTANDER_HOW_TO_GET}")
        return path
    path = find_file(data_dirs, SANTANDER_CANDIDATES)
    if path is None:
        raise DatasetUnavailable(f"dataset 'santander' not found: looked for ${SANTANDER_ENV} (unset) and "
                                 f"{', '.join(SANTANDER_CANDIDATES)} in {', '.join(map(str, data_dirs))}; "
                                 f"to get it: {SANTANDER_HOW_TO_GET}")
    return path


@DATASETS.register("santander")
def load_santander(data_dirs: list[Path]) -> RawDataset:
    path = find_santander(data_dirs)
    x, y = read_santander_csv(path)
    source = f"Kaggle {SANTANDER_COMPETITION} train.csv from {path} ({len(y)} rows, {x.shape[1]} features)"
    raw = _fixed_split(x, y, "santander", source, SplitArgs())
    raw.num_classes = 2  # binary whatever the split holds
    return raw


FINGERPRINTERS["santander"] = lambda data_dirs: fingerprint_tree(find_santander(data_dirs))
