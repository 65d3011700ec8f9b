"""The typed configuration of one experiment, parsed from flags or a JSON/YAML file.

Unknown keys are refused everywhere: at the top level, in ``arch_args`` (checked against the
architecture's ``Args`` dataclass) and in ``hparams`` (the algorithm's ``HParams``). ``resolve``
fills in every default, so that two configs which mean the same run get the same identity
(``run_id``) and the run folder holds the complete settings.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from algorithms import ALGORITHMS, ARCHITECTURES, ConfigError
from algorithms.base import EXECUTION_HPARAMS
from algorithms.typed_config import dataclass_from_dict

# Fields that say where things are, not what is computed; they stay out of a run's identity
# (``save`` only keeps the weights of the same computation).
LOCATION_FIELDS = ("data_dirs", "results_dir", "quiet", "save")
# Fields that older run folders' configs lack, and the value each of them implicitly had then: a
# table matches a run made before a field existed as if it had been written with this value.
IMPLICIT_DEFAULTS: dict[str, Any] = {"precision": "fp32", "data_args": {}, "budget": "own"}
# The same for the hyperparameters every trainer shares (``TrainerHParams``): before the shared
# ``lr_decay`` (DFA's alone before that) every learning rate was constant.
COMMON_IMPLICIT_HPARAMS: dict[str, Any] = {"lr_decay": 1.0}
# ... and for an algorithm's own: FF before loeweX's recipe normalised to unit length, took the mean of
# squares minus the threshold, and had no cooldown. ``implicit_hparams`` gives both for one algorithm.
IMPLICIT_HPARAMS: dict[str, dict[str, Any]] = {"ff": {"normalisation": "unit", "logit": "mean", "cooldown": False}}
# Hyperparameters added after runs had been made at what is now their default: at that value they stay
# out of a run's id, so that the folders made before them keep being reused (FF's recipe changed its
# defaults, so its old runs are not the same runs and are not listed here). The shared ones
# (``COMMON_ID_NEUTRAL_HPARAMS``, every algorithm's) and an algorithm's own: ``id_neutral_hparams``.
COMMON_ID_NEUTRAL_HPARAMS: dict[str, Any] = {"lr_decay": COMMON_IMPLICIT_HPARAMS["lr_decay"]}
ID_NEUTRAL_HPARAMS: dict[str, dict[str, Any]] = {}
# Fields that judge a run (when it counts as diverged, benchmarks/run/divergence.py), not what it computes.
VERDICT_FIELDS = ("diverge_loss_factor", "chance_epochs", "chance_margin")
# Fields that say what a run's metrics rows hold, not what it trains: they stay out of its id and of the
# key tables match runs by, and the runner reuses a folder only where it holds what the config asks for
# (``test_every_epoch``: a folder that scored test every epoch serves a config that asks for less, not
# the reverse: ``runner.reusable_summary``). Every run before the field scored test every epoch.
# ``score_test: false`` (tuning trials, which only validation may choose) scores test never.
EXECUTION_FIELDS = ("test_every_epoch", "score_test")
# How many passes over the training data a run gets (the fair-verdict protocols, Spyra's canonical v2):
# `own`: up to `epochs`, stopped early on validation (`patience`), each algorithm to its own convergence;
# `matched`: exactly `epochs` for every algorithm of a comparison (no early stopping), the epoch still
# selected on validation within them. `own` is what every run was before the field: it stays out of ids.
BUDGETS = ("own", "matched")
SAVE_CHOICES = ("none", "best", "final")  # checkpoint in the run folder: none, the selected epoch's, the last
MAX_SEED = 2 ** 32 - 1  # numpy's seed range (np.random.seed refuses more)
MAX_WIDTH = 100_000  # units or channels of one layer: far beyond any network of the tables, and a
#                      10**8-wide layer would only fail later, allocating hundreds of gigabytes
WIDTH_ARGS = ("widths", "channels", "width", "embedding_dim")  # architecture arguments that size a layer


def implicit_hparams(algorithm: str | None) -> dict[str, Any]:
    """The hyperparameters that ``algorithm``'s older configs lack, at the value each implicitly had."""
    return {**COMMON_IMPLICIT_HPARAMS, **IMPLICIT_HPARAMS.get(algorithm or "", {})}


