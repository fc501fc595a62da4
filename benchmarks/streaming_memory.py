"""Peak memory and speed of task=translate in memory vs streamed from shards (#18).

For each corpus size (default 0.3M and 3M pairs) the script generates a made-up Moses corpus
(a Zipfian 8,000-word source language, each word with its own translation, 3-14 words a
sentence), then, each in a fresh process:
- build: the shards (`data.streaming=true`, `data.shard_workers`): pairs/s and peak RSS;
- in-memory: 300 training steps reading the corpus into memory (today's path);
- streaming: 300 training steps from the shards (built above, so the run only opens them).
It prints peak RSS (the main process, and the largest of its children: shard builders and
dataloader workers) and target tokens/s over the steps after the first 20.

Goals (#18): streaming peak RSS at 3M pairs <= 1.2x its RSS at 0.3M; streaming tokens/s >=
0.9x in-memory; shard building >= 50k pairs/s on 2 cores.

    OMP_NUM_THREADS=1 python benchmarks/streaming_memory.py [--sizes 300000 3000000]
        [--steps 300] [--dir /tmp/rnnlab-streaming] [--workers 2] [--model-size small]
        [--loader-workers 0]
"""

from __future__ import annotations

import argparse
import json
import resource
import tempfile
import time
from pathlib import Path

import lightning.pytorch as pl
import numpy as np
import torch
from _common import NO_CHECKPOINTS, QUIET, compose_config, in_fresh_process, train_with_callbacks

WARMUP = 20


def make_corpus(directory: Path, pairs: int, seed: int = 0) -> list[str]:
    """A Moses pair (corpus.es, corpus.en) of `pairs` made-up sentence pairs."""
    source, target = directory / "corpus.es", directory / "corpus.en"
    if source.is_file() and target.is_file():
        return [str(source), str(target)]
    directory.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    words = np.array([f"s{i}" for i in range(8000)])
    translations = np.array([f"t{i}" for i in range(8000)])
    with open(source, "w") as es, open(target, "w") as en:
        for start in range(0, pairs, 100_000):
            count = min(100_000, pairs - start)
            lengths = rng.integers(3, 15, size=count)
            ids = np.minimum(rng.zipf(1.2, size=int(lengths.sum())) - 1, 7999)
            offsets = np.concatenate([[0], np.cumsum(lengths)])
            src_words, tgt_words = words[ids], translations[ids]
            es.writelines(" ".join(src_words[a:b]) + " .\n" for a, b in zip(offsets, offsets[1:]))
            en.writelines(" ".join(tgt_words[a:b]) + " .\n" for a, b in zip(offsets, offsets[1:]))
    return [str(source), str(target)]


def peak_rss_mb() -> dict[str, float]:
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    return {"peak_rss_mb": own, "children_peak_rss_mb": children}


def data_overrides(corpus: list[str], data_dir: str, streaming: bool, workers: int) -> list[str]:
    return [
        "task=translate",
        "data.corpus=files",
        f"data.path=[{corpus[0]},{corpus[1]}]",
        f"data.data_dir={data_dir}",
        "data.min_count=1",
        "data.val_fraction=0.001",
        "data.test_fraction=0.001",
        f"data.streaming={str(streaming).lower()}",
        f"data.shard_workers={workers}",
    ]


def build(corpus: list[str], data_dir: str, workers: int) -> dict:
    from hydra.utils import instantiate

    cfg = compose_config(
        *data_overrides(corpus, data_dir, True, workers), output_dir=tempfile.mkdtemp()
    )
    datamodule = instantiate(cfg.data)
    start = time.perf_counter()
    datamodule.prepare_data()
    seconds = time.perf_counter() - start
    read = (
        datamodule.stats.get("read")
        or json.loads((datamodule.shards() / "meta.json").read_text())["stats"]["read"]
    )
    return {"seconds": seconds, "pairs_per_s": read / seconds, "pairs": read, **peak_rss_mb()}


class Throughput(pl.Callback):
    """Target tokens (without <sos>) per second over the steps after WARMUP."""

    def __init__(self) -> None:
        self.tokens, self.start, self.seconds = 0, None, 0.0

    def on_train_batch_start(self, trainer, module, batch, index) -> None:
        if trainer.global_step == WARMUP:
            self.start = time.perf_counter()
        if self.start is not None:
            self.tokens += int((batch["tgt_lengths"] - 1).sum())

    def on_train_end(self, trainer, module) -> None:
        self.seconds = time.perf_counter() - self.start


