"""A whole sweep spec tuned with one budget: one study per (algorithm, dataset, group label).

``bpfree sweep SPEC --tune N``: every cell gets the same N trials and the same per-trial budget
(the profile's ``tune`` mapping, else its epochs and patience), so that no algorithm is tuned harder
than another; the best settings go to the profile's params file, which ``expand`` then applies.

Every cell's study searches the same shared dimensions, learning rate and batch size, plus its
algorithm's own knobs (algorithms/search_spaces.py). The per-epoch learning-rate decay ``lr_decay`` is
a shared dimension that the profile gives to every row or to none: ``tune_shared: [lr_decay]`` in a
profile makes every cell's study search it in the same range (0.7-1, ``LR_DECAY_RANGE``); without it
no cell searches it (every run keeps ``lr_decay`` 1, a constant rate). There is no per-group or
per-algorithm switch (a group or an algorithm override naming ``tune_shared`` is refused), and an
algorithm's own space that searches it is refused, so one row alone cannot get it. Switching it for a
profile whose studies exist changes their space: resuming them is refused (move their journals aside).
"""

from __future__ import annotations

import copy
import dataclasses
from pathlib import Path
from typing import Any, Callable

import optuna

from algorithms import ConfigError

from benchmarks.run.config import ExperimentConfig
from benchmarks.sweep.expand import tune_shared
from .storage import STUDIES_DIR
from .study import FINISHED, PARAMS_FILE, default_study_name, params_key, tune


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
    return default_study_name(base, label, suffix=profile)


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
    from benchmarks.sweep.expand import expand

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
                # trials run to their own convergence (budget own) whatever budgets the runs are made under
                budget = {"budget": "own", **{k: prof[k] for k in ("epochs", "patience") if k in prof}}
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
    from ..datasets import DatasetUnavailable, load_dataset

    if not isinstance(trials, int) or trials <= 0:
        raise ConfigError(f"the number of trials must be a positive integer, got {trials!r}")
    params_file = params_file or spec_params_file(spec, profile) or PARAMS_FILE
    shared = tune_shared(spec["profiles"].get(profile, {}))
    cells = spec_cells(spec, profile, data_dirs, algorithms, datasets)
    log(f"tuning {len(cells)} cells of spec {spec['name']} (profile {profile}) with the same budget: "
        f"{trials} trials each" + (f", every one searching {', '.join(shared)} too" if shared else "")
        + f"; best settings into {params_file}")
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
                       seed=seed, pruner=pruner, params_file=params_file, shared=shared, log=log)
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
