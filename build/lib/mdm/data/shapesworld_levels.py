"""ShapesWorld's named difficulty levels and its position grids (DESIGN.md §6).

A level is one config key, ``data.level``, and only a preset of
:class:`mdm.data.shapesworld.ShapesWorldConfig`'s parameters: every level's
scenes, captions, questions, answers and scene texts come from the same
generator and the same templates, which speak each level's vocabulary (its
colours, shapes, sizes and position words). The referee
(:mod:`mdm.evaluation.judges.referee`) reads every level: it needs only the level's position
grid (:func:`mdm.evaluation.judges.referee.referee_options`); the image size it reads off the
image.

=======  =====  ========  =======  =======  ======  ======  ==================================
level    image  grid      objects  colours  shapes  sizes   question kinds
=======  =====  ========  =======  =======  ======  ======  ==================================
easy     32 px  2x1, no   1-2      4        3       large   color, shape, count, position
                jitter
medium   32 px  2x2, no   1-3      5        4       2       all five
                jitter
hard     16 px  3x3       1-2      7        4       2       all five (the generator's defaults)
=======  =====  ========  =======  =======  ======  ======  ==================================

* ``easy`` is the world of the quickstart (DESIGN.md §6): two places on one horizontal line
  ("left", "right"; at 32 px the object centres are pixels (8, 16) and
  (24, 16)), the four colours red, green, blue, yellow (corners of the RGB cube,
  which the referee's per-channel threshold tells apart exactly, and the most
  familiar names), square, circle and triangle (the three most different
  templates), one size ("large", an 11-pixel box). With one size a
  size question has one possible answer, so easy has none; the texts still say
  "large" so that every level's captions come from the same templates.
* ``medium`` adds places (the 2x2 quadrants, centres at (8, 8), (24, 8),
  (8, 24), (24, 24)), a third object, white (one channel away from yellow only,
  where cyan and magenta are one channel away from two of the four), the cross,
  the small size (a 7-pixel box) and size questions.
* ``hard`` is the generator's defaults, drawn at 16 px by its preset (and, as
  before levels, at any ``layout.image_size``): the benchmark of the longer runs,
  unchanged so that their results stay comparable.

Without jitter (easy, medium) an object sits at the middle pixel of its cell;
with it (hard) anywhere in the cell, off its borders.

This module imports nothing from :mod:`mdm`, so the generator imports it
without a cycle; the config checks level names against its own copy, which a test ties to :data:`LEVELS`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from types import MappingProxyType
from typing import Any

LEVELS: Mapping[str, Mapping[str, Any]] = MappingProxyType({
    "easy": MappingProxyType({
        "image_size": 32, "min_objects": 1, "max_objects": 2, "grid": (2, 1), "jitter": False,
        "colors": ("red", "green", "blue", "yellow"), "shapes": ("square", "circle", "triangle"),
        "sizes": ("large",), "question_kinds": ("color", "shape", "count", "position")}),
    "medium": MappingProxyType({
        "image_size": 32, "min_objects": 1, "max_objects": 3, "grid": (2, 2), "jitter": False,
        "colors": ("red", "green", "blue", "yellow", "white"), "shapes": ("square", "circle", "triangle", "cross"),
        "sizes": ("small", "large")}),
    "hard": MappingProxyType({"image_size": 16}),
})
DEFAULT_LEVEL = "hard"

_ROW_WORDS = {1: ("",), 2: ("top", "bottom"), 3: ("top", "", "bottom")}
_COLUMN_WORDS = {1: ("",), 2: ("left", "right"), 3: ("left", "", "right")}


def check_level(level: str) -> str:
    """``level`` if it is a level's name, else a ValueError naming the levels."""
    if level not in LEVELS:
        raise ValueError(f"unknown ShapesWorld level {level!r}; valid: {', '.join(LEVELS)}")
    return level


def level_image_size(level: str) -> int:
    """The image side (pixels) a level's scenes are drawn at."""
    return int(LEVELS[check_level(level)]["image_size"])


def check_grid(grid: Sequence[int]) -> tuple[int, int]:
    """``grid`` as (columns, rows) if each is an int from 1 to 3, else a ValueError."""
    if (len(grid) != 2 or not all(isinstance(n, int) and not isinstance(n, bool) for n in grid)
            or not all(1 <= n <= 3 for n in grid)):
        raise ValueError(f"grid must be (columns, rows) of 1 to 3 each, got {tuple(grid)}")
    return int(grid[0]), int(grid[1])


def grid_positions(grid: Sequence[int] = (3, 3)) -> tuple[str, ...]:
    """Row-major position words of a (columns, rows) grid.

    (3, 3) gives the nine words of :data:`mdm.data.shapesworld.POSITIONS`
    ("top-left", "top", ..., "center", ..., "bottom-right"); a coarser grid
    names its cells with a subset of them, e.g. (2, 1): "left", "right" and
    (2, 2): "top-left", "top-right", "bottom-left", "bottom-right". One
    vocabulary for every grid keeps every position answer one word and lets the
    referee and the caption parser read any level.
    """
    columns, rows = check_grid(grid)
    return tuple("-".join(w for w in (row, col) if w) or "center"
                 for row in _ROW_WORDS[rows] for col in _COLUMN_WORDS[columns])
