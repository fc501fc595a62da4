"""Readable predictions from a checkpoint: `python -m rnnlab.predict ckpt_path=... text="535+61"`.

Without `text=`, reads stdin and writes exactly one line per input line, in order, so it pipes:
`python -m rnnlab.predict ckpt_path=... < questions.txt > answers.txt`. A line that cannot be
encoded gets `!error: <reason>` in its place (and the exit code is 1).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

import torch
from omegaconf import OmegaConf

from rnnlab.data.base import TaskDataModule
from rnnlab.errors import InputError, RnnlabError
from rnnlab.tasks.base import TaskModule

USAGE = "usage: python -m rnnlab.predict ckpt_path=<file.ckpt> [text=<input>] [batch_size=256]"


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


def main(argv: Sequence[str] | None = None) -> int:
    from rnnlab.builder import load_checkpoint

    args = OmegaConf.from_cli(list(sys.argv[1:] if argv is None else argv))
    unknown = set(args) - {"ckpt_path", "text", "batch_size", "device"}
    if "ckpt_path" not in args or unknown:
        print(f"error: unknown option(s) {sorted(unknown)}\n{USAGE}" if unknown else USAGE, file=sys.stderr)
        return 2
    try:
        _, datamodule, module = load_checkpoint(args.ckpt_path, map_location=args.get("device", "cpu"))
    except RnnlabError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    batch_size = int(args.get("batch_size", 256))
    if "text" in args:
        (answer,) = predict_texts(module, datamodule, [str(args.text)], batch_size)
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
