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

**A whole spec with one budget** (:func:`tune_spec`, ``bpfree sweep SPEC --tune N``): one study per
distinct (algorithm, dataset, group label) of a sweep spec, every one with the same N trials and the
profile's epochs and patience per trial, so that no algorithm is tuned harder than another; the
best settings go to the profile's params file, which ``expand`` then applies to the sweep's runs.
The profile's ``tune_shared: [lr_decay]`` makes every study of it search the learning-rate decay too
(for every row or, without it, for none: :mod:`.spec`).

Params file (JSON, default ``results/studies/best_params.json``), shared by all studies, read by
``benchmarks.sweep.expand.expand(spec, profile, params_file=...)``::

    {
      "<algorithm>/<dataset>/<arch label>": {"batch_size": 128, "hparams": {"lr": 0.0021, ...}},
      "mf/fmnist/2x1000": {...}
    }

Each entry holds ExperimentConfig fields: the searched ones (``batch_size`` and the complete
resolved ``hparams`` of the best trial), nothing else, so that a spec's profile keeps its own
epochs/patience/limits. The arch label is the spec group's ``label``; by default it is derived from
the architecture (:func:`arch_label`: an MLP with widths [1000, 1000] is ``2x1000``).

Modules: :mod:`.study` (one study: trials, objective, best settings), :mod:`.storage` (journal file
with heartbeats, or a database), :mod:`.spec` (a whole spec with one budget).
"""

from benchmarks.sweep.params_file import load_params_file  # tuning writes what sweeps read
from .spec import spec_cells, spec_params_file, spec_study_name, trial_budget, tune_spec, untuned_spec
from .storage import (HEARTBEAT_INTERVAL, MAX_RETRY, STUDIES_DIR, HeartbeatJournalStorage, database_url,
                      make_storage, redact)
from .study import (FINISHED, PARAMS_FILE, TuneOutcome, TuningError, arch_label, default_params,
                    default_study_name, finish, make_objective, make_pruner, params_key, sampler_seed,
                    trial_config, tune, update_params_file)

__all__ = ["FINISHED", "HEARTBEAT_INTERVAL", "MAX_RETRY", "PARAMS_FILE", "STUDIES_DIR", "HeartbeatJournalStorage",
           "TuneOutcome", "TuningError", "arch_label", "database_url", "default_params", "default_study_name",
           "finish", "load_params_file", "make_objective", "make_pruner", "make_storage", "params_key", "redact",
           "sampler_seed", "spec_cells", "spec_params_file", "spec_study_name", "trial_budget", "trial_config",
           "tune", "tune_spec", "untuned_spec", "update_params_file"]
