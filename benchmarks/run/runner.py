"""Run one experiment: build data, trainer and meters from a config, train, write the run folder.

The runner never branches on an algorithm's name: it only uses the trainer interface
(``start_epoch``, ``update``, ``predict``, ``prediction_modes``, ``phase``). Finished runs are
reused unless ``force`` is given; an unfinished folder is started again from scratch.
"""

from __future__ import annotations

import contextlib
import math
import random
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from tqdm import tqdm

from algorithms import ALGORITHMS, ARCHITECTURES, ConfigError
from algorithms.base import Trainer

from benchmarks.run.config import ExperimentConfig
from benchmarks.datasets import Splits, load_dataset, prepare_splits
from benchmarks.run.environment import SOURCE_DIFFS, describe_environment, record_source, training_code_sha256
from benchmarks.measure import METERS, RunContext, close_meters, synchronize
from benchmarks.common.numerics import autocast, run_numerics
from benchmarks.run.divergence import chance_accuracy, thresholds, verdict, verdict_stands
from benchmarks.run.evaluation import TRAIN_EVAL_FLOOR, accuracies, evaluate, scores_test, train_eval_images  # noqa: F401
from benchmarks.common.files import WriteFailed, append_jsonl, check_writable, rewrite_jsonl, write_failed, write_json
from benchmarks.run.folders import RunBusy, finished_summary, hold_run, mark_done
from benchmarks.run.resume import RESUME_EVERY_S, can_resume, drop_state, restore_state, resumable, save_state

CHECK_EVERY = 50  # steps between checks for a non-finite loss (each check waits for the device)
CHECKPOINT = "model.pt"  # the trainer's state_dict when config.save is best or final


def save_checkpoint(trainer: Trainer, run_dir: Path) -> None:
    """The trainer's weights (its state_dict, tensors only) into the run folder, atomically.

    Written through a Python file, so that a full disk is an ``OSError`` with its errno (torch's own
    writer reports it as an obscure ``RuntimeError``); a failed write leaves no temporary file and
    raises :class:`WriteFailed`."""
    tmp = run_dir / f".{CHECKPOINT}.tmp"
    state = {k: v.detach().cpu() for k, v in trainer.state_dict().items()}
    try:
        with open(tmp, "wb") as f:
            torch.save(state, f)
        tmp.replace(run_dir / CHECKPOINT)
    except BaseException as exc:
        tmp.unlink(missing_ok=True)
        if isinstance(exc, Exception):
            cause = exc.__cause__ or exc.__context__
            raise write_failed(run_dir / CHECKPOINT, cause if isinstance(cause, OSError) else exc) from exc
        raise


class RunDiverged(RuntimeError):
    """The run diverged (benchmarks/run/divergence.py); the run folder records it as diverged, with why."""

    def __init__(self, message: str, run_dir: Path | None = None):
        super().__init__(message)
        self.run_dir = run_dir  # the run folder that records it (its name is the run's id)


__all__ = ["RunBusy", "RunDiverged", "RunResult", "WriteFailed", "run_experiment"]  # RunBusy: another process trains the run


