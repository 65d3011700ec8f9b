"""The shared per-epoch learning-rate decay (``lr_decay``, issue 25 item 5: a shared dimension for every row or
for none): every registered trainer follows it, each optimiser param group relative to its own base rate; FF's
cooldown composes with it exactly; a resumed run scales from the base rate; and no committed run folder changes
its id (at 1 the decay stays out of run ids and of the key tables match runs by).

The search-space side (a profile's ``tune_shared`` gives it to every row's study or to none) is checked in
tests/test_fairness.py (invariant 2) and tests/test_tuning.py. A few seconds on one core.
"""

from __future__ import annotations

import collections
import json
from pathlib import Path

import pytest
import torch

from algorithms import ALGORITHMS, ConfigError
from algorithms.base import BASE_LR, find_optimizers
from algorithms.ff import cooldown_factor
from benchmarks.run.config import ExperimentConfig, run_key, with_implicit_defaults

ROOT = Path(__file__).resolve().parent.parent
RUNS = ROOT / "results" / "runs"
# an algorithm that cannot train an MLP gets its network here (as tests/test_every_algorithm.py does)
NETWORK = {"sff": ("cnn", {"channels": [4, 4]})}
OWN_SCHEDULE_OFF = {"ff": {"cooldown": False}}  # a trainer's own lr schedule, beside the shared decay


def make(name: str, **hparams):
    arch, args = NETWORK.get(name, ("mlp", {"widths": [8, 8]}))
    torch.manual_seed(0)
    return ALGORITHMS.get(name)((1, 8, 8), 10, arch, args, hparams)


def lrs(trainer) -> list[float]:
    """Every param group's learning rate, optimiser by optimiser."""
    return [group["lr"] for opt in find_optimizers(trainer) for group in opt.param_groups]


@pytest.mark.parametrize("name", ALGORITHMS.names())
def test_every_algorithm_decays_every_optimisers_learning_rate(name):
    """Epoch 2 of 4 at lr_decay 0.5 trains every param group at a quarter of epoch 0's rate (FF's cooldown is
    1 in the first half of the epochs); at the default 1 (and without a schedule of the trainer's own) the rate
    stays what the optimiser was built with."""
    trainer = make(name, lr_decay=0.5)
    assert find_optimizers(trainer), f"{name} holds no optimiser where the decay could act"
    trainer.start_epoch(0, 4)
    first = lrs(trainer)
    trainer.start_epoch(2, 4)
    assert lrs(trainer) == [lr * 0.25 for lr in first]
    trainer.start_epoch(1, 4)  # back and forth: always from the base rate, never compounded
    assert lrs(trainer) == [lr * 0.5 for lr in first]

    constant = make(name, **OWN_SCHEDULE_OFF.get(name, {}))
    built = lrs(constant)
    for epoch in range(4):
        constant.start_epoch(epoch, 4)
        assert lrs(constant) == built


def test_each_param_group_decays_from_its_own_base_rate():
    """CaFo's predictors learn at predictor_lr, cafo-dfa's blocks at lr: each keeps its own scale."""
    trainer = make("cafo-dfa", lr=1e-3, predictor_lr=0.1, lr_decay=0.5)
    trainer.start_epoch(3, 8)
    assert trainer.predictor_optimizer.param_groups[0]["lr"] == 0.1 * 0.125
    assert trainer.block_optimizer.param_groups[0]["lr"] == 1e-3 * 0.125


@pytest.mark.parametrize("cooldown", [True, False])
def test_ffs_cooldown_and_the_decay_compose_exactly(cooldown):
    """FF's rate at epoch e is lr * cooldown(e) * lr_decay**e, for every block's optimiser and the one-pass head."""
    trainer = make("ff", lr=3e-3, lr_decay=0.7, cooldown=cooldown, onepass_head=True)
    for epoch in range(6):
        trainer.start_epoch(epoch, 6)
        factor = cooldown_factor(epoch, 6) if cooldown else 1.0
        assert lrs(trainer) == [3e-3 * factor * 0.7 ** epoch] * len(trainer.optimizers)
    assert cooldown_factor(5, 6) < 1  # the cooldown did act


def test_dfa_keeps_its_rule():
    """DFA's rate is lr * lr_decay**e, as when the decay was DFA's own hyperparameter (its update rule's
    test: tests/test_update_rules.py)."""
    trainer = make("dfa", lr=2e-3, lr_decay=0.9)
    for epoch in range(5):
        trainer.start_epoch(epoch, 5)
        assert lrs(trainer) == [2e-3 * 0.9 ** epoch]


