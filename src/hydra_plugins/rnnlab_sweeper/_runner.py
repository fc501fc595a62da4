"""Running trials: one at a time in this process, several at once in forked processes, or
through another Hydra launcher (submitit, SLURM).

Every trial runs as one Hydra job whose number is the trial's number, so job dirs stay distinct
when several sweep processes share a study. Forked trials talk to the sweeper through a pipe
(reports, pruning decisions, facts); only the sweeper process touches the study's database.
"""

from __future__ import annotations

import concurrent.futures
import json
import logging
import multiprocessing
import multiprocessing.connection
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
from hydra.plugins.launcher import Launcher

from rnnlab.sweeps import reporting_to

log = logging.getLogger(__name__)


@dataclass
class Outcome:
    """How a trial's job ended: status ok, nan, failed or pruned; the job's value and facts."""

    trial: optuna.Trial
    status: str
    value: float | None
    facts: dict[str, float] = field(default_factory=dict)


def thread_budget(n_jobs: int, cores: int | None = None, cap: str | None = None) -> int:
    """Threads per trial when `n_jobs` trials share this machine: cores // n_jobs, at least 1,
    and no more than `cap` (the user's OMP_NUM_THREADS, if set). Two trials with two threads
    each on two cores run 10-30x slower than one after the other (OpenMP spin-waits)."""
    if cores is None:
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    threads = max(1, (cores or 1) // n_jobs)
    return min(threads, int(cap)) if cap and cap.isdigit() and int(cap) > 0 else threads


def use_threads(threads: int) -> None:
    """This process, and the processes it starts (data workers, DDP), use `threads` threads."""
    import torch

    torch.set_num_threads(threads)
    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[name] = str(threads)


class OptunaReporter:
    """Reports a running trial's values to Optuna and asks its pruner (sweeper process)."""

    def __init__(self, trial: optuna.Trial, prunable: bool):
        self.trial = trial
        self.prunable = prunable
        self.facts: dict[str, float] = {}

    def report(self, epoch: int, value: float) -> bool:
        if not self.prunable:  # Optuna prunes and records curves for one objective only
            return False
        self.trial.report(value, epoch)
        return self.trial.should_prune()

    def record(self, facts: dict[str, float]) -> None:
        self.facts.update(facts)


def run_job(launcher: Launcher, number: int, overrides: list[str]) -> tuple[str, float | None]:
    """Run job `number` with `overrides` through `launcher`: (status, value). The status is the
    job's own (result.json): ok, nan, failed or pruned."""
    try:
        (job,) = launcher.launch([overrides], initial_job_idx=number)
        value = job.return_value  # raises what the job raised
    except Exception:
        log.exception("trial %d failed outside the training job", number)
        return "failed", None
    result = Path(job.hydra_cfg.hydra.runtime.output_dir) / "result.json"
    status = json.loads(result.read_text())["status"] if result.is_file() else None
    return status or ("ok" if value is not None else "failed"), value


class InProcess:
    """One trial at a time, in this process (Hydra's basic launcher, n_jobs=1)."""

    def __init__(self, launcher: Launcher, prunable: bool):
        self.launcher = launcher
        self.prunable = prunable
        self.done: list[Outcome] = []

    def free(self) -> int:
        return 0 if self.done else 1

    def busy(self) -> bool:
        return bool(self.done)

    def start(self, trial: optuna.Trial, overrides: list[str]) -> None:
        reporter = OptunaReporter(trial, self.prunable)
        with reporting_to(reporter):
            status, value = run_job(self.launcher, trial.number, overrides)
        self.done.append(Outcome(trial, status, value, reporter.facts))

    def wait(self) -> list[Outcome]:
        done, self.done = self.done, []
        return done

    def close(self) -> None:
        pass


class _PipeReporter:
    """A forked trial's reporter: asks the sweeper process through the pipe."""

    def __init__(self, connection: multiprocessing.connection.Connection):
        self.connection = connection

    def report(self, epoch: int, value: float) -> bool:
        self.connection.send(("report", epoch, value))
        return self.connection.recv()

    def record(self, facts: dict[str, float]) -> None:
        self.connection.send(("record", facts))


def _trial_process(
    connection: multiprocessing.connection.Connection,
    launcher: Launcher,
    number: int,
    overrides: list[str],
    threads: int,
) -> None:
    use_threads(threads)
    with reporting_to(_PipeReporter(connection)):
        status, value = run_job(launcher, number, overrides)
    connection.send(("done", status, value))


class Forked:
    """`n_jobs` trials at once, each in a process forked from this one (no re-import, no
    pickling) with its share of the cores. Forking is safe here because the sweeper process
    itself never trains: it has no OpenMP thread pool, threads or open training files."""

    def __init__(self, launcher: Launcher, n_jobs: int, threads: int, prunable: bool):
        self.launcher = launcher
        self.n_jobs = n_jobs
        self.threads = threads
        self.prunable = prunable
        self.context = multiprocessing.get_context("fork")
        self.running: dict[Any, tuple[OptunaReporter, Any]] = {}

    def free(self) -> int:
        return self.n_jobs - len(self.running)

    def busy(self) -> bool:
        return bool(self.running)

    def start(self, trial: optuna.Trial, overrides: list[str]) -> None:
        ours, theirs = self.context.Pipe()
        args = (theirs, self.launcher, trial.number, overrides, self.threads)
        process = self.context.Process(target=_trial_process, args=args)
        process.start()
        theirs.close()
        self.running[ours] = (OptunaReporter(trial, self.prunable), process)

    def wait(self) -> list[Outcome]:
        done: list[Outcome] = []
        while not done:
            for connection in multiprocessing.connection.wait(list(self.running)):
                reporter, process = self.running[connection]
                try:
                    message = connection.recv()
                except EOFError:  # the process died without a word (killed, out of memory)
                    process.join()
                    log.error(
                        "trial %d: its process exited with %s",
                        reporter.trial.number,
                        process.exitcode,
                    )
                    message = ("done", "failed", None)
                if message[0] == "report":
                    connection.send(reporter.report(*message[1:]))
                elif message[0] == "record":
                    reporter.record(message[1])
                else:
                    process.join()
                    connection.close()
                    del self.running[connection]
                    done.append(Outcome(reporter.trial, message[1], message[2], reporter.facts))
        return done

    def close(self) -> None:
        for _, process in self.running.values():
            process.terminate()
            process.join()


class LauncherThreads:
    """`n_jobs` trials at once through another launcher: one launch per trial, from threads, so
    a new trial starts as soon as any finishes. No pruning: the jobs run elsewhere."""

    def __init__(self, launcher: Launcher, n_jobs: int):
        self.launcher = launcher
        self.n_jobs = n_jobs
        self.pool = concurrent.futures.ThreadPoolExecutor(n_jobs)
        self.running: dict[concurrent.futures.Future, optuna.Trial] = {}

    def free(self) -> int:
        return self.n_jobs - len(self.running)

    def busy(self) -> bool:
        return bool(self.running)

    def start(self, trial: optuna.Trial, overrides: list[str]) -> None:
        future = self.pool.submit(run_job, self.launcher, trial.number, overrides)
        self.running[future] = trial

    def wait(self) -> list[Outcome]:
        finished, _ = concurrent.futures.wait(
            self.running, return_when=concurrent.futures.FIRST_COMPLETED
        )
        return [Outcome(self.running.pop(future), *future.result()) for future in finished]

    def close(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)
