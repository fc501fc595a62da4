"""Training entry: `python -m rnnlab [group=option ...] [key=value ...]`.

`train(cfg)` is a plain function (tests call it through Hydra's compose API); `main` is the
Hydra wrapper that returns the optimised metric so sweepers can use it.
"""

from __future__ import annotations

import functools
import json
import logging
import math
import os
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import hydra
import lightning.pytorch as pl
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import TensorBoardLogger
from omegaconf import DictConfig, OmegaConf

from rnnlab.builder import build, build_trainer, restore_codec
from rnnlab.checkpoints import CONFIG_KEY, RunStateInCheckpoint, check_resumable, read_checkpoint
from rnnlab.codecs.base import Codec
from rnnlab.config_checks import check_config, flat_items
from rnnlab.errors import ConfigError, RnnlabError
from rnnlab.sweeps import TrialPruned, trial_callbacks

log = logging.getLogger(__name__)

warnings.filterwarnings("ignore", message=r".*LeafSpec.*")
warnings.filterwarnings("ignore", message=r".*does not have many workers.*")
# data.streaming: each dataloader worker yields its own share of the batches, so the length is
# exact (rnnlab.data.streaming); Lightning cannot know that and warns.
warnings.filterwarnings("ignore", message=r".*`IterableDataset` has `__len__` defined.*")


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


def resolve_ckpt_path(ckpt_path: str | None, cfg: DictConfig) -> tuple[str | None, Codec | None]:
    """The checkpoint to resume and its codec: `last` -> this run dir's last.ckpt (the run-dir
    resolver made it the resumed run's dir). The run goes on with the checkpoint's codec
    (vocabulary), whatever the data would give now.

    The file is checked before Lightning reads it: readable, rnnlab's, this task's, with this
    run's model settings; each problem is one CheckpointError naming the file and the fix."""
    if ckpt_path is None:
        return None, None
    path = (
        Path(cfg.paths.output_dir) / "checkpoints" / "last.ckpt"
        if ckpt_path == "last"
        else Path(ckpt_path)
    )
    if ckpt_path == "last" and not path.exists():
        raise ConfigError(
            f"ckpt_path=last: no checkpoint at {path}; train a run first or give a .ckpt path"
        )
    # Nothing of the stored config is built when resuming (this run's config is), so no trust
    # check; the file is still read as data only.
    checkpoint = read_checkpoint(path, trust=True)
    check_resumable(checkpoint[CONFIG_KEY], OmegaConf.to_container(cfg, resolve=True), path)
    return str(path), restore_codec(cfg, checkpoint)


def flat_hparams(cfg: DictConfig) -> dict[str, Any]:
    """The choices that define a run, flattened for TensorBoard's HParams tab."""
    resolved = OmegaConf.to_container(cfg, resolve=True)  # interpolations may cross nodes
    keys = ("task_name", "size_name", "seed", "data", "model", "optimizer", "module")
    container = {key: resolved[key] for key in keys if key in resolved}
    return {
        key: value if isinstance(value, (int, float, str, bool)) else str(value)
        for key, value in flat_items(container)
        if key.rsplit(".", 1)[-1] not in ("_target_", "_partial_")
    }


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
    check_config(cfg)
    # A bad file fails before any work.
    ckpt_path, codec = resolve_ckpt_path(cfg.get("ckpt_path"), cfg)
    pl.seed_everything(cfg.seed, workers=True, verbose=False)
    datamodule, module = build(cfg, codec)
    config = OmegaConf.to_container(cfg, resolve=True)
    trainer = build_trainer(cfg, [RunStateInCheckpoint(config), *trial_callbacks(cfg)])

    if cfg.get("train", True) and ckpt_path is None:
        tune(cfg.get("tune") or {}, trainer, module, datamodule)
    if cfg.get("train", True):
        trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path, weights_only=True)
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
    checkpoint = next(
        (c for c in trainer.checkpoint_callbacks if isinstance(c, ModelCheckpoint)), None
    )
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
    """Add this attempt to the run's record, `result.json` in its run dir.

    The top-level keys describe the latest attempt (what sweep summaries read); `attempts` keeps
    every attempt in order, so a resume or a failed retry never erases what a finished attempt
    recorded. Written atomically: a kill leaves the old record or the new one."""
    path = Path(output_dir) / "result.json"
    attempts: list[dict[str, Any]] = []
    if path.is_file():
        try:
            previous = json.loads(path.read_text())
            attempts = previous.get("attempts") or [previous]
        except (ValueError, AttributeError):
            aside = path.with_name(f"result.unreadable-{int(time.time())}.json")
            path.replace(aside)
            log.warning("%s was not JSON; kept it as %s", path, aside)
    attempts = [*attempts, result]
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".result.json.{os.getpid()}.tmp")
    partial.write_text(json.dumps({**result, "attempts": attempts}, indent=2))
    os.replace(partial, path)


def _log_lightning_to_run_log() -> None:
    """Lightning gives its loggers a console handler of their own and stops propagation, so their
    lines would miss Hydra's `train.log`; give them the root logger's file handlers too."""
    files = [h for h in logging.getLogger().handlers if isinstance(h, logging.FileHandler)]
    for name in ("lightning.pytorch", "lightning.fabric"):
        logger = logging.getLogger(name)
        for handler in files:
            if handler not in logger.handlers:
                logger.addHandler(handler)


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
    _log_lightning_to_run_log()
    multirun = hydra_cfg.mode == RunMode.MULTIRUN
    if multirun:
        _spawn_in_multirun(cfg)
    result: dict[str, Any] = {
        "overrides": list(hydra_cfg.overrides.task),
        "metric": cfg.get("optimized_metric"),
        "value": None,
        "status": "failed",
        "started": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "ckpt_path": cfg.get("ckpt_path"),
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
    except (KeyboardInterrupt, SystemExit):  # Lightning turns Ctrl-C into SystemExit
        result["status"] = "interrupted"
        raise
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
