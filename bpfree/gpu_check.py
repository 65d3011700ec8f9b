"""The steps of the GPU check (scripts/gpu_check.sh runs each in its own process, under `timeout`).

    bpfree gpu-check --list                       # the steps, in order, with their budgets
    bpfree gpu-check STEP [--budget S] [--results DIR] [--dry-run]

Steps, in the order that leaves a cut-off check still useful (the measurements only a GPU gives
first, then the accuracy tables, each cell's first seed before any second seed):

  preflight  the machine: torch, CUDA, the GPU and its driver, NVML, MIG, CUDA_VISIBLE_DEVICES, datasets
  tests      the CUDA and NVML tests (they skip without a GPU)
  table5     Table 5, paper profile, with the NVML energy meter added: epoch time and energy of BP and MF
  fig3       Figure 3, paper profile: peak CUDA-allocator memory per depth, BP and MF (the slopes)
  table3     Table 3's 2x1000 group, paper profile (100 epochs, patience 10), seed by seed
  table2     Table 2's CNN on MNIST and Fashion-MNIST, paper profile, seed by seed
  tables     Tables 5, 3, 2 and Figure 3 from the runs (bpfree plots), into <results>/gpu_check/

Every run is a run folder under <results>/runs (environment.json names the GPU and driver), the
same identity as the spec's paper profile (Table 5's runs add the ``energy`` meter), so a later
`make reproduce-... PROFILE=paper` reuses them. A step stops starting runs when its budget is
spent; a run still going then is stopped at its next epoch's end and reported with the epochs it
reached (its folder stays unfinished, so a later reproduction runs it again). Each step prints one
line per run and a final `[step] NAME: ran|partial|skipped|failed - why`, appended as JSON to
<results>/gpu_check/steps.jsonl.

--dry-run is the same steps on the CPU at a tiny size: the first few runs of each step, on the
bundled digits (each line names the run it stands for), 2 epochs, 200 training samples, layers of
at most 32 units (CNNs: 2 blocks of at most 8 maps); the test suite runs it.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

import torch

# (name, budget in seconds on the GPU): 470 s in all, inside the 8 minutes the check may take
STEPS = [("preflight", 20), ("tests", 60), ("table5", 100), ("fig3", 70), ("table3", 110), ("table2", 70),
         ("tables", 40)]
TINY_RUNS = 2  # runs per step in a dry run
GPU_TESTS = ["tests/test_measure.py", "tests/test_gpu_ready.py"]
GPU_TEST_SELECTION = "cuda or nvml"  # the tests whose names say they need CUDA or NVML (stubbed ones too)


class OutOfTime(Exception):
    """The step's budget is spent; raised at an epoch's end to stop the run in progress."""


def log(message: str) -> None:
    print(message, flush=True)


# -- runs -----------------------------------------------------------------------------------------

def tiny(cfg, results: Path):
    """The same run at a size the CPU does in a second: 2 epochs, 200 samples, narrow layers."""
    args = dict(cfg.arch_args)
    if "widths" in args:
        args["widths"] = [min(w, 32) for w in args["widths"]]
    if "channels" in args:
        args["channels"] = [min(c, 8) for c in args["channels"]][:2]  # 2 pools keep 8x8 digits valid
    full_batch = cfg.batch_size >= 10000
    # the bundled digits for every dataset: on any machine, in seconds (loading cifar10-jpeg alone takes ~30 s)
    return dataclasses.replace(cfg, dataset="digits", arch_args=args, epochs=min(cfg.epochs, 2), patience=None, train_limit=200,
                               test_limit=100, train_eval_limit=100, batch_size=200 if full_batch else min(cfg.batch_size, 64),
                               device="cpu", results_dir=str(results / "runs"), quiet=True)


NOTES: list[str] = []  # said in the step's line: e.g. that tuned settings were missing


def spec_configs(spec_name: str, results: Path, keep=lambda c: True, measure_add=()):
    """The paper profile's configs of a spec, seed-major (every cell's seed 0 first).

    Where the profile's tuned settings (its params_file) are missing here, or Optuna is (the lent
    machine has none), the spec's own settings are run instead, and the step's line says so."""
    from algorithms import ConfigError
    from benchmarks.sweep.expand import expand, load_spec

    spec = load_spec(spec_name)
    try:
        groups = expand(spec, "paper", results_dir=str(results / "runs"))
    except (ConfigError, ImportError) as exc:
        untuned = copy.deepcopy(spec)
        untuned.pop("params_file", None)
        untuned["profiles"]["paper"].pop("params_file", None)
        groups = expand(untuned, "paper", results_dir=str(results / "runs"))
        NOTES.append(f"untuned: the spec's own settings, since its tuned ones are not usable here "
                     f"({type(exc).__name__}: {str(exc)[:120]})")
    configs = [c for _, cs in groups for c in cs if keep(c)]
    configs = [dataclasses.replace(c, quiet=True, measure=sorted(set(c.measure) | set(measure_add)))
               for c in configs]
    order = {id(c): i for i, c in enumerate(configs)}
    return sorted(configs, key=lambda c: (c.seed, order[id(c)]))


def describe_run(summary: dict) -> str:
    m = summary.get("measurements", {})
    parts = [f"{summary.get('epochs_run', '?')} epochs"]
    if summary.get("test_acc") is not None:
        parts.append(f"test {summary['test_acc']:.2f} %")
    if m.get("epoch_time_mean_s") is not None:
        parts.append(f"epoch {m['epoch_time_mean_s']:.3f} s")
    e = m.get("energy", {})
    if e:
        parts.append(f"energy {e['energy_j']:.1f} J ({e['source']})" if e.get("energy_j") is not None
                     else f"energy not measured ({e.get('reason', e.get('source'))})")
    cuda = m.get("cuda_memory", {}).get("peak", {}).get("step_peak_allocated_bytes")
    cpu = m.get("cpu_memory", {}).get("peak", {}).get("peak_bytes")
    if cuda is not None:
        parts.append(f"CUDA peak {cuda / 1e6:.1f} MB")
    elif cpu is not None:
        parts.append(f"saved+state peak {cpu / 1e6:.2f} MB")
    return ", ".join(parts)


def run_configs(step: str, configs, deadline: float, dry_run: bool, results: Path) -> tuple[str, str]:
    """Run configs in this process until the deadline; one line each; the step's status and summary."""
    from benchmarks.datasets import DatasetUnavailable
    from benchmarks.run.runner import RunDiverged, run_experiment

    total = len(configs)
    if dry_run:
        originals = [f"{c.dataset} {c.arch_args} bs {c.batch_size}" for c in configs[:TINY_RUNS]]
        configs = [tiny(c, results) for c in configs[:TINY_RUNS]]
    done = reused = unavailable = stopped = failed = 0
    for i, cfg in enumerate(configs):
        if time.monotonic() >= deadline:
            break
        label = f"{cfg.algorithm} {cfg.dataset} {cfg.arch} {cfg.arch_args} bs {cfg.batch_size} seed {cfg.seed}"
        if dry_run:
            label += f" (for {originals[i]})"
        last = {}

        def on_epoch(row, last=last):
            last.update(row)
            if time.monotonic() >= deadline:
                raise OutOfTime(f"budget spent after epoch {row['epoch']}")

        try:
            result = run_experiment(cfg, on_epoch=on_epoch)
            env = json.loads((result.run_dir / "environment.json").read_text())
            device = env.get("gpu_model") or env.get("cpu_model")
            log(f"  {label}: {'reused' if result.reused else 'done'} on {device}: {describe_run(result.summary)} "
                f"[{result.run_dir.name}]")
            reused += result.reused
            done += 1
        except DatasetUnavailable as exc:
            unavailable += 1
            log(f"  {label}: dataset unavailable here ({str(exc).splitlines()[0][:160]})")
        except OutOfTime as exc:
            stopped += 1
            acc = {k: v for k, v in last.items() if k.startswith("val_acc_") or k.startswith("test_acc_")}
            log(f"  {label}: stopped, {exc}; last epoch {json.dumps(acc)} (folder left unfinished)")
        except RunDiverged as exc:
            done += 1
            log(f"  {label}: diverged ({exc})")
        except Exception as exc:  # noqa: BLE001 - one run's failure (OOM, a bug) is reported, the step goes on
            failed += 1
            log(f"  {label}: failed: {type(exc).__name__}: {str(exc)[:300]}")
        finally:
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
    attempted = done + unavailable + stopped + failed
    scope = f"tiny: first {len(configs)} of {total} paper-profile runs, on the CPU" if dry_run else \
        f"{total} paper-profile runs"
    text = (f"{done} finished ({reused} reused), {unavailable} dataset unavailable, {stopped} stopped at the budget, "
            f"{failed} failed, {len(configs) - attempted} not started; {scope}")
    if failed:
        return "failed", text
    if done == 0 and unavailable == attempted and attempted:
        return "skipped", "every run's dataset is unavailable here: " + text
    return ("ran" if attempted == len(configs) and not stopped else "partial"), text


