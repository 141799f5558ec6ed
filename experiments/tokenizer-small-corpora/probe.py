"""How many pieces, tokens per text and whole words SentencePiece gives small corpora, per model type.

Corpora: ``world25`` (4000 captions of a 25-word world), ShapesWorld's training texts at each level
(every role), and ``folder`` (the captions of a small captioned folder, written out in ``folder_captions``).
Run from the repository root: ``python experiments/tokenizer-small-corpora/probe.py [--types unigram,bpe,word]``.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import warnings
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from mdm.data.text_tokenizer import UNK_ID, TextTokenizer  # noqa: E402

from folder_captions import folder_captions  # noqa: E402

PUNCTUATION = ".,;:?!"
SIZES, COLORS = ["small", "large"], ["red", "green", "blue", "yellow", "purple"]
SHAPES, PLACES = ["circle", "square", "triangle"], ["left", "right", "top", "bottom"]


def world25(n: int = 4000, seed: int = 0) -> list[str]:
    """``n`` captions built from 25 distinct words: 2 sizes, 5 colours, 3 shapes, 4 places and 11 others."""
    rng = random.Random(seed)

    def thing() -> str:
        return f"a {rng.choice(SIZES)} {rng.choice(COLORS)} {rng.choice(SHAPES)}"

    out = []
    for _ in range(n):
        kind = rng.randrange(4)
        if kind == 0:
            out.append(f"there is {thing()} at the {rng.choice(PLACES)} and {thing()} on the {rng.choice(PLACES)}")
        elif kind == 1:
            out.append(f"{thing()} is to the {rng.choice(PLACES)} of {thing()}")
        elif kind == 2:
            out.append(f"{thing()} at the {rng.choice(PLACES)}")
        else:
            out.append(f"{thing()} next to {thing()} and below {thing()}")
    return out


def shapesworld(level: str) -> dict[str, list[str]]:
    from mdm.config import load_config
    from mdm.training.prepare import load_samples

    preset = {"easy": "quickstart", "medium": "shapesworld-medium", "hard": "shapesworld"}[level]
    texts: dict[str, list[str]] = {}
    for s in load_samples(load_config(preset), "train"):
        for t in s.texts:
            texts.setdefault(t.role.value, []).append(t.text)
    return texts


def kept_whole(tok: TextTokenizer, word: str) -> bool:
    """Whether ``word`` (a whitespace token of the corpus) is one known piece, punctuation pieces aside:
    "circle?" kept as "circle" + "?" is whole, as "circ" + "le?" it is not."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a word model's unseen word: unk, counted here as not whole
        ids = tok.encode(word)
    pieces = [p for p in tok.pieces(word) if p.strip("▁" + PUNCTUATION)]
    return len(pieces) == 1 and UNK_ID not in ids


def measure(corpus: dict[str, list[str]], model_type: str, vocab_size: int) -> dict:
    lines = [t for ts in corpus.values() for t in ts]
    warnings.simplefilter("ignore")  # the soft vocabulary limit's warning: the pieces are in the row
    tok = TextTokenizer.train(lines, vocab_size, character_coverage=1.0, model_type=model_type, num_threads=1)
    counts = Counter(w for t in lines for w in t.split())
    whole = {w for w in counts if kept_whole(tok, w)}
    row = {"type": model_type, "asked": vocab_size, "pieces": tok.vocab_size, "words": len(counts),
           "whole": len(whole), "whole_share": round(sum(counts[w] for w in whole) / sum(counts.values()), 3),
           "split": {w: tok.pieces(w) for w in sorted(set(counts) - whole)[:4]}}
    for role, ts in corpus.items():
        n = [1 + len(tok.encode(t)) for t in ts]  # eos included, as data.text_lens counts
        row[role] = {"mean": round(sum(n) / len(n), 1), "max": max(n),
                     "words": round(sum(len(t.split()) for t in ts) / len(ts), 1)}
    return row


def sweep() -> None:
    """Unigram pieces as the number of distinct sentences grows, and on the word list alone."""
    for n in (100, 400, 4000, 40000):
        corpus = world25(n)
        tok = TextTokenizer.train(corpus, 128, character_coverage=1.0, num_threads=1)
        print(f"{n} captions, {len(set(corpus))} distinct: {tok.vocab_size} pieces")
    words = sorted({w for c in world25() for w in c.split()})
    print(f"the {len(words)} words alone: {TextTokenizer.train(words, 128, num_threads=1).vocab_size} pieces")


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--types", default="unigram,bpe,word")
    p.add_argument("--sizes", default="128,256")
    p.add_argument("--corpora", default="world25,easy,medium,hard,folder")
    p.add_argument("--out", default=None, help="also write the rows as JSON lines")
    p.add_argument("--sweep", action="store_true", help="only: unigram pieces by the number of distinct sentences")
    a = p.parse_args()
    if a.sweep:
        warnings.simplefilter("ignore")
        return sweep()
    rows = []
    for name in a.corpora.split(","):
        corpus = ({"caption": world25()} if name == "world25" else {"caption": folder_captions()}
                  if name == "folder" else shapesworld(name))
        for model_type in a.types.split(","):
            for size in map(int, a.sizes.split(",")):
                row = {"corpus": name, **measure(corpus, model_type, size)}
                rows.append(row)
                print(json.dumps(row), flush=True)
    if a.out:
        Path(a.out).write_text("".join(json.dumps(r) + "\n" for r in rows))


if __name__ == "__main__":
    main()
