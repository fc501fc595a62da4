"""The one place config becomes objects: codec -> datamodule -> net -> LightningModule, and
every Trainer.

Training, evaluation and checkpoint loading share it, so a checkpoint is rebuilt exactly as it
was trained. A checkpoint's codec is restored by the class its datamodule names
(`TaskDataModule.codec_class`): the stored config's `data._target_`, allow-listed by
`rnnlab.trust` like every other target; the codec state itself is plain data.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import lightning.pytorch as pl
from hydra.errors import InstantiationException
from hydra.utils import get_class, instantiate
from omegaconf import DictConfig, OmegaConf

from rnnlab.checkpoints import CODEC_KEY
from rnnlab.codecs.base import Codec
from rnnlab.data.base import TaskDataModule
from rnnlab.errors import CheckpointError, RnnlabError
from rnnlab.models.decoding import DecodingOptions
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


def build_datamodule(cfg: DictConfig, codec: Codec | None = None) -> TaskDataModule:
    """The task's datamodule, not set up yet; a given codec (a checkpoint's) is the one its
    splits will be encoded with."""
    datamodule = instantiate_node(cfg, "data")
    if codec is not None:
        datamodule.codec = codec
    return datamodule


# Before `decoding:` (#17), a seq2seq module kept its decoding options as keys of its own and a
# language model under `generation`.
_LEGACY_DECODING = (*DecodingOptions.names(), "generation")


def _module_node(cfg: DictConfig) -> dict[str, Any]:
    """The module config, a checkpoint's older decoding keys moved into `decoding`."""
    node = OmegaConf.to_container(cfg.module, resolve=True)
    old = {key: node.pop(key) for key in _LEGACY_DECODING if key in node and key != "decoding"}
    if old:
        node["decoding"] = DecodingOptions.with_aliases({**old.pop("generation", {}), **old})
    return node


def build_module(cfg: DictConfig, codec: Codec) -> TaskModule:
    """The net sized by the codec, then the LightningModule around it (holding the codec)."""
    net = instantiate_node(cfg, "model", **codec.model_kwargs())
    # Called here rather than through instantiate: Hydra would read a dataclass (the codec) as
    # config.
    make_module = instantiate_node({"module": _module_node(cfg)}, "module", _partial_=True)
    return make_module(
        net=net,
        codec=codec,
        optimizer=instantiate_node(cfg, "optimizer"),
        scheduler=instantiate_node(cfg, "scheduler"),
    )


def build(cfg: DictConfig, codec: Codec | None = None) -> tuple[TaskDataModule, TaskModule]:
    """Datamodule, set up (its codec built from the training data unless one is given), then
    the module."""
    datamodule = build_datamodule(cfg, codec)
    datamodule.prepare_data()
    datamodule.setup("fit")
    module = build_module(cfg, datamodule.codec)
    if codec is None and cfg.model.get("init_from"):
        # #20 transfer hook: a fresh run starts from a language model's weights (a resumed run,
        # given its checkpoint's codec, has weights of its own).
        init_from_language_model(module.net, datamodule.codec, cfg.model.init_from)
    return datamodule, module


def restore_codec(cfg: DictConfig, checkpoint: Mapping[str, Any]) -> Codec:
    """The codec stored in `checkpoint`, of the class the config's datamodule names.

    Checkpoints written before codecs kept the vocabulary as the datamodule's state (under its
    class name) and the settings in the data config: those two, merged, are the codec state."""
    data_class = get_class(str(cfg.data._target_))
    if not (isinstance(data_class, type) and issubclass(data_class, TaskDataModule)):
        raise CheckpointError(
            f"data._target_={cfg.data._target_} is not an rnnlab task datamodule: its "
            "checkpoint has no codec rnnlab can restore"
        )
    state = checkpoint.get(CODEC_KEY)
    if state is None:
        legacy = checkpoint.get(data_class.__qualname__, {})
        state = {**OmegaConf.to_container(cfg.data, resolve=True), **legacy}
    try:
        return data_class.codec_class.from_state(state)
    except (KeyError, TypeError, ValueError, AttributeError) as error:
        raise CheckpointError(
            f"its codec state (vocabularies, settings) cannot be read ({type(error).__name__}: "
            f"{str(error)[:80]}): pass a .ckpt that `python -m rnnlab` wrote"
        ) from None


def build_trainer(cfg: DictConfig, callbacks: Sequence[pl.Callback] = ()) -> pl.Trainer:
    """The training Trainer: the config's callbacks (switched-off ones left out) and `callbacks`,
    the config's loggers."""
    built = [instantiate_node(cfg.callbacks, key) for key in (cfg.get("callbacks") or {})]
    built = [callback for callback in built if callback is not None]
    loggers = [instantiate_node(cfg.logger, key) for key in (cfg.get("logger") or {})]
    loggers = [logger for logger in loggers if logger is not None]
    return instantiate_node(cfg, "trainer", callbacks=[*built, *callbacks], logger=loggers or False)


def build_evaluation_trainer(accelerator: str = "auto") -> pl.Trainer:
    """A quiet one-device Trainer that tests a model: no logger, checkpoints or progress bar."""
    return pl.Trainer(
        accelerator=accelerator,
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