# -- steps ----------------------------------------------------------------------------------------

def step_preflight(args, deadline) -> tuple[str, str]:
    from benchmarks.run.environment import describe_environment
    from benchmarks.datasets.base import default_data_dirs
    from benchmarks.measure.nvml import import_nvml

    cuda = torch.cuda.is_available()
    device = "cuda" if cuda else "cpu"
    env = describe_environment(device)
    log(f"  python {env['python']}, torch {env['torch']} (CUDA {env['cuda']}), device {device}")
    log(f"  GPU {env['gpu_model']}, NVML index {env['gpu_nvml_index']}, MIG {env['gpu_mig']}, driver "
        f"{env['nvidia_driver']}, CUDA_VISIBLE_DEVICES={env['cuda_visible_devices']}, TF32 {env['tf32']}")
    try:
        import_nvml()
        log("  nvidia-ml-py: importable")
    except RuntimeError as exc:
        log(f"  nvidia-ml-py: {exc}")
    for name in ("optuna", "codecarbon"):
        try:
            __import__(name)
            log(f"  {name}: installed")
        except ImportError:
            log(f"  {name}: not installed (its tests skip, its meter says 'not measured here')")
    dirs = default_data_dirs()
    found = {name: [str(d / name) for d in dirs if (d / name).exists()]
             for name in ("MNIST", "fashion-mnist", "FashionMNIST", "cifar10-jpeg")}
    log(f"  data folders searched: {[str(d) for d in dirs]}; found: {json.dumps(found)}")
    if not cuda:
        if args.dry_run:
            return "ran", "no CUDA device here: the dry run goes on, on the CPU at a tiny size"
        return "failed", "no CUDA device visible to torch: this is the GPU check (use --dry-run on a CPU)"
    return "ran", f"{env['gpu_model']} (driver {env['nvidia_driver']}, MIG {env['gpu_mig']})"


