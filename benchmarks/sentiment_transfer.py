"""Sentiment with language-model transfer (ULMFiT, #20) against the same model from scratch.

1. Pretrain `experiment=lm_for_transfer` on the shared tweets + books (word level, lowercase;
   `--lm-everyday`: and the English side of the shared Tatoeba pairs) for `--lm-minutes` of CPU
   time (or reuse `--lm-ckpt`).
2. Per seed, fine-tune that LM on the training sentences of the seed's sentiment split
   (`experiment=lm_on_sentiment`, ULMFiT's target-task LM fine-tuning; `--target-lm-epochs 0`
   skips it).
3. Per seed, fine-tune `experiment=sentiment_transfer` from the LM of step 2 (or 1) on the shared
   UCI sentences.
4. Per seed, train the same classifier from scratch with the same fine-tuning budget (same
   epochs, seeds, learning rate and `--set` overrides; no LM, so no freezing and one learning
   rate).

Prints the test accuracy of both per seed and the CPU time of each stage (the issue's parity of
effort: pretraining + target LM + classifier). Every stage runs in a fresh process with
`--threads` torch threads. The seed also draws the sentiment split (`data.seed=${seed}`), so the
seeds measure different splits as well as different initialisations.

    python benchmarks/sentiment_transfer.py --lm-minutes 20 --seeds 0 1 2
    python benchmarks/sentiment_transfer.py --lm-minutes 20 --lm-everyday --seeds 0 1 2
    python benchmarks/sentiment_transfer.py --lm-ckpt outputs/book/<run>/checkpoints/best.ckpt
    python benchmarks/sentiment_transfer.py --lm-ckpt <ckpt> --set model.pooling=concat
    python benchmarks/sentiment_transfer.py --lm-minutes 0.5 --lm-first-tokens 50000 --epochs 1
    python benchmarks/sentiment_transfer.py --backward --lm-ckpt <backward LM> --seeds 0 \
        --ensemble 5 --ensemble-with <the forward run's --out>   # ULMFiT's two directions

`--backward` runs every stage right to left (`data.backward=true`: ULMFiT's backward LM and
classifiers); `--ensemble-with` then averages each split's classifiers with the forward run's.
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
TATOEBA = SHARED / "translate" / "spa-eng" / "spa.txt"  # English<TAB>Spanish per line


def english_side(folder: Path) -> Path:
    """The English sentences of the shared Tatoeba pairs as a text file in `folder` (107k
    short everyday sentences: "I like this phone.", nearer to reviews than old novels)."""
    path = folder / "tatoeba_en.txt"
    if not path.is_file():
        folder.mkdir(parents=True, exist_ok=True)
        lines = TATOEBA.read_text(encoding="utf-8").splitlines()
        path.write_text("\n".join(line.split("\t")[0] for line in lines) + "\n", encoding="utf-8")
    return path


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


def pretrain(
    out: str, minutes: float, first_tokens: int | None, everyday: bool, extra: list
) -> dict:
    files = (
        LM_FILES[:2] + [english_side(Path(out) / "corpus")] + LM_FILES[2:] if everyday else LM_FILES
    )
    paths = ",".join(str(path) for path in files)
    cfg = compose_config(
        *QUIET,
        *RUN,
        "experiment=lm_for_transfer",
        f"data.path=[{paths}]",
        f"data.first_tokens={first_tokens if first_tokens else 'null'}",
        "trainer.max_epochs=-1",
        "trainer.min_epochs=0",  # else Lightning ignores should_stop until an epoch is done
        *extra,
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


def sentiment_stage(
    out: str, seed: int, epochs: int | None, overrides: list
) -> tuple[dict, dict, float]:
    """One run on the shared sentiment data: (metrics, built objects, CPU seconds)."""
    cfg = compose_config(
        *QUIET,
        *RUN,
        f"data.path={SENTIMENT}",
        f"seed={seed}",
        *([f"trainer.max_epochs={epochs}"] if epochs else []),
        *overrides,
        output_dir=out,
    )
    start = time.process_time()
    metrics, objects = train_with_callbacks(cfg)
    return metrics, objects, time.process_time() - start


def lm_fine_tune(out: str, lm_ckpt: str, seed: int, epochs: int | None, extra: list) -> dict:
    """ULMFiT's second stage: the LM on the seed's training sentences."""
    overrides = ["experiment=lm_on_sentiment", f"model.init_from={lm_ckpt}", *extra]
    metrics, objects, seconds = sentiment_stage(out, seed, epochs, overrides)
    return {
        "ckpt": str(Path(out) / "checkpoints" / "best.ckpt"),
        "cpu_seconds": seconds,
        "val_ppl": math.exp(metrics.get("val/loss_best", math.nan)),
        "epochs": objects["trainer"].current_epoch,
    }


def fine_tune(
    out: str, lm_ckpt: str | None, seed: int, epochs: int | None, extra: list, member: int = 0
) -> dict:
    """A classifier on split `seed`; ensemble member i > 0 initialises and shuffles with seed
    `seed + 1000 i` (member 0 is the single run)."""
    origin = (
        [f"model.init_from={lm_ckpt}"]
        if lm_ckpt
        else ["module.freeze_epochs=0", "module.layer_lr_decay=1.0"]
    )
    overrides = ["experiment=sentiment_transfer", *extra, *origin, f"data.seed={seed}"]
    metrics, _, seconds = sentiment_stage(out, seed + 1000 * member, epochs, overrides)
    return {
        "acc": metrics["test/acc"],
        "f1": metrics["test/f1"],
        "val_acc": metrics.get("val/acc_best", math.nan),
        "cpu_seconds": seconds,
        "ckpt": str(Path(out) / "checkpoints" / "best.ckpt"),
    }


@torch.inference_mode()
def ensemble_accuracy(ckpts: list[str]) -> float:
    """Test accuracy of the classifiers' averaged class probabilities (one split)."""
    from rnnlab.builder import build_datamodule
    from rnnlab.inference import load_checkpoint

    probs, targets = [], []
    for ckpt in ckpts:
        cfg, codec, module = load_checkpoint(ckpt)
        datamodule = build_datamodule(cfg, codec)
        datamodule.setup("test")
        batches = list(datamodule.test_dataloader())
        probs.append(torch.cat([module.predict_batch(batch)["probs"] for batch in batches]))
        targets.append(torch.cat([batch["targets"] for batch in batches]))
    if not all(torch.equal(targets[0], other) for other in targets):
        raise RuntimeError("the classifiers' test sentences differ: not one split")
    mean = torch.stack(probs).mean(0)
    return float((mean.argmax(-1) == targets[0]).float().mean())


