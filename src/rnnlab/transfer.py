"""Start a model from a word-level language model (ULMFiT, Howard & Ruder 2018): `model.init_from`.

`init_from_language_model` runs once, in `rnnlab.builder.build`, for a fresh run (a checkpoint
being loaded or resumed has weights of its own). The LM checkpoint is read as data
(`read_checkpoint`: weights_only, its stored config checked) and nothing of its config is built:
the vocabulary comes from its stored codec state (`restore_codec`, as predict reads it), the
tensors from its state_dict, the cell type and sizes from the tensors' shapes.

- Embedding: every word of the model's vocabulary that the LM knows gets the LM's row, `<unk>`
  the LM's `<unk>` row; new words start from the mean of the LM's rows (as ULMFiT does: a
  fresh N(0, 1) row is far larger than a trained one) and `<pad>` keeps its zero row.
- Recurrent layers: from the bottom, as many as match in shape (a deeper model keeps fresh
  layers on top; a bidirectional one gets the LM's weights in its forward direction). A
  different cell type, embedding size or hidden size is one ConfigError naming model.init_from
  and the keys to set.
- The head stays new; fine-tune it with `module.freeze_epochs` and `module.layer_lr_decay`
  (`rnnlab.tasks.fine_tuning`). A language model started from one (ULMFiT's second stage,
  `experiment=lm_on_sentiment`) also gets the LM's output rows of the words it knows (`out`:
  bias, and the weight unless tied to the embedding).

Words are compared after `match_key`: lowercased, and the typographic apostrophe of Gutenberg's
newer books (’) read as '. The book tokenizer keeps "didn't" one token with either apostrophe,
the sentiment tokenizer with a straight one; both split punctuation off, one mark per token.
A cased LM offers its most frequent spelling of a word (its ids are sorted by frequency).
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from omegaconf import OmegaConf
from torch import Tensor, nn

from rnnlab.checkpoints import CONFIG_KEY, read_checkpoint
from rnnlab.codecs.base import Codec
from rnnlab.data.vocab import Vocab
from rnnlab.errors import require
from rnnlab.models.language_model import RNNLanguageModel
from rnnlab.models.rnn import EmbeddedRNN, cell_kind

log = logging.getLogger(__name__)

KEY = "model.init_from"
GATES_TO_CELL = {1: "rnn", 3: "gru", 4: "lstm"}  # weight blocks per layer -> cell type


@dataclass(frozen=True)
class Transfer:
    """What came from the LM: words (specials not counted) and recurrent layers."""

    words_from_lm: int
    words_new: int
    layers: int
    output_layer: bool = False  # the LM's output rows too (a language model started from one)


def match_key(token: str) -> str:
    """The form two vocabularies are compared in: "Didn’t" -> "didn't"."""
    return token.lower().replace("’", "'")


def read_language_model(
    path: str | os.PathLike, *, backward: bool = False
) -> tuple[list[str], dict[str, Tensor]]:
    """(the LM's tokens by id, its net's tensors without the `net.` prefix) from a checkpoint;
    CheckpointError for an unreadable or untrusted file, ConfigError for one that holds no
    word-level language model or one that reads the other way than `backward` says."""
    from rnnlab.builder import restore_codec  # here: the builder imports this module

    checkpoint = read_checkpoint(path)
    weights = {
        name.removeprefix("net."): tensor for name, tensor in checkpoint["state_dict"].items()
    }
    require(
        "embedding.weight" in weights and "rnn.weight_hh_l0" in weights,
        KEY,
        f"{path} holds no language model (no net.embedding and net.rnn weights): give a "
        "checkpoint of task=book data.level=word",
    )
    codec = restore_codec(OmegaConf.create(checkpoint[CONFIG_KEY]), checkpoint)
    level = getattr(codec, "level", None)
    require(
        level == "word",
        KEY,
        f"{path} is a {level or 'non-word'}-level language model: its tokens are not words; "
        "train one with data.level=word",
    )
    lm_backward = bool(getattr(codec, "backward", False))
    require(
        lm_backward == backward,
        KEY,
        f"{path} reads {'right to left' if lm_backward else 'left to right'}, and this model "
        f"the other way: set data.backward={str(lm_backward).lower()} (both directions of a "
        "pair must match)",
    )
    return codec.vocab.itos, weights


def map_rows(vocab: Vocab, lm_tokens: Sequence[str]) -> dict[int, int]:
    """Model row -> LM row for every token of `vocab` but `<pad>` that the LM knows."""
    lm_rows: dict[str, int] = {}
    for row, token in enumerate(lm_tokens):
        lm_rows.setdefault(match_key(token), row)  # the first spelling is the most frequent
    return {
        row: lm_rows[match_key(token)]
        for row, token in enumerate(vocab.itos)
        if row != vocab.pad_id and match_key(token) in lm_rows
    }


def _check_sizes(net: nn.Module, weights: dict[str, Tensor], source: str) -> None:
    """One ConfigError listing every key in which the model differs from the LM."""
    hidden = weights["rnn.weight_hh_l0"].shape[1]
    lm = {
        "model.cell": GATES_TO_CELL.get(weights["rnn.weight_hh_l0"].shape[0] // hidden),
        "model.embedding_dim": weights["embedding.weight"].shape[1],
        "model.hidden_size": hidden,
    }
    require(
        isinstance(net, EmbeddedRNN) and isinstance(net.input_embedding, nn.Embedding),
        KEY,
        f"needs a model that reads words through an embedding and an rnn; "
        f"{type(net).__name__} does not",
    )
    ours = {
        "model.cell": cell_kind(net.rnn),
        "model.embedding_dim": net.input_embedding.embedding_dim,
        "model.hidden_size": net.rnn.hidden_size,
    }
    differ = [key for key in lm if lm[key] != ours[key]]
    require(
        not differ,
        KEY,
        f"{source} does not fit this model: "
        + ", ".join(f"{key} is {lm[key]} there and {ours[key]} here" for key in differ)
        + "; set "
        + " ".join(f"{key}={lm[key]}" for key in differ),
    )


def _copy_layers(rnn: nn.Module, weights: dict[str, Tensor]) -> int:
    """Copy the LM's recurrent layers from the bottom while their shapes match; -> how many."""
    ours = rnn.state_dict()  # shares storage with the parameters
    theirs = [name.removeprefix("rnn.") for name in weights if name.startswith("rnn.")]
    for layer in range(rnn.num_layers):
        names = [name for name in theirs if re.search(rf"_l{layer}$", name)]
        if not names or any(
            name not in ours or ours[name].shape != weights[f"rnn.{name}"].shape for name in names
        ):
            return layer
        for name in names:
            ours[name].copy_(weights[f"rnn.{name}"])
    return rnn.num_layers


