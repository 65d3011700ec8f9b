"""Reading a params file: the tuned settings a spec's runs apply, by ``<algorithm>/<dataset>/<label>``.

Apart from benchmarks.tuning (which writes these files) so that a sweep or a table can read tuned
settings on a machine without Optuna (e.g. a lent GPU machine).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from algorithms import ConfigError


def load_params_file(path: str | Path) -> dict[str, dict[str, Any]]:
    """The params file as a dict, e.g. for a sweep (``{key: {ExperimentConfig fields}}``)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"params file {path} not found (tune first: scripts/sweep.py <spec> --tune N, or scripts/tune.py)")
    text = path.read_text()
    if path.suffix in (".yaml", ".yml"):
        import yaml
        values = yaml.safe_load(text)
    else:
        values = json.loads(text)
    if not isinstance(values, dict) or not all(isinstance(v, dict) for v in values.values()):
        raise ConfigError(f"params file {path} must map '<algorithm>/<dataset>/<label>' to config fields")
    return values


def describe_tuning(path: str | Path, study_suffix: str, cells: int) -> str:
    """One sentence on where a table's tuned settings came from: how many of its ``cells`` the params
    file at ``path`` tunes, and the budget of their Optuna studies (their ``*.best.json`` beside the
    file, those whose study name ends with ``study_suffix``, e.g. ``_table3_paper``). "" without a file."""
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
            trials[best["key"]] = sum(best.get("trials", {}).values())
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
    return (f"Tuned: {len(tuned)} of {cells} cells use the best of {per_cell} Optuna trials on the validation "
            f"split (each trial {budget}), from {path}; "
            "the other cells keep each algorithm's defaults.")
