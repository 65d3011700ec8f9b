"""One Optuna study: one algorithm tuned on one dataset and architecture (see the package's docstring).

Each trial is a normal run (:func:`benchmarks.run.runner.run_experiment`) of the base config with the
algorithm's search space sampled; its validation accuracy per epoch feeds the pruner, and the best
trial's settings go to ``<study>.best.json`` and the shared params file.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import re
import socket
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import optuna
from filelock import FileLock
from optuna.trial import TrialState

from algorithms import ConfigError
from algorithms.search_spaces import check_shared, search_space

from benchmarks.run.config import (EXECUTION_FIELDS, LOCATION_FIELDS, VERDICT_FIELDS, ExperimentConfig,
                                   with_implicit_defaults)
from benchmarks.run.runner import RunDiverged, run_experiment
from benchmarks.sweep.params_file import load_params_file
from benchmarks.common.files import WriteFailed, read_json, write_failed, write_json
from benchmarks.datasets import DatasetUnavailable
from benchmarks.sweep.expand import run_dir_of
from .storage import HEARTBEAT_INTERVAL, MAX_RETRY, STUDIES_DIR, RetryCallback, make_storage, redact

PARAMS_FILE = "results/studies/best_params.json"
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)  # what counts towards the trial budget
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


STUDY_NAME_MAX = 100  # characters: the study's files add suffixes (.best.json), and names must stay file names


def fit_study_name(name: str) -> str:
    """A derived study name cut to ``STUDY_NAME_MAX`` characters, with a hash of the whole name so that
    two long names stay apart (names that fit are kept as they are)."""
    if len(name) <= STUDY_NAME_MAX:
        return name
    digest = hashlib.sha256(name.encode()).hexdigest()[:10]
    return f"{name[:STUDY_NAME_MAX - 11]}-{digest}"


def check_study_name(name: str) -> None:
    """Refuse a given study name that is not a plain file name of at most ``STUDY_NAME_MAX`` characters:
    its journal, CSV, best settings and run folders are written under ``--studies-dir`` by that name,
    so ``../x`` or ``/abs/x`` would write elsewhere."""
    if (not isinstance(name, str) or not name.strip() or name in (".", "..") or "/" in name or "\\" in name
            or "\0" in name or Path(name).name != name):
        raise ConfigError(f"study name {name!r} must be a plain file name (no folder, no '..'): a study's files "
                          "are written under --studies-dir by its name")
    if len(name) > STUDY_NAME_MAX:
        raise ConfigError(f"study name of {len(name)} characters is too long; a study name takes at most "
                          f"{STUDY_NAME_MAX} characters")


def default_study_name(cfg: ExperimentConfig, label: str | None = None, suffix: str = "") -> str:
    """``<algorithm>_<dataset>_<label>[_<tag>][_<suffix>]`` as a file name (cut by :func:`fit_study_name`)."""
    name = (f"{cfg.algorithm}_{cfg.dataset}_{label or arch_label(cfg)}" + (f"_{cfg.tag}" if cfg.tag else "")
            + (f"_{suffix}" if suffix else ""))
    return fit_study_name(re.sub(r"[^A-Za-z0-9_.-]+", "-", name))


# -- trials -----------------------------------------------------------------------------------------
def trial_config(trial, base: ExperimentConfig, shared: tuple[str, ...] = ()) -> ExperimentConfig:
    """``base`` with the algorithm's search space (plus the optional shared dimensions ``shared`` names,
    a profile's ``tune_shared``) sampled by ``trial`` (``hparams`` merged over base's).
    A trial scores no test accuracy at all (``score_test`` false, whatever the spec's final runs ask for):
    only validation chooses, and a study holds nothing that could choose by test."""
    space, _ = search_space(base.algorithm, shared)
    overrides = dict(space(trial, base.to_dict()))
    hparams = dict(base.hparams, **overrides.pop("hparams", {}))
    unknown = set(overrides) - {f.name for f in dataclasses.fields(ExperimentConfig)}
    if unknown:
        raise ConfigError(f"search space of {base.algorithm} returned unknown config fields {sorted(unknown)}")
    return dataclasses.replace(base, hparams=hparams, **{**overrides, "test_every_epoch": False, "score_test": False})


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


def default_params(base: ExperimentConfig, shared: tuple[str, ...] = ()) -> dict[str, Any]:
    """The base config's own values of the searched parameters (those inside the search space, with
    the optional shared dimensions ``shared`` names: ``lr_decay`` 1, a constant rate, by default).

    Enqueued as a new study's first trial, so that the tuned result is never worse on validation
    than the defaults the algorithm ships with, whatever the budget."""
    space, _ = search_space(base.algorithm, shared)
    recorder = _Recorder()
    try:
        overrides = space(recorder, base.to_dict())
    except ConfigError:  # e.g. a space that searches a shared dimension alone: refused
        raise
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


def previous_params(base: ExperimentConfig, params_file: str | Path | None, key: str,
                    shared: tuple[str, ...] = ()) -> dict[str, Any]:
    """The searched parameters of ``key``'s entry in ``params_file``, as a trial of today's space (with
    the shared dimensions ``shared`` names; a parameter the entry predates at the value it implicitly
    had, e.g. ``lr_decay`` 1, a constant rate).

    A study that replaces an older one (after its search space grew) tries these first, beside the
    defaults, so that tuning again never ends worse on validation than the settings it replaces: 12
    trials in a larger space can miss a point the smaller space had found."""
    if not params_file or not Path(params_file).is_file():
        return {}
    entry = load_params_file(params_file).get(key)
    if not entry:
        return {}
    hparams = with_implicit_defaults({"algorithm": base.algorithm, "hparams": entry.get("hparams", {})})["hparams"]
    tuned = dataclasses.replace(base, hparams={**base.hparams, **hparams},
                                **{k: v for k, v in entry.items() if k != "hparams"})
    return default_params(tuned, shared)


def _refuse_changed_space(study_name: str, trials: list, base: ExperimentConfig, shared: tuple[str, ...] = ()
                          ) -> None:
    """A study resumed after its algorithm's search space changed would rank trials that searched the
    old space beside new ones and count them towards the budget: refuse it (``TuningError``). So is one
    resumed with other shared dimensions (a profile's ``tune_shared`` switched on or off since)."""
    searched = {name for t in trials if t.state in FINISHED for name in t.params}
    recorder = _Recorder()
    try:
        search_space(base.algorithm, shared)[0](recorder, base.to_dict())
    except ConfigError:  # e.g. a space that searches a shared dimension alone: refused
        raise
    except Exception:  # a space that computes with its values: its parameters cannot be listed
        return
    if searched and searched != set(recorder.dists):
        added, dropped = sorted(set(recorder.dists) - searched), sorted(searched - set(recorder.dists))
        change = "; ".join([f"gained {', '.join(added)}"] * bool(added)
                           + [f"lost {', '.join(dropped)}"] * bool(dropped))
        raise TuningError(f"study {study_name!r} searched {', '.join(sorted(searched))}, but the search space of "
                          f"{base.algorithm} has since {change}; move that study's journal aside or use another "
                          "study name")


def _flat_attrs(prefix: str, value: Any) -> dict[str, Any]:
    """Nested measurement dicts become ``a.b`` keys so that the CSV gets one column each."""
    if isinstance(value, dict):
        out = {}
        for key, sub in value.items():
            out.update(_flat_attrs(f"{prefix}.{key}" if prefix else str(key), sub))
        return out
    return {prefix: value if isinstance(value, (int, float, str, bool, type(None))) else str(value)}


def make_objective(base: ExperimentConfig, shared: tuple[str, ...] = ()) -> Callable[[optuna.Trial], float]:
    """The objective: train the trial's config, report validation accuracy per epoch, maybe prune."""

    def objective(trial: optuna.Trial) -> float:
        # who runs this trial: a worker that resumes the study after this process died fails it and
        # queues it again at once, without waiting for the heartbeat's grace period
        trial.storage.set_trial_system_attr(trial._trial_id, OWNER_ATTR, _owner())
        _ACTIVE.add((trial.study.study_name, trial._trial_id))
        try:
            return _objective(trial)
        finally:
            _ACTIVE.discard((trial.study.study_name, trial._trial_id))

    def _objective(trial: optuna.Trial) -> float:
        cfg = trial_config(trial, base, shared)
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

        # two trials with identical settings share a run folder: the second waits for the first
        # and reuses its finished run
        run_dir.parent.mkdir(parents=True, exist_ok=True)
        with FileLock(run_dir.parent / f".{run_dir.name}.lock"):
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
                 # no test accuracy: a study holds only what chooses (validation), so that nobody can
                 # pick a trial by test from its export (studies before this version kept it beside)
                 **_flat_attrs("", summary.get("measurements", {}))}
        for name, value in attrs.items():
            trial.set_user_attr(name, value)
        return summary["selected"][key]

    return objective


