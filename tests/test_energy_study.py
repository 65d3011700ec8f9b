"""The energy study (Spyra 2025): its table from a fixture of run folders, the published numbers,
the spec, and tuning a whole spec with one budget (benchmarks.tuning.tune_spec, sweep.py --tune).

The fixture (tests/fixtures/energy_study/, written by make_fixture.py) holds fake runs with figures
chosen so that the expected table can be checked by hand:

* 2x1000 mnist, two seeds each: BP acc 97.5/97.7, time 10/12 s, energy 300/340 J (CodeCarbon
  estimates), memory 20 MB; MF acc 97.8/97.6, time 8/9 s, energy 250/274 J, memory 12 MB.
  MF - BP: acc 97.70 - 97.60 = +0.10 points; time 8.5 vs 11.0 s = -22.7 %; energy 262 vs 320 J =
  -18.1 %; memory 12 vs 20 MB = -40.0 %. The study: +0.09, -12.1 %, -13.3 %.
* fmnist: not on the machine (sweep status "unavailable"); the study's numbers still show.
* cafo-cnn mnist: BP acc 98.9/99.1, time 60/64 s; CaFo-Rand seed 0 acc 98.0, time 30 s (-51.6 %),
  energy not measured here (no difference computed), seed 1 diverged.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import yaml

# the table reads the tuning studies and the spec is tuned through Optuna: without it, nothing here runs
optuna = pytest.importorskip("optuna", reason="optuna is not installed (optional dependency 'tune')")

from algorithms import ALGORITHMS  # noqa: E402
from benchmarks.tables.energy_study import energy_of, energy_study_table, rows_to_csv, tuning_summary, write_energy_study  # noqa: E402
from benchmarks.reference import load_spyra2025  # noqa: E402
from benchmarks.run.folders import iter_runs, load_run  # noqa: E402
from benchmarks.sweep.expand import expand, latest_statuses, load_spec, status_file  # noqa: E402
from benchmarks.tuning import spec_cells, tune_spec, untuned_spec  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
FIXTURE = ROOT / "tests" / "fixtures" / "energy_study"
optuna.logging.set_verbosity(optuna.logging.WARNING)

EXPECTED_MD = "\n".join([
    ("**Energy study (Spyra 2025), QUICK profile (training subset of 3000, up to 3 epochs, patience 2, 2 seeds, "
    "3 Optuna trials per cell), NOT the study's protocol**"),
    "",
    ("FF, CaFo and MF against BP on the same network and dataset; every algorithm tuned with the same Optuna budget "
    "on a validation split, then trained with its tuned settings. Measured on Fixture CPU (2 threads)."),
    "",
    ("| network | dataset | algorithm | n | test acc (%) | Δ acc (points) | study Δ acc | epochs | train time (s) | "
    "Δ time | study Δ time | energy (J) | energy source | Δ energy | study Δ energy | peak memory (MB) | Δ memory | "
    "trials |"),
    "|---|---|---|---:|---|---:|---:|---:|---|---:|---:|---|---|---:|---:|---:|---:|---:|",
    ("| 2x1000 | mnist | BP | 2 | 97.60 ± 0.14 | baseline | — | 3.0 | 11.0 ± 1.4 |  | — | 320 ± 28.3 | "
    "CodeCarbon estimate, whole run |  | — | 20.0 |  | 3 |"),
    ("| 2x1000 | mnist | MF | 2 | 97.70 ± 0.14 | +0.10 | +0.09 | 3.0 | 8.5 ± 0.7 | -22.7 % | -12.1 % | 262 ± 17.0 | "
    "CodeCarbon estimate, whole run | -18.1 % | -13.3 % | 12.0 | -40.0 % | 3 |"),
    ("| 2x1000 | fmnist | BP | 0 | dataset not on this machine | baseline | — | — | — |  | — | — | — |  | — | — |  "
    "| — |"),
    ("| 2x1000 | fmnist | MF | 0 | dataset not on this machine | — | +0.51 | — | — | — | +18.2 % | — | — | — | "
    "+9.9 % | — | — | — |"),
    ("| cafo-cnn | mnist | BP | 2 | 99.00 ± 0.14 | baseline | — | 3.0 | 62.0 ± 2.8 |  | — | 1050 ± 70.7 | "
    "CodeCarbon estimate, whole run |  | — | — |  | 3 |"),
    ("| cafo-cnn | mnist | CaFo-Rand | 1/2 | 98.00 | -1.00 | -0.32 | 3.0 | 30.0 | -51.6 % | — | not measured here | "
    "— | — | — | — | — | 3 |"),
    "",
    ("- test acc: at the epoch of best validation accuracy, in the algorithm's default prediction mode (MF: ff, "
    "FF: goodness, CaFo: sum); mean ± std over n seeds."),
    ("- Δ: against BP on the same network and dataset; accuracy in points, time, energy and memory in % of BP. "
    "study: the differences Spyra 2025 published (its CIFAR-10 is the original; ours is cifar10-jpeg, a lossy JPEG "
    "copy); — where it published none."),
    ("- train time: wall time of all training epochs run (time meter: perf_counter around each epoch's training "
    "steps, device synchronised; shuffling and evaluation excluded), early stopping included; epochs: mean number "
    "of epochs run."),
    ("- energy: CodeCarbon estimate: CodeCarbon over the whole run, training and evaluation, with CPU power "
    "estimated (TDP table or default watts times load) and RAM power from its size: not a measurement; not "
    "measured here: no energy source on the machine of the run (the run says why); no number is given. A "
    "difference to BP is given only between figures of the same source."),
    ("- peak memory: peak per training step of parameters + gradients + optimiser state + tensors saved for "
    "backward (cpu-memory meter, MB = 10^6 bytes), from separate short runs of the same settings with the memory "
    "meter alone (its hooks would slow the timed runs); the study published no memory differences."),
    ("- trials: finished Optuna trials (complete + pruned) of each cell's study; each trial trained with the "
    "profile's epochs and patience."),
    "- BP on cafo-cnn: the same three conv blocks with a linear head on the last block, trained end to end.",
    "- cafo-cnn mnist CaFo-Rand: 1 of 2 seeds without a result (diverged)",
    "",
])


def fixture_inputs():
    spec = load_spec(FIXTURE / "spec.yaml")
    runs = [load_run(d) for d in iter_runs(FIXTURE / "runs")]
    statuses = latest_statuses(status_file(FIXTURE, spec["name"], "quick"))
    tuning = tuning_summary(spec, "quick", FIXTURE / "studies")
    return spec, runs, statuses, tuning


def table(spec, runs, statuses, tuning):
    return energy_study_table(spec, "quick", runs, statuses, params_file=FIXTURE / "params.json", tuning=tuning)


# -- the table ------------------------------------------------------------------------------------------
def test_table_from_fixture_is_exact():
    rows, md = table(*fixture_inputs())
    assert md == EXPECTED_MD, "fixture stale? run tests/fixtures/energy_study/make_fixture.py and compare"
    by = {(r["network"], r["dataset"], r["algorithm"]): r for r in rows}
    mf = by[("2x1000", "mnist", "mf")]
    assert mf["acc_diff_points"] == pytest.approx(0.10)
    assert mf["time_diff_pct"] == pytest.approx(100 * (8.5 - 11.0) / 11.0)
    assert mf["energy_diff_pct"] == pytest.approx(100 * (262.0 - 320.0) / 320.0)
    assert mf["memory_diff_pct"] == pytest.approx(-40.0)
    assert (mf["batch_size"], mf["lr"]) == ("64", "0.002")  # the tuned settings of params.json
    cafo = by[("cafo-cnn", "mnist", "cafo-rand")]
    assert cafo["energy_j"] is None and cafo["energy_source"] == "not measured here"
    assert cafo["energy_diff_pct"] is None and cafo["n"] == 1
    csv_lines = rows_to_csv(rows).splitlines()
    assert csv_lines[0].startswith("network,arch,dataset,algorithm,status,n,seeds,test_acc")
    assert csv_lines[2] == ("2x1000,mlp,mnist,mf,completed,2,0 1,97.7,0.141421,0.1,0.09,3.0,8.5,0.707107,-22.727273,"
                            "-12.1,262.0,16.970563,\"CodeCarbon estimate, whole run\",-18.125,-13.3,12.0,state + saved "
                            "tensors per step (cpu-memory meter),-40.0,,64,0.002,3,")
    assert csv_lines[4] == "2x1000,mlp,fmnist,mf,dataset not on this machine,0,,,,,0.51,,,,,18.2,,,,,9.9,,,,,,,,"


def test_write_energy_study(tmp_path):
    paths = write_energy_study(FIXTURE, tmp_path, spec=FIXTURE / "spec.yaml", params_file=FIXTURE / "params.json")
    assert paths == [str(tmp_path / "tables" / "energy_study.md"), str(tmp_path / "tables" / "energy_study.csv")]
    assert (tmp_path / "tables" / "energy_study.md").read_text() == EXPECTED_MD
    # without the params file the spec asks for untuned runs: the tuned ones do not stand in for them
    spec = load_spec(FIXTURE / "spec.yaml")
    spec["profiles"]["quick"]["params_file"] = str(tmp_path / "missing.json")
    write_energy_study(FIXTURE, tmp_path, spec=spec)
    md = (tmp_path / "tables" / "energy_study.md").read_text()
    assert f"no params file {tmp_path / 'missing.json'}" in md
    assert "| 2x1000 | mnist | MF | 0 | not run yet |" in md  # tuned in the fixture
    assert "| cafo-cnn | mnist | BP | 2 | 99.00 ± 0.14 |" in md  # no tuned entry: the same runs


def test_time_and_energy_compared_only_on_one_device_and_source():
    spec, runs, statuses, tuning = fixture_inputs()
    runs = copy.deepcopy(runs)
    for run in runs:  # BP's cafo-cnn runs move to a GPU with NVML
        if run["config"]["arch"] == "cafo-cnn" and run["config"]["algorithm"] == "bp":
            run["environment"].update(gpu_model="Fixture GPU", device="cuda")
            run["config"]["device"] = "cuda"
            run["summary"]["measurements"]["energy"] = {
                "energy_j": 999.0, "source": "nvml (counter), GPU only",
                "nvml": {"energy_j": 999.0, "train_steps_energy_j": 900.0, "method": "counter"}}
    rows, md = table(spec, runs, statuses, tuning)
    bp, cafo = (next(r for r in rows if r["network"] == "cafo-cnn" and r["algorithm"] == a) for a in ("bp", "cafo-rand"))
    assert bp["energy_j"] == 900.0 and bp["energy_source"] == "NVML, training steps"  # the training steps only
    assert cafo["time_diff_pct"] is None and cafo["acc_diff_points"] == pytest.approx(-1.0)
    assert "ran on Fixture CPU (2 threads), BP on Fixture GPU: time and energy not compared" in md
    assert energy_of({}) == (None, "no energy meter")


# -- the published numbers and the spec ---------------------------------------------------------------------
def test_reference_holds_the_published_summary():
    ref = load_spyra2025()
    assert ref[("mf", "2x1000", "mnist", "acc_diff")] == 0.09
    assert ref[("mf", "2x1000", "fmnist", "time_diff")] == 18.2
    assert ref[("mf", "3x2000", "cifar10", "energy_diff")] == -40.8
    assert (ref[("mf", "3x2000", "cifar10", "test_accuracy")], ref[("bp", "3x2000", "cifar10", "test_accuracy")]) == \
        (62.34, 61.13)
    assert ref[("ff", "3x1000", "mnist", "time_diff")] == 342
    assert [ref[("cafo-rand", "cafo-cnn", d, "acc_diff")] for d in ("mnist", "fmnist", "cifar10", "cifar100")] == \
        [-0.32, 1.11, -13.23, -11.44]
    assert [ref[("cafo-dfa", "cafo-cnn", d, "acc_diff")] for d in ("mnist", "fmnist", "cifar10", "cifar100")] == \
        [0.08, 2.47, -1.72, -4.43]
    # every published row names a network and algorithm of the spec, so it lands beside our row
    spec = load_spec("energy_study")
    cells = {(g["label"], a) for g in spec["groups"] for a in g["algorithms"]}
    assert {(net, alg) for alg, net, _, _ in ref} <= cells


def test_energy_study_spec():
    spec = load_spec("energy_study")
    for profile in ("quick", "paper"):
        assert spec["profiles"][profile]["params_file"] == f"results/studies/energy_study_{profile}_params.json"
        groups = expand(untuned_spec(spec, profile), profile)
        main = [c for _, cs in groups for c in cs if "time" in c.measure]
        memory = [c for _, cs in groups for c in cs if c.measure == ["memory"]]
        assert len(main) == len(memory) and all(c.measure == ["time", "energy"] for c in main)
        assert {c.algorithm for c in main} == {"bp", "mf", "ff", "cafo-rand", "cafo-dfa"}
        cells = spec_cells(spec, profile)  # tuning takes the timed runs' settings, once per cell
        assert len(cells) == len({(c.algorithm, c.dataset, label) for label, c in cells}) == 24
        assert all(c.measure == ["time", "energy"] and c.seed == 0 for _, c in cells)
        assert {c.epochs for _, c in cells} == {spec["profiles"][profile]["epochs"]}
    # BP trains the cafo-cnn blocks end to end (the baseline of the CaFo rows)
    import torch
    bp = ALGORITHMS.get("bp")((1, 28, 28), 10, "cafo-cnn", {}, {})
    bp.train(True)
    assert torch.isfinite(bp.update(torch.randn(8, 1, 28, 28), torch.randint(0, 10, (8,)))["loss"])


# -- tuning a whole spec with one budget ------------------------------------------------------------------------
def tiny_spec(tmp_path) -> dict:
    return {
        "name": "tiny_energy",
        "measure": ["time", "energy"],
        # lr 0.5 is outside every searched range: the defaults trial keeps only the batch size, and an lr
        # other than 0.5 in an expanded config can only come from the params file
        "base": {"hparams": {"lr": 0.5}, "arch_args": {"widths": [16]}, "val_fraction": 0.2},
        "profiles": {"quick": {"seeds": [0, 1], "epochs": 1, "patience": 1,
                               "params_file": str(tmp_path / "params.json")}},
        "groups": [
            {"label": "1x16", "datasets": ["digits", "cifar100"], "arch": "mlp", "algorithms": ["bp", "mf"]},
            {"label": "1x16", "datasets": ["digits"], "arch": "mlp", "algorithms": ["bp", "mf"],
             "config": {"measure": ["memory"], "epochs": 2, "patience": None}},
        ],
    }


def test_tune_spec_gives_every_cell_the_same_budget(tmp_path, monkeypatch):
    monkeypatch.setenv("BPFREE_NO_DOWNLOAD", "1")  # cifar100 is not on this machine: skipped with a note
    spec = tiny_spec(tmp_path)
    studies = tmp_path / "results" / "studies"
    outcomes = tune_spec(spec, "quick", 2, studies_dir=studies, log=lambda _: None)
    by = {o["key"]: o for o in outcomes}
    assert sorted(by) == ["bp/cifar100/1x16", "bp/digits/1x16", "mf/cifar100/1x16", "mf/digits/1x16"]
    assert by["bp/cifar100/1x16"]["status"] == "unavailable" and "cifar100" in by["bp/cifar100/1x16"]["note"]
    params = json.loads((tmp_path / "params.json").read_text())
    assert sorted(params) == ["bp/digits/1x16", "mf/digits/1x16"]
    for key in ("bp/digits/1x16", "mf/digits/1x16"):
        assert by[key]["status"] == "tuned" and by[key]["finished"] == 2
        study = optuna.load_study(study_name=by[key]["study"],
                                  storage=optuna.storages.JournalStorage(
                                      optuna.storages.journal.JournalFileBackend(str(studies / f"{by[key]['study']}.log"))))
        finished = [t for t in study.trials if t.state in (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)]
        assert len(finished) == 2  # the same budget for both algorithms
        best = json.loads((studies / f"{by[key]['study']}.best.json").read_text())
        assert (best["budget"]["epochs"], best["budget"]["patience"]) == (1, 1)  # the profile's, per trial
        assert best["config"]["measure"] == ["time"] and best["config"]["seed"] == 0
    # expand applies the tuned settings to every run of the cell: both seeds, timed and memory runs
    for _, configs in expand(spec, "quick"):
        for cfg in configs:
            if cfg.dataset == "digits":
                entry = params[f"{cfg.algorithm}/digits/1x16"]
                assert cfg.hparams["lr"] == entry["hparams"]["lr"] != 0.5
                assert cfg.batch_size == entry["batch_size"]
    # the same command again resumes: no new trials; the command line tunes the same way
    spec_path = tmp_path / "tiny_energy.yaml"
    spec_path.write_text(yaml.safe_dump(spec))
    from bpfree import sweep as module
    assert module.main([str(spec_path), "--profile", "quick", "--tune", "2", "--results",
                        str(tmp_path / "results"), "--datasets", "digits"]) == 0
    # --params-file instead of the profile's own (same file here): tuning resumes, the listing expands
    assert module.main([str(spec_path), "--profile", "quick", "--tune", "2", "--results", str(tmp_path / "results"),
                        "--datasets", "digits", "--params-file", str(tmp_path / "params.json")]) == 0
    again = tune_spec(spec, "quick", 2, studies_dir=studies, log=lambda _: None, datasets={"digits"})
    assert [o["finished"] for o in again] == [2, 2]


def test_the_newest_finished_folder_of_a_run_wins_whatever_the_folder_order():
    spec = load_spec(FIXTURE / "spec.yaml")
    runs = [load_run(d) for d in iter_runs(FIXTURE / "runs")]
    statuses = latest_statuses(status_file(FIXTURE, "energy_study", "quick"))
    original = energy_study_table(spec, "quick", runs, statuses, params_file=FIXTURE / "params.json")
    bp = next(r for r in runs if r["config"]["algorithm"] == "bp")
    summary = {**bp["summary"], "measurements": {**bp["summary"]["measurements"], "train_time_s": 1e6}}
    older = {**bp, "run_dir": bp["run_dir"] + "_older", "finished_at": "2000-01-01T00:00:00Z", "summary": summary}
    runs = [{**r, "finished_at": "2026-12-02T00:00:00Z"} if r is bp else r for r in runs]
    for order in ([older, *runs], [*runs, older]):
        assert energy_study_table(spec, "quick", order, statuses, params_file=FIXTURE / "params.json") == original
