"""Training entry: `python -m rnnlab [group=option ...] [key=value ...]`.

`train(cfg)` is a plain function (tests call it through Hydra's compose API); `main` is the
Hydra wrapper that returns the optimised metric so sweepers can use it.
"""

from __future__ import annotations

import logging
import math
import sys
import warnings
from pathlib import Path
from typing import Any

import hydra
import lightning.pytorch as pl
import torch
from lightning.pytorch.loggers import TensorBoardLogger
from omegaconf import DictConfig, OmegaConf

from rnnlab.builder import CONFIG_KEY, build, instantiate_node
from rnnlab.errors import ConfigError, RnnlabError

log = logging.getLogger(__name__)

warnings.filterwarnings("ignore", message=r".*LeafSpec.*")
warnings.filterwarnings("ignore", message=r".*does not have many workers.*")


class _DropLitloggerTip(logging.Filter):
    """Lightning advertises a cloud logger on every run; keep the console for the user's run."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "litlogger" not in record.getMessage()


logging.getLogger("lightning.pytorch.utilities.rank_zero").addFilter(_DropLitloggerTip())


def run_dir(root: str, timestamp: str, ckpt_path: str | None) -> str:
    """Hydra's run dir: a new `<root>/<timestamp>`, or, when resuming, the run being resumed.

    `ckpt_path=last` picks the newest run under `root` that has `checkpoints/last.ckpt`; a path
    `<run>/checkpoints/<file>.ckpt` picks `<run>`. So a resumed run keeps writing in place.
    """
    if ckpt_path == "last":
        candidates = sorted(
            Path(root).glob("*/checkpoints/last.ckpt"), key=lambda p: p.stat().st_mtime
        )
        if candidates:
            return str(candidates[-1].parent.parent)
    elif ckpt_path and Path(ckpt_path).parent.name == "checkpoints":
        return str(Path(ckpt_path).parent.parent)
    return f"{root}/{timestamp}"


if not OmegaConf.has_resolver("rnnlab_run_dir"):
    OmegaConf.register_new_resolver("rnnlab_run_dir", run_dir)


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
    keep = {
        k: cfg[k]
        for k in ("task_name", "size_name", "seed", "data", "model", "optimizer", "module")
        if k in cfg
    }
    container = OmegaConf.to_container(OmegaConf.create(keep), resolve=True)
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


def train(cfg: DictConfig) -> tuple[dict[str, float], dict[str, Any]]:
    """Fit, then test the best checkpoint. Returns (metrics, objects)."""
    pl.seed_everything(cfg.seed, workers=True, verbose=False)
    datamodule, module = build(cfg)
    config = OmegaConf.to_container(cfg, resolve=True)
    callbacks = [instantiate_node(cfg.callbacks, key) for key in (cfg.get("callbacks") or {})]
    callbacks = [callback for callback in callbacks if callback is not None]
    callbacks.append(RunStateInCheckpoint(config))
    loggers = [instantiate_node(cfg.logger, key) for key in (cfg.get("logger") or {})]
    loggers = [logger for logger in loggers if logger is not None]
    trainer: pl.Trainer = instantiate_node(
        cfg, "trainer", callbacks=callbacks, logger=loggers or False
    )

    ckpt_path = resolve_ckpt_path(cfg.get("ckpt_path"), cfg.paths.output_dir)
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


@hydra.main(version_base="1.3", config_path="pkg://rnnlab.configs", config_name="train")
def main(cfg: DictConfig) -> float | None:
    try:
        metrics, _ = train(cfg)
    except RnnlabError as error:
        log.error("%s", error)
        print(f"error: {error}", file=sys.stderr)
        raise SystemExit(2) from None
    return optimized_value(cfg, metrics)


if __name__ == "__main__":
    main()
