"""The sweep loop: while the study's budget (`n_trials` over every run and worker) has room, ask
for a trial, run it as a Hydra job, tell the study how it ended.

The study lives in a database (a sqlite file in the sweep dir unless `storage` names one), so a
sweep can be resumed, watched with optuna-dashboard, and shared by several sweep processes.
"""

from __future__ import annotations

import logging
import os
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

import optuna
from hydra.utils import instantiate
from omegaconf import OmegaConf
from optuna.distributions import CategoricalDistribution
from optuna.trial import TrialState

from hydra_plugins.rnnlab_sweeper import _runner, _study
from hydra_plugins.rnnlab_sweeper._space import SearchSpace, parse_search_space
from rnnlab.errors import ConfigError, require
from rnnlab.sweeps import RESULTS_FILE, progress

if TYPE_CHECKING:
    from hydra_plugins.rnnlab_sweeper import OptunaSweeper

log = logging.getLogger(__name__)

PRUNERS = {"median": "MedianPruner", "hyperband": "HyperbandPruner", "none": "NopPruner"}
FACTS = ("params", "seconds_per_epoch")  # objectives besides the task's metric (minimised)


def _check(sweeper: OptunaSweeper, objectives: list[str], launcher: str) -> None:
    require(
        sweeper.objectives[:1] == ["metric"],
        "hydra.sweeper.objectives",
        f"metric first (the task's optimized_metric), then {FACTS}; got {sweeper.objectives}",
    )
    require(sweeper.n_jobs >= 1, "hydra.sweeper.n_jobs", f"must be >= 1, got {sweeper.n_jobs}")
    for name in objectives[1:]:
        require(name in FACTS, "hydra.sweeper.objectives", f"metric, then {FACTS}; got {name}")
    named = isinstance(sweeper.pruner, str) or sweeper.pruner is None
    require(
        not named or (sweeper.pruner or "none") in PRUNERS,
        "hydra.sweeper.pruner",
        f"median, hyperband, none or a {{_target_: optuna.pruners...}} node; got {sweeper.pruner}",
    )
    pruning = not named or (sweeper.pruner or "none") != "none"
    require(
        not (pruning and len(objectives) > 1),
        "hydra.sweeper.pruner",
        "Optuna prunes single-objective studies only; use hydra.sweeper.pruner=none",
    )
    require(
        launcher == "basic" or not (pruning or len(objectives) > 1),
        f"hydra/launcher={launcher}",
        "pruning and several objectives need the trials on this machine (the basic launcher); "
        "on a cluster start sweep workers that share a storage (README, Sweeps)",
    )


def _check_composes(sweeper: OptunaSweeper, space: SearchSpace) -> None:
    """Compose one job (every parameter at its first value) before creating the study: a
    misspelt key would otherwise fail every trial."""
    probe = {
        name: dist.choices[0] if isinstance(dist, CategoricalDistribution) else dist.low
        for name, dist in space.distributions.items()
    }
    try:
        sweeper.validate_batch_is_legal([space.job_overrides(probe)])
    except Exception as error:  # Hydra's composition errors have no common base class
        reason = " ".join(str(error).splitlines()[:2])
        raise ConfigError(f"sweep overrides: {reason}") from None


def _sampler(sweeper: OptunaSweeper, existing_trials: int) -> optuna.samplers.BaseSampler:
    seed = sweeper.sampler.get("seed")
    if seed is None or not existing_trials:
        return instantiate(sweeper.sampler)
    # resumed with a seed: offset it, or the sampler would repeat the first run's draws
    return instantiate(sweeper.sampler, seed=seed + existing_trials)


