"""ShapesWorld (mdm.data.shapesworld): determinism, splits, hold-outs, scene validity, text/scene consistency."""

import re

import numpy as np
import pytest
import torch

from mdm.evaluation.judges.referee import answer_from_objects
from mdm.data.sample import Role, Sample
from mdm.data.shapesworld import (CAPTION_TEMPLATES, COLORS, NUMBER_WORDS, POSITIONS, QUESTION_KINDS, RGB, SHAPES,
                                  SIZES, ShapesWorld, ShapesWorldConfig, caption, describe_scene, level_config,
                                  place_phrase, position_of, question_answer, radius, render, shape_mask)
from mdm.data.shapesworld_levels import LEVELS, grid_positions, level_image_size

HOLD_OUT = (("red", "circle"), ("blue", "triangle"))


def test_sample_format():
    s = ShapesWorld("train", 4)[0]
    assert isinstance(s, Sample)
    assert s.image.shape == (3, 32, 32) and s.image.dtype == torch.float32
    assert set(s.image.unique().tolist()) <= {0.0, 1.0}
    assert [t.role for t in s.texts] == [Role.CAPTION, Role.QUESTION, Role.ANSWER, Role.SCENE]
    assert s.answers == [s.text(Role.ANSWER)]
    assert set(s.meta["objects"][0]) == {"shape", "color", "size", "position", "center"}


def test_same_index_same_sample_in_any_order():
    a, b = ShapesWorld("train", 50), ShapesWorld("train", 50)
    later = [b[i] for i in (49, 7, 3)]  # another access order must not matter
    for i, s in zip((49, 7, 3), later):
        t = a[i]
        assert torch.equal(s.image, t.image)
        assert s.texts == t.texts and s.meta == t.meta
    assert torch.equal(a[-1].image, a[49].image)


def test_splits_and_seeds_differ():
    splits = [ShapesWorld(split, 20) for split in ("train", "val", "test")] + [ShapesWorld("train", 20, seed=1)]
    for i in range(20):
        scenes = [ds[i].meta["objects"] for ds in splits]
        assert all(scenes[j] != scenes[k] for j in range(4) for k in range(j + 1, 4)), i


def test_hold_out_only_in_compositional_split():
    config = ShapesWorldConfig(hold_out=[list(p) for p in HOLD_OUT])  # as YAML gives it
    assert config.hold_out == HOLD_OUT
    for split in ("train", "val", "test"):
        ds = ShapesWorld(split, 300, config)
        pairs = {(o["color"], o["shape"]) for i in range(len(ds)) for o in ds[i].meta["objects"]}
        assert not pairs & set(HOLD_OUT), split
    comp = ShapesWorld("compositional", 100, config)
    seen = set()
    for i in range(len(comp)):
        pairs = {(o["color"], o["shape"]) for o in comp[i].meta["objects"]}
        assert pairs & set(HOLD_OUT)
        seen |= pairs & set(HOLD_OUT)
    assert seen == set(HOLD_OUT)


@pytest.mark.parametrize("image_size, max_objects", [(32, 2), (16, 2), (16, 4), (64, 4)])
def test_scenes_are_valid_and_rendered_as_described(image_size, max_objects):
    config = ShapesWorldConfig(image_size=image_size, max_objects=max_objects, shapes=SHAPES)
    ds = ShapesWorld("val", 200, config)
    counts = set()
    for i in range(len(ds)):
        s = ds[i]
        objects = s.meta["objects"]
        counts.add(len(objects))
        assert len({o["color"] for o in objects}) == len(objects)
        assert len({o["position"] for o in objects}) == len(objects)
        for o in objects:
            (x, y), r = o["center"], radius(o["size"], image_size)
            assert position_of(x, y, image_size) == o["position"]
            assert torch.equal(s.image[:, y, x], torch.tensor(RGB[o["color"]], dtype=torch.float32))
            colour_mask = (s.image == torch.tensor(RGB[o["color"]]).view(3, 1, 1)).all(0)
            assert colour_mask.sum().item() == shape_mask(o["shape"], 2 * r + 1, 2 * r + 1).sum()
        for j, a in enumerate(objects):  # boxes at least one pixel apart along x or y
            for b in objects[j + 1:]:
                reach = radius(a["size"], image_size) + radius(b["size"], image_size) + 1
                assert max(abs(a["center"][0] - b["center"][0]), abs(a["center"][1] - b["center"][1])) > reach
    assert counts == set(range(1, max_objects + 1))


