"""Tuning: search spaces give valid configs, pruning prunes, studies resume, dead workers' trials are
failed and retried, and (with BPFREE_TEST_POSTGRES_URL) two workers fill one PostgreSQL study.

Everything runs on the bundled digits set with tiny MLPs and 1-3 epochs.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

optuna = pytest.importorskip("optuna", reason="optuna is not installed (optional dependency 'tune')")

from algorithms import ALGORITHMS  # noqa: E402
from algorithms.search_spaces import common_space, search_space  # noqa: E402
from benchmarks.run.config import ExperimentConfig  # noqa: E402
from benchmarks.tuning import (HeartbeatJournalStorage, TuningError, arch_label, database_url, default_params,  # noqa: E402
                               load_params_file, make_storage, trial_config, tune)

REPO = Path(__file__).resolve().parents[1]
optuna.logging.set_verbosity(optuna.logging.WARNING)


def base_config(**kw) -> ExperimentConfig:
    values = dict(algorithm="mf", dataset="digits", arch="mlp", arch_args={"widths": [16]}, epochs=2,
                  quiet=True)
    values.update(kw)
    return ExperimentConfig(**values)


def quiet_log(_message: str) -> None:
    pass


# -- search spaces ------------------------------------------------------------------------------------
@pytest.mark.parametrize("algorithm", ALGORITHMS.names())
def test_search_space_gives_valid_configs(algorithm):
    base = base_config(algorithm=algorithm, arch_args={"widths": [16, 16]}, epochs=3, hparams={"weight_decay": 0.0})
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=1))
    for _ in range(5):  # sampled: every value the space can produce resolves
        trial = study.ask()
        cfg = trial_config(trial, base).resolve()
        assert cfg.hparams["lr"] == trial.params["lr"]
        assert cfg.batch_size == trial.params["batch_size"]
        assert cfg.epochs == 3 and cfg.arch_args["widths"] == [16, 16]  # the budget is not searched
        # FixedTrial replays the same values into the same config
        again = trial_config(optuna.trial.FixedTrial(trial.params), base).resolve()
        assert again.run_id() == cfg.run_id()
        study.tell(trial, 0.0)
    dist = study.trials[0].distributions["lr"]
    assert dist.log and dist.low > 0  # learning rate on a log scale
    if algorithm in ("bp", "fa", "dfa", "ff", "mf"):  # the trainer builds with the sampled settings
        ALGORITHMS.get(algorithm)((1, 8, 8), 10, "mlp", cfg.arch_args, cfg.hparams)


def test_algorithm_knobs_are_searched():
    ff = trial_config(optuna.trial.FixedTrial({"batch_size": 32, "lr": 0.02, "threshold": 0.3, "label_value": 2.0}),
                      base_config(algorithm="ff")).resolve()
    assert (ff.batch_size, ff.hparams["lr"], ff.hparams["threshold"], ff.hparams["label_value"]) == (32, 0.02, 0.3, 2.0)
    mf = trial_config(optuna.trial.FixedTrial({"batch_size": 64, "lr": 1e-3, "schedule": "sequential"}),
                      base_config(algorithm="mf", epochs=2, arch_args={"widths": [8, 8]})).resolve()
    assert mf.hparams["schedule"] == "sequential"
    # one epoch for two layers: the sequential schedule cannot run, so it is not offered
    with pytest.raises(ValueError):
        trial_config(optuna.trial.FixedTrial({"batch_size": 64, "lr": 1e-3, "schedule": "sequential"}),
                     base_config(algorithm="mf", epochs=1, arch_args={"widths": [8, 8]}))
    # a missing value is an error, not a silent default
    with pytest.raises(ValueError):
        trial_config(optuna.trial.FixedTrial({"lr": 1e-3}), base_config(algorithm="bp"))
    space, origin = search_space("mf")
    assert space is not common_space and "mf" in origin


def test_default_params_are_the_configs_own_values():
    assert default_params(base_config(algorithm="ff")) == {"batch_size": 64, "lr": 0.003, "threshold": 1.0,
                                                            "label_value": 1.0}
    # values outside the space are left to the sampler
    assert default_params(base_config(algorithm="bp", batch_size=100, hparams={"lr": 0.5})) == {}


def test_arch_label():
    assert arch_label(base_config(arch_args={"widths": [1000, 1000]})) == "2x1000"
    assert arch_label(base_config(arch_args={"widths": [784, 500]})) == "784-500"


# -- studies ------------------------------------------------------------------------------------------
def test_tune_writes_runs_csv_and_params_file_and_resumes(tmp_path):
    studies, params = tmp_path / "studies", tmp_path / "params.json"
    base = base_config(patience=1)
    first = tune(base, 2, studies_dir=studies, params_file=params, pruner="none", log=quiet_log)
    before = [(t.number, t.params, t.value, t.datetime_start) for t in first.study.trials]
    assert len(before) == 2 and first.counts == {"complete": 2}
    # the first trial runs the algorithm's defaults (MF: Adam 1e-3, batch 64, simultaneous)
    assert before[0][1] == {"batch_size": 64, "lr": 1e-3, "schedule": "simultaneous"}
    assert first.study.trials[0].user_attrs["origin"] == "defaults"
    # every trial is a run folder, with its measurements as user attributes
    for t in first.study.trials:
        run_dir = Path(t.user_attrs["run_dir"])
        assert run_dir.parent == studies / "mf_digits_1x16" / "runs" and (run_dir / "done").exists()
        summary = json.loads((run_dir / "summary.json").read_text())
        assert t.value == summary["selected"]["val_acc_ff"]  # the objective is validation accuracy
        assert t.user_attrs["train_time_s"] == summary["measurements"]["train_time_s"]
        assert t.user_attrs["epochs_run"] == summary["epochs_run"] == len(t.intermediate_values)
    csv = first.csv_path.read_text().splitlines()
    assert len(csv) == 3 and "user_attrs_train_time_s" in csv[0]
    assert "test" not in csv[0]  # a study keeps what chooses (validation) and no test accuracy

    entries = load_params_file(params)
    assert list(entries) == ["mf/digits/1x16"]
    best = max(first.study.trials, key=lambda t: t.value)
    assert entries["mf/digits/1x16"]["hparams"]["lr"] == best.params["lr"]
    assert entries["mf/digits/1x16"]["batch_size"] == best.params["batch_size"]
    ExperimentConfig(**{**base.to_dict(), **entries["mf/digits/1x16"]}).resolve()  # a valid config

    # the same command again with a larger budget continues the study: 3 trials, the first two kept
    second = tune(base, 3, studies_dir=studies, params_file=params, pruner="none", log=quiet_log)
    after = [(t.number, t.params, t.value, t.datetime_start) for t in second.study.trials]
    assert len(after) == 3 and after[:2] == before
    assert after[2][1] not in (before[0][1], before[1][1])  # not a replay of the start-up samples
    # a met budget runs nothing
    assert len(tune(base, 3, studies_dir=studies, params_file=None, log=quiet_log).study.trials) == 3
    # another base config under the same study name is refused
    with pytest.raises(TuningError, match="epochs"):
        tune(base_config(patience=1, epochs=3), 4, studies_dir=studies, study_name=second.study.study_name,
             params_file=None, log=quiet_log)


def test_a_study_whose_search_space_changed_is_refused(tmp_path, monkeypatch):
    """Trials that searched an older space must not count towards today's budget, nor win it."""
    from algorithms.search_spaces import SEARCH_SPACES

    base = base_config(algorithm="bp", epochs=1)
    first = tune(base, 1, studies_dir=tmp_path, params_file=None, pruner="none", log=quiet_log)

    def wider(trial, cfg):
        out = common_space(trial, cfg)
        out["hparams"]["weight_decay"] = trial.suggest_float("weight_decay", 0.0, 1e-3)
        return out

    monkeypatch.setitem(SEARCH_SPACES._entries, "bp", wider)
    with pytest.raises(TuningError, match=r"bp has since gained weight_decay; move that study's journal aside"):
        tune(base, 2, studies_dir=tmp_path, study_name=first.study.study_name, params_file=None, log=quiet_log)