# -- workers ------------------------------------------------------------------------------------------
OWNER_ATTR = "bpfree:owner"  # trial system attribute: the host, pid and start time of the process running it
_ACTIVE: set[tuple[str, int]] = set()  # (study name, trial id) of the trials this process is running now


def _process_start(pid: int) -> str | None:
    """When process ``pid`` started (clock ticks since boot, /proc), or None where it cannot be read."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def _owner() -> dict[str, Any]:
    return {"host": socket.gethostname(), "pid": os.getpid(), "start": _process_start(os.getpid())}


def _owner_gone(owner: Any, study_name: str, trial_id: int) -> bool:
    """Whether the process recorded as running a trial has certainly ended: it ran on this machine and
    no such process lives (or one with its pid started later, or it is a zombie). Trials of other
    machines are left to the heartbeat."""
    if not isinstance(owner, dict) or owner.get("host") != socket.gethostname():
        return False
    pid = owner.get("pid")
    if not isinstance(pid, int) or pid <= 0:
        return False
    if pid == os.getpid():
        return (study_name, trial_id) not in _ACTIVE  # an earlier tune() here ended without finishing it
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # alive, another user's
        return False
    start = _process_start(pid)
    if start is not None and owner.get("start") is not None and start != owner["start"]:
        return True  # the pid was reused by a later process
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state in ("Z", "X")


def fail_dead_workers_trials(study: optuna.Study, log: Callable[[str], None] = print) -> int:
    """Fail the RUNNING trials whose worker process has ended (:func:`_owner_gone`) and queue each again
    (at most ``MAX_RETRY`` times, as the heartbeat's callback does). A worker killed mid-trial and
    resumed at once, well within the heartbeat's grace period, would otherwise leave its trial RUNNING
    until then, and a study resumed only by that worker short of its budget. Returns how many."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        retry = RetryCallback(max_retry=MAX_RETRY)
    failed = 0
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        owner = trial.system_attrs.get(OWNER_ATTR)
        if not _owner_gone(owner, study.study_name, trial._trial_id):
            continue
        if study._storage.set_trial_state_values(trial._trial_id, state=TrialState.FAIL):
            failed += 1
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                retry(study, study._storage.get_trial(trial._trial_id))
            log(f"trial {trial.number} of study {study.study_name}: its worker (pid {owner['pid']}) has ended; "
                "failed and queued again")
    return failed


def requeue_failed_starts(study: optuna.Study, log: Callable[[str], None] = print) -> None:
    """Queue a study's start trials (the defaults, the params-file entry it replaces) again where each
    only failed (e.g. on a full disk): a resumed study must still try them, at most ``MAX_RETRY`` more
    times each (a start that always fails must not loop)."""
    trials = study.get_trials(deepcopy=False)
    for origin in ("defaults", "previous params file entry"):
        mine = [t for t in trials if t.user_attrs.get("origin") == origin]
        if not mine or any(t.state != TrialState.FAIL for t in mine) or len(mine) > MAX_RETRY:
            continue
        last = mine[-1]
        params = last.system_attrs.get("fixed_params") or last.params
        study.enqueue_trial(params, user_attrs={"origin": origin}, skip_if_exists=False)
        log(f"study {study.study_name}: its {origin} trial failed (trial {last.number}); queued again")


class _NoTracebackFor(logging.Filter):
    """Leaves out the traceback of Optuna's "Trial N failed" warning for failures that the command line
    reports in one line itself (a full disk, missing data, a bad setting)."""

    def __init__(self, *kinds: type[BaseException]):
        super().__init__()
        self.kinds = kinds

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and isinstance(record.exc_info[1], self.kinds):
            record.exc_info, record.exc_text = None, None
        return True


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
    """What a resumed study or a joining worker must share: the base config without locations, without
    the device (workers on CPU and GPU machines may fill one study) and without what only says what the
    metrics rows hold (``EXECUTION_FIELDS``: trials never score test every epoch, and studies predate them)."""
    d = base.resolve().to_dict()
    for key in (*LOCATION_FIELDS, *EXECUTION_FIELDS, "device"):
        d.pop(key, None)
    return d


def _changed_base_fields(recorded: dict[str, Any], identity: dict[str, Any]) -> list[str]:
    """The fields in which a study's recorded base config and today's differ. A field the study predates
    counts as what it implicitly was (``config.with_implicit_defaults``: a constant rate, ``lr_decay`` 1);
    one that only judges a run (``VERDICT_FIELDS``, added after the first studies) counts as today's."""
    recorded = with_implicit_defaults(recorded)  # a new dict: the study's record is not changed
    recorded.update({k: identity.get(k) for k in VERDICT_FIELDS if k not in recorded})
    identity = json.loads(json.dumps(identity))
    return sorted(k for k in set(recorded) | set(identity) if recorded.get(k) != identity.get(k))


def sampler_seed(study_name: str, seed: int, worker_id: int, existing_trials: int) -> int:
    """One seed per (study, tuning seed, worker, point of resumption): a resumed study or a second
    worker must not replay the random start-up samples of the first, and two studies (two algorithms,
    or two datasets) must not draw the same settings: with one shared seed, "independently tuned"
    studies of one space sample identical start-up trials (the Spyra study's audit found this)."""
    digest = hashlib.sha256(f"{study_name}/{seed}/{worker_id}/{existing_trials}".encode()).hexdigest()
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
         shared: tuple[str, ...] | list[str] = (), log: Callable[[str], None] = print) -> TuneOutcome:
    """Create or resume the study of ``base`` and run trials until it has ``trials`` finished ones.

    ``shared``: optional shared dimensions searched beside the algorithm's space (``lr_decay``; a spec's
    profile gives them to every row with ``tune_shared``); a study resumed with others is refused."""
    if not isinstance(trials, int) or trials <= 0:
        raise ConfigError(f"the number of trials must be a positive integer, got {trials!r}")
    if not base.val_fraction > 0:
        raise ConfigError("tuning needs a validation split (val_fraction > 0): test data never selects")
    label = label or arch_label(base)
    if study_name is not None:
        check_study_name(study_name)
    study_name = study_name if study_name is not None else default_study_name(base, label)
    studies_dir = Path(studies_dir)
    base = dataclasses.replace(base, results_dir=str(studies_dir / study_name / "runs"))
    shared = check_shared(shared)
    _, space_origin = search_space(base.algorithm, shared)
    store = make_storage(storage, study_name, studies_dir, heartbeat_interval, grace_period)
    where = redact(storage) if storage else str(studies_dir / f"{study_name}.log")
    quiet = _NoTracebackFor(WriteFailed, DatasetUnavailable, ConfigError)
    optuna_log = logging.getLogger("optuna.study._optimize")
    optuna_log.addFilter(quiet)
    try:
        return _tune(base, trials, study_name, store, where, studies_dir, label, seed, worker_id, pruner,
                     params_file, space_origin, shared, log)
    except (WriteFailed, DatasetUnavailable):
        raise
    except OSError as exc:  # e.g. the journal on a full disk: one line naming the study's storage
        raise write_failed(where, exc) from exc
    finally:
        optuna_log.removeFilter(quiet)


