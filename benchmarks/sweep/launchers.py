"""Launchers: run a list of experiment configs somewhere and report each one's outcome.

* ``local``: each run in its own Python process, ``jobs`` at a time on this machine. The cores are
  shared between the parallel runs (``OMP_NUM_THREADS``), and where there are several GPUs each
  process sees one (``CUDA_VISIBLE_DEVICES``, taken from the parent's own when it has one:
  ``gpu_for_slot``). A run's output goes to
  ``<results>/sweeps/logs/<run_id>.log``. A worker is killed when the sweep's process ends, however
  it ends (``prctl(PR_SET_PDEATHSIG)``), and each run folder's lock (``runs.hold_run``) keeps two
  sweeps from training one run at once: the second waits and reuses the result.
* ``slurm``: one job array on a Slurm cluster through submitit (``pip install submitit``);
  ``options`` are submitit's executor parameters (``slurm_partition``, ``timeout_min``,
  ``gpus_per_node``, ...), ``jobs`` is the array's parallelism.
* ``submitit-local``: the same submitit path with its local executor, so that the Slurm path is
  exercised on a machine without a cluster (the tests use it).

A launcher yields one outcome per run, as soon as it is known: ``completed``, ``diverged``,
``failed`` (with the error) or ``unavailable`` (the dataset is not on this machine). A failing run
never stops the others.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path
from typing import Any, Callable, Iterator

from algorithms.registry import Registry

from .config import ExperimentConfig, run_key

Launcher = Callable[..., Iterator[dict[str, Any]]]
LAUNCHERS: Registry[Launcher] = Registry("launcher")
PROJECT_ROOT = Path(__file__).resolve().parent.parent


def outcome(cfg: ExperimentConfig, status: str, error: str = "", seconds: float = 0.0,
             run_id: str | None = None) -> dict[str, Any]:
    """One run's outcome as the sweeps record it (a line of ``sweeps/<spec>_<profile>.jsonl``)."""
    return {"run_id": run_id or cfg.run_id(), "key": run_key(cfg.to_dict()), "status": status, "error": error,
            "seconds": seconds, "time": time.strftime("%Y-%m-%dT%H:%M:%S")}


def run_one(config: dict[str, Any], force: bool = False) -> dict[str, Any]:
    """Run one config in this process; its outcome as a dict (never raises for a run's own failure)."""
    from algorithms import ConfigError, UnknownNameError
    from .datasets import DatasetCorrupt, DatasetUnavailable
    from .runner import RunDiverged, run_experiment

    cfg = ExperimentConfig.from_dict(config).resolve()
    started = time.perf_counter()
    run_id = None
    try:
        run_id = run_experiment(cfg, force=force).run_dir.name
        status, error = "completed", ""
    except DatasetCorrupt as exc:
        status, error = "failed", f"corrupt data: {exc}"
    except DatasetUnavailable as exc:
        status, error = "unavailable", str(exc)
    except RunDiverged as exc:
        status, error = "diverged", str(exc)
    except (ConfigError, UnknownNameError) as exc:
        status, error = "failed", f"bad config: {exc}"
    except Exception as exc:  # noqa: BLE001 - recorded, and the sweep goes on
        status, error = "failed", f"{type(exc).__name__}: {exc}"
    return outcome(cfg, status, error, time.perf_counter() - started, run_id=run_id)


