"""The Optuna study behind a sweep: where it lives, what it was created for, its trial budget.

Trial user attributes written here (public Optuna API only):
- `rnnlab:worker`: `host:pid` of the sweep process that runs the trial. A trial still RUNNING
  whose sweep process on this host is gone was interrupted by a kill: it is failed and not
  counted, so a resumed sweep runs a new trial in its place.
- `rnnlab:status`: how the job ended (ok, nan, failed, pruned), or `skipped` for a trial that
  another worker's trial beat to the last slot of the budget (it never ran).
"""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, SQLAlchemyError

from rnnlab.errors import ConfigError

WORKER = "rnnlab:worker"
STATUS = "rnnlab:status"
IDENTITY = "rnnlab:identity"
SKIPPED = "skipped"


def storage_url(storage: str | None, sweep_dir: Path) -> str:
    """The study's database: the given URL, or a sqlite file in the sweep dir (so every sweep
    can be resumed and watched with the dashboard). A sqlite file's folder is created."""
    url = storage or f"sqlite:///{(sweep_dir / 'optuna.db').resolve()}"
    if url.startswith("sqlite:///"):
        Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    return url


def shown(url: str) -> str:
    """The URL for logs and messages: without its password."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return url


def worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def _describe_difference(stored: dict[str, Any], current: dict[str, Any]) -> str:
    """The first part of the identity that differs, e.g. `fixed overrides: -a=1 +a=2`."""
    for part in ("task", "objectives", "search space", "fixed overrides"):
        old, new = stored.get(part), current.get(part)
        if old == new:
            continue
        if isinstance(old, dict) and isinstance(new, dict):
            changes = [
                f"{key} {old.get(key, '(none)')} -> {new.get(key, '(none)')}"
                for key in sorted(set(old) | set(new))
                if old.get(key) != new.get(key)
            ]
            return f"{part}: {'; '.join(changes)}"
        if isinstance(old, list) and isinstance(new, list):
            changes = [f"-{item}" for item in old if item not in new]
            changes += [f"+{item}" for item in new if item not in old]
            return f"{part}: {' '.join(changes)}"
        return f"{part}: {old} -> {new}"
    return "unknown"


def _create_or_load(name: str, url: str, directions: list[str], attempts: int = 4) -> optuna.Study:
    failure: Exception | None = None
    for attempt in range(1, attempts + 1):
        try:
            return optuna.create_study(
                study_name=name, storage=url, directions=directions, load_if_exists=True
            )
        except ImportError as error:  # no driver for the URL's database
            failure = error
            break
        except RuntimeError as error:  # tables of an older Optuna: its message says what to run
            reason = " ".join(str(error).split()).replace("$STORAGE_URL", shown(url))
            raise ConfigError(f"hydra.sweeper.storage={shown(url)}: {reason}") from None
        except SQLAlchemyError as error:
            # Workers that start together on a new database race to create its tables (Optuna
            # issue 1092): the losers find them on a retry. Or a bad URL, or no server.
            failure = error
            if attempt < attempts:
                time.sleep(attempt)
    reason = str(failure).splitlines()[0]
    raise ConfigError(
        f"hydra.sweeper.storage={shown(url)}: cannot open it ({reason}); fix the URL or install "
        "its driver (postgresql: psycopg2-binary, mysql+pymysql: pymysql)"
    )


def open_study(
    name: str, url: str, directions: list[str], identity: dict[str, Any], force: bool
) -> optuna.Study:
    """Create the study, or load it if it exists and was created for the same task, objectives,
    search space and fixed overrides (`force` continues it anyway)."""
    study = _create_or_load(name, url, directions)
    stored = study.user_attrs.get(IDENTITY)
    if stored is None:
        study.set_user_attr(IDENTITY, identity)
    elif stored != identity and not force:
        raise ConfigError(
            f"hydra.sweeper.study_name={name}: the study in {shown(url)} was made by a different "
            f"command ({_describe_difference(stored, identity)}); rerun its command, choose a "
            "new study_name or storage, or add hydra.sweeper.force=true to continue it anyway"
        )
    return study


def _alive(worker: str) -> bool:
    """Whether the sweep process `host:pid` may still be running (other hosts: assume so)."""
    host, _, pid = worker.rpartition(":")
    if host != socket.gethostname():
        return True
    if int(pid) == os.getpid():  # a reused pid: this process has not started a trial yet
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def fail_interrupted(study: optuna.Study) -> list[int]:
    """Fail the RUNNING trials whose sweep process on this host was killed; their numbers."""
    numbers = []
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        if not _alive(trial.user_attrs.get(WORKER, "")):
            study.tell(trial.number, state=TrialState.FAIL, skip_if_finished=True)
            numbers.append(trial.number)
    return numbers


def status(trial: FrozenTrial) -> str:
    """ok, nan, failed, pruned, skipped, running, or interrupted (failed without a job status).
    Trials of studies made before rnnlab kept a status go by their state."""
    if trial.state in (TrialState.RUNNING, TrialState.WAITING):
        return "running"
    by_state = {TrialState.COMPLETE: "ok", TrialState.PRUNED: "pruned"}
    return trial.user_attrs.get(STATUS, by_state.get(trial.state, "interrupted"))


def counts_toward_budget(trial: FrozenTrial) -> bool:
    return status(trial) not in ("interrupted", SKIPPED)


def used_budget(study: optuna.Study, below: int | None = None) -> int:
    """Trials that ran, run, or are about to run (numbers below `below` only, if given)."""
    return sum(
        counts_toward_budget(trial)
        for trial in study.get_trials(deepcopy=False)
        if below is None or trial.number < below
    )


def finished(study: optuna.Study) -> int:
    return sum(
        status(trial) not in ("running", "interrupted", SKIPPED)
        for trial in study.get_trials(deepcopy=False)
    )
