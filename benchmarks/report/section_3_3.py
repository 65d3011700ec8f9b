"""Section 3.3 of the Mono-Forward paper (issue 15): hot-plugging layers, a damaged layer, layer-parallel
training, from the claims experiments' records (results/claims/*.json, benchmarks/claims). The rules
are in ``rules`` (``bitwise_equal``, ``plugged_as_good``, ``unplug_leaves_working_net``,
``damaged_layer``, ``layer_parallel``)."""

from __future__ import annotations

import json
from pathlib import Path

import benchmarks.report.rules as rules
from .common import MONO_FORWARD, Claim, fmt

SOURCE = f"{MONO_FORWARD}, Section 3.3"


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
            verdict, why = rules.bitwise_equal(equal)
            out.append(Claim(SOURCE, f"a trained 2-layer MF net's layers equal the first two of a trained 3-layer "
                             f"one ({dataset})", "identical outputs", f"MF bit for bit equal: {equal}; BP: "
                             f"{bp.get('all_bitwise_equal')}", f"{profile} profile, same seed, data order and "
                             "initial layers", "1", verdict, why, ["tables/claims_hotplug.md"]))
            out += _plug_claims(d, dataset, profile)
    for path in sorted(claims_dir.glob("damage_*.json")):
        record, profile = json.loads(path.read_text()), path.stem.split("_", 1)[1]
        out += _damage_claims(record, profile)
    for path in sorted(claims_dir.glob("parallel_*.json")):
        record, profile = json.loads(path.read_text()), path.stem.split("_", 1)[1]
        m = record.get("measured", {})
        mf, bp = m.get("mf_speedup"), m.get("bp_speedup")
        same = (record.get("pipeline_equals_one_process") or {}).get("bitwise_equal")
        verdict, why = rules.layer_parallel(mf, bp, profile)
        load = record.get("load_average_before")
        load = round(load, 1) if isinstance(load, (int, float)) else load
        if load:
            why = "; ".join(w for w in (why, f"load average {load} during the run") if w)
        out.append(Claim(SOURCE, "MF trains layer-parallel, faster than BP with data parallelism",
                         "claimed, not measured", f"2 processes: MF {fmt(mf)}x, BP (DDP) {fmt(bp)}x; pipeline "
                         f"equals one process: {same}", f"{profile} profile, {record.get('backend')}, "
                         f"{record.get('cores')} cores", "1", verdict, why, ["tables/claims_parallel.md"]))
    return out


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
        verdict, why = rules.plugged_as_good(acc, scratch, share, profile)
        out.append(Claim(SOURCE, f"a layer plugged onto a trained MF net and trained alone does as well as the "
                         f"deeper net trained from scratch ({dataset})", "claimed, not measured",
                         f"MF plugged {acc:.2f} vs from scratch {scratch:.2f} % in {share:.2f} of its training "
                         f"time{bp_words}", f"{profile} profile, 2x1000 + 1000, final epoch", "1", verdict, why, link))
    if unplug.get("mf"):
        m, b = unplug["mf"], unplug.get("bp", {})
        verdict, why = rules.unplug_leaves_working_net(m.get("unplugged_2_layers"), m.get("full_3_layers"),
                                                       m.get("trained_2_layers"), profile)
        out.append(Claim(SOURCE, f"the top layer of a trained MF net can be unplugged, leaving a working net "
                         f"({dataset})", "claimed, not measured",
                         f"MF unplugged {fmt(m.get('unplugged_2_layers'))} vs the full 3-layer net "
                         f"{fmt(m.get('full_3_layers'))} and its 2-layer net {fmt(m.get('trained_2_layers'))} %; BP "
                         f"unplugged {fmt(b.get('unplugged_2_layers'))} vs {fmt(b.get('full_3_layers'))} %",
                         f"{profile} profile, 3x1000", "1", verdict, why, link))
    return out


def _damage_claims(record: dict, profile: str) -> list[Claim]:
    """Per MF base run and damaged layer k >= 2, re-initialised (the worst damage): MF predicts from the
    layers below k within the margin of undamaged while BP's damaged stack does not, and retraining
    layer k alone brings MF back (``rules.damaged_layer``)."""
    out, link = [], ["tables/claims_damage.md"]
    bp_runs = {(r["dataset"], tuple(r["widths"])): r for r in record.get("runs", []) if r["algorithm"] == "bp"}
    for r in (r for r in record.get("runs", []) if r["algorithm"] == "mf"):
        net, bp = "x".join(map(str, r["widths"])), bp_runs.get((r["dataset"], tuple(r["widths"])), {})
        for k, layer in r["layers"].items():
            reinit = layer["damages"].get("reinit")
            if int(k) < 2 or not reinit:
                continue
            whole, below = r["undamaged"].get("ff"), reinit["no_retraining"].get("below")
            through = reinit["no_retraining"].get("ff")
            after = (reinit.get("retraining") or [{}])[-1].get("ff")
            bp_layer = bp.get("layers", {}).get(k, {}).get("damages", {}).get("reinit", {})
            bp_whole = bp.get("undamaged", {}).get("output")
            bp_damaged = bp_layer.get("no_retraining", {}).get("output")
            bp_after = (bp_layer.get("retraining") or [{}])[-1].get("test_acc")
            verdict, why = rules.damaged_layer(whole, below, after, bp_whole, bp_damaged, profile)
            out.append(Claim(SOURCE, f"with layer {k} destroyed, an MF net still predicts from the layers below it, "
                             f"and retraining layer {k} alone restores it ({r['dataset']}, {net})",
                             "claimed, not measured",
                             f"MF undamaged {fmt(whole)}; layers below {k}: {fmt(below)}; through the damaged layer "
                             f"{fmt(through)}; layer {k} retrained: {fmt(after)} %. BP undamaged {fmt(bp_whole)}, "
                             f"damaged {fmt(bp_damaged)} %, retrained {fmt(bp_after)} %",
                             f"{profile} profile, layer re-initialised", "1", verdict, why, link))
    return out
