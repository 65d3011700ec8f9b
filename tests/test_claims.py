"""The Section 3.3 claim experiments: checkpoints, hot-plugging, damage, layer-parallel MF, tables.

Every experiment runs here on the bundled digits with small networks (seconds); the pipelined MF
runs in real processes (gloo) and is compared with one-process ``MonoForward.update``.
"""

import json
import subprocess
import sys
from pathlib import Path

import matplotlib.pyplot as plt
import pytest
import torch

from algorithms import ConfigError
from benchmarks.claims import common, damage, hotplug, parallel, report
from benchmarks.run.config import ExperimentConfig
from benchmarks.run.runner import CHECKPOINT, run_experiment

ROOT = Path(__file__).resolve().parent.parent

SMALL = {
    "hotplug": {"datasets": ["digits"], "width": 48, "train_limit": None, "epochs": 2, "seed": 0},
    "damage": {"datasets": ["digits"], "nets": [[48, 48], [48, 48, 48]], "train_limit": None, "epochs": 2, "seed": 0,
               "layers": [2], "noise": [0.5, 4.0], "zero": [0.5], "retrain": ["reinit"], "retrain_epochs": 2},
    "parallel": {"dataset": "digits", "widths": [48, 48, 48], "train_limit": None, "epochs": 1, "repeats": 1,
                 "processes": 2, "seed": 0},
}


@pytest.fixture
def small_profile(monkeypatch):
    monkeypatch.setitem(common.PROFILES, "small", SMALL)
    return "small"


def tiny_spec(n=200, widths=(12, 10, 9), epochs=2):
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(n, 8, generator=g), torch.randint(0, 3, (n,), generator=g)
    return {"seed": 0, "widths": list(widths), "input_shape": [8], "num_classes": 3, "device": "cpu", "x": x, "y": y,
            "orders": common.orders(n, 0, epochs), "threads": 1, "ping": False}


# -- checkpoints -----------------------------------------------------------------------------------

def digits_cfg(results_dir, **kw):
    return ExperimentConfig(**{"algorithm": "mf", "dataset": "digits", "arch_args": {"widths": [32, 32]}, "epochs": 3,
                               "quiet": True, "results_dir": results_dir, **kw})


def test_save_is_not_identity_and_refused_when_unknown(results_dir):
    assert digits_cfg(results_dir, save="final").resolve().identity() == digits_cfg(results_dir).resolve().identity()
    with pytest.raises(ConfigError, match="unknown save 'always'"):
        digits_cfg(results_dir, save="always").resolve()


@pytest.mark.parametrize("save,row", [("final", "final"), ("best", "selected")])
def test_checkpoint_reloads_the_trained_weights(results_dir, save, row):
    result = run_experiment(digits_cfg(results_dir, save=save, hparams={"lr": 0.01}))
    assert (result.run_dir / CHECKPOINT).is_file() and result.summary["checkpoint"]["save"] == save
    torch.load(result.run_dir / CHECKPOINT, weights_only=True)  # tensors only
    _, trainer, splits = common.trainer_from_run(result.run_dir)
    assert common.test_acc(trainer, splits, "ff") == pytest.approx(result.summary[row]["test_acc_ff"])


def test_a_finished_run_without_weights_runs_again_when_they_are_asked_for(results_dir):
    first = run_experiment(digits_cfg(results_dir, epochs=1))
    assert not (first.run_dir / CHECKPOINT).exists()
    assert run_experiment(digits_cfg(results_dir, epochs=1)).reused
    second = run_experiment(digits_cfg(results_dir, epochs=1, save="final"))
    assert not second.reused and second.run_dir == first.run_dir and (second.run_dir / CHECKPOINT).is_file()
    with pytest.raises(ConfigError, match="kept no weights"):
        common.trainer_from_run(run_experiment(digits_cfg(results_dir, epochs=2)).run_dir)


# -- hot-plugging ----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def hot():
    return hotplug.run_dataset("digits", SMALL["hotplug"], torch.device("cpu"), log=lambda *_: None)


