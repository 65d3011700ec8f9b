"""Data identity: a SHA-256 fingerprint of the content a run trains and is tested on.

A fingerprint is ``sha256:<64 hex digits>`` over the bytes of the files a dataset reads (each file
under its name relative to the dataset's root, so that an image's class folder counts), plus the
settings that turn those bytes into tensors (e.g. IMDB's vocabulary size). Datasets that come from
memory (scikit-learn's bundled sets, torchvision downloads) are fingerprinted from their arrays.

Hashing is cheap (sha256 runs at several hundred MB/s; the 63 MB CIFAR-10-JPEG zip takes a
fraction of a second) but not free for big folders, so a fingerprint is remembered in
``<cache dir>/fingerprints/`` under a key made of every file's (absolute path, inode, size,
mtime_ns, ctime_ns). That key is only an accelerator: it finds a fingerprint computed earlier from
the same files; the identity itself is always the content hash. A changed, added or removed file
changes the key, and the content is hashed again: a rewrite of the same size with its mtime put back
(``touch -d``, ``os.utime``, ``rsync -t``) still changes the ctime, which no user can set, and a
file replaced by another changes the inode.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

PREFIX = "sha256:"
CHUNK = 1 << 20


def _stat_key(files: Sequence[tuple[str, Path]], extra: Any) -> str:
    stats = []
    for name, path in files:
        st = path.stat()
        stats.append([name, str(path.resolve()), st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns])
    return hashlib.sha256(json.dumps([stats, extra], sort_keys=True).encode()).hexdigest()


def cache_dir() -> Path:
    """Decoded copies of slow-to-read sources (e.g. 60000 JPEGs) and fingerprints go here; never into
    ../shared."""
    path = Path(os.environ.get("BPFREE_CACHE_DIR", "data/cache"))
    path.mkdir(parents=True, exist_ok=True)
    return path


def _cache_path(key: str) -> Path:
    return cache_dir() / "fingerprints" / f"{key[:32]}.txt"


def _read_cached(key: str) -> str | None:
    try:
        text = _cache_path(key).read_text().strip()
    except OSError:
        return None
    return text if text.startswith(PREFIX) and len(text) == len(PREFIX) + 64 else None


def _write_cached(key: str, fingerprint: str) -> None:
    tmp = None
    try:
        path = _cache_path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}")
        tmp.write_text(fingerprint + "\n")
        tmp.replace(path)
    except OSError:  # a read-only or full cache only costs the hashing next time
        if tmp is not None:
            tmp.unlink(missing_ok=True)


def fingerprint_files(files: Iterable[tuple[str, Path]], extra: Any = None) -> str:
    """Fingerprint of ``(name, path)`` pairs (name: the file's role or its path below the root) and
    ``extra`` (JSON-serialisable settings); the order of ``files`` does not matter."""
    files = sorted(((str(n), Path(p)) for n, p in files), key=lambda f: f[0])
    key = _stat_key(files, extra)
    cached = _read_cached(key)
    if cached is not None:
        return cached
    digest = hashlib.sha256()
    for name, path in files:
        digest.update(f"{name}\0{path.stat().st_size}\0".encode())
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(CHUNK), b""):
                digest.update(chunk)
    digest.update(json.dumps(extra, sort_keys=True).encode())
    fingerprint = PREFIX + digest.hexdigest()
    _write_cached(key, fingerprint)
    return fingerprint


def fingerprint_tree(root: Path, suffixes: Sequence[str] | None = None, extra: Any = None) -> str:
    """Fingerprint of every file under folder ``root`` (or of ``root`` itself if it is a file)."""
    root = Path(root)
    if root.is_file():
        return fingerprint_files([(root.name, root)], extra)
    files = [(p.relative_to(root).as_posix(), p) for p in root.rglob("*")
             if p.is_file() and (suffixes is None or p.suffix.lower() in suffixes)]
    return fingerprint_files(files, extra)


def fingerprint_arrays(arrays: dict[str, Any], extra: Any = None) -> str:
    """Fingerprint of named arrays or tensors (dtype, shape and bytes of each)."""
    digest = hashlib.sha256()
    for name in sorted(arrays):
        value = arrays[name]
        if hasattr(value, "detach"):  # a torch tensor
            value = value.detach().cpu().contiguous().numpy()
        a = np.ascontiguousarray(value)
        digest.update(f"{name}\0{a.dtype.str}\0{a.shape}\0".encode())
        digest.update(a.reshape(-1).view(np.uint8).data)
    digest.update(json.dumps(extra, sort_keys=True).encode())
    return PREFIX + digest.hexdigest()
