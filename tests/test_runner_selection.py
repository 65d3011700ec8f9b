"""What the issue found untested: disjoint train/validation splits normalised per channel, the choice
of the best validation epoch and early stopping in the live runner, restarting an unfinished run
folder, and a run identity that ignores location fields and changes with every field that matters."""

import dataclasses
import json

import pytest
import torch

import benchmarks.run.runner as runner
from benchmarks.run.config import EXECUTION_FIELDS, LOCATION_FIELDS, VERDICT_FIELDS, ExperimentConfig
from benchmarks.datasets import RawDataset, prepare_splits
from benchmarks.common.files import read_jsonl


def test_validation_rows_never_train_and_every_channel_is_normalised():
    n = 200
    x = torch.arange(n, dtype=torch.float32).view(n, 1, 1, 1).expand(n, 3, 2, 2).clone()
    x = x * torch.tensor([1.0, 10.0, -3.0]).view(1, 3, 1, 1) + torch.tensor([0.0, 5.0, 100.0]).view(1, 3, 1, 1)
    raw = RawDataset("t", x, torch.arange(n) % 4, x[:10], torch.arange(10) % 4, 4, "test", True)
    splits = prepare_splits(raw, 0.25, seed=3)
    ids = lambda t, m, s: set(torch.round(t[:, 0, 0, 0] * s[0] + m[0]).long().tolist())  # noqa: E731
    train, val = ids(splits.train_x, splits.mean, splits.std), ids(splits.val_x, splits.mean, splits.std)
    assert train.isdisjoint(val) and len(train) + len(val) == n and len(val) == 50
    for c in range(3):  # every channel of the training split: mean 0, std 1
        channel = splits.train_x[:, c]
        assert abs(float(channel.mean())) < 1e-4 and abs(float(channel.std()) - 1) < 1e-4


SCRIPT = [10.0, 50.0, 40.0, 30.0, 20.0, 60.0]  # validation accuracy per epoch


def scripted_run(tmp_path, monkeypatch, **kw):
    """Run the live runner with evaluate() scripted per epoch (validation and test accuracy)."""
    script = SCRIPT

    epochs, now = iter(range(len(script))), {}

    def fake_evaluate(trainer, splits, cfg, parts=("train", "val", "test")):
        if "val" in parts:  # the epoch's first call; test comes in a second one where it is scored
            now["e"] = next(epochs)
        e = now["e"]
        out = {"train_acc_output": 90.0, "val_acc_output": script[e], "test_acc_output": 100.0 - e}
        return {k: v for k, v in out.items() if k.split("_")[0] in parts}

    monkeypatch.setattr(runner, "evaluate", fake_evaluate)
    cfg = ExperimentConfig(algorithm="bp", arch_args={"widths": [8]}, epochs=len(script), quiet=True,
                           results_dir=str(tmp_path / "runs"), **kw)
    return runner.run_experiment(cfg)


def test_best_validation_epoch_is_selected_and_its_test_accuracy_reported(tmp_path, monkeypatch):
    summary = scripted_run(tmp_path, monkeypatch).summary
    assert summary["selected_epoch"] == 6 and summary["test_acc"] == 95.0  # val 60 in epoch 6, test 100 - 5
    assert not summary["stopped_early"]


def test_early_stopping_stops_after_patience_epochs_without_a_better_validation(tmp_path, monkeypatch):
    result = scripted_run(tmp_path, monkeypatch, patience=3)
    summary = result.summary
    assert summary["epochs_run"] == 5 and summary["stopped_early"]  # best in epoch 2, then 3 worse ones
    assert summary["selected_epoch"] == 2 and summary["test_acc"] == 99.0
    assert [r["epoch"] for r in read_jsonl(result.run_dir / "metrics.jsonl")] == [1, 2, 3, 4, 5]


def test_mf_sequential_selects_and_stops_only_once_its_last_layer_trains(tmp_path, monkeypatch):
    # 6 epochs over 2 layers: layer 1 in epochs 1-3, whose validation (50 in epoch 2) is not selectable:
    # layer 2 is untrained there. Patience 3 counts from epoch 4 (val 30, then 20, then 60).
    script = SCRIPT
    epochs, now = iter(range(len(script))), {}

    def fake_evaluate(trainer, splits, cfg, parts=("train", "val", "test")):
        if "val" in parts:
            now["e"] = next(epochs)
        e = now["e"]
        return {f"{s}_acc_{m}": (script[e] if s == "val" else 100.0 - e)
                for s in parts for m in trainer.prediction_modes}

    monkeypatch.setattr(runner, "evaluate", fake_evaluate)
    cfg = ExperimentConfig(algorithm="mf", arch_args={"widths": [8, 8]}, epochs=len(script), patience=2, quiet=True,
                           hparams={"schedule": "sequential"}, results_dir=str(tmp_path / "runs"))
    result = runner.run_experiment(cfg)
    rows = read_jsonl(result.run_dir / "metrics.jsonl")
    assert [r["phase"] for r in rows] == ["layer1"] * 3 + ["layer2"] * 3
    assert result.summary["selected_epoch"] == 6 and result.summary["epochs_run"] == 6  # not epoch 2, no early stop
    assert result.summary["test_acc"] == 95.0


def test_an_unfinished_run_folder_is_trained_again_from_scratch(tmp_path):
    cfg = ExperimentConfig(algorithm="bp", arch_args={"widths": [8]}, epochs=2, quiet=True,
                           results_dir=str(tmp_path / "runs"))
    first = runner.run_experiment(cfg)
    (first.run_dir / "done").unlink()  # as if killed before the end: a stale summary and an extra row
    with open(first.run_dir / "metrics.jsonl", "a") as f:
        f.write(json.dumps({"epoch": 99, "loss": 0.0}) + "\n")
    (first.run_dir / "summary.json").write_text(json.dumps({"status": "failed", "error": "killed"}))
    again = runner.run_experiment(cfg)
    assert not again.reused and again.run_dir == first.run_dir and (again.run_dir / "done").exists()
    assert [r["epoch"] for r in read_jsonl(again.run_dir / "metrics.jsonl")] == [1, 2]
    assert json.loads((again.run_dir / "summary.json").read_text())["status"] == "completed"


# Every field that changes what a run computes, with a second value
CHANGES = {"algorithm": "fa", "dataset": "breast_cancer", "data_args": None, "arch": "cnn",
           "arch_args": {"widths": [9]}, "hparams": {"lr": 0.002}, "epochs": 3, "batch_size": 32, "seed": 1,
           "val_fraction": 0.2, "train_limit": 100, "test_limit": 50, "patience": 2, "train_eval_limit": 500,
           "eval_batch_size": 100, "device": None, "measure": ["memory"], "tag": "x", "precision": "bf16",
           "budget": "matched"}


def test_run_identity_ignores_location_and_changes_with_every_field_that_matters():
    base = ExperimentConfig(algorithm="bp", arch_args={"widths": [8]})
    fields = {f.name for f in dataclasses.fields(ExperimentConfig)}
    assert fields == set(CHANGES) | set(LOCATION_FIELDS) | set(VERDICT_FIELDS) | set(EXECUTION_FIELDS)  # listed
    ident = base.identity()
    for key, value in CHANGES.items():
        if value is None:  # data_args: only user datasets have some; device: not part of run_key, part of run_id
            continue
        changed = dataclasses.replace(base, **{key: value}).identity()
        assert changed != ident, key
    moved = dataclasses.replace(base, data_dirs=["/elsewhere"], results_dir="/else", quiet=True, save="best",
                                chance_epochs=None, test_every_epoch=True)
    assert moved.identity() == ident
