"""Hyperparameter search spaces for tuning, one per algorithm, declared beside the algorithms.

A search space is a function ``space(trial, base) -> overrides``: it asks an Optuna trial (any
object with ``suggest_float`` / ``suggest_categorical``, e.g. ``optuna.trial.FixedTrial``) for
values and returns ExperimentConfig overrides, ``{"batch_size": 64, "hparams": {"lr": 0.003, ...}}``.
``base`` is the config being tuned (a mapping with ``arch``, ``arch_args``, ``epochs``, ...), so that a
space can depend on the architecture. ``hparams`` are merged over the base config's hparams by
``benchmarks.tuning``; nothing here imports Optuna or the benchmarks.

Register a space with ``@SEARCH_SPACES.register("name")``, or give the trainer class a
``search_space(trial, base)`` staticmethod (it wins over the registry). An algorithm with neither
(e.g. a new one) is tuned over :func:`common_space` only, and the tuner says so.

Shared dimensions: every space searches the learning rate and the batch size (:func:`common_space`).
The per-epoch learning-rate decay (``lr_decay``, every trainer's: ``TrainerHParams``) is a shared
dimension that a spec's tuning gives to every row of a profile or to none (the profile's
``tune_shared: [lr_decay]``, benchmarks/tuning/spec.py): ``search_space(algorithm, shared)`` adds the
dimensions ``shared`` names (:data:`OPTIONAL_SHARED`, each in one range for every algorithm), and an
algorithm's own space may not search one of them (:func:`search_space` refuses it where it does), so
that no row of a table gets a knob that the others lack.

What is *not* searched: the number of epochs and the early-stopping patience. The objective is the
validation accuracy of the best epoch, which can only grow with more epochs or more patience, so a
search would always pick the largest values; they are the study's budget instead (the tuner's
``--epochs`` / ``--patience``), the same for every algorithm.
"""

from __future__ import annotations

from typing import Any, Callable, Iterable, Mapping

from .registry import ALGORITHMS, Registry
from .typed_config import ConfigError

SearchSpace = Callable[[Any, Mapping[str, Any]], dict[str, Any]]
SEARCH_SPACES: Registry[SearchSpace] = Registry("search space")

BATCH_SIZES = [32, 64, 128, 256]  # around the paper's 64; larger ones are faster per epoch
LR_RANGE = (1e-5, 1e-2)  # Adam: 1e-3 is the paper's setting, two decades either side
# Nøkland 2016 chose DFA's learning rate "with decay" on validation (algorithms/dfa.py); 0.7 an epoch
# leaves 6 % of the rate after 8 epochs (a tuning trial's budget), 1 none. The range DFA's own space
# searched in Table 3's committed studies, before the decay became shared.
LR_DECAY_RANGE = (0.7, 1.0)


def common_space(trial, base: Mapping[str, Any]) -> dict[str, Any]:
    """Learning rate (log scale) and mini-batch size: what every trainer has."""
    return {"batch_size": trial.suggest_categorical("batch_size", BATCH_SIZES),
            "hparams": {"lr": trial.suggest_float("lr", *LR_RANGE, log=True)}}


#: shared dimensions that a profile searches for every row or for none (``tune_shared``): name -> how a
#: trial samples it; their values land in ``hparams`` under the same name
OPTIONAL_SHARED: dict[str, Callable[[Any], Any]] = {
    "lr_decay": lambda trial: trial.suggest_float("lr_decay", *LR_DECAY_RANGE),
}


@SEARCH_SPACES.register("bp")
@SEARCH_SPACES.register("fa")
@SEARCH_SPACES.register("dfa")  # its lr_decay is a shared dimension now (OPTIONAL_SHARED), not DFA's own
def _bp_like(trial, base):
    return common_space(trial, base)


@SEARCH_SPACES.register("ff")
def _ff(trial, base):
    return {"batch_size": trial.suggest_categorical("batch_size", BATCH_SIZES),
            "hparams": {
                # around FF's default 3e-3 (its local losses take somewhat larger steps than BP)
                "lr": trial.suggest_float("lr", 1e-4, 3e-2, log=True),
                # the mean square each layer aims between positive and negative data: its inputs are
                # RMS-normalised, so 1 (loeweX's "sum of squares minus the width") is the middle
                "threshold": trial.suggest_float("threshold", 0.25, 4.0, log=True),
                "label_value": trial.suggest_float("label_value", 0.25, 4.0, log=True),
            }}


