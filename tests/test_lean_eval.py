"""Evaluation as lean as training (issue 26): the runner scores test only after the epochs where a summary
or a table can read it (a new best validation accuracy of some prediction mode, and the last), every
epoch with ``test_every_epoch``; neither changes a run's id. FF's goodness prediction in chunks gives
the same scores; the train-accuracy sample is capped; ``bpfree bench-speed --eval`` prints the cost."""

import dataclasses
import json

import pytest
import torch

import algorithms.ff as ff_module
import benchmarks.run.runner as runner
from algorithms import ALGORITHMS, ConfigError
from benchmarks.common.files import read_jsonl
from benchmarks.datasets import load_dataset, prepare_splits
from benchmarks.run.config import ExperimentConfig, run_key
from benchmarks.tables import figures
from benchmarks.tables.accuracy import selected_on_own_validation
from bpfree import cli

# validation accuracy of MF's modes per epoch (widths [8]: modes ff, bp, layer1; layer1 as bp)
FF_VAL = [10.0, 50.0, 40.0, 30.0, 50.0, 20.0]
BP_VAL = [10.0, 5.0, 20.0, 20.0, 15.0, 10.0]


def scripted(tmp_path, monkeypatch, **kw):
    """An MF run whose evaluate() is scripted: test accuracy 100 - epoch index in every mode."""
    epochs, now, calls = iter(range(len(FF_VAL))), {}, []

    def fake_evaluate(trainer, splits, cfg, parts=("train", "val", "test")):
        if "val" in parts:
            now["e"] = next(epochs)
        e = now["e"]
        calls.append((e + 1, tuple(parts)))
        val = {"ff": FF_VAL[e], "bp": BP_VAL[e], "layer1": BP_VAL[e]}
        return {f"{s}_acc_{m}": (val[m] if s == "val" else 100.0 - e) for s in parts for m in trainer.prediction_modes}

    monkeypatch.setattr(runner, "evaluate", fake_evaluate)
    cfg = ExperimentConfig(algorithm="mf", arch_args={"widths": [8]}, epochs=len(FF_VAL), quiet=True,
                           results_dir=str(tmp_path / "runs"), **kw)
    result = runner.run_experiment(cfg)
    return result, read_jsonl(result.run_dir / "metrics.jsonl"), calls


def test_default_scores_test_only_at_new_best_epochs_of_some_mode_and_the_last(tmp_path, monkeypatch):
    result, rows, calls = scripted(tmp_path, monkeypatch)
    # 1: first; 2: ff's best; 3: bp's best (20 > 10), not ff's; 4: no mode above its best (bp ties 20);
    # 5: ff ties 50 (the first of equal ones is read); 6: the last
    scored = [r["epoch"] for r in rows if "test_acc_ff" in r]
    assert scored == [1, 2, 3, 6] == result.summary["test_scored_epochs"]
    assert [e for e, parts in calls if parts == ("test",)] == scored  # test not even computed elsewhere
    for r in rows:  # no fake number: an unscored epoch has no test key at all, of any mode
        has = [f"test_acc_{m}" in r for m in ("ff", "bp", "layer1")]
        assert has == [r["epoch"] in scored] * 3 and "val_acc_ff" in r and "train_acc_ff" in r
    summary = result.summary
    assert summary["selected_epoch"] == 2 and summary["test_acc"] == 99.0 and summary["final"]["test_acc_ff"] == 95.0
    assert summary["test_every_epoch"] is False
    run = {"summary": summary, "epochs": rows}  # every mode is read at its own best validation epoch
    assert selected_on_own_validation(run, "ff") == 99.0 and selected_on_own_validation(run, "bp") == 98.0


def test_early_stopping_scores_the_epoch_it_stops_at(tmp_path, monkeypatch):
    result, rows, _ = scripted(tmp_path, monkeypatch, patience=2)
    assert [r["epoch"] for r in rows] == [1, 2, 3, 4] and result.summary["stopped_early"]
    assert result.summary["test_scored_epochs"] == [1, 2, 3, 4]  # 4: the last (the summary's final row)


def test_test_every_epoch_scores_every_epoch(tmp_path, monkeypatch):
    result, rows, _ = scripted(tmp_path, monkeypatch, test_every_epoch=True)
    assert all(f"test_acc_{m}" in r for r in rows for m in ("ff", "bp", "layer1"))
    assert result.summary["test_scored_epochs"] == [1, 2, 3, 4, 5, 6] and result.summary["test_every_epoch"]


