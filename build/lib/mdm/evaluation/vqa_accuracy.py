"""VQA accuracy with the official VQA-v2 rules (Antol et al. 2015; the VQA challenge evaluation).

An answer is worth ``min(#humans who gave it / 3, 1)``. Every question has ten human
answers; the official score averages that quantity over the ten subsets of nine
answers (leave one human out), so that a machine is scored like a human would be::

    acc(a) = mean over i of min(#{j != i : gt_j == a} / 3, 1)

The predicted answer is normalised as the official script does: newlines and tabs
become spaces; punctuation is removed (or turned into a space when it joins words); a
period not inside a number is dropped; the text is lower-cased; number words become
digits (``two`` -> ``2``); the articles ``a``, ``an``, ``the`` are dropped; and common
contractions written without their apostrophe are restored (``dont`` -> ``don't``).
The human answers only get the punctuation step, and only when they disagree among
themselves: VQA v2 stores them already normalised. A dataset whose single reference is
not stored that way (ShapesWorld says ``zero``) is scored with :func:`exact_match`,
which normalises both sides.
"""

from __future__ import annotations

import re
from typing import Sequence

PUNCTUATION = (";", "/", "[", "]", '"', "{", "}", "(", ")", "=", "+", "\\", "_", "-", ">", "<", "@", "`", ",",
               "?", "!")
ARTICLES = frozenset({"a", "an", "the"})
NUMBER_WORDS = {"none": "0", "zero": "0", "one": "1", "two": "2", "three": "3", "four": "4", "five": "5",
                "six": "6", "seven": "7", "eight": "8", "nine": "9", "ten": "10"}
# Contractions written without the apostrophe, as the official list maps them.
CONTRACTIONS = {
    "aint": "ain't", "arent": "aren't", "cant": "can't", "couldve": "could've", "couldnt": "couldn't",
    "couldn'tve": "couldn't've", "couldnt've": "couldn't've", "didnt": "didn't", "doesnt": "doesn't",
    "dont": "don't", "hadnt": "hadn't", "hadnt've": "hadn't've", "hadn'tve": "hadn't've", "hasnt": "hasn't",
    "havent": "haven't", "hed": "he'd", "hed've": "he'd've", "he'dve": "he'd've", "hes": "he's", "howd": "how'd",
    "howll": "how'll", "hows": "how's", "Id've": "I'd've", "I'dve": "I'd've", "Im": "I'm", "Ive": "I've",
    "isnt": "isn't", "itd": "it'd", "itd've": "it'd've", "it'dve": "it'd've", "itll": "it'll", "let's": "let's",
    "maam": "ma'am", "mightnt": "mightn't", "mightnt've": "mightn't've", "mightn'tve": "mightn't've",
    "mightve": "might've", "mustnt": "mustn't", "mustve": "must've", "neednt": "needn't", "notve": "not've",
    "oclock": "o'clock", "oughtnt": "oughtn't", "ow's'at": "'ow's'at", "'ows'at": "'ow's'at", "'ow'sat": "'ow's'at",
    "shant": "shan't", "shed've": "she'd've", "she'dve": "she'd've", "she's": "she's", "shouldve": "should've",
    "shouldnt": "shouldn't", "shouldnt've": "shouldn't've", "shouldn'tve": "shouldn't've",
    "somebody'd": "somebodyd", "somebodyd've": "somebody'd've", "somebody'dve": "somebody'd've",
    "somebodyll": "somebody'll", "somebodys": "somebody's", "someoned": "someone'd",
    "someoned've": "someone'd've", "someone'dve": "someone'd've", "someonell": "someone'll",
    "someones": "someone's", "somethingd": "something'd", "somethingd've": "something'd've",
    "something'dve": "something'd've", "somethingll": "something'll", "thats": "that's", "thered": "there'd",
    "thered've": "there'd've", "there'dve": "there'd've", "therere": "there're", "theres": "there's",
    "theyd": "they'd", "theyd've": "they'd've", "they'dve": "they'd've", "theyll": "they'll", "theyre": "they're",
    "theyve": "they've", "twas": "'twas", "wasnt": "wasn't", "wed've": "we'd've", "we'dve": "we'd've",
    "weve": "we've", "werent": "weren't", "whatll": "what'll", "whatre": "what're", "whats": "what's",
    "whatve": "what've", "whens": "when's", "whered": "where'd", "wheres": "where's", "whereve": "where've",
    "whod": "who'd", "whod've": "who'd've", "who'dve": "who'd've", "wholl": "who'll", "whos": "who's",
    "whove": "who've", "whyll": "why'll", "whyre": "why're", "whys": "why's", "wont": "won't", "wouldve": "would've",
    "wouldnt": "wouldn't", "wouldnt've": "wouldn't've", "wouldn'tve": "wouldn't've", "yall": "y'all",
    "yall'll": "y'all'll", "y'allll": "y'all'll", "yall'd've": "y'all'd've", "y'alld've": "y'all'd've",
    "y'all'dve": "y'all'd've", "youd": "you'd", "youd've": "you'd've", "you'dve": "you'd've", "youll": "you'll",
    "youre": "you're", "youve": "you've",
}
_COMMA_IN_NUMBER = re.compile(r"(\d)(,)(\d)")
_PERIOD_NOT_IN_NUMBER = re.compile(r"(?!<=\d)(\.)(?!\d)")  # the official pattern, quirk included


