"""Every row of a comparison runs alike (issue 25, item 5, invariants 5-8 of tests/test_fairness.py, which
checks the studies): one epoch cap, patience, training subset, selection rule and untuned learning-rate
decay for every row of a cell (in the runs and in the tuning trials; the stated ``EXCEPTIONS`` aside); no
trainer parameter that its updates never change; each prediction mode read at its own best validation
epoch; the sweep launching exactly the configs it expands; no searched knob that a spec override would
replace. Each check runs on the committed specs and on a counter-example it must reject.
"""

from __future__ import annotations

import collections
import dataclasses
import json

import pytest
import torch
import yaml
from torch import nn

from algorithms import ALGORITHMS
from benchmarks.run.config import ExperimentConfig, run_key
from benchmarks.sweep.expand import SPECS_DIR, expand, load_spec

from test_fairness import EXCEPTIONS, SPEC_SETS, cells, declared, untuned


# -- 5. one budget and selection rule per cell -----------------------------------------------------
# lr_decay: a spec that fixes a learning-rate decay fixes it for every row of a cell or for none (tuned, it is
# searched for all or none: invariant 2)
BUDGET_FIELDS = ("epochs", "patience", "train_limit", "val_fraction", "selection", "lr_decay")


def budget(cfg: ExperimentConfig) -> dict:
    # the runner selects (and stops on) the default mode's validation accuracy, or the last epoch without one
    return {**{k: getattr(cfg, k) for k in BUDGET_FIELDS[:-2]},
            "selection": "best validation accuracy" if cfg.val_fraction > 0 else "last epoch",
            "lr_decay": cfg.hparams.get("lr_decay", 1.0)}


def unequal_budget_problems(groups, exceptions=None) -> list[str]:
    """``groups``: ``[(label, configs)]``; every row of a (label, dataset, budget) cell must agree on every
    field but those ``exceptions`` (``{algorithm: {field: stated value}}``) state."""
    exceptions, problems = exceptions or {}, []
    by_cell = collections.defaultdict(list)
    for label, configs in groups:
        for cfg in configs:
            values = budget(cfg)
            for field, stated in exceptions.get(cfg.algorithm, {}).items():
                if values[field] != stated:
                    problems.append(f"{cfg.algorithm}/{cfg.dataset}: {field} {values[field]}, stated {stated}")
            by_cell[label, cfg.dataset, cfg.budget].append((cfg.algorithm, values))
    for cell, rows in by_cell.items():
        for field in BUDGET_FIELDS:
            seen = collections.defaultdict(set)
            for algorithm, values in rows:
                if field not in exceptions.get(algorithm, {}):
                    seen[values[field]].add(algorithm)
            if len(seen) > 1:
                problems.append(f"{'/'.join(cell)}: {field} " + ", ".join(f"{v} ({', '.join(sorted(a))})"
                                                                        for v, a in seen.items()))
    return problems


def runs_of(spec: dict, profile: str) -> list:
    return [(g.get("label") or g["arch"], cs) for g, cs in expand(spec, profile)]


@pytest.mark.parametrize("spec, profile", SPEC_SETS)
def test_every_row_of_a_cell_runs_under_one_budget_and_selection_rule(spec, profile):
    assert unequal_budget_problems(runs_of(untuned(spec), profile), EXCEPTIONS.get((spec, profile))) == []


@pytest.mark.parametrize("spec, profile", SPEC_SETS)
def test_every_study_of_a_cell_tunes_under_one_trial_budget(spec, profile):
    groups = collections.defaultdict(list)
    for cell in cells(spec, profile):
        groups[cell.group[0]].append(cell.base)
    assert unequal_budget_problems(groups.items()) == []  # no exception: FF's trials stop where the others' do


