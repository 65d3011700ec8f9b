"""The fair verdict (issue 25): two budget protocols as part of a run's identity and of the tables, the
fair spec's equal budgets, and the ladder's paired verdicts with their forest plot, on tables made by hand."""

import dataclasses

import pytest

from algorithms import ConfigError
from benchmarks.report import rules
from benchmarks.report.fair import fair_claims, forest_figure
from benchmarks.run.config import ExperimentConfig, run_key
from benchmarks.sweep.expand import expand, load_spec
from benchmarks.tables.accuracy import budgets_of
from benchmarks.tables.accuracy_render import COLUMNS, seed_values, to_csv


# -- the budget protocols -------------------------------------------------------------------------

def test_budget_own_keeps_the_ids_runs_had_before_the_field_and_matched_is_another_run():
    own = ExperimentConfig(epochs=3).resolve()
    matched = dataclasses.replace(own, budget="matched")
    assert "budget" not in own.identity() and matched.identity()["budget"] == "matched"
    assert own.run_id() != matched.run_id()
    old = {k: v for k, v in own.to_dict().items() if k != "budget"}  # a config written before the field
    assert run_key(old) == run_key(own.to_dict()) != run_key(matched.to_dict())


@pytest.mark.parametrize("values, fragment", [({"budget": "matched", "patience": 3}, "patience must be null"),
                                               ({"budget": "equal"}, "unknown budget")])
def test_an_impossible_budget_is_refused(values, fragment):
    with pytest.raises(ConfigError, match=fragment):
        ExperimentConfig(**values).resolve()


def test_the_fair_spec_gives_every_row_of_a_cell_the_same_budget():
    spec = load_spec("fair")
    spec["profiles"]["paper"].pop("params_file")  # the untuned spec: what every row gets before tuning
    for profile in spec["profiles"]:
        assert budgets_of(spec, profile) == ["own", "matched"]
        [(_, configs)] = expand(spec, profile)
        for dataset in {c.dataset for c in configs}:
            for budget in ("own", "matched"):
                cell = [c for c in configs if c.dataset == dataset and c.budget == budget]
                assert {c.algorithm for c in cell} == {"bp", "bp-ds", "mf-joint", "mf"}
                # one epoch cap, one patience, one selection split, one set of seeds for every row
                assert len({(c.epochs, c.patience, c.val_fraction, c.train_limit) for c in cell}) == 1
                assert {c.seed for c in cell if c.algorithm == "bp"} == {c.seed for c in cell if c.algorithm == "mf"}
                if budget == "matched":
                    assert all(c.patience is None for c in cell)


def test_matched_epochs_are_set_per_dataset_and_override_an_algorithms_own_cap():
    spec = load_spec("fair")
    spec["algorithm_overrides"] = {"mf": {"epochs": 99}}  # an algorithm's own cap must not survive `matched`
    spec["profiles"]["paper"].pop("params_file")
    [(_, configs)] = expand(spec, "paper")
    matched = {(c.dataset, c.algorithm): c.epochs for c in configs if c.budget == "matched"}
    assert {e for (d, _), e in matched.items() if d == "mnist"} == {27}
    assert {e for (d, _), e in matched.items() if d == "fmnist"} == {30}
    assert {c.epochs for c in configs if c.budget == "own" and c.algorithm == "mf"} == {99}


def test_unknown_budget_names_in_a_spec_are_refused():
    spec = load_spec("fair")
    spec["profiles"]["quick"]["budgets"] = {"own": {}, "same": {}}
    with pytest.raises(ConfigError, match="budgets must map"):
        expand(spec, "quick")


# -- the paired verdicts ---------------------------------------------------------------------------

def _row(row, dataset, budget_values):
    values = dict(budget_values)
    mean = sum(values.values()) / len(values)
    out = {k: "" for k in COLUMNS}
    out.update(table="fair", profile="paper", network="2x1000", dataset=dataset, row=row, mean=mean,
               n=len(values), values=seed_values(sorted(values.items())))
    return out


def write_tables(tmp_path, per_budget):
    tables = tmp_path / "tables"
    tables.mkdir()
    for budget, rows in per_budget.items():
        (tables / f"fair_{budget}.csv").write_text(to_csv(rows))
    return tables


