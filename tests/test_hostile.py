"""Faults found by a hostile run on a fresh clone, as standing tests: each one must give one clear line
and a non-zero exit, lose no finished result, and leave nothing half-written that could later count as
finished. Tiny runs on the bundled digits (widths of 8, one epoch), most of them in this process.

A full disk is simulated (``disk_full``): every write into one folder fails with ``ENOSPC``, the way
Linux fails it (the file is created; its bytes are not written).
"""

from __future__ import annotations

import builtins
import errno
import io
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import yaml

from algorithms import ConfigError
from benchmarks.run.config import ExperimentConfig
from benchmarks.run.folders import is_done, load_run
from benchmarks.run.runner import run_experiment
from benchmarks.sweep.expand import latest_statuses, load_spec, run_configs, run_dir_of, run_key, status_file

ROOT = Path(__file__).resolve().parent.parent
LINUX = sys.platform.startswith("linux")


@pytest.fixture(autouse=True)
def own_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("BPFREE_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("BPFREE_NO_DOWNLOAD", "1")


def tiny(results_dir, **kw) -> ExperimentConfig:
    values = dict(algorithm="bp", dataset="digits", arch_args={"widths": [8]}, epochs=1, quiet=True,
                  results_dir=str(results_dir), tag="hostile")
    values.update(kw)
    return ExperimentConfig(**values)


def one_line(text: str) -> str:
    lines = text.strip().splitlines()
    assert len(lines) == 1, text
    assert "Traceback" not in text
    return lines[0]


def leftovers(root: Path) -> list[str]:
    """Temporary files a failed write left behind."""
    return sorted(str(p) for p in Path(root).rglob("*") if p.name.endswith((".tmp", ".tmp.npz"))
                  or ".model.pt." in p.name or (p.name.startswith(".") and p.suffix == ".json"))


# -- a full disk ------------------------------------------------------------------------------------
class _FullFile:
    """A file on a full disk: opened (and created) as usual, but no byte reaches it."""

    def __init__(self, f):
        self._f = f

    def write(self, data):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    def writelines(self, lines):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    def __getattr__(self, name):
        return getattr(self._f, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._f.close()

    def __iter__(self):
        return iter(self._f)


def _path_of(file) -> str | None:
    if isinstance(file, int):
        try:
            return os.readlink(f"/proc/self/fd/{file}")
        except OSError:
            return None
    if isinstance(file, (str, bytes, os.PathLike)):
        return os.path.abspath(os.fsdecode(file))
    return None


def disk_full(monkeypatch, folder: Path) -> None:
    """From now on every write below ``folder`` fails with ENOSPC (open for writing, os.write)."""
    folder = str(Path(folder).resolve())
    real_open, real_write = io.open, os.write

    def inside(file) -> bool:
        path = _path_of(file)
        return path is not None and (path == folder or path.startswith(folder + os.sep))

    def full_open(file, mode="r", *args, **kwargs):
        f = real_open(file, mode, *args, **kwargs)
        if any(c in mode for c in "wax+") and inside(file):
            return _FullFile(f)
        return f

    def full_write(fd, data):
        if inside(fd):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_write(fd, data)

    monkeypatch.setattr(builtins, "open", full_open)
    monkeypatch.setattr(io, "open", full_open)
    monkeypatch.setattr(os, "write", full_write)


def write_spec(tmp_path, **changes) -> Path:
    spec = {"name": "hostile", "measure": ["time"], "base": {"arch_args": {"widths": [8]}},
            "profiles": {"quick": {"seeds": [0], "epochs": 1}},
            "rows": {"BP": {"algorithm": "bp", "mode": "output"}},
            "groups": [{"label": "1x8", "datasets": ["digits"], "arch": "mlp", "algorithms": ["bp"]}]}
    spec.update(changes)
    path = tmp_path / "hostile.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


# == 1. a sweep's worker killed ======================================================================
def test_a_killed_worker_is_a_failed_outcome_and_the_sweep_goes_on(tmp_path, monkeypatch):
    """The training child killed (SIGKILL), or one that cannot write its log, is a failed outcome with
    a reason; the sweep records every other run, and its status file stays readable. Every row and
    log names the run folder, data fingerprint included (a diverged run's too)."""
    import benchmarks.sweep.launchers as launchers

    runs = tmp_path / "res" / "runs"
    killed, unloggable = tiny(runs, seed=1), tiny(runs, seed=2)
    logs = tmp_path / "res" / "sweeps" / "logs"
    (logs / f"{run_dir_of(unloggable).name}.log").mkdir(parents=True)  # a log that cannot be opened
    real_popen = launchers.subprocess.Popen

    class KillFirst(real_popen):  # the first worker started is killed at once, as by `kill -9 PID`
        started = 0

        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            KillFirst.started += 1
            if KillFirst.started == 1:
                os.kill(self.pid, signal.SIGKILL)

    monkeypatch.setattr(launchers.subprocess, "Popen", KillFirst)
    status = status_file(tmp_path / "res", "hostile", "quick")
    outcomes = run_configs([killed, unloggable], dry_run=False, status_path=status, log=lambda *_: None)
    assert KillFirst.started == 1
    by_id = {o["run_id"]: o for o in outcomes}
    assert by_id[run_dir_of(killed).name]["status"] == "failed"
    assert "killed by signal 9 (SIGKILL)" in by_id[run_dir_of(killed).name]["error"]
    assert (logs / f"{run_dir_of(killed).name}.log").is_file()  # the log is named as the folder
    assert by_id[run_dir_of(unloggable).name]["status"] == "failed"  # the sweep went on after the kill
    assert "cannot write the run's log" in by_id[run_dir_of(unloggable).name]["error"]
    rows = [json.loads(line) for line in status.read_text().splitlines()]
    assert all(isinstance(r, dict) for r in rows) and len(rows) == 2
    assert len(latest_statuses(status)) == 2
    assert not is_done(run_dir_of(killed))
    # what a worker reports for a diverged run names its folder too
    diverging = tiny(runs, seed=3, hparams={"optimizer": "sgd", "lr": 1e12})
    row = launchers.run_one(diverging.to_dict())
    assert row["status"] == "diverged" and row["run_id"] == run_dir_of(diverging).name
    assert (runs / row["run_id"] / "done").exists()


def test_a_status_file_with_a_line_that_is_not_an_object_is_read_around_it(tmp_path, capsys):
    """A `null` line (left by the old shadowing bug) is skipped and named; tables of that spec build."""
    from benchmarks.tables.accuracy import build_table

    spec = load_spec(write_spec(tmp_path))
    cfg = tiny(tmp_path / "runs", tag="hostile", arch_args={"widths": [8]})
    status = status_file(tmp_path, "hostile", "quick")
    status.parent.mkdir(parents=True)
    good = {"run_id": "x", "key": run_key(cfg.resolve().to_dict()), "status": "failed", "error": "boom",
            "seconds": 0.0, "time": "now"}
    status.write_text("null\n" + json.dumps(good) + "\n[1, 2]\n")
    statuses = latest_statuses(status)
    assert list(statuses.values()) == [good]
    err = capsys.readouterr().err
    assert f"{status}: line 1" in err and "line 3" in err
    build_table(spec, "quick", [], statuses, reference=[])


def test_two_sweeps_sharing_a_run_do_not_truncate_its_log(tmp_path, monkeypatch):
    """A second attempt appends to the run's log; its outcome is its own, not another attempt's."""
    import benchmarks.sweep.launchers as launchers

    cfg = tiny(tmp_path / "runs")
    log = tmp_path / "sweeps" / "logs" / f"{run_dir_of(cfg).name}.log"
    log.parent.mkdir(parents=True)
    other = 'epoch 1 ...\ncompleted: x\nOUTCOME {"status": "completed", "run_id": "x", "error": "", "seconds": 1}\n'
    log.write_text(other)  # another sweep's attempt at the same run
    real_popen = launchers.subprocess.Popen

    class Killed(real_popen):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            os.kill(self.pid, signal.SIGKILL)

    monkeypatch.setattr(launchers.subprocess, "Popen", Killed)
    [row] = list(launchers.local([cfg.resolve()]))
    assert row["status"] == "failed" and "killed by signal 9" in row["error"]
    assert log.read_text().startswith(other)


# == 2. a full disk ==================================================================================
def test_a_full_disk_during_a_run_is_one_line_and_leaves_nothing_finished(tmp_path, monkeypatch, capsys):
    from bpfree import run

    results = tmp_path / "runs"
    results.mkdir()
    disk_full(monkeypatch, results)
    code = run.main(["-a", "bp", "-d", "digits", "--widths", "8", "--epochs", "1", "--quiet",
                     "--results-dir", str(results), "--set", "save=\"final\""])
    out = capsys.readouterr()
    assert code not in (0, None)
    assert "No space left on device" in one_line(out.err) and one_line(out.err).startswith("error: ")
    assert not any(is_done(d) for d in results.iterdir() if d.is_dir())
    assert leftovers(results) == []


def test_a_full_disk_when_the_checkpoint_is_saved_leaves_no_tmp_file(tmp_path, monkeypatch):
    import benchmarks.run.runner as runner
    from benchmarks.run.runner import WriteFailed

    cfg = tiny(tmp_path / "runs", save="final")
    real = runner.save_checkpoint

    def full_at_checkpoint(trainer, run_dir):
        disk_full(monkeypatch, run_dir)
        return real(trainer, run_dir)

    monkeypatch.setattr(runner, "save_checkpoint", full_at_checkpoint)
    with pytest.raises(WriteFailed, match="No space left on device"):
        run_experiment(cfg)
    run_dir = run_dir_of(cfg)
    assert not is_done(run_dir) and not (run_dir / "model.pt").exists()
    assert leftovers(run_dir) == []


def test_a_full_disk_only_skips_the_decode_cache(tmp_path, monkeypatch):
    from tests.test_data_identity import make_image_folder

    images = make_image_folder(tmp_path / "pets")
    cache = tmp_path / "cache"
    cache.mkdir()
    disk_full(monkeypatch, cache)
    result = run_experiment(tiny(tmp_path / "runs", dataset=f"imagefolder:{images}"))
    assert result.summary["status"] == "completed"
    assert list(cache.glob("*.npz")) == [] and leftovers(cache) == []


def test_a_completed_summary_without_done_is_not_a_table_cell(tmp_path):
    from benchmarks.tables.accuracy import table_rows

    spec = load_spec(write_spec(tmp_path))
    [(_, [cfg])] = __import__("benchmarks.sweep.expand", fromlist=["expand"]).expand(
        spec, "quick", results_dir=str(tmp_path / "runs"))
    run_dir = run_experiment(cfg).run_dir
    (run_dir / "done").unlink()  # the disk filled up after summary.json, before the marker
    [row] = table_rows(spec, "quick", [load_run(run_dir)], {}, [])
    assert row["n"] == 0 and row["mean"] is None and "unfinished" in row["note"]


@pytest.mark.skipif(not LINUX, reason="the simulated full disk looks up file descriptors in /proc")
def test_a_full_disk_in_a_study_is_one_line_and_the_default_trial_is_retried(tmp_path, monkeypatch, capsys,
                                                                             caplog):
    optuna = pytest.importorskip("optuna")
    from bpfree import tune as tune_cli

    optuna.logging.disable_default_handler()  # Optuna's own lines go to caplog, not to stderr
    optuna.logging.enable_propagation()
    caplog.set_level("WARNING", logger="optuna")

    studies = tmp_path / "studies"
    argv = ["-a", "bp", "-d", "digits", "--widths", "8", "--epochs", "1", "--quiet", "--trials", "2",
            "--studies-dir", str(studies), "--params-file", "none"]
    import benchmarks.tuning.study as study_module
    real = study_module.run_experiment

    def full_in_the_runs(cfg, **kw):  # the trial's run folder cannot be written: the disk is full
        disk_full(monkeypatch, studies / "bp_digits_1x8" / "runs")
        return real(cfg, **kw)

    monkeypatch.setattr(study_module, "run_experiment", full_in_the_runs)
    code = tune_cli.main(argv)
    out = capsys.readouterr()
    assert code not in (0, None)
    assert "No space left on device" in one_line(out.err)
    assert any("Trial 0 failed" in r.getMessage() for r in caplog.records)
    assert not any(r.exc_info for r in caplog.records)  # Optuna's warning without the traceback
    monkeypatch.undo()  # space again
    monkeypatch.setenv("BPFREE_CACHE_DIR", str(tmp_path / "cache"))
    assert tune_cli.main(argv) == 0
    study = optuna.load_study(study_name="bp_digits_1x8",
                              storage=__import__("benchmarks.tuning", fromlist=["make_storage"]).make_storage(
                                  None, "bp_digits_1x8", studies))
    defaults = [t for t in study.trials if t.user_attrs.get("origin") == "defaults"]
    assert [t.state.name for t in defaults] == ["FAIL", "COMPLETE"]
    optuna.logging.disable_propagation()
    optuna.logging.enable_default_handler()


@pytest.mark.skipif(not LINUX, reason="the simulated full disk looks up file descriptors in /proc")
def test_a_full_disk_for_the_sweeps_status_file_is_one_line(tmp_path, monkeypatch, capsys):
    from bpfree import sweep

    spec = write_spec(tmp_path)
    results = tmp_path / "res"
    cfg = tiny(results / "runs", tag="hostile")
    run_experiment(cfg)  # finished already: reused
    (results / "sweeps").mkdir()
    disk_full(monkeypatch, results / "sweeps")
    code = sweep.main([str(spec), "--run", "--results", str(results)])
    out = capsys.readouterr()
    assert code not in (0, None) and "No space left on device" in one_line(out.err)
    assert is_done(run_dir_of(cfg))


# == 3. wrong verdicts ===============================================================================
def test_a_healthy_run_with_train_eval_limit_1_is_not_at_chance(tmp_path):
    result = run_experiment(tiny(tmp_path, epochs=3, arch_args={"widths": [32]}, train_eval_limit=1,
                                 hparams={"lr": 0.01}))
    assert result.summary["status"] == "completed"


def test_a_diverged_verdict_does_not_stick_when_its_thresholds_change(tmp_path):
    from benchmarks.run.runner import RunDiverged

    strict = tiny(tmp_path / "runs", chance_epochs=1, chance_margin=100.0)  # everything is "at chance"
    with pytest.raises(RunDiverged):
        run_experiment(strict)
    loose = tiny(tmp_path / "runs", chance_epochs=1, chance_margin=1.0)
    assert run_dir_of(loose) == run_dir_of(strict)  # judging settings are not the run's identity
    lines = []
    run_configs([loose], dry_run=True, log=lines.append)
    assert lines[0].startswith("[todo]")  # judged by other thresholds: not finished for these
    result = run_experiment(loose)
    assert not result.reused and result.summary["status"] == "completed"


def test_a_one_class_image_folder_is_refused_with_one_line(tmp_path, capsys):
    from bpfree import run
    from tests.test_data_identity import make_image_folder

    images = make_image_folder(tmp_path / "cats", classes=("cat",))
    code = run.main(["-a", "bp", "-d", f"imagefolder:{images}", "--widths", "8", "--epochs", "1", "--quiet",
                     "--results-dir", str(tmp_path / "runs")])
    err = one_line(capsys.readouterr().err)
    assert code == 2 and "single class" in err
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


# == 4. Optuna ========================================================================================
KILLED_WORKER = """
import os, signal
import benchmarks.tuning.study as tuning
from benchmarks.run.config import ExperimentConfig
def killed(*a, **k):  # the worker dies in the middle of its trial
    os.kill(os.getpid(), signal.SIGKILL)
tuning.run_experiment = killed
tuning.tune(ExperimentConfig(**{cfg}), 2, studies_dir={studies!r}, params_file=None)
"""


def test_a_killed_tuning_worker_resumed_at_once_retries_its_trial(tmp_path):
    """Resumed well within the heartbeat's grace period (60 s beats, 180 s grace), the dead worker's
    RUNNING trial is failed and retried, and the study reaches its budget."""
    optuna = pytest.importorskip("optuna")
    from benchmarks.tuning import tune

    studies = tmp_path / "studies"
    cfg = dict(algorithm="bp", dataset="digits", arch_args={"widths": [8]}, epochs=1, quiet=True)
    worker = subprocess.run([sys.executable, "-c", KILLED_WORKER.format(cfg=cfg, studies=str(studies))],
                            cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert worker.returncode == -signal.SIGKILL, worker.stderr[-2000:]
    outcome = tune(ExperimentConfig(**cfg), 2, studies_dir=studies, params_file=None, log=lambda *_: None)
    trials = outcome.study.trials
    assert trials[0].state == optuna.trial.TrialState.FAIL
    assert "running" not in outcome.counts and outcome.counts.get("complete") == 2
    retried = [t for t in trials if t.system_attrs.get("failed_trial") == trials[0].number]
    assert len(retried) == 1 and retried[0].params == trials[0].params


@pytest.fixture
def silent_server():
    """A TCP port on 127.0.0.1 that accepts connections and never answers."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    held, stop = [], threading.Event()

    def accept():
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(server.accept()[0])
            except OSError:
                pass

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield server.getsockname()[1]
    stop.set()
    thread.join()
    for conn in held:
        conn.close()
    server.close()


def test_a_database_that_never_answers_is_one_line_after_a_timeout(tmp_path, monkeypatch, capsys, silent_server):
    pytest.importorskip("optuna")
    pytest.importorskip("psycopg2", reason="no PostgreSQL driver installed")
    import benchmarks.tuning.storage as storage
    from bpfree import tune as tune_cli

    monkeypatch.setattr(storage, "CONNECT_TIMEOUT_S", 2)
    started = time.monotonic()
    code = tune_cli.main(["-a", "bp", "-d", "digits", "--widths", "8", "--epochs", "1", "--trials", "1",
                          "--studies-dir", str(tmp_path), "--storage", f"postgresql://u@127.0.0.1:{silent_server}/db"])
    err = one_line(capsys.readouterr().err)
    assert code == 2 and "no answer within 2 s" in err and str(silent_server) in err
    assert time.monotonic() - started < 60


@pytest.mark.parametrize("kind", ["folder", "folder.log", "garbage.log"])
def test_a_storage_that_is_a_folder_or_garbage_is_one_line(tmp_path, capsys, kind):
    pytest.importorskip("optuna")
    from bpfree import tune as tune_cli

    path = tmp_path / kind
    if kind == "garbage.log":
        path.write_bytes(b"\x00\xffnot a journal\n{]\n")
    else:
        path.mkdir()
    code = tune_cli.main(["-a", "bp", "-d", "digits", "--widths", "8", "--epochs", "1", "--trials", "1",
                          "--studies-dir", str(tmp_path / "studies"), "--storage", str(path)])
    err = one_line(capsys.readouterr().err)
    assert code == 2 and err.startswith("error: ") and str(path) in err


@pytest.mark.parametrize("name, fragment", [("../escape", "plain file name"), ("/tmp/abs", "plain file name"),
                                            ("a" * 300, "at most 100 characters"), ("", "plain file name")])
def test_a_study_name_that_is_not_a_plain_short_file_name_is_refused(tmp_path, capsys, name, fragment):
    pytest.importorskip("optuna")
    from bpfree import tune as tune_cli

    studies = tmp_path / "a" / "studies"
    code = tune_cli.main(["-a", "bp", "-d", "digits", "--widths", "8", "--epochs", "1", "--trials", "1",
                          "--studies-dir", str(studies), "--study", name])
    err = one_line(capsys.readouterr().err)
    assert code == 2 and fragment in err
    assert sorted(p.name for p in tmp_path.rglob("*")) in ([], ["a"], ["a", "studies"])


# == 5. smaller ======================================================================================
def test_a_params_file_that_is_not_json_is_one_line(tmp_path, capsys):
    from bpfree import sweep

    bad = tmp_path / "params.json"
    bad.write_text("{not json")
    code = sweep.main([str(write_spec(tmp_path)), "--results", str(tmp_path / "res"), "--params-file", str(bad)])
    err = one_line(capsys.readouterr().err)
    assert code == 2 and str(bad) in err and "not valid JSON" in err


def test_a_corrupt_summary_among_the_runs_is_skipped_and_named(tmp_path, capsys):
    from benchmarks.run.folders import load_runs

    good, bad = (run_experiment(tiny(tmp_path / "runs", seed=s)).run_dir for s in (0, 1))
    (bad / "summary.json").write_text('{"status": "compl')
    runs = list(load_runs(tmp_path / "runs"))
    assert [r["run_dir"] for r in runs] == [str(good)]
    assert f"{bad}" in capsys.readouterr().err
    # a sweep finds it damaged: it is run again, not reused, and the sweep goes on
    outcome = run_experiment(tiny(tmp_path / "runs", seed=1))
    assert not outcome.reused and json.loads((bad / "summary.json").read_text())["status"] == "completed"


@pytest.mark.parametrize("args, fragment", [
    (["--seed", str(2 ** 32)], "seed must be an integer in [0, 4294967295]"),
    (["--widths", str(10 ** 8)], "at most 100000"),
])
def test_a_seed_or_width_out_of_range_is_one_line(tmp_path, capsys, args, fragment):
    from bpfree import run

    code = run.main(["-a", "bp", "-d", "digits", "--widths", "8", "--epochs", "1", "--quiet",
                     "--results-dir", str(tmp_path / "runs"), *args])
    err = one_line(capsys.readouterr().err)
    assert code == 2 and fragment in err


def test_a_header_only_csv_is_said_to_have_no_rows(tmp_path, capsys):
    from bpfree import run

    path = tmp_path / "empty.csv"
    path.write_text("a,b,label\n")
    code = run.main(["-a", "bp", "-d", f"csv:{path}", "--widths", "8", "--epochs", "1", "--quiet",
                     "--results-dir", str(tmp_path / "runs")])
    err = one_line(capsys.readouterr().err)
    assert code == 2 and "no rows" in err and "not numeric" not in err


def test_a_misspelt_prediction_mode_in_a_specs_rows_is_refused(tmp_path):
    path = write_spec(tmp_path, rows={"MF (FF pred)": {"algorithm": "mf", "mode": "fff"}},
                      groups=[{"label": "1x8", "datasets": ["digits"], "arch": "mlp", "algorithms": ["mf"]}])
    with pytest.raises(ConfigError, match=r"mode 'fff'.*mf.*ff, bp, layer<N>"):
        load_spec(path)
    for name in ("table1", "table3", "fg", "sff"):  # the shipped specs' rows are all valid
        load_spec(name)


def test_the_fingerprint_cache_is_not_fooled_by_a_restored_mtime(tmp_path):
    from benchmarks.datasets.fingerprint import fingerprint_files

    path = tmp_path / "f.bin"
    path.write_bytes(b"abc")
    first = fingerprint_files([("f", path)])
    st = path.stat()
    time.sleep(0.05)  # file times tick coarsely
    path.write_bytes(b"abd")  # same size, other content ...
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))  # ... and the old mtime put back
    assert path.stat().st_mtime_ns == st.st_mtime_ns and path.stat().st_size == st.st_size
    assert fingerprint_files([("f", path)]) != first
