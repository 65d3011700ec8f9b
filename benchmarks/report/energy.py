"""The energy study's claims (Spyra 2025): FF, CaFo and MF against BP in accuracy, training time and
energy, from results/tables/energy_study.csv."""

from __future__ import annotations

from pathlib import Path

from .common import Claim, num, quick_note, read_csv


def energy_study(tables_dir: Path) -> list[Claim]:
    """Spyra 2025: FF, CaFo and MF against BP in accuracy, training time and training energy."""
    out = []
    for r in read_csv(tables_dir / "energy_study.csv"):
        if r["algorithm"] == "bp":
            continue
        label = f"{r['algorithm'].upper()} vs BP: {r['network']}, {r['dataset']}"
        profile = "paper" if "quick" not in (r.get("note") or "") and num(r.get("trials")) and num(r["trials"]) >= 30 \
            else "quick"
        if r["status"] != "completed":
            out.append(Claim("Spyra 2025", label, "—", "—", "energy study", r["n"], "not measurable here",
                             r.get("note") or r["status"], ["tables/energy_study.md"]))
            continue
        for what, ours_key, study_key, unit in (("accuracy", "acc_diff_points", "study_acc_diff_points", " points"),
                                                ("training time", "time_diff_pct", "study_time_diff_pct", " %"),
                                                ("energy", "energy_diff_pct", "study_energy_diff_pct", " %")):
            ours, study = num(r[ours_key]), num(r[study_key])
            if study is None:
                continue
            why = quick_note(profile)
            if what == "energy" and "whole run" in (r.get("energy_source") or ""):
                out.append(Claim("Spyra 2025", f"{label}: {what}", f"{study:+.2f}{unit}",
                                 "—" if ours is None else f"{ours:+.2f}{unit}",
                                 f"{profile} profile, {r['energy_source']}", r["n"], "not measurable here",
                                 "the committed energy covers whole runs (evaluation in every prediction mode "
                                 "included) and is CodeCarbon's estimate; the study compares training alone",
                                 ["tables/energy_study.md"]))
                continue
            same_sign = ours is not None and (ours >= 0) == (study >= 0)
            verdict = "confirmed" if same_sign and profile == "paper" else "not confirmed"
            why = why or ("" if same_sign else "the difference has the other sign")
            protocol = f"{profile} profile"
            if what == "energy":  # training steps alone, as the study measured; say whose figure it is
                protocol += f", {r.get('energy_source')}"
                if "estimate" in (r.get("energy_source") or ""):
                    why = "; ".join(filter(None, [why, "CodeCarbon's estimate (CPU power from TDP times load, RAM "
                                                       "from its size), not a measurement"]))
            out.append(Claim("Spyra 2025", f"{label}: {what}", f"{study:+.2f}{unit}",
                             "—" if ours is None else f"{ours:+.2f}{unit}", protocol, r["n"], verdict, why,
                             ["tables/energy_study.md"]))
    return out
