"""Hyperparameter tuning with Optuna: one study tunes one algorithm on one dataset and architecture.

    from benchmarks.tuning import tune
    outcome = tune(ExperimentConfig(algorithm="mf", dataset="fmnist", epochs=20, patience=5), trials=30)

* **Search space**: declared beside each algorithm (:mod:`algorithms.search_spaces`); sampled by a
  seeded TPE sampler. Epochs and patience are the study's budget, not searched (see there why).
* **Start**: a new study's first trial runs the base config's own settings (the algorithm's
  defaults unless overridden), so that tuning never ends below them on validation.
* **Objective**: the validation accuracy (%) of the best epoch in the default prediction mode; the
  test split is never looked at for selection. Early stopping on validation accuracy is the
  runner's (``patience``). Each epoch's validation accuracy is reported to the trial through the
  runner's ``on_epoch`` callback, and the pruner (median by default) stops hopeless trials.
* **Runs**: every trial is a normal run folder under ``<studies_dir>/<study>/runs``; its time, peak
  memory and energy (whatever meters ``measure`` names) are stored as trial user attributes too. A
  run diverging (non-finite loss) makes its trial *pruned*, with ``status=diverged``.
* **Storage**: by default a journal file ``<studies_dir>/<study>.log`` (Optuna's JournalStorage,
  which several processes on one machine can share); ``storage="postgresql://..."`` (any SQLAlchemy
  URL) lets workers on many machines share one study. Running the same study again resumes it. A
  worker that dies mid-trial stops sending heartbeats; the next worker to start a trial marks that
  trial failed after ``grace_period`` seconds and queues it again (at most ``MAX_RETRY`` times), so
  the study never waits for it. Optuna's RDBStorage has heartbeats built in; the journal storage does
  not (Optuna 5.0), so :class:`HeartbeatJournalStorage` adds them.
* **Budget**: ``trials`` is the total number of finished (complete or pruned) trials of the study,
  counted across resumes and workers (parallel workers may overshoot it by one trial each).
* **Outputs**: ``<studies_dir>/<study>.csv`` (``study.trials_dataframe()``), ``<study>.best.json``
  (the best trial, its full config and the budget), and one entry in the *params file*.

**A whole spec with one budget** (:func:`tune_spec`, ``scripts/sweep.py SPEC --tune N``): one study per
distinct (algorithm, dataset, group label) of a sweep spec, every one with the same N trials and the
profile's epochs and patience per trial, so that no algorithm is tuned harder than another; the
best settings go to the profile's params file, which ``expand`` then applies to the sweep's runs.

Params file (JSON, default ``results/studies/best_params.json``), shared by all studies, read by
``benchmarks.sweep.expand(spec, profile, params_file=...)``::

    {
      "<algorithm>/<dataset>/<arch label>": {"batch_size": 128, "hparams": {"lr": 0.0021, ...}},
      "mf/fmnist/2x1000": {...}
    }

Each entry holds ExperimentConfig fields: the searched ones (``batch_size`` and the complete
resolved ``hparams`` of the best trial), nothing else, so that a spec's profile keeps its own
epochs/patience/limits. The arch label is the spec group's ``label``; by default it is derived from
the architecture (:func:`arch_label`: an MLP with widths [1000, 1000] is ``2x1000``).
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import fcntl
import hashlib
import inspect
import json
import re
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import optuna
from optuna.storages import BaseStorage, RDBStorage
from optuna.storages._heartbeat import BaseHeartbeat
from optuna.trial import FrozenTrial, TrialState

from algorithms import ConfigError
from algorithms.search_spaces import search_space

from .params_file import load_params_file  # noqa: F401  (re-exported: tuning writes what sweeps read)

from .config import LOCATION_FIELDS, ExperimentConfig
from .runner import RunDiverged, run_experiment
from .runs import read_json, write_json
from .sweep import run_dir_of

try:  # Optuna >= 4.0
    from optuna.storages.journal import JournalFileBackend, JournalStorage
except ImportError:  # pragma: no cover - Optuna 3.x names
    from optuna.storages import JournalFileStorage as JournalFileBackend, JournalStorage
try:  # renamed in Optuna 4.9
    from optuna.storages import RetryHeartbeatStaleTrialCallback as RetryCallback
except ImportError:  # pragma: no cover
    from optuna.storages import RetryFailedTrialCallback as RetryCallback

STUDIES_DIR = "results/studies"
PARAMS_FILE = "results/studies/best_params.json"
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)  # what counts towards the trial budget
HEARTBEAT_INTERVAL = 60  # seconds between a running trial's heartbeats
MAX_RETRY = 2  # a trial whose worker died is queued again at most this often (a trial that always
#                kills its worker, e.g. out of memory, must not loop forever)
SCHEMA_ATTEMPTS = 4  # tries to open a database whose tables another worker may be creating
PRUNER_STARTUP_TRIALS = 5  # the median pruner needs a few finished trials before it compares


class TuningError(RuntimeError):
    """A study cannot go on as asked (e.g. it exists with a different base config)."""


# -- names ------------------------------------------------------------------------------------------
def arch_label(cfg: ExperimentConfig) -> str:
    """``2x1000`` for an MLP with widths [1000, 1000], ``784-500`` for unequal widths, else the arch name."""
    resolved = cfg.resolve()
    widths = resolved.arch_args.get("widths")
    if cfg.arch == "mlp" and widths:
        label = f"{len(widths)}x{widths[0]}" if len(set(widths)) == 1 else "-".join(map(str, widths))
        return label
    return cfg.arch


def params_key(cfg: ExperimentConfig, label: str | None = None) -> str:
    return f"{cfg.algorithm}/{cfg.dataset}/{label or arch_label(cfg)}"


def default_study_name(cfg: ExperimentConfig, label: str | None = None) -> str:
    name = f"{cfg.algorithm}_{cfg.dataset}_{label or arch_label(cfg)}" + (f"_{cfg.tag}" if cfg.tag else "")
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", name)


# -- storage ----------------------------------------------------------------------------------------
class HeartbeatJournalStorage(JournalStorage, BaseHeartbeat):
    """Optuna's journal storage plus heartbeats, so that stale trials of dead workers get failed.

    A running trial's heartbeat is a system attribute (the wall-clock time) written every
    ``heartbeat_interval`` seconds by Optuna's heartbeat thread; a RUNNING trial whose last heartbeat
    (or start, before the first) is older than ``grace_period`` is stale. Optuna's optimize loop
    fails stale trials before each new trial and calls ``stale_trial_callback`` on them. Clocks
    are the machines' own: share a journal file only between machines with synchronised clocks.
    """

    HEARTBEAT_ATTR = "bpfree:heartbeat"

    def __init__(self, backend, heartbeat_interval: int, grace_period: int,
                 stale_trial_callback: Callable[[optuna.Study, FrozenTrial], None] | None = None):
        super().__init__(backend)
        if heartbeat_interval <= 0 or grace_period <= heartbeat_interval:
            raise ConfigError(f"need 0 < heartbeat interval < grace period, got {heartbeat_interval} "
                              f"and {grace_period}")
        self.heartbeat_interval = heartbeat_interval
        self.grace_period = grace_period
        self.stale_trial_callback = stale_trial_callback

    def record_heartbeat(self, trial_id: int) -> None:
        with contextlib.suppress(optuna.exceptions.UpdateFinishedTrialError, KeyError):
            self.set_trial_system_attr(trial_id, self.HEARTBEAT_ATTR, time.time())

    def _get_stale_trial_ids(self, study_id: int) -> list[int]:
        now = time.time()
        stale = []
        for trial in self.get_all_trials(study_id, deepcopy=False, states=(TrialState.RUNNING,)):
            last = trial.system_attrs.get(self.HEARTBEAT_ATTR)
            if last is None and trial.datetime_start is not None:
                last = trial.datetime_start.timestamp()  # naive local time, as Optuna stores it
            if last is not None and now - last > self.grace_period:
                stale.append(trial._trial_id)
        return stale

    def get_heartbeat_interval(self) -> int | None:
        return self.heartbeat_interval

    def get_heartbeat_stale_trial_callback(self):
        return self.stale_trial_callback

    def get_failed_trial_callback(self):  # the name before Optuna 4.9
        return self.stale_trial_callback


def make_storage(storage: str | None, study_name: str, studies_dir: str | Path = STUDIES_DIR,
                 heartbeat_interval: int = HEARTBEAT_INTERVAL, grace_period: int | None = None) -> BaseStorage:
    """The journal file ``<studies_dir>/<study>.log`` (default, or a ``*.log`` path), else an RDB URL."""
    grace_period = grace_period or 3 * heartbeat_interval  # a few missed beats before a trial is stale
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        retry = RetryCallback(max_retry=MAX_RETRY)
    if storage is None or storage.endswith(".log"):
        path = Path(storage) if storage else Path(studies_dir) / f"{study_name}.log"
        path.parent.mkdir(parents=True, exist_ok=True)
        return HeartbeatJournalStorage(JournalFileBackend(str(path)), heartbeat_interval, grace_period, retry)
    if "://" not in storage:
        raise ConfigError(f"--storage takes a journal file (*.log) or a database URL such as "
                          f"postgresql://user@host/db, got {storage!r}")
    kwargs: dict[str, Any] = {"heartbeat_interval": heartbeat_interval, "grace_period": grace_period,
                              "engine_kwargs": {"pool_pre_ping": True}}  # survive a restarted server
    params = inspect.signature(RDBStorage).parameters
    kwargs["heartbeat_stale_trial_callback" if "heartbeat_stale_trial_callback" in params
           else "failed_trial_callback"] = retry
    for attempt in range(SCHEMA_ATTEMPTS):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                return RDBStorage(database_url(storage), **kwargs)
        except Exception as exc:  # bad URL, server down, driver missing: one line for the user
            # Workers that meet an empty database at the same moment all create Optuna's tables; the
            # losers fail with a duplicate-key error and succeed on a retry, once the tables exist.
            racing = type(exc).__name__ in ("IntegrityError", "ProgrammingError")
            if racing and attempt + 1 < SCHEMA_ATTEMPTS:
                time.sleep(1.0 + attempt)
                continue
            raise ConfigError(f"cannot open storage {redact(storage)}: {type(exc).__name__}: "
                              f"{str(exc).splitlines()[0] if str(exc) else ''}") from None


def database_url(url: str) -> str:
    """``postgresql://`` with the PostgreSQL driver that is installed: SQLAlchemy 2.1 means psycopg 3
    by it, the ``tune`` extra installs psycopg2 (``postgresql+psycopg2://``)."""
    scheme, sep, rest = url.partition("://")
    if scheme not in ("postgresql", "postgres"):
        return url
    import importlib.util
    if importlib.util.find_spec("psycopg") is None and importlib.util.find_spec("psycopg2") is not None:
        return f"postgresql+psycopg2://{rest}"
    return f"postgresql://{rest}"


def redact(url: str) -> str:
    """A storage URL without its password, fit for logs and files."""
    return re.sub(r"(://[^:/@]+):[^@]*@", r"\1:***@", url)


# -- trials -----------------------------------------------------------------------------------------
def trial_config(trial, base: ExperimentConfig) -> ExperimentConfig:
    """``base`` with the algorithm's search space sampled by ``trial`` (``hparams`` merged over base's)."""
    space, _ = search_space(base.algorithm)
    overrides = dict(space(trial, base.to_dict()))
    hparams = dict(base.hparams, **overrides.pop("hparams", {}))
    unknown = set(overrides) - {f.name for f in dataclasses.fields(ExperimentConfig)}
    if unknown:
        raise ConfigError(f"search space of {base.algorithm} returned unknown config fields {sorted(unknown)}")
    return dataclasses.replace(base, hparams=hparams, **overrides)


class _Recorder:
    """A stand-in trial that records each parameter's distribution and returns a marker, so that
    :func:`default_params` can see which config field a parameter lands in."""

    def __init__(self):
        self.dists: dict[str, tuple] = {}

    def suggest_categorical(self, name, choices):
        self.dists[name] = ("categorical", list(choices))
        return _Marker(name)

    def suggest_float(self, name, low, high, *, step=None, log=False):
        self.dists[name] = ("range", low, high)
        return _Marker(name)

    def suggest_int(self, name, low, high, *, step=1, log=False):
        self.dists[name] = ("range", low, high)
        return _Marker(name)


@dataclass(frozen=True)
class _Marker:
    name: str


def default_params(base: ExperimentConfig) -> dict[str, Any]:
    """The base config's own values of the searched parameters (those inside the search space).

    Enqueued as a new study's first trial, so that the tuned result is never worse on validation
    than the defaults the algorithm ships with, whatever the budget."""
    space, _ = search_space(base.algorithm)
    recorder = _Recorder()
    try:
        overrides = space(recorder, base.to_dict())
    except Exception:  # a space that computes with its values: no default trial, the sampler starts
        return {}
    resolved = base.resolve()
    fields = [(k, v, getattr(resolved, k)) for k, v in overrides.items() if k != "hparams"]
    fields += [(k, v, resolved.hparams.get(k)) for k, v in overrides.get("hparams", {}).items()]
    out = {}
    for _, marker, value in fields:
        if not isinstance(marker, _Marker) or value is None:
            continue
        kind, *spec = recorder.dists[marker.name]
        inside = value in spec[0] if kind == "categorical" else spec[0] <= value <= spec[1]
        if inside:
            out[marker.name] = value
    return out


def _flat_attrs(prefix: str, value: Any) -> dict[str, Any]:
    """Nested measurement dicts become ``a.b`` keys so that the CSV gets one column each."""
    if isinstance(value, dict):
        out = {}
        for key, sub in value.items():
            out.update(_flat_attrs(f"{prefix}.{key}" if prefix else str(key), sub))
        return out
    return {prefix: value if isinstance(value, (int, float, str, bool, type(None))) else str(value)}


@contextlib.contextmanager
def _file_lock(path: Path):
    """An exclusive lock between processes on one machine (two trials with identical settings share a
    run folder: the second waits for the first and reuses its finished run)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def make_objective(base: ExperimentConfig) -> Callable[[optuna.Trial], float]:
    """The objective: train the trial's config, report validation accuracy per epoch, maybe prune."""

    def objective(trial: optuna.Trial) -> float:
        cfg = trial_config(trial, base)
        resolved = cfg.resolve()  # a bad sampled value fails here as ConfigError (the trial fails)
        run_dir = run_dir_of(resolved)  # the data's fingerprint is part of the folder's name
        trial.set_user_attr("run_dir", str(run_dir))
        seen: list[dict] = []

        def on_epoch(row: dict) -> None:
            # evaluate() adds val_acc_<mode> in the order of prediction_modes: the first is the default
            key = next(k for k in row if k.startswith("val_acc_"))
            seen.append(row)
            trial.report(row[key], row["epoch"])
            trial.set_user_attr("epochs_run", row["epoch"])
            if trial.should_prune():
                trial.set_user_attr("status", "pruned")
                if "epoch_time_s" in row:
                    trial.set_user_attr("train_time_s", sum(r["epoch_time_s"] for r in seen))
                raise optuna.TrialPruned(f"epoch {row['epoch']}: {key} {row[key]:.2f}")

        with _file_lock(run_dir.parent / f".{run_dir.name}.lock"):
            try:
                result = run_experiment(cfg, on_epoch=on_epoch)
            except RunDiverged as exc:
                trial.set_user_attr("status", "diverged")
                raise optuna.TrialPruned(f"diverged: {exc}") from None
        summary = result.summary
        if summary.get("status") != "completed":  # a reused diverged run
            trial.set_user_attr("status", summary.get("status", "unknown"))
            raise optuna.TrialPruned(f"reused run {run_dir} is {summary.get('status')}")
        key = f"val_acc_{summary['default_mode']}"
        attrs = {"status": "completed", "reused_run": result.reused, "epochs_run": summary["epochs_run"],
                 "stopped_early": summary["stopped_early"], "selected_epoch": summary["selected_epoch"],
                 "wall_time_s": summary["wall_time_s"],
                 # recorded for the report only; never used to pick the best trial
                 "test_acc_at_selected_epoch": summary["test_acc"],
                 **_flat_attrs("", summary.get("measurements", {}))}
        for name, value in attrs.items():
            trial.set_user_attr(name, value)
        return summary["selected"][key]

    return objective


# -- the study ----------------------------------------------------------------------------------------
@dataclass
class TuneOutcome:
    study: optuna.Study
    key: str  # the params-file key
    best: dict[str, Any] | None  # the params-file entry of the best trial (None: no complete trial yet)
    csv_path: Path
    best_path: Path | None
    counts: dict[str, int]


def _base_identity(base: ExperimentConfig) -> dict[str, Any]:
    """What a resumed study or a joining worker must share: the base config without locations and
    without the device (workers on CPU and GPU machines may fill one study)."""
    d = base.resolve().to_dict()
    for key in (*LOCATION_FIELDS, "device"):
        d.pop(key, None)
    return d


def sampler_seed(seed: int, worker_id: int, existing_trials: int) -> int:
    """One seed per (tuning seed, worker, point of resumption): a resumed study or a second worker
    must not replay the random start-up samples of the first."""
    digest = hashlib.sha256(f"{seed}/{worker_id}/{existing_trials}".encode()).hexdigest()
    return int(digest[:8], 16)


def make_pruner(pruner: str | optuna.pruners.BasePruner, epochs: int) -> optuna.pruners.BasePruner:
    if isinstance(pruner, optuna.pruners.BasePruner):
        return pruner
    if pruner == "median":
        # no pruning in the first half of the epochs: slow starters (MF's sequential schedule trains
        # the last layer late) must get a chance; the earliest prune is after epoch epochs // 2
        return optuna.pruners.MedianPruner(n_startup_trials=PRUNER_STARTUP_TRIALS,
                                           n_warmup_steps=max(1, epochs // 2))
    if pruner == "none":
        return optuna.pruners.NopPruner()
    raise ConfigError(f"unknown pruner {pruner!r}; choose one of: median, none")


def count_states(study: optuna.Study) -> dict[str, int]:
    counts: dict[str, int] = {}
    for t in study.get_trials(deepcopy=False):
        counts[t.state.name.lower()] = counts.get(t.state.name.lower(), 0) + 1
    return counts


def tune(base: ExperimentConfig, trials: int, *, study_name: str | None = None, storage: str | None = None,
         studies_dir: str | Path = STUDIES_DIR, label: str | None = None, seed: int = 0, worker_id: int = 0,
         pruner: str | optuna.pruners.BasePruner = "median", params_file: str | Path | None = PARAMS_FILE,
         heartbeat_interval: int = HEARTBEAT_INTERVAL, grace_period: int | None = None,
         log: Callable[[str], None] = print) -> TuneOutcome:
    """Create or resume the study of ``base`` and run trials until it has ``trials`` finished ones."""
    if not isinstance(trials, int) or trials <= 0:
        raise ConfigError(f"the number of trials must be a positive integer, got {trials!r}")
    if not base.val_fraction > 0:
        raise ConfigError("tuning needs a validation split (val_fraction > 0): test data never selects")
    label = label or arch_label(base)
    study_name = study_name or default_study_name(base, label)
    studies_dir = Path(studies_dir)
    base = dataclasses.replace(base, results_dir=str(studies_dir / study_name / "runs"))
    identity = _base_identity(base)
    _, space_origin = search_space(base.algorithm)

    store = make_storage(storage, study_name, studies_dir, heartbeat_interval, grace_period)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        probe = optuna.create_study(study_name=study_name, storage=store, direction="maximize",
                                    load_if_exists=True)
        existing = probe.get_trials(deepcopy=False)
        # random start-up trials: a third of the budget, at most Optuna's default 10 (with its
        # default a budget of 10 or fewer trials would be a random search)
        sampler = optuna.samplers.TPESampler(seed=sampler_seed(seed, worker_id, len(existing)),
                                             n_startup_trials=max(2, min(10, trials // 3)),
                                             multivariate=True, constant_liar=True)
        study = optuna.load_study(study_name=study_name, storage=store, sampler=sampler,
                                  pruner=make_pruner(pruner, base.epochs))
    recorded = study.user_attrs.get("base_config")
    if recorded is None:
        study.set_user_attr("base_config", identity)
        study.set_user_attr("params_key", params_key(base, label))
    elif recorded != json.loads(json.dumps(identity)):
        changed = sorted(k for k in set(recorded) | set(identity) if recorded.get(k) != identity.get(k))
        raise TuningError(f"study {study_name!r} was created for a different base config (differs in "
                          f"{', '.join(changed)}); use another --study name or the original settings")

    if not existing:  # a new study starts from the algorithm's defaults
        study.enqueue_trial(default_params(base), user_attrs={"origin": "defaults"}, skip_if_exists=True)

    done = sum(t.state in FINISHED for t in existing)
    where = redact(storage) if storage else str(studies_dir / f"{study_name}.log")
    log(f"study {study_name} ({where}): {done}/{trials} trials finished; search space: {space_origin}")
    if done < trials:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            study.optimize(make_objective(base), n_trials=trials - done,
                           callbacks=[optuna.study.MaxTrialsCallback(trials, states=FINISHED)])
    return finish(study, base, label, studies_dir, params_file, where, log)


def finish(study: optuna.Study, base: ExperimentConfig, label: str, studies_dir: Path,
           params_file: str | Path | None, where: str, log: Callable[[str], None] = print) -> TuneOutcome:
    """Export the trials as CSV; write the best trial's settings to ``<study>.best.json`` and the params file."""
    key = params_key(base, label)
    csv_path = studies_dir / f"{study.study_name}.csv"
    csv_path.parent.mkdir(parents=True, exist_ok=True)
    study.trials_dataframe().to_csv(csv_path, index=False)
    counts = count_states(study)
    complete = [t for t in study.get_trials(deepcopy=False) if t.state == TrialState.COMPLETE]
    if not complete:
        log(f"no complete trial yet ({counts}); no params written. Trials: {csv_path}")
        return TuneOutcome(study, key, None, csv_path, None, counts)
    best = study.best_trial
    cfg = trial_config(optuna.trial.FixedTrial(best.params), base).resolve()
    entry = {"batch_size": cfg.batch_size, "hparams": cfg.hparams}
    best_path = studies_dir / f"{study.study_name}.best.json"
    write_json(best_path, {
        "key": key, "study": study.study_name, "storage": where, "trial": best.number,
        "val_acc": best.value, "params": best.params, "entry": entry, "trials": counts,
        "budget": {k: getattr(cfg, k) for k in ("epochs", "patience", "train_limit", "val_fraction", "seed")},
        "config": cfg.to_dict(), "user_attrs": best.user_attrs})
    if params_file:
        update_params_file(params_file, key, entry)
    log(f"best trial {best.number}: val acc {best.value:.2f} % with {json.dumps(best.params)}; "
        f"trials {counts}\n  {csv_path}\n  {best_path}" + (f"\n  {params_file} [{key}]" if params_file else ""))
    return TuneOutcome(study, key, entry, csv_path, best_path, counts)


def update_params_file(path: str | Path, key: str, entry: dict[str, Any]) -> None:
    """Set one entry of the shared params file (locked: several studies may finish at once)."""
    path = Path(path)
    with _file_lock(path.with_name(f".{path.name}.lock")):
        values = read_json(path) if path.exists() else {}
        if not isinstance(values, dict):
            raise ConfigError(f"params file {path} must hold a mapping")
        values[key] = entry
        write_json(path, values)


# -- a whole spec, one budget -------------------------------------------------------------------------
def untuned_spec(spec: dict[str, Any], profile: str) -> dict[str, Any]:
    """A copy of ``spec`` that names no params file for ``profile``: it expands to the spec's own settings."""
    out = copy.deepcopy(spec)
    out.pop("params_file", None)
    out["profiles"].get(profile, {}).pop("params_file", None)  # an unknown profile: expand says so
    return out


def spec_params_file(spec: dict[str, Any], profile: str) -> str | None:
    """The params file a profile of ``spec`` reads its tuned settings from (as ``expand`` picks it)."""
    return spec["profiles"][profile].get("params_file") or spec.get("params_file")


def spec_study_name(base: ExperimentConfig, label: str, profile: str) -> str:
    """``<algorithm>_<dataset>_<label>_<spec>_<profile>``: each profile has studies of its own (their
    budgets differ, and a study refuses a base config other than its own)."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", f"{default_study_name(base, label)}_{profile}")


TRIAL_BUDGET_KEYS = ("epochs", "patience", "train_limit")


def trial_budget(profile: dict[str, Any]) -> dict[str, Any]:
    """A profile's ``tune`` mapping: what every trial gets instead of the final runs' budget.

    A profile whose final runs train for long (Table 3's paper profile: up to 100 epochs) tunes on a
    smaller, stated budget, the same for every algorithm, e.g. ``tune: {epochs: 8, patience: 3,
    train_limit: 20000}``; without it trials get the profile's own epochs and patience."""
    budget = profile.get("tune") or {}
    unknown = sorted(set(budget) - set(TRIAL_BUDGET_KEYS))
    if not isinstance(budget, dict) or unknown:
        raise ConfigError(f"a profile's tune budget takes {', '.join(TRIAL_BUDGET_KEYS)}; got {budget!r}")
    return dict(budget)


def spec_cells(spec: dict[str, Any], profile: str, data_dirs: list[str] | None = None,
               algorithms: set[str] | None = None, datasets: set[str] | None = None
               ) -> list[tuple[str, ExperimentConfig]]:
    """``[(group label, base config)]``, one per distinct (algorithm, dataset, group label) of ``spec``.

    The base is the cell's config for the profile's first seed, expanded *without* tuned settings,
    from the first group in spec order that has the cell (later groups with the same label, e.g.
    memory runs, share its tuned settings); its ``epochs`` and ``patience`` are the profile's, or
    its ``tune`` budget's (:func:`trial_budget`): the budget of every trial, the same for every algorithm.
    """
    from .sweep import expand

    prof = spec["profiles"].get(profile, {})
    cells: dict[tuple[str, str, str], tuple[str, ExperimentConfig]] = {}
    for group, configs in expand(untuned_spec(spec, profile), profile, data_dirs=data_dirs):
        label = group.get("label") or group["arch"]
        for cfg in configs:
            if (algorithms is not None and cfg.algorithm not in algorithms) or \
                    (datasets is not None and cfg.dataset not in datasets):
                continue
            key = (cfg.algorithm, cfg.dataset, label)
            if key not in cells:  # the first seed of the first group that has the cell
                budget = {k: prof[k] for k in ("epochs", "patience") if k in prof}
                budget.update(trial_budget(prof))
                cells[key] = (label, dataclasses.replace(cfg, **budget))
    return list(cells.values())


def tune_spec(spec: dict[str, Any], profile: str, trials: int, *, params_file: str | Path | None = None,
              studies_dir: str | Path = STUDIES_DIR, storage: str | None = None,
              data_dirs: list[str] | None = None, algorithms: set[str] | None = None,
              datasets: set[str] | None = None, measure: list[str] | tuple[str, ...] | None = ("time",),
              seed: int = 0, pruner: str | optuna.pruners.BasePruner = "median",
              log: Callable[[str], None] = print) -> list[dict[str, Any]]:
    """Tune every cell of ``spec`` under ``profile`` with the same budget: ``trials`` finished trials each.

    One study per cell (:func:`spec_cells`), named :func:`spec_study_name`, under ``studies_dir``;
    the best settings go to ``params_file`` (default: the profile's, else the spec's, else
    :data:`PARAMS_FILE`) under ``<algorithm>/<dataset>/<group label>``, where ``expand`` finds them.
    ``measure`` replaces the meters of the trials (default: ``time`` only, the cheapest: memory hooks
    and energy trackers change no accuracy, and only accuracy selects); None keeps the spec's.
    A cell whose dataset is not on this machine is skipped with a note; a cell whose study fails
    (e.g. it exists with another base config) is reported and the others go on.

    Returns one dict per cell: ``key``, ``study``, ``status`` (``tuned``, ``no complete trial``,
    ``unavailable`` or ``error``), ``finished`` (complete + pruned trials), ``counts``, ``best``, ``note``.
    """
    from .datasets import DatasetUnavailable, load_dataset

    if not isinstance(trials, int) or trials <= 0:
        raise ConfigError(f"the number of trials must be a positive integer, got {trials!r}")
    params_file = params_file or spec_params_file(spec, profile) or PARAMS_FILE
    cells = spec_cells(spec, profile, data_dirs, algorithms, datasets)
    log(f"tuning {len(cells)} cells of spec {spec['name']} (profile {profile}) with the same budget: "
        f"{trials} trials each; best settings into {params_file}")
    available: dict[str, str | None] = {}  # dataset -> None, or why it is not on this machine
    outcomes = []
    for label, base in cells:
        if measure is not None:
            base = dataclasses.replace(base, measure=list(measure))
        key = params_key(base, label)
        study = spec_study_name(base, label, profile)
        row: dict[str, Any] = {"key": key, "study": study, "status": "", "finished": 0, "counts": {},
                               "best": None, "note": ""}
        if base.dataset not in available:
            try:
                load_dataset(base.dataset, base.data_dirs)
                available[base.dataset] = None
            except DatasetUnavailable as exc:
                available[base.dataset] = str(exc)
        if available[base.dataset] is not None:
            row.update(status="unavailable", note=available[base.dataset])
            log(f"skipped {key}: dataset not on this machine ({available[base.dataset]})")
            outcomes.append(row)
            continue
        try:
            out = tune(base, trials, study_name=study, storage=storage, studies_dir=studies_dir, label=label,
                       seed=seed, pruner=pruner, params_file=params_file, log=log)
        except Exception as exc:  # noqa: BLE001 - one cell's failure is reported; the others are still tuned
            row.update(status="error", note=f"{type(exc).__name__}: {exc}")
            log(f"error in {key}: {row['note']}")
            outcomes.append(row)
            continue
        finished = sum(out.counts.get(state.name.lower(), 0) for state in FINISHED)
        row.update(status="tuned" if out.best is not None else "no complete trial", finished=finished,
                   counts=out.counts, best=out.best)
        if finished != trials:  # e.g. a study resumed from a larger budget, or parallel workers overshooting
            row["note"] = f"{finished} finished trials, not {trials}: this cell's budget differs from the others'"
            log(f"note: {key}: {row['note']}")
        outcomes.append(row)
    counts: dict[str, int] = {}
    for row in outcomes:
        counts[row["status"]] = counts.get(row["status"], 0) + 1
    log("tuning done: " + ", ".join(f"{n} {s}" for s, n in sorted(counts.items())))
    return outcomes
