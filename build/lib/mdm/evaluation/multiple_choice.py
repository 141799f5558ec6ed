"""Multiple-choice text benchmarks (HellaSwag, PIQA, ARC, BoolQ) scored with the model's ELBO.

Each question becomes a context and a list of choices; the model's answer is the
choice with the lowest diffusion loss given the context
(:func:`mdm.diffusion.likelihood.target_loss`, the ELBO ranking diffusion language
models use). The context is a clean text segment (role ``scene``, the longest the
model was trained with) and the choice a noised one (role ``caption``); texts longer
than those lengths are truncated with a warning by the tokenizer.

JSONL formats, one question a line, recognised per record:

===========  ================================================================  ========================
benchmark    fields                                                            answer
===========  ================================================================  ========================
HellaSwag    ``ctx`` (or ``ctx_a`` + ``ctx_b``), ``endings`` (list)             ``label`` (index)
PIQA         ``goal``, ``sol1``, ``sol2``                                        ``label`` (0 or 1)
ARC          ``question`` {``stem``, ``choices`` [{``text``, ``label``}]}          ``answerKey`` (a label)
             (or flat: ``question`` text, ``choices`` {``text``, ``label``})
BoolQ        ``question``, ``passage``                                           ``answer`` (true/false)
===========  ================================================================  ========================
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch

from mdm.diffusion.likelihood import target_loss
from mdm.diffusion.multimodal import Segment
from mdm.nn.layout import SegmentSpec


@dataclass
class MultipleChoiceItem:
    context: str
    choices: list[str]
    label: int  # index of the right choice
    benchmark: str


class MultipleChoiceFormatError(ValueError):
    """A JSONL record that is not one of the supported formats; names the file, line and field."""


def _parse(record: dict, where: str) -> MultipleChoiceItem:
    def need(key, kind, source=record):
        if key not in source:
            raise MultipleChoiceFormatError(f"{where}: missing field {key!r}")
        value = source[key]
        if not isinstance(value, kind):
            raise MultipleChoiceFormatError(f"{where}: field {key!r} must be {getattr(kind, '__name__', kind)}, "
                                            f"got {type(value).__name__}")
        return value

    if "endings" in record:  # HellaSwag
        context = record["ctx"] if "ctx" in record else f"{need('ctx_a', str)} {need('ctx_b', str)}".strip()
        choices, label, bench = need("endings", list), int(need("label", (int, str))), "hellaswag"
    elif "goal" in record:  # PIQA
        context, choices = need("goal", str), [need("sol1", str), need("sol2", str)]
        label, bench = int(need("label", (int, str))), "piqa"
    elif "answerKey" in record:  # ARC
        question = need("question", (dict, str))
        if isinstance(question, dict):
            context = need("stem", str, question)
            entries = need("choices", list, question)
            texts = [need("text", str, c) for c in entries]
            labels = [str(need("label", (str, int), c)) for c in entries]
        else:
            context, block = question, need("choices", dict)
            texts, labels = list(need("text", list, block)), [str(x) for x in need("label", list, block)]
        key = str(need("answerKey", (str, int)))
        if key not in labels:
            raise MultipleChoiceFormatError(f"{where}: answerKey {key!r} is not one of the choice labels {labels}")
        choices, label, bench = texts, labels.index(key), "arc"
    elif "passage" in record:  # BoolQ
        context = f"{need('passage', str)} {need('question', str)}?"
        choices, label, bench = ["no", "yes"], int(bool(need("answer", bool))), "boolq"
    else:
        raise MultipleChoiceFormatError(
            f"{where}: not a HellaSwag (endings), PIQA (goal), ARC (answerKey) or BoolQ (passage) record; "
            f"fields: {sorted(record)}")
    if len(choices) < 2 or not all(isinstance(c, str) and c.strip() for c in choices):
        raise MultipleChoiceFormatError(f"{where}: needs at least two non-empty choices, got {choices!r}")
    if not 0 <= label < len(choices):
        raise MultipleChoiceFormatError(f"{where}: label {label} is out of range for {len(choices)} choices")
    if not isinstance(context, str) or not context.strip():
        raise MultipleChoiceFormatError(f"{where}: the question/context text is empty")
    return MultipleChoiceItem(context.strip(), [c.strip() for c in choices], label, bench)


def load_multiple_choice(path: str | Path) -> list[MultipleChoiceItem]:
    """Read a JSONL file of any of the supported formats (see the module docstring)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"multiple-choice file {path} does not exist")
    items = []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as e:
            raise MultipleChoiceFormatError(f"{path}:{number}: not valid JSON ({e.msg})") from None
        if not isinstance(record, dict):
            raise MultipleChoiceFormatError(f"{path}:{number}: expected a JSON object, got {type(record).__name__}")
        items.append(_parse(record, f"{path}:{number}"))
    if not items:
        raise MultipleChoiceFormatError(f"{path}: no questions in the file")
    return items


@torch.no_grad()
def choice_losses(pipe, item: MultipleChoiceItem, n_levels: int = 16, seed: int = 0) -> list[float]:
    """The model's loss of each choice given the context (lower = more likely), common noise for all."""
    context = pipe.encode_text([item.context] * len(item.choices), "scene")
    choices = pipe.encode_text(item.choices, "caption")
    segments = [Segment(SegmentSpec.text(context.shape[1]), context, False),
                Segment(SegmentSpec.text(choices.shape[1]), choices, True)]
    return target_loss(pipe.network, pipe.diffusion, segments, n_levels, seed).tolist()


def multiple_choice_accuracy(pipe, items: list[MultipleChoiceItem], n_levels: int = 16, seed: int = 0,
                             progress: bool = False) -> dict[str, float]:
    """Accuracy per benchmark in ``items`` (and ``all``): the lowest-loss choice against the label."""
    from tqdm.auto import tqdm

    right: dict[str, list[bool]] = {}
    for item in tqdm(items, desc="multiple choice", disable=not progress):
        losses = choice_losses(pipe, item, n_levels, seed)
        right.setdefault(item.benchmark, []).append(min(range(len(losses)), key=losses.__getitem__) == item.label)
    out = {bench: sum(r) / len(r) for bench, r in right.items()}
    every = [x for r in right.values() for x in r]
    out["all"] = sum(every) / len(every)
    return out
