"""Book language model: dataset memory, training tokens/s, and a timed learning curve.

Default mode, on War and Peace (../shared/data/books/pg2600_war_and_peace.txt or --path):
- dataset memory at char and word level: the bytes of the one int32 token stream rnnlab holds,
  the peak RSS growth while reading and encoding it, and what a one-hot float32 copy would take;
- training throughput (tokens/s, fwd + bwd + Adam through Lightning) of the default char config
  (`task=book`, LSTM and GRU) and of `experiment=book_chapter` (word level, GRU-1024).
Every measurement runs in its own fresh process.

`--minutes N` trains the default char config on tiny-shakespeare for N minutes and prints the
validation loss curve (nats per char, and bits per char).

    python benchmarks/book_lm.py [--path FILE] [--steps 20] [--word-steps 5]
    python benchmarks/book_lm.py --minutes 10 [--path tinyshakespeare/input.txt]
"""

from __future__ import annotations

import argparse
import json
import resource
import tempfile
import time
from pathlib import Path

import lightning.pytorch as pl
from _common import NO_CHECKPOINTS, QUIET, compose_config, here, in_fresh_process

SHARED_BOOKS = here().parent.parent / "shared" / "data" / "books"
WAR_AND_PEACE = SHARED_BOOKS / "pg2600_war_and_peace.txt"
TINY_SHAKESPEARE = SHARED_BOOKS / "tinyshakespeare" / "input.txt"
SPEED_SETTINGS = {
    "char-lstm": ["task=book", "cell=lstm"],
    "char-gru": ["task=book", "cell=gru"],
    "word-book_chapter": ["experiment=book_chapter"],
}


def _max_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KB on Linux


def measure_memory(path: str, level: str) -> dict:
    from rnnlab.data.book import BookData

    before = _max_rss_mb()
    start = time.perf_counter()
    data = BookData(path=path, level=level, lowercase=level == "word")
    data.setup()
    seconds = time.perf_counter() - start
    tokens = sum(len(stream) for stream in data.streams.values())
    return {
        "tokens": tokens,
        "vocab": len(data.vocab),
        "stream_mb": data.memory_bytes() / 1e6,
        "dtype": str(data.streams["train"].dtype),
        "peak_rss_growth_mb": _max_rss_mb() - before,
        "one_hot_float32_gb": tokens * len(data.vocab) * 4 / 1e9,
        "seconds": seconds,
    }


class StepClock(pl.Callback):
    """Wall time from the end of the first training batch (warm-up) to the end of the last."""

    def __init__(self) -> None:
        self.ends: list[float] = []
        self.tokens: list[int] = []

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
        self.ends.append(time.perf_counter())
        self.tokens.append(batch["targets"].numel())


def measure_speed(path: str, setting: str, steps: int) -> dict:
    from rnnlab.builder import build, build_trainer

    cfg = compose_config(
        *QUIET,
        *SPEED_SETTINGS[setting],
        f"data.path={path}",
        *NO_CHECKPOINTS,
        "trainer.max_epochs=1",
        f"+trainer.limit_train_batches={steps}",
        "+trainer.limit_val_batches=0",
        "trainer.num_sanity_val_steps=0",
        output_dir=tempfile.mkdtemp(),
    )
    pl.seed_everything(cfg.seed, verbose=False)
    datamodule, module = build(cfg)
    clock = StepClock()
    trainer = build_trainer(cfg, [clock])
    trainer.fit(module, datamodule=datamodule)
    seconds = clock.ends[-1] - clock.ends[0]
    tokens = sum(clock.tokens[1:])
    return {
        "tokens_per_s": tokens / seconds,
        "steps": len(clock.ends),
        "tokens_per_batch": clock.tokens[0],
        "seconds_per_step": seconds / (len(clock.ends) - 1),
        "parameters": sum(p.numel() for p in module.parameters()),
    }


class ValidationCurve(pl.Callback):
    def __init__(self) -> None:
        self.points: list[tuple[float, int, float]] = []
        self.tokens = 0

    def on_fit_start(self, trainer, module) -> None:
        self.start = time.perf_counter()

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
        self.tokens += batch["targets"].numel()

    def on_validation_epoch_end(self, trainer, module) -> None:
        if trainer.sanity_checking:
            return
        loss = float(trainer.callback_metrics["val/loss"])
        self.points.append((time.perf_counter() - self.start, self.tokens, loss))