def train(
    corpus: list[str], data_dir: str, mode: str, steps: int, model_size: str, loader_workers: int
) -> dict:
    torch.set_num_threads(1)
    overrides = [
        *QUIET,
        *NO_CHECKPOINTS,
        *data_overrides(corpus, data_dir, mode == "streaming", 0),
        f"size={model_size}",
        f"data.num_workers={loader_workers}",
        f"+trainer.max_steps={steps}",
        "trainer.max_epochs=1000",
        "+trainer.limit_val_batches=0",
        "trainer.num_sanity_val_steps=0",
        "test=false",
        "diagnosis.enabled=false",
        "callbacks.attention_maps=null",
    ]
    cfg = compose_config(*overrides, output_dir=tempfile.mkdtemp())
    timer = Throughput()
    start = time.perf_counter()
    train_with_callbacks(cfg, timer)
    return {
        "seconds": time.perf_counter() - start,
        "tokens_per_s": timer.tokens / timer.seconds,
        **peak_rss_mb(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", type=int, nargs="+", default=[300_000, 3_000_000])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--dir", default="/tmp/rnnlab-streaming")
    parser.add_argument("--workers", type=int, default=2, help="shard-building processes")
    parser.add_argument("--model-size", default="small")
    parser.add_argument("--loader-workers", type=int, default=0, help="data.num_workers")
    parser.add_argument("--modes", nargs="+", default=["build", "in-memory", "streaming"])
    parser.add_argument("--worker", nargs=3, metavar=("MODE", "PAIRS", "ARGS"))
    args = parser.parse_args()
    if args.worker:
        mode, pairs, _ = args.worker
        root = Path(args.dir) / pairs
        corpus = make_corpus(root, int(pairs))
        if mode == "build":
            print(json.dumps(build(corpus, str(root / "data"), args.workers)))
        else:
            run = train(
                corpus, str(root / "data"), mode, args.steps, args.model_size, args.loader_workers
            )
            print(json.dumps(run))
        return
    results: dict[int, dict[str, dict]] = {}
    for pairs in args.sizes:
        root = Path(args.dir) / str(pairs)
        start = time.perf_counter()
        make_corpus(root, pairs)
        size_mb = sum(f.stat().st_size for f in root.glob("corpus.*")) / 1e6
        print(f"{pairs:,} pairs: corpus {size_mb:.0f} MB ({time.perf_counter() - start:.0f} s)")
        results[pairs] = {}
        for mode in args.modes:
            extra = [f"--dir={args.dir}", f"--steps={args.steps}", f"--workers={args.workers}",
                     f"--model-size={args.model_size}", f"--loader-workers={args.loader_workers}"]  # fmt: skip
            run = in_fresh_process(__file__, mode, str(pairs), "-", *extra)
            results[pairs][mode] = run
            line = f"  {mode:9s} peak RSS {run['peak_rss_mb']:7.0f} MB"
            line += f" (children {run['children_peak_rss_mb']:5.0f} MB), {run['seconds']:6.1f} s"
            if mode == "build":
                shards = sum(f.stat().st_size for f in (root / "data" / "shards").rglob("*"))
                line += f", {run['pairs_per_s']:,.0f} pairs/s, shards {shards / 1e6:.0f} MB"
            else:
                line += f", {run['tokens_per_s']:,.0f} target tokens/s"
            print(line, flush=True)
    sizes = sorted(results)
    if len(sizes) >= 2 and "streaming" in args.modes:
        small, large = results[sizes[0]]["streaming"], results[sizes[-1]]["streaming"]
        ratio = large["peak_rss_mb"] / small["peak_rss_mb"]
        print(f"streaming peak RSS {sizes[-1]:,} / {sizes[0]:,} pairs: {ratio:.2f}x (goal <= 1.2)")
    for pairs in sizes:
        if {"streaming", "in-memory"} <= set(results[pairs]):
            ratio = (
                results[pairs]["streaming"]["tokens_per_s"]
                / results[pairs]["in-memory"]["tokens_per_s"]
            )
            print(f"{pairs:,} pairs: streaming / in-memory tokens/s {ratio:.2f} (goal >= 0.9)")


if __name__ == "__main__":
    main()
