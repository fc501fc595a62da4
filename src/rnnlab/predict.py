"""Readable predictions from a checkpoint: `python -m rnnlab.predict ckpt_path=... text="535+61"`.

For image tasks the input is a file path and `image=digit.png` may be written instead of `text=`
(an alias). Without `text=`/`image=`, reads stdin and writes exactly one line per input line (for
images: one path per line), in order, so it pipes:
`python -m rnnlab.predict ckpt_path=... < questions.txt > answers.txt`. A line that cannot be
encoded gets `!error: <reason>` in its place (and the exit code is 1).

Models that generate (translate, chat, arithmetic, book) take the decoding options by the names
of the config's `decoding:` node, with the checkpoint's as defaults (`rnnlab.models.decoding.
DecodingOptions`): `beam_size=5` (batched beam search) and `length_penalty=`, or `sample=true`
with `temperature=`, `top_k=` (one k or a schedule such as `[3,2]`), `top_p=`, `seed=` (none:
different draws every run); `max_new_tokens=`, and for seq2seq `min_new_tokens=`,
`suppress_unk=true`, `no_repeat=true`. The earlier names still work: `length=` and
`max_length=` (max_new_tokens), `min_length=`, `greedy=true` (sample=false). A chatbot trained
with a reply language model re-ranks with `rerank=mmi` (`num_candidates=`, `mmi_lambda=`,
`mmi_first_tokens=`): the most informative of several candidate replies. Text generation
(task=book) with `text=` streams the continuation to the terminal as it is generated; on stdin,
line breaks inside a generated answer are written as `\\n`, so it stays one line per input line.
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
from rnnlab.models.decoding import DecodingOptions
from rnnlab.tasks.base import DecodingTask, TaskModule
from rnnlab.tasks.language_model import LanguageModelTask

USAGE = (
    "usage: python -m rnnlab.predict ckpt_path=<file.ckpt> [text=<input> | image=<file.png>] "
    "[batch_size=256] [trust_checkpoint=true]"
    "\n  decoding (generating models; defaults: the checkpoint's): [max_new_tokens=N]"
    "\n    [sample=true] [temperature=1.0] [top_k=K|[3,2]] [top_p=P] [seed=N] [beam_size=5]"
    "\n    [length_penalty=1.0] [min_new_tokens=N] [suppress_unk=true] [no_repeat=true]"
    "\n    [rerank=mmi] [num_candidates=10] [mmi_lambda=0.5] [mmi_first_tokens=N]"
    "\n    (also length=, max_length=, min_length=, greedy=true)"
    "\n  interactive=true: a prompt, one input per line (Ctrl-D or Ctrl-C quits)"
)
DECODING_OPTIONS = DecodingOptions.names()
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
    unknown = set(args) - known - set(DECODING_OPTIONS)
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
    """Decode as the checkpoint does, with `options` changed (ConfigError for a wrong one).
    Draws are fresh every run unless `seed=` is given."""
    if not isinstance(module, DecodingTask):
        if options:
            raise InputError(f"{sorted(options)}: this task does not generate\n{USAGE}")
        return
    module.configure_decoding(**{"seed": None, **options})


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
        options = {key: args[key] for key in args if key in DECODING_OPTIONS}
        configure(module, OmegaConf.to_container(OmegaConf.create(options)))
    except RnnlabError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return answer(args, module, codec)


if __name__ == "__main__":
    sys.exit(main())
