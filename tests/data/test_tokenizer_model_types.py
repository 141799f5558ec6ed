"""SentencePiece model types on small corpora: the default keeps a small world's words whole, a model that splits
them (or loses them) warns in one line naming the cause and the remedy, and the type survives save and load."""

import random
import warnings

import pytest

from mdm.cli import main
from mdm.config import DataConfig
from mdm.config.choices import TOKENIZER_TYPES
from mdm.data.sentencepiece_proto import model_type_of
from mdm.data.text_tokenizer import MODEL_TYPES, UNK_ID, TextTokenizer, vocabulary_report

SIZES, COLORS = ["small", "large"], ["red", "green", "blue", "yellow", "purple"]
SHAPES, PLACES = ["circle", "square", "triangle"], ["left", "right", "top", "bottom"]


def small_world(n: int = 4000, seed: int = 0) -> list[str]:
    """``n`` captions built from 25 distinct words (the corpus of experiments/tokenizer-small-corpora)."""
    rng = random.Random(seed)

    def thing() -> str:
        return f"a {rng.choice(SIZES)} {rng.choice(COLORS)} {rng.choice(SHAPES)}"

    templates = [lambda: f"there is {thing()} at the {rng.choice(PLACES)} and {thing()} on the {rng.choice(PLACES)}",
                 lambda: f"{thing()} is to the {rng.choice(PLACES)} of {thing()}",
                 lambda: f"{thing()} at the {rng.choice(PLACES)}",
                 lambda: f"{thing()} next to {thing()} and below {thing()}"]
    return [rng.choice(templates)() for _ in range(n)]


@pytest.fixture(scope="module")
def world() -> list[str]:
    corpus = small_world()
    assert len({w for c in corpus for w in c.split()}) == 25
    return corpus


def train(corpus, vocab_size, model_type):
    """The tokenizer and the messages of the warnings its training gave."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        tok = TextTokenizer.train(corpus, vocab_size, model_type=model_type, character_coverage=1.0, num_threads=1)
    return tok, [str(w.message) for w in caught]


def test_the_model_types_are_the_configs_choices():
    assert TOKENIZER_TYPES == ("auto", *MODEL_TYPES) and DataConfig().tokenizer == "unigram"


@pytest.mark.parametrize("vocab_size", [128, 256])
def test_auto_keeps_every_word_of_a_25_word_world_whole(world, vocab_size):
    tok, said = train(world, vocab_size, "auto")
    assert all(len(tok.encode(w)) == 1 for w in {w for c in world for w in c.split()})
    assert all(len(tok.encode(c)) == len(c.split()) for c in world[:50])  # a 13-word caption: 13 tokens
    assert not any("split" in s or "unk" in s for s in said), said


def test_auto_spells_a_corpus_of_more_words_than_the_vocabulary_from_pieces_instead_of_unk():
    rng = random.Random(0)
    names = ["".join(rng.choice("abcdefghijklmnop") for _ in range(6)) for _ in range(300)]
    corpus = [f"a photo of {rng.choice(names)} and {rng.choice(names)}" for _ in range(2000)]
    tok, _ = train(corpus, 128, "auto")
    assert tok.model_type == "unigram"
    assert all(UNK_ID not in tok.encode(c) for c in corpus[:200])
    assert train(corpus[:20], 128, "auto")[0].model_type == "word"  # 20 captions: few words


@pytest.mark.parametrize("vocab_size", [128, 256])
def test_unigram_on_a_25_word_world_warns_once_naming_the_cause_and_the_remedy(world, vocab_size):
    tok, said = train(world, vocab_size, "unigram")
    assert 2 * tok.vocab_size < vocab_size  # the measured failure: 46 pieces whatever the request
    assert sum(len(tok.encode(w)) > 1 for w in {w for c in world for w in c.split()}) > 5
    assert len(said) == 1 and "\n" not in said[0]
    assert f"supports only {tok.vocab_size} pieces, asked for {vocab_size}" in said[0]
    assert "too few distinct words (25)" in said[0]  # the cause
    assert "--model-type word" in said[0] and "data.tokenizer=word" in said[0]  # the remedy, in both places
    assert "with 29 pieces" in said[0]


def test_unigram_warns_when_it_splits_words_a_word_model_would_keep_within_the_request():
    """Over half the request, but a word model would fit: the moving-digits captions' case (37 of 64 pieces)."""
    digits = "zero one two three four five six seven eight nine".split()
    moves = ["up", "down", "to the left", "to the right", "up and to the left", "down and to the right"]
    rng = random.Random(0)
    corpus = [f"the digit {rng.choice(digits)} moving {rng.choice(moves)}" for _ in range(2000)]
    n_words = len({w for c in corpus for w in c.split()})
    tok, said = train(corpus, 64, "unigram")
    assert 2 * tok.vocab_size >= 64 and n_words + 4 <= 64  # only the new half of the rule can fire
    assert sum(len(tok.encode(w)) > 1 for w in digits) > 5
    assert len(said) == 1 and f"too few distinct words ({n_words})" in said[0]
    assert f"with {n_words + 4} pieces" in said[0]
    assert not any("split" in s or "unk" in s for s in train(corpus, 64, "word")[1])