@dataclass
class RunResult:
    run_dir: Path
    summary: dict[str, Any]
    reused: bool


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def run_experiment(config: ExperimentConfig, force: bool = False,
                   on_epoch: Callable[[dict[str, Any]], None] | None = None, wait: bool = True) -> RunResult:
    """Train one config and write its run folder; reuse a finished one unless ``force``.

    ``on_epoch`` is called with each epoch's metrics row (a tuner reports to its pruner there); an
    exception it raises ends the run, recorded as failed with that exception's name. While another
    process trains the same run, wait for it (then reuse its result) or, with ``wait=False``, raise
    ``RunBusy``; two processes never write into one folder.
    """
    cfg = config.resolve()
    check_writable(cfg.results_dir)
    # The data's content fingerprint is part of the run's identity: other data under the same name
    # is another run. Everything that can fail on bad input fails before anything is written.
    raw = load_dataset(cfg.dataset, cfg.data_dirs, cfg.data_args)
    run_dir = Path(cfg.results_dir) / cfg.run_id(raw.fingerprint)
    if (summary := reusable_summary(cfg, run_dir, force)) is not None:
        return RunResult(run_dir, summary, reused=True)

    device = torch.device(cfg.device)
    splits = prepare_splits(raw, cfg.val_fraction, cfg.seed, device, cfg.train_limit, cfg.test_limit)
    _check_input_kind(cfg.arch, splits)
    seed_everything(cfg.seed)
    try:
        trainer = ALGORITHMS.get(cfg.algorithm)(splits.input_shape, splits.num_classes, cfg.arch,
                                                cfg.arch_args, cfg.hparams).to(device)
    except (MemoryError, torch.OutOfMemoryError) as exc:
        raise ConfigError(f"the network of {cfg.arch} {cfg.arch_args} does not fit in memory on {device}: "
                          f"{_first_line(exc)}") from None
    except RuntimeError as exc:
        if "alloc" not in str(exc).lower():
            raise
        raise ConfigError(f"the network of {cfg.arch} {cfg.arch_args} does not fit in memory on {device}: "
                          f"{_first_line(exc)}") from None
    meters = [METERS.get(name)() for name in cfg.measure]
    with hold_run(run_dir, wait=wait):  # from here on this process is the run folder's only writer
        if (summary := reusable_summary(cfg, run_dir, force)) is not None:  # finished while this one waited
            return RunResult(run_dir, summary, reused=True)
        return _run_held(cfg, raw, run_dir, on_epoch, device, splits, trainer, meters)


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


def reusable_summary(cfg: ExperimentConfig, run_dir: Path, force: bool = False) -> dict[str, Any] | None:
    """The summary of ``run_dir`` if it can stand for ``cfg`` (resolved) without training, else None.

    It must be finished (``done``) with a readable summary (``folders.finished_summary``), hold the
    checkpoint ``cfg.save`` asks for, and, if it diverged, have been judged by ``cfg``'s own thresholds
    (``VERDICT_FIELDS`` are not part of the run's identity, so the same folder serves other ones: a
    verdict that other thresholds, or chance as taken now, could overturn is judged again by training
    again: ``divergence.verdict_stands``). A config with ``test_every_epoch`` needs a folder that scored
    test every epoch (every folder from before the field did); one without it takes either."""
    if force:
        return None
    summary = finished_summary(run_dir)
    if summary is None or (cfg.save != "none" and not (run_dir / CHECKPOINT).exists()):
        return None
    if summary.get("status") == "diverged" and not verdict_stands(summary, cfg):
        return None
    if summary.get("status") == "completed" and (
            (cfg.test_every_epoch and not summary.get("test_every_epoch", True))
            or (cfg.score_test and summary.get("score_test") is False)):
        return None
    return summary


