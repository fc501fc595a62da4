"""Test BLEU of the default translate config after N minutes of training on the shared spa.txt.

Trains `python -m rnnlab task=translate data.corpus=files data.path=<spa.txt>` with
`trainer.max_time` = N minutes (validating every half epoch, so a short run still picks a best
checkpoint), then scores that checkpoint on the test split: greedy (as trained) and with beam
search. Extra arguments are config overrides (e.g. `size=small`).

    python benchmarks/translate_bleu.py --minutes 10 [--beam 5] [--data spa.txt] [--threads N]
        [key=value ...]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import lightning.pytorch as pl
from _common import compose_config, here
from omegaconf import open_dict

SPA_TXT = here().parents[1] / "shared" / "data" / "translate" / "spa-eng" / "spa.txt"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--minutes", type=float, required=True)
    parser.add_argument("--data", default=str(SPA_TXT))
    parser.add_argument("--beam", type=int, default=5)
    parser.add_argument("--output", default=None, help="run dir (default outputs/benchmarks/...)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: its default)")
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args()
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    if not Path(args.data).is_file():
        raise SystemExit(f"no corpus at {args.data}: pass --data <spa.txt>")
    output = args.output or str(
        here().parent
        / "outputs"
        / "benchmarks"
        / f"translate_bleu-{time.strftime('%Y%m%d-%H%M%S')}"
    )
    cfg = compose_config(
        "accelerator=cpu",
        "callbacks.progress_bar=null",
        "trainer.enable_progress_bar=false",
        "task=translate",
        "data.corpus=files",
        f"data.path={args.data}",
        "trainer.max_epochs=1000",
        "+trainer.val_check_interval=0.5",
        *args.overrides,
        output_dir=output,
    )
    seconds = int(args.minutes * 60)
    with open_dict(cfg):
        cfg.trainer.max_time = (
            f"00:{seconds // 3600:02d}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"
        )

    from rnnlab.builder import load_checkpoint
    from rnnlab.train import train

    start = time.perf_counter()
    metrics, objects = train(cfg)
    trained = time.perf_counter() - start
    trainer = objects["trainer"]
    best = trainer.checkpoint_callback.best_model_path if trainer.checkpoint_callback else ""
    bleu = objects["module"].metrics["test"]["bleu"]
    epochs = trainer.global_step / max(1, trainer.num_training_batches)
    print(f"trained {trainer.global_step} batches ({epochs:.2f} epochs),")
    print(f"  {trained / 60:.1f} min including validation and the greedy test; output in {output}")
    print(
        f"best val/bleu {metrics.get('val/bleu_best', float('nan')):.2f} ({best or 'no checkpoint'})"
    )
    print(f"test BLEU (greedy): {metrics['test/bleu']:.2f}  chrF {metrics['test/chrf']:.2f}")
    if best and args.beam > 1:
        _, datamodule, module = load_checkpoint(best)
        module.configure_decoding(beam_size=args.beam, length_penalty=module.length_penalty)
        tester = pl.Trainer(
            accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False
        )
        beam = tester.test(module, datamodule=datamodule, verbose=False)[0]
        print(
            f"test BLEU (beam {args.beam}): {beam['test/bleu']:.2f}  chrF {beam['test/chrf']:.2f}"
        )
    print(f"sacreBLEU signature: {bleu.metric.get_signature()}")


if __name__ == "__main__":
    main()