def test_the_budget_check_rejects_a_difference_that_is_not_stated():
    fair = untuned("fair")
    fair["profiles"]["paper"]["algorithm_overrides"] = {"mf": {"patience": 20}}
    assert unequal_budget_problems(runs_of(fair, "paper")) == [
        f"2x1000/{d}/own: patience 10 (bp, bp-ds, mf-joint), 20 (mf)" for d in ("mnist", "fmnist")]
    table3 = untuned("table3")
    assert "2x1000/mnist/own: epochs 100 (bp, dfa, fa, mf), 30 (ff)" in unequal_budget_problems(runs_of(table3, "paper"))
    table3["profiles"]["paper"]["algorithm_overrides"]["ff"]["patience"] = 5  # beside the stated epochs
    assert "2x1000/mnist/own: patience 10 (bp, dfa, fa, mf), 5 (ff)" in unequal_budget_problems(
        runs_of(table3, "paper"), EXCEPTIONS["table3", "paper"])
    assert "ff/mnist: epochs 30, stated 40" in unequal_budget_problems(runs_of(untuned("table3"), "paper"),
                                                                       {"ff": {"epochs": 40}})
    decayed = untuned("fair")
    decayed["profiles"]["paper"]["algorithm_overrides"] = {"mf": {"hparams": {"lr_decay": 0.9}}}
    assert unequal_budget_problems(runs_of(decayed, "paper")) == [
        f"2x1000/{d}/{b}: lr_decay 1.0 (bp, bp-ds, mf-joint), 0.9 (mf)" for d in ("mnist", "fmnist")
        for b in ("own", "matched")]


