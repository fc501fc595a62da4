"""Talk to a chatbot checkpoint: `python -m rnnlab.chat ckpt_path=<run>/checkpoints/last.ckpt`.

A prompt that replies to each line you type until Ctrl-D or Ctrl-C; the same as
`python -m rnnlab.predict ckpt_path=... interactive=true`, and it takes the same decoding options
(`top_k=[3,2]`, `temperature=0.8`, `sample=false beam_size=5`, `seed=1`, ...).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from rnnlab import predict


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not any(arg.startswith("interactive=") for arg in args):
        args.append("interactive=true")
    return predict.main(args)


if __name__ == "__main__":
    sys.exit(main())
