"""SentencePiece tokenizer for MDM's text states (arXiv 2510.13253, Appendix D).

Appendix D trains one SentencePiece model offline, before MDM itself::

    spm.SentencePieceTrainer.train(input=..., model_type="unigram", vocab_size=32000,
                                   character_coverage=0.9995, input_sentence_size=1000000,
                                   shuffle_input_sentence=True, num_threads=8)

:class:`TextTokenizer` wraps exactly that, with the special ids MDM relies on
fixed by the trainer options rather than left to SentencePiece's defaults (which
disable padding), so that every checkpoint agrees on them:

=====  ===  =====================================================================
name   id   use
=====  ===  =====================================================================
pad    0    right padding of a text segment to ``text_len`` ("token completion")
unk    1    characters outside the model's ``character_coverage``
bos    2    available to users; MDM's layout has its own learned BEGIN token, so
            :meth:`TextTokenizer.encode_fixed` does not prepend it
eos    3    end of the real text inside a fixed-length segment; decoding stops here
=====  ===  =====================================================================

Appendix D's unigram model suits a large corpus. On a small world it splits words:
its seed pieces are the substrings shared by two or more distinct words, so with a few
dozen words few whole words ever become candidates (4000 captions of 25 words give
46 pieces whatever the request, 10 of the 25 words whole, 32 tokens for a 13-word
caption; ``experiments/tokenizer-small-corpora``). ``model_type="word"`` keeps every
word whole there (one piece a whitespace-separated word, unk for a word it never saw),
and ``"bpe"`` merges up to whole words when the vocabulary allows.
:func:`vocabulary_report` says how a trained model fits its corpus.

No mask id is defined: MDM's text diffusion is Gaussian noise on latents of the
states (DESIGN.md §2.1), not an absorbing-state process, so nothing needs one.

The model lives in one file, ``tokenizer.model``, so it can sit in a checkpoint
folder beside the weights; ``tokenizer.vocab`` (piece and log-probability per
line, as SentencePiece writes it) is saved next to it for people, never read.
"""

from __future__ import annotations

import io
import os
import warnings
from collections import Counter
from collections.abc import Iterable, Sequence
from itertools import islice
from pathlib import Path
from typing import Any

import sentencepiece as spm
import torch
from torch import Tensor

from mdm.data.sentencepiece_proto import model_type_of

PAD_ID = 0
UNK_ID = 1
BOS_ID = 2
EOS_ID = 3
MODEL_TYPES = ("unigram", "bpe", "word")  # with "auto": mdm.config.choices.TOKENIZER_TYPES (a test ties them)
SPECIAL_IDS = 4  # pad, unk, bos, eos
MODEL_FILENAME = "tokenizer.model"
VOCAB_FILENAME = "tokenizer.vocab"
WORD_START = "\u2581"  # SentencePiece's mark of a piece that starts a word
PUNCTUATION = ".,;:?!'\"()"  # pieces of these alone do not split a word ("left." as "left" + ".")


def _corpus_input(corpus: Sequence[str] | str | os.PathLike[str]) -> tuple[dict[str, Any], str]:
    """SentencePiece trainer options feeding ``corpus``, and a name for it in error messages.

    A path is Appendix D's line-separated corpus file and is handed to SentencePiece
    as is (it samples ``input_sentence_size`` lines itself, so a corpus of many GB is
    never read into Python); it is only scanned up to its first non-blank line to
    reject an empty file by name. A list of strings is split on newlines the same way.
    """
    if isinstance(corpus, (str, os.PathLike)):
        path = Path(corpus)
        if not path.is_file():
            raise FileNotFoundError(f"tokenizer corpus file not found: {path}")
        with path.open(encoding="utf-8") as f:
            if not any(line.strip() for line in f):
                raise ValueError(f"tokenizer corpus {path} is empty (no non-blank line to train on)")
        return {"input": str(path)}, str(path)
    if not all(isinstance(s, str) for s in corpus):
        raise TypeError("corpus must be a path or a list of str")
    lines = [line for text in corpus for line in text.splitlines() if line.strip()]
    name = f"<list of {len(corpus)} strings>"
    if not lines:
        raise ValueError(f"tokenizer corpus {name} is empty (no non-blank line to train on)")
    return {"sentence_iterator": iter(lines)}, name


