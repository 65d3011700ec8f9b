"""Tables 1, 2, 3 and 6 of the Mono-Forward paper (the accuracy tables) from run folders alone.

A table is a spec (``benchmarks/specs/tableN.yaml``) under one profile. Each cell is one network
(spec group) x dataset x paper row (``rows``: the paper's row name -> the algorithm and prediction
mode that give it). Its runs are the configs ``sweep.expand(spec, profile)`` yields for the row's
algorithm, one per seed, matched with the loaded run folders by ``sweep.run_key`` (so runs made on
another device count). A seed's value is the test accuracy of the row's mode at the epoch with the
best *validation* accuracy (``summary["selected"]["test_acc_<mode>"]``); the cell is the mean ± std
(sample std, ddof 1) over the seeds that completed, and the CSV's ``values`` column lists each of those
seeds' values (``seed:value;...``), so that two rows can be paired by seed (the suite's seed k gives
every algorithm the same split and data order). A cell with fewer seeds than asked says why, from
the run folders and the sweep's status file (``<results>/sweeps/<spec>_<profile>.jsonl``): diverged,
failed, dataset unavailable here, not run yet. The published mean ± std sits beside ours with the
difference in points. Beside ours, ``by test`` is the same seeds with each one's epoch chosen by its *test*
accuracy (the best test accuracy over its epochs), as a protocol that selects on the test set would
report it: an optimistic figure that sizes the effect of the paper's test-set selection, used by no
verdict.

Pure functions: (spec, profile, runs, statuses, reference rows) in, rows out; their markdown, CSV and
LaTeX forms are in ``accuracy_render``.

    table = build_table(spec, "quick", runs, latest_statuses(status_file(root, "table3", "quick")))
    print(table.markdown)
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Any, Iterable

from algorithms import ConfigError, UnknownNameError

from benchmarks.tables.accuracy_render import DATASET_NOTES, MONO_FORWARD, PUBLISHED, AccuracyTable, seed_values
from benchmarks.tables.accuracy_render import write_table  # noqa: F401 (bpfree plots writes through this module)
from benchmarks.sweep.params_file import describe_tuning
from benchmarks.reference import PAPER_DATASET, load_reference
from benchmarks.run.folders import prefer
from benchmarks.sweep.expand import expand, run_key

FINISHED = ("completed", "diverged")  # run folders with a `done` marker
ERROR_CHARS = 80  # a failure's message is cut to this many characters in a note


# -- the spec's rows and runs --------------------------------------------------------------------

def spec_rows(spec: dict[str, Any]) -> list[dict[str, str]]:
    """The spec's ``rows`` as ``[{"paper", "algorithm", "mode"}]`` in order.

    Accepts the mapping form ``{"MF (FF pred)": {algorithm: mf, mode: ff}}`` and the list form
    ``[{paper: "MF (FF pred)", algorithm: mf, mode: ff}]``.
    """
    rows = spec.get("rows") or {}
    items = rows.items() if isinstance(rows, dict) else ((r.get("paper"), r) for r in rows)
    out = []
    for paper, row in items:
        if not paper or not isinstance(row, dict) or not {"algorithm", "mode"} <= set(row):
            raise ConfigError(f"spec {spec.get('name')}: every row needs a paper name, an algorithm and a mode, "
                              f"got {paper!r}: {row!r}")
        out.append({"paper": str(paper), "algorithm": str(row["algorithm"]), "mode": str(row["mode"])})
    return out


def accuracy_reference(reference: Iterable[dict[str, str]]) -> dict[tuple[str, str, str], dict[str, str]]:
    """Published test accuracies by (row, architecture, paper dataset)."""
    return {(r["algorithm"], r["architecture"], r["dataset"]): r for r in reference
            if r.get("metric", "test_accuracy") == "test_accuracy"}


def rows_for_group(spec: dict[str, Any], group: dict[str, Any], reference: Iterable[dict[str, str]]
                   ) -> list[dict[str, str]]:
    """The spec rows a group shows: those of its algorithms that the paper has for its network.

    A group without ``paper_arch``, or whose network the reference does not list, shows every row of
    its algorithms (e.g. Table 1's "MF layer 3" is only shown for the 3-layer network).
    """
    mine = [r for r in spec_rows(spec) if r["algorithm"] in group["algorithms"]]
    arch = group.get("paper_arch")
    published = {(r["algorithm"], r["architecture"]) for r in reference}
    if not arch or not any(a == arch for _, a in published):
        return mine
    return [r for r in mine if (r["paper"], arch) in published]


def expected_runs(spec: dict[str, Any], profile: str, params_file: str | Path | None = None
                  ) -> list[tuple[dict[str, Any], list[dict[str, Any]] | str]]:
    """Per spec group: the resolved config dicts of its runs, or why they cannot be made here.

    Each group expands on its own, so that a group whose architecture or settings are unknown on this
    machine leaves the others' cells intact. An unknown profile raises ``ConfigError``.
    """
    if profile not in spec["profiles"]:
        raise ConfigError(f"unknown profile {profile!r} for spec {spec['name']}; "
                          f"choose one of: {', '.join(spec['profiles'])}")
    out = []
    for group in spec["groups"]:
        try:
            [(_, configs)] = expand({**spec, "groups": [group]}, profile, params_file=params_file)
            out.append((group, [c.resolve().to_dict() for c in configs]))
        except (ConfigError, UnknownNameError) as exc:
            out.append((group, _short(str(exc))))
    return out


def expected_keys(spec: dict[str, Any], profile: str, params_file: str | Path | None = None) -> set[str]:
    """The run keys of every run that ``spec`` asks for under ``profile`` (groups that cannot expand: none)."""
    return {run_key(c) for _, configs in expected_runs(spec, profile, params_file) if isinstance(configs, list)
            for c in configs}


def has_finished_runs(spec: dict[str, Any], profile: str, runs: Iterable[dict],
                      params_file: str | Path | None = None, own: bool = True) -> bool:
    """Whether a run of ``profile`` finished. With ``own``, runs that another profile asks for too (e.g.
    a small dataset trained alike in both) do not count, unless the profile has no runs of its own."""
    keys = expected_keys(spec, profile, params_file)
    if own:
        keys = (keys - {k for p in spec["profiles"] if p != profile
                        for k in expected_keys(spec, p, params_file)}) or keys
    return any(run_key(r["config"]) in keys and r.get("summary", {}).get("status") in FINISHED for r in runs)


def default_profile(spec: dict[str, Any], runs: Iterable[dict], params_file: str | Path | None = None) -> str:
    """``paper`` if any of its own runs finished (``has_finished_runs``), else ``quick`` (else the
    spec's first profile)."""
    profiles = list(spec["profiles"])
    fallback = "quick" if "quick" in profiles else profiles[0]
    if "paper" not in profiles:
        return fallback
    return "paper" if has_finished_runs(spec, "paper", runs, params_file) else fallback


# -- cells ---------------------------------------------------------------------------------------

def _short(message: str) -> str:
    line = (message.strip().splitlines() or [""])[0].strip()
    return line if len(line) <= ERROR_CHARS else line[:ERROR_CHARS - 1].rstrip() + "…"


def _seeds(seeds: list[int]) -> str:
    return f"seed {seeds[0]}" if len(seeds) == 1 else "seeds " + ", ".join(map(str, seeds))


def seed_outcome(key: str, seed: int, mode: str, runs_by_key: dict[str, dict], statuses: dict[str, dict]
                 ) -> tuple[float | None, str, str]:
    """One seed of a cell: ``(value, kind, detail)``; kind is "ok", "diverged", "failed", "unavailable",
    "unfinished", "no mode", "missing folder" or "not run"; detail is the note's text for it."""
    run = runs_by_key.get(key)
    summary = run.get("summary", {}) if run else {}
    status = summary.get("status")
    if status in FINISHED and not run.get("done", True):
        status = None  # a summary without its `done` marker (e.g. the disk filled up before it) is unfinished
    if status == "completed":
        value = selected_on_own_validation(run, mode)
        if value is None:
            return None, "no mode", f"no {mode} accuracy in the run (seed {seed})"
        return float(value), "ok", ""
    if status == "diverged":
        epoch = summary.get("diverged_epoch")
        why = _short(summary["diverged_reason"].split(" in epoch")[0]) if summary.get("diverged_reason") else ""
        return None, "diverged", (f"diverged (seed {seed}" + (f", epoch {epoch}" if epoch is not None else "")
                                  + (f": {why})" if why else ")"))
    line = statuses.get(key)  # the sweep's latest word on a run without a finished folder
    if line is not None:
        if line["status"] == "unavailable":
            return None, "unavailable", "dataset unavailable here"
        if line["status"] == "failed":
            return None, "failed", _short(line.get("error") or "no error recorded")
        if line["status"] == "diverged":
            return None, "diverged", f"diverged (seed {seed})"
        if line["status"] in ("completed", "reused"):
            return None, "missing folder", f"run folder missing (seed {seed})"
    if status == "failed":
        return None, "failed", _short(summary.get("error") or "no error recorded")
    if run is not None:
        return None, "unfinished", f"unfinished run folder (seed {seed})"
    return None, "not run", "not run yet"


def _cell_note(outcomes: list[tuple[int, float | None, str, str]], n_expected: int) -> str:
    """The seeds' story in a few words: "2 of 3 seeds; diverged (seed 1, epoch 4)"."""
    n_ok = sum(1 for _, _, kind, _ in outcomes if kind == "ok")
    parts = [f"{n_ok} of {n_expected} seeds"] if 0 < n_ok < n_expected else []
    grouped: dict[tuple[str, str], list[int]] = {}
    for seed, _, kind, detail in outcomes:
        if kind == "ok":
            continue
        if kind in ("failed", "unavailable", "not run"):  # the same words for every seed: name the seeds once
            grouped.setdefault((kind, detail), []).append(seed)
        else:
            parts.append(detail)
    for (kind, detail), seeds in grouped.items():
        which = "" if len(seeds) == n_expected else f" ({_seeds(seeds)})"
        if kind == "failed":
            parts.append(f"failed{which}: {detail}")
        else:
            parts.append(f"{detail}{which}")
    return "; ".join(parts)


def selected_on_own_validation(run: dict[str, Any], mode: str) -> float | None:
    """``mode``'s test accuracy at the epoch with ``mode``'s own best validation accuracy, among the epochs
    the run could select (those of its selected epoch's phase: MF's sequential schedule selects only in
    its last block's share). A run selects and stops on its default mode; reading another mode (MF's
    ``bp``) at that epoch would let the FF-pred validation accuracy choose it. The first best wins, as in
    the runner, so the default mode reads exactly the run's selected epoch. A run without a validation
    split (or epochs) is read at its summary's selected epoch."""
    summary = run.get("summary", {})
    phase = summary.get("selected", {}).get("phase")
    epochs = [e for e in run.get("epochs", []) if e.get("phase") == phase and e.get(f"val_acc_{mode}") is not None]
    if not epochs:
        return summary.get("selected", {}).get(f"test_acc_{mode}")
    best = max(epochs, key=lambda e: e[f"val_acc_{mode}"])  # max keeps the first of equal ones
    return best.get(f"test_acc_{mode}")


def best_test_accuracy(run: dict[str, Any] | None, mode: str) -> float | None:
    """The run's best test accuracy of ``mode`` over its epochs (its epoch chosen on test), or None when
    an epoch has no test accuracy of that mode (then choosing on test is not possible from the folder)."""
    values = [e.get(f"test_acc_{mode}") for e in (run or {}).get("epochs", [])]
    return max(values) if values and None not in values else None


def _mean_std(values: list[float]) -> tuple[float | None, float | None]:
    if not values:
        return None, None
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else None)


def _number(text: str | None) -> float | None:
    return float(text) if text not in (None, "") else None


def table_rows(spec: dict[str, Any], profile: str, runs: Iterable[dict], statuses: dict[str, dict],
               reference: list[dict[str, str]], params_file: str | Path | None = None,
               expected: list | None = None) -> list[dict[str, Any]]:
    """One row per cell (network x dataset x paper row), in the spec's order; columns as ``COLUMNS``."""
    # a finished folder wins over an unfinished one of the same run, then the newest with a data fingerprint
    runs_by_key = prefer(runs, lambda run: run_key(run["config"]))
    published = accuracy_reference(reference)
    published_archs = {arch for _, arch, _ in published}
    expected = expected if expected is not None else expected_runs(spec, profile, params_file)
    default_seeds = list(spec["profiles"][profile].get("seeds", [0]))
    out = []
    for group, configs in expected:
        label = group.get("label") or group["arch"]
        arch = group.get("paper_arch", "")
        for dataset in group["datasets"]:
            paper_dataset = PAPER_DATASET.get(dataset, dataset)
            for row in rows_for_group(spec, group, reference):
                ref = published.get((row["paper"], arch, paper_dataset))
                ref_mean, ref_std = (_number(ref["mean"]), _number(ref["std"])) if ref else (None, None)
                notes = [DATASET_NOTES.get(dataset, "")]
                if ref is not None and ref_mean is None:
                    notes.append(ref.get("note") or "no published value")
                elif ref is None and arch in published_archs:  # the paper has this network, not this cell
                    notes.append("not in the paper")
                if isinstance(configs, str):  # the group cannot be expanded here
                    seeds, values, by_test, per_seed, cost = default_seeds, [], [], [], run_cost([])
                    notes.append(f"cannot run here: {configs}")
                else:
                    mine = [c for c in configs if c["dataset"] == dataset and c["algorithm"] == row["algorithm"]]
                    seeds = [c["seed"] for c in mine]
                    outcomes = [(c["seed"], *seed_outcome(run_key(c), c["seed"], row["mode"], runs_by_key, statuses))
                                for c in mine]
                    per_seed = [(seed, v) for seed, v, kind, _ in outcomes if kind == "ok"]
                    values = [v for _, v in per_seed]
                    ok_runs = [runs_by_key[run_key(c)] for c, (_, _, kind, _) in zip(mine, outcomes) if kind == "ok"]
                    by_test = [best_test_accuracy(run, row["mode"]) for run in ok_runs]
                    cost = run_cost(ok_runs)
                    notes.append(_cell_note(outcomes, len(mine)))
                mean, std = _mean_std(values)
                by_test_mean, by_test_std = _mean_std(by_test) if values and None not in by_test else (None, None)
                out.append({
                    "table": spec["name"], "profile": profile, "network": label, "paper_arch": arch,
                    "dataset": dataset, "paper_dataset": paper_dataset, "row": row["paper"],
                    "algorithm": row["algorithm"], "mode": row["mode"],
                    "published_mean": ref_mean, "published_std": ref_std, "mean": mean, "std": std,
                    "n": len(values), "seeds": len(seeds), "by_test_mean": by_test_mean, "by_test_std": by_test_std,
                    "difference": mean - ref_mean if mean is not None and ref_mean is not None else None,
                    "note": "; ".join(n for n in notes if n), "values": seed_values(per_seed), **cost})
    return out


def run_cost(runs: list[dict[str, Any]]) -> dict[str, float | None]:
    """What the cell's completed runs cost, kept apart: ``epochs_mean``, the epochs each trained (its own
    early stopping, or a matched budget's fixed count), and ``epoch_time_mean_s``, the training time of
    one epoch (the clock meter's mean: training steps only, no evaluation, the first epoch left out where
    there were others), both averaged over the runs; None where a run did not measure it. The time is
    the machine's each run was made on (its ``environment.json``), beside whatever else ran there."""
    epochs = [r.get("summary", {}).get("epochs_run") for r in runs]
    times = [r.get("summary", {}).get("measurements", {}).get("epoch_time_mean_s") for r in runs]
    return {"epochs_mean": statistics.fmean(epochs) if runs and None not in epochs else None,
            "epoch_time_mean_s": statistics.fmean(times) if runs and None not in times else None}


# -- the profile on the table's face -------------------------------------------------------------

def _by_value(configs: list[dict], *fields: str, label: str = "dataset") -> dict[Any, list[str]]:
    """Distinct values of some config fields -> the datasets (or other ``label``) that have them, in order."""
    out: dict[Any, list[str]] = {}
    for c in configs:
        names = out.setdefault(tuple(c[f] for f in fields) if len(fields) > 1 else c[fields[0]], [])
        if c[label] not in names:
            names.append(c[label])
    return out


def _by_dataset_or_algorithm(configs: list[dict], *fields: str) -> dict[Any, list[str]]:
    """``_by_value`` by dataset, or by algorithm where one dataset has several values (a per-algorithm
    setting such as Table 3's epoch cap for FF)."""
    by_dataset = _by_value(configs, *fields)
    names = [d for ds in by_dataset.values() for d in ds]
    return by_dataset if len(names) == len(set(names)) else _by_value(configs, *fields, label="algorithm")


def _describe(values: dict[Any, list[str]], one, many_prefix: str, fmt) -> str:
    if len(values) == 1:
        return one(next(iter(values)))
    return many_prefix + ", ".join(f"{fmt(v)} ({', '.join(ds)})" for v, ds in values.items())


def _epochs(value: tuple[int, int | None]) -> str:
    epochs, patience = value
    if patience is None:
        return f"{epochs} epoch{'s' if epochs != 1 else ''}"
    return f"at most {epochs} epochs, patience {patience}"


def _data_settings(configs: list[dict]) -> list[str]:
    """Each dataset's non-default settings (``data_args``), e.g. which fixed test split it used."""
    out: dict[str, str] = {}
    for c in configs:
        if c.get("data_args"):
            out.setdefault(c["dataset"], ", ".join(f"{k}={json.dumps(v)}" for k, v in sorted(c["data_args"].items())))
    return [f"{dataset} with {settings}" for dataset, settings in out.items()]


def describe_profile(spec: dict[str, Any], profile: str, configs: list[dict]) -> str:
    """One line that says what the runs of ``profile`` are, derived from the configs themselves."""
    if not configs:
        seeds = list(spec["profiles"][profile].get("seeds", [0]))
        body = _seeds(seeds) + " (no run of this spec can be made here)"
    else:
        seeds = sorted({c["seed"] for c in configs})
        parts = [_describe(_by_value(configs, "train_limit"),
                           lambda v: "full training set" if v is None else f"training subset of {v}",
                           "training subsets: ", lambda v: "all" if v is None else str(v))]
        tests = _by_value(configs, "test_limit")
        if any(v is not None for v in tests):
            parts.append(_describe(tests, lambda v: "full test set" if v is None else f"test subset of {v}",
                                   "test subsets: ", lambda v: "all" if v is None else str(v)))
        parts.append(_describe(_by_dataset_or_algorithm(configs, "epochs", "patience"), _epochs, "", _epochs))
        parts.extend(_data_settings(configs))
        parts.append(_seeds(seeds))
        body = ", ".join(parts)
    if profile == "quick":
        return f"QUICK profile: {body}, NOT the paper's protocol"
    if profile == "paper":
        return (f"PAPER profile: {body} (the paper's protocol as far as it states it, except that every choice "
                "is made on validation, not on test)")
    return f"{profile.upper()} profile: {body}"


def budgets_of(spec: dict[str, Any], profile: str) -> list[str]:
    """The budget protocols ``profile``'s runs are made under (``sweep.expand``'s ``budgets``; ``own`` alone
    without them)."""
    return list(spec["profiles"][profile].get("budgets") or {"own": {}})


def build_table(spec: dict[str, Any], profile: str, runs: Iterable[dict], statuses: dict[str, dict],
                reference: list[dict[str, str]] | None = None, params_file: str | Path | None = None,
                budget: str | None = None) -> AccuracyTable:
    """The whole table: rows, title and profile line (``reference`` defaults to the spec's published table).
    ``budget``: only the runs of that budget protocol (a profile with several makes one table each)."""
    if reference is None:
        reference = load_reference(str(spec.get("reference", "")))
    expected = expected_runs(spec, profile, params_file)
    if budget is not None:
        expected = [(g, cs if isinstance(cs, str) else [c for c in cs if c["budget"] == budget]) for g, cs in expected]
    rows = table_rows(spec, profile, list(runs), statuses, reference, expected=expected)
    configs = [c for _, cs in expected if isinstance(cs, list) for c in cs]
    caption = spec.get("caption") or spec["name"]
    params_file = params_file or spec["profiles"].get(profile, {}).get("params_file") or spec.get("params_file")
    cells = {(c["algorithm"], c["dataset"], g.get("label") or g["arch"]) for g, cs in expected if isinstance(cs, list)
             for c in cs}
    tuning = describe_tuning(params_file, f"_{spec['name']}_{profile}", len(cells)) if params_file else ""
    if budget is not None:
        caption += f" [budget: {budget}]"
    return AccuracyTable(spec["name"], profile, caption, describe_profile(spec, profile, configs), rows,
                         PUBLISHED.get(str(spec.get("reference", "")), MONO_FORWARD), tuning)