def _strip_punctuation(text: str) -> str:
    out = text
    for p in PUNCTUATION:
        # Punctuation next to a space (or any text with a 1,000-style number) is deleted;
        # punctuation inside a word ("black-and-white") becomes a space.
        if (p + " " in text or " " + p in text) or _COMMA_IN_NUMBER.search(text) is not None:
            out = out.replace(p, "")
        else:
            out = out.replace(p, " ")
    return _PERIOD_NOT_IN_NUMBER.sub("", out)


def _digits_and_articles(text: str) -> str:
    words = [NUMBER_WORDS.get(w, w) for w in text.lower().split()]
    words = [CONTRACTIONS.get(w, w) for w in words if w not in ARTICLES]
    return " ".join(words)


def normalize_answer(answer: str) -> str:
    """The official answer normalisation (see the module docstring)."""
    text = answer.replace("\n", " ").replace("\t", " ").strip()
    return _digits_and_articles(_strip_punctuation(text))


def vqa_accuracy(prediction: str, human_answers: Sequence[str]) -> float:
    """The official accuracy of one predicted answer against its human answers (ten in VQA v2)."""
    if not human_answers:
        raise ValueError("vqa_accuracy: a question needs at least one human answer")
    humans = [h.replace("\n", " ").replace("\t", " ").strip() for h in human_answers]
    if len(set(humans)) > 1:
        humans = [_strip_punctuation(h) for h in humans]
    predicted = normalize_answer(prediction)
    matches = [h == predicted for h in humans]
    total = sum(matches)
    # Leave human i out: the others agreeing with the prediction are total - matches[i].
    return sum(min((total - m) / 3.0, 1.0) for m in matches) / len(humans)


def exact_match(prediction: str, reference: str) -> bool:
    """Both answers equal after :func:`normalize_answer` (a dataset with one reference per question)."""
    return normalize_answer(prediction) == normalize_answer(reference)


def mean_vqa_accuracy(predictions: Sequence[str], human_answers: Sequence[Sequence[str]]) -> float:
    """The mean of :func:`vqa_accuracy` over questions (the number VQA papers report, as a fraction)."""
    if len(predictions) != len(human_answers):
        raise ValueError(f"mean_vqa_accuracy: {len(predictions)} predictions but {len(human_answers)} questions")
    if not predictions:
        raise ValueError("mean_vqa_accuracy: no questions to score")
    return sum(vqa_accuracy(p, h) for p, h in zip(predictions, human_answers)) / len(predictions)
