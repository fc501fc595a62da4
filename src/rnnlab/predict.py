"""Readable predictions from a checkpoint: `python -m rnnlab.predict ckpt_path=... text="535+61"`.

For image tasks the input is a file path and `image=digit.png` may be written instead of `text=`
(an alias). Without `text=`/`image=`, reads stdin and writes exactly one line per input line (for
images: one path per line), in order, so it pipes:
`python -m rnnlab.predict ckpt_path=... < questions.txt > answers.txt`. A line that cannot be
encoded gets `!error: <reason>` in its place (and the exit code is 1).

Text generation (task=book) continues each prompt: `text="It was the best of times"` streams the
continuation to the terminal as it is generated; `length=`, `temperature=`, `top_k=`, `top_p=`,
`greedy=true` and `seed=` set the sampling (no seed: different text every run). On stdin, line
breaks inside a generated answer are written as `\\n`, so it stays one line per input line.

Seq2seq tasks (translate, chat, arithmetic): `text="¿Cómo te llamas?"`; `beam_size=5` (batched
beam search) and `length_penalty=`, or `sample=true` with `temperature=`, `top_k=` (one k or a
schedule such as `[3,2]`), `top_p=`, `seed=`; `suppress_unk=true`, `no_repeat=true`,
`min_length=` and `max_length=` constrain any of them (defaults: the checkpoint's).
`interactive=true` (or `python -m rnnlab.chat`) opens a prompt (any task) that answers one line
at a time until Ctrl-D or Ctrl-C.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

import torch
from omegaconf import DictConfig, OmegaConf

from rnnlab.data.base import TaskDataModule
from rnnlab.errors import InputError, RnnlabError
from rnnlab.tasks.base import TaskModule
from rnnlab.tasks.seq2seq import DECODING_DEFAULTS

USAGE = (
    "usage: python -m rnnlab.predict ckpt_path=<file.ckpt> [text=<input> | image=<file.png>] "
    "[batch_size=256] [trust_checkpoint=true]"
)
# Text generation (task=book): how much to generate and how to sample. Absent seed = fresh
# randomness each run; with text= the continuation is streamed as it is generated.
GENERATION_OPTIONS = ("length", "temperature", "top_k", "top_p", "greedy", "seed")
USAGE += "\n  generation: [length=200] [temperature=1.0] [top_k=K] [top_p=P] [greedy=true] [seed=N]"
# Sequence-to-sequence decoding (task=translate, arithmetic): beam search instead of greedy.
DECODING_OPTIONS = tuple(DECODING_DEFAULTS)
USAGE += (
    "\n  seq2seq: [beam_size=1] [length_penalty=1.0] [sample=true] [temperature=1.0] [top_k=K|[3,2]]"
    "\n    [top_p=P] [seed=N] [suppress_unk=true] [no_repeat=true] [min_length=N]"
    " [max_length=N]"
)
USAGE += "\n  interactive=true: a prompt, one input per line (Ctrl-D or Ctrl-C quits)"


@torch.inference_mode()
def predict_texts(
    module: TaskModule, datamodule: TaskDataModule, texts: Sequence[str], batch_size: int = 256
) -> list[str | InputError]:
    """One answer per text, or the InputError that says why that text could not be read."""
    results: list[str | InputError] = [InputError("not predicted")] * len(texts)
    encoded = []
    for index, text in enumerate(texts):
        try:
            encoded.append((index, datamodule.encode_input(text)))
        except InputError as error:
            results[index] = error
    for start in range(0, len(encoded), batch_size):
        chunk = encoded[start : start + batch_size]
        batch = datamodule.collate([example for _, example in chunk])
        batch = {key: value.to(module.device) for key, value in batch.items()}
        answers = datamodule.decode_output(module.predict_batch(batch))
        for (index, _), answer in zip(chunk, answers):
            results[index] = answer
    return results


@torch.inference_mode()
def stream_generation(module: TaskModule, datamodule: TaskDataModule, text: str) -> int:
    """Continue one prompt, writing each piece of text to stdout as soon as it is generated."""
    try:
        example = datamodule.encode_input(text)
    except InputError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    batch = datamodule.collate([example])
    batch = {key: value.to(module.device) for key, value in batch.items()}
    last = int(batch["tokens"][0, int(batch["lengths"][0]) - 1])
    for piece in datamodule.stream_text(last, module.stream_batch(batch)):
        sys.stdout.write(piece)
        sys.stdout.flush()
    sys.stdout.write("\n")
    return 0


def interactive(module: TaskModule, datamodule: TaskDataModule) -> int:
    """Answer one typed line at a time until Ctrl-D (end of input) or Ctrl-C."""
    print("Type an input and press Enter; Ctrl-D or Ctrl-C quits.", file=sys.stderr)
    try:
        while True:
            try:
                line = input("> ")
            except EOFError:
                break
            if not line.strip():
                continue
            (answer,) = predict_texts(module, datamodule, [line])
            print(f"error: {answer}" if isinstance(answer, InputError) else answer, flush=True)
    except KeyboardInterrupt:
        pass
    print(file=sys.stderr)
    return 0


RAW_KEYS = ("text", "image")  # user input: kept exactly as typed


def reads_images(datamodule: TaskDataModule) -> bool:
    """Whether the task reads image files, the only input `image=` may name (any other task
    would take the path as text)."""
    from rnnlab.data.mnist import MnistRowsData  # imports PIL: only when image= is given

    return isinstance(datamodule, MnistRowsData)


def parse_cli(argv: Sequence[str]) -> DictConfig:
    """`key=value` arguments. Options are parsed like Hydra overrides (numbers, booleans), but
    the input itself is kept verbatim: YAML would turn `text=0110` into 72 and `text=` into None."""
    options, raw = [], {}
    for argument in argv:
        key, sep, value = argument.partition("=")
        if not sep or not key:
            raise ValueError(f"arguments are key=value, got {argument!r}")
        if key in RAW_KEYS:
            raw[key] = value
        else:
            options.append(argument)
    args = OmegaConf.from_cli(options)
    for key, value in raw.items():
        args[key] = value
    return args


def main(argv: Sequence[str] | None = None) -> int:
    from rnnlab.builder import load_checkpoint

    try:
        args = parse_cli(sys.argv[1:] if argv is None else argv)
    except ValueError as error:
        print(f"error: {error}\n{USAGE}", file=sys.stderr)
        return 2
    unknown = set(args) - {
        "ckpt_path",
        "text",
        "image",
        "batch_size",
        "device",
        "interactive",
        "trust_checkpoint",
        *GENERATION_OPTIONS,
        *DECODING_OPTIONS,
    }
    if "ckpt_path" not in args or unknown:
        print(
            f"error: unknown option(s) {sorted(unknown)}\n{USAGE}" if unknown else USAGE,
            file=sys.stderr,
        )
        return 2
    if "text" in args and "image" in args:
        print(f"error: give text= or image= (an alias), not both\n{USAGE}", file=sys.stderr)
        return 2
    input_key = "image" if "image" in args else "text"
    if args.get("interactive") and input_key in args:
        print(f"error: give {input_key}= or interactive=true, not both\n{USAGE}", file=sys.stderr)
        return 2
    try:
        _, datamodule, module = load_checkpoint(
            args.ckpt_path,
            map_location=args.get("device", "cpu"),
            trust=args.get("trust_checkpoint") is True,
        )
    except RnnlabError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if input_key == "image" and not reads_images(datamodule):
        print(
            "error: image= is for image tasks (mnist_rows); this checkpoint's task reads text: "
            f"use text=\n{USAGE}",
            file=sys.stderr,
        )
        return 2
    batch_size = int(args.get("batch_size", 256))
    options = {key: args[key] for key in args if key in (*GENERATION_OPTIONS, *DECODING_OPTIONS)}
    if options:
        configure = getattr(module, "configure_generation", None)
        accepted, current = GENERATION_OPTIONS, {"seed": None}
        if configure is None and hasattr(module, "configure_decoding"):
            configure, accepted, current = module.configure_decoding, DECODING_OPTIONS, {}
        wrong = sorted(set(options) - set(accepted if configure else ()))
        if wrong:
            kind = "text generation" if accepted is GENERATION_OPTIONS else "seq2seq decoding"
            print(f"error: {wrong} are not options of this task's {kind}\n{USAGE}", file=sys.stderr)
            return 2
        try:
            configure(**{**current, **options})
        except RnnlabError as error:
            print(f"error: {error}", file=sys.stderr)
            return 2
    elif hasattr(module, "configure_generation"):
        module.configure_generation(seed=None)
    if args.get("interactive"):
        return interactive(module, datamodule)
    if input_key in args and hasattr(module, "stream_batch") and hasattr(datamodule, "stream_text"):
        return stream_generation(module, datamodule, str(args[input_key]))
    if input_key in args:
        (answer,) = predict_texts(module, datamodule, [args[input_key]], batch_size)
        if isinstance(answer, InputError):
            print(f"error: {answer}", file=sys.stderr)
            return 2
        print(answer)
        return 0
    lines = [line.rstrip("\r\n") for line in sys.stdin]
    failed = False
    for answer in predict_texts(module, datamodule, lines, batch_size):
        failed |= isinstance(answer, InputError)
        print(f"!error: {answer}" if isinstance(answer, InputError) else answer)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
