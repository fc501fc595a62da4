"""rnnlab's Optuna sweeper: Hydra's Sweeper plugin API on Optuna's ask-and-tell API.

Hydra loads sweepers only from the `hydra_plugins` namespace and names them by the module that
defines them, so the class lives here. This module holds only the configuration (Hydra imports
it on every run; its scanner skips the `_` modules): the loop, and Optuna with it, are imported
when a sweep starts (`_loop`).
"""

from __future__ import annotations

import logging
import sys
from typing import Any

from hydra.core.plugins import Plugins
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf

from rnnlab.errors import RnnlabError

log = logging.getLogger(__name__)


class OptunaSweeper(Sweeper):
    """Hydra sweeper over an Optuna study: pruning, parallel trials, workers, resumption.

    Configured by `hydra/sweeper: rnnlab_optuna` (configs/hydra/sweeper/rnnlab_optuna.yaml,
    which documents every key); the `hparams_search` presets select it."""

    def __init__(
        self,
        sampler: DictConfig,
        direction: str,
        objectives: list[str],
        study_name: str,
        storage: str | None,
        n_trials: int,
        n_jobs: int,
        pruner: Any,
        max_failure_rate: float,
        force: bool,
        params: DictConfig | None,
    ):
        self.sampler = sampler
        self.direction = direction
        self.objectives = list(objectives)
        self.study_name = study_name
        self.storage = storage
        self.n_trials = n_trials
        self.n_jobs = n_jobs
        self.pruner = pruner
        self.max_failure_rate = max_failure_rate
        self.force = force
        self.params = params
        self.config: DictConfig | None = None
        self.launcher: Any = None

    def setup(
        self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig
    ) -> None:
        """The search space is `hydra.sweeper.params`, else the task's `search_space`."""
        self.config = config
        self.hydra_context = hydra_context
        self.launcher = Plugins.instance().instantiate_launcher(
            hydra_context=hydra_context, task_function=task_function, config=config
        )
        if not self.params and config.get("search_space"):
            self.params = config.search_space
        if self.params is not None:
            self.params = OmegaConf.to_container(self.params, resolve=True)

    def sweep(self, arguments: list[str]) -> None:
        from hydra_plugins.rnnlab_sweeper._loop import run_sweep

        try:
            run_sweep(self, arguments)
        except RnnlabError as error:
            log.error("%s", error)
            print(f"error: {error}", file=sys.stderr)
            raise SystemExit(2) from None