def id_neutral_hparams(algorithm: str | None) -> dict[str, Any]:
    """The hyperparameters that stay out of ``algorithm``'s run ids at the value given here."""
    return {**COMMON_ID_NEUTRAL_HPARAMS, **ID_NEUTRAL_HPARAMS.get(algorithm or "", {})}


@dataclass
class ExperimentConfig:
    algorithm: str = "mf"
    dataset: str = "digits"  # scikit-learn's bundled 8x8 digits: real data that needs no download
    data_args: dict[str, Any] = field(default_factory=dict)  # settings of a user's dataset, e.g. csv:PATH's label
    arch: str = "mlp"
    arch_args: dict[str, Any] = field(default_factory=dict)  # e.g. {"widths": [1000, 1000]}
    hparams: dict[str, Any] = field(default_factory=dict)  # the algorithm's, e.g. {"lr": 1e-3}
    epochs: int = 10
    batch_size: int = 64  # the paper's Table 5 mini-batch size
    seed: int = 0
    val_fraction: float = 0.1  # carved from the training split; model selection never sees test
    train_limit: int | None = None  # use a seeded subset of the training split (quick profiles)
    test_limit: int | None = None
    patience: int | None = None  # early stopping: epochs without a better validation accuracy
    train_eval_limit: int = 10000  # train accuracy on this many training samples, to bound its cost
    #                               (and on no more than validation holds, at least 2000: runner.train_eval_images)
    eval_batch_size: int = 2000
    # test accuracy after every epoch (a table that reads each epoch's: the accuracy tables' "by test"
    # column, the test-error curves of Figures 4 and 5); false: only after the epochs a table or summary
    # can read it at, those with a new best validation accuracy of some prediction mode, and the last
    test_every_epoch: bool = False
    score_test: bool = True  # false: no test accuracy at all (a tuning trial: validation alone chooses)
    device: str = "auto"  # auto: cuda if available, else cpu
    measure: list[str] = field(default_factory=lambda: ["time"])
    tag: str = ""  # free text that becomes part of the identity, e.g. a table name
    budget: str = "own"  # own | matched: see BUDGETS
    precision: str = "fp32"  # or bf16: torch.autocast around every step and prediction (benchmarks/common/numerics.py)
    data_dirs: list[str] | None = None
    results_dir: str = "results/runs"
    quiet: bool = False
    save: str = "none"  # keep the weights (model.pt in the run folder): none | best | final
    # divergence (benchmarks/run/divergence.py): loss above this many times its first step's; null: off
    diverge_loss_factor: float | None = 100.0
    chance_epochs: int | None = 3  # diverged if training accuracy is still at chance after this many epochs
    chance_margin: float = 1.0  # points above chance (the most frequent class's share) that still count as chance

    def validate(self) -> None:
        from benchmarks.datasets import check_dataset_name
        from benchmarks.measure import METERS

        ALGORITHMS.get(self.algorithm)
        ARCHITECTURES.get(self.arch)
        check_dataset_name(self.dataset)
        for name in self.measure:
            METERS.get(name)
        positive = {"epochs": self.epochs, "batch_size": self.batch_size, "eval_batch_size": self.eval_batch_size,
                    "train_eval_limit": self.train_eval_limit}
        positive.update({k: v for k, v in (("train_limit", self.train_limit), ("test_limit", self.test_limit),
                                           ("patience", self.patience)) if v is not None})
        for key, value in positive.items():
            if not isinstance(value, int) or value <= 0:
                raise ConfigError(f"{key} must be a positive integer, got {value!r}")
        if self.diverge_loss_factor is not None and self.diverge_loss_factor <= 1:
            raise ConfigError(f"diverge_loss_factor must be > 1 (or null: off), got {self.diverge_loss_factor}")
        if self.chance_epochs is not None and self.chance_epochs < 1:
            raise ConfigError(f"chance_epochs must be >= 1 (or null: off), got {self.chance_epochs}")
        if self.chance_margin < 0:
            raise ConfigError(f"chance_margin must be >= 0, got {self.chance_margin}")
        if self.seed < 0:
            raise ConfigError(f"seed must be an integer >= 0, got {self.seed}")
        if self.seed > MAX_SEED:
            raise ConfigError(f"seed must be an integer in [0, {MAX_SEED}], got {self.seed}")
        for name in EXECUTION_FIELDS:
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(f"{name} must be true or false, got {getattr(self, name)!r}")
        if not 0 <= self.val_fraction < 1:
            raise ConfigError(f"val_fraction must be in [0, 1), got {self.val_fraction}")
        if self.patience is not None and self.val_fraction == 0:
            raise ConfigError("early stopping (patience) needs a validation split (val_fraction > 0)")
        if self.budget not in BUDGETS:
            raise ConfigError(f"unknown budget {self.budget!r}; choose one of: {', '.join(BUDGETS)}")
        if self.budget == "matched" and self.patience is not None:
            raise ConfigError("budget matched trains exactly `epochs` epochs: patience must be null (no early stopping)")
        from benchmarks.common.numerics import PRECISIONS
        if self.precision not in PRECISIONS:
            raise ConfigError(f"unknown precision {self.precision!r}; choose one of: {', '.join(PRECISIONS)}")
        if self.device not in ("auto", "cpu") and not re.fullmatch(r"cuda(:\d+)?", self.device):
            raise ConfigError(f"device must be auto, cpu or cuda[:N], got {self.device!r}")
        if self.save not in SAVE_CHOICES:
            raise ConfigError(f"unknown save {self.save!r}; choose one of: {', '.join(SAVE_CHOICES)}")

    def resolve(self) -> "ExperimentConfig":
        """A copy with every default of the architecture and algorithm filled in, validated."""
        self.validate()
        arch_args = dataclass_from_dict(ARCHITECTURES.get(self.arch).Args, self.arch_args, f"{self.arch} architecture")
        _check_widths(self.arch, dataclasses.asdict(arch_args))
        hparams = dataclass_from_dict(ALGORITHMS.get(self.algorithm).HParams, self.hparams,
                                      f"{self.algorithm} hyperparameter")
        from benchmarks.datasets.base import data_args_class
        data_args = dataclass_from_dict(data_args_class(self.dataset), self.data_args, f"dataset {self.dataset} setting")
        import torch
        device = self.device
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        elif device.startswith("cuda") and not torch.cuda.is_available():
            raise ConfigError(f"device {device} asked for, but no CUDA device is available here (use cpu or auto)")
        elif device.startswith("cuda:") and int(device.split(":", 1)[1]) >= torch.cuda.device_count():
            raise ConfigError(f"device {device} asked for, but this machine has {torch.cuda.device_count()} CUDA "
                              f"device(s)")
        return dataclasses.replace(self, arch_args=_plain(dataclasses.asdict(arch_args)),
                                   hparams=_plain(dataclasses.asdict(hparams)), device=device,
                                   data_args=_data_args(self.dataset, data_args),
                                   measure=sorted(set(self.measure)))

    def identity(self) -> dict[str, Any]:
        """What the run computes: every field but where things are, and no execution-only setting."""
        d = dataclasses.asdict(self)
        for key in (*LOCATION_FIELDS, *VERDICT_FIELDS, *EXECUTION_FIELDS):
            d.pop(key)
        if d["budget"] == IMPLICIT_DEFAULTS["budget"]:  # runs made before the field keep their ids
            d.pop("budget")
        neutral = id_neutral_hparams(self.algorithm)
        d["hparams"] = {k: v for k, v in d["hparams"].items()
                        if k not in EXECUTION_HPARAMS and not (k in neutral and neutral[k] == v)}
        return d

    def run_id(self, fingerprint: str | None = None) -> str:
        """Readable prefix plus a hash of everything that defines the run (call on a resolved config),
        the content fingerprint of its data included (``benchmarks.datasets.dataset_fingerprint``)."""
        identity = self.identity()
        if fingerprint:
            identity["data_fingerprint"] = fingerprint
        digest = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:10]
        return f"{self.algorithm}_{dataset_slug(self.dataset)}_{self.arch}_s{self.seed}_{digest}"

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "ExperimentConfig":
        return dataclass_from_dict(cls, values, "experiment config")


