"""Sweeps and tuning workers on a real Slurm cluster: `bpfree sweep ... --launcher slurm` (submitit's
Slurm executor) and `bpfree tune` workers as a job array.

Needs a running cluster that this machine can submit to: CI starts a one-node one
(.ci/setup.d/slurm.sh, sourced by .ci/run) and sets BPFREE_TEST_SLURM=1; elsewhere every test here
is skipped. By hand: `source .ci/setup.d/slurm.sh` (as root), then pytest tests/test_slurm.py.

Everything trains tiny MLPs on the bundled digits set; the whole module takes about 5 minutes on 2
cores, most of it the time limit test (a Slurm time limit is at least a minute, enforced every 30 s).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
import yaml

from benchmarks.common.files import read_jsonl
from benchmarks.sweep.expand import expand, load_spec, run_dir_of

ROOT = Path(__file__).resolve().parent.parent
BPFREE = [sys.executable, "-m", "bpfree"]
FINAL = ("COMPLETED", "CANCELLED", "FAILED", "TIMEOUT", "OUT_OF_MEMORY", "NODE_FAIL", "PREEMPTED")
# each task: one core and one thread, so that two tasks share the 2 cores of a CI machine fairly
TASK_OPTS = ["cpus_per_task=1", 'slurm_setup=["export OMP_NUM_THREADS=1"]', "poll_s=1"]


@pytest.fixture(scope="module", autouse=True)
def slurm():
    pytest.importorskip("submitit", reason="submitit is not installed (optional dependency 'slurm')")
    if shutil.which("sinfo") is None or shutil.which("sbatch") is None:
        pytest.skip("no Slurm client commands (sinfo, sbatch) on PATH; CI starts a one-node cluster with "
                    ".ci/setup.d/slurm.sh")
    if os.environ.get("BPFREE_TEST_SLURM") != "1":
        pytest.skip("BPFREE_TEST_SLURM is not set: no cluster to submit to (CI sets it once "
                    ".ci/setup.d/slurm.sh has started one; `source .ci/setup.d/slurm.sh` does it here)")
    states = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True, timeout=30)
    assert states.returncode == 0 and re.search(r"idle|mixed|allocated", states.stdout), \
        f"BPFREE_TEST_SLURM=1 but the cluster does not answer: {states.stdout}{states.stderr}"


def write_spec(tmp_path: Path, name: str, groups: list[dict], seeds=(0,)) -> Path:
    spec = {"name": name, "measure": ["time"],
            "base": {"arch_args": {"widths": [16]}, "val_fraction": 0.1, "batch_size": 128},
            "profiles": {"quick": {"seeds": list(seeds), "epochs": 1}},
            "groups": [{"datasets": ["digits"], "arch": "mlp", **g} for g in groups]}
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def run_dirs(spec: Path, results: Path) -> list[Path]:
    """The run folder of every run of ``spec``, in the spec's (and the job array's) order."""
    return [run_dir_of(c) for _, cs in expand(load_spec(spec), "quick", results_dir=str(results / "runs"))
            for c in cs]


def sweep_command(spec: Path, results: Path, *opts: str, jobs: int = 2) -> list[str]:
    cmd = [*BPFREE, "sweep", str(spec), "--profile", "quick", "--run", "--launcher", "slurm", "--jobs", str(jobs),
           "--results", str(results)]
    for opt in (*TASK_OPTS, *opts):
        cmd += ["--launcher-opt", opt]
    return cmd


def sweep(spec: Path, results: Path, *opts: str, jobs: int = 2) -> subprocess.CompletedProcess:
    return subprocess.run(sweep_command(spec, results, *opts, jobs=jobs), cwd=ROOT, capture_output=True,
                          text=True, timeout=600, env=dict(os.environ, BPFREE_NO_DOWNLOAD="1"))


def outcomes(results: Path, spec_name: str) -> list[dict]:
    return read_jsonl(results / "sweeps" / f"{spec_name}_quick.jsonl")


def by_run(rows: list[dict]) -> dict[str, dict]:
    return {r["run_id"]: r for r in rows}


def job_ids(results: Path) -> list[str]:
    """The Slurm jobs the sweeps submitted, oldest first, from submitit's folders: <A>_<i> for the
    tasks of array A (and <A> with its sbatch script), <J> for a lone job."""
    folder = results / "sweeps" / "submitit"
    names = [p.name for p in folder.iterdir()] if folder.is_dir() else []
    return sorted({n.split("_")[0] for n in names if re.fullmatch(r"\d+(_\d+)?", n)}, key=int)


def array_ids(results: Path) -> list[str]:
    """The job arrays among them (those with task folders <A>_<i>)."""
    folder = results / "sweeps" / "submitit"
    names = [p.name for p in folder.iterdir()] if folder.is_dir() else []
    return sorted({m[1] for n in names if (m := re.fullmatch(r"(\d+)_\d+", n))}, key=int)


def sacct(job: str, fields: str = "JobID,State") -> list[list[str]]:
    """sacct's rows of a job (array tasks: one each), once every task's state is final (accounting lags
    the end of a task by a moment)."""
    deadline = time.time() + 30
    while True:
        out = subprocess.run(["sacct", "-X", "-n", "-P", "-j", job, "-o", fields], capture_output=True, text=True,
                             timeout=30)
        assert out.returncode == 0, out.stderr
        rows = [line.split("|") for line in out.stdout.splitlines() if line.strip()]
        state = fields.split(",").index("State")
        if rows and all(r[state].split()[0] in FINAL for r in rows) or time.time() > deadline:
            return rows
        time.sleep(1)


@pytest.fixture
def results(tmp_path):
    """A results root; any job array still queued or running at the end of the test is cancelled."""
    root = tmp_path / "results"
    yield root
    for job in job_ids(root):
        subprocess.run(["scancel", job], capture_output=True, timeout=30)


def wait_for_epoch(run_dir: Path, proc: subprocess.Popen, timeout: float = 180) -> None:
    """Until the run has written its first epoch's metrics (it is training), or fail."""
    deadline = time.time() + timeout
    metrics = run_dir / "metrics.jsonl"
    while time.time() < deadline:
        if metrics.exists() and metrics.read_text().strip():
            return
        assert proc.poll() is None, f"the sweep ended before {run_dir.name} trained: {proc.stdout.read()}"
        time.sleep(0.5)
    pytest.fail(f"{run_dir.name} wrote no epoch within {timeout} s")


