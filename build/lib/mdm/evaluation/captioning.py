"""Caption metrics: CIDEr-D (Vedantam et al. 2015) through ``pycocoevalcap``, as COCO captioning reports it.

``pycocoevalcap`` first tokenises every caption with Stanford's PTB tokenizer (a
Java program) and drops punctuation tokens; then its ``Cider`` scorer compares
TF-IDF-weighted 1-4-gram vectors of a candidate with those of its references,
with a Gaussian length penalty and clipped counts (CIDEr-D), times 10. The IDF is
taken over the evaluated set, so a score depends on the whole set, not on one
caption alone: compare scores computed on the same references only.

:func:`tokenize_caption` is a pure-Python stand-in for the Java step (lower case,
punctuation split off and dropped, clitics split as PTB does: ``don't`` -> ``do
n't``), so CIDEr runs where Java does not; ``tokenizer="ptb"`` uses the Java one.
A test checks both give the same tokens and the same CIDEr on captions of the
kind this project scores.
"""

from __future__ import annotations

import re
from typing import Sequence

# The tokens pycocoevalcap drops after PTB tokenisation (a double quote becomes `` or '' first). Its
# list also names -LRB- and friends, but it compares them with lower-cased tokens, so brackets stay
# (as -lrb- ...); so do they here.
PTB_PUNCTUATION = frozenset({"''", "'", "``", "`", '"', ".", "?", "!", ",", ":", "-", "--", "...", ";"})
_CLITIC = re.compile(r"(?i)\b(\w+)(n't|'s|'re|'ve|'ll|'d|'m)\b")
_TOKEN = re.compile(r"n't|'\w+|\w+(?:[-./]\w+)*|\.\.\.|--|\S")
_BRACKETS = {"(": "-lrb-", ")": "-rrb-", "{": "-lcb-", "}": "-rcb-"}


def tokenize_caption(caption: str) -> str:
    """PTB-style tokens of ``caption``, lower-cased, punctuation dropped, joined by spaces."""
    text = _CLITIC.sub(r"\1 \2", caption.replace("\n", " ").lower())
    tokens = [_BRACKETS.get(t, t) for t in _TOKEN.findall(text)]
    return " ".join(t for t in tokens if t not in PTB_PUNCTUATION)


def _pycocoevalcap():
    try:
        from pycocoevalcap.cider.cider import Cider
    except ImportError:
        raise ModuleNotFoundError("CIDEr needs pycocoevalcap: pip install pycocoevalcap") from None
    return Cider


def cider(candidates: Sequence[str], references: Sequence[Sequence[str]],
          tokenizer: str = "python") -> tuple[float, list[float]]:
    """CIDEr-D of each candidate against its references, and their mean (the reported number).

    ``tokenizer``: ``"python"`` (:func:`tokenize_caption`) or ``"ptb"`` (pycocoevalcap's Java
    PTB tokenizer, as the COCO server does).
    """
    if len(candidates) != len(references):
        raise ValueError(f"cider: {len(candidates)} candidates but {len(references)} reference lists")
    if not candidates:
        raise ValueError("cider: no captions to score")
    empty = [i for i, refs in enumerate(references) if not refs]
    if empty:
        raise ValueError(f"cider: candidate(s) {empty[:5]} have no reference caption")
    Cider = _pycocoevalcap()
    if tokenizer == "python":
        gts = {i: [tokenize_caption(r) for r in refs] for i, refs in enumerate(references)}
        res = {i: [tokenize_caption(c)] for i, c in enumerate(candidates)}
    elif tokenizer == "ptb":
        from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

        ptb = PTBTokenizer()
        gts = ptb.tokenize({i: [{"caption": r} for r in refs] for i, refs in enumerate(references)})
        res = ptb.tokenize({i: [{"caption": c}] for i, c in enumerate(candidates)})
    else:
        raise ValueError(f"cider: tokenizer must be 'python' or 'ptb', got {tokenizer!r}")
    mean, per_caption = Cider().compute_score(gts, res)
    return float(mean), [float(x) for x in per_caption]
