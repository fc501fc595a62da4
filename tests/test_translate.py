"""Translation (task=translate): corpus formats, download, cleaning and splits, bucketed batches,
beam search, BLEU, unknown-word replacement, predict, attention maps; and it learns."""

from __future__ import annotations

import io
import logging
import random
import sys
import zipfile
from pathlib import Path

import pytest
import torch
from conftest import REPO, SHARED_DATA, compose_config, serve, train_run

from rnnlab import evaluate, predict
from rnnlab.data.text import detokenize
from rnnlab.data.translate import BOOK_SENTENCES, TranslationData
from rnnlab.errors import ConfigError, DataError
from rnnlab.inference import load_checkpoint
from rnnlab.models.decoding import DecodingOptions
from rnnlab.models.seq2seq import Seq2Seq

SPA_TXT = SHARED_DATA / "translate" / "spa-eng" / "spa.txt"
PAIRS = [  # (English, Spanish): the manythings column order
    ("Go.", "Ve."),
    ("Go.", "Vete."),
    ("Hi.", "Hola."),
    ("Run!", "¡Corre!"),
    ("Who?", "¿Quién?"),
    ("I'm fine.", "Estoy bien."),
    ("What's your name?", "¿Cómo te llamas?"),
    ("I'm reading a book.", "Estoy leyendo un libro."),
    ("Do you speak Spanish?", "¿Hablas español?"),
    ("What time is it?", "¿Qué hora es?"),
]