def _tune(base: ExperimentConfig, trials: int, study_name: str, store, where: str, studies_dir: Path, label: str,
          seed: int, worker_id: int, pruner, params_file, space_origin: str, shared: tuple[str, ...], log
          ) -> TuneOutcome:
    """The rest of :func:`tune`, with the storage open."""
    identity = _base_identity(base)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        probe = optuna.create_study(study_name=study_name, storage=store, direction="maximize",
                                    load_if_exists=True)
        existing = probe.get_trials(deepcopy=False)
        # random start-up trials: a third of the budget, at most Optuna's default 10 (with its
        # default a budget of 10 or fewer trials would be a random search)
        sampler = optuna.samplers.TPESampler(seed=sampler_seed(study_name, seed, worker_id, len(existing)),
                                             n_startup_trials=max(2, min(10, trials // 3)),
                                             multivariate=True, constant_liar=True)
        study = optuna.load_study(study_name=study_name, storage=store, sampler=sampler,
                                  pruner=make_pruner(pruner, base.epochs))
    recorded = study.user_attrs.get("base_config")
    if recorded is None:
        study.set_user_attr("base_config", identity)
        study.set_user_attr("params_key", params_key(base, label))
    elif changed := _changed_base_fields(recorded, identity):
        raise TuningError(f"study {study_name!r} was created for a different base config (differs in "
                          f"{', '.join(changed)}); use another --study name or the original settings")

    _refuse_changed_space(study_name, existing, base, shared)
    if not existing:  # a new study starts from the algorithm's defaults, then from what it replaces
        study.enqueue_trial(default_params(base, shared), user_attrs={"origin": "defaults"}, skip_if_exists=True)
        previous = previous_params(base, params_file, params_key(base, label), shared)
        if previous:  # (skipped where it equals the defaults)
            study.enqueue_trial(previous, user_attrs={"origin": "previous params file entry"}, skip_if_exists=True)
    else:  # a resumed study: its dead workers' trials again, and start trials that only failed
        fail_dead_workers_trials(study, log)
        requeue_failed_starts(study, log)

    done = sum(t.state in FINISHED for t in existing)
    log(f"study {study_name} ({where}): {done}/{trials} trials finished; search space: {space_origin}")
    if done < trials:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            study.optimize(make_objective(base, shared), n_trials=trials - done,
                           callbacks=[optuna.study.MaxTrialsCallback(trials, states=FINISHED)])
    return finish(study, base, label, studies_dir, params_file, where, log, shared)


def finish(study: optuna.Study, base: ExperimentConfig, label: str, studies_dir: Path,
           params_file: str | Path | None, where: str, log: Callable[[str], None] = print,
           shared: tuple[str, ...] = ()) -> TuneOutcome:
    """Export the trials as CSV; write the best trial's settings to ``<study>.best.json`` and the params file."""
    key = params_key(base, label)
    csv_path = studies_dir / f"{study.study_name}.csv"
    try:
        csv_path.parent.mkdir(parents=True, exist_ok=True)
        study.trials_dataframe().to_csv(csv_path, index=False)
    except OSError as exc:
        raise write_failed(csv_path, exc) from exc
    counts = count_states(study)
    complete = [t for t in study.get_trials(deepcopy=False) if t.state == TrialState.COMPLETE]
    if not complete:
        log(f"no complete trial yet ({counts}); no params written. Trials: {csv_path}")
        return TuneOutcome(study, key, None, csv_path, None, counts)
    best = study.best_trial
    cfg = trial_config(optuna.trial.FixedTrial(best.params), base, shared).resolve()
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
    path.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(path.with_name(f".{path.name}.lock")):
        values = read_json(path) if path.exists() else {}
        if not isinstance(values, dict):
            raise ConfigError(f"params file {path} must hold a mapping")
        values[key] = entry
        write_json(path, values)