def expected_scored(rows, modes, epochs):
    """The epochs the rule scores, recomputed from the rows: some mode's first strict best in its phase."""
    best, out = {}, []
    for r in rows:
        improves = False
        for m in modes:
            key = (r["phase"], m)
            if key not in best or r[f"val_acc_{m}"] > best[key]:
                best[key], improves = r[f"val_acc_{m}"], True
        if improves or r["epoch"] == epochs:
            out.append(r["epoch"])
    return out


def test_a_real_run_reads_the_same_test_accuracies_as_one_that_scores_every_epoch(tmp_path):
    cfg = ExperimentConfig(algorithm="mf", dataset="digits", arch_args={"widths": [16]}, hparams={"lr": 0.03},
                           epochs=6, quiet=True, results_dir=str(tmp_path / "runs"), save="best")
    lean = runner.run_experiment(cfg)
    lean_rows = read_jsonl(lean.run_dir / "metrics.jsonl")
    modes = lean.summary["prediction_modes"]
    assert [r["epoch"] for r in lean_rows if "test_acc_ff" in r] == expected_scored(lean_rows, modes, 6)

    # the summary's test accuracy is the selected epoch's, computed directly from its checkpoint
    splits = prepare_splits(load_dataset("digits"), cfg.val_fraction, cfg.seed)
    trainer = ALGORITHMS.get("mf")(splits.input_shape, splits.num_classes, "mlp", {"widths": [16]}, {"lr": 0.03})
    trainer.load_state_dict(torch.load(lean.run_dir / runner.CHECKPOINT))
    trainer.train(False)
    direct = runner.accuracies(trainer, splits.test_x, splits.test_y, cfg.eval_batch_size)
    assert lean.summary["test_acc"] == direct[lean.summary["default_mode"]]
    assert all(lean.summary["selected"][f"test_acc_{m}"] == direct[m] for m in modes)

    # the same run with test every epoch: not reused from the lean folder (it lacks rows), the same id
    full = runner.run_experiment(dataclasses.replace(cfg, test_every_epoch=True))
    assert not full.reused and full.run_dir == lean.run_dir
    full_rows = read_jsonl(full.run_dir / "metrics.jsonl")
    assert all(f"test_acc_{m}" in r for r in full_rows for m in modes)
    timing = ("epoch_time_s", "eval_time_s", "data_time_s")
    for a, b in zip(lean_rows, full_rows, strict=True):  # identical training; test where lean scored it
        assert {k: v for k, v in a.items() if k not in timing} == \
               {k: v for k, v in b.items() if k not in timing and (k in a or not k.startswith("test_"))}
    for m in modes:  # every table cell reads the same number from either folder
        assert selected_on_own_validation({"summary": lean.summary, "epochs": lean_rows}, m) == \
               selected_on_own_validation({"summary": full.summary, "epochs": full_rows}, m)
    assert full.summary["test_acc"] == lean.summary["test_acc"]
    # and a default config takes the folder that scored every epoch: it holds more
    assert runner.run_experiment(cfg).reused


def test_the_field_changes_no_run_id_and_no_table_key():
    base = ExperimentConfig(algorithm="bp", dataset="digits", arch_args={"widths": [8]}).resolve()
    every = dataclasses.replace(base, test_every_epoch=True)
    assert "test_every_epoch" in base.to_dict()  # recorded in config.json, but not what identifies the run
    assert "test_every_epoch" not in base.identity() and "test_every_epoch" not in every.identity()
    assert base.run_id("fp") == every.run_id("fp")
    old = {k: v for k, v in base.to_dict().items() if k != "test_every_epoch"}  # a folder from before the field
    assert run_key(base.to_dict()) == run_key(every.to_dict()) == run_key(old)


def test_the_train_accuracy_sample_costs_no_more_than_validation():
    cfg = ExperimentConfig()  # train_eval_limit 10000
    assert runner.train_eval_images(cfg, 54000, 6000) == 6000
    assert runner.train_eval_images(cfg, 54000, 0) == 10000  # no validation: the limit
    assert runner.train_eval_images(cfg, 54000, 100) == runner.TRAIN_EVAL_FLOOR  # small validation: the floor
    assert runner.train_eval_images(cfg, 1500, 100) == 1500
    assert runner.train_eval_images(dataclasses.replace(cfg, train_eval_limit=500), 54000, 6000) == 500