@pytest.fixture
def one_thread():
    """Small models train several times faster on one thread when the cores are shared."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def write_tsv(path: Path, pairs=PAIRS) -> Path:
    path.write_text("".join(f"{en}\t{es}\n" for en, es in pairs), encoding="utf-8")
    return path


def write_zip(path: Path, pairs=PAIRS) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("Tatoeba.en-es.es", "".join(f"{es}\n" for _, es in pairs))
        archive.writestr("Tatoeba.en-es.en", "".join(f"{en}\n" for en, _ in pairs))
        archive.writestr("README", "made for a test\n")
    return path


def made_up_corpus(path: Path, count: int, seed: int = 0) -> Path:
    """A 'language' of 16 made-up words, each with its own made-up translation; sentences of 2-5
    words, the targets written as sentences are (a capital, the full stop attached). Learnable
    in seconds, and BLEU near 100 is possible."""
    rng = random.Random(seed)
    words = [a + b for a in ("ka", "lo", "mi", "tu") for b in ("zu", "bi", "go", "da")]
    lines = set()
    while len(lines) < count:
        sentence = [rng.choice(words) for _ in range(rng.randint(2, 5))]
        target = " ".join(word[::-1] + "x" for word in sentence)
        lines.add(f"{target.capitalize()}.\t{' '.join(sentence)} .")
    path.write_text("\n".join(sorted(lines)) + "\n", encoding="utf-8")
    return path


def data(path, **options) -> TranslationData:
    return TranslationData(path=str(path) if isinstance(path, Path) else path, **options)


# Reading the three formats --------------------------------------------------------------------
def test_tsv_moses_pair_and_opus_zip_give_the_same_pairs(tmp_path):
    tsv = write_tsv(tmp_path / "spa.txt")
    (tmp_path / "x.es").write_text("".join(f"{es}\n" for _, es in PAIRS), encoding="utf-8")
    (tmp_path / "x.en").write_text("".join(f"{en}\n" for en, _ in PAIRS), encoding="utf-8")
    archive = write_zip(tmp_path / "en-es.txt.zip")
    expected = [(es, en) for en, es in PAIRS]
    assert list(data(tsv).read_pairs()) == expected
    assert list(data([str(tmp_path / "x.es"), str(tmp_path / "x.en")]).read_pairs()) == expected
    assert list(data(archive).read_pairs()) == expected
    assert list(data(archive, max_pairs=3).read_pairs()) == expected[:3]


def test_misaligned_moses_files_name_both_files_and_counts(tmp_path):
    (tmp_path / "x.es").write_text("uno\ndos\ntres\n", encoding="utf-8")
    (tmp_path / "x.en").write_text("one\ntwo\n", encoding="utf-8")
    module = data([str(tmp_path / "x.es"), str(tmp_path / "x.en")])
    with pytest.raises(DataError) as error:
        module.setup()
    message = str(error.value)
    assert "x.es has 3 lines" in message and "x.en has 2 lines" in message


def test_non_utf8_file_names_file_and_line(tmp_path):
    path = tmp_path / "spa.txt"
    path.write_bytes(b"Go.\tVe.\nHi.\tHola.\n" + "Yes.\tSí.\n".encode("latin-1"))
    with pytest.raises(DataError, match=r"spa\.txt: line 3 .*not valid utf-8"):
        data(path).setup()


def test_empty_lines_are_skipped_and_counted(tmp_path, caplog):
    path = tmp_path / "spa.txt"
    lines = [f"{en}\t{es}" for en, es in PAIRS]
    path.write_text("\n".join(lines[:3] + ["", "   "] + lines[3:] + [""]) + "\n", encoding="utf-8")
    module = data(path)
    with caplog.at_level(logging.INFO):
        assert len(list(module.read_pairs())) == len(PAIRS)
    assert "skipped 3 empty lines" in caplog.text


def test_missing_file_and_bad_options_are_clear_errors(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        data(tmp_path / "nope.txt").setup()
    with pytest.raises(ConfigError, match=r"data\.path"):
        TranslationData(corpus="files", path=None)
    with pytest.raises(ConfigError, match=r"data\.corpus"):
        TranslationData(corpus="europarl")
    with pytest.raises(ConfigError, match=r"data\.src_vocab_size: byte-level BPE"):
        TranslationData(path="x.tsv", tokenizer="bpe", src_vocab_size=100)


def test_named_corpus_downloads_checks_the_zip_and_reads_it(tmp_path):
    served = tmp_path / "served"
    served.mkdir()
    write_zip(served / "en-es.txt.zip", PAIRS * 3)
    (served / "corrupt.zip").write_bytes(b"PK\x03\x04 this is not really a zip archive")
    cache = tmp_path / "cache"
    with serve(served) as root:
        module = TranslationData(
            corpus="tatoeba", url=f"{root}/en-es.txt.zip", data_dir=str(cache), min_count=1
        )
        module.prepare_data()
        module.setup()
        assert (cache / "tatoeba.en-es.txt.zip").is_file()
        assert len(module.train_set) > 0 and module.stats["duplicates"] == 2 * len(PAIRS)

        broken = TranslationData(
            corpus="opensubtitles", url=f"{root}/corrupt.zip", data_dir=str(cache)
        )
        with pytest.raises(DataError, match="not a valid zip") as error:
            broken.prepare_data()
        assert "data.corpus=files" in str(error.value)
        left = [p.name for p in cache.glob("opensubtitles*")]  # no .part, no cache entry
        assert len(left) == 1 and ".txt.zip.corrupt-" in left[0], left

        missing = TranslationData(
            corpus="opensubtitles", url=f"{root}/gone.zip", data_dir=str(cache)
        )
        with pytest.raises(DataError, match="put it at .*opensubtitles.en-es.txt.zip"):
            missing.prepare_data()


# Cleaning, splits, vocabularies -------------------------------------------------------------------
def test_cleaning_filters_long_and_unbalanced_pairs_and_duplicates(tmp_path, caplog):
    pairs = PAIRS + [
        PAIRS[0],
        ("A b c d e f g h.", "Uno."),
        (" ".join(["x"] * 20), " ".join(["y"] * 20)),
    ]
    module = data(write_tsv(tmp_path / "spa.txt", pairs), max_length=15, max_length_ratio=3)
    with caplog.at_level(logging.WARNING):
        kept = module._clean(module.read_pairs())
    assert module.stats == {
        "read": len(pairs),
        "empty": 0,
        "data.max_length": 1,
        "data.max_length_ratio": 1,
        "duplicates": 1,
        "kept": len(PAIRS),
    }
    assert len(kept) == len(PAIRS)
    assert f"dropped 1 of {len(pairs)} pairs outside data.max_length=15" in caplog.text


def test_splits_are_seeded_and_share_no_source_sentence(tmp_path):
    spa = made_up_corpus(tmp_path / "made_up.tsv", 600)
    # Several translations of one source sentence: they must all land in one split.
    extra = "".join(f"variant{i} .\tkazu kazu kazu kazu kazu kazu .\n" for i in range(5))
    spa.write_text(spa.read_text(encoding="utf-8") + extra, encoding="utf-8")
    module = data(spa, val_fraction=0.1, test_fraction=0.1, seed=3)
    module.setup()
    sources = {
        split: {text for text, _ in module.examples[split]} for split in ("train", "val", "test")
    }
    assert not sources["train"] & sources["val"]
    assert not sources["train"] & sources["test"]
    assert not sources["val"] & sources["test"]
    assert sum(len(s) for s in sources.values()) == 601  # 600 + the one with 5 translations
    repeated = "kazu kazu kazu kazu kazu kazu ."
    where = [split for split, texts in sources.items() if repeated in texts]
    assert len(where) == 1
    if where[0] != "train":  # evaluation splits keep every translation as a reference
        assert len(dict(module.examples[where[0]])[repeated]) == 5
    again = data(spa, val_fraction=0.1, test_fraction=0.1, seed=3)
    again.setup()
    assert again.examples["test"] == module.examples["test"]
    other = data(spa, val_fraction=0.1, test_fraction=0.1, seed=4)
    other.setup()
    assert other.examples["test"] != module.examples["test"]


def test_word_vocab_is_built_from_train_only_with_caps(tmp_path):
    module = data(made_up_corpus(tmp_path / "m.tsv", 300), src_vocab_size=10, min_count=1)
    module.setup()
    assert module.codec.src_vocab.itos[:4] == ["<pad>", "<unk>", "<sos>", "<eos>"]
    assert len(module.codec.src_vocab) == 10 and module.model_kwargs()["src_vocab_size"] == 10


# Batches -------------------------------------------------------------------------------------
def test_bucketed_batches_are_trimmed_near_uniform_and_seeded_by_epoch(tmp_path):
    module = data(made_up_corpus(tmp_path / "m.tsv", 800), batch_size=16, bucket_batches=10)
    module.setup()
    loader = module.train_dataloader()
    sampler = loader.batch_sampler
    batches = list(loader)
    assert len(batches) == len(sampler) == len(loader)
    assert sum(len(b["src_lengths"]) for b in batches) == len(module.train_set)
    spreads = []
    for batch in batches:
        lengths = batch["src_lengths"]
        assert batch["src_tokens"].size(1) == int(lengths.max())  # trimmed to the batch
        assert batch["tgt_tokens"].size(1) == int(batch["tgt_lengths"].max())
        spreads.append(int(lengths.max() - lengths.min()))
    assert sum(spreads) / len(spreads) <= 1.0  # lengths 3..6 tokens: random batches spread ~3
    order = [b.tolist() for b in sampler._batches()]
    sampler.sampler.set_epoch(0)
    assert [b.tolist() for b in sampler._batches()] == order  # same epoch, same batches
    sampler.sampler.set_epoch(1)
    assert [b.tolist() for b in sampler._batches()] != order
    covered = sorted(i for batch in sampler for i in batch)
    assert covered == list(range(len(module.train_set)))


# Decoding ------------------------------------------------------------------------------------
def small_model(**options) -> Seq2Seq:
    torch.manual_seed(0)
    kwargs = dict(pad_id=0, sos_id=2, eos_id=3, max_target_len=10, attention="bahdanau")
    kwargs.update(embedding_dim=16, hidden_size=24, bidirectional=True, **options)
    return Seq2Seq(30, 25, **kwargs).eval()


def source_batch():
    torch.manual_seed(1)
    lengths = torch.tensor([6, 2, 4, 6, 1, 3])
    tokens = torch.randint(4, 30, (6, 6)) * (torch.arange(6) < lengths[:, None])
    return tokens, lengths


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_beam_size_one_is_exactly_greedy(cell):
    model = small_model(cell=cell)
    tokens, lengths = source_batch()
    greedy = model.generate(tokens, lengths)
    beam = model.generate(tokens, lengths, DecodingOptions(beam_size=1))
    assert torch.equal(greedy["tokens"], beam["tokens"])
    is_eos = greedy["tokens"] == 3
    until_eos = (is_eos.cumsum(1) - is_eos.long() == 0)[..., None]  # where beam search stops
    assert torch.allclose(greedy["attention"] * until_eos, beam["attention"])


def test_beam_search_is_batch_independent_and_shaped_like_greedy():
    model = small_model()
    tokens, lengths = source_batch()
    together = model.generate(tokens, lengths, DecodingOptions(beam_size=4))
    assert together["tokens"].shape[0] == 6
    assert together["attention"].shape[:2] == together["tokens"].shape
    assert together["attention"].shape[2] == tokens.shape[1]
    for row in range(6):
        alone = model.generate(
            tokens[row : row + 1, : lengths[row]],
            lengths[row : row + 1],
            DecodingOptions(beam_size=4),
        )
        width = alone["tokens"].shape[1]
        assert torch.equal(together["tokens"][row, :width], alone["tokens"][0])
        assert not together["tokens"][row, width:].any()  # only <pad> after


def test_beam_search_scores_at_least_greedy_and_repeat_decoder_refuses_beams():
    model = small_model()
    tokens, lengths = source_batch()

    def log_prob(output):  # sum of log p of each row's tokens, up to and including <eos>
        out = output["tokens"]
        inputs = torch.cat([torch.full((len(out), 1), 2), out[:, :-1]], 1)
        logits, _ = model(tokens, lengths, inputs)
        scores = logits.log_softmax(-1).gather(2, out[..., None]).squeeze(2)
        after_eos = (out == 3).cumsum(1) - (out == 3).long() > 0
        return scores.masked_fill(after_eos | (out == 0), 0).sum(1)

    with torch.no_grad():
        greedy = log_prob(model.generate(tokens, lengths))
        beam = log_prob(
            model.generate(tokens, lengths, DecodingOptions(beam_size=5, length_penalty=0))
        )
    assert bool((beam >= greedy - 1e-4).all()), (beam, greedy)
    with pytest.raises(ConfigError, match="beam_size"):
        small_model(decoder="repeat").generate(tokens, lengths, DecodingOptions(beam_size=2))


def test_unknown_words_are_replaced_by_the_most_attended_source_word(tmp_path):
    module = data(write_tsv(tmp_path / "spa.txt", PAIRS * 2), min_count=1, truecase=False)
    module.setup()
    codec = module.codec
    batch = codec.encode(["Estoy leyendo Quijote"])  # "quijote" is not in the vocabulary
    unk, eos = codec.tgt_vocab.unk_id, codec.tgt_vocab.eos_id
    reading = codec.tgt_vocab.stoi["reading"]
    tokens = torch.tensor([[reading, unk, eos]])
    attention = torch.tensor([[[0.1, 0.8, 0.1], [0.2, 0.1, 0.7], [0.3, 0.3, 0.4]]])
    output = {"tokens": tokens, "attention": attention}
    assert codec.decode(batch, output) == ["reading quijote"]
    attention[0, 1] = torch.tensor([0.9, 0.05, 0.05])
    assert codec.decode(batch, output) == ["reading estoy"]
    codec.unk_replace = False
    assert codec.decode(batch, output) == ["reading <unk>"]


def test_bleu_and_chrf_match_sacrebleu_over_batches():
    sacrebleu = pytest.importorskip("sacrebleu")
    from rnnlab.metrics import BLEU, ChrF

    hypotheses = ["the cat sat on the mat.", "i am reading a book!", "what's your name?", "go."]
    references = [
        ["the cat is on the mat.", "there is a cat on the mat."],
        ["i'm reading a book."],
        ["what is your name?", "what's your name?", "your name?"],
        ["go away."],
    ]
    streams = [[refs[i] if i < len(refs) else None for refs in references] for i in range(3)]
    for hyps in (hypotheses, ["a b c d.", "x.", "y z.", "go."]):  # the second has no 4-gram match
        bleu, chrf = BLEU(), ChrF()
        for start in (0, 1, 3):  # batches of 1, 2, 1 sentences
            end = {0: 1, 1: 3, 3: 4}[start]
            bleu.update(hyps[start:end], references[start:end])
            chrf.update(hyps[start:end], references[start:end])
        expected = sacrebleu.corpus_bleu(hyps, streams).score
        assert float(bleu.compute()) == pytest.approx(expected, abs=1e-4)
        expected = sacrebleu.corpus_chrf(hyps, streams).score
        assert float(chrf.compute()) == pytest.approx(expected, abs=1e-4)


# Configs -------------------------------------------------------------------------------------
def test_translate_configs_compose_and_sizes_grow():
    sys.path.insert(0, str(REPO / "benchmarks"))
    from model_sizes import SIZES, parameter_count

    cfg = compose_config("task=translate")
    assert (cfg.task_name, cfg.monitor, cfg.mode) == ("translate", "val/bleu", "max")
    assert cfg.model.attention == "bahdanau" and cfg.model.bidirectional
    assert "attention_maps" in cfg.callbacks
    book = compose_config("experiment=book_translate")
    assert (book.model.cell, book.model.hidden_size, book.model.embedding_dim) == ("lstm", 512, 100)
    assert book.data.max_length == 15
    counts = [parameter_count("translate", size) for size in SIZES]
    assert counts == sorted(counts) and len(set(counts)) == len(counts), counts


# Training, checkpoints, predict -----------------------------------------------------------------
QUIET_RUN = ["callbacks.samples=null", "callbacks.early_stopping=null"]


@pytest.fixture(scope="module")
def made_up_run(tmp_path_factory):
    """A tiny model trained once on the made-up language: (metrics, output_dir)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        root = tmp_path_factory.mktemp("translate")
        corpus = made_up_corpus(root / "made_up.tsv", 800)
        metrics, _ = train_run(
            root / "run",
            "task=translate",
            "size=tiny",
            "data.corpus=files",
            f"data.path={corpus}",
            "data.min_count=1",
            "data.val_fraction=0.1",
            "data.test_fraction=0.1",
            "data.batch_size=32",
            "module.label_smoothing=0.0",
            "optimizer.lr=1e-2",
            "trainer.max_epochs=6",
            "callbacks.samples=null",
        )
    finally:
        torch.set_num_threads(threads)
    return metrics, root / "run"