@LAUNCHERS.register("local")
def local(configs: list[ExperimentConfig], jobs: int = 1, force: bool = False) -> Iterator[dict[str, Any]]:
    if not configs:
        return
    jobs = max(1, min(jobs, len(configs)))
    threads = max(1, (os.cpu_count() or 1) // jobs)
    gpus = _cuda_device_count()

    def launch(slot: int, cfg: ExperimentConfig) -> dict[str, Any]:
        env = dict(os.environ, PYTHONUNBUFFERED="1",
                   PYTHONPATH=os.pathsep.join(filter(None, [str(PROJECT_ROOT), os.environ.get("PYTHONPATH")])))
        if jobs > 1:
            env["OMP_NUM_THREADS"] = str(threads)
            gpu = gpu_for_slot(slot, jobs, os.environ.get("CUDA_VISIBLE_DEVICES"), gpus)
            if gpu is not None:
                env["CUDA_VISIBLE_DEVICES"] = gpu
        log_path = Path(cfg.results_dir).parent / "sweeps" / "logs" / f"{cfg.run_id()}.log"
        log_path.parent.mkdir(parents=True, exist_ok=True)
        started = time.perf_counter()
        # the config goes in on stdin and the outcome comes back as the log's last line: no temporary
        # files, so a sweep killed at any point leaves nothing behind but its logs
        with open(log_path, "w") as log:
            proc = subprocess.Popen([sys.executable, "-m", "benchmarks.launchers", *(["--force"] if force else [])],
                                    stdin=subprocess.PIPE, stdout=log, stderr=subprocess.STDOUT, env=env,
                                    preexec_fn=_die_with_parent, text=True)
            try:
                proc.communicate(json.dumps(cfg.to_dict()))
            except BaseException:
                proc.kill()
                raise
            code = proc.returncode
        outcome = _outcome_from_log(log_path)
        if outcome is not None:
            return outcome
            return outcome(cfg, "failed", f"the run's process ended with exit code {code}; see {log_path}",
                        time.perf_counter() - started)

    with ThreadPoolExecutor(max_workers=jobs) as pool:
        futures = [pool.submit(launch, i % jobs, cfg) for i, cfg in enumerate(configs)]
        for future in as_completed(futures):
            yield future.result()


def _submitit(configs: list[ExperimentConfig], jobs: int, force: bool, cluster: str | None,
              **options: Any) -> Iterator[dict[str, Any]]:
    try:
        import submitit
    except ImportError:
        from algorithms import ConfigError
        raise ConfigError("the slurm launchers need submitit: pip install submitit "
                          "(or pip install -e '.[slurm]')") from None
    if not configs:
        return
    folder = options.pop("folder", None) or str(Path(configs[0].results_dir).parent / "sweeps" / "submitit" / "%j")
    executor = submitit.AutoExecutor(folder=folder, cluster=cluster)
    params = {"timeout_min": 24 * 60, **options}
    if executor.cluster == "slurm":
        params.setdefault("slurm_array_parallelism", jobs)
    executor.update_parameters(**params)
    submitted = executor.map_array(run_one, [c.to_dict() for c in configs], [force] * len(configs))
    for job in submitit.helpers.as_completed(submitted):
        yield job.result()


@LAUNCHERS.register("slurm")
def slurm(configs: list[ExperimentConfig], jobs: int = 1, force: bool = False, **options: Any):
    return _submitit(configs, jobs, force, cluster="slurm", **options)


@LAUNCHERS.register("submitit-local")
def submitit_local(configs: list[ExperimentConfig], jobs: int = 1, force: bool = False, **options: Any):
    return _submitit(configs, jobs, force, cluster="local", **options)


def visible_gpus(parent: str | None, count: int) -> list[str]:
    """The GPUs this process can hand out, as ``CUDA_VISIBLE_DEVICES`` entries.

    Where the parent has the variable, its own entries (indices or ``GPU-``/``MIG-`` UUIDs of the
    machine), as many as torch sees (``count``: CUDA stops at the first invalid entry); else the
    indices ``0 .. count-1``. A child given ``str(slot)`` instead would land on the machine's GPU of
    that number, outside the parent's set."""
    if parent is not None:
        return [e.strip() for e in parent.split(",") if e.strip()][:count]
    return [str(i) for i in range(count)]


def gpu_for_slot(slot: int, jobs: int, parent: str | None, count: int) -> str | None:
    """``CUDA_VISIBLE_DEVICES`` for the local launcher's parallel slot ``slot``, or None to inherit the parent's.

    One GPU per slot, round robin over the parent's visible GPUs, when several jobs run and several
    GPUs are visible. With more jobs than GPUs some share one; their energy meters see the other
    process on the board and record its energy as not measurable (``benchmarks/measure/energy.py``)."""
    gpus = visible_gpus(parent, count)
    if jobs <= 1 or len(gpus) <= 1:
        return None
    return gpus[slot % len(gpus)]


def _cuda_device_count() -> int:
    try:
        import torch
        return torch.cuda.device_count()
    except Exception:  # noqa: BLE001 - no usable CUDA: no GPUs to share out
        return 0


OUTCOME = "OUTCOME "  # prefix of the worker's last line: its outcome as JSON


def _die_with_parent() -> None:
    """In a worker, before it starts: be killed when the sweep's process ends, however it ends
    (Linux ``prctl(PR_SET_PDEATHSIG, SIGKILL)``), so that no run goes on training unwatched and a
    restarted sweep never trains a run a second time at once. Elsewhere a no-op."""
    if sys.platform.startswith("linux"):
        import ctypes
        import signal
        try:
            ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # 1 = PR_SET_PDEATHSIG
        except OSError:
            pass
        if os.getppid() == 1:  # the parent died before prctl took effect
            os._exit(1)


def _outcome_from_log(log_path: Path) -> dict[str, Any] | None:
    try:
        lines = log_path.read_text(errors="replace").splitlines()
    except OSError:
        return None
    for line in reversed(lines):
        if line.startswith(OUTCOME):
            try:
                return json.loads(line[len(OUTCOME):])
            except json.JSONDecodeError:
                return None
    return None


if __name__ == "__main__":  # the local launcher's worker: the config as JSON on stdin, [--force]
    result = run_one(json.loads(sys.stdin.read()), force="--force" in sys.argv[1:])
    print(f"{result['status']}: {result['run_id']} {result['error']}".rstrip())
    print(OUTCOME + json.dumps(result, allow_nan=False), flush=True)
