"""Sweeps: a spec file (one table or figure of the paper) expanded into single experiments.

    spec = load_spec("table3")                       # benchmarks/specs/table3.yaml, or a path
    for group, configs in expand(spec, "quick"):     # ExperimentConfig per algorithm x dataset x seed
        ...
    run_configs(configs, dry_run=False, launcher="local", jobs=2)

A spec (YAML) says what a table is made of::

    name: table3                 # every run is tagged with it; tables and figures find runs by tag
    caption: "..."
    reference: "3"               # the table id in benchmarks/reference/mono_forward_tables.csv
    measure: [time]              # meters of every run
    base: {hparams: {lr: 0.001}} # ExperimentConfig fields shared by every run
    profiles:                    # paper: the paper's protocol; quick: 2 CPU cores, well under an hour
      paper: {seeds: [0, 1, 2], epochs: 50}
      quick: {seeds: [0], epochs: 3, train_limit: 5000}
    algorithm_overrides: {ff: {hparams: {lr: 0.01}}}   # per algorithm, any group (a profile may
                                                       # have its own, e.g. a per-algorithm epoch cap)
    params_file: results/studies/best_params.json      # optional: tuned settings (see tuning/);
                                                       # a profile may name its own
    rows:                        # accuracy tables: the paper's rows and which run/mode gives each
      "MF (FF pred)": {algorithm: mf, mode: ff}
    groups:
      - label: "2x1000"                   # the network, as the table prints it
        paper_arch: "mlp 2x1000 relu"     # the paper's architecture string in the reference CSV
        datasets: [mnist, fmnist]
        arch: mlp
        arch_args: {widths: [1000, 1000]}
        algorithms: [bp, mf]
        config: {batch_size: 128}         # optional ExperimentConfig fields for this group
        algorithm_overrides: {mf: {hparams: {readout: flatten}}}
        per_profile: {quick: {train_limit: 2000}}

A profile's ``tune`` mapping is the budget of each tuning trial (``bpfree sweep SPEC --tune N``,
benchmarks/tuning/spec.py) and ``tune_shared`` the optional shared dimensions every row's study
searches, the same for all or, without it, for none: ``tune_shared: [lr_decay]`` (the per-epoch
learning-rate decay, 0.7-1); neither is a setting of the runs, and no group or algorithm override has them.

A profile may also give ``per_dataset`` settings (``{mnist: {epochs: 27}}``) and ``budgets``: the
budget protocols its runs are made under, each with its own settings (``benchmarks.run.config.BUDGETS``),
e.g. ``budgets: {own: {}, matched: {patience: null, per_dataset: {mnist: {epochs: 27}}}}``: every run
once per budget, the budget part of its identity and of every table that reads it. Without it a
profile's runs are ``own``.

A run's config is merged in this order (later wins; ``hparams`` and ``arch_args`` merge key by
key): ``base``, the profile, the group's ``config`` and architecture, the group's ``per_profile``,
the tuned entry of the params file, then the spec's, the group's and the profile's
``algorithm_overrides``, and last the profile's ``per_dataset`` entry and the budget's settings (so
that a matched budget gives every algorithm of a cell the same epochs, its own caps overridden).

Running: finished runs are reused (run folders are content-addressed), so an interrupted sweep
goes on where it stopped. Each run's outcome (completed, reused, diverged, failed, unavailable) is
appended to ``<results>/sweeps/<spec>_<profile>.jsonl``, so that a table can say why a cell is
empty without training anything. The default is a dry run that prints every run and its command.
"""

from __future__ import annotations

import copy
import functools
import json
import shlex
import sys
from pathlib import Path
from typing import Any, Callable, Iterable

from algorithms import ConfigError
from algorithms.search_spaces import check_shared

from benchmarks.run.config import BUDGETS, ExperimentConfig, run_key
from benchmarks.sweep.launchers import LAUNCHERS, DataFingerprints, outcome
from benchmarks.common.files import append_jsonl, read_jsonl, write_failed
from benchmarks.run.folders import finished_summary, is_done

SPECS_DIR = Path(__file__).resolve().parents[1] / "specs"
SPEC_KEYS = {"name", "caption", "reference", "measure", "base", "profiles", "algorithm_overrides",
             "params_file", "rows", "groups", "notes"}
GROUP_KEYS = {"label", "paper_arch", "datasets", "arch", "arch_args", "algorithms", "config",
              "algorithm_overrides", "per_profile", "hparams"}
MERGED_KEYS = ("hparams", "arch_args")  # dict-valued config fields merged key by key


