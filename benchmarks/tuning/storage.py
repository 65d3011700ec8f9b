"""Where Optuna studies live: a journal file with heartbeats (one machine), or a database (many).

Optuna's RDBStorage has heartbeats built in; its journal storage does not (Optuna 5.0), so
:class:`HeartbeatJournalStorage` adds them: a worker that dies mid-trial stops beating, and the next
worker to start a trial marks that trial failed and queues it again (at most ``MAX_RETRY`` times).
"""

from __future__ import annotations

import contextlib
import inspect
import re
import time
import warnings
from pathlib import Path
from typing import Any, Callable

import optuna
from optuna.storages import BaseStorage, RDBStorage
from optuna.storages._heartbeat import BaseHeartbeat
from optuna.trial import FrozenTrial, TrialState

from algorithms import ConfigError

try:  # Optuna >= 4.0
    from optuna.storages.journal import JournalFileBackend, JournalStorage
except ImportError:  # pragma: no cover - Optuna 3.x names
    from optuna.storages import JournalFileStorage as JournalFileBackend, JournalStorage
try:  # renamed in Optuna 4.9
    from optuna.storages import RetryHeartbeatStaleTrialCallback as RetryCallback
except ImportError:  # pragma: no cover
    from optuna.storages import RetryFailedTrialCallback as RetryCallback

STUDIES_DIR = "results/studies"
HEARTBEAT_INTERVAL = 60  # seconds between a running trial's heartbeats
MAX_RETRY = 2  # a trial whose worker died is queued again at most this often (a trial that always
#                kills its worker, e.g. out of memory, must not loop forever)
SCHEMA_ATTEMPTS = 4  # tries to open a database whose tables another worker may be creating
CONNECT_TIMEOUT_S = 10  # a PostgreSQL server that accepts the connection but never answers: give up after this


class HeartbeatJournalStorage(JournalStorage, BaseHeartbeat):
    """Optuna's journal storage plus heartbeats, so that stale trials of dead workers get failed.

    A running trial's heartbeat is a system attribute (the wall-clock time) written every
    ``heartbeat_interval`` seconds by Optuna's heartbeat thread; a RUNNING trial whose last heartbeat
    (or start, before the first) is older than ``grace_period`` is stale. Optuna's optimize loop
    fails stale trials before each new trial and calls ``stale_trial_callback`` on them. Clocks
    are the machines' own: share a journal file only between machines with synchronised clocks.
    """

    HEARTBEAT_ATTR = "bpfree:heartbeat"

    def __init__(self, backend, heartbeat_interval: int, grace_period: int,
                 stale_trial_callback: Callable[[optuna.Study, FrozenTrial], None] | None = None):
        super().__init__(backend)
        if heartbeat_interval <= 0 or grace_period <= heartbeat_interval:
            raise ConfigError(f"need 0 < heartbeat interval < grace period, got {heartbeat_interval} "
                              f"and {grace_period}")
        self.heartbeat_interval = heartbeat_interval
        self.grace_period = grace_period
        self.stale_trial_callback = stale_trial_callback

    def record_heartbeat(self, trial_id: int) -> None:
        with contextlib.suppress(optuna.exceptions.UpdateFinishedTrialError, KeyError):
            self.set_trial_system_attr(trial_id, self.HEARTBEAT_ATTR, time.time())

    def _get_stale_trial_ids(self, study_id: int) -> list[int]:
        now = time.time()
        stale = []
        for trial in self.get_all_trials(study_id, deepcopy=False, states=(TrialState.RUNNING,)):
            last = trial.system_attrs.get(self.HEARTBEAT_ATTR)
            if last is None and trial.datetime_start is not None:
                last = trial.datetime_start.timestamp()  # naive local time, as Optuna stores it
            if last is not None and now - last > self.grace_period:
                stale.append(trial._trial_id)
        return stale

    def get_heartbeat_interval(self) -> int | None:
        return self.heartbeat_interval

    def get_heartbeat_stale_trial_callback(self):
        return self.stale_trial_callback

    def get_failed_trial_callback(self):  # the name before Optuna 4.9
        return self.stale_trial_callback


