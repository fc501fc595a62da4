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

from rnnlab.checkpoints import CONFIG_KEY, read_checkpoint, stored_data_state
from rnnlab.data.base import TaskDataModule
from rnnlab.errors import CheckpointError, RnnlabError
from rnnlab.tasks.base import TaskModule
from rnnlab.transfer import init_from_language_model


def instantiate_node(cfg: DictConfig, key: str, **kwargs: Any) -> Any:
    """instantiate(cfg[key]) but surfacing our own errors (which name the key) unwrapped.

    A missing or empty node (an empty group option such as `scheduler=none`) gives None, and
    so does a switchable node whose `enabled` is false (`callbacks.gradient_flow.enabled=true`
    switches one on); `enabled` itself is not passed on, nor is `init_from`."""
    node = cfg.get(key)
    if not node:
        return None
    if isinstance(node, DictConfig) and ("enabled" in node or "init_from" in node):
        if not node.get("enabled", True):
            return None
        node = OmegaConf.to_container(node, resolve=True)
        node.pop("enabled", None)
        node.pop("init_from", None)  # model.init_from: read by `build`, not an argument
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
    init_from = cfg.model.get("init_from")
    if init_from and data_state is None and cfg.get("ckpt_path") is None:
        # #20 transfer hook: a fresh run starts from a language model's weights (a checkpoint
        # being loaded or resumed has its own).
        init_from_language_model(net, datamodule.vocab, init_from)
    module = instantiate_node(
        cfg,
        "module",
        net=net,
        optimizer=instantiate_node(cfg, "optimizer"),
        scheduler=instantiate_node(cfg, "scheduler"),
    )
    return datamodule, module


def load_checkpoint(
    path: str | Path, map_location: str | torch.device = "cpu", *, trust: bool = False
) -> tuple[DictConfig, TaskDataModule, TaskModule]:
    """Rebuild (config, datamodule, module) from a checkpoint alone, without reading any data.

    The file is read as data (`read_checkpoint`: `weights_only=True`, and its stored config may
    only name rnnlab's classes and the library classes rnnlab uses, unless `trust`).
    """
    checkpoint = read_checkpoint(path, trust=trust)
    cfg = OmegaConf.create(checkpoint[CONFIG_KEY])
    datamodule, module = build(cfg, stored_data_state(checkpoint))
    try:
        module.load_state_dict(checkpoint["state_dict"])
    except RuntimeError as error:
        first = str(error).strip().splitlines()[-1].strip()[:160]
        raise CheckpointError(
            f"{path}: its weights do not fit the model its config describes ({first})"
        ) from None
    module.to(map_location).eval()
    return cfg, datamodule, module