def test_mf_first_two_layers_equal_bit_for_bit(hot):
    eq = hot["equality_mf"]["same_start"]
    assert eq["all_bitwise_equal"] and set(eq["params"]) == {
        "blocks.0.1.weight", "blocks.0.1.bias", "blocks.1.0.weight", "blocks.1.0.bias",
        "projections.0", "projections.1"}
    # with the same seed alone the projections start apart (drawn after every block), and so they end
    seed_only = hot["equality_mf"]["same_seed_only"]
    assert seed_only["at_init"]["blocks.0.1.weight"]["bitwise_equal"]
    assert not seed_only["at_init"]["projections.0"]["bitwise_equal"]
    assert not seed_only["after_training"]["all_bitwise_equal"]


def test_bp_first_two_layers_end_apart_and_unplugging_follows(hot):
    bp = hot["equality_bp"]
    assert bp["init_bitwise_equal"] and not bp["after_training"]["all_bitwise_equal"]
    assert all(p["rel_diff"] > 1e-3 for p in bp["after_training"]["params"].values())
    # MF without its top layer is the 2-layer net, so it predicts exactly as that one
    assert hot["unplug"]["mf"]["unplugged_2_layers"] == hot["unplug"]["mf"]["trained_2_layers"]
    for alg in ("mf", "bp"):
        assert len(hot["plug"][alg]["plugged"]["epochs"]) == SMALL["hotplug"]["epochs"]


def test_local_steps_train_only_their_layer():
    spec = tiny_spec()
    x, y = spec["x"][:64], spec["y"][:64]
    for alg, make_step, params in (
            ("mf", common.mf_local_step, lambda t: [*t.net.blocks[1].parameters(), t.projections[1]]),
            ("bp", common.bp_layer_step, lambda t: list(t.net.blocks[1].parameters()))):
        t = parallel._trainer(spec, alg, torch.device("cpu"))
        before = {k: v.clone() for k, v in t.state_dict().items()}
        make_step(t, 1, common.fresh_optimizer(t, params(t)))(x, y)
        changed = {k for k, v in t.state_dict().items() if not torch.equal(v, before[k])}
        assert changed == {k for k in before if k.startswith(("net.blocks.1.", "projections.1"))}, (alg, changed)


# -- damage ----------------------------------------------------------------------------------------

def test_damage_kinds():
    t = parallel._trainer(tiny_spec(widths=(200, 100)), "mf", torch.device("cpu"))
    w0 = common.linear_of(t.net.blocks[0]).weight.detach().clone()
    for name, check in (("noise_2", lambda w: ((w - w0).std() / w0.std()).item() == pytest.approx(2, rel=0.05)),
                        ("zero_0.25", lambda w: int((w.abs().sum(1) == 0).sum()) == 50),
                        ("reinit", lambda w: not torch.equal(w, w0) and w.abs().max() <= 1 / 8 ** 0.5)):
        a, b = common.clone(t), common.clone(t)
        damage.damage(a, 1, name, seed=3)
        damage.damage(b, 1, name, seed=3)
        wa = common.linear_of(a.net.blocks[0]).weight
        assert check(wa), name
        assert torch.equal(wa, common.linear_of(b.net.blocks[0]).weight), name  # the same seed, the same damage
        assert torch.equal(a.net.blocks[1][0].weight, t.net.blocks[1][0].weight)  # only layer 1 touched


def test_damage_study_small(small_profile, tmp_path):
    path = damage.run(small_profile, tmp_path, device="cpu", log=lambda *_: None)
    r = json.loads(path.read_text())
    assert {(s["algorithm"], len(s["widths"])) for s in r["runs"]} == {("mf", 2), ("mf", 3), ("bp", 2), ("bp", 3)}
    for s in r["runs"]:
        layer = s["layers"]["2"]
        if s["algorithm"] == "mf":  # the layers below the damaged one predict as before, whatever the damage
            assert {d["no_retraining"]["below"] for d in layer["damages"].values()} == {layer["undamaged"]["below"]}
        retrained = layer["damages"]["reinit"]["retraining"]
        assert [e["epoch"] for e in retrained] == [1, 2]
        key = "output" if s["algorithm"] == "bp" else "ff"
        assert retrained[-1][key] > layer["damages"]["reinit"]["no_retraining"][key]  # retraining helps
    # the four base runs kept their weights in the results folder
    assert len(list((tmp_path / "claims" / "runs").glob("*/model.pt"))) == 4