def test_shape_masks_fill_their_box():
    for r in range(2, 11):
        for shape in SHAPES:
            m = shape_mask(shape, 2 * r + 1, 2 * r + 1)
            assert m.any(0).all() and m.any(1).all(), (shape, r)
            assert (m == m[:, ::-1]).all(), (shape, r)  # left-right symmetric
            assert m[r, r]


def test_captions_name_every_object():
    ds = ShapesWorld("test", 60, ShapesWorldConfig(max_objects=3))
    rng = np.random.default_rng(0)
    for i in range(len(ds)):
        objects = ds[i].meta["objects"]
        for template in CAPTION_TEMPLATES:
            text = caption(objects, rng, template)
            for o in objects:
                assert o["color"] in text and o["shape"] in text, (template, text)
                if template != "color_shape":
                    assert o["size"] in text and place_phrase(o["position"]) in text, (template, text)
            if template == "count":
                assert text.startswith(NUMBER_WORDS[len(objects)] + " shape")
    with pytest.raises(ValueError, match="valid: plain"):
        caption(objects, rng, "haiku")


def test_scene_text_is_complete_and_order_free():
    objects = ShapesWorld("test", 30)[3].meta["objects"]
    text = describe_scene(objects)
    assert describe_scene(objects[::-1]) == text
    assert text.startswith(NUMBER_WORDS[len(objects)])
    for o in objects:
        assert f"a {o['size']} {o['color']} {o['shape']} {place_phrase(o['position'])}." in text


def test_questions_are_unambiguous_one_word_and_consistent():
    vocab = {"color": COLORS, "shape": SHAPES, "size": SIZES, "position": POSITIONS, "count": NUMBER_WORDS}
    ds = ShapesWorld("train", 150, ShapesWorldConfig(max_objects=3))
    rng = np.random.default_rng(1)
    kinds = set()
    for i in range(len(ds)):
        s = ds[i]
        objects = s.meta["objects"]
        kinds.add(s.meta["question_kind"])
        assert answer_from_objects(objects, s.text(Role.QUESTION)) == s.text(Role.ANSWER)
        for kind in QUESTION_KINDS:
            question, answer = question_answer(objects, rng, kind)
            assert answer in vocab[kind] and " " not in answer
            # the referent is unique: the answer does not depend on which matching object comes first
            assert answer_from_objects(objects, question) == answer_from_objects(objects[::-1], question) == answer
    assert kinds == set(QUESTION_KINDS)


def test_render_requested_objects_without_center():
    image = render([{"shape": "circle", "color": "red", "size": "large", "position": "top-left"}], 16)
    ys, xs = torch.nonzero(image[0]).unbind(1)
    assert position_of((xs.min() + xs.max()).item() / 2, (ys.min() + ys.max()).item() / 2, 16) == "top-left"
    with pytest.raises(ValueError, match="does not fit"):
        render([{"shape": "square", "color": "red", "size": "large", "center": (1, 1)}], 32)
    with pytest.raises(ValueError, match="valid: red"):
        render([{"shape": "square", "color": "purple", "size": "large", "center": (16, 16)}], 32)


@pytest.mark.parametrize("kwargs, pattern", [
    ({"hold_out": [("purple", "circle")]}, "unknown hold_out color 'purple'; valid: red, green, blue"),
    ({"hold_out": [("red", "hexagon")]}, "unknown hold_out shape 'hexagon'; valid: square, circle"),
    ({"hold_out": ["red"]}, "pairs"),
    ({"colors": ("red", "mauve")}, "valid: red"),
    ({"image_size": 8}, ">= 16"),
    ({"min_objects": 3, "max_objects": 2}, "min_objects"),
    ({"max_objects": 5}, "max_objects <= 4"),
    ({"colors": ("red",), "max_objects": 2}, "needs that many colours"),
    ({"question_kinds": ("colour",)}, "unknown question kind in config.question_kinds 'colour'; valid: color"),
    ({"question_kinds": ()}, "question_kinds must be non-empty"),
    ({"sizes": ("huge",)}, "unknown size in config.sizes 'huge'; valid: small, large"),
    ({"sizes": ()}, "config.sizes must be non-empty"),
    ({"sizes": ("large",)}, "a size question needs two sizes"),
    ({"grid": (4, 1)}, r"grid must be \(columns, rows\) of 1 to 3 each"),
    ({"grid": (2, 1), "max_objects": 3}, r"max_objects <= 2 \(one object a cell of grid \(2, 1\)\)"),
])
def test_config_errors(kwargs, pattern):
    with pytest.raises(ValueError, match=pattern):
        ShapesWorldConfig(**kwargs)


