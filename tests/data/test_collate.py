"""Batching Samples (mdm.data.collate): stacked images, null labels, fixed-length text per role."""

from functools import partial

import pytest
import torch
from torch.utils.data import DataLoader

from mdm.data.collate import NO_LABEL, collate_samples
from mdm.data.sample import Role, Sample, TextSegment
from mdm.data.text_tokenizer import EOS_ID, PAD_ID, TextTokenizer

CORPUS = [
    f"{a} {c} {s} {p}."
    for a in ("A", "One", "The", "Every", "Some")
    for c in ("red", "green", "blue", "yellow", "purple")
    for s in ("circle", "square", "star", "triangle")
    for p in ("on the left", "on the right", "at the top", "in the middle", "below it")
] + ["What colour is the shape?", "How many shapes are there?", "Which one is bigger?", "yes", "no"] * 20


@pytest.fixture(scope="module")
def tok() -> TextTokenizer:
    return TextTokenizer.train(CORPUS, vocab_size=50)


def samples() -> list[Sample]:
    return [
        Sample(image=torch.rand(3, 4, 4), label=2, texts=[TextSegment(Role.CAPTION, "A red circle on the left."),
                                                          TextSegment(Role.CAPTION, "One red circle.")]),
        Sample(image=torch.rand(3, 4, 4), texts=[TextSegment(Role.QUESTION, "What colour is the shape?"),
                                                 TextSegment(Role.ANSWER, "red")],
               answers=["red"] * 10, meta={"question_id": 5}),
        Sample(image=torch.rand(3, 4, 4), label=0, texts=[TextSegment(Role.CAPTION, "")]),
    ]


def test_batch_contents(tok):
    batch_samples = samples()
    batch = collate_samples(batch_samples, tok, 24, [Role.CAPTION, "question", Role.ANSWER])
    assert torch.equal(batch["image"], torch.stack([s.image for s in batch_samples]))
    assert batch["label"].tolist() == [2, NO_LABEL, 0] and batch["label"].dtype == torch.long
    for role in ("caption", "question", "answer"):
        assert batch[role].shape == (3, 24) and batch[role].dtype == torch.long
        assert batch[f"{role}_len"].shape == (3,)
    # first caption only; the encode_fixed row; an empty caption is eos alone, a missing one all pad
    ids, n = tok.encode_fixed("A red circle on the left.", 24)
    assert torch.equal(batch["caption"][0], ids) and batch["caption_len"][0] == n
    assert batch["caption"][2].tolist() == [EOS_ID] + [PAD_ID] * 23 and batch["caption_len"][2] == 1
    assert (batch["caption"][1] == PAD_ID).all() and batch["caption_len"][1] == 0
    assert tok.decode(batch["question"][1]) == "What colour is the shape?"
    assert tok.decode(batch["answer"][1]) == "red"
    assert batch["answers"] == [None, ["red"] * 10, None]
    assert batch["meta"][1] == {"question_id": 5}
    assert "image_tokens" not in batch and "video" not in batch


def test_text_only_batch_and_no_roles(tok):
    chat = [Sample(texts=[TextSegment(Role.USER, "yes")]), Sample(texts=[TextSegment(Role.USER, "no")])]
    batch = collate_samples(chat, tok, 4, [Role.USER])
    assert "image" not in batch
    assert batch["user_len"].tolist() == [len(tok.encode("yes")) + 1, len(tok.encode("no")) + 1]
    images_only = collate_samples(samples(), None, 8)
    assert images_only["image"].shape == (3, 3, 4, 4) and "caption" not in images_only


def test_truncation_warns(tok):
    with pytest.warns(UserWarning, match="truncated to 3"):
        batch = collate_samples(samples(), tok, 3, [Role.CAPTION])
    assert batch["caption"][0, -1] == EOS_ID and batch["caption_len"][0] == 3


def test_errors_name_the_sample(tok):
    bad = samples()
    bad[2].image = torch.rand(3, 5, 4)
    with pytest.raises(ValueError, match=r"sample 2 has image of shape \(3, 5, 4\)"):
        collate_samples(bad, tok, 8)
    bad[1].image = None
    with pytest.raises(ValueError, match="sample 1 has no image"):
        collate_samples(bad, tok, 8)
    with pytest.raises(ValueError, match="need a tokenizer"):
        collate_samples(samples(), None, 8, [Role.CAPTION])
    with pytest.raises(ValueError, match="empty"):
        collate_samples([], tok, 8)
    with pytest.raises(ValueError, match="'Ж'"):
        collate_samples([Sample(texts=[TextSegment(Role.TEXT, "Ж")])], tok, 8, [Role.TEXT], strict=True)


def test_as_dataloader_collate_fn(tok):
    loader = DataLoader(samples(), batch_size=2, collate_fn=partial(collate_samples, tokenizer=tok, text_len=32,
                                                                    roles=[Role.CAPTION]))
    sizes = [b["caption"].shape for b in loader]
    assert sizes == [(2, 32), (1, 32)]
