"""Training throughput of the vocabulary layers: `model.output_layer=full|sampled|adaptive`.

Two word-level settings, each at its task's default config (size=medium):
- translate: the shared Spanish->English spa.txt (BiLSTM-256 + Bahdanau attention, a 128-unit
  readout, 8,126 target words);
- book: War and Peace at word level, lowercased (2 x LSTM-256, windows of 100 words, 17,223 words).
The figure is target tokens per second (real ones, no padding) of training steps exactly as
`python -m rnnlab` takes them (the task's `model_step` loss, backward, gradient clipping, the
task's optimiser), and its ratio to `full`, goal >= 2x for the faster layer.

Every fresh process (`--repeats` per setting) reads the data once, builds one model per layer
and times them in mirrored rounds (full, sampled, adaptive, adaptive, sampled, full; reversed in
the next process), each turn `--batches` batches of the same batch sequence, so drift within the
process cancels (default turns: 30 translate batches of ~500 target tokens, 5 book batches of
6,400); ratios are taken within each round, then median [quartiles] over all rounds.
`adaptive` runs with module.label_smoothing=0 on translate (it has none; smoothing costs nothing
measurable in `full`). One torch thread by default (see benchmarks/translate_bucketing.py).
`--layers ... none` adds a bound: the `full` model whose training loss skips the vocabulary
layer (the mean square of its input features, so everything below it still runs forward and
backward): no output layer can make a step faster than that.

    python benchmarks/output_layer.py [--settings translate book] [--batches N] [--rounds 3]
        [--repeats 2] [--threads 1] [--translate-data spa.txt] [--book pg2600_war_and_peace.txt]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import torch
from _common import (
    QUIET,
    compose_config,
    here,
    in_fresh_process,
    median,
    mirrored_order,
    mirrored_rounds,
    output_layer_overrides,
    spread,
    train_step,
)

SHARED = here().parents[1] / "shared" / "data"
SPA_TXT = SHARED / "translate" / "spa-eng" / "spa.txt"
WAR_AND_PEACE = SHARED / "books" / "pg2600_war_and_peace.txt"
LAYERS = ("full", "sampled", "adaptive", "none")
WARMUP = 3  # batches per layer before the rounds (first steps allocate)
BATCHES = {"translate": 30, "book": 5}  # per turn: a few seconds of `full` each


def setting_overrides(setting: str, data: str) -> list[str]:
    if setting == "translate":
        return ["task=translate", "data.corpus=files", f"data.path={data}"]
    return ["task=book", "data.level=word", "data.lowercase=true", f"data.path={data}"]


def target_tokens(batch: dict[str, torch.Tensor]) -> int:
    """Real target tokens of a seq2seq batch (after <sos>, no <pad>) or of a language model's."""
    if "tgt_tokens" in batch:
        return int((batch["tgt_tokens"][:, 1:] != 0).sum())
    return batch["targets"].numel()


def free_loss(hidden: torch.Tensor, targets: torch.Tensor, **options) -> torch.Tensor:
    """A training loss that costs (almost) nothing above the features (..., F): the `none` bound."""
    return hidden.square().mean()


class LayerRun:
    """One layer's model and optimiser, and its own pass over the training batches."""

    def __init__(self, cfg, datamodule, loss: Callable[..., torch.Tensor] | None = None) -> None:
        from rnnlab.builder import build_module

        torch.manual_seed(cfg.seed)  # the same initial weights outside the output layer
        self.module = build_module(cfg, datamodule.codec).train()
        if loss is not None:  # the `none` bound: this loss instead of the layer's own
            self.module.net.output_layer.loss = loss
        self.optimizer = self.module.configure_optimizers()  # no scheduler: the optimiser
        self.clip = cfg.trainer.gradient_clip_val
        self.batches = self._forever(datamodule)

    @staticmethod
    def _forever(datamodule) -> Iterator[dict[str, torch.Tensor]]:
        while True:
            yield from datamodule.train_dataloader()

    def run(self, batches: int) -> dict[str, float]:
        tokens, start = 0, time.perf_counter()
        for _ in range(batches):
            batch = next(self.batches)
            train_step(self.module, self.optimizer, batch, self.clip)
            tokens += target_tokens(batch)
        return {"tokens_per_s": tokens / (time.perf_counter() - start)}


