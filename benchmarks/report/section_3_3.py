"""Section 3.3 of the Mono-Forward paper (issue 15): hot-plugging layers, a damaged layer, layer-parallel
training, from the claims experiments' records (results/claims/*.json, benchmarks/claims)."""

from __future__ import annotations

import json
from pathlib import Path

from .common import Claim, fmt, quick_note

SOURCE = "Mono-Forward paper, Section 3.3"
LEVEL = 0.5  # points: an accuracy "as good as" another is at most this far below it (one seed each)


def section_3_3(claims_dir: Path) -> list[Claim]:
    """Section 3.3's claims, from results/claims/*.json (benchmarks/claims): hot-plugging, a damaged
    layer, layer-parallel training. An exact equality is a fact of the code, whatever the profile;
    an accuracy or speed-up from the quick profile is never confirmed."""
    out = []
    for path in sorted(claims_dir.glob("hotplug_*.json")):
        record, profile = json.loads(path.read_text()), path.stem.split("_", 1)[1]
        for dataset, d in record.get("datasets", {}).items():
            mf = d.get("equality_mf", {}).get("same_start", {})
            bp = d.get("equality_bp", {}).get("after_training", {})
            equal = mf.get("all_bitwise_equal")
            out.append(Claim(SOURCE, f"a trained 2-layer MF net's layers equal the first two of a trained 3-layer "
                             f"one ({dataset})", "identical outputs", f"MF bit for bit equal: {equal}; BP: "
                             f"{bp.get('all_bitwise_equal')}", f"{profile} profile, same seed, data order and "
                             "initial layers", "1", "confirmed" if equal else "not confirmed",
                             "" if equal else "the layers differ", ["tables/claims_hotplug.md"]))
            out += _plug_claims(d, dataset, profile)
    for path in sorted(claims_dir.glob("damage_*.json")):
        record, profile = json.loads(path.read_text()), path.stem.split("_", 1)[1]
        out += _damage_claims(record, profile)
    for path in sorted(claims_dir.glob("parallel_*.json")):
        record, profile = json.loads(path.read_text()), path.stem.split("_", 1)[1]
        m = record.get("measured", {})
        mf, bp = m.get("mf_speedup"), m.get("bp_speedup")
        same = (record.get("pipeline_equals_one_process") or {}).get("bitwise_equal")
        agrees = mf is not None and bp is not None and mf > 1 and mf > bp
        load = record.get("load_average_before")
        load = round(load, 1) if isinstance(load, (int, float)) else load
        why = quick_note(profile) if profile != "paper" else ("" if agrees else "no speed-up over one process")
        if load:
            why += f"; load average {load} during the run" if why else f"load average {load} during the run"
        out.append(Claim(SOURCE, "MF trains layer-parallel, faster than BP with data parallelism",
                         "claimed, not measured", f"2 processes: MF {fmt(mf)}x, BP (DDP) {fmt(bp)}x; pipeline "
                         f"equals one process: {same}", f"{profile} profile, {record.get('backend')}, "
                         f"{record.get('cores')} cores", "1", "confirmed" if agrees and profile == "paper"
                         else "not confirmed", why, ["tables/claims_parallel.md"]))
    return out


def _verdict(agrees: bool, profile: str, why_not: str) -> tuple[str, str]:
    if profile != "paper":
        return "not confirmed", quick_note(profile) + ("; agrees there" if agrees else "; disagrees there")
    return ("confirmed", "") if agrees else ("not confirmed", why_not)


def _plug_claims(d: dict, dataset: str, profile: str) -> list[Claim]:
    """Plug a layer onto a trained MF net and train it alone; unplug the top layer of a trained one."""
    out, link = [], ["tables/claims_hotplug.md"]
    plug, unplug = d.get("plug", {}), d.get("unplug", {})
    mf, bp = plug.get("mf", {}), plug.get("bp", {})
    if mf.get("plugged") and mf.get("scratch_3_layers"):
        acc, scratch = mf["plugged"]["final_test_acc"], mf["scratch_3_layers"]["final_test_acc"]
        share = mf["plugged"]["total_time_s"] / mf["scratch_3_layers"]["total_time_s"]
        bp_words = (f"; BP with layers 1-2 frozen and a new head: {bp['plugged']['final_test_acc']:.2f} vs "
                    f"{bp['scratch_3_layers']['final_test_acc']:.2f}" if bp.get("plugged") else "")
        verdict, why = _verdict(acc >= scratch - LEVEL and share < 1, profile,
                                "the plugged net is below the one trained from scratch, or no cheaper")
        out.append(Claim(SOURCE, f"a layer plugged onto a trained MF net and trained alone does as well as the "
                         f"deeper net trained from scratch ({dataset})", "claimed, not measured",
                         f"MF plugged {acc:.2f} vs from scratch {scratch:.2f} % in {share:.2f} of its training "
                         f"time{bp_words}", f"{profile} profile, 2x1000 + 1000, final epoch", "1", verdict, why, link))
    if unplug.get("mf"):
        m, b = unplug["mf"], unplug.get("bp", {})
        verdict, why = _verdict(m["unplugged_2_layers"] >= m["trained_2_layers"] - LEVEL, profile,
                                "dropping the top layer costs more than the 2-layer net's accuracy")
        out.append(Claim(SOURCE, f"the top layer of a trained MF net can be unplugged, leaving a working net "
                         f"({dataset})", "claimed, not measured",
                         f"MF unplugged {m['unplugged_2_layers']:.2f} vs its 2-layer net {m['trained_2_layers']:.2f} "
                         f"%; BP unplugged {fmt(b.get('unplugged_2_layers'))} %", f"{profile} profile, 3x1000",
                         "1", verdict, why, link))
    return out


def _damage_claims(record: dict, profile: str) -> list[Claim]:
    """Per MF base run and damaged layer k >= 2, re-initialised (the worst damage): MF predicts from the
    layers below k as well as undamaged, and retraining layer k alone brings it back."""
    out, link = [], ["tables/claims_damage.md"]
    bp_runs = {(r["dataset"], tuple(r["widths"])): r for r in record.get("runs", []) if r["algorithm"] == "bp"}
    for r in (r for r in record.get("runs", []) if r["algorithm"] == "mf"):
        net, bp = "x".join(map(str, r["widths"])), bp_runs.get((r["dataset"], tuple(r["widths"])), {})
        for k, layer in r["layers"].items():
            reinit = layer["damages"].get("reinit")
            if int(k) < 2 or not reinit:
                continue
            whole, below = r["undamaged"]["ff"], reinit["no_retraining"]["below"]
            after = (reinit.get("retraining") or [{}])[-1].get("ff")
            bp_layer = bp.get("layers", {}).get(k, {}).get("damages", {}).get("reinit", {})
            bp_after = (bp_layer.get("retraining") or [{}])[-1].get("test_acc")
            agrees = below >= whole - 1.0 and (after is None or after >= whole - LEVEL)
            verdict, why = _verdict(agrees, profile, "the layers below k, or the retrained net, fall short of the "
                                    "undamaged net")
            out.append(Claim(SOURCE, f"with layer {k} destroyed, an MF net still predicts from the layers below it, "
                             f"and retraining layer {k} alone restores it ({r['dataset']}, {net})",
                             "claimed, not measured",
                             f"MF undamaged {whole:.2f}; layers below {k}: {below:.2f}; layer {k} retrained: "
                             f"{fmt(after)} %. BP: {fmt(bp_layer.get('no_retraining', {}).get('output'))} %, "
                             f"retrained {fmt(bp_after)} %", f"{profile} profile, layer re-initialised", "1",
                             verdict, why, link))
    return out
