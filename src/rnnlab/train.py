"""Training entry: `python -m rnnlab [group=option ...] [key=value ...]`.

`train(cfg)` is a plain function (tests call it through Hydra's compose API); `main` is the
Hydra wrapper that returns the optimised metric so sweepers can use it.
"""

from __future__ import annotations

import functools
import json
import logging
import math
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import hydra
import lightning.pytorch as pl
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from lightning.pytorch.loggers import TensorBoardLogger
from omegaconf import DictConfig, OmegaConf

from rnnlab.builder import CONFIG_KEY, build, instantiate_node
from rnnlab.errors import ConfigError, RnnlabError
from rnnlab.sweeps import TrialPruned, trial_callbacks

log = logging.getLogger(__name__)

warnings.filterwarnings("ignore", message=r".*LeafSpec.*")
warnings.filterwarnings("ignore", message=r".*does not have many workers.*")


class _DropLitloggerTip(logging.Filter):
    """Lightning advertises a cloud logger on every run; keep the console for the user's run."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "litlogger" not in record.getMessage()


logging.getLogger("lightning.pytorch.utilities.rank_zero").addFilter(_DropLitloggerTip())


def _register_sweeper() -> None:
    """Hydra finds sweepers by scanning the `hydra_plugins` namespace, which misses an editable
    install; registering the class directly works for every kind of install."""
    from hydra.core.plugins import Plugins

    from hydra_plugins.rnnlab_sweeper import OptunaSweeper

    Plugins.instance().register(OptunaSweeper)


_register_sweeper()


class RunStateInCheckpoint(pl.Callback):
    """Puts in every checkpoint what Lightning leaves out: the resolved run config (so predict and
    evaluate need nothing else) and the RNG states (so a run resumed from `last.ckpt` draws the
    same dropout masks as an uninterrupted one and ends with the same metrics)."""

    def __init__(self, config: dict):
        self.config = config

    def on_save_checkpoint(
        self, trainer: pl.Trainer, module: pl.LightningModule, checkpoint: dict
    ) -> None:
        checkpoint[CONFIG_KEY] = self.config

    def state_dict(self) -> dict:
        cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []
        return {"torch": torch.get_rng_state(), "cuda": cuda}

    def load_state_dict(self, state_dict: dict) -> None:
        torch.set_rng_state(state_dict["torch"])
        if state_dict["cuda"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state_dict["cuda"])


def resolve_ckpt_path(ckpt_path: str | None, output_dir: str) -> str | None:
    """`last` -> this run dir's last.ckpt (the resolver above made it the resumed run's dir)."""
    if ckpt_path is None:
        return None
    path = (
        Path(output_dir) / "checkpoints" / "last.ckpt" if ckpt_path == "last" else Path(ckpt_path)
    )
    if not path.is_file():
        raise ConfigError(
            f"ckpt_path={ckpt_path}: no checkpoint at {path}; train a run first or give a .ckpt path"
        )
    return str(path)


def flat_hparams(cfg: DictConfig) -> dict[str, Any]:
    """The choices that define a run, flattened for TensorBoard's HParams tab."""
    resolved = OmegaConf.to_container(
        cfg, resolve=True
    )  # whole config: interpolations may cross nodes
    keys = ("task_name", "size_name", "seed", "data", "model", "optimizer", "module")
    container = {key: resolved[key] for key in keys if key in resolved}
    flat: dict[str, Any] = {}

    def walk(prefix: str, node: Any) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                if key != "_target_" and key != "_partial_":
                    walk(f"{prefix}.{key}" if prefix else key, value)
        else:
            flat[prefix] = node if isinstance(node, (int, float, str, bool)) else str(node)

    walk("", container)
    return flat


def tune(options: DictConfig | dict, trainer: pl.Trainer, module, datamodule) -> None:
    """Lightning's batch-size and learning-rate finders, before training (book ch6)."""
    if not (options.get("batch_size") or options.get("lr_find")):
        return
    from lightning.pytorch.tuner import Tuner

    tuner = Tuner(trainer)
    if options.get("batch_size"):
        size = tuner.scale_batch_size(module, datamodule=datamodule, mode="power", max_trials=6)
        log.info("tune.batch_size: training with data.batch_size=%s", size)
    if options.get("lr_find"):
        finder = tuner.lr_find(module, datamodule=datamodule, update_attr=False)
        lr = finder.suggestion() if finder is not None else None
        if lr is not None:
            module.optimizer_factory = functools.partial(module.optimizer_factory, lr=lr)
            log.info("tune.lr_find: training with lr=%.3g", lr)
            print(f"tune.lr_find: suggested learning rate {lr:.3g}")


def run_diagnosis(
    cfg: DictConfig, trainer: pl.Trainer, module, datamodule, metrics
) -> dict[str, float]:
    """Print (and log) the bias/variance paragraph for the model as tested."""
    from rnnlab.diagnosis import diagnose, metric_on

    name = cfg.monitor.split("/", 1)[1]
    val_value = metrics.get(f"{cfg.monitor}_best", metrics.get(cfg.monitor))
    if val_value is None or datamodule.train_set is None:
        return {}
    train_value = metric_on(module, datamodule.train_dataloader(), name)
    text, figures = diagnose(
        cfg.monitor,
        cfg.mode,
        train_value,
        val_value,
        cfg.diagnosis.target_error,
        cfg.diagnosis.tolerance,
        cfg.diagnosis.get("perfect"),
    )
    print(text)
    for logger in trainer.loggers:
        if isinstance(logger, TensorBoardLogger):
            logger.experiment.add_text("diagnosis", text, trainer.global_step)
    return {f"diagnosis/{key}": value for key, value in figures.items()}


