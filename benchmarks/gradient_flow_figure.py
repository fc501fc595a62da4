"""The README figure: gradient flow over time on 50-bit parity, plain RNN next to LSTM.

For each cell, the default parity config (h64, training lengths 1..50) is measured at
initialisation and after `--steps` training steps: ‖∂loss/∂h_t‖ for t = 1..50 on one validation
batch (every string has the full 50 bits, the label is read after the last one), with the same
function the `callbacks.gradient_flow` callback uses. Prints the first/last ratios and writes
the PNG.

    python benchmarks/gradient_flow_figure.py [--steps 1200] [--output docs/gradient_flow_rnn_vs_lstm.png]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import torch
from _common import QUIET, compose_config, here

from rnnlab.builder import build
from rnnlab.callbacks.gradient_flow import first_last_ratio, plot_gradient_flow, step_gradient_norms
from rnnlab.train import train

CELLS = ("rnn", "lstm")


def overrides(cell: str, steps: int) -> list[str]:
    return [
        *QUIET,
        "task=parity",
        f"cell={cell}",
        "logger=none",
        "callbacks.model_checkpoint=null",
        "callbacks.early_stopping=null",
        "test=false",
        "diagnosis.enabled=false",
        f"++trainer.max_steps={steps}",
        "trainer.max_epochs=1000",  # max_steps decides
        "++trainer.limit_val_batches=4",
    ]


def measure(cell: str, steps: int) -> dict:
    """Gradient norms per step at initialisation and after training, and the accuracy reached."""
    cfg = compose_config(*overrides(cell, steps), output_dir=tempfile.mkdtemp())
    torch.manual_seed(cfg.seed)
    datamodule, module = build(cfg)
    batch = next(iter(datamodule.val_dataloader()))
    before = step_gradient_norms(module, batch)
    _, objects = train(cfg)
    module = objects["module"].eval()
    after = step_gradient_norms(module, batch)
    with torch.no_grad():
        predictions = module.model_step(batch)["logits"].argmax(-1)
    accuracy = float((predictions == batch["targets"]).float().mean())
    return {"before": before, "after": after, "accuracy": accuracy}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--steps", type=int, default=1200, help="training steps per cell")
    parser.add_argument(
        "--output", default=str(here().parent / "docs" / "gradient_flow_rnn_vs_lstm.png")
    )
    args = parser.parse_args()
    torch.set_num_threads(1)
    results = {cell: measure(cell, args.steps) for cell in CELLS}

    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    figure = Figure(figsize=(10, 4), dpi=100)
    panels = figure.subplots(1, len(CELLS), sharey=True)
    for axes, cell in zip(panels, CELLS):
        result = results[cell]
        for when, style in (("before", "--"), ("after", "-")):
            label = "at initialisation" if when == "before" else f"after {args.steps} steps"
            norms = result[when]
            # Relative to the last step, where the loss is read: how much of it reaches step t.
            plot_gradient_flow(
                axes, norms / norms[-1], f"{label}: first/last {first_last_ratio(norms):.0e}"
            )
            axes.lines[-1].set_linestyle(style)
        axes.set_title(f"cell={cell}  (accuracy after training: {result['accuracy']:.2f})")
        axes.legend(fontsize=8, loc="lower right")
    panels[0].set_ylabel("‖∂loss/∂h_t‖ / ‖∂loss/∂h_50‖")
    panels[1].set_ylabel("")
    figure.suptitle("Gradient flow over time on 50-bit parity (the label is read after step 50)")
    figure.tight_layout()
    output = Path(args.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(output)

    print("\n50-bit parity, h64, one validation batch: ‖∂loss/∂h_1‖ / ‖∂loss/∂h_50‖")
    print(f"{'cell':>5} {'at init':>10} {'trained':>10} {'accuracy':>9}")
    for cell in CELLS:
        result = results[cell]
        print(
            f"{cell:>5} {first_last_ratio(result['before']):10.2e} "
            f"{first_last_ratio(result['after']):10.2e} {result['accuracy']:9.3f}"
        )
    print(f"wrote {output}")


if __name__ == "__main__":
    main()
