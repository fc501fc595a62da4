"""rnnlab's training entry vs a plain PyTorch loop: one epoch, same model, same batches.

Parity LSTM (the default parity config: 100k strings, lengths 1..50, hidden 64) at batch 256 and
1024. Each epoch runs in a fresh process; rnnlab and raw runs alternate; the figure is the
median ratio per batch size and the ratio of summed medians (goal <= 1.05).

    python benchmarks/overhead.py [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time

import torch
import torch.nn.functional as F
from _common import (
    QUIET,
    EpochTimer,
    compose_config,
    here,
    in_fresh_process,
    median,
    train_with_callbacks,
)
from hydra.utils import instantiate

BATCH_SIZES = (256, 1024)


def overrides(batch_size: int, train_size: int) -> list[str]:
    return [
        *QUIET,
        "task=parity",
        f"data.batch_size={batch_size}",
        f"data.train_size={train_size}",
        "trainer.max_epochs=1",
        "++trainer.limit_val_batches=0",
        "test=false",
        "trainer.num_sanity_val_steps=0",
        "callbacks.early_stopping=null",  # no validation here; checkpointing (last.ckpt) stays
        "callbacks.model_checkpoint.monitor=null",
    ]


def rnnlab_epoch(batch_size: int, train_size: int) -> float:
    """One epoch through rnnlab.train.train with its default callbacks and TensorBoard logger."""
    timer = EpochTimer()
    cfg = compose_config(*overrides(batch_size, train_size), output_dir=tempfile.mkdtemp())
    train_with_callbacks(cfg, timer)
    return timer.seconds[0]


def raw_epoch(batch_size: int, train_size: int) -> float:
    """The same data, model, optimiser and gradient clipping as a hand-written loop."""
    cfg = compose_config(*overrides(batch_size, train_size), output_dir=tempfile.mkdtemp())
    torch.manual_seed(cfg.seed)
    datamodule = instantiate(cfg.data)
    datamodule.setup()
    net = instantiate(cfg.model, **datamodule.model_kwargs())
    optimizer = instantiate(cfg.optimizer)(net.parameters())
    loader = datamodule.train_dataloader()
    loader.sampler.set_epoch(0)
    net.train()
    start = time.perf_counter()
    for batch in loader:
        loss = F.cross_entropy(net(batch["inputs"], batch["lengths"]), batch["targets"])
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), cfg.trainer.gradient_clip_val)
        optimizer.step()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--train-size", type=int, default=100_000, help="strings per epoch")
    parser.add_argument(
        "--worker", nargs=3, metavar=("KIND", "BATCH", "SIZE"), help=argparse.SUPPRESS
    )
    args = parser.parse_args()
    if args.worker:
        kind, batch_size, train_size = args.worker[0], int(args.worker[1]), int(args.worker[2])
        seconds = (rnnlab_epoch if kind == "rnnlab" else raw_epoch)(batch_size, train_size)
        print(json.dumps({"seconds": seconds}))
        return

    script = str(here() / "overhead.py")
    times = {(kind, b): [] for kind in ("raw", "rnnlab") for b in BATCH_SIZES}
    for repeat in range(args.repeats):
        for batch_size in BATCH_SIZES:
            for kind in ("raw", "rnnlab") if repeat % 2 == 0 else ("rnnlab", "raw"):
                seconds = in_fresh_process(script, kind, str(batch_size), str(args.train_size))[
                    "seconds"
                ]
                times[kind, batch_size].append(seconds)
                print(
                    f"  repeat {repeat + 1}: {kind:6s} batch {batch_size:4d}: {seconds:6.2f} s",
                    flush=True,
                )
    print(
        f"\nparity LSTM h64, {args.train_size} strings, one training epoch (median of fresh processes)"
    )
    print(f"{'batch':>6} {'raw s':>8} {'rnnlab s':>9} {'ratio':>6}")
    for batch_size in BATCH_SIZES:
        raw, ours = median(times["raw", batch_size]), median(times["rnnlab", batch_size])
        print(f"{batch_size:>6} {raw:8.2f} {ours:9.2f} {ours / raw:6.3f}")
    total_raw = sum(median(times["raw", b]) for b in BATCH_SIZES)
    total_ours = sum(median(times["rnnlab", b]) for b in BATCH_SIZES)
    print(
        f"overhead ratio (rnnlab / raw, summed medians): {total_ours / total_raw:.3f}  (goal <= 1.05)"
    )


if __name__ == "__main__":
    main()
