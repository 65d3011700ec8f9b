"""Run folders: one per experiment, named by the hash of its resolved config.

    <results_dir>/<algorithm>_<dataset>_<arch>_s<seed>_<hash>/
        config.json        the resolved config (every default filled in)
        environment.json   git commit and dirty flag, Python/torch versions, device, CPU/GPU model
        measurement.json   how each figure was measured (clock, memory counter, energy source)
        metrics.jsonl      one JSON object per epoch, appended as the run goes
        summary.json       status (completed / diverged / failed), final and best-epoch figures
        done               written last, only for a finished run (completed or diverged)

Every file is written through ``benchmarks.common.files``: atomic, strict JSON, ``metrics.jsonl``
only ever appended to.

One process trains a run at a time: ``hold_run`` takes an exclusive lock (``filelock``) on
``<results_dir>/.locks/<run_id>.lock`` for as long as the run trains; the operating system drops it
when the process ends, however it ends. A second process on the same run waits for it, or stops
with ``RunBusy``, and never writes into the folder.
"""

from __future__ import annotations

import contextlib
import time
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

from benchmarks.common.files import read_json, read_jsonl, write_json

DONE = "done"


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


class RunFolderUnreadable(ValueError):
    """A run folder's JSON file is damaged (cut short, not JSON); the message names the file."""


def _read_part(path: Path) -> Any:
    try:
        return read_json(path)
    except (ValueError, UnicodeDecodeError, OSError) as exc:  # JSONDecodeError is a ValueError
        why = f"not valid JSON ({exc})" if isinstance(exc, ValueError) else f"unreadable ({exc})"
        raise RunFolderUnreadable(f"{path} is {why}") from None


def finished_summary(run_dir: Path) -> dict[str, Any] | None:
    """The summary of a finished run folder (``done``, a readable ``summary.json`` of a completed or
    diverged run), else None: a damaged summary is no finished result and is trained again."""
    run_dir = Path(run_dir)
    if not is_done(run_dir):
        return None
    try:
        summary = _read_part(run_dir / "summary.json")
    except RunFolderUnreadable:
        return None
    return summary if isinstance(summary, dict) and summary.get("status") in ("completed", "diverged") else None


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
        finished = (run.get("summary") or {}).get("status") in ("completed", "diverged") and run.get("done", True)
        return (finished, data_fingerprint(run) is not None, run.get("finished_at") or "", run.get("run_dir", ""))

    out: dict[str, dict[str, Any]] = {}
    for run in runs:
        k = key(run)
        if k not in out or rank(run) > rank(out[k]):
            out[k] = run
    return out


def iter_runs(results_dir: str | Path, finished_only: bool = True) -> Iterator[Path]:
    """The run folders under ``results_dir``; with ``finished_only`` those with a ``done`` marker and a
    readable summary (a marked folder whose summary.json is damaged is skipped, named on stderr)."""
    import sys

    root = Path(results_dir)
    if not root.is_dir():
        return
    for run_dir in sorted(p for p in root.iterdir() if (p / "config.json").exists()):
        if not finished_only:
            yield run_dir
        elif is_done(run_dir):
            if finished_summary(run_dir) is not None:
                yield run_dir
            else:
                print(f"warning: skipped run folder {run_dir}: its summary.json is damaged (not a finished "
                      "run's JSON); a sweep trains it again", file=sys.stderr)


def load_run(run_dir: Path) -> dict[str, Any]:
    """A run folder as one dict: config, environment, measurement, summary, the epoch metrics, and
    ``done`` (whether the ``done`` marker is there: only then is the summary a finished result).
    A damaged JSON file raises :class:`RunFolderUnreadable` naming it."""
    run_dir = Path(run_dir)
    try:
        epochs = read_jsonl(run_dir / "metrics.jsonl")
    except (ValueError, UnicodeDecodeError, OSError) as exc:
        raise RunFolderUnreadable(f"{run_dir / 'metrics.jsonl'} is not valid JSON lines ({exc})") from None
    out = {"run_dir": str(run_dir), "epochs": epochs}
    for name in ("config", "environment", "measurement", "summary"):
        path = run_dir / f"{name}.json"
        out[name] = _read_part(path) if path.exists() else {}
        if not isinstance(out[name], dict):
            raise RunFolderUnreadable(f"{path} does not hold a JSON object")
    done = run_dir / DONE
    out["done"] = done.exists()
    try:
        marker = read_json(done) if done.exists() and done.stat().st_size else {}
    except (ValueError, UnicodeDecodeError, OSError):
        marker = {}
    out["finished_at"] = marker.get("finished_at") if isinstance(marker, dict) else None
    return out


def load_runs(results_dir: str | Path, finished_only: bool = True,
              warn: Callable[[str], None] | None = None) -> Iterator[dict[str, Any]]:
    """``load_run`` of every run folder under ``results_dir`` (only finished ones by default); a folder
    with a damaged file is skipped and named through ``warn`` (default: a line on stderr), so that one
    bad folder never stops a table."""
    import sys

    for run_dir in iter_runs(results_dir, finished_only):
        try:
            yield load_run(run_dir)
        except RunFolderUnreadable as exc:
            (warn or (lambda m: print(f"warning: {m}", file=sys.stderr)))(f"skipped run folder {run_dir}: {exc}")