def test_a_resumed_run_decays_from_the_base_rate():
    """The base rate travels with the optimiser's state dict (benchmarks/run/resume.py saves and loads those
    before the next start_epoch): a run resumed after epoch 2 trains epoch 3 at lr * decay**3."""
    stopped = make("mf", lr=1e-3, lr_decay=0.5)
    for epoch in range(3):
        stopped.start_epoch(epoch, 6)
    resumed = make("mf", lr=1e-3, lr_decay=0.5)
    for mine, saved in zip(find_optimizers(resumed), find_optimizers(stopped)):
        mine.load_state_dict(saved.state_dict())
    assert all(g[BASE_LR] == 1e-3 for opt in find_optimizers(resumed) for g in opt.param_groups)
    resumed.start_epoch(3, 6)
    assert lrs(resumed) == [1e-3 * 0.125] * len(lrs(resumed))


@pytest.mark.parametrize("value", [0.0, -0.5, 1.5])
def test_a_decay_outside_0_1_is_refused(value):
    with pytest.raises(ConfigError, match="lr_decay must be in"):
        make("bp", lr_decay=value)


# -- run identities ------------------------------------------------------------------------------------------
def committed_runs() -> list[tuple[Path, dict, str | None]]:
    """(folder, config.json, data fingerprint or None) of every committed run folder."""
    out = []
    for config in sorted(RUNS.glob("*/config.json")):
        measurement = config.parent / "measurement.json"
        data = json.loads(measurement.read_text()).get("data", {}) if measurement.is_file() else {}
        out.append((config.parent, json.loads(config.read_text()), data.get("fingerprint")))
    return out


def test_committed_run_folders_keep_their_ids_and_keys():
    """Every committed run folder made with the data's fingerprint in its id is still the folder its config
    resolves to (its config.json predates the shared lr_decay, DFA's excepted: the decay, at 1, stays out of
    the id), and every folder's run key is its resolved config's (tables find the same runs)."""
    runs = committed_runs()
    if not runs:
        pytest.skip("no committed run folders")
    checked, decayed = collections.Counter(), 0
    for folder, config, fingerprint in runs:
        resolved = ExperimentConfig(**config).resolve()
        assert resolved.hparams["lr_decay"] == config["hparams"].get("lr_decay", 1.0)
        # the key of the run as it was made: FF's folders from before loeweX's recipe hold other runs than
        # today's defaults would (config.IMPLICIT_HPARAMS), the same folders with the decay as before
        as_made = ExperimentConfig(**with_implicit_defaults(config)).resolve()
        assert run_key(config) == run_key(as_made.to_dict()), folder.name
        if fingerprint is not None:  # folders made before the fingerprint entered ids have an older id
            assert resolved.run_id(fingerprint) == folder.name
            assert run_key(config) == run_key(resolved.to_dict()), folder.name
            checked[config["algorithm"]] += 1
            decayed += config["hparams"].get("lr_decay", 1.0) != 1.0
    assert {"bp", "mf", "ff", "fa", "dfa", "bp-ds", "mf-joint"} <= set(checked), checked
    assert decayed, "no committed run with a tuned decay (Table 3's DFA runs) was checked"
    # the check can fail: a decay of 1 written into the id would move every folder
    folder, config, fingerprint = next(r for r in runs if r[2] is not None and r[1]["algorithm"] == "bp")
    moved = ExperimentConfig(**config).resolve().identity()
    assert "lr_decay" not in moved["hparams"]
    assert ExperimentConfig(**{**config, "hparams": {**config["hparams"], "lr_decay": 0.9}}).resolve(
        ).run_id(fingerprint) != folder.name


@pytest.mark.parametrize("name", ALGORITHMS.names())
def test_a_decay_of_1_stays_out_of_every_algorithms_run_id(name):
    arch, args = NETWORK.get(name, ("mlp", {"widths": [8, 8]}))
    plain = ExperimentConfig(algorithm=name, arch=arch, arch_args=args).resolve()
    assert plain.hparams["lr_decay"] == 1.0 and "lr_decay" not in plain.identity()["hparams"]
    decayed = ExperimentConfig(algorithm=name, arch=arch, arch_args=args, hparams={"lr_decay": 0.9}).resolve()
    assert decayed.identity()["hparams"]["lr_decay"] == 0.9 and decayed.run_id("f") != plain.run_id("f")
    old = plain.to_dict()
    old["hparams"] = {k: v for k, v in old["hparams"].items() if k != "lr_decay"}  # written before the decay
    assert run_key(old) == run_key(plain.to_dict()) != run_key(decayed.to_dict())
