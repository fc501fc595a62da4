"""The one place config becomes objects: datamodule -> net -> LightningModule.

Training and checkpoint loading share it, so a checkpoint is rebuilt exactly as it was trained.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from rnnlab.data.base import TaskDataModule
from rnnlab.errors import DataError, RnnlabError
from rnnlab.tasks.base import TaskModule

CONFIG_KEY = "rnnlab_config"  # where checkpoints keep the resolved run config


def instantiate_node(cfg: DictConfig, key: str, **kwargs: Any) -> Any:
    """instantiate(cfg[key]) but surfacing our own errors (which name the key) unwrapped.

    A missing or empty node (an empty group option such as `scheduler=none`) gives None, and
    so does a switchable node whose `enabled` is false (`callbacks.gradient_flow.enabled=true`
    switches one on); `enabled` itself is not passed on."""
    node = cfg.get(key)
    if not node:
        return None
    if isinstance(node, DictConfig) and "enabled" in node:
        if not node.enabled:
            return None
        node = OmegaConf.to_container(node, resolve=True)
        del node["enabled"]
    try:
        return instantiate(node, **kwargs)
    except InstantiationException as error:
        cause = error.__cause__
        while cause is not None and not isinstance(cause, RnnlabError):
            cause = cause.__cause__
        if cause is not None:
            raise cause from None
        raise


def build(cfg: DictConfig, data_state: dict | None = None) -> tuple[TaskDataModule, TaskModule]:
    """Datamodule (set up, or restored from `data_state`), then the net sized by it, then the
    LightningModule around the net."""
    datamodule = instantiate_node(cfg, "data")
    if data_state is None:
        datamodule.prepare_data()
        datamodule.setup("fit")
    else:
        datamodule.load_state_dict(data_state)
    net = instantiate_node(cfg, "model", **datamodule.model_kwargs())
    module = instantiate_node(
        cfg,
        "module",
        net=net,
        optimizer=instantiate_node(cfg, "optimizer"),
        scheduler=instantiate_node(cfg, "scheduler"),
    )
    return datamodule, module


def load_checkpoint(
    path: str | Path, map_location: str | torch.device = "cpu"
) -> tuple[DictConfig, TaskDataModule, TaskModule]:
    """Rebuild (config, datamodule, module) from a checkpoint alone, without reading any data.

    `weights_only=True`: checkpoints hold tensors and plain containers only (the config and
    vocabularies are stored as dicts), so nothing is unpickled.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(
            f"checkpoint {path} does not exist: pass ckpt_path=<run dir>/checkpoints/last.ckpt"
        )
    checkpoint = torch.load(path, map_location=map_location, weights_only=True)
    if CONFIG_KEY not in checkpoint:
        raise DataError(f"{path} is not an rnnlab checkpoint (it has no {CONFIG_KEY!r} entry)")
    cfg = OmegaConf.create(checkpoint[CONFIG_KEY])
    datamodule = instantiate_node(cfg, "data")
    datamodule, module = build(cfg, checkpoint.get(type(datamodule).__qualname__, {}))
    module.load_state_dict(checkpoint["state_dict"])
    module.eval()
    return cfg, datamodule, module
