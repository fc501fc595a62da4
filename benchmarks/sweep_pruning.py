"""Pruning in a TPE sweep: trial-epochs used and best value, with and without a pruner.

A 16-trial TPE sweep of 3-digit addition (`task=arithmetic`, its search space with the learning
rate widened to 1e-5..1e-1 on a log scale, so bad settings exist: too small learns nothing in 8
epochs, too large diverges), once without a pruner and once with each pruner given, all with the
same sampler seed, each sweep in its own process. Prints, for each sweep, the epochs its trials
trained in total, how many trials were pruned, its best validation exact match and its wall
time; then each pruned sweep's epochs as a fraction of the unpruned sweep's and the difference
of the best values. Goal: <= 0.5 of the epochs, best value within 1% (relative).

About 30-40 minutes on 2 quiet cores with the defaults. `--smoke` checks the script in a minute
or two (4 trials of 2 epochs on 2,000 questions: its figures mean nothing).

    python benchmarks/sweep_pruning.py [--trials 16] [--epochs 8] [--pruners median hyperband]
        [--seed 0] [--smoke] [-- extra overrides for every sweep]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import QUIET
from omegaconf import OmegaConf

LEARNING_RATES = "optimizer.lr=tag(log, interval(1e-5, 1e-1))"
SMOKE = ["data.train_size=2000", "data.val_size=200", "data.test_size=200"]


def run_sweep(name: str, pruner: str, args: argparse.Namespace, root: Path) -> dict:
    """One sweep in a fresh process; its trial-epochs, pruned trials, best value, wall time."""
    sweep_dir = root / name
    command = [
        *(sys.executable, "-m", "rnnlab", "-m", "hparams_search=tpe", "task=arithmetic"),
        *QUIET,
        "logger=none",
        "callbacks.early_stopping=null",  # only the pruner stops a trial early
        f"trainer.max_epochs={args.epochs}",
        LEARNING_RATES,
        f"hydra.sweeper.n_trials={args.trials}",
        f"hydra.sweeper.sampler.seed={args.seed}",
        f"hydra.sweeper.pruner={pruner}",
        f"hydra.sweep.dir={sweep_dir}",
        *(SMOKE if args.smoke else []),
        *args.overrides,
    ]
    start = time.perf_counter()
    result = subprocess.run(command, cwd=root, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if result.returncode != 0:
        raise RuntimeError(result.stderr[-4000:])
    jobs = [json.loads(path.read_text()) for path in sweep_dir.glob("*/result.json")]
    study = OmegaConf.load(sweep_dir / "optimization_results.yaml")
    return {
        "epochs": sum(job.get("epochs") or 0 for job in jobs),
        "pruned": sum(job["status"] == "pruned" for job in jobs),
        "best": study.get("best_value"),
        "seconds": seconds,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--trials", type=int, default=16)
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--pruners", nargs="+", default=["median", "hyperband"])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--smoke", action="store_true", help="a tiny budget: checks the script")
    parser.add_argument("overrides", nargs="*", help="extra overrides for every sweep")
    args = parser.parse_args()
    if args.smoke:
        args.trials, args.epochs = 4, 2
    root = Path(tempfile.mkdtemp(prefix="sweep_pruning-"))
    measured = {}
    for pruner in ["none", *args.pruners]:
        measured[pruner] = run_sweep(pruner, pruner, args, root)
        figures = measured[pruner]
        best = "none finished" if figures["best"] is None else f"{figures['best']:.4f}"
        print(
            f"pruner={pruner}: {figures['epochs']} trial-epochs, {figures['pruned']} of "
            f"{args.trials} trials pruned, best val/exact_match {best}, "
            f"{figures['seconds']:.0f} s",
            flush=True,
        )
    baseline = measured["none"]
    for pruner in args.pruners:
        figures = measured[pruner]
        ratio = figures["epochs"] / max(baseline["epochs"], 1)
        line = f"pruner={pruner} / none: {ratio:.2f} of the trial-epochs (goal <= 0.5)"
        if figures["best"] is not None and baseline["best"]:
            gap = (baseline["best"] - figures["best"]) / baseline["best"]
            line += f", best value {100 * gap:+.2f}% below (goal <= 1%)"
        print(line)
    print(f"sweep dirs: {root}")


if __name__ == "__main__":
    main()