def test_the_ladder_is_judged_seed_by_seed_and_drawn(tmp_path):
    bp = {s: 98.0 + 0.1 * (s % 3) for s in range(10)}
    rows = [_row("BP", "mnist", bp),
            _row("BP-DS", "mnist", {s: v + 1.0 + 0.01 * s for s, v in bp.items()}),  # reliably ahead
            _row("MF-joint (FF pred)", "mnist", {s: v - 1.0 - 0.01 * s for s, v in bp.items()}),  # behind
            _row("MF (FF pred)", "mnist", {s: v + (0.02 if s % 2 else -0.02) for s, v in bp.items()}),  # level
            _row("MF (BP pred)", "mnist", {0: 97.0, 1: 99.0})]  # two seeds only
    tables = write_tables(tmp_path, {"own": rows, "matched": rows[:2]})
    claims = fair_claims(tables)
    rules.judge_paired(claims)
    got = {(c.forest["budget"], c.forest["row"]): (c.paired.verdict, c.verdict) for c in claims}
    assert got[("own", "BP-DS")] == ("better", "confirmed")
    assert got[("own", "MF-joint (FF pred)")] == ("worse", "not confirmed")
    assert got[("own", "MF (FF pred)")] == ("equivalent", "confirmed")
    assert got[("own", "MF (BP pred)")] == ("inconclusive (n too small)", "inconclusive")
    assert got[("matched", "BP-DS")][0] == "better"
    # the MF rows carry the paper's v1 difference (98.74 - 98.69) and canonical v2's matched one
    mf = next(c for c in claims if c.forest["row"] == "MF (FF pred)" and c.forest["budget"] == "own")
    assert mf.forest["v1"] == pytest.approx(0.05) and mf.forest["v2"] is None
    bp_ds = next(c for c in claims if c.forest["row"] == "BP-DS")
    assert bp_ds.forest["v1"] is None
    fig = forest_figure(claims)
    assert len(fig.axes[0].get_yticklabels()) == len(claims)  # one line per cell x budget x rung


def test_a_level_pair_that_is_not_tight_is_not_called_equivalent(tmp_path):
    """The counter-example the old "within one standard error" rule let through: noisy and level."""
    bp = {s: 90.0 + (1.5 if s % 2 else -1.5) for s in range(4)}
    rows = [_row("BP", "fmnist", bp), _row("MF (FF pred)", "fmnist", {s: 90.0 for s in range(4)})]
    claims = fair_claims(write_tables(tmp_path, {"own": rows}))
    rules.judge_paired(claims)
    [c] = claims
    assert c.paired.verdict == "inconclusive" and c.verdict == "inconclusive"


# -- provenance: a run from a modified tree keeps its diff -----------------------------------------

def test_a_run_from_a_modified_tree_keeps_its_diff(tmp_path, monkeypatch):
    from benchmarks.run import environment
    from benchmarks.run.runner import run_experiment

    monkeypatch.setattr(environment, "source_diff", lambda: "diff --git a/x b/x\n+changed\n")
    result = run_experiment(ExperimentConfig(epochs=1, arch_args={"widths": [8]}, quiet=True,
                                             results_dir=str(tmp_path / "runs")))
    env = __import__("json").loads((result.run_dir / "environment.json").read_text())
    diff = tmp_path / env["git_diff_file"]
    assert env["git_diff_file"].startswith("source_diffs/") and diff.read_text() == "diff --git a/x b/x\n+changed\n\n"
    monkeypatch.setattr(environment, "source_diff", lambda: "")  # a clean tree: nothing kept
    assert environment.record_source(tmp_path / "source_diffs") == {}


def test_every_study_draws_its_own_settings():
    from benchmarks.tuning.study import sampler_seed

    assert sampler_seed("bp_mnist", 0, 0, 0) != sampler_seed("mf_mnist", 0, 0, 0)  # one shared seed no more
    assert sampler_seed("bp_mnist", 0, 0, 0) != sampler_seed("bp_mnist", 0, 1, 0) != sampler_seed("bp_mnist", 0, 0, 5)
