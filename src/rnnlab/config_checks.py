"""Every value a user can type on the command line, checked before anything is built or read.

One table: key pattern -> what the key may hold. `check_config` runs first in `train`, so a typo
such as `model.hidden_size=abc` fails in a second with one line naming the key, instead of after
a download or a long data read (models, optimizers, schedulers and the Trainer are only
built after the data) or as a traceback deep in torch.

Ranges live here for what is checked late or nowhere else (seed, model, optimizer, scheduler,
trainer); the datamodule constructors already check their own ranges before reading anything,
so for `data.*` the table checks only the type (a constructor comparing `"abc" > 0` would give a
traceback).
"""

from __future__ import annotations

import codecs
import math
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from fnmatch import fnmatchcase
from typing import Any

from omegaconf import DictConfig, OmegaConf

from rnnlab.data.shards import require_streaming
from rnnlab.errors import require
from rnnlab.models.classifier import POOLINGS
from rnnlab.models.decoding import DecodingOptions
from rnnlab.models.output_layer import OUTPUT_LAYERS
from rnnlab.models.rnn import CELLS

_ASCII = bytes(range(128))  # text readers split on b"\n": an encoding must keep ASCII as is


@dataclass(frozen=True)
class Rule:
    """What a key may hold: `text` tells the user, `allows` checks a value."""

    text: str
    allows: Callable[[Any], bool]


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def integer(
    low: int | None = None,
    high: int | None = None,
    *,
    also: tuple[int, ...] = (),
    null: bool = False,
) -> Rule:
    """An int (not a bool, not 3.0) in [low, high], or one of `also`, or None with `null`."""
    if low is not None and high is not None:
        text = f"an integer in [{low}, {high}]"
    elif low == 1:
        text = "a positive integer"
    elif low is not None:
        text = f"an integer >= {low}"
    else:
        text = "an integer"
    text += "".join(f" or {value}" for value in also) + (" or null" if null else "")

    def allows(value: Any) -> bool:
        if value is None:
            return null
        if not _is_int(value):
            return False
        return value in also or ((low is None or value >= low) and (high is None or value <= high))

    return Rule(text, allows)


def number(
    low: float | None = None,
    high: float | None = None,
    *,
    low_open: bool = False,
    high_open: bool = False,
    null: bool = False,
) -> Rule:
    """A finite int or float within the bounds (open or closed), or None with `null`."""
    if low is not None and high is not None:
        text = f"a number in {'(' if low_open else '['}{low}, {high}{')' if high_open else ']'}"
    elif low is not None:
        text = f"a number {'>' if low_open else '>='} {low}"
    else:
        text = "a number"
    text += " or null" if null else ""

    def allows(value: Any) -> bool:
        if value is None:
            return null
        if not _is_number(value):
            return False
        above = low is None or (value > low if low_open else value >= low)
        below = high is None or (value < high if high_open else value <= high)
        return above and below

    return Rule(text, allows)


def choice(*values: str) -> Rule:
    """One of `values`."""
    return Rule(f"one of {', '.join(values)}", lambda value: value in values)


def _ascii_compatible_codec(value: Any) -> bool:
    if not isinstance(value, str):
        return False
    try:
        return _ASCII.decode(codecs.lookup(value).name) == _ASCII.decode("ascii")
    except (LookupError, UnicodeError):
        return False


TEXT_ENCODING = Rule(
    "a text encoding Python knows that keeps ASCII as is (utf-8, latin-1, cp1252, ...)",
    _ascii_compatible_codec,
)

CHECKPOINT_PATH = Rule(
    "the path of a .ckpt file or null",
    lambda value: value is None or (isinstance(value, str) and value != ""),
)

