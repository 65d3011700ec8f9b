"""Mid-run checkpoints (benchmarks/run/resume.py): a run stopped after some epochs and started again goes on
from its last saved epoch and ends exactly as an uninterrupted run of the same config, for every registered
algorithm; what must not resume (other code, meters that cannot take over, a damaged file, a run that
failed for a reason of its own) starts again from its first epoch."""

from __future__ import annotations

import pytest
import torch

from algorithms import ALGORITHMS
from benchmarks.common.files import read_jsonl
from benchmarks.run import resume, runner
from benchmarks.run.config import ExperimentConfig
from benchmarks.run.runner import run_experiment

# An algorithm that cannot train an MLP gets its network here (as tests/test_every_algorithm.py does).
ARCH = {"sff": ("cnn", {"channels": [8, 8]})}
TIMES = ("_time_s",)  # wall-clock fields differ between any two runs


class Stop(KeyboardInterrupt):
    """What a kill looks like from inside (Ctrl-C, SystemExit from a SIGTERM handler): not an Exception."""


@pytest.fixture(autouse=True)
def save_every_epoch(monkeypatch):
    monkeypatch.setattr(runner, "RESUME_EVERY_S", 0.0)


def config(results_dir, algorithm="mf", **overrides) -> ExperimentConfig:
    arch, arch_args = ARCH.get(algorithm, ("mlp", {"widths": [32, 32]}))
    values = dict(algorithm=algorithm, dataset="digits", arch=arch, arch_args=arch_args, epochs=4, batch_size=64,
                  train_limit=600, quiet=True, results_dir=str(results_dir),
                  chance_epochs=100)  # a slow starter (FA on 600 images) is not judged at chance here
    values.update(overrides)
    return ExperimentConfig(**values)


def stop_after(epoch: int):
    def on_epoch(row):
        if row["epoch"] == epoch:
            raise Stop()
    return on_epoch


def rows(run_dir):
    return [{k: v for k, v in r.items() if not k.endswith(TIMES)} for r in read_jsonl(run_dir / "metrics.jsonl")]


def without_times(summary):
    drop = ("wall_time_s", "measurements", "resumed_after_epochs", "selected", "final")
    return {k: v for k, v in summary.items() if k not in drop}


@pytest.mark.parametrize("algorithm", ALGORITHMS.names())
def test_a_stopped_run_goes_on_and_ends_as_an_uninterrupted_one(algorithm, tmp_path):
    torch.set_num_threads(1)
    whole = run_experiment(config(tmp_path / "whole", algorithm))
    cfg = config(tmp_path / "stopped", algorithm)
    with pytest.raises(Stop):
        run_experiment(cfg, on_epoch=stop_after(3))  # epoch 3 written, its state not saved: it is trained again
    first = run_experiment(cfg)
    assert first.summary["resumed_after_epochs"] == [2]
    assert rows(first.run_dir) == rows(whole.run_dir)
    assert without_times(first.summary) == without_times(whole.summary)
    assert not (first.run_dir / resume.RESUME).exists()  # a finished run keeps no mid-run state
    # the clock's figures cover every epoch, the stopped attempt's too
    assert first.summary["measurements"]["epoch_time_n"] == whole.summary["measurements"]["epoch_time_n"]


def test_a_run_resumed_twice_counts_both_stops(tmp_path):
    cfg = config(tmp_path, epochs=5)
    for epoch in (2, 4):
        with pytest.raises(Stop):
            run_experiment(cfg, on_epoch=stop_after(epoch))
    assert run_experiment(cfg).summary["resumed_after_epochs"] == [1, 3]


def test_other_code_a_damaged_file_or_a_memory_meter_start_again(tmp_path, monkeypatch):
    cfg = config(tmp_path)
    with pytest.raises(Stop):
        run_experiment(cfg, on_epoch=stop_after(3))
    run_dir = next(p for p in tmp_path.iterdir() if p.is_dir() and not p.name.startswith("."))
    state = resume.read_state(run_dir)
    assert state is not None and len(state["loop"]["history"]) == 2
    assert resume.resumable(run_dir, [], {**state["source"]}) is not None
    assert resume.resumable(run_dir, [], {"training_code_sha256": "0" * 64}) is None  # other code

    class Peak:  # a meter that cannot split its figure across attempts
        resumes = False
    assert resume.resumable(run_dir, [Peak()], state["source"]) is None

    (run_dir / resume.RESUME).write_bytes(b"cut short")  # a kill mid-write of a file without the rename
    assert resume.read_state(run_dir) is None
    done = run_experiment(cfg)
    assert "resumed_after_epochs" not in done.summary and len(read_jsonl(done.run_dir / "metrics.jsonl")) == 4


def test_a_run_that_fails_of_itself_keeps_no_state_to_go_on_from(tmp_path):
    """A bug or a pruned trial is an Exception: the next attempt starts from epoch 1, not from its state."""
    cfg = config(tmp_path)

    def boom(row):
        if row["epoch"] == 3:
            raise RuntimeError("pruned")
    with pytest.raises(RuntimeError):
        run_experiment(cfg, on_epoch=boom)
    assert not list(tmp_path.glob(f"*/{resume.RESUME}"))
    assert "resumed_after_epochs" not in run_experiment(cfg).summary


def test_the_state_of_another_run_is_never_read(tmp_path):
    cfg = config(tmp_path)
    with pytest.raises(Stop):
        run_experiment(cfg, on_epoch=stop_after(3))
    [saved] = list(tmp_path.glob(f"*/{resume.RESUME}"))
    other = tmp_path / "mf_digits_mlp_s0_0000000000"
    other.mkdir()
    (other / resume.RESUME).write_bytes(saved.read_bytes())
    assert resume.read_state(saved.parent) is not None and resume.read_state(other) is None


def test_the_training_code_hash_follows_the_code_a_run_executes_and_nothing_else(tmp_path, monkeypatch):
    from benchmarks.run import environment

    for folder in (*environment.TRAINING_CODE, "benchmarks/tables"):
        (tmp_path / folder).mkdir(parents=True)
        (tmp_path / folder / "a.py").write_text("x = 1\n")
    monkeypatch.setattr(environment, "PROJECT_ROOT", tmp_path)
    before = environment.training_code_sha256()
    (tmp_path / "benchmarks/tables/a.py").write_text("x = 2\n")  # a table's code trains nothing
    assert environment.training_code_sha256() == before
    (tmp_path / "algorithms/a.py").write_text("x = 2\n")
    assert environment.training_code_sha256() != before
