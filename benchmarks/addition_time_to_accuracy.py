"""Wall time and epochs until held-out 3-digit addition reaches >= 99% exact match.

Runs the default arithmetic config and, as the reference measured in the same run, the seed's
Keras model re-implemented in rnnlab (`experiment=keras_addition`: LSTM-128 -> RepeatVector ->
LSTM-128 -> Dense, batch 32, Adam 1e-3, 45k/5k questions). Each in its own fresh process. The
clock counts training and validation from the start of fit until the first validation epoch at
or above the threshold; the test split is then scored with that checkpoint.

    python benchmarks/addition_time_to_accuracy.py [--skip-reference] [--threshold 0.99]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time

import lightning.pytorch as pl
from _common import (
    QUIET,
    compose_config,
    here,
    in_fresh_process,
    train_with_callbacks,
)

KERAS_TENSORFLOW_SECONDS = 600  # measured on these 2 cores under load (shared/PLATFORM.md)


class TimeToThreshold(pl.Callback):
    """Stops training at the first validation epoch whose exact match reaches the threshold."""

    def __init__(self, threshold: float):
        self.threshold = threshold
        self.reached: tuple[int, float] | None = None

    def on_fit_start(self, trainer, module) -> None:
        self.start = time.perf_counter()

    def on_validation_epoch_end(self, trainer, module) -> None:
        if trainer.sanity_checking or self.reached is not None:
            return
        value = float(trainer.callback_metrics.get("val/exact_match", 0.0))
        if value >= self.threshold:
            self.reached = (trainer.current_epoch + 1, time.perf_counter() - self.start)
            trainer.should_stop = True


def run(preset: str, threshold: float, max_epochs: int) -> dict:
    extra = [] if preset == "default" else [f"experiment={preset}"]
    cfg = compose_config(
        *QUIET,
        *extra,
        f"trainer.max_epochs={max_epochs}",
        "logger=none",
        "callbacks.early_stopping=null",
        output_dir=tempfile.mkdtemp(),
    )
    clock = TimeToThreshold(threshold)
    start = time.perf_counter()
    metrics, objects = train_with_callbacks(cfg, clock)
    epochs, seconds = clock.reached or (objects["trainer"].current_epoch, float("nan"))
    return {
        "epochs": epochs,
        "seconds": seconds,
        "reached": clock.reached is not None,
        "test_exact_match": metrics.get("test/exact_match"),
        "total_seconds": time.perf_counter() - start,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--threshold", type=float, default=0.99)
    parser.add_argument("--skip-reference", action="store_true")
    parser.add_argument("--worker", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        preset, threshold, max_epochs = args.worker
        print(json.dumps(run(preset, float(threshold), int(max_epochs))))
        return

    script = str(here() / "addition_time_to_accuracy.py")
    results = {"default": in_fresh_process(script, "default", str(args.threshold), "30")}
    if not args.skip_reference:
        results["keras_addition"] = in_fresh_process(
            script, "keras_addition", str(args.threshold), "40"
        )
    print(f"\n3-digit addition, time to >= {args.threshold:.0%} held-out exact match (2 CPU cores)")
    for name, r in results.items():
        status = "" if r["reached"] else "  (threshold NOT reached)"
        print(
            f"  {name:15s} {r['seconds']:7.1f} s  {r['epochs']:3d} epochs  "
            f"test exact match {r['test_exact_match']:.4f}{status}"
        )
    ours = results["default"]["seconds"]
    if "keras_addition" in results:
        print(
            f"ratio default / keras_addition (same run): {ours / results['keras_addition']['seconds']:.3f}"
        )
    print(
        f"ratio default / Keras-TensorFlow reference ({KERAS_TENSORFLOW_SECONDS} s, PLATFORM.md): "
        f"{ours / KERAS_TENSORFLOW_SECONDS:.3f}  (goal: well under 0.25)"
    )


if __name__ == "__main__":
    main()