def test_question_kinds_restrict_the_questions_and_keep_the_scenes():
    every = ShapesWorld("train", 200)
    some = ShapesWorld("train", 200, ShapesWorldConfig(question_kinds=["color", "count"]))  # a YAML list
    assert {every[i].meta["question_kind"] for i in range(200)} == set(QUESTION_KINDS)
    assert {some[i].meta["question_kind"] for i in range(200)} == {"color", "count"}
    for i in range(200):  # the same scenes; the question is drawn from fewer kinds (and the caption's order after it)
        assert torch.equal(every[i].image, some[i].image) and every[i].meta["objects"] == some[i].meta["objects"]
        assert every[i].text(Role.SCENE) == some[i].text(Role.SCENE)
        assert every[i].meta["caption_template"] == some[i].meta["caption_template"]
        question, answer = some[i].text(Role.QUESTION), some[i].text(Role.ANSWER)
        assert answer_from_objects(some[i].meta["objects"], question) == answer
    # the default draw is the one from before question_kinds existed (recorded from that code)
    assert [every[i].text(Role.QUESTION) for i in range(4)] == [
        "what color is the triangle at the bottom-left?", "what shape is at the top?",
        "what shape is the green object?", "where is the cross?"]


def test_question_kinds_reach_the_training_samples():
    from mdm.config import load_config
    from mdm.training.prepare import load_samples

    config = load_config("shapesworld", ["data.question_kinds=[count]", "data.train_size=30"])
    for split in ("train", "val"):
        assert {s.meta["question_kind"] for s in load_samples(config, split)} == {"count"}


def test_dataset_errors():
    with pytest.raises(ValueError, match="valid: train, val, test, compositional"):
        ShapesWorld("dev", 3)
    with pytest.raises(ValueError, match="hold_out"):
        ShapesWorld("compositional", 3)
    with pytest.raises(IndexError):
        ShapesWorld("train", 3)[3]
    with pytest.raises(ValueError, match="valid: color"):
        question_answer([{"shape": "circle", "color": "red", "size": "small", "position": "left"}],
                        np.random.default_rng(0), "texture")


# The difficulty levels (data.level, DESIGN.md §6): presets of the one generator, each checked against its own
# constraints; hard is the generator of before the levels.
LEVEL_RULES = {  # image size, object counts, colours, shapes, sizes, positions, centres (None: jittered)
    "easy": (32, {1, 2}, {"red", "green", "blue", "yellow"}, {"square", "circle", "triangle"}, {"large"},
             {"left", "right"}, {"left": (8, 16), "right": (24, 16)}),
    "medium": (32, {1, 2, 3}, {"red", "green", "blue", "yellow", "white"}, {"square", "circle", "triangle", "cross"},
               {"small", "large"}, {"top-left", "top-right", "bottom-left", "bottom-right"},
               {"top-left": (8, 8), "top-right": (24, 8), "bottom-left": (8, 24), "bottom-right": (24, 24)}),
    "hard": (16, {1, 2}, set(COLORS), {"square", "circle", "triangle", "cross"}, set(SIZES), set(POSITIONS), None),
}
LEVEL_KINDS = {"easy": {"color", "shape", "count", "position"}, "medium": set(QUESTION_KINDS),
               "hard": set(QUESTION_KINDS)}


