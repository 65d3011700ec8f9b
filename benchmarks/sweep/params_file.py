"""Reading a params file: the tuned settings a spec's runs apply, by ``<algorithm>/<dataset>/<label>``.

Apart from benchmarks.tuning (which writes these files) so that a sweep or a table can read tuned
settings on a machine without Optuna (e.g. a lent GPU machine).
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

from algorithms import ConfigError
from benchmarks.run.config import read_mapping_file

# The trial states (keys of a best.json's "trials") that count towards a study's budget, as
# benchmarks.tuning.study.FINISHED does (not imported: this module runs without Optuna); a failed or
# running trial does not count.
FINISHED_STATES = ("complete", "pruned")


def load_params_file(path: str | Path) -> dict[str, dict[str, Any]]:
    """The params file as a dict, e.g. for a sweep (``{key: {ExperimentConfig fields}}``)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"params file {path} not found (tune first: bpfree sweep <spec> --tune N, or bpfree tune)")
    values = read_mapping_file(path, "params file")
    if not isinstance(values, dict) or not all(isinstance(v, dict) for v in values.values()):
        raise ConfigError(f"params file {path} must map '<algorithm>/<dataset>/<label>' to config fields")
    return values


def check_entry_current(key: str, entry: dict[str, Any], path: str | Path) -> None:
    """Refuse a tuned entry that predates some of its algorithm's hyperparameters (``ConfigError``).

    The tuner writes an entry resolved: every hyperparameter of the trainer it tuned, the common ones
    (``TrainerHParams``: optimizer, lr, ...) included. Such an entry that lacks a field the trainer has
    today was tuned before that field existed, under whatever its default replaced (e.g. FF's threshold
    tuned for unit-length inputs, then applied to RMS-normalised ones), and would be applied to a
    different algorithm without a word. A hand-written entry that names only some common fields (say
    ``{"hparams": {"lr": 5e-4}}``) means today's defaults for the rest and is taken as it is. A field
    whose value before it existed (``config.implicit_hparams``) is its default today changes nothing
    (the shared ``lr_decay`` 1: every learning rate was constant before it) and is not missing, nor needed
    to tell an entry written resolved. Execution-only settings (``EXECUTION_HPARAMS``, which change no
    result) do not count."""
    from algorithms import ALGORITHMS, UnknownNameError
    from algorithms.base import EXECUTION_HPARAMS, TrainerHParams

    try:
        hparams_class = ALGORITHMS.get(key.split("/", 1)[0]).HParams
    except UnknownNameError:
        return  # the config's own validation names the unknown algorithm
    from benchmarks.run.config import implicit_hparams
    implicit = implicit_hparams(key.split("/", 1)[0])

    def unchanged(f: dataclasses.Field) -> bool:  # added since, at the value it had before it existed
        return f.name in implicit and implicit[f.name] == f.default

    named = set(entry.get("hparams") or {})
    common = {f.name for f in dataclasses.fields(TrainerHParams) if not unchanged(f)} - set(EXECUTION_HPARAMS)
    if not common <= named:
        return  # not written resolved: a hand-written entry
    missing = sorted(f.name for f in dataclasses.fields(hparams_class)
                     if f.name not in named and f.name not in EXECUTION_HPARAMS and not unchanged(f))
    if missing:
        raise ConfigError(f"params file {path}: entry {key} was tuned before its algorithm had "
                          f"{', '.join(missing)}; tune it again (bpfree sweep <spec> --tune N) or remove it")


def describe_tuning(path: str | Path, study_suffix: str, cells: int) -> str:
    """One sentence on where a table's tuned settings came from: how many of its ``cells`` the params
    file at ``path`` tunes, and the budget of their Optuna studies (their ``*.best.json`` beside the
    file, those whose study name ends with ``study_suffix``, e.g. ``_table3_paper``): the finished
    (complete + pruned) trials of each, as the tuner counts them; a failed trial (e.g. retried after
    its worker died) is not one. "" without a file."""
    path = Path(path)
    if not path.is_file():
        return ""
    tuned = load_params_file(path)
    trials: dict[str, int] = {}
    budgets = set()
    for best_path in sorted(path.parent.glob(f"*{study_suffix}.best.json")):
        try:
            best = json.loads(best_path.read_text())
        except (OSError, json.JSONDecodeError):
            continue
        if best.get("key") in tuned:
            states = best.get("trials", {})
            trials[best["key"]] = sum(states.get(state, 0) for state in FINISHED_STATES)
            b = best.get("budget", {})
            budgets.add((b.get("epochs"), b.get("patience"), b.get("train_limit")))
    if not trials:
        return f"Tuned settings for {len(tuned)} of {cells} cells from {path}."
    counts = list(trials.values())
    usual = min(set(counts), key=lambda n: (-counts.count(n), n))  # the most common count; ties: the smaller
    others = ", ".join(f"{n} for {key}" for key, n in trials.items() if n != usual)
    per_cell = f"{usual}" + (f" ({others})" if others else "")
    budget = "; ".join(f"at most {e} epochs, patience {p}, on "
                       + ("the full training split" if n is None else f"{n} training images")
                       for e, p, n in sorted(budgets, key=str))
    return (f"Tuned: {len(tuned)} of {cells} cells use the best of {per_cell} finished Optuna trials (complete + "
            f"pruned) on the validation split (each trial {budget}), from {path}; "
            "the other cells keep each algorithm's defaults.")