def test_ff_goodness_in_chunks_is_one_pass_up_to_rounding(monkeypatch):
    torch.manual_seed(0)
    trainer = ALGORITHMS.get("ff")((64,), 10, "mlp", {"widths": [32, 24]}, {})
    x = torch.randn(37, 64)
    with torch.no_grad():
        whole = trainer._goodness_scores(x)
        monkeypatch.setattr(ff_module, "CPU_GOODNESS_ROWS", 40)  # 4 samples a chunk, the last one 1
        chunked = trainer.goodness_scores(x)
        # a product's rounding may depend on its row count (as splitting the evaluation into batches does)
        assert torch.allclose(chunked, whole, rtol=1e-6, atol=1e-5) and torch.equal(chunked.argmax(1), whole.argmax(1))
        assert torch.equal(trainer.predict_all(x)["goodness"], chunked)


def test_test_error_curves_leave_out_runs_without_every_epochs_test():
    def run(accs):
        rows = [{"epoch": i + 1, **({} if a is None else {"test_acc_output": a})} for i, a in enumerate(accs)]
        return {"summary": {"default_mode": "output"}, "epochs": rows}

    curve = figures.test_error_curve([run([90.0, 95.0]), run([80.0, None]), run([92.0, 97.0])])
    assert curve["n"] == 2 and curve["left_out"] == 1 and curve["epochs"] == [1, 2]
    assert curve["mean"] == pytest.approx([9.0, 4.0])


def test_bench_speed_eval_table(tmp_path, capsys):
    out = tmp_path / "eval_cost.json"
    rc = cli.main(["bench-speed", "--eval", "--dataset", "digits", "--widths", "16,16", "--algorithms", "bp,ff",
                   "--train-limit", "256", "--eval-images", "64", "--repeats", "1", "--threads", "1",
                   "--out", str(out)])
    assert rc == 0
    text = capsys.readouterr().out
    assert "may be loaded" in text and "lean" in text
    data = json.loads(out.read_text())
    assert [r["algorithm"] for r in data["rows"]] == ["bp", "ff"] and data["sizes"]["train"] == 54000
    for r in data["rows"]:
        assert r["evaluated"] == {"train": 6000, "val": 6000, "test": 10000}  # train sample capped at val
        assert 0 < r["lean"] < r["every epoch"]
    assert data["rows"][1]["modes"] == ["goodness", "onepass"]


def test_score_test_false_scores_no_test_and_serves_no_config_that_wants_it(tmp_path):
    cfg = ExperimentConfig(algorithm="bp", dataset="digits", arch_args={"widths": [16]}, epochs=3, quiet=True,
                           results_dir=str(tmp_path))
    blind = runner.run_experiment(dataclasses.replace(cfg, score_test=False))
    rows = read_jsonl(blind.run_dir / "metrics.jsonl")
    assert not any(k.startswith("test_") for r in rows for k in r) and blind.summary["test_acc"] is None
    assert blind.summary["test_scored_epochs"] == [] and blind.summary["score_test"] is False
    assert run_key(cfg.resolve().to_dict()) == run_key(dataclasses.replace(cfg, score_test=False).resolve().to_dict())
    scored = runner.run_experiment(cfg)  # the same id; the folder lacks what this config asks for
    assert not scored.reused and scored.run_dir == blind.run_dir and scored.summary["test_acc"] is not None
    assert runner.run_experiment(dataclasses.replace(cfg, score_test=False)).reused  # more serves less
    with pytest.raises(ConfigError, match="score_test must be true or false"):
        ExperimentConfig(score_test="no").resolve()


def test_tuning_trials_score_test_only_where_read():
    import optuna

    from benchmarks.tuning import trial_config
    from benchmarks.tuning.study import _base_identity

    base = ExperimentConfig(algorithm="bp", dataset="digits", arch_args={"widths": [8]}, test_every_epoch=True)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=1))
    trial = trial_config(study.ask(), base)
    assert trial.test_every_epoch is False and trial.score_test is False  # only validation chooses a trial
    # a study recorded before the field, or by a spec that asks for every epoch, resumes as the same base
    assert _base_identity(base) == _base_identity(dataclasses.replace(base, test_every_epoch=False))
    assert "test_every_epoch" not in _base_identity(base)