class TextTokenizer:
    """A SentencePiece model with MDM's fixed special ids (see the module docstring).

    Build one with :meth:`train` or :meth:`load`. Characters the model does not
    cover (a word model: words it never saw) become ``unk``; each new one is
    warned about once per tokenizer and counted in :attr:`oov_counts` (instance
    state, one per DataLoader worker), and ``strict=True`` raises instead, naming
    them. :attr:`model_type` is read from the model itself.
    """

    pad_id = PAD_ID
    unk_id = UNK_ID
    bos_id = BOS_ID
    eos_id = EOS_ID

    def __init__(self, model_proto: bytes, source: str = "<memory>") -> None:
        self._proto = bytes(model_proto)
        self.source = source
        try:
            self._sp = spm.SentencePieceProcessor(model_proto=self._proto)
        except RuntimeError as err:
            raise ValueError(f"{source} is not a SentencePiece model: {err}") from err
        found = {
            "pad": self._sp.pad_id(),
            "unk": self._sp.unk_id(),
            "bos": self._sp.bos_id(),
            "eos": self._sp.eos_id(),
        }
        wanted = {"pad": PAD_ID, "unk": UNK_ID, "bos": BOS_ID, "eos": EOS_ID}
        if found != wanted:
            raise ValueError(
                f"SentencePiece model {source} has special ids {found}, but MDM needs {wanted}; "
                "retrain it with TextTokenizer.train"
            )
        try:
            self.model_type = model_type_of(self._proto)  # unigram | bpe | word | char
        except ValueError as err:
            raise ValueError(f"{source} is not a readable SentencePiece model ({err})") from None
        self.oov_counts: Counter[str] = Counter()

    # -- construction ---------------------------------------------------------------

    @classmethod
    def train(
        cls,
        corpus: Sequence[str] | str | os.PathLike[str],
        vocab_size: int,
        out_dir: str | os.PathLike[str] | None = None,
        *,
        character_coverage: float = 0.9995,
        model_type: str = "unigram",
        hard_vocab_limit: bool = False,
        input_sentence_size: int = 1_000_000,
        shuffle_input_sentence: bool = True,
        num_threads: int | None = None,
        max_sentence_length: int = 16384,
    ) -> TextTokenizer:
        """Train offline on ``corpus`` (a line-per-sentence file or a list of strings).

        Options default to Appendix D; ``model_type`` is one of :data:`MODEL_TYPES`, or ``"auto"``
        (:func:`choose_model_type`: a word model when the corpus's words all fit, else unigram).
        ``hard_vocab_limit=False`` (SentencePiece's soft limit) lets a small corpus
        yield fewer pieces than ``vocab_size`` instead of failing; a :class:`UserWarning`
        then names both sizes (with the cause and the remedy when the model splits
        words, :func:`vocabulary_report`), and the model's embedding table should use
        :attr:`vocab_size`, not the request. A word model that leaves words out of its
        vocabulary warns too. With ``hard_vocab_limit=True`` a request the corpus
        cannot fill is a ``ValueError``.
        ``max_sentence_length`` (bytes) is raised from SentencePiece's 4192 because
        chat turns are long and SentencePiece would skip them silently.
        If ``out_dir`` is given the model is saved there (:meth:`save`).
        """
        if vocab_size <= 4:
            raise ValueError(f"vocab_size must exceed the 4 special ids, got {vocab_size}")
        if model_type == "auto":
            model_type = choose_model_type(corpus, vocab_size, input_sentence_size)
        if model_type not in MODEL_TYPES:
            raise ValueError(f"model_type must be auto or one of {', '.join(MODEL_TYPES)}, got {model_type!r}")
        source, name = _corpus_input(corpus)
        writer = io.BytesIO()
        try:
            spm.SentencePieceTrainer.train(
                **source,
                model_writer=writer,
                vocab_size=vocab_size,
                model_type=model_type,
                character_coverage=character_coverage,
                input_sentence_size=input_sentence_size,
                shuffle_input_sentence=shuffle_input_sentence,
                num_threads=num_threads or min(8, os.cpu_count() or 1),
                max_sentence_length=max_sentence_length,
                hard_vocab_limit=hard_vocab_limit,
                pad_id=PAD_ID,
                unk_id=UNK_ID,
                bos_id=BOS_ID,
                eos_id=EOS_ID,
                minloglevel=2,  # SentencePiece logs every EM step to stderr otherwise
            )
        except RuntimeError as err:
            if "Vocabulary size too high" in str(err):
                raise ValueError(
                    f"corpus {name} cannot support vocab_size={vocab_size}: {err}. "
                    "Use a smaller vocab_size, a more varied corpus, or hard_vocab_limit=False"
                ) from err
            raise
        tokenizer = cls(writer.getvalue(), source=f"trained on {name}")
        if tokenizer.vocab_size < vocab_size or model_type == "word":
            # the corpus is read again only here: a small one, or a word model's (whose lost words are counted)
            warning = vocabulary_report(tokenizer, corpus, vocab_size, input_sentence_size)[1]
            if warning is not None:
                warnings.warn(f"corpus {name} {warning}", stacklevel=2)
            elif tokenizer.vocab_size < vocab_size:
                warnings.warn(f"corpus {name} supports only {tokenizer.vocab_size} pieces; asked for {vocab_size}",
                              stacklevel=2)
        if out_dir is not None:
            tokenizer.save(out_dir)
        return tokenizer

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> TextTokenizer:
        """Load from a folder holding ``tokenizer.model`` or from a ``.model`` file itself."""
        path = Path(path)
        file = path / MODEL_FILENAME if path.is_dir() else path
        if not file.is_file():
            raise FileNotFoundError(f"tokenizer model not found: {file}")
        return cls(file.read_bytes(), source=str(file))

    def save(self, out_dir: str | os.PathLike[str]) -> Path:
        """Write ``tokenizer.model`` (and a readable ``tokenizer.vocab``) into ``out_dir``."""
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        model_file = out / MODEL_FILENAME
        model_file.write_bytes(self._proto)
        vocab = "".join(
            f"{self._sp.id_to_piece(i)}\t{self._sp.get_score(i):g}\n" for i in range(self.vocab_size)
        )
        (out / VOCAB_FILENAME).write_text(vocab, encoding="utf-8")
        return model_file

    # -- pickling (DataLoader workers): the processor is rebuilt from the model bytes --

    def __getstate__(self) -> dict[str, object]:
        return {"proto": self._proto, "source": self.source, "oov_counts": self.oov_counts}

    def __setstate__(self, state: dict[str, object]) -> None:
        self.__init__(state["proto"], source=state["source"])  # type: ignore[misc, arg-type]
        self.oov_counts = state["oov_counts"]  # type: ignore[assignment]

    def __eq__(self, other: object) -> bool:
        return isinstance(other, TextTokenizer) and self._proto == other._proto

    __hash__ = None  # type: ignore[assignment]  # mutable (oov_counts); equality is by model

    def __repr__(self) -> str:
        return f"TextTokenizer(vocab_size={self.vocab_size}, source={self.source!r})"

    # -- encoding -------------------------------------------------------------------

    @property
    def vocab_size(self) -> int:
        """Number of states, special ids included (the size of MDM's text embedding table)."""
        return self._sp.get_piece_size()

    def id_to_piece(self, i: int) -> str:
        return self._sp.id_to_piece(i)

    def pieces(self, text: str) -> list[str]:
        """The pieces of ``text`` as strings ("\u2581" starts a word): how the model splits it, for people."""
        return self._sp.encode(text, out_type=str)

    def _encode_checked(self, text: str, strict: bool) -> list[int]:
        ids: list[int] = self._sp.encode(text)
        if UNK_ID not in ids:
            return ids
        # Pieces carry the (normalised) surface of unknown spans; "▁" marks a word start. A word model's unknown
        # span is a word it never saw; the other models' are characters outside their coverage.
        # (SentencePiece merges neighbouring unknown spans into one unk: "▁cyan▁hexagon").
        spans = [p for i, p in zip(ids, self.pieces(text)) if i == UNK_ID]
        words = self.model_type == "word"
        found = [w for span in spans for w in span.split(WORD_START) if w] if words else \
            [c for span in spans for c in span.replace(WORD_START, "")]
        what = "words outside the tokenizer's vocabulary" if words else "characters outside the tokenizer's coverage"
        unknown = sorted(set(found))
        if strict:
            raise ValueError(f"{what}: {unknown} in {text!r}")
        new = [c for c in unknown if c not in self.oov_counts]
        self.oov_counts.update(found)
        if new:
            warnings.warn(f"{what} map to unk: {new}", stacklevel=3)
        return ids

    def encode(self, text: str, *, strict: bool = False) -> list[int]:
        """Token ids of ``text``, without bos/eos."""
        return self._encode_checked(text, strict)

    def encode_fixed(self, text: str, length: int, *, strict: bool = False) -> tuple[Tensor, int]:
        """``(ids, n_real)``: ``text`` + eos, right-padded with pad to ``length``.

        ``n_real`` counts the non-pad ids (eos included), so an absent segment can be
        told from an empty string (0 vs 1). Too long a text is truncated with a
        warning naming both lengths; eos is kept as the last id so every segment
        ends the same way and :meth:`decode` finds its end.
        """
        if length < 1:
            raise ValueError(f"length must be >= 1 (room for eos), got {length}")
        ids = self._encode_checked(text, strict) + [EOS_ID]
        if len(ids) > length:
            warnings.warn(
                f"text of {len(ids)} tokens (eos included) truncated to {length}: {text[:40]!r}...",
                stacklevel=2,
            )
            ids = ids[: length - 1] + [EOS_ID]
        n_real = len(ids)
        out = torch.full((length,), PAD_ID, dtype=torch.long)
        out[:n_real] = torch.tensor(ids, dtype=torch.long)
        return out, n_real

    def decode(self, ids: Iterable[int] | Tensor) -> str:
        """Text of ``ids``, stopping at the first eos and ignoring pad and bos.

        Stopping at eos is what a sampler wants: positions after it are padding
        the model filled in. Ids outside the vocabulary are an error.
        """
        seq = ids.tolist() if isinstance(ids, Tensor) else [int(i) for i in ids]
        if EOS_ID in seq:
            seq = seq[: seq.index(EOS_ID)]
        bad = [i for i in seq if not 0 <= i < self.vocab_size]
        if bad:
            raise ValueError(f"ids outside the vocabulary [0, {self.vocab_size}): {bad[:10]}")
        return self._sp.decode([i for i in seq if i not in (PAD_ID, BOS_ID)])