# First matching pattern wins (fnmatch: `*` matches any run of characters, dots included).
RULES: tuple[tuple[str, Rule], ...] = (
    ("seed", integer(0, 2**32 - 1)),  # what Lightning's seed_everything accepts
    ("*.seed", integer(0, null=True)),
    # model: its constructor checks run after the data is read
    ("model.hidden_size", integer(1)),
    ("model.embedding_dim", integer(1)),
    ("model.num_layers", integer(1)),
    ("model.dropout", number(0, 1, high_open=True)),
    ("model.teacher_forcing", number(0, 1)),
    ("model.*_size", integer(1, null=True)),
    ("model.cell", choice(*CELLS)),
    ("model.output_layer", choice(*OUTPUT_LAYERS)),
    ("model.pooling", choice(*POOLINGS)),
    ("model.num_sampled", integer(1)),
    ("model.init_from", CHECKPOINT_PATH),
    # module: fine-tuning by layer groups (rnnlab.tasks.fine_tuning)
    ("module.freeze_epochs", integer(0)),
    ("module.layer_lr_decay", number(0, 1, low_open=True)),
    # optimizer and scheduler: torch checks these only when training starts
    ("optimizer.lr", number(0, low_open=True)),
    ("optimizer.weight_decay", number(0)),
    ("optimizer.momentum", number(0, 1)),
    ("optimizer.eps", number(0, low_open=True)),
    ("scheduler.T_max", integer(1)),
    ("scheduler.eta_min", number(0)),
    ("scheduler.factor", number(0, 1, low_open=True, high_open=True)),
    ("scheduler.patience", integer(0)),
    ("scheduler.total_steps", integer(1, null=True)),
    ("scheduler.cut_frac", number(0, 1, low_open=True, high_open=True)),
    ("scheduler.ratio", number(1)),
    # trainer: Lightning runs max_epochs=0 as "nothing to do" and reports success
    ("trainer.max_epochs", integer(1, also=(-1,), null=True)),
    ("trainer.min_epochs", integer(0, null=True)),
    ("trainer.max_steps", integer(1, also=(-1,))),
    ("trainer.min_steps", integer(0, null=True)),
    ("trainer.gradient_clip_val", number(0, null=True)),
    ("trainer.log_every_n_steps", integer(1)),
    ("trainer.num_sanity_val_steps", integer(-1)),
    ("trainer.accumulate_grad_batches", integer(1)),
    ("trainer.check_val_every_n_epoch", integer(1, null=True)),
    ("trainer.val_check_interval", number(0, low_open=True, null=True)),
    ("trainer.limit_*_batches", number(0, null=True)),
    ("trainer.num_nodes", integer(1)),
    # data: types only (see the module docstring), except what no constructor checks
    ("data.encoding", TEXT_ENCODING),
    ("data.eval_batch_size", integer(1, null=True)),
    ("data.*_column", integer(0)),
    ("data.*_fraction", number()),
    ("data.max_length_ratio", number(null=True)),
    ("data.*_size", integer(null=True)),  # batch, train/val/test and vocabulary sizes
    ("data.max_*", integer(null=True)),  # max_length, max_pairs, max_vocab, max_answer_length...
    ("data.min_*", integer()),
    ("data.sample_length", integer()),
    ("data.keep_last_tokens", integer()),
    ("data.length", integer()),
    ("data.seq_len", integer()),
    ("data.digits", integer()),
    ("data.num_workers", integer()),
    ("data.bucket_batches", integer(null=True)),
    ("data.streaming", Rule("true or false", lambda value: isinstance(value, bool))),
    ("data.backward", Rule("true or false", lambda value: isinstance(value, bool))),
    ("data.vocab_pairs", integer(1, null=True)),
    ("data.vocab_tokens", integer(1, null=True)),
    ("data.first_tokens", integer(1, null=True)),
    ("data.shard_workers", integer(0, null=True)),
)

# Tasks whose datamodule reads pre-tokenized shards with data.streaming=true (#18).
STREAMING_TASKS = (
    "rnnlab.data.translate.TranslationData",
    "rnnlab.data.chat.ChatData",
    "rnnlab.data.book.BookData",
)


def rule_for(key: str) -> Rule | None:
    """The rule of the first pattern that matches `key` (None: the key is not checked here)."""
    return next((rule for pattern, rule in RULES if fnmatchcase(key, pattern)), None)


def flat_items(node: Mapping[str, Any], prefix: str = "") -> Iterator[tuple[str, Any]]:
    """(dotted key, value) for every leaf of a nested dict: `{"a": {"b": 1}}` -> ("a.b", 1)."""
    for key, value in node.items():
        path = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(value, Mapping):
            yield from flat_items(value, path)
        else:
            yield path, value


def check_config(cfg: DictConfig) -> None:
    """Raise ConfigError naming the first key whose value its rule does not allow; the
    `decoding:` node is checked by building it (`DecodingOptions` validates itself)."""
    for key, _ in flat_items(OmegaConf.to_container(cfg, resolve=False)):
        rule = rule_for(key)
        if rule is not None:
            value = OmegaConf.select(cfg, key)
            require(rule.allows(value), key, f"must be {rule.text}, got {value!r}")
    # Gradual unfreezing is for pretrained layers (so experiment=sentiment_transfer needs its LM).
    freeze_epochs = OmegaConf.select(cfg, "module.freeze_epochs")
    require(
        not freeze_epochs or OmegaConf.select(cfg, "model.init_from") is not None,
        "model.init_from",
        f"module.freeze_epochs={freeze_epochs} unfreezes pretrained layers: give a word-level "
        "language model, model.init_from=<its run>/checkpoints/best.ckpt (README), or set "
        "module.freeze_epochs=0",
    )
    if OmegaConf.select(cfg, "data.streaming") is True:
        target = OmegaConf.select(cfg, "data._target_")
        require(
            target in STREAMING_TASKS,
            "data.streaming",
            f"streaming shards are for task=translate, chat and book, not {target}",
        )
        require_streaming()  # the one-line error naming the install command
    # Lightning clips mixed-precision gradients itself and refuses optimizers that unscale
    # them (fused ones): say so before training rather than at the first step.
    precision = str(OmegaConf.select(cfg, "trainer.precision", default="32-true"))
    require(
        not (
            OmegaConf.select(cfg, "optimizer.fused")
            and "mixed" in precision
            and OmegaConf.select(cfg, "trainer.gradient_clip_val")
        ),
        "optimizer.fused",
        f"a fused optimizer cannot have its gradients clipped under trainer.precision={precision}: "
        "set optimizer.fused=false (or trainer.gradient_clip_val=null)",
    )
    if cfg.get("decoding") is not None:
        DecodingOptions().replace(**OmegaConf.to_container(cfg.decoding, resolve=True))
