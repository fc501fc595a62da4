"""Test metrics of a checkpoint: `python -m rnnlab.evaluate ckpt_path=... [data.path=...]`.

With `data.path` (whatever training takes for the task: a file, a list of files, a folder), all
of it is the test set, encoded with the checkpoint's codec: how a user scores a model on their
own held-out data. Prints `test/<name>: <value>` lines.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from omegaconf import OmegaConf

from rnnlab.errors import RnnlabError

USAGE = (
    "usage: python -m rnnlab.evaluate ckpt_path=<file.ckpt> [data.path=<file, [files] or folder>] "
    "[data.batch_size=N] [accelerator=cpu|gpu|auto] [trust_checkpoint=true]"
)


def evaluate(
    ckpt_path: str,
    data_path: str | Sequence[str] | None = None,
    accelerator: str = "auto",
    batch_size: int | None = None,
    trust: bool = False,
) -> dict[str, float]:
    """Test metrics of the checkpoint on its own test split, or on all of `data_path`.

    `trust`: build whatever classes its stored config names (see `rnnlab.trust`)."""
    from rnnlab.builder import build_datamodule, build_evaluation_trainer
    from rnnlab.inference import load_checkpoint

    cfg, codec, module = load_checkpoint(ckpt_path, trust=trust)
    datamodule = build_datamodule(cfg, codec)
    if batch_size:
        datamodule.eval_batch_size = batch_size
    if data_path is not None:
        datamodule.use_as_test_set(data_path)
    trainer = build_evaluation_trainer(accelerator)
    results = trainer.test(module, datamodule=datamodule, verbose=False)
    return {key: float(value) for key, value in results[0].items()}


def main(argv: Sequence[str] | None = None) -> int:
    args = OmegaConf.to_container(OmegaConf.from_cli(list(sys.argv[1:] if argv is None else argv)))
    data = args.get("data") or {}
    unknown = (set(args) - {"ckpt_path", "data", "accelerator", "trust_checkpoint"}) | (
        set(data) - {"path", "batch_size"}
    )
    if "ckpt_path" not in args or unknown:
        print(
            f"error: unknown option(s) {sorted(unknown)}\n{USAGE}" if unknown else USAGE,
            file=sys.stderr,
        )
        return 2
    try:
        metrics = evaluate(
            args["ckpt_path"],
            data.get("path"),
            args.get("accelerator", "auto"),
            data.get("batch_size"),
            trust=args.get("trust_checkpoint") is True,
        )
    except RnnlabError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    for name, value in sorted(metrics.items()):
        print(f"{name}: {value:.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