@pytest.mark.slow
def test_made_up_language_is_learned_to_high_bleu(made_up_run):
    metrics, _ = made_up_run
    assert metrics["test/bleu"] >= 80, metrics
    assert metrics["test/chrf"] >= 85 and metrics["test/ppl"] < 1.5, metrics
    assert metrics["val/bleu_best"] >= 80, metrics


@pytest.mark.slow
def test_a_lowercase_model_writes_cased_text_and_bleu_sees_case(made_up_run, tmp_path):
    """The corpus is cased; the model is lowercase; its truecaser gives the output its case, and
    BLEU (against the references as written) drops when that case is taken away."""
    from rnnlab.inference import load_checkpoint as load
    from rnnlab.inference import predict_texts
    from rnnlab.metrics import BLEU

    metrics, run = made_up_run
    corpus = made_up_corpus(tmp_path / "held_out.tsv", 60, seed=7)
    pairs = [line.split("\t") for line in corpus.read_text(encoding="utf-8").splitlines()]
    _, codec, module = load(run / "checkpoints" / "best.ckpt")
    hypotheses = predict_texts(module, codec, [source for _, source in pairs])
    assert sum(h[:1].isupper() and h.endswith(".") for h in hypotheses) >= 55, hypotheses[:5]
    references = [[target] for target, _ in pairs]

    def bleu(texts):
        metric = BLEU()
        metric.update(texts, references)
        return float(metric.compute())

    assert bleu(hypotheses) >= 80 and bleu([h.lower() for h in hypotheses]) < bleu(hypotheses) - 10
    assert metrics["test/bleu_lc"] >= metrics["test/bleu"]