def test_a_study_given_the_shared_lr_decay_searches_it_and_keeps_to_it(tmp_path):
    """tune(shared=["lr_decay"]) (a profile's tune_shared): every trial samples lr_decay in 0.7-1, the defaults
    trial at 1 (a constant rate), and the best entry carries the winner's; a study resumed with the switch
    flipped either way is refused as a changed space, and an unknown shared dimension is refused."""
    from algorithms import ConfigError

    base = base_config(algorithm="bp", epochs=1)
    decayed = tune(base, 2, studies_dir=tmp_path, params_file=tmp_path / "p.json", pruner="none",
                   shared=["lr_decay"], log=quiet_log)
    trials = decayed.study.trials
    assert all(0.7 <= t.params["lr_decay"] <= 1.0 for t in trials) and trials[0].params["lr_decay"] == 1.0
    assert decayed.best["hparams"]["lr_decay"] == decayed.study.best_trial.params["lr_decay"]
    assert load_params_file(tmp_path / "p.json")["bp/digits/1x16"]["hparams"]["lr_decay"] == decayed.best["hparams"]["lr_decay"]
    with pytest.raises(TuningError, match="bp has since lost lr_decay"):
        tune(base, 3, studies_dir=tmp_path, study_name=decayed.study.study_name, params_file=None, log=quiet_log)
    plain = tune(base_config(algorithm="dfa", epochs=1), 1, studies_dir=tmp_path, params_file=None, pruner="none",
                 log=quiet_log)
    assert "lr_decay" not in plain.study.trials[0].params  # DFA's own space no longer has it
    with pytest.raises(TuningError, match="dfa has since gained lr_decay"):
        tune(base_config(algorithm="dfa", epochs=1), 2, studies_dir=tmp_path, study_name=plain.study.study_name,
             params_file=None, shared=["lr_decay"], log=quiet_log)
    with pytest.raises(ConfigError, match="unknown shared dimension"):
        tune(base, 1, studies_dir=tmp_path, params_file=None, shared=["momentum"], log=quiet_log)


