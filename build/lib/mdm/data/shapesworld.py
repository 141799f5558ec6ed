"""ShapesWorld: a generated multimodal dataset of coloured shapes (DESIGN.md §6).

Each scene is a small square RGB image (default 32x32) on a black background
with 1-2 objects (configurable up to 4). An object is a (shape, colour, size,
position) tuple. The difficulty levels (``data.level``) are presets of
:class:`ShapesWorldConfig` (:mod:`mdm.data.shapesworld_levels`). By default:

* colours are the seven non-black corners of the RGB cube, so a colour mask is
  exact (threshold each channel at 0.5) and a noisy generated pixel still has an
  unambiguous nearest palette colour;
* shapes are drawn from integer pixel offsets with hard edges (no anti-aliasing,
  no PIL): the referee (:mod:`mdm.evaluation.judges.referee`) re-draws the same masks as
  templates, so parsing a clean render is exact;
* an object of half-width ``r`` covers a (2r+1)x(2r+1) box around a centre pixel
  and fills every row and column of it, so the box centre is the object centre;
* positions are the nine cells of a 3x3 grid (a coarser ``grid`` reuses their names),
  named by one word each ("top-left", "top", ..., "center", ..., "bottom-right") so that
  every answer is one word; centres keep a margin from cell borders so the cell is never in doubt.

Objects in one scene have distinct colours (the referee separates them by colour),
distinct cells (a position word names one object), and disjoint boxes with a gap
of at least one pixel. The i-th sample of a split is drawn from
``np.random.default_rng([seed, SPLIT_OFFSETS[split], i])``, so ``dataset[i]`` is
random access and reproducible, and (seed, split) pairs never share a stream
(an entropy list, unlike ``seed + offset``, cannot collide across seeds).

Objects are plain dicts ``{shape, color, size, position, center}`` with
``center = (x, y)``, the column and row of the centre pixel; they are what
``Sample.meta["objects"]`` holds and what :func:`render` draws.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from mdm.data.sample import Role, Sample, TextSegment
from mdm.data.shapesworld_levels import LEVELS, check_grid, check_level, grid_positions

COLORS: tuple[str, ...] = ("red", "green", "blue", "yellow", "magenta", "cyan", "white")
RGB: Mapping[str, tuple[int, int, int]] = MappingProxyType({
    "red": (1, 0, 0), "green": (0, 1, 0), "blue": (0, 0, 1), "yellow": (1, 1, 0),
    "magenta": (1, 0, 1), "cyan": (0, 1, 1), "white": (1, 1, 1),
})
SHAPES: tuple[str, ...] = ("square", "circle", "triangle", "cross", "diamond")
DEFAULT_SHAPES: tuple[str, ...] = ("square", "circle", "triangle", "cross")
PLURALS: Mapping[str, str] = MappingProxyType({s: s + ("es" if s.endswith("s") else "s") for s in SHAPES})
SIZES: tuple[str, ...] = ("small", "large")
POSITIONS: tuple[str, ...] = ("top-left", "top", "top-right", "left", "center", "right",
                              "bottom-left", "bottom", "bottom-right")  # row-major 3x3 cells
NUMBER_WORDS: tuple[str, ...] = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
QUESTION_KINDS: tuple[str, ...] = ("color", "shape", "size", "count", "position")
CAPTION_TEMPLATES: tuple[str, ...] = ("plain", "there_is", "position_first", "color_shape", "count", "in_color")
SPLIT_OFFSETS: Mapping[str, int] = MappingProxyType(
    {"train": 0, "val": 1_000_003, "test": 2_000_003, "compositional": 3_000_003})
MIN_IMAGE_SIZE = 16  # below this a small triangle, diamond and cross are too few pixels to tell apart
MAX_OBJECTS = 4
_EPS = 1e-9  # shape inequalities are evaluated on exact ratios such as 1/3; keep boundary pixels in


def check_choice(value: str, valid: Sequence[str], what: str) -> str:
    """``value`` if it is one of ``valid``, else a ValueError naming what was expected."""
    if value not in valid:
        raise ValueError(f"unknown {what} {value!r}; valid: {', '.join(valid)}")
    return value


def radius(size: str, image_size: int) -> int:
    """Half-width r of an object (its box is 2r+1 pixels): ~9% and ~16% of the image side.

    Odd box sides give every shape a centre pixel and a left-right symmetric
    raster; r >= 2 keeps the small shapes distinct even at 16x16.
    """
    check_choice(size, SIZES, "size")
    small = max(2, round(0.09 * image_size))
    return small if size == "small" else max(small + 1, round(0.16 * image_size))


def shape_mask(shape: str, height: int, width: int) -> np.ndarray:
    """Boolean (height, width) mask of ``shape`` stretched to fill the box exactly.

    Coordinates are normalised to [-1, 1] over the pixel centres, so a
    (2r+1)-pixel box reduces to integer offsets dx/r; the referee calls this with
    a measured box of any size to get its templates.
    """
    check_choice(shape, SHAPES, "shape")
    ry, rx = (height - 1) / 2, (width - 1) / 2
    v = ((np.arange(height) - ry) / max(ry, 1e-12))[:, None]
    u = ((np.arange(width) - rx) / max(rx, 1e-12))[None, :]
    if shape == "square":
        return np.ones((height, width), dtype=bool)
    if shape == "circle":  # r^2 + r instead of r^2: a rounder raster that still touches all four box sides
        return u**2 + v**2 <= 1 + 1 / max(min(rx, ry), 1) + _EPS
    if shape == "triangle":  # apex at the top centre, base along the bottom row
        return np.abs(u) <= (v + 1) / 2 + _EPS
    if shape == "diamond":
        return np.abs(u) + np.abs(v) <= 1 + _EPS
    return (np.abs(u) <= 1 / 3 + _EPS) | (np.abs(v) <= 1 / 3 + _EPS)  # cross: arms one third wide


def position_of(x: float, y: float, image_size: int, grid: Sequence[int] = (3, 3)) -> str:
    """Position word of the ``grid`` cell holding the pixel (column x, row y); pixel centres are at +0.5."""
    columns, rows = check_grid(grid)
    col = min(max(int((x + 0.5) * columns // image_size), 0), columns - 1)
    row = min(max(int((y + 0.5) * rows // image_size), 0), rows - 1)
    return grid_positions(grid)[columns * row + col]


def _center_range(k: int, r: int, image_size: int, cells: int = 3, jitter: bool = True) -> tuple[int, int]:
    """Centre pixels along one axis in cell ``k`` of ``cells`` for half-width r: inside the image, S/24 off
    cell borders; without ``jitter`` only the cell's middle pixel (8 and 24 of 32 px for two cells)."""
    lo, hi = k * image_size / cells, (k + 1) * image_size / cells
    margin = image_size / 24
    first, last = max(r, math.ceil(lo + margin - 0.5)), min(image_size - 1 - r, math.floor(hi - margin - 0.5))
    if not jitter and first <= last:
        first = last = min(max(int((lo + hi) / 2), first), last)
    return first, last