def test_bpe_merges_a_small_worlds_words_whole(world):
    tok, said = train(world, 128, "bpe")
    assert all(len(tok.encode(w)) == 1 for w in {w for c in world for w in c.split()})
    assert said == []


def test_a_word_model_too_small_for_its_words_says_how_many_become_unk_and_the_size_that_fits():
    corpus = [f"word{i} and word{i + 1}" for i in range(100)]  # 102 distinct words
    tok, said = train(corpus, 40, "word")
    assert tok.vocab_size == 40
    assert len(said) == 1 and "has 102 distinct words, and 66 of them" in said[0]
    assert "raise the vocabulary size to 106" in said[0] and "unigram or bpe" in said[0]
    summary, warning = vocabulary_report(tok, corpus, 40)
    assert summary == "40 pieces (asked for 40), 36 of its 102 distinct words whole" and warning in said[0]


def test_a_word_model_names_unseen_words_not_their_characters(world):
    tok, _ = train(world, 128, "word")
    with pytest.warns(UserWarning, match=r"words outside the tokenizer's vocabulary map to unk: \['orange'\]"):
        ids = tok.encode("a small orange circle")
    assert ids[2] == UNK_ID and tok.oov_counts["orange"] == 1
    with pytest.raises(ValueError, match=r"words outside the tokenizer's vocabulary: \['cyan', 'hexagon'\]"):
        tok.encode("a cyan hexagon", strict=True)
    assert tok.decode(tok.encode("a small red circle")) == "a small red circle"


@pytest.mark.parametrize("model_type", ["unigram", "bpe", "word"])
def test_the_model_type_is_read_back_from_the_saved_model(world, tmp_path, model_type):
    tok, _ = train(world[:200], 64, model_type)
    assert tok.model_type == model_type
    assert TextTokenizer.load(tok.save(tmp_path)).model_type == model_type


def test_reading_the_model_type_refuses_bytes_that_are_not_a_model():
    assert model_type_of(b"") == "unigram"  # proto2's default, as SentencePiece reads a model without it
    with pytest.raises(ValueError):
        model_type_of(b"\x12\x05\x18")  # trainer_spec says 5 bytes, holds 1
    with pytest.raises(ValueError, match="model_type must be auto or one of unigram, bpe, word"):
        TextTokenizer.train(["a b"], 10, model_type="char")


def test_mdm_tokenizer_train_keeps_whole_words_with_auto_and_warns_in_one_line_for_the_default(world, tmp_path,
                                                                                             capsys):
    corpus = tmp_path / "captions.txt"
    corpus.write_text("\n".join(world) + "\n")
    for size in ("128", "256"):
        assert main(["tokenizer", "train", "--input", str(corpus), "--vocab-size", size, "--model-type", "auto",
                     "--out", str(tmp_path / f"auto-{size}")]) == 0
        out = capsys.readouterr().out
        assert "trained a word SentencePiece model: 29 pieces" in out and "25 of its 25 distinct words whole" in out
    assert main(["tokenizer", "train", "--input", str(corpus), "--vocab-size", "128",  # the default: unigram
                 "--out", str(tmp_path / "unigram")]) == 0
    captured = capsys.readouterr()
    assert "10 of its 25 distinct words whole" in captured.out
    lines = captured.err.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"mdm: warning: corpus {corpus} supports only 46 pieces")
    assert "--model-type word" in lines[0]
    with pytest.raises(SystemExit) as exit_info:  # argparse: an unknown type is a usage error naming the choices
        main(["tokenizer", "train", "--input", str(corpus), "--vocab-size", "64", "--model-type", "char"])
    assert exit_info.value.code == 2 and "invalid choice: 'char'" in capsys.readouterr().err
