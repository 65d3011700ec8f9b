"""Faults as standing tests: two identical runs at once, a sweep killed with SIGKILL at seeded random
moments and restarted. Tiny runs on the bundled digits, so each test takes seconds of training (most
of the time goes to starting Python processes)."""

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
RUN = ["-a", "bp", "-d", "digits", "--widths", "64", "--batch-size", "16", "--quiet"]


def cli(*args, **kw):
    return subprocess.Popen([sys.executable, "-m", "bpfree", "run", *map(str, args)], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)


def wait_for(predicate, timeout=120.0):
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError("condition not met")
        time.sleep(0.05)


def every_json_parses(root: Path) -> int:
    n = 0
    for path in root.rglob("*"):
        if path.suffix == ".json" or path.name == "done":
            json.loads(path.read_text())
            n += 1
        elif path.suffix == ".jsonl":
            for line in path.read_text().splitlines():
                json.loads(line)
            n += 1
    return n


def test_two_identical_runs_at_once_give_one_consistent_result(tmp_path):
    runs = tmp_path / "runs"
    first = cli(*RUN, "--epochs", "12", "--results-dir", runs)
    wait_for(lambda: any(runs.glob("*/config.json")))  # the first one holds the lock and trains
    busy = cli(*RUN, "--epochs", "12", "--results-dir", runs, "--no-wait")
    waiter = cli(*RUN, "--epochs", "12", "--results-dir", runs)
    out_busy, out_waiter, out_first = busy.communicate(timeout=300), waiter.communicate(timeout=300), \
        first.communicate(timeout=300)
    assert first.returncode == 0, out_first[1][-2000:]
    if busy.returncode != 0:  # the usual case: the first was still training
        assert busy.returncode == 5 and out_busy[1].startswith("busy: run ") and "being trained" in out_busy[1]
    assert waiter.returncode == 0, out_waiter[1][-2000:]
    [run_dir] = [p for p in runs.iterdir() if not p.name.startswith(".")]
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == list(range(1, 13))  # every epoch once: one writer
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "completed"
    assert f"epoch {summary['selected_epoch']}" in out_waiter[0]  # the waiter reports the same result
    assert "reused" in out_waiter[0] or "reused" in out_first[0]


SPEC = """
name: faults
profiles:
  quick: {seeds: [0, 1], epochs: 2}
groups:
  - label: "1x32"
    datasets: [digits]
    arch: mlp
    arch_args: {widths: [32]}
    algorithms: [bp, mf]
    config: {batch_size: 32}
"""


def workers_alive(mark: str) -> list[int]:
    """Pids of processes whose environment carries ``mark``."""
    pids = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                if mark.encode() in (proc / "environ").read_bytes():
                    pids.append(int(proc.name))
            except OSError:
                pass
    return pids


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="uses /proc and PR_SET_PDEATHSIG")
def test_sweep_killed_at_random_points_loses_and_retrains_nothing(tmp_path):
    spec = tmp_path / "faults.yaml"
    spec.write_text(SPEC)
    results = tmp_path / "results"
    mark = f"BPFREE_FAULT_TEST={tmp_path.name}"
    env = dict(os.environ, BPFREE_FAULT_TEST=tmp_path.name, OMP_NUM_THREADS="1")
    command = [sys.executable, "-m", "bpfree", "sweep", str(spec), "--run", "--jobs", "2", "--results", str(results)]
    rng = random.Random(12)
    finished: dict[str, str] = {}  # run folder -> its done marker's text, as first seen
    kills = 0
    for delay in [rng.uniform(2.0, 6.0) for _ in range(3)]:
        proc = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(delay)
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            kills += 1
        proc.wait()
        wait_for(lambda: not workers_alive(mark), timeout=30)  # the workers died with their parent
        for done in (results / "runs").glob("*/done"):
            text = done.read_text()
            assert finished.setdefault(done.parent.name, text) == text  # a finished run is never retrained
        every_json_parses(results)
    final = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert final.returncode == 0, final.stdout[-2000:] + final.stderr[-2000:]
    folders = [p for p in (results / "runs").iterdir() if not p.name.startswith(".")]
    assert len(folders) == 4 and all((p / "done").exists() for p in folders)
    for p in folders:
        if p.name in finished:
            assert (p / "done").read_text() == finished[p.name]
        epochs = [json.loads(line)["epoch"] for line in (p / "metrics.jsonl").read_text().splitlines()]
        assert epochs == [1, 2]  # trained once, by one process
    assert every_json_parses(results) >= 4 * 5
    leftovers = [p for p in results.rglob(".*") if p.is_file() and p.parent.name != ".locks"]
    assert leftovers == []  # no temporary files left by the killed processes' writes
    assert f"{len(finished)} reused" in final.stdout or not finished
    assert kills >= 1
