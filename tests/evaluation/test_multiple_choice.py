"""Multiple-choice benchmarks: the four JSONL formats, their errors, and ELBO ranking on a planted toy model."""

import json

import pytest
import torch

from mdm.config import load_config
from mdm.data.text_tokenizer import TextTokenizer
from mdm.diffusion.likelihood import target_loss
from mdm.diffusion.multimodal import Segment
from mdm.evaluation.multiple_choice import (MultipleChoiceFormatError, choice_losses, load_multiple_choice,
                                            multiple_choice_accuracy)
from mdm.nn.layout import Modality, SegmentSpec
from mdm.pipeline import MDMPipeline
from mdm.training.loop import build_model

RECORDS = [
    {"ctx": "a man opens the door and", "endings": ["walks in", "eats the door", "flies", "melts"], "label": 0},
    {"goal": "dry wet hands", "sol1": "use a towel", "sol2": "use water", "label": 0},
    {"question": {"stem": "what colour is the sky?", "choices": [{"text": "green", "label": "A"},
                                                                 {"text": "blue", "label": "B"}]}, "answerKey": "B"},
    {"question": "what is 1 + 1?", "choices": {"text": ["2", "3"], "label": ["A", "B"]}, "answerKey": "A"},
    {"passage": "the sky is blue", "question": "is the sky blue", "answer": True},
]


def _write(path, records):
    path.write_text("\n".join(json.dumps(r) if not isinstance(r, str) else r for r in records) + "\n")
    return path


def test_the_four_formats_load(tmp_path):
    items = load_multiple_choice(_write(tmp_path / "mc.jsonl", RECORDS))
    assert [i.benchmark for i in items] == ["hellaswag", "piqa", "arc", "arc", "boolq"]
    assert [i.label for i in items] == [0, 0, 1, 0, 1]
    assert items[2].choices == ["green", "blue"] and items[4].choices == ["no", "yes"]
    assert items[4].context == "the sky is blue is the sky blue?"


@pytest.mark.parametrize("record,message", [
    ({"ctx": "x", "endings": ["a", "b"]}, r"mc.jsonl:1: missing field 'label'"),
    ({"goal": "x", "sol1": "a", "sol2": 3, "label": 0}, r"field 'sol2' must be str, got int"),
    ({"question": {"stem": "x", "choices": [{"text": "a", "label": "A"}]}, "answerKey": "C"},
     r"answerKey 'C' is not one of the choice labels \['A'\]"),
    ({"ctx": "x", "endings": ["a", "b"], "label": 5}, r"label 5 is out of range for 2 choices"),
    ({"prompt": "x"}, r"not a HellaSwag .* record; fields: \['prompt'\]"),
    ("{not json", r"mc.jsonl:1: not valid JSON"),
])
def test_bad_records_name_file_line_and_field(tmp_path, record, message):
    with pytest.raises(MultipleChoiceFormatError, match=message):
        load_multiple_choice(_write(tmp_path / "mc.jsonl", [record]))


def test_missing_and_empty_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_multiple_choice(tmp_path / "nope.jsonl")
    with pytest.raises(MultipleChoiceFormatError, match="no questions"):
        load_multiple_choice(_write(tmp_path / "empty.jsonl", [""]))


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    """A tiny untrained MDM whose text head is planted to prefer one word, wherever it is asked."""
    corpus = ["the sky is red", "the sky is blue", "the grass is green", "what colour is the sky"] * 20
    tokenizer = TextTokenizer.train(corpus, 26, tmp_path_factory.mktemp("tok"), character_coverage=1.0)
    config = load_config("tiny")
    network, diffusion = build_model(config, {Modality.TEXT: tokenizer.vocab_size})
    pipe = MDMPipeline(network.eval(), diffusion, tokenizer, None, {"scene": 24, "caption": 8}, config)
    return pipe, tokenizer


def test_elbo_ranking_picks_the_planted_answer(toy, tmp_path):
    pipe, tokenizer = toy
    # Plant "blue": raise the logits of the pieces that spell it and not "red" or "green".
    planted = set(tokenizer.encode("blue")) - set(tokenizer.encode("red")) - set(tokenizer.encode("green"))
    assert planted
    with torch.no_grad():
        pipe.network.heads["text"].bias[sorted(planted)] += 8.0
    records = [{"ctx": "what colour is the sky", "endings": ["red", "blue", "green"], "label": 1},
               {"goal": "the sky is", "sol1": "blue", "sol2": "green", "label": 0}]
    items = load_multiple_choice(_write(tmp_path / "mc.jsonl", records))
    assert multiple_choice_accuracy(pipe, items, n_levels=4) == {"hellaswag": 1.0, "piqa": 1.0, "all": 1.0}
    losses = choice_losses(pipe, items[0], n_levels=4)
    assert losses[1] < min(losses[0], losses[2]) - 1.0  # by a margin, not by noise
    assert choice_losses(pipe, items[0], n_levels=4) == losses  # seeded: the same numbers again


def test_target_loss_needs_states_and_a_target(toy):
    pipe, _ = toy
    ids = pipe.encode_text(["the sky"], "caption")
    with pytest.raises(ValueError, match="at least one segment must be a target"):
        target_loss(pipe.network, pipe.diffusion, [Segment(SegmentSpec.text(8), ids, False)])
    with pytest.raises(ValueError, match="n_levels must be >= 1"):
        target_loss(pipe.network, pipe.diffusion, [Segment(SegmentSpec.text(8), ids, True)], n_levels=0)