def cell_center(position: str, size: str, image_size: int) -> tuple[int, int]:
    """The middle (x, y) of the centres allowed for an object of ``size`` in a position's cell."""
    k, r = POSITIONS.index(check_choice(position, POSITIONS, "position")), radius(size, image_size)
    (x_lo, x_hi), (y_lo, y_hi) = _center_range(k % 3, r, image_size), _center_range(k // 3, r, image_size)
    return (x_lo + x_hi) // 2, (y_lo + y_hi) // 2


@dataclass(frozen=True)
class ShapesWorldConfig:
    """What scenes look like. ``hold_out`` (colour, shape) pairs appear only in the "compositional" split.

    ``question_kinds`` are the kinds a scene's question is drawn from (all of them by default;
    a subset trains and tests VQA and text->text on those kinds alone). ``grid``: (columns, rows)
    of position cells; ``jitter``: a centre anywhere in its cell, else at its middle pixel.
    The defaults are the ``hard`` level but for its 16 px image size.
    """

    image_size: int = 32
    min_objects: int = 1
    max_objects: int = 2
    shapes: tuple[str, ...] = DEFAULT_SHAPES
    colors: tuple[str, ...] = COLORS
    hold_out: tuple[tuple[str, str], ...] = ()
    question_kinds: tuple[str, ...] = QUESTION_KINDS
    sizes: tuple[str, ...] = SIZES
    grid: tuple[int, int] = (3, 3)
    jitter: bool = True

    def __post_init__(self) -> None:
        for name in ("image_size", "min_objects", "max_objects"):
            if not isinstance(getattr(self, name), int) or isinstance(getattr(self, name), bool):
                raise ValueError(f"config.{name} must be an int, got {getattr(self, name)!r}")
        for name in ("shapes", "colors", "question_kinds", "sizes", "grid"):
            object.__setattr__(self, name, tuple(getattr(self, name)))
        check_grid(self.grid)
        for kind in self.question_kinds:
            check_choice(kind, QUESTION_KINDS, "question kind in config.question_kinds")
        if not self.question_kinds or len(set(self.question_kinds)) != len(self.question_kinds):
            raise ValueError(f"config.question_kinds must be non-empty and without repeats, got {self.question_kinds}")
        for name, valid in (("shapes", SHAPES), ("colors", COLORS), ("sizes", SIZES)):
            for value in getattr(self, name):
                check_choice(value, valid, f"{name[:-1]} in config.{name}")
            if not getattr(self, name) or len(set(getattr(self, name))) != len(getattr(self, name)):
                raise ValueError(f"config.{name} must be non-empty and without repeats, got {getattr(self, name)}")
        if "size" in self.question_kinds and len(self.sizes) < 2:
            raise ValueError(f"a size question needs two sizes, but config.sizes is {self.sizes}")
        pairs = []
        for pair in self.hold_out:
            if not isinstance(pair, (tuple, list)) or len(pair) != 2:
                raise ValueError(f"hold_out entries are (color, shape) pairs, got {pair!r}")
            color, shape = pair
            pairs.append((check_choice(color, self.colors, "hold_out color"), check_choice(shape, self.shapes, "hold_out shape")))
        object.__setattr__(self, "hold_out", tuple(dict.fromkeys(pairs)))
        if not 1 <= self.min_objects <= self.max_objects <= min(MAX_OBJECTS, len(self.positions)):
            raise ValueError(f"need 1 <= min_objects <= max_objects <= {min(MAX_OBJECTS, len(self.positions))} (one "
                             f"object a cell of grid {self.grid}), got {self.min_objects} and {self.max_objects}")
        if self.image_size < MIN_IMAGE_SIZE:
            raise ValueError(f"image_size must be >= {MIN_IMAGE_SIZE}, got {self.image_size}")
        if len({c for c, _ in self.allowed_pairs()}) < self.max_objects:
            raise ValueError(f"max_objects={self.max_objects} needs that many colours with a shape not held out; "
                             f"colors={self.colors}, hold_out={self.hold_out}")

    @property
    def positions(self) -> tuple[str, ...]:  # the words of the grid's cells, row-major
        return grid_positions(self.grid)

    def allowed_pairs(self) -> list[tuple[str, str]]:
        """(colour, shape) pairs of the train/val/test splits."""
        return [(c, s) for c in self.colors for s in self.shapes if (c, s) not in self.hold_out]


def level_config(level: str, **overrides: Any) -> ShapesWorldConfig:
    """A named level's config (:mod:`mdm.data.shapesworld_levels`) with ``overrides`` such as question_kinds."""
    return ShapesWorldConfig(**{**LEVELS[check_level(level)], **overrides})


def sample_objects(rng: np.random.Generator, config: ShapesWorldConfig, compositional: bool = False,
                   max_tries: int = 1000) -> list[dict[str, Any]]:
    """Draw one scene's objects by rejection sampling on box overlap.

    With ``compositional`` the first object is a held-out pair and the others
    any pair; otherwise held-out pairs never occur. Colours and cells are
    distinct by construction; a scene whose boxes come closer than a one-pixel
    gap (or whose object does not fit its cell) is redrawn whole.
    """
    if compositional and not config.hold_out:
        raise ValueError("the compositional split needs a non-empty config.hold_out")
    S, (columns, rows), positions = config.image_size, config.grid, config.positions
    n = int(rng.integers(config.min_objects, config.max_objects + 1))
    allowed, every = config.allowed_pairs(), [(c, s) for c in config.colors for s in config.shapes]
    for _ in range(max_tries):
        objects: list[dict[str, Any]] = []
        cells = rng.permutation(len(positions))[:n]
        for j in range(n):
            pool = list(config.hold_out) if (compositional and j == 0) else (every if compositional else allowed)
            pool = [p for p in pool if p[0] not in {o["color"] for o in objects}]
            color, shape = pool[int(rng.integers(len(pool)))]
            size = config.sizes[int(rng.integers(len(config.sizes)))]
            r, k = radius(size, S), int(cells[j])
            (x_lo, x_hi), (y_lo, y_hi) = (_center_range(k % columns, r, S, columns, config.jitter),
                                          _center_range(k // columns, r, S, rows, config.jitter))
            if x_lo > x_hi or y_lo > y_hi:
                break  # this size does not fit this cell at this image size: redraw the scene
            center = (int(rng.integers(x_lo, x_hi + 1)), int(rng.integers(y_lo, y_hi + 1)))
            objects.append({"shape": shape, "color": color, "size": size, "position": positions[k], "center": center})
        if len(objects) == n and not _overlapping(objects, S):
            return objects
    raise RuntimeError(f"no non-overlapping scene of {n} objects found in {max_tries} tries at image_size {S}")


def _overlapping(objects: Sequence[Mapping[str, Any]], image_size: int) -> bool:
    """True if two boxes come closer than a one-pixel gap."""
    for i, a in enumerate(objects):
        for b in objects[i + 1:]:
            reach = radius(a["size"], image_size) + radius(b["size"], image_size) + 1
            if abs(a["center"][0] - b["center"][0]) <= reach and abs(a["center"][1] - b["center"][1]) <= reach:
                return True
    return False


def render(objects: Sequence[Mapping[str, Any]], image_size: int = 32) -> Tensor:
    """Draw objects on black: float32 (3, S, S), values exactly 0 or 1.

    An object without ``center`` is drawn at the centre of its position's cell,
    so requested objects (shape, colour, size, position) can be rendered too.
    """
    canvas = np.zeros((image_size, image_size, 3), dtype=np.float32)
    for obj in objects:
        missing = {"shape", "color", "size"} - set(obj)
        if missing or ("center" not in obj and "position" not in obj):
            raise ValueError(f"object {dict(obj)} needs shape, color, size and a center or position")
        r = radius(obj["size"], image_size)
        x, y = obj["center"] if "center" in obj else cell_center(obj["position"], obj["size"], image_size)
        if not (r <= x < image_size - r and r <= y < image_size - r):
            raise ValueError(f"object {dict(obj)} of half-width {r} does not fit a {image_size}x{image_size} image")
        mask = shape_mask(obj["shape"], 2 * r + 1, 2 * r + 1)
        canvas[y - r:y + r + 1, x - r:x + r + 1][mask] = RGB[check_choice(obj["color"], COLORS, "color")]
    return torch.from_numpy(canvas).permute(2, 0, 1).contiguous()


def place_phrase(position: str) -> str:
    """'on the left', 'at the top-right', 'in the center'."""
    check_choice(position, POSITIONS, "position")
    special = {"center": "in the center", "left": "on the left", "right": "on the right"}
    return special.get(position, f"at the {position}")


def _noun_phrase(obj: Mapping[str, Any], size: bool = True) -> str:
    return f"a {obj['size']} {obj['color']} {obj['shape']}" if size else f"a {obj['color']} {obj['shape']}"


def caption(objects: Sequence[Mapping[str, Any]], rng: np.random.Generator, template: str | None = None) -> str:
    """One caption from a template (random if None); objects are mentioned in a random order.

    Objects are joined by " and " or "; " and never by a comma, so that
    :func:`mdm.evaluation.judges.referee.parse_caption` can split a caption into one clause per object.
    """
    template = CAPTION_TEMPLATES[int(rng.integers(len(CAPTION_TEMPLATES)))] if template is None else template
    check_choice(template, CAPTION_TEMPLATES, "caption template")
    if not objects:
        raise ValueError("caption needs at least one object")
    objs = [objects[int(i)] for i in rng.permutation(len(objects))]
    placed = " and ".join(f"{_noun_phrase(o)} {place_phrase(o['position'])}" for o in objs)
    if template == "plain":
        return placed
    if template == "there_is":
        return "there is " + placed
    if template == "position_first":
        return "; ".join(f"{place_phrase(o['position'])}, {_noun_phrase(o)}" for o in objs)
    if template == "color_shape":
        return " and ".join(_noun_phrase(o, size=False) for o in objs)
    if template == "count":
        noun = "shape" if len(objs) == 1 else "shapes"
        return f"{NUMBER_WORDS[len(objs)]} {noun}: {placed}"
    return " and ".join(f"a {o['size']} {o['shape']} in {o['color']} {place_phrase(o['position'])}" for o in objs)


def reference_captions(objects: Sequence[Mapping[str, Any]], orders: int = 2) -> list[str]:
    """Every caption template of a scene, each with ``orders`` object orders (seeded): CIDEr's references."""
    out = []
    for k, template in enumerate(CAPTION_TEMPLATES):
        for order in range(orders):
            text = caption(objects, np.random.default_rng([k, order]), template)
            if text not in out:
                out.append(text)
    return out


def describe_scene(objects: Sequence[Mapping[str, Any]]) -> str:
    """The whole scene in words, in reading order: what the text-only task sees instead of the image."""
    objs = sorted(objects, key=lambda o: (POSITIONS.index(o["position"]), o["color"]))
    noun = "shape" if len(objs) == 1 else "shapes"
    return " ".join([f"{NUMBER_WORDS[len(objs)]} {noun}."] + [f"{_noun_phrase(o)} {place_phrase(o['position'])}." for o in objs])


def question_answer(objects: Sequence[Mapping[str, Any]], rng: np.random.Generator, kind: str | None = None, *,
                    colors: Sequence[str] = COLORS, shapes: Sequence[str] = SHAPES) -> tuple[str, str]:
    """A (question, one-word answer) pair of ``kind`` (random if None), unambiguous for this scene.

    Objects are referred to only by attributes that single them out: colour and
    position always do (both are distinct in a scene); a shape or size+shape
    only when no other object shares it. ``colors`` and ``shapes`` are the
    vocabulary for count questions whose answer may be "zero".
    """
    if kind is None:
        kind = QUESTION_KINDS[int(rng.integers(len(QUESTION_KINDS)))]
    check_choice(kind, QUESTION_KINDS, "question kind")
    if not objects:
        raise ValueError("question_answer needs at least one object")

    def pick(options: list[str]) -> str:
        return options[int(rng.integers(len(options)))]

    def unique(obj: Mapping[str, Any], *keys: str) -> bool:
        return sum(all(o[k] == obj[k] for k in keys) for o in objects) == 1

    obj = objects[int(rng.integers(len(objects)))]
    shape, color, where = obj["shape"], obj["color"], place_phrase(obj["position"])
    if kind == "color":
        options = [f"what color is the {shape} {where}?"]
        options += [f"what color is the {shape}?"] if unique(obj, "shape") else []
        options += [f"what color is the {obj['size']} {shape}?"] if unique(obj, "size", "shape") else []
        return pick(options), color
    if kind == "shape":
        return pick([f"what shape is the {color} object?", f"what shape is {where}?"]), shape
    if kind == "size":
        return pick([f"what size is the {color} {shape}?", f"what size is the shape {where}?"]), obj["size"]
    if kind == "position":
        options = [f"where is the {color} {shape}?"] + ([f"where is the {shape}?"] if unique(obj, "shape") else [])
        return pick(options), obj["position"]
    what = pick(["all", "color", "shape"])
    if what == "all":
        return "how many shapes are there?", NUMBER_WORDS[len(objects)]
    if what == "color":
        c = pick(list(colors))
        return f"how many {c} shapes are there?", NUMBER_WORDS[sum(o["color"] == c for o in objects)]
    s = pick(list(shapes))
    return f"how many {PLURALS[s]} are there?", NUMBER_WORDS[sum(o["shape"] == s for o in objects)]


class ShapesWorld(Dataset):
    """``size`` generated scenes of one split; item i is a :class:`Sample` with
    image, caption, question, answer and scene texts, and ``meta["objects"]``."""

    def __init__(self, split: str = "train", size: int = 10_000, config: ShapesWorldConfig | None = None,
                 seed: int = 0) -> None:
        self.split = check_choice(split, tuple(SPLIT_OFFSETS), "split")
        if size < 0 or seed < 0:
            raise ValueError(f"size and seed must be >= 0, got {size} and {seed}")
        self.config = ShapesWorldConfig() if config is None else config
        if split == "compositional" and not self.config.hold_out:
            raise ValueError("the compositional split needs a non-empty config.hold_out")
        self.size, self.seed = int(size), int(seed)

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, index: int) -> Sample:
        if not -self.size <= index < self.size:
            raise IndexError(f"index {index} out of range for a ShapesWorld of size {self.size}")
        index = int(index) % self.size
        rng = np.random.default_rng([self.seed, SPLIT_OFFSETS[self.split], index])
        cfg = self.config
        objects = sample_objects(rng, cfg, compositional=self.split == "compositional")
        template = CAPTION_TEMPLATES[int(rng.integers(len(CAPTION_TEMPLATES)))]
        kind = cfg.question_kinds[int(rng.integers(len(cfg.question_kinds)))]  # all kinds: the draw of old
        question, answer = question_answer(objects, rng, kind, colors=cfg.colors, shapes=cfg.shapes)
        texts = [TextSegment(Role.CAPTION, caption(objects, rng, template)), TextSegment(Role.QUESTION, question),
                 TextSegment(Role.ANSWER, answer), TextSegment(Role.SCENE, describe_scene(objects))]
        meta = {"objects": objects, "question_kind": kind, "caption_template": template,
                "split": self.split, "index": index}
        return Sample(image=render(objects, cfg.image_size), texts=texts, answers=[answer], meta=meta)
