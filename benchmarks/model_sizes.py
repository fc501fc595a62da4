"""Parameter counts of every task's model at every size preset, as a Markdown table (README).

python benchmarks/model_sizes.py
"""

from __future__ import annotations

from pathlib import Path

from hydra import compose, initialize_config_module

from rnnlab.builder import build_datamodule, instantiate_node

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
SIZES = ("tiny", "small", "medium", "large")


def tasks_with_sizes() -> list[str]:
    return sorted({p.stem.rsplit("_", 1)[0] for p in (CONFIGS / "size" / "task").glob("*.yaml")})


def parameter_count(task: str, size: str) -> int:
    """Parameters of `task`'s net at `size`, built as training builds it (data sizes included)."""
    with initialize_config_module(config_module="rnnlab.configs", version_base="1.3"):
        cfg = compose("train", overrides=[f"task={task}", f"size={size}"])
    datamodule = build_datamodule(cfg)
    net = instantiate_node(cfg, "model", **datamodule.model_kwargs())
    return sum(p.numel() for p in net.parameters())


def main() -> None:
    print("| task | " + " | ".join(SIZES) + " |")
    print("| --- |" + " ---: |" * len(SIZES))
    for task in tasks_with_sizes():
        try:
            counts = [f"{parameter_count(task, size):,}" for size in SIZES]
        except Exception:  # the vocabulary (hence the size) comes from the task's data
            counts = ["depends on the vocabulary"] * len(SIZES)
        print(f"| {task} | " + " | ".join(counts) + " |")


if __name__ == "__main__":
    main()