def spec_names() -> list[str]:
    return sorted(p.stem for p in SPECS_DIR.glob("*.yaml"))


def load_spec(name_or_path: str | Path) -> dict[str, Any]:
    """A spec by name (``table3``) or path, checked for unknown keys and missing parts."""
    import yaml

    path = Path(name_or_path)
    if not path.suffix:
        path = SPECS_DIR / f"{name_or_path}.yaml"
    if not path.is_file():
        raise ConfigError(f"no spec {str(name_or_path)!r}; choose one of: {', '.join(spec_names())} (or a path)")
    where = f"spec {path.name}"
    try:
        spec = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
        raise ConfigError(f"{where} is not valid YAML{at}: {getattr(exc, 'problem', None) or type(exc).__name__}"
                          ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{where} cannot be read: {exc}") from None
    if not isinstance(spec, dict):
        raise ConfigError(f"{where} must hold a mapping")
    _refuse_unknown(spec, SPEC_KEYS, where)
    for key in ("name", "profiles", "groups"):
        if key not in spec:
            raise ConfigError(f"{where} has no {key!r}")
    if not isinstance(spec["groups"], list) or not isinstance(spec["profiles"], dict):
        raise ConfigError(f"{where}: groups must be a list and profiles a mapping")
    for i, group in enumerate(spec["groups"]):
        if not isinstance(group, dict):
            raise ConfigError(f"{where} group {i + 1} must be a mapping, got {group!r}")
        _refuse_unknown(group, GROUP_KEYS, f"{where} group {i + 1}")
        for key in ("datasets", "arch", "algorithms"):
            if key not in group:
                raise ConfigError(f"{where} group {i + 1} has no {key!r}")
    check_rows(spec, where)
    return spec


def check_rows(spec: dict[str, Any], where: str = "spec") -> None:
    """Refuse a ``rows:`` entry whose mode its algorithm does not have (``ConfigError`` naming the valid
    modes): a misspelt mode would otherwise only show up as empty cells of a finished table."""
    rows = spec.get("rows") or {}
    items = rows.items() if isinstance(rows, dict) else ((r.get("paper"), r) for r in rows if isinstance(r, dict))
    for paper, row in items:
        if not isinstance(row, dict) or not isinstance(row.get("algorithm"), str) or "mode" not in row:
            continue  # malformed rows are refused where tables read them (tables.accuracy.spec_rows)
        algorithm, mode = row["algorithm"], str(row["mode"])
        patterns = prediction_mode_patterns(algorithm)
        if patterns is None or any(_mode_matches(mode, p) for p in patterns):
            continue
        raise ConfigError(f"{where}: row {paper!r} asks for mode {mode!r} of {algorithm}, which has modes: "
                          f"{', '.join(patterns)}")


def _mode_matches(mode: str, pattern: str) -> bool:
    if pattern.endswith("<N>"):
        prefix = pattern[:-3]
        return mode.startswith(prefix) and mode[len(prefix):].isdigit() and not mode[len(prefix):].startswith("0")
    return mode == pattern


@functools.lru_cache(maxsize=None)
def prediction_mode_patterns(algorithm: str) -> tuple[str, ...] | None:
    """The prediction modes of ``algorithm`` (``prediction_modes`` of a trainer built without memory, on
    torch's meta device), numbered ones as one pattern: MF's ``ff, bp, layer<N>``. None where no small
    network can be built for it here (then no row of it is checked)."""
    import re

    import torch
    from algorithms import ALGORITHMS, UnknownNameError

    try:
        trainer_class = ALGORITHMS.get(algorithm)
    except UnknownNameError as exc:
        raise ConfigError(str(exc)) from None
    for arch, args, shape in (("mlp", {"widths": [4, 4]}, (1, 8, 8)), ("cnn", {"channels": [4, 4]}, (3, 8, 8))):
        try:
            with torch.device("meta"):
                modes = trainer_class(shape, 3, arch, args, {}).prediction_modes
        except Exception:  # noqa: BLE001 - this network does not suit the algorithm: try the next
            continue
        return tuple(dict.fromkeys(re.sub(r"[1-9]\d*$", "<N>", m) for m in modes))
    return None


def _refuse_unknown(d: dict, valid: set[str], where: str) -> None:
    unknown = sorted(set(d) - valid)
    if unknown:
        raise ConfigError(f"unknown key(s) {unknown} in {where}; valid keys: {sorted(valid)}")


def merge(base: dict[str, Any], *layers: dict[str, Any] | None) -> dict[str, Any]:
    """Config layers merged left to right; ``hparams`` and ``arch_args`` merge key by key."""
    out = copy.deepcopy(base)
    for layer in layers:
        for key, value in (layer or {}).items():
            if key in MERGED_KEYS and isinstance(out.get(key), dict):
                out[key] = {**out[key], **value}
            else:
                out[key] = copy.deepcopy(value)
    return out


def tune_shared(profile: dict[str, Any] | None) -> tuple[str, ...]:
    """The optional shared dimensions a profile's studies search for every row (``tune_shared``, a list
    of :data:`algorithms.search_spaces.OPTIONAL_SHARED` names: ``[lr_decay]``); () without it."""
    shared = (profile or {}).get("tune_shared") or []
    if not isinstance(shared, list) or not all(isinstance(n, str) for n in shared):
        raise ConfigError(f"a profile's tune_shared is a list of shared dimensions, e.g. [lr_decay]; got {shared!r}")
    return check_shared(shared)


def profile_names(spec: dict[str, Any]) -> list[str]:
    return list(spec["profiles"])


def expand(spec: dict[str, Any], profile: str, params_file: str | Path | None = None,
           results_dir: str | None = None, data_dirs: list[str] | None = None
           ) -> list[tuple[dict[str, Any], list[ExperimentConfig]]]:
    """Every run of ``spec`` under ``profile``, grouped as in the spec: ``[(group, configs)]``.

    ``params_file`` (or the spec's own ``params_file``) supplies tuned settings by the key
    ``<algorithm>/<dataset>/<group label>``; a run with no entry keeps the spec's settings. An entry
    tuned before its algorithm gained a hyperparameter is refused (``params_file.check_entry_current``).
    """
    if profile not in spec["profiles"]:
        raise ConfigError(f"unknown profile {profile!r} for spec {spec['name']}; "
                          f"choose one of: {', '.join(profile_names(spec))}")
    prof = dict(spec["profiles"][profile])
    seeds = prof.pop("seeds", [0])
    profile_params = prof.pop("params_file", None)
    prof.pop("tune", None)  # the trials' budget (benchmarks.tuning.trial_budget), not the runs'
    tune_shared(prof)  # refused here where it names no shared dimension, e.g. a misspelt one
    prof.pop("tune_shared", None)  # what every row's study searches beside its own space (tuning.spec)
    profile_overrides = prof.pop("algorithm_overrides", {})
    per_dataset = prof.pop("per_dataset", {})
    budgets = prof.pop("budgets", {"own": {}})
    if not isinstance(budgets, dict) or not budgets or not set(budgets) <= set(BUDGETS):
        raise ConfigError(f"spec {spec['name']} profile {profile}: budgets must map some of "
                          f"{', '.join(BUDGETS)} to their settings, got {budgets!r}")
    params_file = params_file or profile_params or spec.get("params_file")
    tuned: dict[str, Any] = {}
    if params_file:
        from benchmarks.sweep.params_file import check_entry_current, load_params_file
        tuned = load_params_file(params_file)
    location = {k: v for k, v in (("results_dir", results_dir), ("data_dirs", data_dirs)) if v is not None}
    out = []
    for group in spec["groups"]:
        label = group.get("label") or group["arch"]
        network = {"arch": group["arch"], "arch_args": group.get("arch_args", {}),
                   "hparams": group.get("hparams", {})}
        configs = []
        for dataset in group["datasets"]:
            for algorithm in group["algorithms"]:
                entry = tuned.get(f"{algorithm}/{dataset}/{label}")
                if entry is not None:
                    check_entry_current(f"{algorithm}/{dataset}/{label}", entry, params_file)
                for budget, settings in budgets.items():
                    settings = dict(settings or {})
                    budget_per_dataset = settings.pop("per_dataset", {})
                    for seed in seeds:
                        values = merge({"tag": spec["name"], "measure": spec.get("measure", ["time"])},
                                       spec.get("base"), prof, group.get("config"), network,
                                       group.get("per_profile", {}).get(profile),
                                       entry,
                                       spec.get("algorithm_overrides", {}).get(algorithm),
                                       group.get("algorithm_overrides", {}).get(algorithm),
                                       profile_overrides.get(algorithm),
                                       per_dataset.get(dataset), settings, budget_per_dataset.get(dataset),
                                       {"algorithm": algorithm, "dataset": dataset, "seed": seed, "quiet": True,
                                        "budget": budget},
                                       location)
                        configs.append(ExperimentConfig.from_dict(values))
        out.append((group, configs))
    return out


def status_file(results_root: str | Path, spec_name: str, profile: str) -> Path:
    return Path(results_root) / "sweeps" / f"{spec_name}_{profile}.jsonl"


def _warn(message: str) -> None:
    print(f"warning: {message}", file=sys.stderr)


def latest_statuses(path: str | Path, warn: Callable[[str], None] = _warn) -> dict[str, dict[str, Any]]:
    """The last recorded outcome of every run in a sweep's status file, by :func:`run_key` (recomputed, so
    that lines written before a config field existed match the configs of today).

    A line that is not an outcome (not a JSON object with a key and a status, e.g. the ``null`` an old
    launcher wrote for a killed worker) is skipped and named through ``warn`` (default: stderr)."""
    out = {}
    for row in read_jsonl(Path(path), on_bad_line=warn):
        if not isinstance(row.get("key"), str) or not isinstance(row.get("status"), str):
            warn(f"{path}: a line without a run key and status ({json.dumps(row)[:60]}); skipped")
            continue
        try:
            key = run_key(json.loads(row["key"]))
        except (ValueError, TypeError, AttributeError):  # not a config's JSON: keep it as written
            key = row["key"]
        out[key] = row
    return out


def command_for(cfg: ExperimentConfig) -> str:
    """A command line that runs ``cfg`` alone: every field that differs from the defaults, as given."""
    defaults = ExperimentConfig().to_dict()
    parts = ["bpfree", "run"]
    for key, value in cfg.to_dict().items():
        if key != "quiet" and value != defaults[key]:
            parts += ["--set", f"{key}={json.dumps(value, separators=(',', ':'))}"]
    return " ".join(shlex.quote(p) for p in parts)


def run_configs(configs: Iterable[ExperimentConfig], *, dry_run: bool = True, launcher: str = "local",
                jobs: int = 1, force: bool = False, status_path: str | Path | None = None,
                launcher_options: dict[str, Any] | None = None, log=print) -> list[dict[str, Any]]:
    """Hand ``configs`` to a launcher (or, in a dry run, print them); one outcome dict per run.

    Finished runs are not launched again unless ``force``. Every outcome is appended to
    ``status_path`` as it arrives, so an interrupted sweep keeps what it learned.
    """
    from benchmarks.run.runner import reusable_summary

    configs = list(configs)
    resolved = [c.resolve() for c in configs]
    fingerprints = DataFingerprints()
    # finished: a `done` folder with a readable summary, a diverged one judged by this config's thresholds
    todo = [c for c in resolved if reusable_summary(c, Path(c.results_dir) / fingerprints.run_id(c), force) is None]
    for c in todo:
        run_dir = Path(c.results_dir) / fingerprints.run_id(c)
        if not force and is_done(run_dir) and finished_summary(run_dir) is None:
            log(f"note: {run_dir} is marked done but its summary.json is damaged; it is run again")
    if dry_run:
        for cfg, res in zip(configs, resolved):
            state = "todo" if res in todo else "done"
            log(f"[{state}] {res.run_id(fingerprints(res))}\n    {command_for(cfg)}")
        log(f"{len(resolved)} runs, {len(resolved) - len(todo)} finished, {len(todo)} to run "
            f"(add --run to run them)")
        return []
    outcomes = [outcome(c, "reused", run_id=c.run_id(fingerprints(c))) for c in resolved if c not in todo]
    for row in outcomes:
        _record(status_path, row)
    log(f"{len(resolved)} runs: {len(outcomes)} finished already, {len(todo)} to run with launcher "
        f"{launcher!r} ({jobs} at a time)")
    launch = LAUNCHERS.get(launcher)
    for row in launch(todo, jobs=jobs, force=force, **(launcher_options or {})):
        _record(status_path, row)
        outcomes.append(row)
        error = f": {row['error']}" if row.get("error") else ""
        log(f"  {row['status']:<11} {row['run_id']} ({row['seconds']:.0f} s){error}")
    counts: dict[str, int] = {}
    for row in outcomes:
        counts[row["status"]] = counts.get(row["status"], 0) + 1
    log("sweep done: " + ", ".join(f"{n} {s}" for s, n in sorted(counts.items())))
    return outcomes


def run_dir_of(cfg: ExperimentConfig) -> Path:
    """The run folder of ``cfg`` (resolved here) with the data on this machine: its fingerprint included."""
    cfg = cfg.resolve()
    return Path(cfg.results_dir) / cfg.run_id(DataFingerprints()(cfg))


def _record(path: str | Path | None, row: dict[str, Any]) -> None:
    """Append an outcome to the status file; a write that fails raises ``WriteFailed`` naming the file."""
    if path is not None:
        try:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise write_failed(path, exc) from exc
        append_jsonl(Path(path), row)
