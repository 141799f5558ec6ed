"""The SentencePiece tokenizer of Appendix D (mdm.data.text_tokenizer), trained on a tiny corpus."""

import io
import pickle
import random
import time
import warnings

import pytest
import sentencepiece as spm
import torch

from mdm.data.text_tokenizer import BOS_ID, EOS_ID, PAD_ID, UNK_ID, TextTokenizer


def make_corpus(n: int = 200, seed: int = 0) -> list[str]:
    """Varied template sentences (ShapesWorld-like captions, questions and chat)."""
    rng = random.Random(seed)
    colours = ["red", "green", "blue", "yellow", "purple", "orange", "white", "black"]
    shapes = ["circle", "square", "triangle", "star", "hexagon", "ellipse"]
    counts = ["two", "three", "four", "five", "six"]
    places = ["left", "right", "top", "bottom", "centre", "upper corner", "lower corner"]
    templates = [
        "A {c} {s} is at the {p} of the image.",
        "Is there a {c} {s} near the {p}?",
        "Two {c} {s}s, one on the {p}.",
        "What colour is the {s}? It is {c}.",
        "The picture shows a small {s}, coloured {c}, {p}.",
        "Hello! Could you draw {n} {c} {s}s for me, please?",
        "Sure, here are {n} {s}s; every one of them is {c}.",
        "How many {s}s do you see? I count {n}.",
        "Underneath the {c} {s} lies a quiet, empty background.",
    ]
    return [
        rng.choice(templates).format(c=rng.choice(colours), s=rng.choice(shapes), p=rng.choice(places),
                                     n=rng.choice(counts))
        for _ in range(n)
    ]


@pytest.fixture(scope="module")
def tok() -> TextTokenizer:
    return TextTokenizer.train(make_corpus(), vocab_size=100)


def test_trains_fast_with_fixed_special_ids():
    start = time.perf_counter()
    tok = TextTokenizer.train(make_corpus(seed=1), vocab_size=100)
    assert time.perf_counter() - start < 10.0
    assert tok.vocab_size == 100
    assert (tok.pad_id, tok.unk_id, tok.bos_id, tok.eos_id) == (0, 1, 2, 3)
    assert [tok.id_to_piece(i) for i in range(4)] == ["<pad>", "<unk>", "<s>", "</s>"]


def test_round_trip(tok):
    for text in make_corpus(20, seed=5) + ["A red star.", "colour? three squares!"]:
        ids = tok.encode(text)
        assert all(isinstance(i, int) and 4 <= i < tok.vocab_size for i in ids)
        assert tok.decode(ids) == text


def test_decode_stops_at_eos_and_ignores_pad_bos(tok):
    ids = tok.encode("A blue circle.")
    assert tok.decode([BOS_ID] + ids + [EOS_ID] + tok.encode("a red star") + [PAD_ID]) == "A blue circle."
    assert tok.decode(torch.tensor(ids + [EOS_ID, PAD_ID])) == "A blue circle."
    with pytest.raises(ValueError, match="outside the vocabulary"):
        tok.decode([tok.vocab_size])


def test_encode_fixed_pads(tok):
    ids = tok.encode("A red star.")
    out, n_real = tok.encode_fixed("A red star.", 32)
    assert out.dtype == torch.long and out.shape == (32,)
    assert n_real == len(ids) + 1
    assert out[: len(ids)].tolist() == ids and out[len(ids)] == EOS_ID
    assert (out[n_real:] == PAD_ID).all()
    assert tok.decode(out) == "A red star."
    empty, n_empty = tok.encode_fixed("", 4)
    assert n_empty == 1 and empty.tolist() == [EOS_ID, PAD_ID, PAD_ID, PAD_ID]


def test_encode_fixed_truncates_with_warning(tok):
    text = " ".join(make_corpus(5, seed=3))
    n = len(tok.encode(text)) + 1
    with pytest.warns(UserWarning, match=f"{n} tokens .* truncated to 8"):
        out, n_real = tok.encode_fixed(text, 8)
    assert n_real == 8 and out[-1] == EOS_ID
    assert out[:7].tolist() == tok.encode(text)[:7]
    with pytest.raises(ValueError, match="length must be >= 1"):
        tok.encode_fixed(text, 0)


