"""rnnlab's training entry vs a plain PyTorch loop: one epoch, same model, same batches.

Parity LSTM (the default parity config: lengths 1..50, hidden 64) at batch 256 and 1024. Whole
processes here run up to +-15% faster or slower than each other and drift within a process, so
each fresh process (one per repeat and batch size) runs mirrored rounds (raw, rnnlab, rnnlab, raw;
reversed in the next repeat: each side runs once right after the other), `--rounds` times. The
figure is the ratio within each round, then the median [quartiles] over all rounds, per batch size
and over both (goal <= 1.05).

    python benchmarks/overhead.py [--repeats 3] [--rounds 3] [--train-size 25000]
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
    mirrored_order,
    mirrored_rounds,
    spread,
    train_with_callbacks,
)
from hydra.utils import instantiate

from rnnlab.builder import build

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
    datamodule, module = build(cfg)
    net = module.net
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


def rounds_in_one_process(
    order: list[str], rounds: int, batch_size: int, train_size: int
) -> list[dict[str, dict[str, float]]]:
    """After a warm-up epoch, `rounds` times the epochs of `order`."""
    epoch = {"raw": raw_epoch, "rnnlab": rnnlab_epoch}
    raw_epoch(batch_size, max(train_size // 20, 1024))  # warm-up: the first epoch is slower
    return mirrored_rounds(
        order, rounds, lambda kind: {"seconds": epoch[kind](batch_size, train_size)}
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeats", type=int, default=3, help="fresh processes per batch size")
    parser.add_argument("--rounds", type=int, default=3, help="mirrored rounds per process")
    parser.add_argument("--train-size", type=int, default=25_000, help="strings per epoch")
    parser.add_argument("--worker", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        order, rounds, batch_size, train_size = args.worker
        results = rounds_in_one_process(
            order.split(","), int(rounds), int(batch_size), int(train_size)
        )
        print(json.dumps(results))
        return

    script = str(here() / "overhead.py")
    ratios: dict[int, list[float]] = {b: [] for b in BATCH_SIZES}
    seconds: dict[tuple[str, int], list[float]] = {
        (kind, b): [] for kind in ("raw", "rnnlab") for b in BATCH_SIZES
    }
    for repeat in range(args.repeats):
        for batch_size in BATCH_SIZES:
            order = mirrored_order(("raw", "rnnlab"), repeat)
            results = in_fresh_process(
                script, ",".join(order), str(args.rounds), str(batch_size), str(args.train_size)
            )
            for result in results:
                ratios[batch_size].append(result["rnnlab"]["seconds"] / result["raw"]["seconds"])
                for kind in ("raw", "rnnlab"):
                    seconds[kind, batch_size].append(result[kind]["seconds"])
            print(
                f"  repeat {repeat + 1}, batch {batch_size} ({','.join(order)} x{args.rounds}), "
                "rnnlab / raw per round: "
                + " ".join(f"{ratio:.3f}" for ratio in ratios[batch_size][-len(results) :]),
                flush=True,
            )
    print(
        f"\nparity LSTM h64, {args.train_size} strings, one training epoch, "
        f"{torch.get_num_threads()} thread(s); ratio within each mirrored round, "
        "median [quartiles] over the rounds"
    )
    print(f"{'batch':>6} {'raw s':>8} {'rnnlab s':>9} {'rnnlab / raw':>26}")
    for batch_size in BATCH_SIZES:
        raw, ours = median(seconds["raw", batch_size]), median(seconds["rnnlab", batch_size])
        print(f"{batch_size:>6} {raw:8.2f} {ours:9.2f} {spread(ratios[batch_size]):>26}")
    all_rounds = [ratio for b in BATCH_SIZES for ratio in ratios[b]]
    print(f"overhead ratio (rnnlab / raw, all rounds): {spread(all_rounds)}  (goal <= 1.05)")


if __name__ == "__main__":
    main()