# -- one job array ----------------------------------------------------------------------------------
def test_a_sweep_is_one_job_array_of_one_task_per_run(tmp_path, results):
    spec = write_spec(tmp_path, "slurm_array", [{"label": "1x16", "algorithms": ["bp", "mf"]}], seeds=(0, 1))
    expected = [d.name for d in run_dirs(spec, results)]
    assert len(expected) == 4
    proc = sweep(spec, results, "timeout_min=10")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "4 to run with launcher 'slurm' (2 at a time)" in proc.stdout

    rows = outcomes(results, "slurm_array")
    assert len(rows) == 4 and sorted(r["run_id"] for r in rows) == sorted(expected)
    assert {r["status"] for r in rows} == {"completed"}
    assert all((results / "runs" / name / "done").exists() for name in expected)

    [array] = array_ids(results)  # one sbatch: a single job array ...
    tasks = sacct(array, "JobID,State,Start,End")
    assert sorted(t[0] for t in tasks) == [f"{array}_{i}" for i in range(4)]  # ... of one task per run
    assert {t[1] for t in tasks} == {"COMPLETED"}
    script = (results / "sweeps" / "submitit" / array / f"{array}_submission.sh").read_text()
    assert "#SBATCH --array=0-3%2" in script and "#SBATCH --cpus-per-task=1" in script
    # --jobs 2: two tasks at once, never more (the tasks running as each one starts; whole seconds, and
    # a task that ends in the second the next one starts has ended)
    spans = [(t[2], t[3]) for t in tasks]
    assert max(sum(s <= start < e for s, e in spans) for start, _ in spans) == 2
    # submitit's logs: one folder per task under <results>/sweeps/submitit/<array>_<task>/
    for i in range(4):
        assert (results / "sweeps" / "submitit" / f"{array}_{i}" / f"{array}_{i}_0_log.out").exists()


@pytest.mark.parametrize("opt, message", [
    ("slurm_partition=nope", "error: sbatch refused the job array: sbatch: error: invalid partition"),
    ("slurm_partitoin=debug", "error: bad --launcher-opt for slurm: Unknown argument 'partitoin'"),
])
def test_an_option_slurm_refuses_is_a_one_line_error(tmp_path, results, opt, message):
    spec = write_spec(tmp_path, "slurm_refused", [{"label": "1x16", "algorithms": ["bp"]}])
    proc = sweep(spec, results, opt)
    assert proc.returncode == 2 and proc.stderr.strip().splitlines()[-1].startswith(message), proc.stderr
    assert not (results / "runs").exists() or not any((results / "runs").iterdir())


