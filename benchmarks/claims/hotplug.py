"""Hot-plugging layers (Section 3.3 of the Mono-Forward paper): equality, plug, unplug.

* **Equality.** The paper: "the outputs of the first two layers in a trained two-layer network are
  identical to those of the first two layers in a trained three-layer network". A 2-layer and a
  3-layer MF net with the same seed, the same data order and the simultaneous schedule are trained
  with ``trainer.update``; their first two layers' weights and outputs are compared bit for bit.
  The suite draws every block before the projections ``M_i``, so with the same seed alone the two
  nets start with the same blocks but different ``M_1, M_2``; the test therefore also starts the
  3-layer net from the 2-layer net's initial ``M_1, M_2`` (everything of layers 1-2 equal at the
  start), which is what the statement needs. BP, with the same seed (blocks 1-2 start equal), shows
  how far apart its first two layers end.
* **Plug.** A new third layer on the trained 2-layer net, trained alone (MF: its local loss; BP:
  blocks 1-2 frozen, a new block and a new head), against the 3-layer net from scratch: test
  accuracy per epoch and training time.
* **Unplug.** The trained 3-layer net without its top layer (MF: the first two layers' readouts;
  BP: blocks 1-2 straight into the head, which expects block 3's output).
"""

from __future__ import annotations

import time
from pathlib import Path

import torch

from .common import (bp_layer_step, build, fresh_optimizer, load_splits, mf_local_step, pick_device, profile,
                     test_acc, train_epochs, write_result)

SHARED = 2  # the paper's statement is about the first two layers


def shared_params(trainer, mf: bool) -> dict[str, torch.Tensor]:
    """The first two layers' parameters: blocks 1-2 and, for MF, their projections M_1, M_2."""
    out = {f"blocks.{i}.{k}": v for i in range(SHARED) for k, v in trainer.net.blocks[i].state_dict().items()}
    if mf:
        out.update({f"projections.{i}": trainer.projections[i].detach() for i in range(SHARED)})
    return out


@torch.no_grad()
def layer_outputs(trainer, x: torch.Tensor) -> list[torch.Tensor]:
    outs = []
    for block in trainer.net.blocks[:SHARED]:
        x = block(x)
        outs.append(x)
    return outs


def compare(a, b, mf: bool, x: torch.Tensor, init_a: dict | None = None) -> dict:
    """Bitwise equality, largest difference and relative (Frobenius) difference per shared tensor,
    and the same for the two layers' outputs on ``x``; for BP also how far each weight moved from
    its initial value, the scale the difference is set against."""
    pa, pb = shared_params(a, mf), shared_params(b, mf)
    out = {"params": {}, "outputs": {}}
    for k in pa:
        d = (pa[k] - pb[k]).float()
        row = {"bitwise_equal": bool(torch.equal(pa[k], pb[k])), "max_abs_diff": float(d.abs().max()),
               "rel_diff": float(d.norm() / pa[k].float().norm().clamp_min(1e-30))}
        if init_a is not None:
            moved = (pa[k] - init_a[k]).float().norm()
            row["moved_from_init_rel"] = float(moved / pa[k].float().norm().clamp_min(1e-30))
        out["params"][k] = row
    for i, (oa, ob) in enumerate(zip(layer_outputs(a, x), layer_outputs(b, x))):
        out["outputs"][f"layer{i + 1}"] = {"bitwise_equal": bool(torch.equal(oa, ob)),
                                           "max_abs_diff": float((oa - ob).abs().max())}
    out["all_bitwise_equal"] = all(r["bitwise_equal"] for part in ("params", "outputs") for r in out[part].values())
    return out


def copy_first_layers(src, dst, mf: bool) -> None:
    """Layers 1-2 of ``src`` (blocks and, for MF, projections) into ``dst``, in place."""
    with torch.no_grad():
        for i in range(SHARED):
            dst.net.blocks[i].load_state_dict(src.net.blocks[i].state_dict())
            if mf:
                dst.projections[i].copy_(src.projections[i])


def _snapshot(trainer, mf):
    return {k: v.detach().clone() for k, v in shared_params(trainer, mf).items()}


def _rows_summary(rows):
    return {"epochs": rows, "total_time_s": sum(r["time_s"] for r in rows), "final_test_acc": rows[-1]["test_acc"]}


