"""A chat dialogue as a text->text sample: the last reply is the answer, the user turn before it the question."""

from pathlib import Path

import pytest

from mdm.data.formats import ChatJsonlDataset, text_to_text_sample
from mdm.data.sample import Role, Sample, TextSegment

FIXTURE = Path(__file__).parent.parent / "fixtures" / "chat.jsonl"


def test_every_dialogue_of_the_fixture_becomes_scene_question_answer():
    samples = [text_to_text_sample(d) for d in ChatJsonlDataset(FIXTURE)]
    assert len(samples) == 10
    assert all([t.role for t in s.texts] == [Role.SCENE, Role.QUESTION, Role.ANSWER] for s in samples)
    first = samples[0]
    assert (first.text("scene"), first.text("question"), first.text("answer")) == ("", "what color is the sky?",
                                                                                    "blue")
    snow = samples[2]  # the system prompt is the context
    assert snow.text("scene") == "answer in one word" and snow.text("answer") == "white"
    fruit = samples[3]  # earlier exchanges are the context, one turn a line
    assert fruit.text("scene") == "user: name a fruit\nassistant: apple" and fruit.text("answer") == "pear"
    cat = samples[8]  # a trailing user turn has no reply to learn: the last answered one is the question
    assert cat.text("question") == "how many legs has a cat?" and cat.text("answer") == "four"


def test_a_dialogue_without_an_answered_user_turn_is_an_error_naming_its_line():
    lonely = Sample(texts=[TextSegment(Role.USER, "hello?")], meta={"path": "chat.jsonl", "line": 7})
    with pytest.raises(ValueError, match="chat.jsonl: line 7: a dialogue needs an assistant turn"):
        text_to_text_sample(lonely)
