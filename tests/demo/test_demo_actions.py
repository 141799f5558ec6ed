"""What the demo's buttons do (mdm.demo.actions), without Gradio or a browser: results, refusals, bad uploads."""

import copy
import math

import pytest
import torch
from PIL import Image

from mdm.demo.actions import (DISPLAY_SIDE, MAX_IMAGES, DemoInputError, DemoSession, read_upload, task_refusals,
                              to_pil)
from mdm.pipeline import MDMPipeline
from mdm.tasks import Task

TRAINED = [Task.TEXT_TO_IMAGE, Task.IMAGE_TO_TEXT, Task.VQA, Task.TEXT_TO_TEXT, Task.JOINT]


@pytest.fixture(scope="module")
def pipe(demo_run):
    return MDMPipeline.from_pretrained(demo_run)


@pytest.fixture
def session(pipe):
    return DemoSession(pipe)


@pytest.fixture
def red_png(tmp_path):
    path = tmp_path / "red.png"
    Image.new("RGB", (40, 30), (255, 0, 0)).save(path)
    return path


def test_the_tasks_are_those_the_checkpoint_trained(session):
    assert session.tasks == TRAINED  # in the page's order
    assert list(session.refusals) == [Task.CLASS_TO_IMAGE]
    assert "never trained class_to_image" in session.refusals[Task.CLASS_TO_IMAGE]
    with pytest.raises(DemoInputError, match="class → image is not available: this checkpoint never trained"):
        session.class_to_image(3, 1, 2, 1.0, 0)


def test_a_model_without_the_parts_of_a_task_is_refused_it(pipe):
    """Without a record of its tasks, a model is refused what it has no parts for, and only that."""
    unrecorded = copy.copy(pipe)
    unrecorded.trained_tasks = None
    assert task_refusals(unrecorded) == {}  # the tiny preset has class labels, a tokenizer and a VQ-VAE
    no_text = copy.copy(unrecorded)
    no_text.tokenizer = None
    assert set(task_refusals(no_text)) == {Task.TEXT_TO_IMAGE, Task.IMAGE_TO_TEXT, Task.VQA, Task.TEXT_TO_TEXT,
                                           Task.JOINT}
    assert DemoSession(no_text).tasks == [Task.CLASS_TO_IMAGE]
    with pytest.raises(DemoInputError, match="text → text is not available: this model has no text tokenizer"):
        DemoSession(no_text).text_to_text("a red circle", "what color?", 2, 1.0, 0)
    no_classes = copy.deepcopy(unrecorded)
    no_classes.config.backbone.n_classes = 0
    assert "no class labels" in task_refusals(no_classes)[Task.CLASS_TO_IMAGE]


def test_every_button_returns_what_the_page_shows_with_progress_per_step(session, red_png):
    steps = []
    images = session.text_to_image("a red circle", 3, 4, 1.0, 0, on_step=lambda d, t: steps.append((d, t)))
    assert steps == [(1, 4), (2, 4), (3, 4), (4, 4)]
    side = 16 * (DISPLAY_SIDE // 16)  # the tiny preset's 16 px, enlarged by a whole factor
    assert len(images) == 3 and all(im.size == (side, side) and im.mode == "RGB" for im in images)
    again = session.text_to_image("a red circle", 3, 4, 1.0, 0)
    assert [im.tobytes() for im in again] == [im.tobytes() for im in images]  # the seed fixes the samples
    seen, caption = session.caption(str(red_png), 2, 1.0, 0)
    assert seen.size == (side, side) and seen.getpixel((side // 2, side // 2)) == (255, 0, 0)
    assert isinstance(caption, str) and caption.strip()
    _, answer = session.vqa(red_png, "what color is it?", 2, 2.0, 1)
    assert answer.strip()
    assert session.text_to_text("a red circle", "what color is the circle?", 2, 1.0, 0).strip()
    pairs = session.joint(2, 2, 1.0, 0)
    assert len(pairs) == 2 and all(im.size == (side, side) and text.strip() for im, text in pairs)
    assert session.pipe.on_step is None  # the hook is the call's, not left behind


def test_bad_form_values_are_refused_before_sampling(session):
    calls = []

    def t2i(prompt="a red circle", n=1, steps=2, guidance=1.0, seed=0):
        return session.text_to_image(prompt, n, steps, guidance, seed, on_step=lambda d, t: calls.append(d))

    for kwargs, message in [({"prompt": "  "}, "write a prompt first"), ({"prompt": None}, "write a prompt"),
                            ({"n": 0}, "number of images must be a whole number from 1 to 8"),
                            ({"n": MAX_IMAGES + 1}, "from 1 to 8"), ({"n": 2.5}, "whole number"),
                            ({"steps": 0}, "steps must be a whole number from 1 to 1000"),
                            ({"steps": math.nan}, "steps"), ({"guidance": -1}, "guidance must be a number from 0"),
                            ({"guidance": math.nan}, "guidance"), ({"guidance": "strong"}, "guidance must be a number from 0 to 100, got strong"),
                            ({"seed": -1}, "seed must be a whole number")]:
        with pytest.raises(DemoInputError, match=message):
            t2i(**kwargs)
    assert calls == []
    with pytest.raises(DemoInputError, match="write a question first"):
        session.text_to_text("a red circle", "", 2, 1.0, 0)
    with pytest.raises(DemoInputError, match="upload an image first"):
        session.vqa(None, "what color?", 2, 1.0, 0)


def test_an_upload_that_is_not_a_small_image_is_refused_with_a_message(tmp_path, red_png, undecodable_png):
    assert read_upload(red_png, 16, 3).shape == (3, 16, 16) and read_upload(red_png, 16, 1).shape == (1, 16, 16)
    with pytest.raises(DemoInputError, match="upload an image first"):
        read_upload(None, 16, 3)
    text = tmp_path / "notes.png"
    text.write_text("a shopping list, not a picture")
    with pytest.raises(DemoInputError, match=r"notes.png is not an image \(PNG, JPEG"):
        read_upload(text, 16, 3)
    with pytest.raises(DemoInputError, match=r"red.png is 0.0 MB, over the 1e-05 MB limit"):
        read_upload(red_png, 16, 3, max_mb=1e-5)
    wide = tmp_path / "wide.png"
    Image.new("1", (6000, 3000)).save(wide)  # a few kB on disk, 18 million pixels once decoded
    with pytest.raises(DemoInputError, match="wide.png is 6000x3000 pixels, over the demo's limit of 16 million"):
        read_upload(wide, 16, 3)
    broken = tmp_path / "broken.png"
    undecodable_png(broken)
    with pytest.raises(DemoInputError, match="broken.png cannot be decoded as an image"):
        read_upload(broken, 16, 3)
    with pytest.raises(DemoInputError, match="gone.png: the upload cannot be read"):
        read_upload(tmp_path / "gone.png", 16, 3)


def test_to_pil_enlarges_by_a_whole_factor_and_keeps_grey_images_grey():
    grey = to_pil(torch.full((1, 16, 16), 0.5), side=100)
    assert grey.mode == "L" and grey.size == (96, 96) and grey.getpixel((0, 0)) == 128
    assert to_pil(torch.rand(3, 300, 300), side=100).size == (300, 300)  # never shrunk


def test_the_upload_limit_must_be_positive(pipe):
    with pytest.raises(ValueError, match="upload limit must be > 0 MB"):
        DemoSession(pipe, max_upload_mb=0)
