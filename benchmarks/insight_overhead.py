"""What the insight callbacks cost: parity training epochs with them absent, off, and on.

- plain: the config without the insight callback nodes at all (`~callbacks.gradient_flow` ...);
- off:   the default config (the nodes are there with `enabled: false`; goal: ratio <= 1.02);
- on:    gradient flow every 100 steps + train/grad_norm every step, gate views on the
         validation epoch, embeddings at the end of fit (all defaults, switched on).

One epoch of the default parity config (LSTM h64, batch 256) with its validation. Whole
processes here run up to +-15% faster or slower than each other, more than the callbacks cost,
and within one process they drift by as much over a minute. So `off` and `on` are each compared
with `plain` in fresh processes of their own (an epoch right after an `on` epoch pays for what
`on` left behind, e.g. the event writer's flushing), in mirrored rounds (plain, off, off, plain;
reversed in the next repeat), `--rounds` times over. Each figure is a ratio within one round
(about 20 s, so a linear drift cancels), then the median over all rounds, which a burst of noise
in a few rounds does not move; the quartiles show the noise. The time spent inside the
callbacks' hooks is also added up directly, and the script checks that `off` builds the very
same callback list as `plain`.

    python benchmarks/insight_overhead.py [--repeats 3] [--rounds 4] [--train-size 25000]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time

import torch
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

from rnnlab.callbacks.embeddings import EmbeddingProjector
from rnnlab.callbacks.gates import GateActivations
from rnnlab.callbacks.gradient_flow import GradientFlow

INSIGHT = ("gradient_flow", "gates", "embeddings")
VARIANTS = {
    "plain": [f"~callbacks.{key}" for key in INSIGHT],
    "off": [],
    "on": [f"callbacks.{key}.enabled=true" for key in INSIGHT],
}
HOOKS = {
    GradientFlow: ("on_before_optimizer_step", "on_train_batch_end"),
    GateActivations: ("on_validation_batch_end",),
    EmbeddingProjector: ("on_fit_end",),
}


class StepTimer(EpochTimer):
    """The epoch's wall time, each training step's (batch start to batch end) and the names of
    the trainer's callbacks."""

    def __init__(self) -> None:
        super().__init__()
        self.steps: list[float] = []
        self.callbacks: list[str] = []

    def on_fit_start(self, trainer, module) -> None:
        self.callbacks = sorted(type(callback).__name__ for callback in trainer.callbacks)

    def on_train_batch_start(self, trainer, module, batch, batch_idx) -> None:
        self._step = time.perf_counter()

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
        self.steps.append(time.perf_counter() - self._step)


def time_hooks() -> dict[str, float]:
    """Wrap the insight callbacks' hooks (once per process) to add up the time spent inside."""
    spent = {"seconds": 0.0}

    def timed(original):
        def wrapper(*args, **kwargs):
            start = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                spent["seconds"] += time.perf_counter() - start

        return wrapper

    for cls, names in HOOKS.items():
        for name in names:
            setattr(cls, name, timed(getattr(cls, name)))
    return spent


def run_epoch(
    variant: str, train_size: int, spent: dict[str, float], callbacks: dict[str, list[str]]
) -> dict[str, float]:
    """One epoch (validation included) through rnnlab.train: its seconds, the median step and
    the seconds inside the insight callbacks (end of fit included); the trainer's callback names
    go to `callbacks[variant]`."""
    spent["seconds"] = 0.0
    timer = StepTimer()
    cfg = compose_config(
        *QUIET,
        "task=parity",
        f"data.train_size={train_size}",
        "trainer.max_epochs=1",
        "trainer.num_sanity_val_steps=0",
        "test=false",
        "diagnosis.enabled=false",
        *VARIANTS[variant],
        output_dir=tempfile.mkdtemp(),
    )
    train_with_callbacks(cfg, timer)
    callbacks[variant] = timer.callbacks
    return {
        "epoch": timer.seconds[0],
        "step": median(timer.steps),
        "steps": len(timer.steps),
        "insight": spent["seconds"],
    }


def in_one_process(
    order: list[str], rounds: int, train_size: int
) -> list[dict[str, dict[str, float]]]:
    """After a short warm-up epoch, `rounds` times every variant of the mirrored `order`."""
    spent, callbacks = time_hooks(), {}
    run_epoch("plain", max(train_size // 20, 1024), spent, callbacks)  # warm-up: slower
    results = mirrored_rounds(
        order, rounds, lambda variant: run_epoch(variant, train_size, spent, callbacks)
    )
    if "off" in callbacks and callbacks["off"] != callbacks["plain"]:
        raise SystemExit(f"off builds other callbacks than plain: {callbacks}")
    return results


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeats", type=int, default=3, help="fresh processes")
    parser.add_argument("--rounds", type=int, default=4, help="mirrored rounds per process")
    parser.add_argument("--train-size", type=int, default=25_000, help="strings per epoch")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--worker", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        order, rounds, train_size, threads = args.worker
        torch.set_num_threads(int(threads))
        print(json.dumps(in_one_process(order.split(","), int(rounds), int(train_size))))
        return

    script = str(here() / "insight_overhead.py")
    ratios = {variant: {"epoch": [], "step": []} for variant in ("off", "on")}
    spent, plain_epochs, steps = [], [], 0
    for repeat in range(args.repeats):
        for variant in ("off", "on"):
            order = mirrored_order(("plain", variant), repeat)
            results = in_fresh_process(
                script, ",".join(order), str(args.rounds), str(args.train_size), str(args.threads)
            )
            for result in results:
                plain = result["plain"]
                for key in ("epoch", "step"):
                    ratios[variant][key].append(result[variant][key] / plain[key])
                if variant == "on":
                    spent.append(result["on"]["insight"])
                plain_epochs.append(plain["epoch"])
                steps = int(plain["steps"])
            print(
                f"  repeat {repeat + 1}, {variant} vs plain ({','.join(order)} x{args.rounds}), "
                "per round: "
                + " ".join(f"{r[variant]['epoch'] / r['plain']['epoch']:.3f}" for r in results),
                flush=True,
            )
    print(
        f"\nparity LSTM h64, {args.train_size} strings ({steps} steps) + validation, one epoch, "
        f"{args.threads} thread(s); ratios to plain within each mirrored round, "
        f"{args.repeats * args.rounds} rounds per variant: median [quartiles]"
    )
    print(f"{'variant':>8} {'epoch ratio':>26} {'median-step ratio':>26}")
    for variant, ratio in ratios.items():
        print(f"{variant:>8} {spread(ratio['epoch']):>26} {spread(ratio['step']):>26}")
    print("goal: off / plain <= 1.02 (off and plain build the same callbacks: any gap is noise)")
    print(
        f"time inside the insight callbacks when on: {median(spent):.2f} s per epoch = "
        f"{median(spent) / median(plain_epochs):.1%} of a plain epoch"
    )


if __name__ == "__main__":
    main()