def learning_curve(path: str, minutes: float, val_every: int) -> dict:
    from rnnlab.builder import build, build_trainer

    clock = round(minutes * 60)
    cfg = compose_config(
        *QUIET,
        "task=book",
        f"data.path={path}",
        *NO_CHECKPOINTS,
        "trainer.max_epochs=1000",
        "trainer.min_epochs=0",  # else Lightning ignores max_time until an epoch is done
        f"+trainer.max_time=00:{clock // 3600:02d}:{clock // 60 % 60:02d}:{clock % 60:02d}",
        f"+trainer.val_check_interval={val_every}",
        "trainer.num_sanity_val_steps=0",
        output_dir=tempfile.mkdtemp(),
    )
    pl.seed_everything(cfg.seed, verbose=False)
    datamodule, module = build(cfg)
    curve = ValidationCurve()
    trainer = build_trainer(cfg, [curve])
    trainer.fit(module, datamodule=datamodule)
    return {"points": curve.points, "batches_per_epoch": len(datamodule.train_dataloader())}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--path", help="book file (default: War and Peace / tiny-shakespeare)")
    parser.add_argument("--steps", type=int, default=20, help="training steps, char settings")
    parser.add_argument("--word-steps", type=int, default=5, help="training steps, book_chapter")
    parser.add_argument("--minutes", type=float, help="train N minutes, print the val curve")
    parser.add_argument("--val-every", type=int, default=50, help="batches between validations")
    parser.add_argument("--worker", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        kind, *rest = args.worker
        if kind == "memory":
            print(json.dumps(measure_memory(*rest)))
        elif kind == "speed":
            print(json.dumps(measure_speed(rest[0], rest[1], int(rest[2]))))
        else:
            print(json.dumps(learning_curve(rest[0], float(rest[1]), int(rest[2]))))
        return

    script = str(here() / "book_lm.py")
    if args.minutes:
        path = str(Path(args.path or TINY_SHAKESPEARE).resolve())
        result = in_fresh_process(script, "curve", path, str(args.minutes), str(args.val_every))
        print(f"\ntask=book defaults (char, LSTM 2x256, seq 100, batch 64) on {path}")
        print(f"{args.minutes} min, validation every {args.val_every} batches")
        print(f"({result['batches_per_epoch']} batches per epoch)")
        print(f"  {'seconds':>8} {'tokens':>10} {'val loss (nats)':>16} {'bits/char':>10}")
        for seconds, tokens, loss in result["points"]:
            print(f"  {seconds:8.0f} {tokens:10d} {loss:16.4f} {loss / 0.693147:10.4f}")
        return

    path = str(Path(args.path or WAR_AND_PEACE).resolve())
    print(f"dataset memory, {path}")
    for level in ("char", "word"):
        r = in_fresh_process(script, "memory", path, level)
        print(
            f"  {level:4s}: {r['tokens']:9,d} tokens, vocabulary {r['vocab']:6,d}, "
            f"stream {r['stream_mb']:6.1f} MB ({r['dtype']}), peak RSS growth while building "
            f"{r['peak_rss_growth_mb']:6.1f} MB, built in {r['seconds']:.1f} s "
            f"(one-hot float32 would be {r['one_hot_float32_gb']:,.1f} GB)"
        )
    print("\ntraining throughput (the first step is excluded as warm-up), 2 CPU cores")
    for setting in SPEED_SETTINGS:
        steps = args.word_steps if setting.startswith("word") else args.steps
        r = in_fresh_process(script, "speed", path, setting, str(steps))
        print(
            f"  {setting:18s} {r['tokens_per_s']:9,.0f} tokens/s  "
            f"({r['steps']} steps, {r['seconds_per_step']:.3f} s/step of "
            f"{r['tokens_per_batch']} tokens, "
            f"{r['parameters']:,d} parameters)"
        )


if __name__ == "__main__":
    main()
