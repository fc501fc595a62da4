"""Parallel trials on one machine: 4 parity trials with `hydra.sweeper.n_jobs=1` (one trial at a
time, all cores) against `n_jobs=2` (two at once, cores // 2 threads each).

Each sweep runs in its own fresh process; the clock starts after the imports, around the sweep
itself (trials, tests and summaries, no interpreter start). The four trials differ only in the
learning rate (same seed for both sweeps), so each costs about the same. Sweeps run in mirrored
order (1, 2, 2, 1 per round) and the ratio parallel / sequential is taken within each round.
Goal: <= 0.7 on 2 cores. A cell gains more or less from a second thread (PLATFORM.md: LSTM
1.45-1.7x, GRU 1.15x, RNN 1.08x), so the ratio is printed per cell.

About 10 minutes per cell and round on 2 quiet cores. `--smoke` checks the script quickly (tiny
data: its figures mean nothing).

    python benchmarks/sweep_parallel.py [--cells gru lstm] [--rounds 1] [--smoke]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

from _common import QUIET, median, mirrored_order, mirrored_rounds, spread

SMOKE = ["data.length=10", "data.train_size=2000", "data.val_size=200", "data.test_size=200"]


def worker(n_jobs: str, cell: str, smoke: str, sweep_dir: str) -> None:
    """In the fresh process: the sweep, timed, as JSON on the last line."""
    from rnnlab.train import main as rnnlab_main

    sys.argv = [
        "rnnlab",
        "-m",
        "hparams_search=random",
        "task=parity",
        *QUIET,
        "logger=none",
        f"cell={cell}",
        "model.hidden_size=64",
        "model.num_layers=1",
        "data.batch_size=256",
        "trainer.max_epochs=1",
        "optimizer.lr=tag(log, interval(1e-3, 1e-2))",
        "hydra.sweeper.n_trials=4",
        "hydra.sweeper.sampler.seed=0",
        f"hydra.sweeper.n_jobs={n_jobs}",
        f"hydra.sweep.dir={sweep_dir}",
        *(SMOKE if smoke == "smoke" else []),
    ]
    start = time.perf_counter()
    rnnlab_main()
    print(json.dumps({"seconds": time.perf_counter() - start}))


def run(n_jobs: str, cell: str, smoke: bool, cores: int) -> dict:
    """A sweep in a fresh process whose thread cap is all the cores (the sweeper then gives
    each of n_jobs trials cores // n_jobs)."""
    env = {**os.environ, "OMP_NUM_THREADS": str(cores), "MKL_NUM_THREADS": str(cores)}
    sweep_dir = tempfile.mkdtemp(prefix=f"sweep_parallel-{cell}-{n_jobs}-")
    mode = "smoke" if smoke else "full"
    result = subprocess.run(
        [sys.executable, __file__, "--worker", n_jobs, cell, mode, sweep_dir],
        capture_output=True,
        text=True,
        env=env,
    )
    if result.returncode != 0:
        raise RuntimeError(result.stderr[-4000:])
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--cells", nargs="+", default=["gru", "lstm"])
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--cores", type=int, default=len(os.sched_getaffinity(0)))
    parser.add_argument("--smoke", action="store_true", help="tiny data: checks the script")
    parser.add_argument("--worker", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(*args.worker)
        return
    for cell in args.cells:
        rounds = mirrored_rounds(
            mirrored_order(["1", "2"], 0),
            args.rounds,
            lambda n_jobs, cell=cell: run(n_jobs, cell, args.smoke, args.cores),
        )
        ratios = [r["2"]["seconds"] / r["1"]["seconds"] for r in rounds]
        sequential = median([r["1"]["seconds"] for r in rounds])
        parallel = median([r["2"]["seconds"] for r in rounds])
        shown = spread(ratios) if len(ratios) > 1 else f"{ratios[0]:.3f}"
        print(
            f"cell={cell}: n_jobs=1 {sequential:.1f} s, n_jobs=2 {parallel:.1f} s; "
            f"parallel / sequential {shown} (goal <= 0.7)",
            flush=True,
        )


if __name__ == "__main__":
    main()
