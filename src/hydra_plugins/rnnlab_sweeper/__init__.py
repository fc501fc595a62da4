"""rnnlab's Optuna sweeper. Hydra only loads sweepers from the `hydra_plugins` namespace."""

from __future__ import annotations

import logging
from typing import Any

from hydra_plugins.hydra_optuna_sweeper.optuna_sweeper import OptunaSweeper
from omegaconf import DictConfig

log = logging.getLogger(__name__)


class ResumableOptunaSweeper(OptunaSweeper):
    """Optuna sweeper that continues an interrupted study instead of starting over.

    With persistent storage (`hydra.sweeper.storage=sqlite:///sweep.db`) and a fixed study name,
    a re-run counts the trials already finished, runs only the missing ones (a trial that was
    running when the sweep was killed is marked failed and run again), and numbers the new jobs
    after the old ones so no job dir is overwritten. Without storage it is the stock sweeper.
    """

    def setup(self, *, hydra_context: Any, task_function: Any, config: DictConfig) -> None:
        """The search space comes from the task (`search_space` in the job config, selected by
        the task name) unless `hydra.sweeper.params` is given."""
        super().setup(hydra_context=hydra_context, task_function=task_function, config=config)
        if not self.sweeper.params and config.get("search_space"):
            self.sweeper.params = config.search_space

    def sweep(self, arguments: list[str]) -> None:
        import optuna  # only sweeps pay for importing it

        finished = (
            optuna.trial.TrialState.COMPLETE,
            optuna.trial.TrialState.FAIL,
            optuna.trial.TrialState.PRUNED,
        )
        impl = self.sweeper
        if impl.storage and impl.study_name:
            try:
                study = optuna.load_study(study_name=impl.study_name, storage=impl.storage)
            except KeyError:
                study = None
            if study is not None:
                trials = study.get_trials(deepcopy=False)
                done = sum(trial.state in finished for trial in trials)
                for trial in trials:  # left RUNNING by a killed sweep: failed, and run again
                    if trial.state == optuna.trial.TrialState.RUNNING:
                        study._storage.set_trial_state(
                            trial._trial_id, optuna.trial.TrialState.FAIL
                        )
                log.info(
                    "resuming study %s: %d of %d trials already finished",
                    impl.study_name,
                    done,
                    impl.n_trials,
                )
                impl.n_trials = max(0, impl.n_trials - done)
                impl.job_idx = len(trials)  # new job dirs after the old ones
        return super().sweep(arguments)
