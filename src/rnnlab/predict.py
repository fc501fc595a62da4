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
from typing import Any

from omegaconf import DictConfig, OmegaConf

from rnnlab.codecs.base import Codec
from rnnlab.errors import InputError, RnnlabError
from rnnlab.inference import can_stream, load_checkpoint, predict_texts, stream_generation
from rnnlab.tasks.base import TaskModule
from rnnlab.tasks.language_model import LanguageModelTask
from rnnlab.tasks.seq2seq import DECODING_DEFAULTS, Seq2SeqTask

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
RAW_KEYS = ("text", "image")  # user input: kept exactly as typed


def stream(module: LanguageModelTask, codec: Codec, text: str) -> int:
    """Continue one prompt, writing each piece of text to stdout as soon as it is generated."""
    try:
        for piece in stream_generation(module, codec, text):
            sys.stdout.write(piece)
            sys.stdout.flush()
    except InputError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    sys.stdout.write("\n")
    return 0


def interactive(module: TaskModule, codec: Codec) -> int:
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
            (answer,) = predict_texts(module, codec, [line])
            print(f"error: {answer}" if isinstance(answer, InputError) else answer, flush=True)
    except KeyboardInterrupt:
        pass
    print(file=sys.stderr)
    return 0


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


def usage_error(args: DictConfig) -> str | None:
    """What is wrong with the arguments as given, or None."""
    known = {"ckpt_path", *RAW_KEYS, "batch_size", "device", "interactive", "trust_checkpoint"}
    unknown = set(args) - known - {*GENERATION_OPTIONS, *DECODING_OPTIONS}
    if unknown:
        return f"unknown option(s) {sorted(unknown)}"
    if "ckpt_path" not in args:
        return ""
    if "text" in args and "image" in args:
        return "give text= or image= (an alias), not both"
    input_key = "image" if "image" in args else "text"
    if args.get("interactive") and input_key in args:
        return f"give {input_key}= or interactive=true, not both"
    return None


def configure(module: TaskModule, options: dict[str, Any]) -> None:
    """Set the task's generation or decoding options for this call; a language model draws
    fresh randomness unless given a seed (ConfigError/InputError for a wrong option)."""
    if isinstance(module, LanguageModelTask):
        accepted, kind = GENERATION_OPTIONS, "text generation"
    elif isinstance(module, Seq2SeqTask):
        accepted, kind = DECODING_OPTIONS, "seq2seq decoding"
    else:
        accepted, kind = (), "prediction"
    wrong = sorted(set(options) - set(accepted))
    if wrong:
        raise InputError(f"{wrong} are not options of this task's {kind}\n{USAGE}")
    if isinstance(module, LanguageModelTask):
        module.configure_generation(**{"seed": None, **options})
    elif isinstance(module, Seq2SeqTask):
        module.configure_decoding(**options)


def answer(args: DictConfig, module: TaskModule, codec: Codec) -> int:
    """Run what the arguments ask: a prompt, one input, or every stdin line."""
    if args.get("interactive"):
        return interactive(module, codec)
    input_key = "image" if "image" in args else "text"
    if input_key in args and can_stream(module, codec):
        return stream(module, codec, str(args[input_key]))
    batch_size = int(args.get("batch_size", 256))
    if input_key in args:
        (result,) = predict_texts(module, codec, [args[input_key]], batch_size)
        if isinstance(result, InputError):
            print(f"error: {result}", file=sys.stderr)
            return 2
        print(result)
        return 0
    lines = [line.rstrip("\r\n") for line in sys.stdin]
    failed = False
    for result in predict_texts(module, codec, lines, batch_size):
        failed |= isinstance(result, InputError)
        print(f"!error: {result}" if isinstance(result, InputError) else result)
    return 1 if failed else 0


def main(argv: Sequence[str] | None = None) -> int:
    try:
        args = parse_cli(sys.argv[1:] if argv is None else argv)
    except ValueError as error:
        print(f"error: {error}\n{USAGE}", file=sys.stderr)
        return 2
    problem = usage_error(args)
    if problem is not None:
        print(f"error: {problem}\n{USAGE}" if problem else USAGE, file=sys.stderr)
        return 2
    try:
        _, codec, module = load_checkpoint(
            args.ckpt_path,
            map_location=args.get("device", "cpu"),
            trust=args.get("trust_checkpoint") is True,
        )
        if "image" in args and not codec.reads_images:
            raise InputError(
                "image= is for image tasks (mnist_rows); this checkpoint's task reads text: "
                f"use text=\n{USAGE}"
            )
        configure(module, {k: args[k] for k in args if k in GENERATION_OPTIONS + DECODING_OPTIONS})
    except RnnlabError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return answer(args, module, codec)


if __name__ == "__main__":
    sys.exit(main())