# -- 6. no parameter that the updates never change -----------------------------------------------------
def idle_parameters(trainer: nn.Module, epochs: int = 2) -> list[str]:
    """The trainer's parameters that one update per epoch over ``epochs`` epochs leaves as they were (MF's
    sequential schedule trains one layer an epoch). FA's and DFA's fixed feedback must be buffers."""
    before = {n: p.detach().clone() for n, p in trainer.named_parameters()}
    x = torch.rand(32, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    y = torch.arange(32) % 10
    changed = set()
    trainer.train(True)
    for epoch in range(epochs):
        trainer.start_epoch(epoch, epochs)
        torch.manual_seed(epoch)  # FF's negative labels
        trainer.update(x, y)
        changed |= {n for n, p in trainer.named_parameters() if not torch.equal(p.detach(), before[n])}
    return sorted(set(before) - changed)


def make_trainer(algorithm: str, **hparams):
    torch.manual_seed(0)
    return ALGORITHMS.get(algorithm)((1, 8, 8), 10, "mlp", {"widths": [16, 16]}, {"lr": 1e-2, **hparams})


LADDER = sorted({a for s in ("fair", "table3") for g in yaml.safe_load((SPECS_DIR / f"{s}.yaml").read_text())["groups"]
                 for a in g["algorithms"]})


@pytest.mark.parametrize("algorithm, hparams", [(a, {}) for a in LADDER] + [("mf", {"schedule": "sequential"})])
def test_every_trainer_parameter_is_changed_by_its_updates(algorithm, hparams):
    assert idle_parameters(make_trainer(algorithm, **hparams)) == []


def test_a_part_the_update_never_changes_is_found():
    bp = make_trainer("bp")
    bp.extra = nn.Linear(16, 10)  # e.g. MF's projection left on a baseline
    assert idle_parameters(bp) == ["extra.bias", "extra.weight"]


# -- 7. each mode at its own best validation epoch --------------------------------------------------
def test_each_prediction_mode_is_read_at_its_own_best_validation_epoch(tmp_path):
    from benchmarks.run.folders import load_run, mark_done
    from benchmarks.tables import accuracy as at

    spec = {"name": "t", "caption": "T", "reference": "t", "profiles": {"quick": {"seeds": [0], "epochs": 4}},
            "rows": {"MF (FF pred)": {"algorithm": "mf", "mode": "ff"}, "MF (BP pred)": {"algorithm": "mf", "mode": "bp"}},
            "groups": [{"label": "2x8", "datasets": ["digits"], "arch": "mlp", "arch_args": {"widths": [8, 8]},
                        "hparams": {"schedule": "sequential"}, "algorithms": ["mf"]}]}
    [(_, [config])] = at.expected_runs(spec, "quick")
    # (phase, val ff, test ff, val bp, test bp): ff peaks in epoch 3, bp in epoch 4; epoch 1 is the sequential
    # schedule's first phase, whose bp head is untrained: not an epoch the run could select
    table = [("layer1", 50, 51, 99, 11), ("layer2", 60, 61, 70, 71), ("layer2", 80, 81, 75, 76), ("layer2", 70, 71, 90, 91)]
    epochs = [{"epoch": i + 1, "phase": p, "val_acc_ff": vf, "test_acc_ff": tf, "val_acc_bp": vb, "test_acc_bp": tb}
              for i, (p, vf, tf, vb, tb) in enumerate(table)]
    run_dir = tmp_path / "mf_run"
    run_dir.mkdir()
    (run_dir / "config.json").write_text(json.dumps(config))
    (run_dir / "metrics.jsonl").write_text("".join(json.dumps(e) + "\n" for e in epochs))
    (run_dir / "summary.json").write_text(json.dumps({"status": "completed", "default_mode": "ff",
                                                      "selected_epoch": 3, "selected": epochs[2]}))
    mark_done(run_dir)
    run = load_run(run_dir)
    rows = {r["row"]: r["mean"] for r in at.table_rows(spec, "quick", [run], {}, [])}
    assert rows == {"MF (FF pred)": 81, "MF (BP pred)": 91}
    # the counter-example: reading every mode at the run's selected epoch (the ff mode's) gives bp 76
    assert run["summary"]["selected"]["test_acc_bp"] == 76 != rows["MF (BP pred)"]


# -- 8. the sweep launches what it expands ----------------------------------------------------------
def launch_problems(expanded, launched) -> list[str]:
    want = collections.Counter(run_key(c.resolve().to_dict()) for c in expanded)
    got = collections.Counter(run_key(c.resolve().to_dict()) for c in launched)
    return ([f"expanded {n} times: {k}" for k, n in want.items() if n > 1]
            + [f"launched {n} times: {k}" for k, n in got.items() if n > 1]
            + [f"dropped: {k}" for k in want.keys() - got.keys()] + [f"not expanded: {k}" for k in got.keys() - want.keys()])


def sweep(spec: str, tmp_path, monkeypatch, drop: int = 0):
    """``bpfree sweep <spec> --profile paper --run`` (no params file) through a launcher that records what
    it would run (and drops its last ``drop`` configs); returns (expanded, launched)."""
    from benchmarks.sweep.launchers import LAUNCHERS, outcome
    from bpfree.sweep import main

    launched = []

    def record(configs, jobs=1, force=False):
        for cfg in configs[:len(configs) - drop]:
            launched.append(cfg)
            yield outcome(cfg, "completed")

    monkeypatch.setenv("BPFREE_NO_DOWNLOAD", "1")
    monkeypatch.setitem(LAUNCHERS._entries, "record", record)
    path = tmp_path / f"{spec}.yaml"
    path.write_text(yaml.safe_dump(untuned(spec)))
    assert main([str(path), "--profile", "paper", "--run", "--launcher", "record", "--results", str(tmp_path)]) == 0
    expanded = [c for _, cs in expand(load_spec(path), "paper", results_dir=str(tmp_path / "runs")) for c in cs]
    return expanded, launched


@pytest.mark.parametrize("spec", ["fair", "table3"])
def test_the_sweep_launches_exactly_the_configs_it_expands(spec, tmp_path, monkeypatch, capsys):
    expanded, launched = sweep(spec, tmp_path, monkeypatch)
    assert len(expanded) == {"fair": 160, "table3": 60}[spec] and launch_problems(expanded, launched) == []


def test_a_launcher_that_drops_a_config_is_caught(tmp_path, monkeypatch, capsys):
    expanded, launched = sweep("fair", tmp_path, monkeypatch, drop=1)
    problems = launch_problems(expanded, launched)
    assert len(problems) == 1 and problems[0].startswith("dropped: ")
    assert launch_problems(expanded, launched + launched[:1])[0].startswith("launched 2 times: ")


@pytest.mark.parametrize("spec_name", ["table1", "table2", "table3", "fair", "sff"])
def test_no_searched_knob_is_one_a_spec_override_would_discard(spec_name):
    """A spec's algorithm_overrides are merged after the tuned entry: a knob they set and the algorithm's
    space searches would be tuned and then silently replaced in every final run."""
    pytest.importorskip("optuna")
    from benchmarks.tuning.spec import spec_cells

    spec = load_spec(spec_name)
    for profile in spec["profiles"]:
        for _, base in spec_cells(spec, profile):
            fixed = set((spec.get("algorithm_overrides") or {}).get(base.algorithm, {}).get("hparams", {}))
            assert not declared(base.algorithm, base) & fixed, (spec_name, profile, base.algorithm, fixed)


def test_a_space_that_searches_a_fixed_knob_is_caught():
    """The counter-example: MF's space on a conv net searches its readout when the base leaves it open."""
    base = ExperimentConfig(algorithm="mf", dataset="digits", arch="cnn", arch_args={"channels": [4, 8]})
    assert "readout" in declared("mf", base)
    fixed = dataclasses.replace(base, hparams={"readout": "flatten"})
    assert "readout" not in declared("mf", fixed)
