"""The energy study (Spyra 2025) as a table: FF, CaFo and MF against BP on their own networks.

    rows, md = energy_study_table(spec, "quick", runs, statuses, tuning=...)   # pure: nothing is trained
    write_energy_study("results", "results")    # results/tables/energy_study.{md,csv}; returns notes/paths

One row per algorithm x dataset x network of ``benchmarks/specs/energy_study.yaml``: test accuracy,
training time, energy and peak memory, the differences to BP on the same network and dataset
(accuracy in points, time/energy/memory in percent of BP) and, beside them, the differences the
study published (``benchmarks/reference/spyra2025_summary.csv``). The markdown and CSV are
written by :mod:`benchmarks.tables.energy_render`.

Which runs: the spec is expanded for the profile with the profile's params file (the tuned
settings), and each expanded config is matched with the run folders by :func:`benchmarks.sweep.expand.run_key`,
so a table holds exactly the runs the spec asks for (runs of an older tuning do not mix in). A cell
without a finished run says why, from the sweep's status file: dataset not on this machine, failed,
diverged, or not run yet. Groups whose runs carry a memory meter and no ``time`` meter are the
memory runs: they give the memory column only.

Figures, per run, from ``summary.json``:

* accuracy: ``test_acc``, the test accuracy at the epoch of best validation accuracy in the
  algorithm's default prediction mode;
* time: ``measurements.train_time_s`` of the ``time`` meter, the wall time of all training epochs
  run (early stopping included; shuffling and evaluation excluded);
* energy: NVML's energy over the training steps (``energy.nvml.train_steps_energy_j``, GPU board)
  where the run has it, else CodeCarbon's over the training steps (``energy.codecarbon.train_steps_energy_j``,
  its tasks) or, for runs made before it had tasks, over the whole run (``energy.codecarbon.energy_j``,
  training and evaluation); flagged as an estimate where CodeCarbon estimated (CPU power from a TDP
  table times load, RAM power from its size); else "not measured here". No number is ever made up;
  a difference to BP is given only between figures of the same source;
* memory: ``measurements.cpu_memory.peak.peak_bytes``, the peak per training step of parameters,
  gradients, optimiser state and the tensors autograd saves for backward (the ``cpu-memory`` meter,
  on every device; the CUDA allocator's peak, which also holds the resident dataset, goes to the CSV).
"""

from __future__ import annotations

import csv
import statistics
from pathlib import Path
from typing import Any, Iterable

from benchmarks.run.config import ExperimentConfig
from benchmarks.tables.energy_render import NOT_MEASURED, energy_markdown, rows_to_csv
from benchmarks.run.environment import machine_of
from benchmarks.reference import PAPER_DATASET, load_spyra2025
from benchmarks.common.files import read_json
from benchmarks.run.folders import load_runs, prefer
from benchmarks.sweep.expand import expand, latest_statuses, load_spec, profile_names, run_key, status_file

SPEC = "energy_study"
TABLE = "energy_study"
MB = 1e6  # decimal megabytes, as the figures
MEMORY_METERS = {"memory", "cpu-memory", "cuda-memory", "cuda-memory-history"}
WHY_EMPTY = {"unavailable": "dataset not on this machine", "failed": "failed (see the sweep's log)",
             "diverged": "diverged", "": "not run yet"}


# -- one run ------------------------------------------------------------------------------------------

def config_key(config: dict[str, Any]) -> str:
    """:func:`run_key` of a config resolved with today's defaults, so that a run folder written before a
    new hyperparameter existed still matches; the key as written when it no longer resolves."""
    try:
        return run_key(ExperimentConfig.from_dict(config).resolve().to_dict())
    except Exception:  # noqa: BLE001 - an old or foreign config: match it as it is
        return run_key(config)


def energy_of(measurements: dict[str, Any]) -> tuple[float | None, str]:
    """(joules, source) of one run, from its energy meter's summary block."""
    e = measurements.get("energy")
    if e is None:
        return None, "no energy meter"
    if e.get("nvml"):
        nvml = e["nvml"]
        return nvml.get("train_steps_energy_j", nvml["energy_j"]), "NVML, training steps"
    if e.get("codecarbon") and e.get("energy_j") is not None:
        cc = e["codecarbon"]
        kind = "CodeCarbon estimate" if e.get("estimate") else "CodeCarbon"
        if cc.get("train_steps_energy_j") is not None:  # its tasks over the training steps (runs since 2026-12)
            return cc["train_steps_energy_j"], f"{kind}, training steps"
        return cc["energy_j"], f"{kind}, whole run"
    return None, NOT_MEASURED


