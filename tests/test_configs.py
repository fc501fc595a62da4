"""Every config composes; bad names and values fail with messages that say what to do."""

from __future__ import annotations

import pytest
from conftest import REPO, compose_config
from hydra.errors import ConfigCompositionException, MissingConfigException

from rnnlab.errors import ConfigError

TASKS = sorted(p.stem for p in (REPO / "configs" / "task").glob("*.yaml"))
CELLS = ["rnn", "gru", "lstm", "rnn_scratch", "gru_scratch", "lstm_scratch"]
ACCELERATORS = {
    "auto": ("auto", 1, "auto"),
    "cpu": ("cpu", 1, "auto"),
    "gpu": ("gpu", 1, "auto"),
    "multi_gpu": ("gpu", -1, "ddp"),
    "ddp_cpu": ("cpu", 2, "ddp_spawn"),
}


@pytest.mark.parametrize("task", TASKS)
@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("accelerator", sorted(ACCELERATORS))
def test_every_task_cell_accelerator_composes(task, cell, accelerator):
    cfg = compose_config(f"task={task}", f"cell={cell}", f"accelerator={accelerator}")
    assert cfg.task_name == task
    assert cfg.model.cell == cell
    assert (cfg.trainer.accelerator, cfg.trainer.devices, cfg.trainer.strategy) == ACCELERATORS[
        accelerator
    ]
    assert cfg.monitor.startswith("val/")
    assert cfg.callbacks.model_checkpoint.monitor == cfg.monitor


@pytest.mark.parametrize("experiment", ["keras_addition", "book_parity"])
def test_experiments_compose_and_override_task(experiment):
    cfg = compose_config(f"experiment={experiment}")
    if experiment == "keras_addition":
        assert (cfg.task_name, cfg.model.decoder, cfg.data.batch_size) == (
            "arithmetic",
            "repeat",
            32,
        )
    else:
        assert (cfg.task_name, cfg.data.target, cfg.model.hidden_size) == ("parity", "count", 24)


@pytest.mark.parametrize(
    "debug,key,value",
    [
        ("fast", "fast_dev_run", True),
        ("overfit", "overfit_batches", 1),
        ("profile", "profiler", "simple"),
    ],
)
def test_debug_presets_compose(debug, key, value):
    assert compose_config(f"debug={debug}").trainer[key] == value


@pytest.mark.parametrize("scheduler", ["none", "cosine", "plateau"])
def test_scheduler_group_instantiates(tmp_path, scheduler):
    from rnnlab.builder import instantiate_node

    cfg = compose_config(f"scheduler={scheduler}", output_dir=tmp_path)
    factory = instantiate_node(cfg, "scheduler")
    assert (factory is None) == (scheduler == "none")


def test_plain_keys_override_task_defaults():
    cfg = compose_config("task=parity", "model.hidden_size=17", "data.length=20", "cell=gru")
    assert (cfg.model.hidden_size, cfg.data.length, cfg.model.cell) == (17, 20, "gru")


@pytest.mark.parametrize(
    "group,bad,valid", [("task", "nosuchtask", "parity"), ("cell", "transformer", "gru")]
)
def test_unknown_group_option_lists_valid_ones(group, bad, valid):
    with pytest.raises((MissingConfigException, ConfigCompositionException)) as error:
        compose_config(f"{group}={bad}")
    assert bad in str(error.value) and valid in str(error.value)


@pytest.mark.parametrize(
    "overrides,key",
    [
        (["model.hidden_size=0"], "model.hidden_size"),
        (["model.hidden_size=-4"], "model.hidden_size"),
        (["data.digits=-1"], "data.digits"),
        (["model.attention=luong"], "model.attention"),
        (["task=parity", "data.target=bits"], "data.target"),
        (["model.dropout=1.5"], "model.dropout"),
    ],
)
def test_bad_values_raise_config_error_naming_the_key(tmp_path, overrides, key):
    from rnnlab.builder import build

    cfg = compose_config(
        *overrides,
        "data.train_size=100",
        "data.val_size=10",
        "data.test_size=10",
        output_dir=tmp_path,
    )
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        build(cfg)


def test_slurm_launcher_preset_has_the_keys_a_slurm_user_sets():
    from hydra import compose, initialize_config_module

    with initialize_config_module(config_module="rnnlab.configs", version_base="1.3"):
        cfg = compose(
            "train",
            overrides=["hydra/launcher=slurm", "hydra.launcher.partition=gpu"],
            return_hydra_config=True,
        )
    launcher = cfg.hydra.launcher
    assert launcher._target_.endswith("SlurmLauncher") and launcher.partition == "gpu"
    for key in ("nodes", "tasks_per_node", "gpus_per_node", "timeout_min", "mem_gb"):
        assert key in launcher


def test_hparams_search_presets_compose_with_the_task_search_space():
    from hydra import compose, initialize_config_module

    for search in ("tpe", "random", "cmaes"):
        with initialize_config_module(config_module="rnnlab.configs", version_base="1.3"):
            cfg = compose(
                "train",
                overrides=[f"hparams_search={search}", "task=parity"],
                return_hydra_config=True,
            )
        assert (
            cfg.hydra.sweeper.direction == "maximize" and cfg.hydra.sweeper.max_failure_rate == 1.0
        )
        assert cfg.hydra.sweeper.sampler._target_.lower().endswith(f"{search}sampler")
        assert "optimizer.lr" in cfg.search_space
