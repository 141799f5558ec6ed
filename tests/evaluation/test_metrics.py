"""The evaluation metrics against hand-computed cases and the reference implementations they wrap."""

import json
import shutil

import pytest
import torch

from mdm.evaluation.captioning import cider, tokenize_caption
from mdm.evaluation.image_quality import FeatureNetwork, frechet_distance, image_quality, precision_recall
from mdm.evaluation.vqa_accuracy import exact_match, mean_vqa_accuracy, normalize_answer, vqa_accuracy

# ---------------------------------------------------------------- VQA


@pytest.mark.parametrize("raw,normal", [
    ("Two", "2"), ("A dog.", "dog"), ("the Red  ball!", "red ball"), ("black-and-white", "black and white"),
    ("dont know", "don't know"), ("1,000", "1000"), ("3.5", "3.5"), ("yes\n", "yes"), ("none", "0"),
])
def test_answer_normalisation_follows_the_official_rules(raw, normal):
    assert normalize_answer(raw) == normal


def test_vqa_accuracy_hand_computed_cases():
    # 3 of 10 humans said "2": leaving out one of those three leaves 2 -> 2/3; leaving out any of the
    # other seven leaves 3 -> 1. (3 * 2/3 + 7 * 1) / 10 = 0.9.
    humans = ["2"] * 3 + ["3"] * 7
    assert vqa_accuracy("two", humans) == pytest.approx(0.9)
    assert vqa_accuracy("3", humans) == pytest.approx(1.0)  # 7 agree: >= 3 in every leave-one-out subset
    # 1 of 10: leaving it out leaves 0; any other subset has it once -> 1/3. 9 * (1/3) / 10 = 0.3.
    assert vqa_accuracy("cat", ["cat"] + ["dog"] * 9) == pytest.approx(0.3)
    # 2 of 10: (2 * 1/3 + 8 * 2/3) / 10 = 0.6.
    assert vqa_accuracy("cat", ["cat"] * 2 + ["dog"] * 8) == pytest.approx(0.6)
    assert vqa_accuracy("bird", ["cat"] * 10) == 0.0
    # Disagreeing humans get the punctuation step ("black-and-white" counts as "black and white");
    # unanimous ones are compared as stored.
    assert vqa_accuracy("black and white", ["black-and-white"] * 4 + ["gray"] * 6) == pytest.approx(1.0)
    assert vqa_accuracy("black and white", ["black-and-white"] * 10) == 0.0
    assert vqa_accuracy("yes", ["Yes"] * 10) == 0.0
    assert mean_vqa_accuracy(["two", "bird"], [humans, ["cat"] * 10]) == pytest.approx(0.45)


def test_exact_match_normalises_both_sides():
    assert exact_match("Zero.", "zero") and exact_match("the top-left", "top left")
    assert not exact_match("top", "top-left")


def test_vqa_bad_input():
    with pytest.raises(ValueError, match="at least one human answer"):
        vqa_accuracy("x", [])
    with pytest.raises(ValueError, match="2 predictions but 1 questions"):
        mean_vqa_accuracy(["a", "b"], [["a"]])


# ---------------------------------------------------------------- CIDEr

CANDIDATES = ["a small red circle at the top-left", "a blue square and a green cross", "two shapes: a cross"]
REFERENCES = [["A small red circle at the top-left.", "at the top-left, a small red circle", "a red circle"],
              ["Two shapes: a blue square and a green cross.", "a blue square and a green cross"],
              ["a large yellow cross at the top", "one shape: a yellow cross (top)"]]


def test_cider_is_pycocoevalcaps_scorer_on_ptb_style_tokens():
    from pycocoevalcap.cider.cider import Cider

    # The tokens written out by hand as the PTB tokenizer gives them: lower case, punctuation dropped,
    # hyphenated words kept, brackets as -lrb- / -rrb-.
    gts = {0: ["a small red circle at the top-left", "at the top-left a small red circle", "a red circle"],
           1: ["two shapes a blue square and a green cross", "a blue square and a green cross"],
           2: ["a large yellow cross at the top", "one shape a yellow cross -lrb- top -rrb-"]}
    res = {0: ["a small red circle at the top-left"], 1: ["a blue square and a green cross"],
           2: ["two shapes a cross"]}
    expected_mean, expected = Cider().compute_score(gts, res)
    mean, per_caption = cider(CANDIDATES, REFERENCES)
    assert mean == pytest.approx(float(expected_mean)) and per_caption == pytest.approx(list(expected))
    assert per_caption[1] > per_caption[2] > 0  # an exact reference beats a partial one


