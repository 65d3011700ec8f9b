"""Sweeps and launchers: spec expansion, reuse, outcomes of every kind, the command line."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from algorithms import ConfigError
from benchmarks.run.config import ExperimentConfig
from benchmarks.sweep.expand import (command_for, expand, latest_statuses, load_spec, merge, run_configs, run_dir_of,
                              run_key)

ROOT = Path(__file__).resolve().parent.parent

SPEC = {
    "name": "tiny",
    "measure": ["time"],
    "base": {"hparams": {"lr": 0.002}, "arch_args": {"widths": [32]}, "val_fraction": 0.1},
    "profiles": {"quick": {"seeds": [0, 1], "epochs": 1}, "paper": {"seeds": [0], "epochs": 5}},
    "algorithm_overrides": {"ff": {"hparams": {"lr": 0.01}}},
    "groups": [
        {"label": "1x32", "datasets": ["digits"], "arch": "mlp", "algorithms": ["bp", "ff"],
         "config": {"batch_size": 128}, "per_profile": {"quick": {"train_limit": 500}}},
        {"label": "2x16", "datasets": ["digits", "breast_cancer"], "arch": "mlp", "arch_args": {"widths": [16, 16]},
         "algorithms": ["mf"], "algorithm_overrides": {"mf": {"hparams": {"schedule": "sequential"}}}},
    ],
}


def write_spec(tmp_path, spec=SPEC) -> Path:
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def test_expand_merges_layers_in_order(tmp_path):
    groups = expand(load_spec(write_spec(tmp_path)), "quick")
    assert [g["label"] for g, _ in groups] == ["1x32", "2x16"]
    first, second = (cs for _, cs in groups)
    assert [(c.algorithm, c.seed) for c in first] == [("bp", 0), ("bp", 1), ("ff", 0), ("ff", 1)]
    bp, ff = first[0], first[2]
    assert bp.hparams == {"lr": 0.002} and ff.hparams == {"lr": 0.01}  # algorithm override wins
    assert bp.batch_size == 128 and bp.train_limit == 500 and bp.epochs == 1 and bp.tag == "tiny"
    assert bp.arch_args == {"widths": [32]}
    assert [(c.dataset, c.seed) for c in second] == [("digits", 0), ("digits", 1), ("breast_cancer", 0),
                                                     ("breast_cancer", 1)]
    # hparams merge key by key: the base lr stays beside the group's schedule; arch_args are replaced per key
    assert second[0].hparams == {"lr": 0.002, "schedule": "sequential"} and second[0].arch_args == {"widths": [16, 16]}
    assert second[0].train_limit is None  # per_profile belongs to its own group only
    paper = expand(load_spec(write_spec(tmp_path)), "paper")
    assert [c.epochs for _, cs in paper for c in cs] == [5] * 4


def test_profile_algorithm_overrides_apply_to_that_profile_only(tmp_path):
    spec = {**SPEC, "profiles": {**SPEC["profiles"],
                                 "paper": {"seeds": [0], "epochs": 5, "algorithm_overrides": {"ff": {"epochs": 3}}}}}
    path = write_spec(tmp_path, spec)
    paper = {(c.algorithm, c.dataset): c for _, cs in expand(load_spec(path), "paper") for c in cs}
    assert paper["ff", "digits"].epochs == 3 and paper["ff", "digits"].hparams == {"lr": 0.01}
    assert paper["bp", "digits"].epochs == 5 and paper["mf", "digits"].epochs == 5
    assert {c.epochs for _, cs in expand(load_spec(path), "quick") for c in cs} == {1}


def test_tuned_params_apply_per_cell(tmp_path):
    params = tmp_path / "params.json"
    params.write_text(json.dumps({"bp/digits/1x32": {"batch_size": 32, "hparams": {"lr": 0.0005}}}))
    groups = expand(load_spec(write_spec(tmp_path)), "quick", params_file=params)
    bp, ff = groups[0][1][0], groups[0][1][2]
    assert bp.batch_size == 32 and bp.hparams["lr"] == 0.0005
    assert ff.batch_size == 128 and ff.hparams["lr"] == 0.01


def test_merge_replaces_lists_and_merges_dicts():
    assert merge({"hparams": {"a": 1}, "measure": ["time"]}, {"hparams": {"b": 2}, "measure": ["memory"]}) == \
        {"hparams": {"a": 1, "b": 2}, "measure": ["memory"]}


@pytest.mark.parametrize("change, message", [
    (lambda s: s.update(colour="red"), "unknown key(s) ['colour']"),
    (lambda s: s["groups"][0].update(widths=[3]), "unknown key(s) ['widths'] in spec tiny.yaml group 1"),
    (lambda s: s.pop("groups"), "has no 'groups'"),
])
def test_bad_specs_are_refused(tmp_path, change, message):
    spec = json.loads(json.dumps(SPEC))
    change(spec)
    with pytest.raises(ConfigError) as err:
        load_spec(write_spec(tmp_path, spec))
    assert message in str(err.value)


def test_unknown_spec_and_profile():
    with pytest.raises(ConfigError, match="no spec 'table99'; choose one of: .*fig3"):
        load_spec("table99")
    with pytest.raises(ConfigError, match="unknown profile 'fast' for spec fig3; choose one of: paper, quick"):
        expand(load_spec("fig3"), "fast")


def test_run_key_ignores_device_and_location():
    a = ExperimentConfig(device="cpu", results_dir="x").resolve().to_dict()
    b = dict(a, device="cuda", results_dir="y", data_dirs=["z"], quiet=True)
    assert run_key(a) == run_key(b) and run_key(a) != run_key(dict(a, seed=1))


def test_command_for_runs_the_same_config(tmp_path):
    cfg = ExperimentConfig(algorithm="bp", arch_args={"widths": [16]}, epochs=1, train_limit=300,
                           results_dir=str(tmp_path / "runs"), quiet=True)
    command = command_for(cfg)
    assert "--set 'arch_args={\"widths\":[16]}'" in command and "--set train_limit=300" in command
    assert command.startswith("bpfree run ")  # the installed command; here through this interpreter
    proc = subprocess.run(command.replace("bpfree", f"{sys.executable} -m bpfree", 1), shell=True, cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert (run_dir_of(cfg) / "done").exists()


def tiny(results_dir, **kw):
    values = dict(algorithm="mf", arch_args={"widths": [32]}, epochs=1, quiet=True, results_dir=results_dir, tag="t")
    values.update(kw)
    return ExperimentConfig(**values)


def test_local_launcher_reports_every_outcome_and_reuses(tmp_path, monkeypatch):
    monkeypatch.setenv("BPFREE_NO_DOWNLOAD", "1")
    runs, status = str(tmp_path / "runs"), tmp_path / "sweeps" / "t_quick.jsonl"
    configs = [tiny(runs), tiny(runs, seed=1),
               tiny(runs, algorithm="bp", hparams={"optimizer": "sgd", "lr": 1e12}),  # diverges
               tiny(runs, dataset="mnist", data_dirs=[str(tmp_path / "empty")]),  # no MNIST there
               tiny(runs, algorithm="mf", hparams={"schedule": "sequential"}, arch_args={"widths": [8, 8]})]  # 1 epoch < 2 layers
    assert run_configs(configs, dry_run=True, log=lambda *_: None) == [] and not Path(runs).exists()
    outcomes = run_configs(configs, dry_run=False, jobs=2, status_path=status, log=lambda *_: None)
    by_key = {o["key"]: o for o in outcomes}
    got = [by_key[run_key(c.resolve().to_dict())]["status"] for c in configs]
    assert got == ["completed", "completed", "diverged", "unavailable", "failed"]
    assert "sequential schedule needs at least one epoch per layer" in by_key[run_key(configs[4].resolve().to_dict())]["error"]
    assert "mnist" in by_key[run_key(configs[3].resolve().to_dict())]["error"].lower()
    assert by_key[run_key(configs[0].resolve().to_dict())]["run_id"] == run_dir_of(configs[0]).name
    assert len(latest_statuses(status)) == 5
    log = Path(runs).parent / "sweeps" / "logs" / f"{run_dir_of(configs[0]).name}.log"  # the folder's name
    assert log.exists()
    again = run_configs(configs[:3], dry_run=False, status_path=status, log=lambda *_: None)
    assert sorted(o["status"] for o in again) == ["reused"] * 3  # finished runs, the diverged one too


def test_submitit_local_launcher(tmp_path):
    pytest.importorskip("submitit", reason="submitit is not installed (optional dependency 'slurm')")
    runs = str(tmp_path / "runs")
    outcomes = run_configs([tiny(runs)], dry_run=False, launcher="submitit-local", log=lambda *_: None,
                           launcher_options={"folder": str(tmp_path / "submitit" / "%j"), "timeout_min": 10})
    assert [o["status"] for o in outcomes] == ["completed"]
    assert (run_dir_of(tiny(runs)) / "done").exists()


def sweep_cli(*args):
    return subprocess.run([sys.executable, "-m", "bpfree", "sweep", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=300)


def test_cli_lists_runs_without_running(tmp_path):
    spec = write_spec(tmp_path)
    proc = sweep_cli(str(spec), "--profile", "quick", "--results", str(tmp_path / "res"), "--algorithms", "bp")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.count("[todo]") == 2 and "2 runs, 0 finished, 2 to run" in proc.stdout
    assert not (tmp_path / "res").exists()


@pytest.mark.parametrize("args, fragment", [
    (["table99"], "error: no spec 'table99'"),
    (["fig3", "--profile", "fast"], "error: unknown profile 'fast'"),
    (["fig3", "--launcher", "cloud"], "error: unknown launcher 'cloud'; choose one of: local, slurm, submitit-local"),
    (["fig3", "--algorithms", "cafo-rand"], "error: no run of the spec matches"),
])
def test_cli_bad_input_exit_2(args, fragment):
    proc = sweep_cli(*args)
    assert proc.returncode == 2 and proc.stderr.startswith(fragment), proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def test_a_params_entry_tuned_before_its_algorithm_gained_a_hyperparameter_is_refused(tmp_path):
    """FF's threshold tuned for unit-length inputs must not be applied to RMS-normalised ones silently."""
    import dataclasses

    from algorithms import ALGORITHMS
    from benchmarks.sweep.params_file import check_entry_current

    fields = {f.name: f.default for f in dataclasses.fields(ALGORITHMS.get("ff").HParams)}
    current = {"batch_size": 64, "hparams": {k: v for k, v in fields.items() if k != "fused"}}
    check_entry_current("ff/mnist/3x1000", current, tmp_path / "p.json")  # every field named: fine
    check_entry_current("ff/mnist/3x1000", {"hparams": {"lr": 1e-3}}, tmp_path / "p.json")  # by hand: today's rest
    old = {"batch_size": 64, "hparams": {k: v for k, v in current["hparams"].items()
                                         if k not in ("normalisation", "cooldown")}}
    with pytest.raises(ConfigError, match=r"ff/mnist/3x1000 was tuned before its algorithm had cooldown, normalisation"):
        check_entry_current("ff/mnist/3x1000", old, tmp_path / "p.json")
    # DFA's lr_decay was constant (1) before it existed, as its default is now: an entry without it is current
    dfa = {f.name: f.default for f in dataclasses.fields(ALGORITHMS.get("dfa").HParams)}
    check_entry_current("dfa/mnist/2x1000", {"hparams": {k: v for k, v in dfa.items()
                                                         if k not in ("fused", "lr_decay")}}, tmp_path / "p.json")
    spec = {"name": "s", "profiles": {"quick": {"seeds": [0]}}, "groups": [
        {"label": "3x1000", "arch": "mlp", "arch_args": {"widths": [8]}, "datasets": ["mnist"],
         "algorithms": ["ff"]}]}
    params = tmp_path / "params.json"
    params.write_text(json.dumps({"ff/mnist/3x1000": old}))
    with pytest.raises(ConfigError, match="tune it again"):
        expand(spec, "quick", params_file=params)
