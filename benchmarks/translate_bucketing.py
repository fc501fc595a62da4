"""Training throughput of task=translate: length-bucketed, trimmed, packed batches vs naive ones.

Both settings train the default translate model (size=medium) on the shared spa.txt with the
same optimiser and batch size, for the same number of batches, each in a fresh process
(alternating, `--repeats` times):
- bucketed: the datamodule's loader (length buckets of 50 batches, each batch trimmed to its
  longest sentence, the encoder packs the padded batch);
- naive: uniformly shuffled batches padded to the longest sentence of the corpus, the encoder
  run over the padding too (every source length set to the padded width: no packing).
The figure is target tokens (real ones, <eos> included, no padding) per second; goal >= 2x.
Training is arithmetic-bound, so the speed-up follows how many more (source + target) positions
the naive batches compute per real target token; the script prints that padding ratio too.
The gain grows with the spread of sentence lengths, so it is measured at the task's default
`data.max_length=15` (the book's filter: padding at most doubles a batch) and without a length
filter (`none`: sentences up to ~50 tokens).

One torch thread by default: on these shared 2-core machines a second thread makes small
per-step kernels wait on a busy core and both figures swing several-fold from run to run.

    python benchmarks/translate_bucketing.py [--data ../shared/data/translate/spa-eng/spa.txt]
        [--batches 30] [--repeats 3] [--max-lengths 15 none] [--threads 1]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from _common import QUIET, compose_config, here, in_fresh_process, median
from hydra.utils import instantiate
from torch.utils.data import DataLoader

from rnnlab.builder import build
from rnnlab.data.batching import EpochShuffleSampler, TensorBatchDataset, keep_batch

SPA_TXT = here().parents[1] / "shared" / "data" / "translate" / "spa-eng" / "spa.txt"
WARMUP = 5


def worker(mode: str, data: str, batches: int, max_length: str, threads: int) -> dict:
    torch.set_num_threads(threads)
    cfg = compose_config(
        *QUIET, "task=translate", "data.corpus=files", f"data.path={data}",
        f"data.max_length={'null' if max_length == 'none' else max_length}",
        output_dir=tempfile.mkdtemp(),
    )  # fmt: skip
    torch.manual_seed(cfg.seed)
    datamodule, module = build(cfg)
    net = module.net
    optimizer = instantiate(cfg.optimizer)(net.parameters())
    if mode == "bucketed":
        loader = datamodule.train_dataloader()
    else:  # the whole split padded to its longest sentence, no trimming, plain shuffling
        padded = TensorBatchDataset(datamodule.train_set.tensors)
        loader = DataLoader(
            padded,
            batch_size=datamodule.batch_size,
            sampler=EpochShuffleSampler(padded, cfg.seed),
            collate_fn=keep_batch,
        )
    net.train()
    tokens, cells, start = 0, 0, 0.0
    for step, batch in enumerate(loader):
        if step == WARMUP:
            tokens, cells, start = 0, 0, time.perf_counter()
        if step == WARMUP + batches:
            break
        src_lengths = batch["src_lengths"]
        if mode == "naive":
            src_lengths = torch.full_like(src_lengths, batch["src_tokens"].size(1))
        tgt = batch["tgt_tokens"]
        logits, _ = net(batch["src_tokens"], src_lengths, tgt[:, :-1])
        loss = F.cross_entropy(
            logits.flatten(0, 1), tgt[:, 1:].flatten(), ignore_index=0, label_smoothing=0.1
        )
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), cfg.trainer.gradient_clip_val)
        optimizer.step()
        tokens += int((batch["tgt_lengths"] - 1).sum())
        cells += tgt[:, 1:].numel() + batch["src_tokens"].numel()
    seconds = time.perf_counter() - start
    return {"tokens_per_s": tokens / seconds, "padding": cells / tokens}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", default=str(SPA_TXT))
    parser.add_argument("--batches", type=int, default=30)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--max-lengths", nargs="+", default=["15", "none"])
    parser.add_argument("--threads", type=int, default=1, help="torch threads (see below)")
    parser.add_argument("--worker", nargs=5, metavar=("MODE", "DATA", "BATCHES", "MAX_LEN", "T"))
    args = parser.parse_args()
    if args.worker:
        mode, data, batches, max_length, threads = args.worker
        print(json.dumps(worker(mode, data, int(batches), max_length, int(threads))))
        return
    if not Path(args.data).is_file():
        raise SystemExit(f"no corpus at {args.data}: pass --data <spa.txt>")
    for max_length in args.max_lengths:
        results: dict[str, list[float]] = {"naive": [], "bucketed": []}
        padding: dict[str, list[float]] = {"naive": [], "bucketed": []}
        print(f"data.max_length={max_length}:", flush=True)
        for repeat in range(args.repeats):
            for mode in results:
                run = in_fresh_process(
                    __file__, mode, args.data, str(args.batches), max_length, str(args.threads)
                )
                results[mode].append(run["tokens_per_s"])
                padding[mode].append(run["padding"])
                print(
                    f"  repeat {repeat + 1} {mode:8s} {run['tokens_per_s']:8.0f} tokens/s",
                    flush=True,
                )
        ratios = [b / n for n, b in zip(results["naive"], results["bucketed"])]
        naive, bucketed = median(results["naive"]), median(results["bucketed"])
        print(f"  naive padded shuffled batches: {naive:8.0f} target tokens/s (median)")
        print(f"  bucketed + trimmed + packed:   {bucketed:8.0f} target tokens/s (median)")
        print(
            f"  speed-up: {bucketed / naive:.2f}x (medians), per repeat {median(ratios):.2f}x (median)"
        )
        padding_ratio = median(padding["naive"]) / median(padding["bucketed"])
        print(
            f"  padding: naive batches compute {padding_ratio:.2f}x the (source + target) "
            "positions per target token; the speed-up follows it (training is arithmetic-bound)"
        )


if __name__ == "__main__":
    main()