def _run_held(cfg: ExperimentConfig, raw, run_dir: Path, on_epoch, device, splits, trainer, meters) -> RunResult:
    """The rest of ``run_experiment``, while this process holds the run's lock."""
    numerics = contextlib.ExitStack()
    # a run from a modified tree keeps the diff (once per content, beside the runs folder): its code can be recovered
    environment = {**describe_environment(device), "precision": cfg.precision,
                   "training_code_sha256": training_code_sha256(),
                   **record_source(run_dir.parent.parent / SOURCE_DIFFS)}
    resumed = resumable(run_dir, meters, environment)  # an earlier attempt's epochs, same code: go on from them
    try:
        if resumed is None and run_dir.exists():
            shutil.rmtree(run_dir)
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "summary.json").unlink(missing_ok=True)  # the stopped attempt's "failed"
    except OSError as exc:
        raise write_failed(run_dir, exc) from exc
    write_json(run_dir / "config.json", cfg.to_dict())
    write_json(run_dir / "environment.json", {**environment, **numerics.enter_context(run_numerics(device))})
    write_json(run_dir / "measurement.json", {
        "data": {"dataset": splits.name, "source": splits.source, "exact": raw.exact, "fingerprint": raw.fingerprint,
                 "train": len(splits.train_y), "val": len(splits.val_y), "test": len(splits.test_y),
                 "normalisation": "mean/std of the training split only" if raw.normalise else "none (token ids)"},
        "accuracy": f"percent correct by argmax of predict(x, mode); train accuracy on the first "
                    f"{train_eval_images(cfg, len(splits.train_y), len(splits.val_y))} training samples; test "
                    + ("never (score_test false)" if not cfg.score_test else "after every epoch" if cfg.test_every_epoch else
                       "after the epochs with a new best validation accuracy of some mode (among the final "
                       "phase's epochs of the same phase; without validation: none), and after the last"),
        **{k: v for m in meters for k, v in m.describe().items()}})
    try:
        with numerics:
            summary = _train(cfg, trainer, splits, meters, run_dir, device, on_epoch, resumed, environment)
    except BaseException as exc:  # record the failure, keep what was written, re-raise
        if isinstance(exc, Exception):  # a bug, a pruned trial, a divergence: nothing to go on from;
            drop_state(run_dir)         # a stop (Ctrl-C, SystemExit; SIGKILL never gets here) keeps it
        if not isinstance(exc, RunDiverged):
            try:  # on a full disk this write fails too: the folder is then only unfinished (no summary)
                write_json(run_dir / "summary.json", {"status": "failed", "error": f"{type(exc).__name__}: {exc}"})
            except OSError:
                pass
        raise
    finally:  # a pruned trial or an out-of-memory error must not leave NVML, threads or trackers running
        close_meters(meters)
    return RunResult(run_dir, summary, reused=False)


def _check_input_kind(arch: str, splits: Splits) -> None:
    """Token ids need an architecture that embeds them, and images or features one that does not."""
    wants_ids = not getattr(ARCHITECTURES.get(arch), "input_dtype", torch.float32).is_floating_point
    has_ids = not splits.train_x.dtype.is_floating_point
    if wants_ids != has_ids:
        kind = "token ids" if has_ids else "real-valued inputs"
        fits = [a for a in ARCHITECTURES.names()
                if getattr(ARCHITECTURES.get(a), "input_dtype", torch.float32).is_floating_point != has_ids]
        raise ConfigError(f"dataset {splits.name} has {kind}, which architecture {arch!r} cannot take; "
                          f"choose one of: {', '.join(fits)}")


def _log(cfg: ExperimentConfig, message: str) -> None:
    if not cfg.quiet:
        tqdm.write(message, file=sys.stdout)


def train_epoch(trainer: Trainer, xs: torch.Tensor, ys: torch.Tensor, batch_size: int, meters: list = (),
                on_step: Callable[[], Any] | None = None, precision: str = "fp32") -> dict[str, float]:
    """One pass of ``trainer.update`` over already-shuffled tensors; the mean of each loss over the steps.

    Losses are summed as tensors and read once at the end (reading one per step would synchronise
    the GPU every step); a non-finite loss is looked for every CHECK_EVERY steps and ends the epoch.
    """
    sums: dict[str, torch.Tensor] = {}
    steps = range(0, len(ys), batch_size)
    step_contexts = [m for m in meters if m.step_context() is not None]
    mixed = autocast(xs.device, precision)
    for step, start in enumerate(steps):
        x, y = xs[start:start + batch_size], ys[start:start + batch_size]
        if step_contexts:
            with contextlib.ExitStack() as stack:
                for meter in step_contexts:
                    stack.enter_context(meter.step_context())
                with mixed:
                    losses = trainer.update(x, y)
        else:
            with mixed:
                losses = trainer.update(x, y)
        for key, value in losses.items():
            sums[key] = sums[key] + value if key in sums else value
        if step == 0:
            first = losses["loss"]
        for meter in meters:
            meter.after_step()
        if on_step is not None:
            on_step()
        if step % CHECK_EVERY == 0 and not torch.isfinite(losses["loss"]):
            break
    trainer.end_epoch()  # inside the epoch's timed region: e.g. CaFo's closed-form predictor solve
    out = {key: float(value) / len(steps) for key, value in sums.items()}
    if sums:
        out["loss_first_step"] = float(first)  # where divergence is measured from (benchmarks/run/divergence.py)
    return out


