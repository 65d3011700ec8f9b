"""The energy study's table as markdown and CSV (the rows come from :mod:`benchmarks.tables.energy_study`)."""

from __future__ import annotations

import csv
import io
import math
from typing import Any

from benchmarks.run.config import ExperimentConfig
from benchmarks.run.environment import machine_of

NOT_MEASURED = "not measured here"  # the energy meter's own words (benchmarks/measure/energy.py)
ALGO_LABEL = {"bp": "BP", "mf": "MF", "ff": "FF", "fa": "FA", "dfa": "DFA", "cafo-rand": "CaFo-Rand",
              "cafo-dfa": "CaFo-DFA"}
CSV_FIELDS = ["network", "arch", "dataset", "algorithm", "status", "n", "seeds", "test_acc", "test_acc_std",
              "acc_diff_points", "study_acc_diff_points", "epochs_run", "train_time_s", "train_time_std",
              "time_diff_pct", "study_time_diff_pct", "energy_j", "energy_std", "energy_source",
              "energy_diff_pct", "study_energy_diff_pct", "peak_memory_mb", "memory_counter", "memory_diff_pct",
              "cuda_peak_allocated_mb", "batch_size", "lr", "trials", "note"]


def _num(value: float | None, digits: int) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


def _with_std(mean: float | None, std: float | None, n: int, digits: int) -> str:
    if mean is None:
        return "—"
    return f"{mean:.{digits}f}" + (f" ± {std:.{digits}f}" if n > 1 and std is not None else "")


def _sig(value: float, figures: int = 3) -> str:
    """``figures`` significant digits without an exponent: 336, 12300, 0.0123."""
    if value == 0:
        return "0"
    digits = figures - 1 - math.floor(math.log10(abs(value)))
    return f"{round(value, digits):.{max(0, digits)}f}"


def _energy(row: dict[str, Any]) -> str:
    if row["energy_j"] is None:
        return NOT_MEASURED if row["energy_source"] == NOT_MEASURED else "—"
    text = _sig(row["energy_j"])
    if row["n"] > 1 and row["energy_std"] is not None:
        text += f" ± {_sig(row['energy_std'])}"
    return text


def _signed(value: float | None, digits: int, unit: str = "") -> str:
    return "—" if value is None else f"{value:+.{digits}f}{unit}"


def _describe_profile(spec: dict[str, Any], profile: str, rows: list[dict[str, Any]]) -> str:
    prof = spec["profiles"][profile]
    parts = [f"training subset of {prof['train_limit']}" if prof.get("train_limit") else "full training sets"]
    epochs = prof.get("epochs", ExperimentConfig.epochs)
    parts.append(f"up to {epochs} epochs, patience {prof['patience']}" if prof.get("patience")
                 else f"{epochs} epochs")
    seeds = prof.get("seeds", [0])
    parts.append(f"{len(seeds)} seed{'s' if len(seeds) != 1 else ''}")
    trials = {r["trials"] for r in rows if r["trials"] is not None}
    if not trials:
        parts.append("no tuning studies found")
    elif len(trials) == 1:
        n = next(iter(trials))
        parts.append(f"{n} Optuna trial{'s' if n != 1 else ''} per cell")
    else:
        parts.append("Optuna trials per cell differ: see the trials column")
    return ", ".join(parts)


