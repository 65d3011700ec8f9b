"""The energy study's claims (Spyra 2025): FF, CaFo and MF against BP in accuracy, training time and
energy, from results/tables/energy_study.csv. A difference counts only outside the run-to-run noise
(``rules.difference_noise``, ``rules.same_direction_beyond_noise``): the seeds' spread where there are
two seeds or more, never less than a stated threshold."""

from __future__ import annotations

from pathlib import Path

import benchmarks.report.rules as rules
from .common import SPYRA, Claim, num, read_csv

# what -> (our difference, the study's, the unit, the per-algorithm mean and std it is computed from)
MEASURES = (("accuracy", "acc_diff_points", "study_acc_diff_points", "points", "test_acc", "test_acc_std"),
            ("training time", "time_diff_pct", "study_time_diff_pct", "%", "train_time_s", "train_time_std"),
            ("energy", "energy_diff_pct", "study_energy_diff_pct", "%", "energy_j", "energy_std"))


def energy_study(tables_dir: Path) -> list[Claim]:
    """Spyra 2025: FF, CaFo and MF against BP in accuracy, training time and training energy."""
    out = []
    rows = read_csv(tables_dir / "energy_study.csv")
    bp_rows = {(r["network"], r["dataset"]): r for r in rows if r["algorithm"] == "bp"}
    for r in rows:
        if r["algorithm"] == "bp":
            continue
        label = f"{r['algorithm'].upper()} vs BP: {r['network']}, {r['dataset']}"
        profile = "paper" if "quick" not in (r.get("note") or "") and num(r.get("trials")) and num(r["trials"]) >= 30 \
            else "quick"
        if r["status"] != "completed":
            verdict, why = rules.missing(r.get("note") or r["status"])
            out.append(Claim(SPYRA, label, "—", "—", "energy study", r["n"], verdict, why, ["tables/energy_study.md"]))
            continue
        bp = bp_rows.get((r["network"], r["dataset"]), {})
        for what, ours_key, study_key, unit, mean_key, std_key in MEASURES:
            ours, study = num(r.get(ours_key)), num(r.get(study_key))
            if study is None:
                continue
            shown = f" {unit}"
            if what == "energy" and "whole run" in (r.get("energy_source") or ""):
                out.append(Claim(SPYRA, f"{label}: {what}", f"{study:+.2f}{shown}",
                                 "—" if ours is None else f"{ours:+.2f}{shown}",
                                 f"{profile} profile, {r['energy_source']}", r["n"], "not measurable here",
                                 "the committed energy covers whole runs (evaluation in every prediction mode "
                                 "included) and is CodeCarbon's estimate; the study compares training alone",
                                 ["tables/energy_study.md"]))
                continue
            noise, noise_words = rules.difference_noise(
                unit, num(r.get(mean_key)), num(r.get(std_key)), int(num(r.get("n")) or 0),
                num(bp.get(mean_key)), num(bp.get(std_key)), int(num(bp.get("n")) or 0))
            verdict, why = rules.same_direction_beyond_noise(ours, study, noise, noise_words, profile)
            protocol = f"{profile} profile"
            if what == "energy":  # training steps alone, as the study measured; say whose figure it is
                protocol += f", {r.get('energy_source')}"
                if "estimate" in (r.get("energy_source") or ""):
                    why = "; ".join(filter(None, [why, "CodeCarbon's estimate (CPU power from TDP times load, RAM "
                                                       "from its size), not a measurement"]))
            out.append(Claim(SPYRA, f"{label}: {what}", f"{study:+.2f}{shown}",
                             "—" if ours is None else f"{ours:+.2f}{shown}", protocol, r["n"], verdict, why,
                             ["tables/energy_study.md"]))
    return out
