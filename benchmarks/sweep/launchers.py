"""Launchers: run a list of experiment configs somewhere and report each one's outcome.

* ``local``: each run in its own Python process, ``jobs`` at a time on this machine. The cores are
  shared between the parallel runs (``OMP_NUM_THREADS``), and where there are several GPUs each
  process sees one (``CUDA_VISIBLE_DEVICES``, taken from the parent's own when it has one:
  ``gpu_for_slot``). A run's output is appended to ``<results>/sweeps/logs/<run_id>.log`` (the
  run folder's name, data fingerprint included), each attempt under a header line, so that two
  sweeps sharing a run keep both their outputs; the worker hands its outcome back through a pipe of
  its own, never through the log. A worker killed (``kill -9``), or one that ends without an
  outcome (e.g. it cannot write its log), is a ``failed`` outcome that says so. A worker is killed
  when the sweep's process ends, however it ends (``prctl(PR_SET_PDEATHSIG)``), and each run
  folder's lock (``runs.hold_run``) keeps two sweeps from training one run at once: the second waits
  and reuses the result.
* ``slurm``: one job array on a Slurm cluster through submitit (``pip install submitit``);
  ``options`` are submitit's executor parameters (``slurm_partition``, ``timeout_min``,
  ``gpus_per_node``, ...), ``jobs`` is the array's parallelism; ``poll_s`` (default 5) is how often
  finished tasks are looked for. A task that ends without an outcome (``scancel``, its time limit,
  out of memory, a lost node) is a ``failed`` outcome that says so (``_task_outcome``: sacct's
  state, the task's log); its run folder is left unfinished, so the next sweep trains it again.
  Logs: ``<results>/sweeps/submitit/<array>_<task>/``. An option or a job sbatch refuses is a
  ``ConfigError``.
* ``submitit-local``: the same submitit path with its local executor, so that the Slurm path is
  exercised on a machine without a cluster (tests/test_sweep.py; tests/test_slurm.py submits to a
  real one where CI has started it: .ci/setup.d/slurm.sh).

A launcher yields one outcome per run, as soon as it is known: ``completed``, ``diverged``,
``failed`` (with the error) or ``unavailable`` (the dataset is not on this machine). A failing run
never stops the others.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path
from typing import Any, Callable, Iterator

from algorithms.registry import Registry

from benchmarks.run.config import ExperimentConfig, run_key

Launcher = Callable[..., Iterator[dict[str, Any]]]
LAUNCHERS: Registry[Launcher] = Registry("launcher")
PROJECT_ROOT = Path(__file__).resolve().parents[2]


def outcome(cfg: ExperimentConfig, status: str, error: str = "", seconds: float = 0.0,
             run_id: str | None = None) -> dict[str, Any]:
    """One run's outcome as the sweeps record it (a line of ``sweeps/<spec>_<profile>.jsonl``)."""
    return {"run_id": run_id or cfg.run_id(), "key": run_key(cfg.to_dict()), "status": status, "error": error,
            "seconds": seconds, "time": time.strftime("%Y-%m-%dT%H:%M:%S")}


def run_one(config: dict[str, Any], force: bool = False) -> dict[str, Any]:
    """Run one config in this process; its outcome as a dict (never raises for a run's own failure)."""
    from algorithms import ConfigError, UnknownNameError
    from benchmarks.datasets import DatasetCorrupt, DatasetUnavailable
    from benchmarks.run.runner import RunDiverged, run_experiment

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
        run_id = exc.run_dir.name if getattr(exc, "run_dir", None) is not None else None
    except (ConfigError, UnknownNameError) as exc:
        status, error = "failed", f"bad config: {exc}"
    except Exception as exc:  # noqa: BLE001 - recorded, and the sweep goes on
        status, error = "failed", f"{type(exc).__name__}: {exc}" if not isinstance(exc, OSError) else str(exc)
    return outcome(cfg, status, error, time.perf_counter() - started, run_id=run_id or DataFingerprints().run_id(cfg))


class DataFingerprints:
    """The content fingerprint of each dataset a sweep's configs name, taken once per dataset (and
    data dirs and settings): what tells a finished run folder from a stale one, and names it."""

    def __init__(self):
        self._memo: dict[str, str | None] = {}

    def __call__(self, cfg: ExperimentConfig) -> str | None:
        from benchmarks.datasets import dataset_fingerprint

        key = json.dumps([cfg.dataset, cfg.data_dirs, cfg.data_args], sort_keys=True)
        if key not in self._memo:
            try:
                self._memo[key] = dataset_fingerprint(cfg.dataset, cfg.data_dirs, cfg.data_args)
            except Exception:  # noqa: BLE001 - unreadable data: the run itself says why
                self._memo[key] = None
        return self._memo[key]

    def run_id(self, cfg: ExperimentConfig) -> str:
        """The name of ``cfg``'s run folder (``cfg`` resolved) with the data on this machine."""
        return cfg.run_id(self(cfg))


