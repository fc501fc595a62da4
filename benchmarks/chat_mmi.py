"""Chatbot replies on the test split: plain beam search and sampling against MMI re-ranking (#20).

For each way of decoding, over every test tweet (`--split val`: validation, to choose options
on): distinct-1 and distinct-2 of the replies, sacreBLEU against the reference replies, and the
perplexity of the chosen replies under the chat model itself (forward ppl, <eos> included: how
much MMI trades likelihood for information). Then five replies to each of the book's two
prompts per way (one for a deterministic beam).

    python benchmarks/chat_mmi.py --ckpt outputs/chat/<run>/checkpoints/best.ckpt
    python benchmarks/chat_mmi.py --train       # the default chat config on the shared files first
    python benchmarks/chat_mmi.py --ckpt ... --row "mmi2=sample=false,beam_size=10,rerank=mmi,mmi_lambda=0.3"

Run it from the repository root (the checkpoint's data.path is relative to where it trained).
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import torch
from _common import compose_config, here
from omegaconf import OmegaConf

from rnnlab.builder import build_datamodule
from rnnlab.data.chat import BOOK_PROMPTS
from rnnlab.inference import load_checkpoint, predict_texts
from rnnlab.metrics import BLEU, DistinctN

CHAT = here().parent.parent / "shared" / "data" / "chat"
FILES = f"data.path=[{CHAT / 'twitter_en_head.txt'},{CHAT / 'TwitterConvCorpus.txt'}]"
# name -> decoding options over the checkpoint's own (suppress_unk, no_repeat, ... stay).
ROWS = {
    "beam 10": "sample=false,beam_size=10,rerank=none",
    "mmi, beam 10": "sample=false,beam_size=10,rerank=mmi,num_candidates=10",
    "sample top-k [3,2]": "sample=true,beam_size=1,rerank=none,seed=0",
    "sample top-k 10": "sample=true,top_k=10,rerank=none,seed=0",
    "mmi, 10 samples top-k 10": "sample=true,top_k=10,rerank=mmi,num_candidates=10,seed=0",
}


def parse_options(spec: str) -> dict:
    """ "a=1,b=[3,2]" -> {"a": 1, "b": [3, 2]}, values read as the CLI reads them."""
    items, depth, current = [], 0, ""
    for char in spec:  # commas inside [...] belong to the value
        depth += {"[": 1, "]": -1}.get(char, 0)
        if char == "," and depth == 0:
            items.append(current)
            current = ""
        else:
            current += char
    items.append(current)
    return OmegaConf.to_container(OmegaConf.from_dotlist([item for item in items if item]))


def train(out: Path, overrides: list[str]) -> Path:
    from rnnlab.train import train as run

    start = time.process_time()
    cfg = compose_config("task=chat", FILES, "logger=none", *overrides, output_dir=str(out))
    metrics, _ = run(cfg)
    minutes = (time.process_time() - start) / 60
    print(f"trained in {minutes:.1f} CPU minutes: test ppl {metrics.get('test/ppl', math.nan):.1f}")
    return out / "checkpoints" / "best.ckpt"


@torch.inference_mode()
def score_split(module, loader) -> dict[str, float]:
    """distinct-1/2, BLEU and the forward perplexity of the replies `module` decodes."""
    net, codec = module.net, module.codec
    distinct = {n: DistinctN(n, eos_id=net.eos_id, pad_id=net.pad_id) for n in (1, 2)}
    bleu = BLEU()
    nll, count = 0.0, 0
    for batch in loader:
        tokens = module.predict_batch(batch)["tokens"]
        for metric in distinct.values():
            metric.update(tokens)
        bleu.update(codec.decode(batch, {"tokens": tokens}), codec.reference_texts(batch))
        forward, _ = net.score_replies(batch["src_tokens"], batch["src_lengths"], tokens)
        nll -= float(forward.sum())
        count += int((tokens != net.pad_id).sum())
    return {
        "distinct-1": float(distinct[1].compute()),
        "distinct-2": float(distinct[2].compute()),
        "BLEU": float(bleu.compute()),
        "forward ppl": math.exp(nll / max(count, 1)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--ckpt", type=Path, help="a chat checkpoint with a reply LM")
    parser.add_argument("--train", action="store_true", help="train the default chat config")
    parser.add_argument("--out", type=Path, default=Path("outputs/chat/mmi-benchmark"))
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--row", action="append", default=[], help="name=opt=v,opt=v (repeat)")
    parser.add_argument("--only", action="store_true", help="only the --row rows")
    parser.add_argument("--replies", type=int, default=5, help="replies per book prompt")
    parser.add_argument(
        "--split", choices=("val", "test"), default="test", help="choose options on val first"
    )
    parser.add_argument("--samples-only", action="store_true", help="only the prompts' replies")
    parser.add_argument("overrides", nargs="*", help="training overrides (with --train)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    ckpt = train(args.out, args.overrides) if args.train else args.ckpt
    if ckpt is None:
        parser.error("give --ckpt or --train")
    rows = {} if args.only else dict(ROWS)
    rows.update(spec.split("=", 1) for spec in args.row)

    cfg, codec, module = load_checkpoint(ckpt)
    datamodule = build_datamodule(cfg, codec)
    datamodule.prepare_data()
    datamodule.setup()
    test = args.split == "test"
    tweets = datamodule.test_set if test else datamodule.val_set
    defaults = module.decoding
    formats = {"distinct-1": ".4f", "distinct-2": ".4f", "BLEU": ".3f", "forward ppl": ".1f"}
    print(f"{ckpt}: {len(tweets)} {args.split} tweets")
    if not args.samples_only:
        print("| decoding | distinct-1 | distinct-2 | BLEU | forward ppl | seconds |")
        print("| --- | ---: | ---: | ---: | ---: | ---: |")
    samples = {}
    for name, spec in rows.items():
        module.decoding = defaults
        module.configure_decoding(**parse_options(spec))
        count = args.replies if module.decoding.sample else 1
        samples[name] = [predict_texts(module, codec, [prompt] * count) for prompt in BOOK_PROMPTS]
        if args.samples_only:
            continue
        start = time.perf_counter()
        loader = datamodule.test_dataloader() if test else datamodule.val_dataloader()
        figures = score_split(module, loader)
        seconds = time.perf_counter() - start
        values = " | ".join(format(figures[key], fmt) for key, fmt in formats.items())
        print(f"| {name} | {values} | {seconds:.0f} |", flush=True)
    for index, prompt in enumerate(BOOK_PROMPTS):
        print(f"\n> {prompt}")
        for name, replies in samples.items():
            print(f"  {name}: " + " / ".join(str(reply) for reply in replies[index]))


if __name__ == "__main__":
    main()