def fake_damage_result(settings: dict) -> dict:
    """A damage result as ``damage.run`` writes it, without training: two datasets, a 2- and a 3-layer net, every
    layer damaged (so the 2-layer nets lack a layer 3)."""
    names = damage.damage_names(settings)
    runs = []
    for d in settings["datasets"]:
        for widths in settings["nets"]:
            for alg in ("mf", "bp"):
                def acc(v, k):
                    return {"output": v} if alg == "bp" else {"ff": v, "upto": v, "below": None if k == 1 else 90.0}
                layers = {}
                for k in range(1, len(widths) + 1):
                    damages = {n: {"no_retraining": acc(80.0 - i, k)} for i, n in enumerate(names)}
                    for n in settings["retrain"]:
                        damages[n]["retraining"] = [{"epoch": e, "test_acc": 90.0 + e, "time_s": 1.0, **acc(90.0 + e, k)}
                                                    for e in range(1, settings["retrain_epochs"] + 1)]
                    layers[str(k)] = {"damages": damages, "undamaged": acc(95.0, k)}
                runs.append({"algorithm": alg, "dataset": d, "widths": widths, "layers": layers, "epochs": 2})
    return {"experiment": "damage", "profile": "small", "device": "cpu", "torch": torch.__version__, "threads": 1,
            "settings": settings, "runs": runs}


def test_damage_figures_are_two_grids_with_one_legend_each(small_profile, tmp_path):
    settings = dict(SMALL["damage"], datasets=["digits", "other"], layers=[1, 2, 3])
    r = fake_damage_result(settings)
    figs = report.RENDER["damage"][1](r)
    assert set(figs) == {"", "_retraining"}  # no retraining, and retraining, in two figures
    rows = [("digits", "2x48"), ("digits", "3x48"), ("other", "2x48"), ("other", "3x48")]
    for suffix, fig in figs.items():
        assert len(fig.legends) == 1 and all(ax.get_legend() is None for ax in fig.axes), suffix  # one shared legend
        grid = fig.axes[0].get_subplotspec().get_gridspec()
        assert (grid.nrows, grid.ncols) == (len(rows), 3), suffix  # a row per (dataset, network), a column per layer
        on = [ax for ax in fig.axes if ax.axison]
        assert [ax.get_title() for ax in on] == [f"{d} {net}, layer {k}" for d, net in rows
                                                 for k in range(1, int(net[0]) + 1)], suffix
        assert all(ax.get_ylim() == (0, 100) for ax in on), suffix
        assert len(fig.axes) - len(on) == 2  # the 2-layer nets' layer-3 cells are off
        fig.canvas.draw()
        title = fig._suptitle.get_window_extent()
        assert not any(title.overlaps(ax.title.get_window_extent()) for ax in on), suffix
    labels = [t.get_text() for t in figs[""].legends[0].get_texts()]
    assert labels == ["BP (damaged stack)", "MF all layers (damaged stack)", "MF layers below k (undamaged)"]
    labels = [t.get_text() for t in figs["_retraining"].legends[0].get_texts()]
    assert labels == [f"{a} {n}" for n in ("reinit",) for a in ("BP", "MF")]
    for fig in figs.values():
        plt.close(fig)
    # write_all saves both under the experiment's name and the profile's, the second with its suffix
    common.write_result(tmp_path, "damage", "small", r)
    notes = report.write_all(tmp_path, tmp_path / "out", experiments=["damage"])
    assert {Path(n).name for n in notes} == {"claims_damage.md", *(f"claims_damage_small{s}.{e}" for s in
                                                                   ("", "_retraining") for e in ("png", "pdf"))}
    assert report.damage_md(r) in (tmp_path / "out" / "tables" / "claims_damage.md").read_text()