def test_a_profiles_tune_shared_reaches_every_study_of_the_spec(tmp_path):
    """bpfree sweep SPEC --tune N: the profile's tune_shared makes every cell's study search lr_decay; the same
    spec without it, none."""
    from benchmarks.tuning import tune_spec

    spec = {"name": "s", "profiles": {"quick": {"seeds": [0], "epochs": 1, "val_fraction": 0.2, "tune_shared": ["lr_decay"]}},
            "groups": [{"label": "1x16", "arch": "mlp", "arch_args": {"widths": [16]}, "datasets": ["digits"],
                        "algorithms": ["bp", "dfa"]}]}
    for shared in (["lr_decay"], []):
        spec["profiles"]["quick"]["tune_shared"] = shared
        studies = tmp_path / f"studies{len(shared)}"
        rows = tune_spec(spec, "quick", 1, params_file=tmp_path / f"p{len(shared)}.json", studies_dir=studies,
                         pruner="none", log=quiet_log)
        assert [r["status"] for r in rows] == ["tuned", "tuned"]
        for row in rows:
            study = optuna.load_study(study_name=row["study"], storage=make_storage(None, row["study"], studies))
            assert [("lr_decay" in t.params) for t in study.trials] == [bool(shared)]
            assert row["best"]["hparams"]["lr_decay"] == 1.0  # the defaults trial: a constant rate


@pytest.mark.parametrize("algorithm", ["dfa", "bp", "mf"])
def test_a_study_resumes_when_its_record_predates_a_field_that_changes_nothing(algorithm):
    """Studies recorded before the verdict fields or the shared lr_decay (DFA's alone before) existed are
    the same study today (make reproduce-table3 PROFILE=paper resumes the committed journals, and the fair
    studies tuned before the decay became shared resume too); a real difference is not."""
    from benchmarks.tuning.study import _base_identity, _changed_base_fields

    today = _base_identity(base_config(algorithm=algorithm))
    assert today["hparams"]["lr_decay"] == 1.0
    old = {k: v for k, v in today.items() if k not in ("chance_epochs", "chance_margin", "diverge_loss_factor")}
    old["hparams"] = {k: v for k, v in today["hparams"].items() if k != "lr_decay"}
    assert _changed_base_fields(old, today) == []
    assert _changed_base_fields(dict(old, epochs=99), today) == ["epochs"]
    assert _changed_base_fields(dict(old, hparams=dict(old["hparams"], lr_decay=0.9)), today) == ["hparams"]


