"""Batched beam search vs the same beam search one sentence at a time (task=translate).

A default translate model (size=medium, with the `--output-layer` vocabulary layer) is trained
briefly on the shared spa.txt (or loaded with --ckpt, which knows its own layer), then
`--sentences` validation sentences are translated with beam size `--beam`, once in batches of
`--batch-size` sentences (batch x beam rows per decoder step) and once sentence by sentence;
both are timed `--repeats` times, alternating, and the median ratio is the figure (goal >= 5x).
The two must give the same translations.

Both do the same arithmetic per sentence (beam rows x decoder matrix products, full-vocabulary
log-softmax; with `--output-layer adaptive` the head, and a rare-word cluster's projection only
for the hypotheses whose cluster could still make their sentence's beam), so the script also
profiles one batched run and prints the time its matrix products alone take: one-at-a-time /
that floor is the most any batching could reach on this machine.

    python benchmarks/translate_beam.py [--ckpt <run>/checkpoints/last.ckpt] [--beam 5]
        [--sentences 200] [--batch-size 100] [--threads N] [--output-layer full|adaptive]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch
from _common import QUIET, compose_config, here, median, train_step

from rnnlab.models.decoding import DecodingOptions

SPA_TXT = here().parents[1] / "shared" / "data" / "translate" / "spa-eng" / "spa.txt"


def trained_model(data: str, train_batches: int, output_layer: str):
    """The default translate model (no label smoothing) with `output_layer` after
    `train_batches` Adam steps (enough to emit <eos>)."""
    from rnnlab.builder import build, instantiate_node

    cfg = compose_config(
        *QUIET, "task=translate", "data.corpus=files", f"data.path={data}",
        f"model.output_layer={output_layer}", "module.label_smoothing=0",
        output_dir=tempfile.mkdtemp(),
    )  # fmt: skip
    torch.manual_seed(cfg.seed)
    datamodule, module = build(cfg)
    net = module.net
    module.train()
    optimizer = instantiate_node(cfg, "optimizer")(net.parameters())
    start = time.perf_counter()
    for step, batch in enumerate(datamodule.train_dataloader()):
        if step == train_batches:
            break
        loss = train_step(module, optimizer, batch, clip=1.0)
    print(
        f"trained {train_batches} batches ({output_layer} output layer) in "
        f"{time.perf_counter() - start:.0f} s, loss {loss:.2f}"
    )
    return datamodule, net.eval()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", default=str(SPA_TXT))
    parser.add_argument("--ckpt", default=None)
    parser.add_argument("--train-batches", type=int, default=300)
    parser.add_argument("--sentences", type=int, default=200)
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--beam", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: its default)")
    parser.add_argument(
        "--output-layer", default="full", choices=("full", "sampled", "adaptive"),
        help="vocabulary layer of the model trained here (not with --ckpt)",
    )  # fmt: skip
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.ckpt:
        from rnnlab.builder import build_datamodule
        from rnnlab.inference import load_checkpoint

        cfg, codec, module = load_checkpoint(args.ckpt)
        datamodule = build_datamodule(cfg, codec)
        datamodule.setup()
        net = module.net
    else:
        if not Path(args.data).is_file():
            raise SystemExit(f"no corpus at {args.data}: pass --data <spa.txt> or --ckpt")
        datamodule, net = trained_model(args.data, args.train_batches, args.output_layer)
    texts = [text for text, _ in datamodule.examples["val"]]
    order = torch.randperm(len(texts), generator=torch.Generator().manual_seed(0))
    codec = datamodule.codec
    examples = [codec.encode_example(texts[i]) for i in order[: args.sentences].tolist()]

    beam = DecodingOptions(beam_size=args.beam)

    @torch.inference_mode()
    def batched() -> list[list[int]]:
        out = []
        for start in range(0, len(examples), args.batch_size):
            batch = codec.collate(examples[start : start + args.batch_size])
            tokens = net.generate(batch["src_tokens"], batch["src_lengths"], beam)
            out += tokens["tokens"].tolist()
        return out

    @torch.inference_mode()
    def one_by_one() -> list[list[int]]:
        out = []
        for example in examples:
            batch = codec.collate([example])
            tokens = net.generate(batch["src_tokens"], batch["src_lengths"], beam)
            out += tokens["tokens"].tolist()
        return out

    times: dict[str, list[float]] = {"batched": [], "one_by_one": []}
    outputs = {}
    for _ in range(args.repeats):
        for name, run in (("batched", batched), ("one_by_one", one_by_one)):
            start = time.perf_counter()
            outputs[name] = run()
            times[name].append(time.perf_counter() - start)
    same = sum(
        a[: len(b)] == b and not any(a[len(b) :])
        for a, b in zip(outputs["batched"], outputs["one_by_one"])
    )
    batched_s, single_s = median(times["batched"]), median(times["one_by_one"])
    n = len(examples)
    threads = torch.get_num_threads()
    layer = type(net.output_layer).__name__
    print(
        f"beam {args.beam}, {n} validation sentences, batches of {args.batch_size}, {threads} "
        f"threads, {layer} output layer:"
    )
    print(f"  batched:            {batched_s:6.2f} s  ({n / batched_s:6.1f} sentences/s)")
    print(f"  one sentence each:  {single_s:6.2f} s  ({n / single_s:6.1f} sentences/s)")
    print(f"  speed-up: {single_s / batched_s:.1f}x (goal >= 5x); same output for {same}/{n}")
    floor = matmul_seconds(batched)
    print(
        f"  matrix products alone: {floor:.2f} s of the batched run ({floor / batched_s:.0%}); "
        f"with everything else free the speed-up would be {single_s / floor:.1f}x"
    )


def matmul_seconds(run) -> float:
    """Seconds `run` spends in matrix products (self CPU time of the mm/addmm/bmm kernels)."""
    from torch.profiler import profile

    with profile() as prof:
        run()
    kernels = {"aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm"}
    return sum(e.self_cpu_time_total for e in prof.key_averages() if e.key in kernels) / 1e6


if __name__ == "__main__":
    main()