def make_storage(storage: str | None, study_name: str, studies_dir: str | Path = STUDIES_DIR,
                 heartbeat_interval: int = HEARTBEAT_INTERVAL, grace_period: int | None = None) -> BaseStorage:
    """The journal file ``<studies_dir>/<study>.log`` (default, or a ``*.log`` path), else an RDB URL."""
    grace_period = grace_period or 3 * heartbeat_interval  # a few missed beats before a trial is stale
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        retry = RetryCallback(max_retry=MAX_RETRY)
    if storage is None or storage.endswith(".log"):
        path = Path(storage) if storage else Path(studies_dir) / f"{study_name}.log"
        return _journal(path, heartbeat_interval, grace_period, retry)
    if "://" not in storage:
        raise ConfigError(f"--storage takes a journal file (*.log) or a database URL such as "
                          f"postgresql://user@host/db, got {storage!r}")
    kwargs: dict[str, Any] = {"heartbeat_interval": heartbeat_interval, "grace_period": grace_period,
                              "engine_kwargs": {"pool_pre_ping": True}}  # survive a restarted server
    postgres = storage.partition("://")[0].split("+")[0] in ("postgresql", "postgres")
    if postgres:  # libpq waits forever for a server that accepts the connection and never answers
        kwargs["engine_kwargs"]["connect_args"] = {"connect_timeout": CONNECT_TIMEOUT_S}
    params = inspect.signature(RDBStorage).parameters
    kwargs["heartbeat_stale_trial_callback" if "heartbeat_stale_trial_callback" in params
           else "failed_trial_callback"] = retry
    for attempt in range(SCHEMA_ATTEMPTS):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                return RDBStorage(database_url(storage), **kwargs)
        except Exception as exc:  # bad URL, server down, driver missing: one line for the user
            # Workers that meet an empty database at the same moment all create Optuna's tables; the
            # losers fail with a duplicate-key error and succeed on a retry, once the tables exist.
            racing = type(exc).__name__ in ("IntegrityError", "ProgrammingError")
            if racing and attempt + 1 < SCHEMA_ATTEMPTS:
                time.sleep(1.0 + attempt)
                continue
            first = str(exc).splitlines()[0] if str(exc) else ""
            if postgres and "timeout expired" in str(exc):
                raise ConfigError(f"cannot open storage {redact(storage)}: no answer within {CONNECT_TIMEOUT_S} s "
                                  f"(is it a PostgreSQL server? {type(exc).__name__}: {first})") from None
            raise ConfigError(f"cannot open storage {redact(storage)}: {type(exc).__name__}: {first}") from None


def _journal(path: Path, heartbeat_interval: int, grace_period: int, retry) -> HeartbeatJournalStorage:
    """The journal file at ``path`` (created if missing); a folder, an unreadable file or one that is not
    an Optuna journal is a ``ConfigError`` in one line."""
    if path.is_dir():
        raise ConfigError(f"study journal {path} is a folder; --storage takes a journal file (*.log) or a "
                          "database URL")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        return HeartbeatJournalStorage(JournalFileBackend(str(path)), heartbeat_interval, grace_period, retry)
    except ConfigError:
        raise
    except OSError as exc:
        raise ConfigError(f"cannot open study journal {path}: {exc.strerror or exc}") from None
    except Exception as exc:  # noqa: BLE001 - its lines are not Optuna's journal operations
        first = (str(exc).splitlines() or [""])[0][:120]
        raise ConfigError(f"study journal {path} is not an Optuna journal file ({type(exc).__name__}: {first}); "
                          "move it aside or name another --storage") from None


def database_url(url: str) -> str:
    """``postgresql://`` with the PostgreSQL driver that is installed: SQLAlchemy 2.1 means psycopg 3
    by it, the ``tune`` extra installs psycopg2 (``postgresql+psycopg2://``)."""
    scheme, sep, rest = url.partition("://")
    if scheme not in ("postgresql", "postgres"):
        return url
    import importlib.util
    if importlib.util.find_spec("psycopg") is None and importlib.util.find_spec("psycopg2") is not None:
        return f"postgresql+psycopg2://{rest}"
    return f"postgresql://{rest}"


def redact(url: str) -> str:
    """A storage URL without its password, fit for logs and files."""
    return re.sub(r"(://[^:/@]+):[^@]*@", r"\1:***@", url)
