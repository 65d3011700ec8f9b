"""Strict, atomic JSON files: the one way every stage writes and reads results.

Every whole-file write is atomic (temporary file, then ``os.replace``); a ``.jsonl`` file is only ever
appended to, a line in one write. Every file is strict JSON: a NaN or infinite number is written as
``null`` and named under ``"non_finite"`` (``"summary.last_losses.loss: nan"``), so any JSON reader
can read it. Files are created readable by others (mode 0644 under the usual umask), like any other
file. These helpers sit below every stage (the meters write their timelines with them as the run
folders do), so nothing imports upwards to reach them.

A write that fails (a full disk, a read-only folder) raises :class:`WriteFailed`, which names the file
in one line, and leaves no temporary file behind.
"""

from __future__ import annotations

import errno
import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any, Callable


class WriteFailed(OSError):
    """A results file could not be written (disk full, quota, read-only folder): one line naming it.

    An ``OSError`` (``errno`` and ``filename`` as the failed write's), so that code that treats a
    failed write as a skipped cache still does."""

    def __str__(self) -> str:
        return f"cannot write {self.filename}: {self.strerror}"


def write_failed(path: str | Path, exc: BaseException) -> WriteFailed:
    """``exc`` (an ``OSError``, or a library's own error for one) as a :class:`WriteFailed` naming ``path``."""
    if isinstance(exc, WriteFailed):
        return exc
    if isinstance(exc, OSError):
        return WriteFailed(exc.errno, exc.strerror or str(exc), str(path))
    first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    return WriteFailed(errno.EIO, f"{type(exc).__name__}: {first}", str(path))


def check_writable(folder: str | Path) -> None:
    """Refuse, as a ``ConfigError``, a results folder that is a file or cannot be created or written."""
    from algorithms import ConfigError

    folder = Path(folder)
    existing = next((p for p in (folder, *folder.parents) if p.exists()), None)
    if existing is not None and not existing.is_dir():
        raise ConfigError(f"results folder {folder}: {existing} is a file, not a folder")
    if existing is not None and not os.access(existing, os.W_OK | os.X_OK):
        raise ConfigError(f"results folder {folder}: {existing} is not writable here")


def strict(value: Any, where: str = "", found: list[str] | None = None) -> Any:
    """``value`` with every NaN/inf float replaced by None; each replaced one's path added to ``found``."""
    if isinstance(value, float) and not math.isfinite(value):
        if found is not None:
            found.append(f"{where}: {value}")
        return None
    if isinstance(value, dict):
        return {k: strict(v, f"{where}.{k}" if where else str(k), found) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [strict(v, f"{where}[{i}]", found) for i, v in enumerate(value)]
    if hasattr(value, "item") and getattr(value, "ndim", None) == 0:  # numpy or torch scalar
        return strict(value.item(), where, found)
    return value


def dumps(value: Any, **kwargs) -> str:
    """Strict JSON text of ``value``: non-finite numbers become null, named under ``non_finite``."""
    found: list[str] = []
    value = strict(value, "", found)
    if found and isinstance(value, dict):
        value = {**value, "non_finite": found}
    return json.dumps(value, sort_keys=True, default=str, allow_nan=False, **kwargs)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_text_atomic(path: Path, text: str) -> None:
    """``text`` into ``path`` through a temporary file in the same folder, readable as a new file is."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    except OSError as exc:
        raise write_failed(path, exc) from exc
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600
        os.replace(tmp, path)
    except BaseException as exc:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(exc, OSError):
            raise write_failed(path, exc) from exc
        raise


def write_json(path: Path, value: Any) -> None:
    write_text_atomic(path, dumps(value, indent=2) + "\n")


def read_json(path: Path) -> Any:
    return json.loads(Path(path).read_text())


def append_jsonl(path: Path, value: Any) -> None:
    """One line, in one write (``O_APPEND``): lines of concurrent writers never interleave."""
    line = (dumps(value) + "\n").encode()
    try:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
        try:
            written = os.write(fd, line)
        finally:
            os.close(fd)
    except OSError as exc:
        raise write_failed(path, exc) from exc
    if written != len(line):  # a short write: the disk filled up during it (the cut line is left out on reading)
        raise WriteFailed(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))


def rewrite_jsonl(path: Path, values: list[Any]) -> None:
    """The whole file anew, one line a value (atomically: a kill leaves the old file or the new)."""
    write_text_atomic(path, "".join(dumps(v) + "\n" for v in values))


def read_jsonl(path: Path, on_bad_line: Callable[[str], None] | None = None) -> list[dict[str, Any]]:
    """Every line's object; a last line cut short by a killed writer is left out.

    With ``on_bad_line``, any line that is not a JSON object (cut short, ``null``, a list) is left out
    too, and ``on_bad_line`` is called with a message naming it (file and line number); without it
    such a line before the last raises."""
    path = Path(path)
    if not path.exists():
        return []
    lines = [(n, line) for n, line in enumerate(path.read_text(errors="replace").splitlines(), 1) if line.strip()]
    out = []
    for i, (number, line) in enumerate(lines):
        try:
            value = json.loads(line)
        except json.JSONDecodeError:
            if on_bad_line is not None:
                if i != len(lines) - 1:
                    on_bad_line(f"{path}: line {number} is not valid JSON; skipped")
                continue
            if i != len(lines) - 1:
                raise
            continue
        if on_bad_line is not None and not isinstance(value, dict):
            on_bad_line(f"{path}: line {number} is not a JSON object ({line.strip()[:40]}); skipped")
            continue
        out.append(value)
    return out
