"""Text datasets as fixed-length token ids: the paper's Table 6 IMDB set.

``imdb`` is the Stanford Large Movie Review dataset (Maas et al. 2011), ``aclImdb_v1.tar.gz``:
25000 training and 25000 test reviews, half positive (label 1), half negative (label 0); the
50000 unlabelled ``train/unsup`` reviews are not used. It is looked for in the data dirs as
``aclImdb_v1.tar.gz`` (or an extracted ``aclImdb/`` folder), else downloaded into the first writable
data dir when online (never with BPFREE_NO_DOWNLOAD=1). An archive is checked against its published
SHA-256 before use; the tar is streamed, nothing is extracted to disk.

Each review is lowercased, its ``<br />`` tags become spaces, and it is split into words by a
simple regex (letters and digits, inner apostrophes kept: "don't"). The vocabulary comes from the
training split only: the ``IMDB_VOCAB_SIZE - 2`` most frequent training words get ids 2.., ties
broken alphabetically; id 0 is padding and 1 any other word. Every review becomes its first
``IMDB_SEQUENCE_LENGTH`` ids, padded with 0 at the end. Ids are not normalised (``normalise=False``).

Tokenising 50000 reviews takes a while, so the encoded tensors (and the vocabulary) are cached as
one ``.pt`` under data/cache/ (``$BPFREE_CACHE_DIR``), keyed by the source's path, size and mtime and
by every setting above; a second load reads only that file.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import sys
import tarfile
import urllib.request
import zlib
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

import numpy as np
import torch

from algorithms.text_models import IMDB_VOCAB_SIZE, PAD_ID, UNKNOWN_ID

from .base import DATASETS, FINGERPRINTERS, DatasetUnavailable, RawDataset, find_file
from .fingerprint import cache_dir
from .fingerprint import fingerprint_tree
from .online import CONNECT_TIMEOUT_S

IMDB_URL = "https://ai.stanford.edu/~amaas/data/sentiment/aclImdb_v1.tar.gz"
IMDB_ARCHIVE = "aclImdb_v1.tar.gz"
# The published SHA-256 of aclImdb_v1.tar.gz (84125825 bytes), as in Hugging Face datasets' IMDB
# dataset_infos (download_checksums) and TensorFlow Datasets' imdb_reviews checksums; torchtext's
# IMDB definition gives the same file's MD5, 7c2ac02c03563afcf9b574c7e56c153a.
IMDB_SHA256 = "c40f74a18d3b61f90feba1e17730e0d38e8b97c05fde7008942e91923d1658fe"
# Ids kept per review. Reviews average about 230 words (median about 175), so 400 keeps the whole
# of most reviews (the length of the Keras IMDB CNN and fastText examples); mean pooling makes the
# extra positions cheap, and 50000 x 400 ids are 160 MB as int64.
IMDB_SEQUENCE_LENGTH = 400
TOKENISER_VERSION = 1  # part of the cache key: change it whenever tokenise() changes
LABELS = {"neg": 0, "pos": 1}

_BREAK = re.compile(r"<br\s*/?>", re.IGNORECASE)
_WORD = re.compile(r"[^\W_]+(?:'[^\W_]+)*")  # letters/digits in any script, inner apostrophes kept


def tokenise(text: str) -> list[str]:
    """Lowercase words of a review: ``"Great<br />film, isn't it?"`` -> ``["great", "film", "isn't", "it"]``."""
    return _WORD.findall(_BREAK.sub(" ", text.lower()))


def build_vocabulary(token_lists: Iterable[Sequence[str]], size: int) -> list[str]:
    """Id -> word: padding, unknown, then the ``size - 2`` most frequent words (ties alphabetical)."""
    counts = Counter(word for tokens in token_lists for word in tokens)
    words = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[: max(size - 2, 0)]
    vocab = [""] * 2 + [w for w, _ in words]
    vocab[PAD_ID], vocab[UNKNOWN_ID] = "<pad>", "<unk>"
    return vocab


def encode(token_lists: Sequence[Sequence[str]], vocab: Sequence[str], length: int) -> np.ndarray:
    """(N, length) ids: each review's first ``length`` words, unknown words as 1, padded with 0."""
    index = {w: i for i, w in enumerate(vocab) if i not in (PAD_ID, UNKNOWN_ID)}
    out = np.full((len(token_lists), length), PAD_ID, dtype=np.int32)
    for row, tokens in enumerate(token_lists):
        ids = [index.get(w, UNKNOWN_ID) for w in tokens[:length]]
        out[row, : len(ids)] = ids
    return out