# -- layer-parallel MF -----------------------------------------------------------------------------

def test_stage_bounds():
    assert parallel.stage_bounds(4, 2) == [(0, 2), (2, 4)]
    assert parallel.stage_bounds(3, 2) == [(0, 2), (2, 3)]
    assert parallel.stage_bounds(3, 3) == [(0, 1), (1, 2), (2, 3)]
    with pytest.raises(ValueError):
        parallel.stage_bounds(2, 3)


@pytest.mark.parametrize("stages", [2, 3])
def test_pipelined_mf_updates_equal_one_process_mf(stages):
    spec = tiny_spec()  # 200 samples: 4 batches an epoch (the last of 8), 2 epochs
    reference = parallel._trainer(spec, "mf", torch.device("cpu"))
    start = {k: v.clone() for k, v in reference.state_dict().items()}
    parallel._epoch_one_process(reference, spec["x"], spec["y"], spec["orders"], torch.device("cpu"))
    results = parallel.spawn(parallel.mf_stage, stages, spec)
    got, want = parallel.pipeline_state(results), reference.state_dict()
    assert set(got) == set(want)
    for k in want:
        assert not torch.equal(want[k], start[k]), k  # every parameter learned
        torch.testing.assert_close(got[k], want[k], rtol=1e-5, atol=1e-6, msg=k)
    bytes_per_row = [4 * spec["widths"][hi - 1] for _, hi in parallel.stage_bounds(3, stages)]
    for r, t in enumerate(results[:-1]):
        assert t["timing"]["sent_bytes"] == 2 * 200 * bytes_per_row[r] and t["timing"]["messages"] == 8


def test_speedup_model():
    # two equal blocks, free transfers: 2 stages halve the pace, less one fill step in 99 steps
    model = parallel.model_speedups([1.0, 1.0], 0.0, {64: 1.0, 32: 0.5}, 0.25, steps=99)
    assert model["mf"][1] == pytest.approx(1.0) and model["mf"][2] == pytest.approx(99 * 2 / 100)
    assert model["bp"][2] == pytest.approx(1.0 / (0.5 + 0.25))


# -- results to tables, and the command line -------------------------------------------------------

def test_experiments_and_tables_from_results(small_profile, tmp_path):
    hotplug.run(small_profile, tmp_path, device="cpu", log=lambda *_: None)
    parallel.run(small_profile, tmp_path, device="cpu", log=lambda *_: None)
    out = tmp_path / "out"
    notes = report.write_all(tmp_path, out)
    hot_md = (out / "tables" / "claims_hotplug.md").read_text()
    assert "| MF 2 vs 3 layers | layers 1-2 equal (blocks and M_1, M_2) | **yes** | 0 | 0 |" in hot_md
    par = json.loads((tmp_path / "claims" / "parallel_small.json").read_text())
    assert par["pipeline_equals_one_process"]["max_abs_diff"] < 1e-5
    par_md = (out / "tables" / "claims_parallel.md").read_text()
    assert f"| 2 | {par['model']['mf']['2']:.2f} | {par['measured']['mf_speedup']:.2f} |" in par_md
    assert (out / "figures" / "claims_parallel_small.png").is_file() and "claims_damage: no results" in " ".join(notes)


def test_cli_bad_input_exits_2(tmp_path):
    def run(*args):
        return subprocess.run([sys.executable, "-m", "bpfree", "claims", *args, "--results", str(tmp_path)], cwd=ROOT,
                              capture_output=True, text=True)
    for args, message in ((["hotplug", "--profile", "huge"], "unknown profile 'huge'"),
                          (["damage", "--from-run", str(tmp_path / "nope")], "is not a run folder"),
                          ([], "name an experiment")):
        res = run(*args)
        assert res.returncode == 2 and message in res.stderr and res.stderr.count("\n") == 1, res.stderr
    res = run("--from-results")
    assert res.returncode == 0 and "no results/claims/hotplug_*.json" in res.stdout
