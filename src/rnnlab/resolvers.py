"""OmegaConf resolvers the configs use. Registered on `import rnnlab`, which Hydra does before
it reads `rnnlab.configs`, so they exist for the CLI, the compose API and sweeps alike."""

from __future__ import annotations

from pathlib import Path

from omegaconf import OmegaConf


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


def hydra_subdir(ckpt_path: str | None, timestamp: str) -> str:
    """Where Hydra writes the composed config and overrides: `.hydra` for a new run; a resumed
    run keeps the original's and writes its own under `.hydra/resume-<timestamp>`."""
    return f".hydra/resume-{timestamp}" if ckpt_path else ".hydra"


def optuna_direction(mode: str) -> str:
    """A task's `mode` (max/min) as Optuna's study direction."""
    return "maximize" if mode == "max" else "minimize"


def register() -> None:
    for name, resolver in (
        ("rnnlab_run_dir", run_dir),
        ("rnnlab_hydra_subdir", hydra_subdir),
        ("rnnlab_direction", optuna_direction),
    ):
        if not OmegaConf.has_resolver(name):
            OmegaConf.register_new_resolver(name, resolver)