def memory_of(measurements: dict[str, Any]) -> tuple[float | None, float | None]:
    """(peak state + saved tensors per step, CUDA allocator peak per step) in MB, where measured."""
    cpu = measurements.get("cpu_memory", {}).get("peak", {}).get("peak_bytes")
    cuda = measurements.get("cuda_memory", {}).get("peak", {}).get("step_peak_allocated_bytes")
    return (None if cpu is None else cpu / MB), (None if cuda is None else cuda / MB)


def _role(cfg: ExperimentConfig) -> str:
    return "memory" if set(cfg.measure) & MEMORY_METERS and "time" not in cfg.measure else "main"


def _mean_std(values: list[float]) -> tuple[float | None, float | None]:
    if not values:
        return None, None
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def _pct(x: float | None, base: float | None) -> float | None:
    return None if x is None or not base else 100.0 * (x - base) / base


# -- the table ----------------------------------------------------------------------------------------

def _expand(spec: dict[str, Any], profile: str, params_file: str | Path | None) -> tuple[list, str | None]:
    """The spec's runs with the tuned settings; without them (and a note) when there is no params file."""
    from benchmarks.tuning import untuned_spec  # the profile's params_file is passed explicitly below

    params_file = params_file or spec["profiles"].get(profile, {}).get("params_file") or spec.get("params_file")
    if params_file and not Path(params_file).is_file():
        return expand(untuned_spec(spec, profile), profile), (
            f"no params file {params_file}: the table expects the spec's untuned settings "
            f"(tune first: bpfree sweep {spec['name']} --profile {profile} --tune N)")
    return expand(untuned_spec(spec, profile), profile, params_file=params_file), None