# -- scancel ----------------------------------------------------------------------------------------
def test_a_cancelled_task_is_reported_and_a_rerun_trains_it_alone(tmp_path, results):
    spec = write_spec(tmp_path, "slurm_cancel", [
        # ~20 s of training (0.15 s an epoch): the task is still training when its SIGKILL comes, 5 s
        # (KillWait) after scancel's SIGTERM, which submitit ignores
        {"label": "long", "algorithms": ["bp"], "config": {"epochs": 120, "batch_size": 16}},
        {"label": "short", "algorithms": ["mf"]}])
    long_dir, short_dir = run_dirs(spec, results)
    proc = subprocess.Popen(sweep_command(spec, results, "timeout_min=10"), cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    try:
        wait_for_epoch(long_dir, proc)
        [array] = array_ids(results)
        subprocess.run(["scancel", f"{array}_0"], check=True, timeout=30)  # task 0: the spec's first run
        out, _ = proc.communicate(timeout=300)
    finally:
        proc.kill()
    assert proc.returncode == 1, out  # a failed run
    rows = by_run(outcomes(results, "slurm_cancel"))
    assert rows[long_dir.name]["status"] == "failed"
    assert re.match(rf"cancelled: Slurm task {array}_0 ended CANCELLED", rows[long_dir.name]["error"]), rows
    assert rows[short_dir.name]["status"] == "completed"
    assert sacct(f"{array}_0")[0][1].startswith("CANCELLED")
    assert (long_dir / "metrics.jsonl").exists() and not (long_dir / "done").exists()  # stopped mid-training
    short_done = (short_dir / "done").stat().st_mtime_ns

    again = sweep(spec, results, "timeout_min=10")
    assert again.returncode == 0, again.stdout + again.stderr
    assert "1 finished already, 1 to run" in again.stdout
    rows = outcomes(results, "slurm_cancel")[2:]  # the second sweep's rows
    assert {r["run_id"]: r["status"] for r in rows} == {short_dir.name: "reused", long_dir.name: "completed"}
    assert (long_dir / "done").exists() and len((long_dir / "metrics.jsonl").read_text().splitlines()) == 120
    assert (short_dir / "done").stat().st_mtime_ns == short_done  # not trained again
    [rerun] = set(job_ids(results)) - {array}  # one job of one task: submitit submits a lone run as a plain job
    assert len(sacct(rerun)) == 1


# -- timeout_min, and runs that fail beside it --------------------------------------------------------
def test_a_timed_out_task_stays_unfinished_failing_tasks_stop_no_other_and_a_rerun_completes_it(tmp_path, results):
    spec = write_spec(tmp_path, "slurm_timeout", [
        # ~65 s of training (0.08 s an epoch here) after ~10 s of start-up: still training when SIGUSR2
        # comes, 25-55 s after the start with a 1-minute limit and slurm_signal_delay_s=5 (slurmctld
        # looks every 30 s), even on a machine half as fast again
        {"label": "long", "algorithms": ["bp"], "config": {"epochs": 800, "batch_size": 16}},
        {"label": "diverges", "algorithms": ["bp"], "config": {"epochs": 2},
         "hparams": {"optimizer": "sgd", "lr": 1.0e12}},
        {"label": "bad", "algorithms": ["mf"], "arch_args": {"widths": [8, 8]},
         "hparams": {"schedule": "sequential"}},  # 1 epoch for 2 layers: fails when the trainer is built
        {"label": "ok", "algorithms": ["mf"]}])
    long_dir, diverges_dir, bad_dir, ok_dir = run_dirs(spec, results)
    # submitit asks Slurm for SIGUSR2 slurm_signal_delay_s before the limit; the run ends there, mid-epoch
    proc = sweep(spec, results, "timeout_min=1", "slurm_signal_delay_s=5")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    rows = by_run(outcomes(results, "slurm_timeout"))
    assert len(rows) == 4
    assert rows[long_dir.name]["status"] == "failed" and "timed out" in rows[long_dir.name]["error"], rows
    assert rows[diverges_dir.name]["status"] == "diverged"
    assert rows[bad_dir.name]["status"] == "failed" and "sequential schedule" in rows[bad_dir.name]["error"]
    assert rows[ok_dir.name]["status"] == "completed"
    # the timed-out run: trained some epochs, not finished, not counted as a result
    epochs = (long_dir / "metrics.jsonl").read_text().splitlines()
    assert 1 <= len(epochs) < 800 and not (long_dir / "done").exists()
    summary = long_dir / "summary.json"
    assert not summary.exists() or json.loads(summary.read_text())["status"] == "failed"
    finished = {d: (d / "done").stat().st_mtime_ns for d in (diverges_dir, ok_dir)}

    again = sweep(spec, results, "timeout_min=10")
    assert again.returncode == 1, again.stdout + again.stderr  # the bad config fails again
    assert "2 finished already, 2 to run" in again.stdout
    rows = by_run(outcomes(results, "slurm_timeout")[4:])
    assert {name: r["status"] for name, r in rows.items()} == {
        long_dir.name: "completed", diverges_dir.name: "reused", ok_dir.name: "reused", bad_dir.name: "failed"}
    assert (long_dir / "done").exists() and len((long_dir / "metrics.jsonl").read_text().splitlines()) == 800
    assert {d: (d / "done").stat().st_mtime_ns for d in finished} == finished


# -- tuning workers as a job array ------------------------------------------------------------------
def test_tune_workers_as_an_array_share_one_study_and_a_cancelled_workers_trial_is_retried(tmp_path):
    optuna = pytest.importorskip("optuna", reason="optuna is not installed (optional dependency 'tune')")
    from benchmarks.tuning import make_storage

    name = f"slurm_{uuid.uuid4().hex[:10]}"  # a PostgreSQL database outlives the test
    studies = tmp_path / "studies"
    postgres = os.environ.get("BPFREE_TEST_POSTGRES_URL")
    storage = postgres or str(studies / f"{name}.log")
    # a trial silent for 3 heartbeats (3 s) is failed, and queued again, when a worker starts its next trial: the
    # budget leaves the surviving worker enough trials (of a few seconds each) to get there
    trials, heartbeat = 6, 1
    bpfree = " ".join(BPFREE)
    worker = (f"cd {ROOT} && exec {bpfree} tune -a mf -d digits --widths 16 --epochs 40 "
              f"--trials {trials} --study {name} --storage {storage} --studies-dir {studies} --params-file none "
              f"--pruner none --heartbeat {heartbeat} --worker-id $SLURM_ARRAY_TASK_ID")
    submitted = subprocess.run(["sbatch", "--parsable", "--array=0-1%2", "--cpus-per-task=1", "--time=10",
                                "--export=ALL,OMP_NUM_THREADS=1,PYTHONUNBUFFERED=1", "-o", str(tmp_path / "worker_%a.out"),
                                "--wrap", worker], capture_output=True, text=True, timeout=30)
    assert submitted.returncode == 0, submitted.stderr
    array = submitted.stdout.strip().split(";")[0]
    store = make_storage(storage, name, studies, heartbeat_interval=heartbeat)
    try:
        deadline = time.time() + 180
        log = tmp_path / "worker_0.out"
        while time.time() < deadline:  # until worker 0 is training its first trial: an epoch line, no trial done
            text = log.read_text(errors="replace") if log.exists() else ""
            if re.search(r"mf epoch +\d+/40", text) and not re.search(r"Trial \d+ finished", text):
                break
            assert "Trial " not in text, f"worker 0 finished a trial before it was seen training:\n{text[-2000:]}"
            time.sleep(0.1)
        else:
            pytest.fail(f"worker 0 never trained: {sacct(array)}")
        subprocess.run(["scancel", f"{array}_0"], check=True, timeout=30)  # worker 0, mid-trial
        deadline = time.time() + 300
        while len(tasks := sacct(array)) < 2 or not all(t[1].split()[0] in FINAL for t in tasks):
            assert time.time() < deadline, f"workers still running: {tasks}"
            time.sleep(2)
        states = {t[0]: t[1].split()[0] for t in tasks}
        assert states == {f"{array}_0": "CANCELLED", f"{array}_1": "COMPLETED"}, \
            (tmp_path / "worker_1.out").read_text()[-3000:]

        study = optuna.load_study(study_name=name, storage=store)
        by_state: dict[str, list] = {}
        for t in study.trials:
            by_state.setdefault(t.state.name, []).append(t)
        assert len(by_state.get("COMPLETE", [])) + len(by_state.get("PRUNED", [])) == trials  # exactly the budget
        assert "RUNNING" not in by_state and "WAITING" not in by_state
        [failed] = by_state["FAIL"]  # the cancelled worker's trial ...
        retried = [t for t in study.trials if t.system_attrs.get("failed_trial") == failed.number]
        assert len(retried) == 1 and retried[0].state.name == "COMPLETE"  # ... was run again, to the end
        assert retried[0].params == failed.params
        # in the run folder the cancelled worker had left half-written: trained again from the start
        run_dir = Path(retried[0].user_attrs["run_dir"])
        assert run_dir == Path(failed.user_attrs["run_dir"]) and (run_dir / "done").exists()
        assert len((run_dir / "metrics.jsonl").read_text().splitlines()) == 40
    finally:
        subprocess.run(["scancel", array], capture_output=True, timeout=30)
        if postgres:
            try:
                optuna.delete_study(study_name=name, storage=store)
            except KeyError:
                pass
