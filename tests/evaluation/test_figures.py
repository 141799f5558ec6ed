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
    path = figures.image_caption_grid(images, captions, tmp_path / "plain.png", referee=False)
    assert asked == [] and path.stat().st_size > 1000


def test_only_a_shapesworld_model_is_judged_by_the_referee():
    assert figures.referee_reads("shapesworld")
    for name in ("digits", "moving-digits", "imagefolder", "coco", "vqav2"):
        assert not figures.referee_reads(name), name