def energy_study_table(spec: dict[str, Any], profile: str, runs: Iterable[dict[str, Any]],
                       statuses: dict[str, dict[str, Any]], *, params_file: str | Path | None = None,
                       tuning: dict[str, dict[str, Any]] | None = None,
                       reference: dict[tuple[str, str, str, str], float] | None = None
                       ) -> tuple[list[dict[str, Any]], str]:
    """Rows (one per algorithm x dataset x network) and their markdown, from loaded run folders.

    ``runs``: :func:`benchmarks.run.folders.load_run` dicts; ``statuses``: the sweep's latest outcomes by
    run key (:func:`benchmarks.sweep.expand.latest_statuses`); ``params_file``: the tuned settings (default:
    the profile's); ``tuning``: by params key, ``{"finished": trials}`` of each cell's study;
    ``reference``: the study's numbers (default :func:`load_spyra2025`).
    """
    groups, params_note = _expand(spec, profile, params_file)
    reference = load_spyra2025() if reference is None else reference
    tuning = tuning or {}
    # several folders of one run (e.g. made again after the code changed): the newest finished one
    by_key = prefer((r for r in runs if r["config"].get("tag") == spec["name"]), lambda r: config_key(r["config"]))

    cells: dict[tuple[str, str, str], dict[str, Any]] = {}
    for group, configs in groups:
        label = group.get("label") or group["arch"]
        for cfg in configs:
            cell = cells.setdefault((label, cfg.dataset, cfg.algorithm), {
                "label": label, "arch": cfg.arch, "dataset": cfg.dataset, "algorithm": cfg.algorithm,
                "main": [], "memory": []})
            cell[_role(cfg)].append(cfg)

    used: list[dict] = []
    figures: dict[tuple[str, str, str], dict[str, Any]] = {}
    for ckey, cell in cells.items():
        f: dict[str, Any] = {"notes": []}
        done, why = [], []
        for cfg in cell["main"]:
            key = run_key(cfg.resolve().to_dict())
            run = by_key.get(key)
            status = run["summary"].get("status") if run else None
            if status == "completed":
                done.append(run)
            else:
                why.append(status or statuses.get(key, {}).get("status", ""))
        used += done
        f["n"], f["expected"] = len(done), len(cell["main"])
        f["seeds"] = sorted(r["config"]["seed"] for r in done)
        if not done:
            f["status"] = WHY_EMPTY.get(_first_reason(why), _first_reason(why))
        else:
            f["status"] = "completed"
            if why:
                f["notes"].append(f"{len(why)} of {len(cell['main'])} seeds without a result "
                                  f"({', '.join(sorted({WHY_EMPTY.get(w, w) for w in why}))})")
        summaries = [r["summary"] for r in done]
        f["acc"] = _mean_std([s["test_acc"] for s in summaries if s.get("test_acc") is not None])
        f["epochs"] = _mean_std([s["epochs_run"] for s in summaries if s.get("epochs_run") is not None])[0]
        f["time"] = _mean_std([s["measurements"]["train_time_s"] for s in summaries
                               if s.get("measurements", {}).get("train_time_s") is not None])
        f["timed_with_memory_meter"] = any(set(r["config"].get("measure", [])) & MEMORY_METERS for r in done)
        energies = [energy_of(s.get("measurements", {})) for s in summaries]
        sources = sorted({src for _, src in energies})
        if len(sources) > 1:
            f["energy"], f["energy_source"] = (None, None), "mixed"
            f["notes"].append(f"energy of its seeds from different sources ({', '.join(sources)}): not averaged")
        else:
            f["energy"] = _mean_std([j for j, _ in energies if j is not None])
            f["energy_source"] = sources[0] if sources else None
        # memory: the memory runs, else the main runs if they carried a memory meter
        mem_runs = [by_key.get(run_key(c.resolve().to_dict())) for c in cell["memory"]]
        mem_runs = [r for r in mem_runs if r and r["summary"].get("status") == "completed"]
        mem = [memory_of(r["summary"].get("measurements", {})) for r in (mem_runs or done)]
        f["memory"] = _mean_std([m[0] for m in mem if m[0] is not None])[0]
        f["cuda_memory"] = _mean_std([m[1] for m in mem if m[1] is not None])[0]
        used += mem_runs
        if cell["algorithm"].startswith("cafo") and any(r["config"]["hparams"].get("loss") == "mse"
                                                        for r in (mem_runs or done)):
            f["notes"].append("loss=mse: its closed-form sums (float64 (features+1)^2 per block) are not in the "
                              "memory counter")
        f["devices"] = sorted({machine_of(r, with_threads=True) for r in done})
        if len(f["devices"]) > 1:
            f["notes"].append(f"seeds ran on different devices ({', '.join(f['devices'])}): time and energy "
                              "not compared with BP")
        f["batch_size"] = sorted({r["config"]["batch_size"] for r in done})
        f["lr"] = sorted({r["config"]["hparams"].get("lr") for r in done})
        figures[ckey] = f

    rows = []
    for ckey, cell in cells.items():
        f = figures[ckey]
        bp = figures.get((cell["label"], cell["dataset"], "bp")) if cell["algorithm"] != "bp" else None
        published = {metric: reference.get((cell["algorithm"], cell["label"],
                                            PAPER_DATASET.get(cell["dataset"], cell["dataset"]), metric))
                     for metric in ("acc_diff", "time_diff", "energy_diff")}

        acc, time_, energy = f["acc"], f["time"], f["energy"]
        # time and energy are compared only between runs of one device (run keys leave the device out,
        # so a table may hold runs of several machines); memory is counted the same way on every device
        same_device = bp is not None and len(f["devices"]) == 1 and bp["devices"] == f["devices"]
        if bp is not None and f["devices"] and bp["devices"] and not same_device and len(f["devices"]) == 1:
            f["notes"].append(f"ran on {f['devices'][0]}, BP on {', '.join(bp['devices'])}: time and energy "
                              "not compared")
        same_source = same_device and bp["energy_source"] == f["energy_source"]
        rows.append({
            "network": cell["label"], "arch": cell["arch"], "dataset": cell["dataset"],
            "algorithm": cell["algorithm"], "status": f["status"], "n": f["n"],
            "seeds": " ".join(map(str, f["seeds"])),
            "test_acc": acc[0], "test_acc_std": acc[1],
            "acc_diff_points": (acc[0] - bp["acc"][0]) if bp and acc[0] is not None and bp["acc"][0] is not None
            else None,
            "study_acc_diff_points": published["acc_diff"],
            "epochs_run": f["epochs"], "train_time_s": time_[0], "train_time_std": time_[1],
            "time_diff_pct": _pct(time_[0], bp["time"][0]) if same_device else None,
            "study_time_diff_pct": published["time_diff"],
            "energy_j": energy[0], "energy_std": energy[1], "energy_source": f["energy_source"],
            "energy_diff_pct": _pct(energy[0], bp["energy"][0]) if same_source else None,
            "study_energy_diff_pct": published["energy_diff"],
            "peak_memory_mb": f["memory"],
            "memory_counter": "state + saved tensors per step (cpu-memory meter)" if f["memory"] is not None else None,
            "memory_diff_pct": _pct(f["memory"], bp["memory"]) if bp else None,
            "cuda_peak_allocated_mb": f["cuda_memory"],
            "batch_size": " ".join(map(str, f["batch_size"])), "lr": " ".join(f"{v:.3g}" for v in f["lr"] if v is not None),
            "trials": tuning.get(f"{cell['algorithm']}/{cell['dataset']}/{cell['label']}", {}).get("finished"),
            "note": "; ".join(f["notes"]),
        })
    return rows, energy_markdown(spec, profile, rows, used, params_note, figures)