@pytest.mark.slow
def test_checkpoint_translates_and_draws_attention_maps(made_up_run, capsys, monkeypatch, caplog):
    _, run = made_up_run
    ckpt = run / "checkpoints" / "best.ckpt"  # the model the test metrics were measured on
    _, codec, module = load_checkpoint(ckpt)  # no data is read
    assert codec.word_level and codec.max_source_len is not None
    assert predict.main([f"ckpt_path={ckpt}", "text=kazu mibi lozu ."]) == 0
    assert capsys.readouterr().out.strip() == "Uzakx ibimx uzolx."
    assert predict.main([f"ckpt_path={ckpt}", "text=kazu mibi lozu .", "beam_size=3"]) == 0
    assert capsys.readouterr().out.strip() == "Uzakx ibimx uzolx."

    lines = ["tuda kago .", "", "qwerty asdf", "lozu " * 40]
    monkeypatch.setattr("sys.stdin", io.StringIO("\n".join(lines) + "\n"))
    with caplog.at_level(logging.WARNING):
        assert predict.main([f"ckpt_path={ckpt}"]) == 1
    out = capsys.readouterr().out.split("\n")[:-1]
    assert out[0] == "Adutx ogakx." and len(out) == 4
    assert out[1].startswith("!error: empty sentence")
    assert out[2].startswith("!error: no word of 'qwerty asdf'")
    assert out[3].startswith("Uzolx") and "translating the first" in caplog.text

    monkeypatch.setattr("sys.stdin", io.StringIO("kazu .\n\nmibi .\n"))
    assert predict.main([f"ckpt_path={ckpt}", "interactive=true"]) == 0
    assert capsys.readouterr().out.split("> ")[1:] == ["Uzakx.\n", "", "Ibimx.\n", ""]
    assert predict.main([f"ckpt_path={ckpt}", "text=kazu", "beam_size=0"]) == 2
    assert "beam_size" in capsys.readouterr().err

    # A user's own test file (same TSV format) scored with the checkpoint's vocabulary.
    user_file = made_up_corpus(run.parent / "user_test.tsv", 40, seed=9)
    assert evaluate.main([f"ckpt_path={ckpt}", f"data.path={user_file}", "accelerator=cpu"]) == 0
    scores = dict(line.split(": ") for line in capsys.readouterr().out.strip().split("\n"))
    assert {"test/bleu", "test/chrf", "test/ppl", "test/token_acc"} <= set(scores)
    assert float(scores["test/bleu"]) >= 60, scores

    # The attention maps logged during training, and drawn again from the checkpoint.
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from rnnlab.callbacks.attention_maps import AttentionMaps

    events = EventAccumulator(str(run / "tensorboard"), size_guidance={"images": 0})
    events.Reload()
    assert {"val/attention/0", "val/attention/3"} <= set(events.Tags()["images"])
    batch = codec.encode(["kazu mibi ."])
    output = module.predict_batch(batch)
    source, target = codec.token_labels(batch, output, 0)
    assert source == ["kazu", "mibi", "."] and target[-1] == "<eos>"
    assert output["attention"].shape[1:] == (len(output["tokens"][0]), 3)
    # The only one of these inputs the model can read is the second.
    figures = AttentionMaps(num_maps=2).maps(module, codec, ["Hola", "kazu mibi ."])
    assert len(figures) == 1 and figures[0][0] == "kazu mibi ."