@SEARCH_SPACES.register("mf")
def _mf(trial, base):
    out = common_space(trial, base)
    # the sequential schedule needs at least one epoch per layer; offer it only where it can run
    depth = network_depth(base)
    schedules = ["simultaneous", "sequential"] if depth is None or base.get("epochs", 1) >= depth \
        else ["simultaneous"]
    out["hparams"]["schedule"] = trial.suggest_categorical("schedule", schedules)
    return _readout(trial, base, out)


@SEARCH_SPACES.register("bp-ds")
@SEARCH_SPACES.register("mf-joint")
def _ladder(trial, base):
    # the ablation ladder's middle rungs: BP's and MF's shared dimensions (common_space) plus their own
    # knob, MF's readout; mf-joint has no schedule (simultaneous only, algorithms/mf_joint.py)
    return _readout(trial, base, common_space(trial, base))


def _readout(trial, base, out):
    # conv blocks only: how feature maps reach M_i; not where the spec fixes it (Table 2: the paper's
    # M_i reads the whole map), since a spec's algorithm_overrides win over a tuned value
    if base.get("arch", "mlp") != "mlp" and "readout" not in (base.get("hparams") or {}):
        out["hparams"]["readout"] = trial.suggest_categorical("readout", ["flatten", "gap"])
    return out


@SEARCH_SPACES.register("sff")
def _sff(trial, base):
    out = common_space(trial, base)
    # the paper's auxiliary conv is 1x1 "or slightly larger"; granularity (layer vs hybrid block) is not
    # searched: it is the variant a table compares, set per spec group
    out["hparams"]["aux_kernel"] = trial.suggest_categorical("aux_kernel", [1, 3])
    return out


@SEARCH_SPACES.register("fg")
def _fg(trial, base):
    out = common_space(trial, base)
    # averaging k directions divides the estimator's variance by k at k times the forward cost; perturb
    # (weights vs activities) is the variant a table compares and is not searched
    out["hparams"]["directions"] = trial.suggest_categorical("directions", [1, 2, 4])
    return out


def network_depth(base: Mapping[str, Any]) -> int | None:
    """Number of hidden blocks when the architecture arguments say it (MLP widths), else None."""
    args = dict(base.get("arch_args") or {})
    if base.get("arch", "mlp") == "mlp":
        return len(args.get("widths", (1000, 1000)))  # MLPArgs' default: 2x1000
    for key in ("widths", "channels"):
        if key in args:
            return len(args[key])
    return None


def check_shared(shared: Iterable[str]) -> tuple[str, ...]:
    """``shared`` as a sorted tuple of :data:`OPTIONAL_SHARED` names (``ConfigError`` for another)."""
    if isinstance(shared, str):
        shared = [shared]
    names = tuple(sorted(set(shared)))
    unknown = [n for n in names if n not in OPTIONAL_SHARED]
    if unknown:
        raise ConfigError(f"unknown shared dimension(s) {unknown}; a profile's tune_shared takes some of: "
                          f"{', '.join(OPTIONAL_SHARED)}")
    return names


def search_space(algorithm: str, shared: Iterable[str] = ()) -> tuple[SearchSpace, str]:
    """The search space of ``algorithm`` plus the optional shared dimensions ``shared`` names (the
    profile's ``tune_shared``), and where it was declared (for the tuner's log).

    The space refuses (``ConfigError``, when a trial samples it) an algorithm's own space that searches
    an optional shared dimension itself: that row alone would get it."""
    trainer = ALGORITHMS.get(algorithm)  # fails with the list of valid names
    shared = check_shared(shared)
    if callable(getattr(trainer, "search_space", None)):
        own, origin = trainer.search_space, f"{trainer.__name__}.search_space"
    elif algorithm in SEARCH_SPACES:
        own, origin = SEARCH_SPACES.get(algorithm), f"algorithms/search_spaces.py ({algorithm})"
    else:
        own, origin = common_space, "common space only (lr, batch size): no search space declared for this algorithm"

    def space(trial, base: Mapping[str, Any]) -> dict[str, Any]:
        out = dict(own(trial, base))
        hparams = dict(out.get("hparams") or {})
        alone = sorted(set(hparams) & set(OPTIONAL_SHARED))
        if alone:
            raise ConfigError(f"the search space of {algorithm} ({origin}) searches {', '.join(alone)} itself; "
                              "a shared dimension is searched for every row of a profile or for none (tune_shared)")
        hparams.update({name: OPTIONAL_SHARED[name](trial) for name in shared})
        out["hparams"] = hparams
        return out

    return space, origin + (f" + shared {', '.join(shared)}" if shared else "")