def _first_reason(why: list[str]) -> str:
    for status in ("unavailable", "diverged", "failed"):
        if status in why:
            return status
    return why[0] if why else ""


# -- from the results folder ----------------------------------------------------------------------------

def tuning_summary(spec: dict[str, Any], profile: str, studies_dir: str | Path) -> dict[str, dict[str, Any]]:
    """``{params key: {"finished": n, "val_acc": best}}`` from each cell's study files under ``studies_dir``."""
    from benchmarks.tuning import params_key, spec_cells, spec_study_name  # imports Optuna

    out = {}
    for label, base in spec_cells(spec, profile):
        study = spec_study_name(base, label, profile)
        trials_csv = Path(studies_dir) / f"{study}.csv"
        if not trials_csv.is_file():
            continue
        with open(trials_csv, newline="") as f:
            states = [row.get("state") for row in csv.DictReader(f)]
        info: dict[str, Any] = {"finished": sum(s in ("COMPLETE", "PRUNED") for s in states)}
        best = Path(studies_dir) / f"{study}.best.json"
        if best.is_file():
            info["val_acc"] = read_json(best).get("val_acc")
        out[params_key(base, label)] = info
    return out


def write_energy_study(results_root: str | Path, out_dir: str | Path, profile: str | None = None,
                       spec: str | Path | dict[str, Any] = SPEC, params_file: str | Path | None = None,
                       log=None) -> list[str]:
    """Write ``<out_dir>/tables/energy_study.{md,csv}`` from ``<results_root>`` (runs/, sweeps/, studies/).

    ``profile`` None takes the profile with the most finished runs present (ties: the spec's order).
    Returns notes and the paths written.
    """
    spec = spec if isinstance(spec, dict) else load_spec(spec)
    results_root = Path(results_root)
    runs = [r for r in load_runs(results_root / "runs") if r["config"].get("tag") == spec["name"]]
    candidates = [profile] if profile else profile_names(spec)
    best = None
    for name in candidates:
        statuses = latest_statuses(status_file(results_root, spec["name"], name))
        tuning = tuning_summary(spec, name, results_root / "studies")
        rows, md = energy_study_table(spec, name, runs, statuses, params_file=params_file, tuning=tuning)
        score = sum(r["n"] for r in rows)
        if best is None or score > best[0]:
            best = (score, name, rows, md)
    score, name, rows, md = best
    out = Path(out_dir) / "tables"
    out.mkdir(parents=True, exist_ok=True)
    md_path, csv_path = out / f"{TABLE}.md", out / f"{TABLE}.csv"
    md_path.write_text(md)
    csv_path.write_text(rows_to_csv(rows))
    if log is not None:
        log(md)
    notes = [] if score else [f"{TABLE}: no finished runs of spec {spec['name']} "
                              f"(make reproduce-energy-study PROFILE={name})"]
    return notes + [str(md_path), str(csv_path)]