def test_a_new_study_tries_the_params_entry_it_replaces_after_the_defaults(tmp_path):
    """Tuning again in a larger space never ends worse on validation than the settings it replaces."""
    from benchmarks.tuning.study import previous_params

    params = tmp_path / "params.json"
    params.write_text(json.dumps({"bp/digits/1x16": {"batch_size": 32, "hparams": {"lr": 5e-3}},
                                  "dfa/digits/1x16": {"batch_size": 32, "hparams": {"lr": 5e-3}}}))
    outcome = tune(base_config(algorithm="bp", epochs=1), 2, studies_dir=tmp_path, params_file=params,
                   pruner="none", log=quiet_log)
    first, second = outcome.study.trials
    assert first.user_attrs["origin"] == "defaults"
    assert second.params == {"batch_size": 32, "lr": 5e-3}
    assert second.user_attrs["origin"] == "previous params file entry"
    # an entry from before the shared lr_decay existed kept its learning rate constant: a study whose
    # profile searches the decay (tune_shared) tries it so; one that does not, without it
    for algorithm in ("dfa", "bp"):
        assert previous_params(base_config(algorithm=algorithm), params, f"{algorithm}/digits/1x16",
                               ("lr_decay",)) == {"batch_size": 32, "lr": 5e-3, "lr_decay": 1.0}
    assert previous_params(base_config(algorithm="dfa"), params, "dfa/digits/1x16") == {"batch_size": 32, "lr": 5e-3}
    assert previous_params(base_config(algorithm="dfa"), params, "dfa/mnist/2x1000") == {}
    assert previous_params(base_config(algorithm="dfa"), tmp_path / "none.json", "dfa/digits/1x16") == {}


def test_pruning_prunes(tmp_path):
    impossible = optuna.pruners.ThresholdPruner(lower=101.0)  # accuracy in % never reaches it
    outcome = tune(base_config(epochs=3), 2, studies_dir=tmp_path, pruner=impossible,
                   params_file=tmp_path / "params.json", log=quiet_log)
    assert outcome.counts == {"pruned": 2} and outcome.best is None
    for t in outcome.study.trials:
        assert list(t.intermediate_values) == [1]  # stopped after its first epoch
        assert t.user_attrs["status"] == "pruned" and t.user_attrs["epochs_run"] == 1
    assert not (tmp_path / "params.json").exists()  # nothing to recommend


def test_median_pruner_stops_a_hopeless_trial(tmp_path):
    # ten trials with a median pruner from the third on; lr spans 1e-5..1e-2, so some trials trail
    pruner = optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=1)
    outcome = tune(base_config(epochs=2, algorithm="bp"), 10, studies_dir=tmp_path, pruner=pruner,
                   params_file=None, seed=3, log=quiet_log)
    assert outcome.counts.get("pruned", 0) >= 1 and outcome.counts.get("complete", 0) >= 2


# -- a worker killed mid-trial ------------------------------------------------------------------------
HANGING_WORKER = """
import sys, time
import benchmarks.tuning.study as tuning
from benchmarks.run.config import ExperimentConfig
tuning.run_experiment = lambda *a, **k: time.sleep(600)  # a trial that is still training when killed
base = ExperimentConfig(**{cfg})
tuning.tune(base, 2, studies_dir={studies!r}, params_file=None, heartbeat_interval=1, grace_period=2)
"""