def energy_markdown(spec, profile, rows, used, params_note, figures) -> str:
    desc = _describe_profile(spec, profile, rows)
    if profile == "quick":
        title = f"**Energy study (Spyra 2025), QUICK profile ({desc}), NOT the study's protocol**"
    elif profile == "paper":
        title = f"**Energy study (Spyra 2025), paper profile ({desc})**"
    else:
        title = f"**Energy study (Spyra 2025), profile {profile} ({desc})**"
    devices = sorted({machine_of(r, with_threads=True) for r in used})
    lines = [title, "",
             f"FF, CaFo and MF against BP on the same network and dataset; every algorithm tuned with the same "
             f"Optuna budget on a validation split, then trained with its tuned settings. Measured on "
             f"{', '.join(devices) or '—'}.", "",
             "| network | dataset | algorithm | n | test acc (%) | Δ acc (points) | study Δ acc | epochs | "
             "train time (s) | Δ time | study Δ time | energy (J) | energy source | Δ energy | study Δ energy | "
             "peak memory (MB) | Δ memory | trials |",
             "|---|---|---|---:|---|---:|---:|---:|---|---:|---:|---|---|---:|---:|---:|---:|---:|"]
    for r in rows:
        alg = ALGO_LABEL.get(r["algorithm"], r["algorithm"])
        base = r["algorithm"] == "bp"
        n = r["n"]
        expected = figures[(r["network"], r["dataset"], r["algorithm"])]["expected"]
        count = f"{n}/{expected}" if 0 < n < expected else str(n)
        acc = _with_std(r["test_acc"], r["test_acc_std"], n, 2) if n else r["status"]
        lines.append(
            f"| {r['network']} | {r['dataset']} | {alg} | {count} | {acc} | "
            f"{'baseline' if base else _signed(r['acc_diff_points'], 2)} | {_signed(r['study_acc_diff_points'], 2)} | "
            f"{_num(r['epochs_run'], 1)} | {_with_std(r['train_time_s'], r['train_time_std'], n, 1)} | "
            f"{'' if base else _signed(r['time_diff_pct'], 1, ' %')} | {_signed(r['study_time_diff_pct'], 1, ' %')} | "
            f"{_energy(r)} | {r['energy_source'] if r['energy_j'] is not None else '—'} | "
            f"{'' if base else _signed(r['energy_diff_pct'], 1, ' %')} | "
            f"{_signed(r['study_energy_diff_pct'], 1, ' %')} | {_num(r['peak_memory_mb'], 1)} | "
            f"{'' if base else _signed(r['memory_diff_pct'], 1, ' %')} | "
            f"{'—' if r['trials'] is None else r['trials']} |")
    notes = [
        "test acc: at the epoch of best validation accuracy, in the algorithm's default prediction mode (MF: ff, "
        "FF: goodness, CaFo: sum); mean ± std over n seeds.",
        "Δ: against BP on the same network and dataset; accuracy in points, time, energy and memory in % of BP. "
        "study: the differences Spyra 2025 published (its CIFAR-10 is the original; ours is cifar10-jpeg, a lossy "
        "JPEG copy); — where it published none.",
        "train time: wall time of all training epochs run (time meter: perf_counter around each epoch's training "
        "steps, device synchronised; shuffling and evaluation excluded), early stopping included; epochs: mean "
        "number of epochs run.",
    ]
    sources = sorted({r["energy_source"] for r in rows if r["n"] and r["energy_source"]})
    explain = {
        "NVML, training steps": "NVML: the GPU's energy counter over the training steps (GPU board only)",
        "CodeCarbon estimate, whole run": "CodeCarbon estimate: CodeCarbon over the whole run, training and "
                                          "evaluation, with CPU power estimated (TDP table or default watts "
                                          "times load) and RAM power from its size: not a measurement",
        "CodeCarbon, whole run": "CodeCarbon: measured (RAPL/NVML) over the whole run, training and evaluation",
        "CodeCarbon estimate, training steps": "CodeCarbon estimate, training steps: one CodeCarbon task over each "
                                               "epoch's training steps (evaluation and epoch 1 left out), with "
                                               "CPU power estimated (TDP table or default watts times load) and "
                                               "RAM power from its size: not a measurement",
        "CodeCarbon, training steps": "CodeCarbon, training steps: measured (RAPL/NVML) over each epoch's "
                                      "training steps (evaluation and epoch 1 left out)",
        NOT_MEASURED: f"{NOT_MEASURED}: no energy source on the machine of the run (the run says why); no number "
                      "is given",
    }
    if sources:
        notes.append("energy: " + "; ".join(explain.get(s, s) for s in sources)
                     + ". A difference to BP is given only between figures of the same source.")
    notes.append("peak memory: peak per training step of parameters + gradients + optimiser state + tensors "
                 "saved for backward (cpu-memory meter, MB = 10^6 bytes), from separate short runs of the same "
                 "settings with the memory meter alone (its hooks would slow the timed runs); the study "
                 "published no memory differences.")
    if any(figures[k]["timed_with_memory_meter"] for k in figures):
        notes.append("some timed runs carried a memory meter too: their time and energy include its hooks.")
    notes.append("trials: finished Optuna trials (complete + pruned) of each cell's study; each trial trained "
                 "with the profile's epochs and patience.")
    notes.append("BP on cafo-cnn: the same three conv blocks with a linear head on the last block, trained end "
                 "to end.")
    if params_note:
        notes.append(params_note)
    for r in rows:
        if r["note"]:
            notes.append(f"{r['network']} {r['dataset']} {ALGO_LABEL.get(r['algorithm'], r['algorithm'])}: {r['note']}")
    return "\n".join(lines) + "\n\n" + "".join(f"- {n}\n" for n in notes)


def _csv_value(value: Any) -> Any:
    if value is None:
        return ""
    return round(value, 6) if isinstance(value, float) else value  # no float noise (97.69999999999999)


def rows_to_csv(rows: list[dict[str, Any]]) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=CSV_FIELDS, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: _csv_value(row.get(k)) for k in CSV_FIELDS})
    return out.getvalue()