def earlier_members(folders: list[str], name: str, seed: int) -> list[str]:
    """The `name` (transfer, scratch) classifiers of split `seed` in earlier --out folders,
    member 0 first."""
    run = f"{name}-{seed}"
    found = [
        path
        for folder in folders
        for path in Path(folder).glob(f"{run}*/checkpoints/best.ckpt")
        if path.parts[-3] == run or path.parts[-3].startswith(f"{run}-")
    ]
    return [str(path) for path in sorted(found, key=lambda path: (len(path.parts[-3]), path))]


def report_with_earlier(name: str, seed: int, members: list[str], folders: list[str]) -> None:
    """Print the test accuracy of this run's classifiers averaged with the earlier ones of the
    same kind and split: one of each (ULMFiT's forward + backward pair) and all of them."""
    earlier = earlier_members(folders, name, seed)
    if not earlier:
        raise SystemExit(f"--ensemble-with: no {name}-{seed}* classifiers in {folders}")
    pair = ensemble_accuracy([earlier[0], members[0]])
    every = ensemble_accuracy(earlier + members)
    print(
        f"seed {seed}: {name} with the earlier classifiers: one of each {pair:.3f}, "
        f"all {len(earlier) + len(members)} {every:.3f}",
        flush=True,
    )


def summary(runs: list[dict], key: str = "cpu_seconds") -> float:
    return statistics.fmean(run[key] for run in runs) if runs else 0.0


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--lm-minutes", type=float, default=20, help="CPU minutes of pretraining")
    parser.add_argument("--lm-first-tokens", type=int, help="pretrain on the first N tokens only")
    parser.add_argument("--lm-ckpt", help="skip pretraining: fine-tune from this LM checkpoint")
    parser.add_argument(
        "--lm-everyday",
        action="store_true",
        help="pretrain on the English side of the shared Tatoeba pairs too (after the tweets)",
    )
    parser.add_argument(
        "--target-lm-epochs",
        type=int,
        help="epochs of LM fine-tuning on the training sentences (default: the preset's; 0: skip)",
    )
    parser.add_argument(
        "--set",
        nargs="+",
        default=[],
        metavar="KEY=VALUE",
        help="overrides for both classifiers (transfer and scratch), e.g. model.pooling=concat",
    )
    parser.add_argument(
        "--set-lm", nargs="+", default=[], metavar="KEY=VALUE", help="overrides for stage 2"
    )
    parser.add_argument("--seeds", type=int, nargs="+", default=[0], help="fine-tuning seeds")
    parser.add_argument("--epochs", type=int, help="classifier epochs (default: the preset's)")
    parser.add_argument("--no-scratch", action="store_true", help="transfer only")
    parser.add_argument(
        "--ensemble", type=int, default=1, help="classifiers per split, probabilities averaged"
    )
    parser.add_argument(
        "--ensemble-with",
        nargs="+",
        default=[],
        metavar="DIR",
        help="also average each split's classifiers with those of these earlier --out folders "
        "(e.g. the forward runs, for a --backward one: ULMFiT's two directions)",
    )
    parser.add_argument(
        "--backward",
        action="store_true",
        help="every stage reads right to left (data.backward=true): ULMFiT's backward models",
    )
    parser.add_argument("--threads", type=int, default=1, help="torch threads per process")
    parser.add_argument("--out", help="where runs are written (default: a new temporary folder)")
    parser.add_argument("--worker", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.worker:
        kind, job = args.worker[0], json.loads(args.worker[1])
        stage = {"pretrain": pretrain, "target_lm": lm_fine_tune, "classifier": fine_tune}[kind]
        print(json.dumps(stage(**job)))
        return

    script = str(here() / "sentiment_transfer.py")
    out = Path(args.out or tempfile.mkdtemp(prefix="sentiment_transfer-"))

    def run(kind: str, **job) -> dict:
        return in_fresh_process(script, kind, json.dumps(job), "--threads", str(args.threads))

    direction = ["data.backward=true"] if args.backward else []
    lm_cpu = 0.0
    lm_ckpt = args.lm_ckpt
    if lm_ckpt is None:
        lm = run(
            "pretrain",
            out=str(out / "lm"),
            minutes=args.lm_minutes,
            first_tokens=args.lm_first_tokens,
            everyday=args.lm_everyday,
            extra=direction,
        )
        lm_ckpt, lm_cpu = lm["ckpt"], lm["cpu_seconds"]
        print(
            f"LM pretraining (experiment=lm_for_transfer, shared tweets "
            f"{'+ Tatoeba English ' if args.lm_everyday else ''}+ books): "
            f"{lm['epochs']} full epochs, best validation perplexity {lm['val_ppl']:.1f}, "
            f"test {lm['test_ppl']:.1f}, {lm_cpu:.0f} CPU s\n  {lm_ckpt}",
            flush=True,
        )
    results: dict[str, list[dict]] = {"target_lm": [], "transfer": [], "scratch": []}
    ensembles: dict[str, list[float]] = {"transfer": [], "scratch": []}
    for seed in args.seeds:
        classifier_lm = lm_ckpt
        if args.target_lm_epochs != 0:
            target = run(
                "target_lm",
                out=str(out / f"target_lm-{seed}"),
                lm_ckpt=lm_ckpt,
                seed=seed,
                epochs=args.target_lm_epochs,
                extra=[*direction, *args.set_lm],
            )
            results["target_lm"].append(target)
            classifier_lm = target["ckpt"]
            print(
                f"seed {seed}: LM on the training sentences (experiment=lm_on_sentiment): "
                f"validation perplexity {target['val_ppl']:.1f}, {target['cpu_seconds']:.0f} "
                "CPU s",
                flush=True,
            )
        for name, origin in (("transfer", classifier_lm), ("scratch", None)):
            if name == "scratch" and args.no_scratch:
                continue
            members = [
                run(
                    "classifier",
                    out=str(out / (f"{name}-{seed}" + (f"-{member}" if member else ""))),
                    lm_ckpt=origin,
                    seed=seed,
                    epochs=args.epochs,
                    extra=[*direction, *args.set],
                    member=member,
                )
                for member in range(args.ensemble)
            ]
            result = members[0]
            results[name].append(result)
            print(
                f"seed {seed}: {name} test accuracy {result['acc']:.3f} (validation "
                f"{result['val_acc']:.3f}), {result['cpu_seconds']:.0f} CPU s",
                flush=True,
            )
            if args.ensemble_with:
                report_with_earlier(
                    name, seed, [member["ckpt"] for member in members], args.ensemble_with
                )
            if args.ensemble > 1:
                accuracy = ensemble_accuracy([member["ckpt"] for member in members])
                ensembles[name].append(accuracy)
                singles = ", ".join(f"{member['acc']:.3f}" for member in members)
                print(
                    f"seed {seed}: {name} ensemble of {args.ensemble} test accuracy "
                    f"{accuracy:.3f} (members {singles}), "
                    f"{sum(member['cpu_seconds'] for member in members):.0f} CPU s",
                    flush=True,
                )
    print(
        f"\nsentiment test accuracy ({' '.join(['experiment=sentiment_transfer', *args.set])} on "
        f"{SENTIMENT}, seeds {args.seeds}, {args.threads} thread(s))"
    )
    for name in ("transfer", "scratch"):
        runs = results[name]
        if not runs:
            continue
        per_seed = ", ".join(f"{run['acc']:.3f}" for run in runs)
        print(
            f"  {name:8s} {summary(runs, 'acc'):.3f} (per seed {per_seed}), "
            f"F1 {summary(runs, 'f1'):.3f}, {summary(runs):.0f} CPU s per run"
        )
        if ensembles[name]:
            per_seed = ", ".join(f"{accuracy:.3f}" for accuracy in ensembles[name])
            print(
                f"  {name:8s} ensembles of {args.ensemble}: "
                f"{statistics.fmean(ensembles[name]):.3f} (per seed {per_seed})"
            )
    target_cpu, fine_cpu = summary(results["target_lm"]), summary(results["transfer"])
    total = lm_cpu + target_cpu + fine_cpu
    print(
        f"\nCPU time of one transfer run: pretraining {lm_cpu:.0f} s"
        + (" (not counted: --lm-ckpt)" if args.lm_ckpt else "")
        + f" + LM on the training sentences {target_cpu:.0f} s + classifier {fine_cpu:.0f} s "
        f"= {total:.0f} s ({total / 60:.1f} min)"
    )


if __name__ == "__main__":
    main()