def _review_key(name: str) -> tuple[str, str] | None:
    """(split, label) of ``.../aclImdb/<split>/<pos|neg>/<id>_<rating>.txt``, else None."""
    parts = Path(name).parts
    if len(parts) >= 3 and parts[-3] in ("train", "test") and parts[-2] in LABELS and parts[-1].endswith(".txt"):
        return parts[-3], parts[-2]
    return None


def _iter_reviews(source: Path) -> Iterator[tuple[str, str, str, str]]:
    """(split, label name, member name, text) of every labelled review in a tar(.gz) or a folder."""
    if source.is_dir():
        for split in ("train", "test"):
            for label in LABELS:
                for path in sorted((source / split / label).glob("*.txt")):
                    yield split, label, str(path.relative_to(source)), path.read_text(encoding="utf-8", errors="replace")
        return
    try:
        with tarfile.open(source, mode="r|*") as tar:  # streaming: members are read in order, never extracted
            for member in tar:
                key = _review_key(member.name) if member.isfile() else None
                if key is not None:
                    text = tar.extractfile(member).read().decode("utf-8", errors="replace")
                    yield key[0], key[1], member.name, text
    except (tarfile.TarError, OSError, EOFError, zlib.error) as exc:
        raise DatasetUnavailable(f"{source} is not a readable tar archive ({type(exc).__name__}: {exc})") from None


def read_reviews(source: Path) -> dict[str, list[tuple[str, int, str]]]:
    """Per split, (member name, label, text) sorted by name, so that the order never depends on the tar's."""
    splits: dict[str, list[tuple[str, int, str]]] = {"train": [], "test": []}
    for split, label, name, text in _iter_reviews(source):
        splits[split].append((name, LABELS[label], text))
    for split, rows in splits.items():
        if not rows:
            raise DatasetUnavailable(f"{source} holds no aclImdb/{split}/<pos|neg>/*.txt reviews; is it aclImdb_v1.tar.gz?")
        rows.sort(key=lambda r: r[0])
    return splits


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def verify_checksum(path: Path, expected: str) -> None:
    actual = sha256_of(path)
    if actual != expected.lower():
        raise DatasetUnavailable(
            f"{path} ({path.stat().st_size} bytes) has SHA-256 {actual}, not the published {expected} of "
            f"{IMDB_ARCHIVE}: a truncated or different file; delete it and download {IMDB_URL} again")


def _first_writable(dirs: Sequence[Path]) -> Path | None:
    for d in dirs:
        try:
            d.mkdir(parents=True, exist_ok=True)
        except OSError:
            continue
        if os.access(d, os.W_OK):
            return d
    return None


def download_imdb(data_dirs: Sequence[Path], expected_sha256: str, missing: str) -> Path:
    """Download the archive into the first writable data dir, checked before it takes its final name."""
    if os.environ.get("BPFREE_NO_DOWNLOAD"):
        raise DatasetUnavailable(missing + " (downloads disabled by BPFREE_NO_DOWNLOAD)")
    folder = _first_writable(data_dirs)
    if folder is None:
        raise DatasetUnavailable(missing + " (no writable data dir to download into)")
    target, part = folder / IMDB_ARCHIVE, folder / (IMDB_ARCHIVE + ".part")
    print(f"downloading {IMDB_URL} (80 MB) into {folder}", file=sys.stderr)
    try:
        with urllib.request.urlopen(IMDB_URL, timeout=CONNECT_TIMEOUT_S) as response, open(part, "wb") as f:
            shutil.copyfileobj(response, f, 1 << 20)
    except Exception as exc:  # noqa: BLE001 - any network failure means "not available here"
        part.unlink(missing_ok=True)
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise DatasetUnavailable(f"{missing} (download failed: {reason})") from None
    try:
        verify_checksum(part, expected_sha256)
    except DatasetUnavailable:
        part.unlink(missing_ok=True)
        raise
    part.replace(target)
    return target