@LAUNCHERS.register("local")
def local(configs: list[ExperimentConfig], jobs: int = 1, force: bool = False) -> Iterator[dict[str, Any]]:
    if not configs:
        return
    jobs = max(1, min(jobs, len(configs)))
    threads = max(1, (os.cpu_count() or 1) // jobs)
    gpus = _cuda_device_count()
    fingerprints = DataFingerprints()
    run_ids = {id(cfg): fingerprints.run_id(cfg) for cfg in configs}  # the folders' names: the logs' too

    def launch(slot: int, cfg: ExperimentConfig) -> dict[str, Any]:
        run_id = run_ids[id(cfg)]
        started = time.perf_counter()
        try:
            return _launch(slot, cfg, run_id, started)
        except Exception as exc:  # noqa: BLE001 - e.g. no process could be started: this run failed, the sweep goes on
            return outcome(cfg, "failed", f"the run's process could not be run: {type(exc).__name__}: {exc}",
                           time.perf_counter() - started, run_id=run_id)

    def _launch(slot: int, cfg: ExperimentConfig, run_id: str, started: float) -> dict[str, Any]:
        env = dict(os.environ, PYTHONUNBUFFERED="1",
                   PYTHONPATH=os.pathsep.join(filter(None, [str(PROJECT_ROOT), os.environ.get("PYTHONPATH")])))
        if jobs > 1:
            env["OMP_NUM_THREADS"] = str(threads)
            gpu = gpu_for_slot(slot, jobs, os.environ.get("CUDA_VISIBLE_DEVICES"), gpus)
            if gpu is not None:
                env["CUDA_VISIBLE_DEVICES"] = gpu
        log_path = Path(cfg.results_dir).parent / "sweeps" / "logs" / f"{run_id}.log"
        log = None
        try:
            log_path.parent.mkdir(parents=True, exist_ok=True)
            log = open(log_path, "a")  # appended: another sweep's attempt at the same run keeps its lines
            log.write(f"=== attempt of sweep process {os.getpid()} at {time.strftime('%Y-%m-%dT%H:%M:%S')} ===\n")
            log.flush()
        except OSError as exc:
            if log is not None:
                with contextlib.suppress(OSError):
                    log.close()
            return outcome(cfg, "failed", f"cannot write the run's log {log_path}: {exc.strerror or exc}",
                           time.perf_counter() - started, run_id=run_id)
        # the config goes in on stdin and the outcome comes back through a pipe of the worker's own: no
        # temporary files, so a sweep killed at any point leaves nothing behind but its logs
        read_end, write_end = os.pipe()
        env[OUTCOME_FD_ENV] = str(write_end)
        with log:
            try:
                proc = subprocess.Popen([sys.executable, "-m", "benchmarks.sweep.launchers",
                                         *(["--force"] if force else [])],
                                        stdin=subprocess.PIPE, stdout=log, stderr=subprocess.STDOUT, env=env,
                                        preexec_fn=_die_with_parent, text=True, pass_fds=(write_end,))
            except BaseException:
                os.close(read_end)
                raise
            finally:
                os.close(write_end)
            try:
                with open(read_end, "rb") as pipe:
                    try:
                        proc.stdin.write(json.dumps(cfg.to_dict()))
                        proc.stdin.close()
                    except BrokenPipeError:  # the worker is gone already: its exit code says why
                        with contextlib.suppress(OSError):
                            proc.stdin.close()
                    report = pipe.read()  # until the worker ends (its end of the pipe closes)
                code = proc.wait()
            except BaseException:
                proc.kill()
                raise
        result = _parse_outcome(report)
        if result is not None:
            return result
        if code < 0:
            try:
                name = f" ({signal.Signals(-code).name})"
            except ValueError:
                name = ""
            why = f"the run's process was killed by signal {-code}{name}"
        else:
            why = f"the run's process ended with exit code {code} without an outcome"
        return outcome(cfg, "failed", f"{why}; see {log_path}", time.perf_counter() - started, run_id=run_id)

    with ThreadPoolExecutor(max_workers=jobs) as pool:
        futures = [pool.submit(launch, i % jobs, cfg) for i, cfg in enumerate(configs)]
        try:
            for future in as_completed(futures):
                yield future.result()
        finally:  # the sweep stopped (e.g. its status file cannot be written): start no further run
            for future in futures:
                future.cancel()


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
    poll_s = float(params.pop("poll_s", 5))  # how often finished tasks are looked for (not submitit's)
    from algorithms import ConfigError
    try:
        executor.update_parameters(**params)
    except (NameError, ValueError, TypeError) as exc:  # an unknown or ill-typed --launcher-opt: one line
        raise ConfigError(f"bad --launcher-opt for {executor.cluster}: {str(exc).strip().splitlines()[0]}") from None
    try:
        submitted = executor.map_array(run_one, [c.to_dict() for c in configs], [force] * len(configs))
    except submitit.core.utils.FailedJobError as exc:  # sbatch said no: a partition, account, GPU count ...
        raise ConfigError(f"sbatch refused the job array: {'; '.join(str(exc).strip().splitlines())}") from None
    config_of = {id(job): cfg for job, cfg in zip(submitted, configs)}
    for job in submitit.helpers.as_completed(submitted, poll_frequency=poll_s):
        yield _task_outcome(job, config_of[id(job)])


def _task_outcome(job: Any, cfg: ExperimentConfig) -> dict[str, Any]:
    """A finished submitit task's outcome: the run's own, or, for a task that ended without one
    (cancelled with ``scancel``, past its time limit, killed for memory, its node lost), ``failed``
    with the scheduler's word for how it ended and where its log is. The run folder of such a task
    has no ``done`` marker, so the next sweep trains it again (and reuses the finished ones)."""
    state, error = "", None
    if not job.paths.result_pickle.exists():  # ended by the scheduler: no result is coming, don't wait for one
        state = _task_state(job)
    if not state.startswith(_ENDED_BY_SLURM):
        try:
            row = job.result()
            if row.get("status") == "failed" and "timed-out" in row.get("error", ""):
                # submitit's signal before the time limit (``slurm_signal_delay_s``) ended the run mid-way
                row = dict(row, error=f"timed out: Slurm task {job.job_id} reached its time limit ({row['error']}); "
                                      f"see {job.paths.stderr}")
            return row
        except Exception as exc:  # noqa: BLE001 - one task's end must not stop the others' outcomes
            state, error = _task_state(job), exc
    word = state.split()[0] if state.strip() else "UNKNOWN"
    how = {"CANCELLED": "cancelled", "TIMEOUT": "timed out", "OUT_OF_MEMORY": "out of memory",
           "NODE_FAIL": "node failed", "PREEMPTED": "preempted"}.get(word, "ended without an outcome")
    first = str(error).strip().splitlines() if error is not None else []
    detail = f"; {type(error).__name__}: {first[0]}" if first and word not in ("CANCELLED", "TIMEOUT") else ""
    return outcome(cfg, "failed", f"{how}: Slurm task {job.job_id} ended {state or word}{detail}; see {job.paths.stderr}",
                   run_id=_folder_name(cfg))


_ENDED_BY_SLURM = ("CANCELLED", "TIMEOUT", "OUT_OF_MEMORY", "NODE_FAIL", "PREEMPTED", "BOOT_FAIL", "DEADLINE")


def _task_state(job: Any) -> str:
    """sacct's state of a task, e.g. ``CANCELLED by 1000``, ``TIMEOUT``, ``COMPLETED``; "" if unknown."""
    try:
        return str(job.state).strip()
    except Exception:  # noqa: BLE001 - no accounting to ask
        return ""


def _folder_name(cfg: ExperimentConfig) -> str | None:
    """The run folder's name of resolved ``cfg`` (data fingerprint included), None if the data cannot be read."""
    try:
        from benchmarks.datasets import dataset_fingerprint
        return cfg.run_id(dataset_fingerprint(cfg.dataset, cfg.data_dirs, cfg.data_args))
    except Exception:  # noqa: BLE001 - the outcome names the run by its config alone
        return None


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


OUTCOME = "OUTCOME "  # prefix of the worker's outcome line, as JSON (on the pipe, else on stdout)
OUTCOME_FD_ENV = "BPFREE_OUTCOME_FD"  # the local launcher's worker writes its outcome to this file descriptor


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


def _parse_outcome(report: bytes) -> dict[str, Any] | None:
    """The outcome a worker wrote to its pipe, or None (it was killed first, or wrote something else)."""
    for line in reversed(report.decode(errors="replace").splitlines()):
        if line.startswith(OUTCOME):
            try:
                value = json.loads(line[len(OUTCOME):])
            except json.JSONDecodeError:
                return None
            return value if isinstance(value, dict) and isinstance(value.get("status"), str) else None
    return None


def _worker_main() -> None:
    """The local launcher's worker: the config as JSON on stdin, ``[--force]``; its outcome to the file
    descriptor in ``$BPFREE_OUTCOME_FD`` (else stdout), a line for the log on stdout."""
    fd = os.environ.get(OUTCOME_FD_ENV)
    if fd is not None:
        os.set_inheritable(int(fd), False)  # no process this one starts holds the pipe open
    result = run_one(json.loads(sys.stdin.read()), force="--force" in sys.argv[1:])
    line = OUTCOME + json.dumps(result, allow_nan=False) + "\n"
    if fd is not None:
        with open(int(fd), "w") as pipe:  # first: a log that cannot be written must not lose the outcome
            pipe.write(line)
    try:
        print(f"{result['status']}: {result['run_id']} {result['error']}".rstrip(), flush=True)
        if fd is None:
            print(line, end="", flush=True)
    except OSError:  # the log cannot be written (e.g. a full disk); the outcome is on the pipe
        pass


if __name__ == "__main__":
    _worker_main()
