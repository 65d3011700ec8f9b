"""The accuracy tables (Tables 1, 2, 3 and 6) from run folders, and the spec files behind them.

The table tests build a small table from the fixture in tests/fixtures/tables (its spec, its published
values and its runs; regenerate the runs with tests/fixtures/tables/make_fixture.py) and compare the
markdown and CSV to the exact text. The spec tests expand every spec in benchmarks/specs for every
profile, and check every row and network of the table specs against the published reference, so
that a typo fails here rather than as an empty table.
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path

import pytest

from benchmarks.tables import accuracy as at
from benchmarks.reference import PAPER_DATASET, load_reference
from benchmarks.run.folders import iter_runs, load_run
from benchmarks.sweep.expand import SPECS_DIR, expand, latest_statuses, load_spec, run_key, status_file

FIXTURE = Path(__file__).parent / "fixtures" / "tables"
RESULTS = FIXTURE / "results"
SPEC_FILES = sorted(SPECS_DIR.glob("*.yaml"))

EXPECTED_MARKDOWN = """\
**Fixture table: test accuracy (%) of BP and MF, 2x32 MLP**

QUICK profile: training subsets: 600 (digits, breast_cancer), 1000 (cifar100), 10 epochs, seeds 0, 1, NOT the paper's protocol

| network | dataset       | row          |    published |         ours | n |   diff |      by test | epochs | s/epoch | note                                                                           |
|---------|---------------|--------------|-------------:|-------------:|--:|-------:|-------------:|-------:|--------:|--------------------------------------------------------------------------------|
| 2x32    | digits        | BP           | 96.50 ± 0.30 | 85.97 ± 2.55 | 2 | -10.53 | 85.97 ± 2.55 |   10.0 | 0.00834 |                                                                                |
| 2x32    | digits        | MF (FF pred) | 97.00 ± 0.20 |        83.89 | 1 | -13.11 |        83.89 |   10.0 |   0.012 | 1 of 2 seeds; diverged (seed 1, epoch 2)                                       |
| 2x32    | digits        | MF layer 1   |            — |        85.83 | 1 |      — |        85.83 |   10.0 |   0.012 | not reported for this network; 1 of 2 seeds; diverged (seed 1, epoch 2)        |
| 2x32    | breast_cancer | BP           | 97.37 ± 0.00 |        93.86 | 1 |  -3.51 |        95.61 |   10.0 | 0.00648 | 1 of 2 seeds; failed (seed 1): RuntimeError: simulated failure for the fixture |
| 2x32    | breast_cancer | MF (FF pred) | 97.37 ± 0.00 |        92.98 | 1 |  -4.39 |        92.98 |   10.0 | 0.00822 | 1 of 2 seeds; not run yet (seed 1)                                             |
| 2x32    | breast_cancer | MF layer 1   |            — |        92.98 | 1 |      — |        92.98 |   10.0 | 0.00822 | not in the paper; 1 of 2 seeds; not run yet (seed 1)                           |
| 2x32    | cifar100      | BP           | 42.10 ± 0.03 |            — | 0 |      — |            — |      — |       — | dataset unavailable here                                                       |