def worker(setting: str, data: str, order: list[str], rounds: int, batches: int) -> dict:
    """Read the data once, one `LayerRun` per layer, then the mirrored rounds."""
    from rnnlab.builder import build_datamodule

    configs = {
        layer: compose_config(
            *QUIET,
            *setting_overrides(setting, data),
            *output_layer_overrides(
                "full" if layer == "none" else layer, seq2seq=setting == "translate"
            ),
            output_dir=tempfile.mkdtemp(),
        )
        for layer in dict.fromkeys(order)
    }
    datamodule = build_datamodule(configs[order[0]])  # the same data node in each
    datamodule.prepare_data()
    datamodule.setup("fit")
    runs = {
        layer: LayerRun(cfg, datamodule, free_loss if layer == "none" else None)
        for layer, cfg in configs.items()
    }
    for run in runs.values():
        run.run(WARMUP)
    sizes = datamodule.model_kwargs()
    return {
        "vocab": sizes.get("tgt_vocab_size", sizes.get("vocab_size")),
        "rounds": mirrored_rounds(order, rounds, lambda layer: runs[layer].run(batches)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--settings", nargs="+", default=list(BATCHES), choices=list(BATCHES))
    parser.add_argument("--layers", nargs="+", default=list(LAYERS[:3]), choices=LAYERS)
    parser.add_argument("--batches", type=int, default=None, help="per layer and turn")
    parser.add_argument("--rounds", type=int, default=3, help="mirrored rounds per process")
    parser.add_argument("--repeats", type=int, default=2, help="fresh processes per setting")
    # (quartiles need rounds x repeats >= 2)
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    parser.add_argument("--translate-data", default=str(SPA_TXT))
    parser.add_argument("--book", default=str(WAR_AND_PEACE))
    parser.add_argument("--worker", nargs=6, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        setting, data, order, rounds, batches, threads = args.worker
        torch.set_num_threads(int(threads))
        print(json.dumps(worker(setting, data, order.split(","), int(rounds), int(batches))))
        return
    paths = {"translate": args.translate_data, "book": args.book}
    for setting in args.settings:
        if not Path(paths[setting]).is_file():
            raise SystemExit(f"no data for {setting} at {paths[setting]}")
    others = [layer for layer in args.layers if layer != "full"]
    layers = ["full", *others]
    for setting in args.settings:
        speeds: dict[str, list[float]] = {layer: [] for layer in layers}
        ratios: dict[str, list[float]] = {layer: [] for layer in others}
        batches = args.batches or BATCHES[setting]
        for repeat in range(args.repeats):
            order = mirrored_order(layers, repeat)
            result = in_fresh_process(
                __file__,
                setting,
                paths[setting],
                ",".join(order),
                str(args.rounds),
                str(batches),
                str(args.threads),
            )
            for measured in result["rounds"]:
                for layer in layers:
                    speeds[layer].append(measured[layer]["tokens_per_s"])
                for layer in others:
                    ratios[layer].append(
                        measured[layer]["tokens_per_s"] / measured["full"]["tokens_per_s"]
                    )
            print(
                f"  {setting} process {repeat + 1} ({','.join(order)} x{args.rounds}): "
                + ", ".join(
                    f"{layer} {median(speeds[layer][-args.rounds :]):.0f}" for layer in layers
                )
                + " target tokens/s",
                flush=True,
            )
        print(
            f"{setting} (target vocabulary {result['vocab']:,}, {args.threads} thread(s), "
            f"{batches} batches per turn, {len(speeds['full'])} rounds):"
        )
        for layer in layers:
            line = f"  {layer:9s} {median(speeds[layer]):8.0f} target tokens/s"
            if layer != "full":
                line += f"   vs full: {spread(ratios[layer])}x (median [quartiles] per round)"
            print(line, flush=True)


if __name__ == "__main__":
    main()