def test_words_typed_without_accents_find_the_accented_vocabulary_word(tmp_path):
    module = data(write_tsv(tmp_path / "spa.txt", PAIRS * 2), min_count=1)
    module.setup()
    codec = module.codec
    assert "español" in codec.src_vocab.stoi and "espanol" not in codec.src_vocab.stoi
    encoded = codec.encode_example("Hablas espanol")
    # ... and an input without a final mark gets one, like every training sentence.
    assert codec.src_vocab.decode(encoded["src_tokens"].tolist()) == ["hablas", "español", "."]
    unknown = codec.encode_example("Hablas klingon?")["src_tokens"].tolist()
    assert unknown[1] == codec.src_vocab.unk_id


def test_sample_pairs_start_with_the_book_sentences(tmp_path):
    module = data(write_tsv(tmp_path / "spa.txt", PAIRS * 3), min_count=1)
    module.setup()
    pairs = module.sample_pairs("val", len(BOOK_SENTENCES) + 1)
    assert [text for text, _ in pairs[: len(BOOK_SENTENCES)]] == [s for s, _ in BOOK_SENTENCES]
    assert pairs[0] == ("Como te llamas", "What's your name?")  # as people write it
    assert pairs[-1][0] in {text for text, _ in module.examples["val"]}


@pytest.mark.slow
@pytest.mark.skipif(not SPA_TXT.is_file(), reason=f"shared spa.txt not found at {SPA_TXT}")
def test_short_run_on_real_spanish_beats_a_constant_answer(tmp_path, one_thread):
    from rnnlab.metrics import BLEU, ChrF

    # 3,000 pairs of 3-5 tokens from the middle of the file (it starts with one-word sentences,
    # whose BLEU is 0 for want of 4-grams, and goes on from short to long).
    lines = SPA_TXT.read_text(encoding="utf-8").split("\n")[3000:6000]
    corpus = tmp_path / "slice.txt"
    corpus.write_text("\n".join(lines) + "\n", encoding="utf-8")
    metrics, objects = train_run(
        tmp_path / "run",
        "task=translate",
        "size=tiny",
        "data.corpus=files",
        f"data.path={corpus}",
        "data.batch_size=32",
        "optimizer.lr=5e-3",
        "trainer.max_epochs=6",
        "logger=none",
        "callbacks.attention_maps=null",
        *QUIET_RUN,
    )
    datamodule = objects["datamodule"]
    # The floor: answer every test sentence with the most common training translation.
    targets = [tuple(refs[0]) for _, refs in datamodule.examples["train"]]
    constant = detokenize(max(set(targets), key=targets.count))
    references = [refs for _, refs in datamodule.examples["test"]]
    floor = {"bleu": BLEU(), "chrf": ChrF()}
    for metric in floor.values():
        metric.update([constant] * len(references), references)
    floor = {name: float(metric.compute()) for name, metric in floor.items()}
    assert metrics["test/bleu"] >= floor["bleu"] + 3, (metrics, floor)
    assert metrics["test/chrf"] >= floor["chrf"] + 8, (metrics, floor)
    assert metrics["test/token_acc"] > 0.3, metrics