def _check_widths(arch: str, args: dict[str, Any]) -> None:
    """Refuse a layer wider than ``MAX_WIDTH`` (``ConfigError`` naming the limit)."""
    for key in WIDTH_ARGS:
        value = args.get(key)
        values = value if isinstance(value, (list, tuple)) else [value]
        for v in values:
            if isinstance(v, int) and not isinstance(v, bool) and v > MAX_WIDTH:
                raise ConfigError(f"{arch} architecture: {key} {v} is too wide; each layer takes at most "
                                  f"{MAX_WIDTH} units or channels")


def dataset_slug(name: str) -> str:
    """A dataset name fit for a folder name: ``imagefolder:/data/pets`` -> ``imagefolder-pets``."""
    kind, sep, path = name.partition(":")
    if not sep:
        return name
    stem = Path(path.rstrip("/\\")).name or "data"
    return f"{kind}-" + re.sub(r"[^A-Za-z0-9.-]+", "-", stem).strip("-.")[:40]


def _data_args(dataset: str, args: Any) -> dict[str, Any]:
    """A resolved config's dataset settings: all of them for a user's ``kind:PATH`` data; for a named
    dataset only those that differ from their defaults, so that a run at the defaults keeps the
    identity it had before its dataset had settings (``digits``, ``breast_cancer``: sklearn_sets.py)."""
    values = _plain(dataclasses.asdict(args))
    if ":" in dataset:
        return values
    defaults = _plain(dataclasses.asdict(type(args)()))
    return {k: v for k, v in values.items() if v != defaults[k]}


