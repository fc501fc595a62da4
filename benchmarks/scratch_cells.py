"""Speed of the from-scratch cells against the fused modules: forward + backward.

The parity classifier (embedding 8, hidden 64) on one parity-sized training batch: 256 strings
of lengths 1..50, packed, cross-entropy on the final state, backward. Fused and scratch models
hold the same weights and alternate in one process; the figure is the median time of each and
their ratio (scratch / fused), per cell.

    python benchmarks/scratch_cells.py [--repeats 20] [--cells lstm gru rnn] [--threads 1]
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F
from _common import median

from rnnlab.models.classifier import RNNClassifier


def step_seconds(model: RNNClassifier, batch: dict[str, torch.Tensor]) -> float:
    """One forward + backward pass, timed."""
    model.zero_grad(set_to_none=True)
    start = time.perf_counter()
    loss = F.cross_entropy(model(batch["inputs"], batch["lengths"]), batch["targets"])
    loss.backward()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--cells", nargs="+", default=["lstm", "gru", "rnn"])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--length", type=int, default=50)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    lengths = torch.randint(1, args.length + 1, (args.batch_size,))
    bits = torch.randint(0, 2, (args.batch_size, args.length))
    mask = torch.arange(args.length)[None] < lengths[:, None]
    batch = {
        "inputs": torch.where(mask, bits + 1, 0),
        "lengths": lengths,
        "targets": (bits * mask).sum(1) % 2,
    }
    print(
        f"parity classifier h64, batch {args.batch_size}, lengths 1..{args.length} (packed), "
        f"forward + backward, {args.threads} thread(s), median of {args.repeats}"
    )
    print(f"{'cell':>5} {'fused ms':>9} {'scratch ms':>11} {'ratio':>6}")
    for cell in args.cells:
        common = dict(vocab_size=3, embedding_dim=8, hidden_size=64)
        fused = RNNClassifier(2, cell=cell, **common)
        scratch = RNNClassifier(2, cell=f"{cell}_scratch", **common)
        scratch.load_state_dict(fused.state_dict())
        times: dict[str, list[float]] = {"fused": [], "scratch": []}
        for model in (fused, scratch):  # warm-up
            step_seconds(model, batch)
        for repeat in range(args.repeats):
            order = ("fused", "scratch") if repeat % 2 == 0 else ("scratch", "fused")
            for kind in order:
                times[kind].append(step_seconds(fused if kind == "fused" else scratch, batch))
        fused_s, scratch_s = median(times["fused"]), median(times["scratch"])
        print(
            f"{cell:>5} {1000 * fused_s:9.1f} {1000 * scratch_s:11.1f} {scratch_s / fused_s:6.2f}"
        )


if __name__ == "__main__":
    main()
