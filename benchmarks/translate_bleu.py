"""Test BLEU of the default translate config after fixed CPU budgets on the shared spa.txt.

Trains `python -m rnnlab task=translate data.corpus=files data.path=<spa.txt>` for the largest
of `--minutes` (validation included, validating every half epoch), saving the weights as they
are when each budget runs out, then scores each of those checkpoints on the test split: greedy
and with beam search. `--clock wall` (default) counts wall time on a quiet machine;
`--clock process` counts this process's CPU time, so runs that share the cores (two layers side
by side with `--threads 1` each) still get equal budgets. Extra arguments are config overrides (e.g. `size=small`).
`--output-layer full sampled adaptive` does that once per vocabulary layer, each in a fresh
process, one after the other (adaptive, the default, without label smoothing, which it has not;
full and sampled with 0.1, as before adaptive became the default).

    python benchmarks/translate_bleu.py [key=value ...] --minutes 30 60 [--beam 5] [--data spa.txt]
        [--threads N] [--clock wall|process] [--output-layer full sampled adaptive]
    python benchmarks/translate_bleu.py --score <run>/checkpoints/at-30min.ckpt [--beam 5]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

import lightning.pytorch as pl
import torch
from _common import compose_config, here, output_layer_overrides, train_with_callbacks
from omegaconf import open_dict

SPA_TXT = here().parents[1] / "shared" / "data" / "translate" / "spa-eng" / "spa.txt"


CLOCKS = {"wall": time.perf_counter, "process": time.process_time}


class SaveAtMinutes(pl.Callback):
    """Save a checkpoint `at-<m>min.ckpt` the first batch after each budget of m minutes of
    `clock`; stop training after the last."""

    def __init__(self, minutes: list[float], directory: Path, clock: str = "wall") -> None:
        self.marks = sorted(minutes)
        self.directory = directory
        self.clock = CLOCKS[clock]
        self.saved: dict[float, Path] = {}

    def on_train_start(self, trainer, module) -> None:
        self.start = self.clock()

    def on_train_batch_end(self, trainer, module, *args) -> None:
        elapsed = (self.clock() - self.start) / 60
        for mark in self.marks:
            if mark not in self.saved and elapsed >= mark * 0.995:
                path = self.directory / f"at-{mark:g}min.ckpt"
                trainer.save_checkpoint(path)
                self.saved[mark] = path
                print(f"{elapsed:.1f} min, step {trainer.global_step}: saved {path}", flush=True)
        trainer.should_stop = len(self.saved) == len(self.marks)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--minutes", type=float, nargs="+")
    parser.add_argument("--score", nargs="+", help="score these checkpoints only (no training)")
    parser.add_argument("--data", default=str(SPA_TXT))
    parser.add_argument("--beam", type=int, default=5)
    parser.add_argument("--output", default=None, help="run dir (default outputs/benchmarks/...)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: its default)")
    parser.add_argument("--clock", choices=sorted(CLOCKS), default="wall")
    parser.add_argument(
        "--output-layer", nargs="+", default=["adaptive"], choices=("full", "sampled", "adaptive")
    )
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.score:
        score({path: Path(path) for path in args.score}, args.beam)
        return
    if not args.minutes:
        parser.error("give --minutes (train, then score) or --score <checkpoints>")
    if not Path(args.data).is_file():
        raise SystemExit(f"no corpus at {args.data}: pass --data <spa.txt>")
    output = args.output or str(
        here().parent
        / "outputs"
        / "benchmarks"
        / f"translate_bleu-{time.strftime('%Y%m%d-%H%M%S')}"
    )
    if len(args.output_layer) > 1:
        for layer in args.output_layer:
            print(f"--- model.output_layer={layer}", flush=True)
            subprocess.run(
                [
                    sys.executable, __file__, *args.overrides, "--minutes", *map(str, args.minutes),
                    "--data", args.data, "--beam", str(args.beam), "--threads", str(args.threads),
                    "--clock", args.clock,
                    "--output", f"{output}/{layer}", "--output-layer", layer,
                ],
                check=True,
            )  # fmt: skip
        return
    cfg = compose_config(
        "accelerator=cpu",
        "callbacks.progress_bar=null",
        "trainer.enable_progress_bar=false",
        "task=translate",
        "data.corpus=files",
        f"data.path={args.data}",
        "trainer.max_epochs=1000",
        "trainer.min_epochs=0",  # SaveAtMinutes stops after the last budget, even mid-epoch
        "+trainer.val_check_interval=0.5",
        *output_layer_overrides(args.output_layer[0]),
        *args.overrides,
        output_dir=output,
    )
    with open_dict(cfg):
        cfg.test = False

    saver = SaveAtMinutes(args.minutes, Path(output) / "checkpoints", args.clock)
    _, objects = train_with_callbacks(cfg, saver)
    trainer = objects["trainer"]
    epochs = trainer.global_step / max(1, trainer.num_training_batches)
    print(f"trained {trainer.global_step} batches ({epochs:.2f} epochs); output in {output}")
    score({f"after {mark:g} min": path for mark, path in sorted(saver.saved.items())}, args.beam)


def score(checkpoints: dict[str, Path], beam_size: int) -> None:
    """Test BLEU/chrF of each checkpoint, greedy and with beam search: one line each."""
    from rnnlab.builder import build_datamodule, build_evaluation_trainer
    from rnnlab.inference import load_checkpoint
    from rnnlab.metrics import BLEU

    tester = build_evaluation_trainer("cpu")
    for label, path in checkpoints.items():
        cfg, codec, module = load_checkpoint(path)
        datamodule = build_datamodule(cfg, codec)
        if "bleu_lc" not in module.metrics["test"]:  # a checkpoint from before bleu_lc
            module.metrics["test"]["bleu_lc"] = BLEU(lowercase=True)
        line = f"{label} (step {torch.load(path, weights_only=True)['global_step']}):"
        for beam in sorted({1, beam_size}):
            module.configure_decoding(beam_size=beam)
            scores = tester.test(module, datamodule=datamodule, verbose=False)[0]
            line += (
                f"  beam {beam}: test BLEU {scores['test/bleu']:.2f} chrF {scores['test/chrf']:.2f}"
            )
            if "test/bleu_lc" in scores:
                line += f" (lowercased BLEU {scores['test/bleu_lc']:.2f})"
        print(line, flush=True)
    print(f"sacreBLEU signature: {module.metrics['test']['bleu'].metric.get_signature()}")


if __name__ == "__main__":
    main()
