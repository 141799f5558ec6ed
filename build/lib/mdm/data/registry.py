"""The built-in datasets by name: what ``data.name`` of a config, ``mdm data preview`` and ``mdm vq train`` load.

``shapesworld`` (scenes, captions, questions at a difficulty level, DESIGN.md §6), ``digits``
(labelled digit images) and ``moving-digits`` (clips of a bouncing digit, DESIGN.md §5). A user's
own data (ImageFolder, COCO, VQAv2, chat JSONL) is read by :mod:`mdm.data.formats` instead.
"""

from __future__ import annotations

from mdm.data.digits import DigitsDataset
from mdm.data.moving_digits import MovingDigitsDataset
from mdm.data.shapesworld import ShapesWorld, ShapesWorldConfig, level_config

BUILTIN = ("shapesworld", "digits", "moving-digits")


def shapesworld_config(level: str = "hard", image_size: int | None = None,
                       question_kinds: tuple[str, ...] = ()) -> ShapesWorldConfig:
    """The ShapesWorld generator settings of a level (:mod:`mdm.data.shapesworld_levels`), drawn at
    ``image_size`` (None: the level's own) with questions of ``question_kinds`` (empty: the level's)."""
    options = {}
    if image_size:
        options["image_size"] = image_size
    if question_kinds:
        options["question_kinds"] = tuple(question_kinds)
    return level_config(level, **options)


def load_builtin(name: str, split: str = "train", size: int = 1000, seed: int = 0, image_size: int | None = None,
                 channels: int = 1, frames: int = 8, motion_step: int = 1, digit_size: int = 0,
                 question_kinds: tuple[str, ...] = (), level: str = "hard"
                 ) -> ShapesWorld | DigitsDataset | MovingDigitsDataset:
    """A built-in dataset by name (``shapesworld``, ``digits``, ``moving-digits``).

    ``channels`` is the digits'; ``frames`` the clip length of moving digits, whose
    canvas is ``image_size`` (default 32) with digits of ``digit_size`` px (0: half the
    canvas), moving by multiples of ``motion_step`` px at up to 3 px (or one step) a frame.
    ShapesWorld draws ``level``'s scenes (:func:`shapesworld_config`) with questions of
    ``question_kinds`` (empty: the level's).
    """
    if name == "shapesworld":
        config = shapesworld_config(level, image_size, question_kinds)
        return ShapesWorld(split, size=size, config=config, seed=seed)
    if name == "digits":
        return DigitsDataset(split, image_size=image_size or 16, channels=channels, seed=seed)
    if name == "moving-digits":
        canvas = image_size or 32
        digit = digit_size or canvas // 2
        return MovingDigitsDataset(split, length=size, frames=frames, canvas_size=canvas, digit_size=digit,
                                   channels=channels, seed=seed, motion_step=motion_step,
                                   max_speed=max(motion_step, min(3, canvas - digit) // motion_step * motion_step))
    raise ValueError(f"unknown dataset {name!r}; built-in datasets: {', '.join(BUILTIN)}")