def _corpus_words(corpus: Sequence[str] | str | os.PathLike[str], max_lines: int) -> Counter[str]:
    """The whitespace-separated words of ``corpus`` (at most its first ``max_lines`` lines), counted."""
    if isinstance(corpus, (str, os.PathLike)):
        with Path(corpus).open(encoding="utf-8") as f:
            return Counter(w for line in islice(f, max_lines) for w in line.split())
    lines = (line for text in corpus for line in text.splitlines())
    return Counter(w for line in islice(lines, max_lines) for w in line.split())


def choose_model_type(corpus: Sequence[str] | str | os.PathLike[str], vocab_size: int,
                      max_lines: int = 1_000_000) -> str:
    """``"word"`` when every distinct word of ``corpus`` fits in ``vocab_size`` pieces beside the special ids,
    else ``"unigram"``: the model of ``model_type="auto"``.

    Why: a small world's corpus (ShapesWorld, a folder of a few dozen captioned images) has fewer distinct words
    than the vocabulary, and the unigram trainer splits them into characters (it seeds its pieces from substrings
    shared by two or more words); a word model keeps them whole and loses none. A real corpus has more words than
    a small vocabulary holds, and a word model would map the rest to unk, which a caption model can never write;
    Appendix D's unigram spells them from pieces and keeps the frequent ones whole.
    """
    return "word" if len(_corpus_words(corpus, max_lines)) + SPECIAL_IDS <= vocab_size else "unigram"