Test accuracy (%) at the epoch with the best validation accuracy (patience: epochs without a better one before a run stops); ours: mean ± std (ddof 1) over the n seeds that completed; diff = ours − published, in points; by test: the same seeds with each one's epoch chosen by its test accuracy instead, as a protocol that selects on the test set reports them (optimistic; it sizes that choice's effect and decides nothing). Cost, kept apart from accuracy: epochs, the mean number of epochs the seeds trained (early stopping, or a matched budget's fixed count); s/epoch, their mean training time per epoch (training steps only, no evaluation), on the machine each run was made on, often beside other work: compare it only within one table's rows. Published: Gong, Li, Abdulla 2025 (their learning rate and batch size were tuned on the test set).
"""

EXPECTED_CSV = """\
table,profile,network,paper_arch,dataset,paper_dataset,row,algorithm,mode,published_mean,published_std,mean,std,n,seeds,difference,note,by_test_mean,by_test_std,values,epochs_mean,epoch_time_mean_s
tables_fixture,quick,2x32,mlp 2x32 relu,digits,digits,BP,bp,output,96.5,0.3,85.9722,2.5534,2,2,-10.5278,,85.9722,2.5534,0:87.7778;1:84.1667,10.0,0.0083
tables_fixture,quick,2x32,mlp 2x32 relu,digits,digits,MF (FF pred),mf,ff,97.0,0.2,83.8889,,1,2,-13.1111,"1 of 2 seeds; diverged (seed 1, epoch 2)",83.8889,,0:83.8889,10.0,0.012
tables_fixture,quick,2x32,mlp 2x32 relu,digits,digits,MF layer 1,mf,layer1,,,85.8333,,1,2,,"not reported for this network; 1 of 2 seeds; diverged (seed 1, epoch 2)",85.8333,,0:85.8333,10.0,0.012
tables_fixture,quick,2x32,mlp 2x32 relu,breast_cancer,breast-cancer,BP,bp,output,97.37,0.0,93.8596,,1,2,-3.5104,1 of 2 seeds; failed (seed 1): RuntimeError: simulated failure for the fixture,95.614,,0:93.8596,10.0,0.0065
tables_fixture,quick,2x32,mlp 2x32 relu,breast_cancer,breast-cancer,MF (FF pred),mf,ff,97.37,0.0,92.9825,,1,2,-4.3875,1 of 2 seeds; not run yet (seed 1),92.9825,,0:92.9825,10.0,0.0082
tables_fixture,quick,2x32,mlp 2x32 relu,breast_cancer,breast-cancer,MF layer 1,mf,layer1,,,92.9825,,1,2,,not in the paper; 1 of 2 seeds; not run yet (seed 1),92.9825,,0:92.9825,10.0,0.0082
tables_fixture,quick,2x32,mlp 2x32 relu,cifar100,cifar100,BP,bp,output,42.1,0.03,,,0,2,,dataset unavailable here,,,,,
"""


@pytest.fixture(scope="module")
def fixture_spec():
    return load_spec(FIXTURE / "spec.yaml")


@pytest.fixture(scope="module")
def fixture_runs():
    return [load_run(d) for d in iter_runs(RESULTS / "runs", finished_only=False)]


@pytest.fixture(scope="module")
def fixture_table(fixture_spec, fixture_runs):
    statuses = latest_statuses(status_file(RESULTS, fixture_spec["name"], "quick"))
    return at.build_table(fixture_spec, "quick", fixture_runs, statuses,
                          reference=load_reference("fixture", FIXTURE / "reference.csv"))


# -- the fixture table ---------------------------------------------------------------------------

def test_fixture_table_markdown_is_exact(fixture_table):
    assert fixture_table.markdown == EXPECTED_MARKDOWN


def test_fixture_table_csv_is_exact(fixture_table):
    assert fixture_table.csv == EXPECTED_CSV


def test_a_cell_is_the_mean_of_each_seeds_test_accuracy_at_its_best_validation_epoch(fixture_table):
    values = []
    for run_dir in sorted((RESULTS / "runs").glob("bp_digits_*")):
        summary = json.loads((run_dir / "summary.json").read_text())
        epochs = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
        best = max(epochs, key=lambda e: e["val_acc_output"])  # the first epoch with the best validation
        assert summary["selected"]["epoch"] == best["epoch"]
        values.append(best["test_acc_output"])
    cell = next(r for r in fixture_table.rows if (r["dataset"], r["row"]) == ("digits", "BP"))
    assert cell["n"] == 2 and cell["mean"] == pytest.approx(statistics.fmean(values))
    assert cell["std"] == pytest.approx(statistics.stdev(values))
    assert cell["difference"] == pytest.approx(cell["mean"] - 96.5)
    # the CSV's values column: the same seeds' values, by seed, for pairing two rows seed by seed
    from benchmarks.tables.accuracy_render import parse_seed_values
    assert parse_seed_values(cell["values"]) == {0: pytest.approx(values[0], abs=1e-4), 1: pytest.approx(values[1], abs=1e-4)}


def test_the_values_column_lists_only_the_seeds_that_completed():
    spec = small_spec()
    configs = at.expected_runs(spec, "quick")[0][1]
    runs = [completed(configs[0], output=90.123456), completed(configs[2], output=92.0)]
    [row] = at.table_rows(spec, "quick", runs, {}, [])
    assert row["values"] == "0:90.1235;2:92.0" and row["n"] == 2
    assert at.table_rows(spec, "quick", [], {}, [])[0]["values"] == ""


def test_fixture_table_latex_is_a_booktabs_tabular(fixture_table):
    tex = fixture_table.latex
    lines = tex.splitlines()
    assert lines[0] == "% Fixture table: test accuracy (\\%) of BP and MF, 2x32 MLP"
    assert lines[1].startswith("% QUICK profile: training subsets: 600 (digits, breast\\_cancer)")
    assert lines[3] == r"\begin{tabular}{lllrrrrp{5.5cm}}" and lines[-1] == r"\end{tabular}"
    assert [l for l in lines if l in (r"\toprule", r"\midrule", r"\bottomrule")] == [r"\toprule", r"\midrule",
                                                                                   r"\bottomrule"]
    assert r"2x32 & digits & BP & $96.50 \pm 0.30$ & $85.97 \pm 2.55$ & 2 & $-10.53$ &  \\" in lines
    assert r"2x32 & cifar100 & BP & $42.10 \pm 0.03$ & --- & 0 & --- & dataset unavailable here \\" in lines
    assert sum(l.endswith(r"\\") for l in lines) == 1 + len(fixture_table.rows)


def test_write_table_writes_markdown_csv_and_latex(fixture_table, tmp_path):
    paths = at.write_table(fixture_table, tmp_path / "tables", "tablex")
    assert [p.name for p in paths] == ["tablex.md", "tablex.csv", "tablex.tex"]
    assert paths[0].read_text() == EXPECTED_MARKDOWN and paths[1].read_text() == EXPECTED_CSV


def test_the_default_profile_is_paper_once_a_paper_run_finished(fixture_spec, fixture_runs):
    assert at.default_profile(fixture_spec, fixture_runs) == "quick"
    [(_, configs)] = [g for g in at.expected_runs(fixture_spec, "paper") if g[0]["datasets"] == ["digits", "breast_cancer"]]
    paper_run = {"config": dict(configs[0], device="cuda", results_dir="elsewhere"), "summary": {"status": "completed"}}
    assert at.default_profile(fixture_spec, [*fixture_runs, paper_run]) == "paper"
    unfinished = {"config": configs[0], "summary": {"status": "failed"}}
    assert at.default_profile(fixture_spec, [*fixture_runs, unfinished]) == "quick"


# -- cells from hand-made runs -------------------------------------------------------------------

def small_spec(**group) -> dict:
    return {"name": "t", "caption": "Table T", "reference": "t",
            "profiles": {"quick": {"seeds": [0, 1, 2], "epochs": 1, "train_limit": 50}},
            "rows": {"BP": {"algorithm": "bp", "mode": "output"}, "MF (BP pred)": {"algorithm": "mf", "mode": "bp"}},
            "groups": [{"label": "2x8", "paper_arch": "mlp 2x8 relu", "datasets": ["digits"], "arch": "mlp",
                        "arch_args": {"widths": [8, 8]}, "algorithms": ["bp"], **group}]}


def completed(config: dict, **accuracies) -> dict:
    return {"config": config, "summary": {"status": "completed", "selected": {f"test_acc_{k}": v
                                                                             for k, v in accuracies.items()}}}


def cell_notes(spec, runs, statuses, reference=()) -> list[str]:
    return [r["note"] for r in at.table_rows(spec, "quick", runs, statuses, list(reference))]


def test_a_failure_of_every_seed_is_named_once_and_other_reasons_per_seed():
    spec = small_spec()
    configs = at.expected_runs(spec, "quick")[0][1]
    keys = [run_key(c) for c in configs]
    failed = {k: {"key": k, "status": "failed", "error": "ValueError: bad\nsecond line"} for k in keys}
    assert cell_notes(spec, [], failed) == ["failed: ValueError: bad"]
    statuses = {keys[0]: {"status": "completed"}, keys[1]: {"status": "diverged"}}
    unfinished = {"config": configs[2], "summary": {}}
    assert cell_notes(spec, [unfinished], statuses) == [
        "run folder missing (seed 0); diverged (seed 1); unfinished run folder (seed 2)"]
    long_error = {keys[0]: {"status": "failed", "error": "x" * 200}}
    note = cell_notes(spec, [completed(configs[1], output=90.0), completed(configs[2], output=92.0)], long_error)[0]
    assert note == "2 of 3 seeds; failed (seed 0): " + "x" * (at.ERROR_CHARS - 1) + "…"


def test_a_finished_run_folder_outweighs_an_older_status_line():
    spec = small_spec()
    configs = at.expected_runs(spec, "quick")[0][1]
    runs = [completed(dict(c, device="cuda:3", data_dirs=["x"]), output=90.0 + i) for i, c in enumerate(configs)]
    statuses = {run_key(c): {"status": "failed", "error": "an earlier attempt"} for c in configs}
    [row] = at.table_rows(spec, "quick", runs, statuses, [])
    assert (row["mean"], row["std"], row["n"], row["note"]) == (91.0, 1.0, 3, "")


def test_runs_of_other_settings_do_not_count():
    spec = small_spec()
    configs = at.expected_runs(spec, "quick")[0][1]
    other = [completed(dict(c, epochs=2), output=99.0) for c in configs]  # another profile's runs
    [row] = at.table_rows(spec, "quick", other, {}, [])
    assert (row["n"], row["note"]) == (0, "not run yet")


def test_cifar10_jpeg_is_compared_with_the_papers_cifar10_and_says_so():
    spec = small_spec(datasets=["cifar10-jpeg"], algorithms=["bp", "mf"])
    reference = [{"table": "t", "algorithm": "BP", "architecture": "mlp 2x8 relu", "dataset": "cifar10",
                  "metric": "test_accuracy", "mean": "50.0", "std": "1.0", "unit": "%", "note": ""}]
    configs = at.expected_runs(spec, "quick")[0][1]
    runs = [completed(c, output=51.0, ff=52.0, bp=53.0) for c in configs]
    rows = at.table_rows(spec, "quick", runs, {}, reference)
    assert [(r["row"], r["dataset"], r["paper_dataset"], r["mean"], r["difference"]) for r in rows] == [
        ("BP", "cifar10-jpeg", "cifar10", 51.0, 1.0)]  # the paper has no MF (BP pred) row for this network
    assert rows[0]["note"] == "lossy JPEG copy of CIFAR-10"
    table = at.AccuracyTable("t", "quick", "Table T", "QUICK profile: x", rows)
    assert "compared with the paper's CIFAR-10 values" in table.markdown


def test_a_group_that_cannot_be_built_here_keeps_the_others():
    spec = small_spec()
    spec["groups"].append({**spec["groups"][0], "label": "bad", "arch": "no-such-arch"})
    table = at.build_table(spec, "quick", [], {}, reference=[])
    assert [r["network"] for r in table.rows] == ["2x8", "bad"]
    assert table.rows[0]["note"] == "not run yet"
    assert table.rows[1]["note"].startswith("cannot run here: unknown architecture 'no-such-arch'")
    assert table.profile_line == "QUICK profile: training subset of 50, 1 epoch, seeds 0, 1, 2, NOT the paper's protocol"


def test_a_missing_prediction_mode_is_said():
    spec = small_spec(algorithms=["mf"])
    configs = at.expected_runs(spec, "quick")[0][1]
    runs = [completed(c, ff=50.0) for c in configs]
    assert cell_notes(spec, runs, {}) == ["no bp accuracy in the run (seed 0); no bp accuracy in the run (seed 1); "
                                          "no bp accuracy in the run (seed 2)"]


def test_paper_profile_line_and_rows_shown_per_network():
    spec = load_spec("table1")
    reference = load_reference("1")
    shown = {g["label"]: [r["paper"] for r in at.rows_for_group(spec, g, reference)] for g in spec["groups"]}
    assert shown == {"lc-mlp 4,8": ["BP", "MF (FF pred)", "MF layer 1", "MF layer 2"],
                     "lc-mlp 4,8,16": ["BP", "MF (FF pred)", "MF layer 1", "MF layer 2", "MF layer 3"]}
    spec["profiles"]["paper"].pop("params_file")  # the runs as they expand before their cells are tuned
    line = at.describe_profile(spec, "paper", [c for _, cs in at.expected_runs(spec, "paper") for c in cs])
    assert line.startswith("PAPER profile: full training set, at most 100 epochs, patience 10, seeds 0, 1, 2")


def test_profile_line_names_per_algorithm_caps_and_dataset_settings():
    table3 = load_spec("table3")
    line = at.describe_profile(table3, "paper", [c for _, cs in at.expected_runs(table3, "paper") for c in cs])
    assert "at most 100 epochs, patience 10 (bp, fa, dfa, mf), at most 30 epochs, patience 10 (ff)" in line
    table6 = load_spec("table6")
    line = at.describe_profile(table6, "paper", [c for _, cs in at.expected_runs(table6, "paper") for c in cs])
    assert "breast_cancer with stratify=false, test_split_seed=42" in line


def test_a_tuned_table_says_which_cells_were_tuned_and_the_trials_budget(tmp_path):
    from benchmarks.sweep.params_file import describe_tuning

    params = tmp_path / "params.json"
    params.write_text(json.dumps({"bp/digits/1x8": {"batch_size": 32}, "mf/digits/1x8": {"batch_size": 64}}))
    # a failed trial (its worker died; it was queued again) and one still running count towards no budget
    for alg, trials in (("bp", {"complete": 10, "pruned": 2, "fail": 1}), ("mf", {"complete": 5, "pruned": 8, "running": 1})):
        (tmp_path / f"{alg}_digits_1x8_t_paper.best.json").write_text(json.dumps(
            {"key": f"{alg}/digits/1x8", "trials": trials, "budget": {"epochs": 8, "patience": 3, "train_limit": 500}}))
    (tmp_path / "ff_digits_1x8_other_paper.best.json").write_text(json.dumps({"key": "ff/digits/1x8"}))
    note = describe_tuning(params, "_t_paper", 6)
    assert note.startswith("Tuned: 2 of 6 cells use the best of 12 (13 for mf/digits/1x8) finished Optuna trials "
                           "(complete + pruned) on the validation split")
    assert "each trial at most 8 epochs, patience 3, on 500 training images" in note
    assert describe_tuning(tmp_path / "missing.json", "_t_paper", 6) == ""


# -- the spec files ------------------------------------------------------------------------------

@pytest.mark.parametrize("path", SPEC_FILES, ids=[p.stem for p in SPEC_FILES])
def test_every_spec_loads_and_expands_for_every_profile(path, tmp_path):
    spec = load_spec(path)
    assert spec["name"] == path.stem
    untuned = tmp_path / "params.json"  # a spec that names tuned settings expands before any tuning, too
    untuned.write_text("{}")
    for profile in spec["profiles"]:
        named = spec["profiles"][profile].get("params_file") or spec.get("params_file")
        groups = expand(spec, profile, params_file=untuned if named else None)
        assert len(groups) == len(spec["groups"])
        for _, configs in groups:
            assert configs
            for cfg in configs:
                resolved = cfg.resolve()  # every arch_args and hparams key is a real one
                assert resolved.tag == spec["name"]
                if cfg.algorithm == "ff" and "rows" in spec:  # FF keeps its own learning rate in the tables
                    from algorithms.ff import FFHParams
                    assert resolved.hparams["lr"] == FFHParams().lr


# the accuracy tables of a paper (the fair spec has rows too, but no published table: benchmarks/report/fair.py)
TABLE_SPECS = [p for p in SPEC_FILES if "rows" in load_spec(p) and "reference" in load_spec(p)]


def test_there_are_accuracy_table_specs():
    assert {p.stem for p in TABLE_SPECS} >= {"table1", "table2", "table3", "table6"}


@pytest.mark.parametrize("path", TABLE_SPECS, ids=[p.stem for p in TABLE_SPECS])
def test_table_spec_rows_and_networks_are_the_papers(path):
    spec = load_spec(path)
    reference = [r for r in load_reference(str(spec["reference"])) if r["metric"] == "test_accuracy"]
    assert reference, f"no published accuracies for table {spec['reference']!r}"
    names = {r["algorithm"] for r in reference}
    for row in at.spec_rows(spec):
        assert row["paper"] in names, f"row {row['paper']!r} is not a row of the paper's table {spec['reference']}"
    cells = set()
    for group in spec["groups"]:
        archs = {r["architecture"] for r in reference}
        assert group.get("paper_arch") in archs, f"paper_arch {group.get('paper_arch')!r} not in {sorted(archs)}"
        datasets = {r["dataset"] for r in reference if r["architecture"] == group["paper_arch"]}
        for dataset in group["datasets"]:
            paper_dataset = PAPER_DATASET.get(dataset, dataset)
            assert paper_dataset in datasets, f"{dataset} ({paper_dataset}) not in the paper for {group['paper_arch']}"
            cells |= {(r["paper"], group["paper_arch"], paper_dataset)
                      for r in at.rows_for_group(spec, group, reference)}
    # every published number of the table has its cell
    assert {(r["algorithm"], r["architecture"], r["dataset"]) for r in reference} <= cells


# -- bpfree plots ----------------------------------------------------------------------------

def test_plots_writes_an_accuracy_table_and_prints_it(tmp_path, capsys):
    from bpfree.plots import main

    assert main(["--results", str(RESULTS), "--out", str(tmp_path), "--only", "table3"]) == 0
    out = capsys.readouterr().out
    for ext in ("md", "csv", "tex"):
        assert (tmp_path / "tables" / f"table3.{ext}").exists()
    md = (tmp_path / "tables" / "table3.md").read_text()
    assert md in out and "QUICK profile" in md  # no table3 runs at all: the quick profile, every cell empty
    assert "| 3x2000  | cifar100     | FF           |            — |    — | 0 |    — |       — |      — |       — | FF fails to converge" in md


def test_plots_profile_option_selects_that_profiles_runs(tmp_path, capsys):
    from bpfree.plots import Picker, main

    spec = load_spec("fig4")
    [(_, configs)] = expand(spec, "quick")
    quick = [{"config": c.resolve().to_dict(), "summary": {"status": "completed"}} for c in configs]
    other = [{"config": dict(r["config"], epochs=99), "summary": {"status": "completed"}} for r in quick]
    chosen, what = Picker(quick + other, "quick")("fig4")
    assert chosen == quick and what.startswith("quick profile, training subset of 5000, 3 epochs")
    chosen, _ = Picker(quick + other, None)("fig4")
    assert chosen == other  # without --profile: the most complete runs (more epochs)

    measure = Path(__file__).parent / "fixtures" / "measure" / "results"
    assert main(["--results", str(measure), "--out", str(tmp_path), "--only", "fig4", "--profile", "quick"]) == 0
    assert "fig4: no runs of profile quick tagged fig4 (make reproduce-fig4 PROFILE=quick)" in capsys.readouterr().out
    assert main(["--results", str(measure), "--out", str(tmp_path), "--only", "fig4", "--profile", "nope"]) == 2
    assert "unknown profile 'nope'" in capsys.readouterr().err


def test_by_test_picks_each_runs_best_test_epoch_and_needs_every_epoch():
    run = {"epochs": [{"test_acc_ff": 91.0, "val_acc_ff": 90.0}, {"test_acc_ff": 93.5, "val_acc_ff": 89.0},
                      {"test_acc_ff": 92.0, "val_acc_ff": 89.5}]}
    assert at.best_test_accuracy(run, "ff") == 93.5  # epoch 2, which validation would not have picked
    assert at.best_test_accuracy(run, "bp") is None  # no such mode
    run["epochs"][1].pop("test_acc_ff")
    assert at.best_test_accuracy(run, "ff") is None  # an epoch without it: choosing on test is not possible
    assert at.best_test_accuracy(None, "ff") is None


def test_run_cost_keeps_epochs_and_time_per_epoch_apart_and_says_none_when_unmeasured():
    def run(epochs, seconds):
        measurements = {} if seconds is None else {"epoch_time_mean_s": seconds}
        return {"summary": {"epochs_run": epochs, "measurements": measurements}}

    assert at.run_cost([run(10, 2.0), run(30, 4.0)]) == {"epochs_mean": 20.0, "epoch_time_mean_s": 3.0}
    # one seed without a clock: no time for the cell rather than the mean of the others
    assert at.run_cost([run(10, 2.0), run(30, None)]) == {"epochs_mean": 20.0, "epoch_time_mean_s": None}
    assert at.run_cost([]) == {"epochs_mean": None, "epoch_time_mean_s": None}