def step_tests(args, deadline) -> tuple[str, str]:
    cmd = [sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider", *GPU_TESTS, "-k", GPU_TEST_SELECTION]
    remaining = max(5.0, deadline - time.monotonic())
    try:
        out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=remaining)
    except subprocess.TimeoutExpired:
        return "partial", f"pytest did not finish within {remaining:.0f} s"
    lines = (out.stdout + out.stderr).strip().splitlines()
    for line in lines[-15:]:
        log(f"  {line}")
    tail = lines[-1] if lines else "no output"
    if out.returncode not in (0, 5):
        return "failed", f"pytest exit {out.returncode}: {tail}"
    if not torch.cuda.is_available():
        return "ran", f"{tail} (no CUDA here: the CUDA and NVML tests skip, the stubbed ones run)"
    return "ran", tail


def step_table5(args, deadline):
    return run_configs("table5", spec_configs("table5", args.results, measure_add=["energy"]), deadline,
                       args.dry_run, args.results)


def step_fig3(args, deadline):
    # the MLP half first (MNIST), then the CNN half (cifar10-jpeg, where it is on the machine)
    configs = spec_configs("fig3", args.results)
    configs.sort(key=lambda c: (c.arch != "mlp", c.seed))
    return run_configs("fig3", configs, deadline, args.dry_run, args.results)