def run_dataset(dataset: str, prof: dict, device: torch.device, data_dirs=None, log=print) -> dict:
    seed, epochs, w = prof["seed"], prof["epochs"], prof["width"]
    splits = load_splits(dataset, seed, prof["train_limit"], device, data_dirs)
    out = {"data": {"train": len(splits.train_y), "test": len(splits.test_y)}}

    # -- equality, MF ---------------------------------------------------------------------------
    mf2 = build("mf", splits, [w, w], seed, device)
    mf3_seed = build("mf", splits, [w, w, w], seed, device)  # same seed only
    init_seed_only = compare(mf2, mf3_seed, True, splits.test_x[:100])["params"]
    mf3 = build("mf", splits, [w, w, w], seed, device)
    copy_first_layers(mf2, mf3, mf=True)  # layers 1-2 start equal, M_1 and M_2 included
    plug_init = build("mf", splits, [w, w, w], seed, device)  # the new layer starts as mf3's layer 3
    log(f"hotplug {dataset}: MF 2 layers")
    rows_mf2 = train_epochs(mf2, splits, seed, epochs, mode="ff")
    log(f"hotplug {dataset}: MF 3 layers (layers 1-2 starting as the 2-layer net's)")
    rows_mf3 = train_epochs(mf3, splits, seed, epochs, mode="ff")
    log(f"hotplug {dataset}: MF 3 layers (same seed only)")
    train_epochs(mf3_seed, splits, seed, epochs, mode="ff")
    out["equality_mf"] = {"same_start": compare(mf2, mf3, True, splits.test_x),
                          "same_seed_only": {"at_init": init_seed_only,
                                             "after_training": compare(mf2, mf3_seed, True, splits.test_x)}}

    # -- equality, BP ---------------------------------------------------------------------------
    bp2 = build("bp", splits, [w, w], seed, device)
    bp3 = build("bp", splits, [w, w, w], seed, device)
    init_bp = compare(bp2, bp3, False, splits.test_x[:100])
    start_bp2 = _snapshot(bp2, False)
    bp3_init = build("bp", splits, [w, w, w], seed, device)  # block 3 and head of the plugged BP net
    log(f"hotplug {dataset}: BP 2 and 3 layers")
    rows_bp2 = train_epochs(bp2, splits, seed, epochs)
    rows_bp3 = train_epochs(bp3, splits, seed, epochs)
    out["equality_bp"] = {"init_bitwise_equal": init_bp["all_bitwise_equal"],
                          "after_training": compare(bp2, bp3, False, splits.test_x, init_a=start_bp2)}

    # -- plug: a new top layer on the trained 2-layer net, trained alone -----------------------
    copy_first_layers(mf2, plug_init, mf=True)
    opt = fresh_optimizer(plug_init, [*plug_init.net.blocks[2].parameters(), plug_init.projections[2]])
    log(f"hotplug {dataset}: MF plug a third layer")
    rows_plug_mf = train_epochs(plug_init, splits, seed, epochs, step=mf_local_step(plug_init, 2, opt), mode="ff")
    layer3_plug = test_acc(plug_init, splits, "layer3")
    copy_first_layers(bp2, bp3_init, mf=False)
    for p in bp3_init.net.blocks[:2].parameters():
        p.requires_grad_(False)
    opt = fresh_optimizer(bp3_init, [*bp3_init.net.blocks[2].parameters(), *bp3_init.net.head.parameters()])
    log(f"hotplug {dataset}: BP plug a third layer and a new head")
    rows_plug_bp = train_epochs(bp3_init, splits, seed, epochs, step=bp_layer_step(bp3_init, 2, opt))
    out["plug"] = {
        "mf": {"base_2_layers": _rows_summary(rows_mf2), "scratch_3_layers": _rows_summary(rows_mf3),
               "plugged": _rows_summary(rows_plug_mf), "plugged_layer3_alone_test_acc": layer3_plug,
               "scratch_layer3_alone_test_acc": test_acc(mf3, splits, "layer3")},
        "bp": {"base_2_layers": _rows_summary(rows_bp2), "scratch_3_layers": _rows_summary(rows_bp3),
               "plugged": _rows_summary(rows_plug_bp)},
    }

    # -- unplug: the trained 3-layer nets without their top layer ------------------------------
    mf_cut = build("mf", splits, [w, w], seed, device)
    copy_first_layers(mf3, mf_cut, mf=True)
    bp_cut = build("bp", splits, [w, w], seed, device)
    copy_first_layers(bp3, bp_cut, mf=False)
    bp_cut.net.head.load_state_dict(bp3.net.head.state_dict())  # 1000 -> classes, fed block 2 now
    out["unplug"] = {
        "mf": {"full_3_layers": test_acc(mf3, splits, "ff"), "unplugged_2_layers": test_acc(mf_cut, splits, "ff"),
               "trained_2_layers": test_acc(mf2, splits, "ff")},
        "bp": {"full_3_layers": test_acc(bp3, splits), "unplugged_2_layers": test_acc(bp_cut, splits),
               "trained_2_layers": test_acc(bp2, splits)},
    }
    return out


def run(profile_name: str, results: Path, data_dirs=None, device: str = "auto", log=print) -> Path:
    prof = profile(profile_name, "hotplug")
    dev = pick_device(device)
    started = time.perf_counter()
    value = {"experiment": "hotplug", "profile": profile_name, "settings": prof, "device": str(dev),
             "torch": torch.__version__, "threads": torch.get_num_threads(),
             "datasets": {d: run_dataset(d, prof, dev, data_dirs, log) for d in prof["datasets"]}}
    value["wall_time_s"] = time.perf_counter() - started
    return write_result(results, "hotplug", profile_name, value)
