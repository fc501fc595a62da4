"""Sentiment with language-model transfer (ULMFiT, #20) against the same model from scratch.

1. Pretrain `experiment=lm_for_transfer` on the shared tweets + books (word level, lowercase) for
   `--lm-minutes` of CPU time (or reuse `--lm-ckpt`).
2. Fine-tune `experiment=sentiment_transfer` from it on the shared UCI sentences, once per seed.
3. Train the same model from scratch with the same fine-tuning budget (same epochs, seeds and
   learning rate; no LM, so no freezing and one learning rate).

Prints the test accuracy of both and the CPU time of pretraining + fine-tuning (the issue's
parity of effort). Every stage runs in a fresh process with `--threads` torch threads.

    python benchmarks/sentiment_transfer.py --lm-minutes 60 --seeds 0 1 2
    python benchmarks/sentiment_transfer.py --lm-ckpt outputs/book/<run>/checkpoints/best.ckpt
    python benchmarks/sentiment_transfer.py --lm-minutes 0.5 --lm-max-tokens 50000 --epochs 1
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import tempfile
import time
from pathlib import Path

import lightning.pytorch as pl
import torch
from _common import QUIET, compose_config, here, in_fresh_process, train_with_callbacks

SHARED = here().parent.parent / "shared" / "data"
# Tweets first: the stream is split contiguously, so validation and test come from the end of
# the last book and every tweet (the text nearest to reviews) is in training.
LM_FILES = [
    SHARED / "chat" / "twitter_en_head.txt",
    SHARED / "chat" / "TwitterConvCorpus.txt",
    SHARED / "books",
]
SENTIMENT = SHARED / "sentiment"
RUN = ["logger=none", "callbacks.samples=null", "diagnosis.enabled=false"]


class CpuBudget(pl.Callback):
    """Stops training once the process has used `seconds` of CPU time (Lightning then runs a
    last validation, so the best checkpoint covers the whole budget)."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds

    def on_train_start(self, trainer, module) -> None:
        self.start = time.process_time()

    def on_train_batch_end(self, trainer, module, *args) -> None:
        if time.process_time() - self.start >= self.seconds:
            trainer.should_stop = True


def pretrain(out: str, minutes: float, max_tokens: int | None) -> dict:
    paths = ",".join(str(path) for path in LM_FILES)
    cfg = compose_config(
        *QUIET,
        *RUN,
        "experiment=lm_for_transfer",
        f"data.path=[{paths}]",
        f"data.max_tokens={max_tokens if max_tokens else 'null'}",
        "trainer.max_epochs=-1",
        "trainer.min_epochs=0",  # else Lightning ignores should_stop until an epoch is done
        output_dir=out,
    )
    start = time.process_time()
    metrics, objects = train_with_callbacks(cfg, CpuBudget(minutes * 60))
    return {
        "ckpt": str(Path(out) / "checkpoints" / "best.ckpt"),
        "cpu_seconds": time.process_time() - start,
        "epochs": objects["trainer"].current_epoch,
        "val_ppl": math.exp(metrics.get("val/loss_best", math.nan)),
        "test_ppl": math.exp(metrics.get("test/loss", math.nan)),
    }


def fine_tune(out: str, lm_ckpt: str | None, seed: int, epochs: int | None) -> dict:
    origin = (
        [f"model.init_from={lm_ckpt}"]
        if lm_ckpt
        else ["module.freeze_epochs=0", "module.layer_lr_decay=1.0"]
    )
    cfg = compose_config(
        *QUIET,
        *RUN,
        "experiment=sentiment_transfer",
        f"data.path={SENTIMENT}",
        *origin,
        f"seed={seed}",
        *([f"trainer.max_epochs={epochs}"] if epochs else []),
        output_dir=out,
    )
    start = time.process_time()
    metrics, _ = train_with_callbacks(cfg)
    return {
        "acc": metrics["test/acc"],
        "f1": metrics["test/f1"],
        "cpu_seconds": time.process_time() - start,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--lm-minutes", type=float, default=60, help="CPU minutes of pretraining")
    parser.add_argument("--lm-max-tokens", type=int, help="pretrain on the first N tokens only")
    parser.add_argument("--lm-ckpt", help="skip pretraining: fine-tune from this LM checkpoint")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0], help="fine-tuning seeds")
    parser.add_argument("--epochs", type=int, help="fine-tuning epochs (default: the preset's)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per process")
    parser.add_argument("--out", help="where runs are written (default: a new temporary folder)")
    parser.add_argument("--worker", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.worker:
        kind, out, *rest = args.worker
        if kind == "pretrain":
            max_tokens = int(rest[1]) if rest[1] != "none" else None
            print(json.dumps(pretrain(out, float(rest[0]), max_tokens)))
        else:
            lm_ckpt = None if rest[0] == "none" else rest[0]
            epochs = int(rest[2]) if rest[2] != "none" else None
            print(json.dumps(fine_tune(out, lm_ckpt, int(rest[1]), epochs)))
        return

    script = str(here() / "sentiment_transfer.py")
    out = Path(args.out or tempfile.mkdtemp(prefix="sentiment_transfer-"))
    common = ["--threads", str(args.threads)]
    lm_cpu = 0.0
    lm_ckpt = args.lm_ckpt
    if lm_ckpt is None:
        lm = in_fresh_process(
            script,
            "pretrain",
            str(out / "lm"),
            str(args.lm_minutes),
            str(args.lm_max_tokens or "none"),
            *common,
        )
        lm_ckpt, lm_cpu = lm["ckpt"], lm["cpu_seconds"]
        print(
            f"LM pretraining (experiment=lm_for_transfer, shared tweets + books): "
            f"{lm['epochs']} full epochs, best validation perplexity {lm['val_ppl']:.1f}, "
            f"test {lm['test_ppl']:.1f}, {lm_cpu:.0f} CPU s\n  {lm_ckpt}"
        )
    epochs = str(args.epochs or "none")
    results: dict[str, list[dict]] = {"transfer": [], "scratch": []}
    for seed in args.seeds:
        for name, origin in (("transfer", lm_ckpt), ("scratch", "none")):
            run_dir = str(out / f"{name}-{seed}")
            results[name].append(
                in_fresh_process(script, "finetune", run_dir, origin, str(seed), epochs, *common)
            )
    print(
        f"\nsentiment test accuracy (experiment=sentiment_transfer on {SENTIMENT}, "
        f"seeds {args.seeds}, {args.threads} thread(s))"
    )
    for name, runs in results.items():
        accs = [run["acc"] for run in runs]
        cpu = statistics.fmean(run["cpu_seconds"] for run in runs)
        per_seed = ", ".join(f"{acc:.3f}" for acc in accs)
        print(
            f"  {name:8s} {statistics.fmean(accs):.3f} (per seed {per_seed}), "
            f"F1 {statistics.fmean(run['f1'] for run in runs):.3f}, {cpu:.0f} CPU s per run"
        )
    fine_cpu = statistics.fmean(run["cpu_seconds"] for run in results["transfer"])
    print(
        f"\ntotal CPU time, pretraining + one fine-tuning: {lm_cpu + fine_cpu:.0f} s "
        f"({(lm_cpu + fine_cpu) / 60:.1f} min)"
        + ("" if args.lm_ckpt is None else " (pretraining not counted: --lm-ckpt)")
    )


if __name__ == "__main__":
    main()