@pytest.mark.parametrize("level", list(LEVELS))
def test_each_level_keeps_its_own_constraints_over_500_scenes(level):
    size, counts, colors, shapes, sizes, positions, centers = LEVEL_RULES[level]
    config = level_config(level)
    assert level_image_size(level) == config.image_size == size and set(config.positions) == positions
    ds = ShapesWorld("train", 500, config, seed=2)
    seen = {"count": set(), "color": set(), "shape": set(), "size": set(), "position": set(), "kind": set()}
    words = {w for c in COLORS + SHAPES + SIZES + POSITIONS for w in c.split("-")}
    allowed = {w for c in colors | shapes | sizes | positions for w in c.split("-")}
    for i in range(len(ds)):
        s = ds[i]
        objects = s.meta["objects"]
        assert s.image.shape == (3, size, size)
        seen["count"].add(len(objects))
        seen["kind"].add(s.meta["question_kind"])
        for o in objects:
            for key in ("color", "shape", "size", "position"):
                seen[key].add(o[key])
            assert position_of(*o["center"], size, config.grid) == o["position"]
            if centers is not None:
                assert o["center"] == centers[o["position"]], o
            (x, y), r = o["center"], radius(o["size"], size)
            colour_mask = (s.image == torch.tensor(RGB[o["color"]]).view(3, 1, 1)).all(0)
            assert colour_mask.sum().item() == shape_mask(o["shape"], 2 * r + 1, 2 * r + 1).sum()
            assert torch.equal(s.image[:, y, x], torch.tensor(RGB[o["color"]], dtype=torch.float32))
        # every text speaks the level's vocabulary only, and the answer is right for the scene
        for text in (s.text(Role.CAPTION), s.text(Role.QUESTION), s.text(Role.SCENE)):
            used = set(re.findall(r"[a-z]+", text)) & words  # "top-left" counts as "top" and "left"
            assert used <= allowed, (text, used - allowed)
        assert answer_from_objects(objects, s.text(Role.QUESTION)) == s.text(Role.ANSWER)
    assert seen["count"] == counts and seen["color"] == colors and seen["shape"] == shapes
    assert seen["size"] == sizes and seen["position"] == positions
    assert seen["kind"] == LEVEL_KINDS[level] == set(config.question_kinds)


def test_hard_is_the_default_generator_at_16_px():
    hard, default = level_config("hard"), ShapesWorldConfig(image_size=16)
    assert hard == default and ShapesWorldConfig() == ShapesWorldConfig(image_size=32)
    for split in ("train", "test"):
        a, b = ShapesWorld(split, 200, hard, seed=5), ShapesWorld(split, 200, default, seed=5)
        for i in range(200):
            assert torch.equal(a[i].image, b[i].image) and a[i].texts == b[i].texts and a[i].meta == b[i].meta
    # and the scenes of before the levels existed (recorded from that code)
    ds = ShapesWorld("train", 3, hard)
    assert [ds[i].text(Role.CAPTION) for i in range(3)] == [
        "a large cyan cross at the bottom-right and a small blue triangle on the left",
        "a small green circle at the top and a small blue triangle on the left", "a green circle"]
    assert ds[1].meta["objects"] == [
        {"shape": "circle", "color": "green", "size": "small", "position": "top", "center": (8, 3)},
        {"shape": "triangle", "color": "blue", "size": "small", "position": "left", "center": (2, 6)}]


def test_grids_name_their_cells_with_the_nine_position_words():
    assert grid_positions((3, 3)) == POSITIONS
    assert grid_positions((2, 1)) == ("left", "right")
    assert grid_positions((2, 2)) == ("top-left", "top-right", "bottom-left", "bottom-right")
    assert grid_positions((1, 3)) == ("top", "center", "bottom")
    assert [position_of(x, 5, 32, (2, 1)) for x in (0, 15, 16, 31)] == ["left", "left", "right", "right"]
    with pytest.raises(ValueError, match="unknown ShapesWorld level 'extreme'; valid: easy, medium, hard"):
        level_config("extreme")


def test_the_level_reaches_the_training_samples_and_fixes_the_image_size():
    from mdm.config import ConfigError, load_config
    from mdm.training.prepare import load_samples, prepare_data

    config = load_config("shapesworld", ["data.level=easy", "layout.image_size=32", "data.train_size=40"])
    for split in ("train", "val"):
        samples = load_samples(config, split)
        assert {o["position"] for s in samples for o in s.meta["objects"]} == {"left", "right"}
        assert {s.image.shape[-1] for s in samples} == {32}
        assert "size" not in {s.meta["question_kind"] for s in samples}
    for level, size in (("easy", 16), ("medium", 16)):  # hard draws at any size, as before levels
        wrong = load_config("shapesworld", [f"data.level={level}", f"layout.image_size={size}"])
        with pytest.raises(ConfigError, match=rf"layout.image_size = {size}, but data.level {level} draws "
                                              rf"ShapesWorld at {level_image_size(level)} px"):
            prepare_data(wrong, progress=False, log=lambda _: None)