@pytest.mark.skipif(shutil.which("java") is None, reason="the PTB tokenizer of pycocoevalcap needs Java")
def test_python_tokenizer_matches_the_java_ptb_tokenizer():
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

    texts = [c for refs in REFERENCES for c in refs] + CANDIDATES + ["The dog's ball isn't red, it's 3.5 cm... \"big\""]
    java = PTBTokenizer().tokenize({i: [{"caption": t}] for i, t in enumerate(texts)})
    assert [tokenize_caption(t) for t in texts] == [java[i][0] for i in range(len(texts))]
    # pycocoevalcap's own pipeline (Java PTB tokens, then its scorer) against ours.
    from pycocoevalcap.cider.cider import Cider

    gts = PTBTokenizer().tokenize({i: [{"caption": r} for r in refs] for i, refs in enumerate(REFERENCES)})
    res = PTBTokenizer().tokenize({i: [{"caption": c}] for i, c in enumerate(CANDIDATES)})
    own_mean, own_scores = Cider().compute_score(gts, res)
    mean, scores = cider(CANDIDATES, REFERENCES)
    assert mean == pytest.approx(float(own_mean)) and scores == pytest.approx(list(own_scores))
    assert cider(CANDIDATES, REFERENCES, tokenizer="ptb")[0] == pytest.approx(mean)


def test_cider_bad_input():
    with pytest.raises(ValueError, match="2 candidates but 1 reference lists"):
        cider(["a", "b"], [["a"]])
    with pytest.raises(ValueError, match=r"candidate\(s\) \[1\] have no reference"):
        cider(["a", "b"], [["a"], []])


# ---------------------------------------------------------------- FID, precision, recall


class _Pixels(FeatureNetwork):
    """A fixed feature network (means of 4x4 pixel blocks): FID's behaviour does not depend on training."""

    name, num_features = "pixel blocks", 16

    def embed(self, images):
        return torch.nn.functional.adaptive_avg_pool2d(images.float().mean(1, keepdim=True), 4).flatten(1)


def test_fid_is_zero_on_the_same_set_and_positive_on_a_shifted_one():
    g = torch.Generator().manual_seed(0)
    real = torch.rand(200, 1, 8, 8, generator=g)
    assert abs(frechet_distance(real, real.clone(), _Pixels())) < 1e-3
    shifted = (real + 0.2).clamp(0, 1)
    assert frechet_distance(real, shifted, _Pixels()) > 0.1
    other_draw = torch.rand(200, 1, 8, 8, generator=g)
    assert 0 < frechet_distance(real, other_draw, _Pixels()) < frechet_distance(real, shifted, _Pixels())


def test_precision_recall_of_a_collapsed_generator():
    g = torch.Generator().manual_seed(0)
    real = torch.randn(300, 2, generator=g)
    assert precision_recall(real, real.clone()) == (1.0, 1.0)
    collapsed = 0.05 * torch.randn(300, 2, generator=g)  # every sample near the mode: precise, no recall
    precision, recall = precision_recall(real, collapsed)
    assert precision > 0.95 and recall < 0.3
    far = torch.randn(300, 2, generator=g) + 10.0
    assert precision_recall(real, far) == (0.0, 0.0)


def test_image_quality_on_the_digit_classifier():
    from mdm.data.digits import DigitsDataset
    from mdm.evaluation.judges.digit_classifier import train_digit_classifier

    classifier, accuracy = train_digit_classifier(8, steps=300)
    real = DigitsDataset("test", 8).images
    same = image_quality(real[:150], real[150:300], classifier)
    noise = image_quality(real[:150], torch.rand(150, 1, 8, 8, generator=torch.Generator().manual_seed(0)),
                          classifier)
    assert same.fid < noise.fid and same.precision > noise.precision
    assert 1.0 <= noise.inception_score <= same.inception_score <= 10.0  # IS <= the number of classes
    assert set(same.scores()) == {"fid", "inception_score", "precision", "recall"}


def test_image_quality_bad_input():
    with pytest.raises(ValueError, match="differ in size"):
        image_quality(torch.rand(4, 1, 8, 8), torch.rand(4, 1, 16, 16), _Pixels())
    with pytest.raises(TypeError, match="float images"):
        frechet_distance(torch.zeros(4, 1, 8, 8, dtype=torch.uint8), torch.rand(4, 1, 8, 8), _Pixels())
    with pytest.raises(ValueError, match="at least 2 images"):
        frechet_distance(torch.rand(1, 1, 8, 8), torch.rand(4, 1, 8, 8), _Pixels())