def step_table3(args, deadline):
    keep = lambda c: c.arch_args.get("widths") == [1000, 1000]  # noqa: E731 - the 2x1000 group
    return run_configs("table3", spec_configs("table3", args.results, keep), deadline, args.dry_run, args.results)


def step_table2(args, deadline):
    keep = lambda c: c.dataset in ("mnist", "fmnist")  # noqa: E731 - cifar10-jpeg is too large to carry
    return run_configs("table2", spec_configs("table2", args.results, keep), deadline, args.dry_run, args.results)


def step_tables(args, deadline) -> tuple[str, str]:
    """Each table or figure by itself (bpfree plots), so that one that cannot be written here stops no other."""
    out_dir = args.results / "gpu_check"
    written, failed = [], []
    for target in ("table5", "fig3", "table3", "table2"):
        remaining = deadline - time.monotonic()
        if remaining < 3:
            failed.append(f"{target}: no time left")
            continue
        cmd = [sys.executable, "-m", "bpfree", "plots", "--results", str(args.results), "--out", str(out_dir),
               "--only", target]
        try:
            out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=remaining,
                                 env=dict(os.environ, PYTHONPATH=str(ROOT)))
        except subprocess.TimeoutExpired:
            failed.append(f"{target}: plots.py did not finish in time")
            continue
        lines = (out.stdout + out.stderr).strip().splitlines()
        for line in lines[:12]:
            log(f"  {line}")
        if out.returncode == 0:
            written.append(target)
        else:
            failed.append(f"{target}: plots.py exit {out.returncode}: {lines[-1] if lines else ''}")
    text = f"written under {out_dir}: {', '.join(written) or 'nothing'}" + \
        (f"; not written: {'; '.join(failed)}" if failed else "")
    return ("ran" if not failed else "partial" if written else "failed"), text


STEP_FUNCS = {"preflight": step_preflight, "tests": step_tests, "table5": step_table5, "fig3": step_fig3,
              "table3": step_table3, "table2": step_table2, "tables": step_tables}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("step", nargs="?", choices=list(STEP_FUNCS))
    p.add_argument("--list", action="store_true", help="print the steps and their budgets")
    p.add_argument("--budget", type=float, help="seconds this step may take (default: its own, above)")
    p.add_argument("--results", type=Path, default=ROOT / "results", help="results root (default results/)")
    p.add_argument("--dry-run", action="store_true", help="on the CPU at a tiny size")
    args = p.parse_args(argv)
    if args.list or not args.step:
        for name, budget in STEPS:
            print(f"{name} {budget}")
        return 0
    budget = args.budget if args.budget is not None else dict(STEPS)[args.step]
    started = time.monotonic()
    deadline = started + max(1.0, budget - 8)  # the margin: write the last run's files, print, exit
    args.results = args.results.resolve()
    os.environ.setdefault("BPFREE_NO_DOWNLOAD", "1")  # the lent machine has no network
    try:
        status, text = STEP_FUNCS[args.step](args, deadline)
    except Exception as exc:  # noqa: BLE001 - the step's own failure, said in one line
        status, text = "failed", f"{type(exc).__name__}: {exc}"
    text = "; ".join([text, *NOTES])
    line = f"[step] {args.step}: {status} - {text} ({time.monotonic() - started:.0f} s of {budget:.0f})"
    log(line)
    record = args.results / "gpu_check" / "steps.jsonl"
    record.parent.mkdir(parents=True, exist_ok=True)
    with open(record, "a") as f:
        f.write(json.dumps({"step": args.step, "status": status, "text": text, "dry_run": args.dry_run,
                            "seconds": round(time.monotonic() - started, 1), "budget_s": budget,
                            "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}) + "\n")
    return 1 if status == "failed" else 0