def _train(cfg: ExperimentConfig, trainer: Trainer, splits: Splits, meters: list, run_dir: Path,
           device: torch.device, on_epoch, resumed: dict | None = None, environment: dict | None = None
           ) -> dict[str, Any]:
    ctx = RunContext(trainer=trainer, device=device, run_dir=run_dir, config=cfg)
    for meter in meters:
        meter.start_run(ctx)
    default_mode = trainer.prediction_modes[0]
    selection_key = f"val_acc_{default_mode}" if len(splits.val_y) else None
    generator = torch.Generator().manual_seed(cfg.seed)
    n, bs = len(splits.train_y), cfg.batch_size
    history, best, since_best = [], None, 0
    best_val: dict[tuple[str, str], float] = {}  # (phase, mode) -> best validation accuracy so far
    # chance: the most frequent class's share of the training labels (what a constant prediction
    # scores), not of the few labels that train accuracy is evaluated on (one label: 100 %)
    first_loss, chance = None, chance_accuracy(splits.train_y, splits.num_classes)
    earlier_s, resumed_after = 0.0, []  # wall time of earlier attempts; the epochs they ended after
    if resumed is not None:
        loop = restore_state(resumed, trainer, generator)
        history, since_best, first_loss = loop["history"], loop["since_best"], loop["first_loss"]
        best = history[loop["best_index"]] if loop["best_index"] is not None else None
        best_val = {tuple(k): v for k, v in loop["best_val"]}
        earlier_s, resumed_after = loop["wall_time_s"], [*loop["resumed_after"], len(history)]
        rewrite_jsonl(run_dir / "metrics.jsonl", history)  # rows the stopped attempt wrote after its last save go
        for meter in meters:
            meter.resume(history)
        _log(cfg, f"resuming {run_dir.name} after epoch {len(history)} (saved by the stopped attempt)")
    resumes = can_resume(meters)
    started = last_save = time.perf_counter()
    trainer.train(True)
    for epoch in range(len(history), cfg.epochs):
        trainer.start_epoch(epoch, cfg.epochs)
        t0 = time.perf_counter()
        perm = torch.randperm(n, generator=generator).to(device)
        xs, ys = splits.train_x[perm], splits.train_y[perm]
        ctx.epoch_data = (xs, ys)  # memory meters leave this copy of the split out
        synchronize(device)
        data_time = time.perf_counter() - t0
        for meter in meters:
            meter.start_epoch(epoch)
        bar = tqdm(desc=f"epoch {epoch + 1}/{cfg.epochs}", total=-(-n // bs), leave=False,
                   disable=None if not cfg.quiet else True)
        mean_losses = train_epoch(trainer, xs, ys, bs, meters, on_step=bar.update, precision=cfg.precision)
        bar.close()
        row: dict[str, Any] = {"epoch": epoch + 1, "phase": trainer.phase, "data_time_s": data_time}
        for meter in reversed(meters):  # nested: the last started (the clock) ends first
            row.update(meter.end_epoch(epoch))
        row.update(mean_losses)
        if first_loss is None:
            first_loss = row.get("loss_first_step")
        if not math.isfinite(row["loss"]):
            return _diverged(cfg, run_dir, row, history, meters, verdict(cfg, row, history, first_loss, chance,
                                                                         default_mode))
        t_eval = time.perf_counter()
        row.update(evaluate(trainer, splits, cfg, ("train", "val")))
        final = trainer.final_phase
        new_best = bool(final and selection_key and (best is None or row[selection_key] > best[selection_key]))
        stops = bool(final and cfg.patience and not new_best and since_best + 1 >= cfg.patience)
        # test only where it can be read (a summary, a table, a figure): ``scores_test``
        if scores_test(cfg, row, epoch, trainer.prediction_modes, final and selection_key is not None, best_val,
                       stops):
            row.update(evaluate(trainer, splits, cfg, ("test",)))
        row["eval_time_s"] = time.perf_counter() - t_eval
        append_jsonl(run_dir / "metrics.jsonl", row)
        history.append(row)
        _log(cfg, _epoch_line(cfg, row, default_mode))
        reason = verdict(cfg, row, history[:-1], first_loss, chance, default_mode)
        if reason is not None:
            return _diverged(cfg, run_dir, row, history, meters, reason)
        if on_epoch is not None:
            on_epoch(row)
        if not final:  # parts of the prediction not trained yet: not an epoch to select or stop at
            continue
        if new_best:
            best, since_best = row, 0
            if cfg.save == "best":
                save_checkpoint(trainer, run_dir)
        else:
            since_best += 1
        if cfg.patience and since_best >= cfg.patience:
            _log(cfg, f"early stop: no better {selection_key} for {cfg.patience} epochs")
            break
        if resumes and time.perf_counter() - last_save >= RESUME_EVERY_S and epoch + 1 < cfg.epochs:
            save_state(run_dir, trainer, generator, environment, {
                "history": history, "since_best": since_best, "first_loss": first_loss,
                "best_index": next((i for i, r in enumerate(history) if r is best), None),
                "best_val": list(best_val.items()), "resumed_after": resumed_after,
                "wall_time_s": earlier_s + time.perf_counter() - started})
            last_save = time.perf_counter()
    selected = best if best is not None else history[-1]
    if cfg.save == "final" or (cfg.save == "best" and best is None):  # no validation: best is the last
        save_checkpoint(trainer, run_dir)
    summary = {
        "status": "completed",
        "epochs_run": len(history),
        "stopped_early": len(history) < cfg.epochs,
        "prediction_modes": list(trainer.prediction_modes),
        "default_mode": default_mode,
        "selection": f"epoch with the best {selection_key}" if selection_key else "last epoch",
        "selected_epoch": selected["epoch"],
        "selected": selected,
        "final": history[-1],
        "test_acc": selected.get(f"test_acc_{default_mode}"),  # None where test is not scored (score_test)
        "test_every_epoch": cfg.test_every_epoch,  # false: test only at the epochs scores_test names
        "score_test": cfg.score_test,
        "test_scored_epochs": [r["epoch"] for r in history if f"test_acc_{default_mode}" in r],
        "parameters": {mode: trainer.inference_parameters(mode) for mode in trainer.prediction_modes},
        "wall_time_s": earlier_s + time.perf_counter() - started,  # every attempt's share
        **({"resumed_after_epochs": resumed_after} if resumed_after else {}),
        "divergence_thresholds": thresholds(cfg),
        "measurements": {k: v for meter in meters for k, v in meter.end_run().items()},
    }
    if cfg.save != "none":
        summary["checkpoint"] = {"file": CHECKPOINT, "save": cfg.save,
                                 "epoch": selected["epoch"] if cfg.save == "best" else history[-1]["epoch"]}
    write_json(run_dir / "summary.json", summary)
    mark_done(run_dir)
    drop_state(run_dir)
    return summary


def _diverged(cfg, run_dir, row, history, meters, reason: str) -> dict:
    summary = {"status": "diverged", "diverged_epoch": row["epoch"], "diverged_reason": reason,
               "divergence_thresholds": thresholds(cfg), "epochs_run": len(history),
               "last_losses": {k: v for k, v in row.items() if k.startswith("loss")},
               "measurements": {k: v for meter in meters for k, v in meter.end_run().items()}}
    write_json(run_dir / "summary.json", summary)
    mark_done(run_dir)  # deterministic: running the same config again would diverge again
    raise RunDiverged(f"{run_dir.name}: {reason} (hparams {cfg.hparams}); recorded in {run_dir}", run_dir)


def _epoch_line(cfg: ExperimentConfig, row: dict, mode: str) -> str:
    def pct(key):
        value = row.get(key)
        return "  -  " if value is None else f"{value:5.2f}"
    time_part = f" | {row['epoch_time_s']:.2f} s" if "epoch_time_s" in row else ""
    return (f"{cfg.algorithm} epoch {row['epoch']:>3}/{cfg.epochs} [{row['phase']}] loss {row['loss']:.4f} | "
            f"train {pct(f'train_acc_{mode}')} val {pct(f'val_acc_{mode}')} test {pct(f'test_acc_{mode}')} "
            f"({mode}){time_part}")