def _copy_output_rows(net: nn.Module, weights: dict[str, Tensor], rows: dict[int, int]) -> bool:
    """A language model's vocabulary layer `out` (V, H) gets the LM's rows of the words both
    know (its weight only when not tied to the embedding, which is copied already); -> whether
    it had one to fill."""
    out = net.output_layer if isinstance(net, RNNLanguageModel) else None
    if not isinstance(out, nn.Linear) or "out.bias" not in weights or not rows:
        return False
    if weights.get("out.weight", weights["embedding.weight"]).shape[1] != out.in_features:
        return False
    ours, theirs = list(rows), list(rows.values())
    out.bias[ours] = weights["out.bias"][theirs].to(out.bias)
    if "out.weight" in weights and out.weight is not net.input_embedding.weight:
        out.weight[ours] = weights["out.weight"][theirs].to(out.weight)
    return True


@torch.no_grad()
def load_language_model(
    net: nn.Module, vocab: Vocab, lm_tokens: Sequence[str], weights: dict[str, Tensor], source: str
) -> Transfer:
    """Copy the LM's embedding rows (matched word by word) and recurrent layers into `net`.

    weights: "embedding.weight" (V_lm, E) and "rnn.*" of a unidirectional RNN; `net` has an
    nn.Embedding (V, E) and an `rnn` of the same cell type and sizes."""
    _check_sizes(net, weights, source)
    rows = map_rows(vocab, lm_tokens)
    embedding = net.input_embedding.weight
    lm_embedding = weights["embedding.weight"].to(embedding)
    new_rows = [row for row in range(len(vocab)) if row not in rows and row != vocab.pad_id]
    embedding[new_rows] = lm_embedding.mean(0)
    if rows:
        embedding[list(rows)] = lm_embedding[list(rows.values())]
    layers = _copy_layers(net.rnn, weights)
    output_layer = _copy_output_rows(net, weights, rows)
    specials = set(vocab.specials)
    words = sum(token not in specials for token in vocab.itos)
    known = sum(vocab.itos[row] not in specials for row in rows)
    log.info(
        "init_from: %s of %s words from the LM, %s new (the LM's mean row); embedding%s and %d "
        "of %d recurrent layers from %s; %s",
        f"{known:,}",
        f"{words:,}",
        f"{words - known:,}",
        ", output rows" if output_layer else "",
        layers,
        net.rnn.num_layers,
        source,
        "new words' output rows are new" if output_layer else "the head is new",
    )
    return Transfer(
        words_from_lm=known, words_new=words - known, layers=layers, output_layer=output_layer
    )


def init_from_language_model(net: nn.Module, codec: Codec, path: str | os.PathLike) -> Transfer:
    """Read the LM checkpoint at `path` and load it into `net`, whose words are the codec's one
    vocabulary (see the module docstring)."""
    vocab = codec.vocabularies().get("tokens")
    require(
        isinstance(vocab, Vocab),
        KEY,
        f"needs a task whose model reads words of one vocabulary; {type(codec).__name__} has none",
    )
    lm_tokens, weights = read_language_model(path, backward=bool(getattr(codec, "backward", False)))
    return load_language_model(net, vocab, lm_tokens, weights, str(path))