def train(cfg: DictConfig) -> tuple[dict[str, float], dict[str, Any]]:
    """Fit, then test the best checkpoint. Returns (metrics, objects)."""
    pl.seed_everything(cfg.seed, workers=True, verbose=False)
    datamodule, module = build(cfg)
    config = OmegaConf.to_container(cfg, resolve=True)
    callbacks = [instantiate_node(cfg.callbacks, key) for key in (cfg.get("callbacks") or {})]
    callbacks = [callback for callback in callbacks if callback is not None]
    callbacks.append(RunStateInCheckpoint(config))
    callbacks.extend(trial_callbacks(cfg))
    loggers = [instantiate_node(cfg.logger, key) for key in (cfg.get("logger") or {})]
    loggers = [logger for logger in loggers if logger is not None]
    trainer: pl.Trainer = instantiate_node(
        cfg, "trainer", callbacks=callbacks, logger=loggers or False
    )

    ckpt_path = resolve_ckpt_path(cfg.get("ckpt_path"), cfg.paths.output_dir)
    if cfg.get("train", True) and ckpt_path is None:
        tune(cfg.get("tune") or {}, trainer, module, datamodule)
    if cfg.get("train", True):
        trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path, weights_only=True)
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
    checkpoint = trainer.checkpoint_callback
    if checkpoint is not None and checkpoint.best_model_score is not None:
        metrics[f"{cfg.monitor}_best"] = float(checkpoint.best_model_score)
    if cfg.get("test", True):
        best = (
            checkpoint.best_model_path
            if checkpoint is not None and checkpoint.best_model_path
            else None
        )
        if best is None:
            log.warning(
                "no best checkpoint (fast_dev_run or checkpointing off): testing the current weights"
            )
        trainer.test(module, datamodule=datamodule, ckpt_path=best, weights_only=True)
        metrics.update(
            {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("test/")}
        )
    if (
        cfg.get("train", True)
        and (cfg.get("diagnosis") or {}).get("enabled")
        and trainer.is_global_zero
    ):
        metrics.update(run_diagnosis(cfg, trainer, module, datamodule, metrics))
    for logger in trainer.loggers:
        if isinstance(logger, TensorBoardLogger):
            wanted = [k for k in metrics if k.startswith("test/") or k.endswith("_best")]
            logger.log_hyperparams(flat_hparams(cfg), {f"hp/{k}": metrics[k] for k in wanted})
    return metrics, {"trainer": trainer, "module": module, "datamodule": datamodule}


def optimized_value(cfg: DictConfig, metrics: dict[str, float]) -> float | None:
    """The value a sweeper optimises: the best validation value of `optimized_metric`."""
    name = cfg.get("optimized_metric")
    if not name:
        return None
    value = metrics.get(f"{name}_best", metrics.get(name))
    return None if value is None or math.isnan(value) else value


def write_result(output_dir: str, result: dict[str, Any]) -> None:
    """One job's outcome as JSON in its run dir: what sweep summaries are built from."""
    path = Path(output_dir) / "result.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2))


def _spawn_in_multirun(cfg: DictConfig) -> None:
    """Plain `ddp` relaunches the script with the `-m` arguments, so inside a sweep every job
    would start a sweep of its own; spawned workers do not."""
    if cfg.trainer.get("strategy") == "ddp":
        log.warning("trainer.strategy=ddp cannot run inside a Hydra multirun; using ddp_spawn")
        cfg.trainer.strategy = "ddp_spawn"


@hydra.main(version_base="1.3", config_path="pkg://rnnlab.configs", config_name="train")
def main(cfg: DictConfig) -> float | None:
    """Train one job. In a multirun a failing job is recorded and the sweep goes on: it returns
    None, which Optuna records as a failed trial."""
    hydra_cfg = HydraConfig.get()
    multirun = hydra_cfg.mode == RunMode.MULTIRUN
    if multirun:
        _spawn_in_multirun(cfg)
    result: dict[str, Any] = {
        "overrides": list(hydra_cfg.overrides.task),
        "metric": cfg.get("optimized_metric"),
        "value": None,
        "status": "failed",
    }
    start = time.perf_counter()
    try:
        metrics, objects = train(cfg)
        result["value"] = optimized_value(cfg, metrics)
        result["epochs"] = objects["trainer"].current_epoch
        result["test"] = {k: v for k, v in metrics.items() if k.startswith("test/")}
        result["status"] = "ok" if result["value"] is not None else "nan"
    except TrialPruned as pruned:  # the sweeper's pruner stopped this trial
        result.update(status="pruned", value=pruned.value, epochs=pruned.epoch)
    except Exception as error:
        result["error"] = f"{type(error).__name__}: {error}"
        if not multirun:
            if isinstance(error, RnnlabError):
                log.error("%s", error)
                print(f"error: {error}", file=sys.stderr)
                raise SystemExit(2) from None
            raise
        log.exception("job %s failed; the sweep goes on", hydra_cfg.job.num)
    finally:
        result["seconds"] = time.perf_counter() - start
        write_result(hydra_cfg.runtime.output_dir, result)
    return result["value"]


if __name__ == "__main__":
    main()