def test_out_of_coverage_characters(tok):
    with pytest.warns(UserWarning, match="coverage.*'Ω'"):
        ids = tok.encode("A red Ω star")
    assert UNK_ID in ids
    assert tok.oov_counts["Ω"] >= 1
    with pytest.raises(ValueError, match=r"coverage: \['Ω', 'ж'\]"):
        tok.encode("red Ω and ж", strict=True)
    with pytest.raises(ValueError, match="'ж'"):
        tok.encode_fixed("ж", 8, strict=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a character already reported is counted, not warned again
        tok.encode("Ω Ω")
    assert tok.oov_counts["Ω"] >= 3


def test_empty_corpus_raises_naming_file(tmp_path):
    path = tmp_path / "corpus.txt"
    path.write_text("\n  \n\n")
    with pytest.raises(ValueError, match=f"{path}.*empty"):
        TextTokenizer.train(path, vocab_size=50)
    with pytest.raises(ValueError, match="empty"):
        TextTokenizer.train([], vocab_size=50)
    with pytest.raises(FileNotFoundError, match="nope.txt"):
        TextTokenizer.train(tmp_path / "nope.txt", vocab_size=50)


def test_corpus_file_and_list_train_the_same(tmp_path):
    corpus = make_corpus(100, seed=2)
    path = tmp_path / "corpus.txt"
    path.write_text("\n".join(corpus) + "\n")
    kwargs = dict(vocab_size=60, shuffle_input_sentence=False, num_threads=1)
    from_file, from_list = TextTokenizer.train(path, **kwargs), TextTokenizer.train(corpus, **kwargs)
    assert from_file.vocab_size == from_list.vocab_size
    assert [from_file.id_to_piece(i) for i in range(60)] == [from_list.id_to_piece(i) for i in range(60)]


def test_vocab_too_large_for_corpus():
    corpus = ["a b c", "a b", "c a"]
    with pytest.warns(UserWarning, match="supports only .* asked for 500"):
        soft = TextTokenizer.train(corpus, vocab_size=500)
    assert soft.vocab_size < 500
    with pytest.raises(ValueError, match="cannot support vocab_size=500"):
        TextTokenizer.train(corpus, vocab_size=500, hard_vocab_limit=True)


def test_save_load(tok, tmp_path):
    model_file = tok.save(tmp_path / "ckpt")
    assert model_file.name == "tokenizer.model" and (tmp_path / "ckpt" / "tokenizer.vocab").is_file()
    for source in (tmp_path / "ckpt", model_file):
        loaded = TextTokenizer.load(source)
        assert loaded == tok and loaded.vocab_size == tok.vocab_size
        text = "Is there a green hexagon near the top?"
        assert loaded.encode(text) == tok.encode(text)
    with pytest.raises(FileNotFoundError, match="tokenizer.model"):
        TextTokenizer.load(tmp_path)
    trained = TextTokenizer.train(make_corpus(), vocab_size=100, out_dir=tmp_path / "out")
    assert TextTokenizer.load(tmp_path / "out") == trained


def test_pickles_for_dataloader_workers(tok):
    copy = pickle.loads(pickle.dumps(tok))
    assert copy == tok and copy.encode("A red star.") == tok.encode("A red star.")


def test_rejects_model_with_other_special_ids(tmp_path):
    """SentencePiece's own defaults (pad disabled, unk=0) are refused: MDM needs the fixed ids."""
    writer = io.BytesIO()
    spm.SentencePieceTrainer.train(sentence_iterator=iter(make_corpus()), model_writer=writer, vocab_size=60,
                                   minloglevel=2)
    path = tmp_path / "other.model"
    path.write_bytes(writer.getvalue())
    with pytest.raises(ValueError, match="other.model has special ids"):
        TextTokenizer.load(path)
    path.write_bytes(b"not a model")
    with pytest.raises(ValueError, match="other.model is not a SentencePiece model"):
        TextTokenizer.load(path)