def startup_trials(n_trials: int) -> int:
    """Trials `pruner=median` lets finish before it judges any: one in eight, 1 to 5. Optuna's 5
    suits studies of a hundred trials; in a 16-trial sweep they would be a third of the budget,
    spent unjudged (benchmarks/sweep_pruning.py)."""
    return min(5, max(1, n_trials // 8))


def _pruner(sweeper: OptunaSweeper) -> optuna.pruners.BasePruner:
    if not (isinstance(sweeper.pruner, str) or sweeper.pruner is None):
        return instantiate(sweeper.pruner)
    name = sweeper.pruner or "none"
    if name == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=startup_trials(sweeper.n_trials))
    return getattr(optuna.pruners, PRUNERS[name])()


def _trial_runner(sweeper: OptunaSweeper, local: bool, prunable: bool) -> Any:
    if not local:
        return _runner.LauncherThreads(sweeper.launcher, sweeper.n_jobs)
    threads = _runner.thread_budget(sweeper.n_jobs, cap=os.environ.get("OMP_NUM_THREADS"))
    log.info("%d trial(s) at once, %d thread(s) each", sweeper.n_jobs, threads)
    if sweeper.n_jobs == 1:
        _runner.use_threads(threads)
        return _runner.InProcess(sweeper.launcher, prunable)
    return _runner.Forked(sweeper.launcher, sweeper.n_jobs, threads, prunable)


def _ask(study: optuna.Study, space: SearchSpace, n_trials: int) -> optuna.Trial | None:
    """A new trial, or None when the study's budget is used up (by any worker)."""
    if _study.used_budget(study) >= n_trials:
        return None
    trial = study.ask(space.distributions)
    trial.set_user_attr(_study.WORKER, _study.worker_id())
    if _study.used_budget(study, below=trial.number) >= n_trials:
        # another worker asked for the last slot at the same moment and got a lower number
        trial.set_user_attr(_study.STATUS, _study.SKIPPED)
        study.tell(trial, state=TrialState.FAIL)
        return None
    return trial


def _tell(study: optuna.Study, outcome: _runner.Outcome, objectives: list[str]) -> None:
    trial = outcome.trial
    log.info("trial %d: %s, %s %s", trial.number, outcome.status, objectives[0], outcome.value)
    trial.set_user_attr(_study.STATUS, outcome.status)
    for name, value in outcome.facts.items():
        trial.set_user_attr(name, value)
    values = [outcome.value, *(outcome.facts.get(name) for name in objectives[1:])]
    if outcome.status == "pruned":
        study.tell(trial, state=TrialState.PRUNED)
    elif outcome.status == "ok" and None not in values:
        study.tell(trial, values)
    else:
        study.tell(trial, state=TrialState.FAIL)


def _run_trials(
    sweeper: OptunaSweeper,
    study: optuna.Study,
    space: SearchSpace,
    runner: Any,
    objectives: list[str],
) -> None:
    runs = failures = 0
    while True:
        while runner.free() and failures <= sweeper.max_failure_rate * max(runs, 1):
            trial = _ask(study, space, sweeper.n_trials)
            if trial is None:
                break
            runner.start(trial, space.job_overrides(trial.params))
        if not runner.busy():
            break
        for outcome in runner.wait():
            _tell(study, outcome, objectives)
            runs += 1
            failures += outcome.status in ("failed", "nan")
    if failures > sweeper.max_failure_rate * max(runs, 1):
        log.error(
            "stopped: %d of %d trials failed (hydra.sweeper.max_failure_rate=%s)",
            failures,
            runs,
            sweeper.max_failure_rate,
        )


def _write_results(
    sweeper: OptunaSweeper, study: optuna.Study, sweep_dir: Path, url: str, objectives: list[str]
) -> None:
    """optimization_results.yaml: the study's progress, best trial or Pareto front, and each
    trial's status and values (the sweep summary reads it)."""
    trials = study.get_trials(deepcopy=False)
    results: dict[str, Any] = {
        "name": "rnnlab_optuna",
        "study_name": sweeper.study_name,
        "storage": _study.shown(url),
        "objectives": objectives,
        "directions": [direction.name.lower() for direction in study.directions],
        "n_trials": sweeper.n_trials,
        "finished": _study.finished(study),
        "trials": {
            trial.number: {"status": _study.status(trial), "values": trial.values}
            for trial in trials
        },
    }
    if len(objectives) > 1:
        results["pareto_front"] = sorted(trial.number for trial in study.best_trials)
    elif any(trial.state == TrialState.COMPLETE for trial in trials):
        results["best_params"] = study.best_trial.params
        results["best_value"] = study.best_value
    OmegaConf.save(OmegaConf.create(results), sweep_dir / RESULTS_FILE)
    log.info("study %s: %s", sweeper.study_name, progress(results["finished"], sweeper.n_trials))


def run_sweep(sweeper: OptunaSweeper, arguments: list[str]) -> None:
    """The whole sweep: open (or resume) the study, run trials until its budget is used."""
    config = sweeper.config
    sweep_dir = Path(config.hydra.sweep.dir)
    sweep_dir.mkdir(parents=True, exist_ok=True)
    launcher = config.hydra.runtime.choices.get("hydra/launcher")
    objectives = [config.optimized_metric, *sweeper.objectives[1:]]
    _check(sweeper, objectives, launcher)
    directions = [sweeper.direction] + ["minimize"] * (len(objectives) - 1)
    space = parse_search_space(sweeper.params, arguments)
    require(
        bool(space.distributions),
        "hydra.sweeper.params",
        "nothing to search; add a search_space for the task or 'key=choice(...)' overrides",
    )
    _check_composes(sweeper, space)
    identity = {
        "task": config.task_name,
        "objectives": [f"{name} {way}" for name, way in zip(objectives, directions)],
        "search space": space.described(),
        "fixed overrides": sorted(space.fixed.values()),
    }
    url = _study.storage_url(sweeper.storage, sweep_dir)
    study = _study.open_study(sweeper.study_name, url, directions, identity, sweeper.force)
    study.sampler = _sampler(sweeper, len(study.get_trials(deepcopy=False)))
    study.pruner = _pruner(sweeper)
    if study.metric_names is None:  # names the objectives in the dashboard
        with warnings.catch_warnings():  # experimental since Optuna 3.2, stable in use
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            study.set_metric_names(objectives)
    interrupted = _study.fail_interrupted(study)
    if interrupted:
        log.warning("trials %s were interrupted (their sweep was killed)", interrupted)
    done = progress(_study.finished(study), sweeper.n_trials)
    log.info("study %s in %s: %s", sweeper.study_name, _study.shown(url), done)
    runner = _trial_runner(sweeper, launcher == "basic", prunable=len(objectives) == 1)
    try:
        _run_trials(sweeper, study, space, runner, objectives)
    finally:
        runner.close()
    _write_results(sweeper, study, sweep_dir, url, objectives)