def _cache_path(source: Path, settings: dict) -> Path:
    stat = source.stat()
    key = dict(settings, source=str(source.resolve()), size=stat.st_size, mtime_ns=stat.st_mtime_ns)
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    return cache_dir() / f"imdb-{digest}.pt"


def _encode_source(source: Path, vocab_size: int, seq_len: int) -> dict:
    splits = read_reviews(source)
    tokens = {split: [tokenise(text) for _, _, text in rows] for split, rows in splits.items()}
    vocab = build_vocabulary(tokens["train"], vocab_size)  # training split only: test words stay unknown
    small = torch.int16 if vocab_size <= torch.iinfo(torch.int16).max else torch.int32  # a smaller cache file
    out: dict = {"vocab": vocab}
    for split, rows in splits.items():
        out[f"{split}_x"] = torch.from_numpy(encode(tokens[split], vocab, seq_len)).to(small)
        out[f"{split}_y"] = torch.tensor([label for _, label, _ in rows], dtype=torch.int64)
    return out


def find_imdb(data_dirs: Sequence[Path]) -> tuple[Path | None, list[str]]:
    """The archive (preferred: it can be checked) or an extracted folder, and the names looked for."""
    archives = [IMDB_ARCHIVE, f"imdb/{IMDB_ARCHIVE}"]
    folders = ["aclImdb", "imdb/aclImdb"]
    hit = find_file(data_dirs, archives)
    if hit is None:
        hit = next((d / f for d in data_dirs for f in folders if (d / f / "train" / "pos").is_dir()), None)
    return hit, archives + [f + "/" for f in folders]


def load_imdb(data_dirs: Sequence[Path], *, vocab_size: int | None = None, seq_len: int | None = None,
              sha256: str | None = None) -> RawDataset:
    """The ``imdb`` dataset; the settings default to the module's constants (read at call time)."""
    vocab_size = IMDB_VOCAB_SIZE if vocab_size is None else vocab_size
    seq_len = IMDB_SEQUENCE_LENGTH if seq_len is None else seq_len
    sha256 = IMDB_SHA256 if sha256 is None else sha256
    data_dirs = [Path(d) for d in data_dirs]
    source, looked_for = find_imdb(data_dirs)
    if source is None:
        missing = (f"dataset 'imdb' not found: looked for {', '.join(looked_for)} in {', '.join(map(str, data_dirs))}; "
                   f"to get it: download {IMDB_URL} into data/ (about 80 MB), or go online for the automatic download")
        source = download_imdb(data_dirs, sha256, missing)
    archive = source.is_file()
    settings = {"vocab_size": vocab_size, "seq_len": seq_len, "tokeniser": TOKENISER_VERSION,
                "sha256": sha256 if archive else None}
    cache = _cache_path(source, settings)
    if cache.exists():
        data = torch.load(cache, weights_only=True)
    else:
        if archive:
            verify_checksum(source, sha256)
        data = _encode_source(source, vocab_size, seq_len)
        tmp = cache.with_suffix(".tmp")
        torch.save(data, tmp)
        tmp.replace(cache)
    what = f"archive {source} (SHA-256 checked)" if archive else f"extracted folder {source} (no checksum to check)"
    description = (f"Stanford Large Movie Review dataset, {what}; vocabulary of the {vocab_size - 2} most frequent "
                   f"training words (+ padding, unknown), first {seq_len} tokens per review")
    return RawDataset("imdb", data["train_x"].long(), data["train_y"], data["test_x"].long(), data["test_y"],
                      num_classes=2, source=description, exact=True, normalise=False)


@DATASETS.register("imdb")
def _load_imdb_registered(data_dirs: list[Path]) -> RawDataset:
    return load_imdb(data_dirs)


def imdb_fingerprint(data_dirs: Sequence[Path]) -> str | None:
    """The archive's (or the extracted folder's reviews') content and every encoding setting; None
    when neither is here (the download, once made, is fingerprinted as the archive)."""
    source, _ = find_imdb([Path(d) for d in data_dirs])
    if source is None:
        return None
    settings = {"vocab_size": IMDB_VOCAB_SIZE, "seq_len": IMDB_SEQUENCE_LENGTH, "tokeniser": TOKENISER_VERSION}
    if source.is_file():
        return fingerprint_tree(source, extra=settings)
    return fingerprint_tree(source, (".txt",), extra=settings)


FINGERPRINTERS["imdb"] = imdb_fingerprint
