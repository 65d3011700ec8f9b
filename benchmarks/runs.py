"""Run folders: one per experiment, named by the hash of its resolved config.

    <results_dir>/<algorithm>_<dataset>_<arch>_s<seed>_<hash>/
        config.json        the resolved config (every default filled in)
        environment.json   git commit and dirty flag, Python/torch versions, device, CPU/GPU model
        measurement.json   how each figure was measured (clock, memory counter, energy source)
        metrics.jsonl      one JSON object per epoch, appended as the run goes
        summary.json       status (completed / diverged / failed), final and best-epoch figures
        done               written last, only for a finished run (completed or diverged)

Every whole-file write is atomic (temporary file, then ``os.replace``); ``metrics.jsonl`` is only
ever appended to. Tables and figures read these folders and nothing else.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

DONE = "done"


def write_json(path: Path, value: Any) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "w") as f:
        json.dump(value, f, indent=2, sort_keys=True, default=str)
        f.write("\n")
    os.replace(tmp, path)


def read_json(path: Path) -> Any:
    return json.loads(Path(path).read_text())


def append_jsonl(path: Path, value: Any) -> None:
    with open(path, "a") as f:
        f.write(json.dumps(value, sort_keys=True, default=str) + "\n")


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    path = Path(path)
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


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
