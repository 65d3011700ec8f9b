"""Run folders: one per experiment, named by the hash of its resolved config.

    <results_dir>/<algorithm>_<dataset>_<arch>_s<seed>_<hash>/
        config.json        the resolved config (every default filled in)
        environment.json   git commit and dirty flag, Python/torch versions, device, CPU/GPU model
        measurement.json   how each figure was measured (clock, memory counter, energy source)
        metrics.jsonl      one JSON object per epoch, appended as the run goes
        summary.json       status (completed / diverged / failed), final and best-epoch figures
        done               written last, only for a finished run (completed or diverged)

Every whole-file write is atomic (temporary file, then ``os.replace``); ``metrics.jsonl`` is only
ever appended to. Every file is strict JSON: a NaN or infinite number is written as ``null`` and
named under ``"non_finite"`` (``"summary.last_losses.loss: nan"``), so any JSON reader can read it.
Files are created readable by others (mode 0644 under the usual umask), like any other file.

One process trains a run at a time: ``hold_run`` takes an exclusive lock (``filelock``) on
``<results_dir>/.locks/<run_id>.lock`` for as long as the run trains; the operating system drops it
when the process ends, however it ends. A second process on the same run waits for it, or stops
with ``RunBusy``, and never writes into the folder.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

DONE = "done"


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
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json(path: Path, value: Any) -> None:
    write_text_atomic(path, dumps(value, indent=2) + "\n")


def read_json(path: Path) -> Any:
    return json.loads(Path(path).read_text())


def append_jsonl(path: Path, value: Any) -> None:
    """One line, in one write (``O_APPEND``): lines of concurrent writers never interleave."""
    line = (dumps(value) + "\n").encode()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
    try:
        os.write(fd, line)
    finally:
        os.close(fd)


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """Every line's object; a last line cut short by a killed writer is left out."""
    path = Path(path)
    if not path.exists():
        return []
    lines = [line for line in path.read_text().splitlines() if line.strip()]
    out = []
    for i, line in enumerate(lines):
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            if i != len(lines) - 1:
                raise
    return out


class RunBusy(RuntimeError):
    """Another process is training this run now."""


LOCKS = ".locks"


@contextlib.contextmanager
def hold_run(run_dir: Path, wait: bool = True, poll_s: float = 0.5) -> Iterator[None]:
    """Hold the run's lock while the block runs: wait for another holder, or (``wait=False``) raise
    ``RunBusy`` at once."""
    from filelock import FileLock, Timeout

    run_dir = Path(run_dir)
    lock_dir = run_dir.parent / LOCKS
    lock_dir.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(lock_dir / f"{run_dir.name}.lock"))
    try:
        lock.acquire(timeout=-1 if wait else 0, poll_interval=poll_s)
    except Timeout:
        raise RunBusy(f"run {run_dir.name} is being trained by another process now; its folder is left to it "
                      f"(try again when it has finished: the finished run is then reused)") from None
    try:
        yield
    finally:
        lock.release()


def is_done(run_dir: Path) -> bool:
    return (Path(run_dir) / DONE).exists()


def mark_done(run_dir: Path) -> None:
    write_json(Path(run_dir) / DONE, {"done": True, "finished_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())})


def data_fingerprint(run: dict[str, Any]) -> str | None:
    """The content fingerprint of a loaded run's data (None for folders written before there was one)."""
    return (run.get("measurement") or {}).get("data", {}).get("fingerprint") or None


def prefer(runs: Iterable[dict[str, Any]], key: Callable[[dict[str, Any]], str]) -> dict[str, dict[str, Any]]:
    """One loaded run per ``key(run)`` (e.g. ``sweep.run_key`` of its config): where several folders
    share a key, a finished one over an unfinished one, then one whose data has a fingerprint, then
    the newest (``finished_at`` of its ``done`` marker), then the last by folder name."""
    def rank(run):
        finished = (run.get("summary") or {}).get("status") in ("completed", "diverged")
        return (finished, data_fingerprint(run) is not None, run.get("finished_at") or "", run.get("run_dir", ""))

    out: dict[str, dict[str, Any]] = {}
    for run in runs:
        k = key(run)
        if k not in out or rank(run) > rank(out[k]):
            out[k] = run
    return out


def iter_runs(results_dir: str | Path, finished_only: bool = True) -> Iterator[Path]:
    root = Path(results_dir)
    if not root.is_dir():
        return
    for run_dir in sorted(p for p in root.iterdir() if (p / "config.json").exists()):
        if not finished_only or is_done(run_dir):
            yield run_dir


def load_run(run_dir: Path) -> dict[str, Any]:
    """A run folder as one dict: config, environment, measurement, summary and the epoch metrics."""
    run_dir = Path(run_dir)
    out = {"run_dir": str(run_dir), "epochs": read_jsonl(run_dir / "metrics.jsonl")}
    for name in ("config", "environment", "measurement", "summary"):
        path = run_dir / f"{name}.json"
        out[name] = read_json(path) if path.exists() else {}
    done = run_dir / DONE
    marker = read_json(done) if done.exists() and done.stat().st_size else {}
    out["finished_at"] = marker.get("finished_at") if isinstance(marker, dict) else None
    return out