def test_killed_worker_trial_is_failed_and_retried(tmp_path):
    studies = tmp_path / "studies"
    cfg = dict(algorithm="bp", dataset="digits", arch_args={"widths": [16]}, epochs=1, quiet=True)
    worker = subprocess.Popen([sys.executable, "-c", HANGING_WORKER.format(cfg=cfg, studies=str(studies))],
                              cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    log = studies / "bp_digits_1x16.log"
    storage = None
    try:
        deadline = time.time() + 60
        while time.time() < deadline:  # until the worker is training its trial and has sent a heartbeat
            if log.exists():
                storage = storage or make_storage(str(log), "", heartbeat_interval=1, grace_period=2)
                running = [t for s in storage.get_all_studies() for t in storage.get_all_trials(s._study_id)
                           if t.state == optuna.trial.TrialState.RUNNING
                           and HeartbeatJournalStorage.HEARTBEAT_ATTR in t.system_attrs
                           and t.params]  # training: its settings drawn (on a busy machine that comes later)
                if running:
                    break
            assert worker.poll() is None, worker.stderr.read().decode()[-2000:]
            time.sleep(0.2)
        else:
            pytest.fail("the worker never started a trial")
    finally:
        worker.send_signal(signal.SIGKILL)
        worker.wait()
    time.sleep(2.5)  # past the grace period
    outcome = tune(ExperimentConfig(**cfg), 2, studies_dir=studies, params_file=None, heartbeat_interval=1,
                   grace_period=2, log=quiet_log)
    trials = outcome.study.trials
    states = [t.state.name for t in trials]
    assert states[0] == "FAIL"  # the dead worker's trial: failed, not left running
    retried = [t for t in trials if t.system_attrs.get("failed_trial") == trials[0].number]
    assert len(retried) == 1 and retried[0].state.name == "COMPLETE"
    assert retried[0].params == trials[0].params  # the retry runs the same settings
    assert outcome.counts.get("complete") == 2 and "running" not in outcome.counts


# -- PostgreSQL: two workers ----------------------------------------------------------------------------
POSTGRES_URL = os.environ.get("BPFREE_TEST_POSTGRES_URL")

WORKER = """
import sys, time
from pathlib import Path
import benchmarks.tuning.study as tuning
real = tuning.run_experiment
def slower(*a, **k):  # each trial takes a moment, so that both workers get a share
    time.sleep(0.3)
    return real(*a, **k)
tuning.run_experiment = slower
from bpfree import tune
Path(sys.argv[1]).touch()  # ready
while not Path(sys.argv[2]).exists():  # start together
    time.sleep(0.05)
sys.exit(tune.main(sys.argv[3:]))
"""


@pytest.mark.skipif(not POSTGRES_URL, reason="BPFREE_TEST_POSTGRES_URL is not set (.ci/run starts a PostgreSQL "
                                             "server through .ci/setup.d/postgres.sh and sets it)")
def test_two_workers_fill_one_postgres_study(tmp_path):
    study_name = f"test_{uuid.uuid4().hex[:12]}"  # the database outlives the test: a fresh study each time
    trials = 8
    go = tmp_path / "go"
    args = ["-a", "bp", "-d", "digits", "--widths", "16", "--epochs", "2", "--quiet", "--trials", str(trials),
            "--study", study_name, "--storage", POSTGRES_URL, "--studies-dir", str(tmp_path / "studies"),
            "--params-file", str(tmp_path / "params.json"), "--pruner", "none"]
    workers = [subprocess.Popen([sys.executable, "-c", WORKER, str(tmp_path / f"ready{i}"), str(go), *args,
                                 "--worker-id", str(i)], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True) for i in range(2)]
    deadline = time.time() + 60
    while not all((tmp_path / f"ready{i}").exists() for i in range(2)) and time.time() < deadline:
        time.sleep(0.05)
    go.touch()
    outputs = [w.communicate(timeout=120) for w in workers]
    for w, (out, err) in zip(workers, outputs):
        assert w.returncode == 0, err[-2000:]
    # which trials each worker finished, from Optuna's log lines
    done_by = [set(map(int, re.findall(r"Trial (\d+) finished", err))) for _, err in outputs]
    assert all(done_by), f"both workers must finish trials, got {done_by}"
    assert not done_by[0] & done_by[1]

    storage = database_url(POSTGRES_URL)
    study = optuna.load_study(study_name=study_name, storage=storage)
    try:
        finished = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
        numbers = [t.number for t in finished]
        assert len(numbers) == len(set(numbers)) and set(numbers) == done_by[0] | done_by[1]
        assert trials <= len(finished) <= trials + 1  # the budget; each worker may finish one more in flight
        assert sorted(t.number for t in study.trials) == list(range(len(study.trials)))
        for t in finished:  # each recorded once, with its own finished run folder
            assert (Path(t.user_attrs["run_dir"]) / "done").exists()
        assert len(load_params_file(tmp_path / "params.json")) == 1
    finally:
        optuna.delete_study(study_name=study_name, storage=storage)


def test_a_profiles_tune_budget_replaces_the_trials_epochs_and_data():
    from benchmarks.sweep.expand import load_spec
    from algorithms import ConfigError
    from benchmarks.tuning import spec_cells, trial_budget

    spec = load_spec("table3")
    budget = trial_budget(spec["profiles"]["paper"])
    cells = spec_cells(spec, "paper", algorithms={"bp", "ff"}, datasets={"mnist"})
    assert sorted(cfg.algorithm for _, cfg in cells) == ["bp", "ff"]
    for _, cfg in cells:  # every algorithm's trials get the same reduced budget, not the runs' 100 epochs
        assert (cfg.epochs, cfg.patience, cfg.train_limit) == (budget["epochs"], budget["patience"],
                                                               budget["train_limit"])
    with pytest.raises(ConfigError):
        trial_budget({"tune": {"lr": 1}})
