"""Mid-run checkpoints: a run that is stopped (a session's end, a Slurm time limit, a killed worker)
goes on from its last saved epoch when it is started again, instead of from its first.

Long runs are the norm on 2 CPU cores (a CIFAR-10-JPEG MLP run takes ~2 h, a CNN run longer), and a
run killed in its last hour used to lose everything. While a run trains, the runner writes
``resume.pt`` into its folder after an epoch whenever ``RESUME_EVERY_S`` seconds of training passed
since the last write: the trainer's state (weights and buffers), every optimiser's state, the random
generators (torch's global one and the data order's), and the loop's own state (the epoch rows so far,
the best epoch, epochs since it, the validation bests that decide where test is scored). Started again
with the same config, the run reads it, cuts ``metrics.jsonl`` back to the saved epochs, and goes on:
the epochs it trains are those an uninterrupted run trains (tests/test_resume.py holds every
algorithm to that, row for row). The file is deleted when the run finishes; it is never committed.

Only runs whose meters can take over their earlier epochs resume (``Meter.resumes``: the clock reads its
epoch times back from the rows); a run measuring memory or energy starts again from its first epoch,
since a peak or a joule count cannot be split across processes honestly. The summary lists the epochs
a run resumed after (``resumed_after_epochs``), and ``wall_time_s`` adds up every attempt's share.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from benchmarks.common.files import write_failed
from benchmarks.measure.memory import find_optimizers

RESUME = "resume.pt"
# Seconds of training between two writes: a 3x2000 MLP's state with Adam's moments is ~170 MB, a
# fraction of a second to write, against minutes an epoch; small runs (seconds an epoch) write rarely.
RESUME_EVERY_S = 120.0
FORMAT = 1  # bumped when the file's layout changes; a file of another format is ignored


def can_resume(meters: list) -> bool:
    """Whether every meter of the run can take over the epochs of an earlier attempt."""
    return all(getattr(m, "resumes", False) for m in meters)


def source_of(environment: dict[str, Any]) -> dict[str, Any]:
    """The code a run attempt executes (``environment.training_code_sha256``): an attempt goes on only from
    one that ran the same code, else the run would be two programs' work under one folder. A commit that
    changes only tables, docs or tests leaves it as it was."""
    return {"training_code_sha256": environment.get("training_code_sha256")}


def save_state(run_dir: Path, trainer: torch.nn.Module, generator: torch.Generator, environment: dict[str, Any],
               loop: dict[str, Any]) -> None:
    """Write ``resume.pt`` atomically (a temporary file renamed over it): a kill mid-write leaves the last one."""
    state = {"format": FORMAT, "run_id": Path(run_dir).name, "source": source_of(environment),
             "trainer": trainer.state_dict(),
             "optimizers": [opt.state_dict() for opt in find_optimizers(trainer)],
             "torch_rng": torch.get_rng_state(), "data_order_rng": generator.get_state(),
             "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None, "loop": loop}
    path = Path(run_dir) / RESUME
    tmp = path.with_name(f".{RESUME}.tmp")
    try:
        with open(tmp, "wb") as f:
            torch.save(state, f)
        tmp.replace(path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise write_failed(path, exc) from exc


def read_state(run_dir: Path) -> dict[str, Any] | None:
    """The saved state of ``run_dir``, or None where there is none usable (missing, damaged, another
    format or another run's: a resume must never mix two runs)."""
    path = Path(run_dir) / RESUME
    if not path.is_file():
        return None
    try:
        state = torch.load(path, map_location="cpu", weights_only=False)
    except Exception:  # noqa: BLE001 -- a file cut short by a kill or a full disk: start again
        return None
    if not isinstance(state, dict) or state.get("format") != FORMAT or state.get("run_id") != Path(run_dir).name:
        return None
    return state


def resumable(run_dir: Path, meters: list, environment: dict[str, Any]) -> dict[str, Any] | None:
    """The state to go on from: a usable ``resume.pt`` of the same code, where every meter can take over
    the earlier epochs; else None (the run starts from its first epoch)."""
    if not can_resume(meters):
        return None
    state = read_state(run_dir)
    if state is None or state.get("source") != source_of(environment):
        return None
    return state


def restore_state(state: dict[str, Any], trainer: torch.nn.Module, generator: torch.Generator) -> dict[str, Any]:
    """Load ``state`` into the trainer, its optimisers and the generators; return the loop's state."""
    trainer.load_state_dict(state["trainer"])
    optimizers = find_optimizers(trainer)
    if len(optimizers) != len(state["optimizers"]):
        raise ValueError(f"{RESUME} holds {len(state['optimizers'])} optimiser states, the trainer has "
                         f"{len(optimizers)}")
    for opt, saved in zip(optimizers, state["optimizers"]):
        opt.load_state_dict(saved)
    torch.set_rng_state(state["torch_rng"])
    generator.set_state(state["data_order_rng"])
    if state.get("cuda_rng") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda_rng"])
    return state["loop"]


def drop_state(run_dir: Path) -> None:
    (Path(run_dir) / RESUME).unlink(missing_ok=True)
    (Path(run_dir) / f".{RESUME}.tmp").unlink(missing_ok=True)