def with_implicit_defaults(config: dict[str, Any]) -> dict[str, Any]:
    """A stored config with the fields it predates filled in as they implicitly were (``IMPLICIT_DEFAULTS``;
    its hyperparameters: :func:`implicit_hparams`, e.g. the constant learning rate, ``lr_decay`` 1)."""
    out = {**{k: copy.deepcopy(v) for k, v in IMPLICIT_DEFAULTS.items() if k not in config}, **config}
    implicit = implicit_hparams(out.get("algorithm"))
    if isinstance(out.get("hparams"), dict):
        out["hparams"] = {**implicit, **out["hparams"]}
    return out


def _plain(d: dict[str, Any]) -> dict[str, Any]:
    """Tuples become lists so that a config read back from JSON compares and hashes the same."""
    return json.loads(json.dumps(d))


def read_mapping_file(path: str | Path, kind: str = "config file") -> dict[str, Any]:
    """A JSON or YAML file (by its suffix) holding a mapping; anything else is one ``ConfigError`` line
    naming the file as ``kind`` (a missing file, unreadable text, bad syntax with its place, NaN)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{kind} {path} not found")
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{kind} {path} cannot be read: {exc}") from None
    if path.suffix in (".yaml", ".yml"):
        import yaml
        try:
            values = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            where = getattr(exc, "problem_mark", None)
            at = f" (line {where.line + 1}, column {where.column + 1})" if where is not None else ""
            raise ConfigError(f"{kind} {path} is not valid YAML{at}: "
                              f"{getattr(exc, 'problem', None) or type(exc).__name__}") from None
    else:
        try:
            values = json.loads(text, parse_constant=_refuse_constant)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{kind} {path} is not valid JSON: {exc}") from None
        except ValueError as exc:
            raise ConfigError(f"{kind} {path}: {exc}") from None
    if not isinstance(values, dict):
        raise ConfigError(f"{kind} {path} must hold a mapping of keys to values")
    return values


def load_config_file(path: str | Path) -> dict[str, Any]:
    return read_mapping_file(path, "config file")


def _refuse_constant(name: str):
    raise ValueError(f"{name} is not a number JSON allows; write a finite number")


def parse_assignments(items: list[str]) -> dict[str, Any]:
    """``["lr=0.01", "widths=[100,100]"]`` -> ``{"lr": 0.01, "widths": [100, 100]}`` (values as JSON, else text)."""
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"expected KEY=VALUE, got {item!r}")
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
    return out


def run_key(config: dict[str, Any]) -> str:
    """What a run computes, independent of where: its identity without the device, the data's
    fingerprint or execution-only settings (``fused``, ``EXECUTION_FIELDS``); fields older configs lack
    count as what they implicitly were (``config.IMPLICIT_DEFAULTS``).

    Tables match the runs a spec asks for with the run folders present by this key, so that a table
    regenerated on a laptop finds the runs a GPU server made, and folders written before the data's
    fingerprint entered a run's identity still count (where several folders share a key, tables take
    the newest with a fingerprint: ``runs.prefer``).
    """
    config = with_implicit_defaults(config)
    identity = {k: v for k, v in config.items()
                if k not in (*LOCATION_FIELDS, *VERDICT_FIELDS, *EXECUTION_FIELDS, "device")}
    if isinstance(identity.get("hparams"), dict):
        identity["hparams"] = {k: v for k, v in identity["hparams"].items() if k not in EXECUTION_HPARAMS}
    return json.dumps(identity, sort_keys=True)
