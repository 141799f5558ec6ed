"""The caption grid asks the ShapesWorld referee about its captions only when told to, and only for ShapesWorld."""
import torch

from mdm.evaluation import figures


def test_caption_grid_asks_the_referee_only_when_told(tmp_path, monkeypatch):
    asked = []
    monkeypatch.setattr(figures, "score_caption", lambda image, caption: asked.append(caption) or {"all_true": True})
    images, captions = torch.rand(2, 3, 8, 8), ["a red circle", "a small blue square"]
    figures.image_caption_grid(images, captions, tmp_path / "judged.png", referee=True)
    assert asked == captions
    asked.clear()
    path = figures.image_caption_grid(images, captions, tmp_path / "plain.png")
    assert asked == [] and path.stat().st_size > 1000


def test_only_a_shapesworld_model_is_judged_and_its_title_says_how():
    title, referee = figures.judged_grid_title("joint", "shapesworld")
    assert referee and title == f"joint\n({figures.REFEREE_LEGEND})"
    for name in ("digits", "moving-digits", "imagefolder", "coco", "vqav2"):
        assert figures.judged_grid_title("joint", name) == ("joint", False), name
