"""Every task of the one-checkpoint API returns the right types and shapes, and rejects bad input."""

import pytest
import torch

from mdm.config import load_config
from mdm.data.shapesworld import ShapesWorld, ShapesWorldConfig
from mdm.data.text_tokenizer import TextTokenizer
from mdm.nn.vq import VQVAE, VQConfig
from mdm.diffusion.sampling import SamplerConfig
from mdm.nn.layout import Modality
from mdm.pipeline import MDMPipeline
from mdm.tasks import Task, task_segments, tokenize_samples
from mdm.training.loop import build_model, train_loop

LENS = {"caption": 48, "question": 24, "answer": 8, "scene": 48}


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    samples = [ShapesWorld("train", 64, ShapesWorldConfig(image_size=16))[i] for i in range(64)]
    corpus = [t.text for s in samples for t in s.texts]
    tokenizer = TextTokenizer.train(corpus, 60, tmp_path_factory.mktemp("tok"), character_coverage=1.0)
    torch.manual_seed(0)
    vq = VQVAE(VQConfig(downsample=4, codebook_size=16, hidden=16, code_dim=8)).eval()
    data = tokenize_samples(samples, tokenizer, vq, LENS)
    config = load_config("tiny", ["train.steps=2", "train.batch_size=4", "train.log_every=1"])
    network, diffusion = build_model(config, {Modality.TEXT: tokenizer.vocab_size, Modality.IMAGE: 16})
    return samples, tokenizer, vq, data, config, network, diffusion


def test_tokenized_data_supports_the_shapesworld_tasks(setup):
    _, _, _, data, *_ = setup
    assert data.codes.shape == (64, 4, 4) and data.texts["caption"].shape == (64, 48)
    assert {t for t in Task if data.supports(t)} == set(Task) - {Task.CLASS_TO_IMAGE}
    segs = task_segments(Task.VQA, data.subset(torch.arange(3)))
    assert [s.target for s in segs] == [False, False, True]


def test_train_loop_runs_and_logs(setup, tmp_path):
    *_, data, config, network, diffusion = setup
    ema, history = train_loop(network, diffusion, data, config.train, log_path=tmp_path / "log.jsonl",
                              progress=False)
    assert len(history) == 2 and all("se" in h and h["loss"] > 0 for h in history)
    assert len((tmp_path / "log.jsonl").read_text().splitlines()) == 2


def test_every_task_returns_types_and_shapes(setup):
    samples, tokenizer, vq, data, config, network, diffusion = setup
    pipe = MDMPipeline(network, diffusion, tokenizer, vq, LENS, config)
    fast = SamplerConfig(steps=2)
    images = torch.stack([s.image for s in samples[:2]])
    out = pipe.text_to_image(["a red circle", "a small blue square"], fast)
    assert out.shape == (2, 3, 16, 16) and out.dtype == torch.float32 and 0 <= out.min() and out.max() <= 1
    captions = pipe.image_to_text(images, fast)
    assert len(captions) == 2 and all(isinstance(c, str) for c in captions)
    answers = pipe.vqa(images, ["what color is the circle?"] * 2, fast)
    assert len(answers) == 2 and all(isinstance(a, str) for a in answers)
    answers = pipe.text_to_text(["a red circle on the left"] * 2, ["where is the circle?"] * 2, fast)
    assert len(answers) == 2
    joint_images, joint_captions = pipe.joint(3, fast)
    assert joint_images.shape == (3, 3, 16, 16) and len(joint_captions) == 3
    digits = pipe.class_to_image([1, 2], fast)
    assert digits.shape == (2, 3, 16, 16)


def test_bad_input_is_rejected_with_a_message(setup):
    samples, tokenizer, vq, data, config, network, diffusion = setup
    pipe = MDMPipeline(network, diffusion, tokenizer, vq, LENS, config)
    with pytest.raises(ValueError, match="non-empty"):
        pipe.text_to_image([""])
    with pytest.raises(ValueError, match="non-empty"):
        pipe.text_to_image([])
    with pytest.raises(ValueError, match=r"images must be \(batch, 3, 16, 16\)"):
        pipe.image_to_text(torch.rand(1, 3, 32, 32))
    with pytest.raises(ValueError, match=r"images must be \(batch, 3, 16, 16\)"):
        pipe.image_to_text(torch.rand(1, 1, 16, 16))
    with pytest.raises(ValueError, match="2 images but 1 questions"):
        pipe.vqa(torch.stack([s.image for s in samples[:2]]), ["what color?"])
    with pytest.raises(ValueError, match=r"class labels .* \[0, 10\)"):
        pipe.class_to_image([10])
    with pytest.warns(UserWarning, match="truncat"):
        pipe.encode_text(["a red circle " * 40], "caption")


def test_patch_size_above_one_is_refused_not_ignored(setup):
    samples, tokenizer, vq, data, config, network, diffusion = setup
    from mdm.config import apply_overrides

    patched = apply_overrides(config, ["layout.patch_size=2"])
    with pytest.raises(NotImplementedError, match="patch_size = 2"):
        MDMPipeline(network, diffusion, tokenizer, vq, LENS, patched)


def test_question_first_moves_only_the_questions_of_vqa_and_text_to_text():
    from mdm.tasks import TASK_PARTS, task_parts

    for task in Task:
        assert task_parts(task) == TASK_PARTS[task]
        moved = task_parts(task, question_first=True)
        if task in (Task.VQA, Task.TEXT_TO_TEXT):
            assert [p for p, _ in moved][:2] == ["question", TASK_PARTS[task][0][0]] and moved[2] == ("answer", True)
        else:
            assert moved == TASK_PARTS[task]


@pytest.mark.parametrize("question_first", [False, True])
def test_training_and_answering_lay_out_the_question_alike(setup, monkeypatch, question_first):
    """The pipeline answers in the order the checkpoint trained with (``layout.question_first``)."""
    samples, tokenizer, vq, data, config, network, diffusion = setup
    monkeypatch.setattr(config.layout, "question_first", question_first)
    seen = []

    def run(segs, *args):
        seen.append([(s.spec.modality.value, s.spec.n_content, s.target) for s in segs])
        return [torch.zeros(2, s.spec.n_content, dtype=torch.long) for s in segs]

    pipe = MDMPipeline(network, diffusion, tokenizer, vq, LENS, config)
    monkeypatch.setattr(pipe, "_run", run)
    images = torch.stack([s.image for s in samples[:2]])
    pipe.vqa(images, ["what color is the circle?"] * 2)
    pipe.text_to_text(["a red circle on the left"] * 2, ["where is the circle?"] * 2)
    batch = data.subset(torch.arange(2))
    for task, answered in zip((Task.VQA, Task.TEXT_TO_TEXT), seen):
        trained = [(s.spec.modality.value, s.spec.n_content, s.target)
                   for s in task_segments(task, batch, question_first=question_first)]
        assert answered == trained
        assert (answered[0][1] == LENS["question"]) == question_first