def vocabulary_report(tokenizer: TextTokenizer, corpus: Sequence[str] | str | os.PathLike[str], vocab_size: int,
                      max_lines: int = 1_000_000) -> tuple[str, str | None]:
    """How ``tokenizer`` (asked for ``vocab_size`` pieces) fits ``corpus``: a summary, and a one-line warning
    naming the cause and the remedy when it fits badly, else None (a predicate: "corpus NAME " goes before it).

    Why: a model that splits frequent words into characters makes every text several times longer than its
    words (cut at ``data.text_lens``), and the diffusion model learns spelling instead of words; a word model
    whose vocabulary is too small maps the words it left out to unk. A word counts as whole when it is one
    piece, punctuation pieces aside ("left." as "left" + "." is whole). Bad fits, each with its remedy:

    * a unigram or BPE model that splits words, under half the request or where a word model would fit in it
      (the moving-digits captions: 37 of 64 pieces, 16 of 19 words split): the corpus has too few distinct words
      (the unigram trainer seeds its pieces from substrings shared by two or more words);
    * a word model that left words out.

    A vocabulary under the request that keeps every word whole is what a small world should get: no warning.
    """
    words, model_type, pieces = _corpus_words(corpus, max_lines), tokenizer.model_type, tokenizer.vocab_size
    unk = {w for w in words if UNK_ID in tokenizer._sp.encode(w)}
    split = {w for w in words if w not in unk and len(_word_pieces(tokenizer, w)) > 1}
    n, occurrences = len(words), max(1, sum(words.values()))
    summary = f"{pieces} pieces (asked for {vocab_size}), {n - len(split) - len(unk)} of its {n} distinct words whole"
    if model_type == "word" and unk:
        share = sum(words[w] for w in unk) / occurrences
        return summary, (f"has {n} distinct words, and {len(unk)} of them ({share:.1%} of its words) did "
                         f"not fit in the word model's {pieces} pieces and become unk: raise the vocabulary size to "
                         f"{n + SPECIAL_IDS} (its words and {SPECIAL_IDS} special ids), or use model type unigram or "
                         f"bpe, which spell rare words from pieces")
    if split and (2 * pieces < vocab_size or n + SPECIAL_IDS <= vocab_size):
        share = sum(words[w] for w in split) / occurrences
        return summary, (f"supports only {pieces} pieces, asked for {vocab_size}: it has too few "
                         f"distinct words ({n}) for a {model_type} model to grow whole-word pieces, so it splits "
                         f"{len(split)} of them ({share:.0%} of its words) and a text takes several tokens a word; "
                         f"use model type word (data.tokenizer=word, mdm tokenizer train --model-type word), which "
                         f"keeps every word whole with {n + SPECIAL_IDS} pieces")
    return summary, None


def _word_pieces(tokenizer: TextTokenizer, word: str) -> list[str]:
    """The pieces of ``word`` that are not punctuation alone."""
    return [p for p in tokenizer.pieces(word) if p.strip(WORD_START + PUNCTUATION)]
