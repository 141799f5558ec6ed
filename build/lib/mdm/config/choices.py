"""Closed sets of names that other modules own, as plain data.

Loading a config checks these names without importing the modules that give
them meaning (the config is the bottom floor: it imports nothing from
:mod:`mdm`). Each owner imports its set from here, or a test ties the two.
"""

from __future__ import annotations

from enum import Enum


class Discretization(str, Enum):
    """How the continuous (A, B) become the discrete (A_bar, B_bar) of Eq. 10 (:mod:`mdm.nn.ssd`)."""

    ZOH = "zoh"  # Eq. 12-13, the paper
    EULER = "euler"  # B_bar = dt * B, as public Mamba-2 checkpoints use


IMAGE_SCAN_PATTERNS = (1, 2, 3, 4)  # the keys of mdm.nn.scan.IMAGE_PATTERNS (a test ties them)
TEXT_SCAN_PATTERNS = (1, 2)  # the keys of mdm.nn.scan.TEXT_PATTERNS


def parse_pattern_set(spec: str) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """``"1234/12"`` -> ((1, 2, 3, 4), (1, 2)), with a clear error for anything else (:mod:`mdm.nn.scan`)."""
    parts = spec.split("/") if isinstance(spec, str) else []
    ok = len(parts) == 2 and all(parts) and all(c.isdigit() for c in "".join(parts))
    image = tuple(int(c) for c in parts[0]) if ok else ()
    text = tuple(int(c) for c in parts[1]) if ok else ()
    if (not ok or not set(image) <= set(IMAGE_SCAN_PATTERNS) or not set(text) <= set(TEXT_SCAN_PATTERNS)
            or len(set(image)) != len(image) or len(set(text)) != len(text)):
        raise ValueError(f"unknown scan pattern set {spec!r}: expected IMAGE/TEXT with distinct image patterns "
                         f"from 1-4 (1 rows, 2 rows reversed, 3 columns, 4 columns reversed) and text patterns "
                         f"from 1-2 (1 forward, 2 reversed), e.g. '1234/12' (paper), '12/1' (ablation), '1/1'")
    return image, text


DISTRIBUTED_STRATEGIES = ("ddp", "fsdp")  # mdm.training.distributed.STRATEGIES
# ShapesWorld's levels and question kinds (mdm.data.shapesworld_levels.LEVELS, mdm.data.shapesworld.QUESTION_KINDS;
# a test ties them): the kinds a level draws its questions from
SHAPESWORLD_QUESTION_KINDS = ("color", "shape", "size", "count", "position")
SHAPESWORLD_LEVEL_KINDS = {"easy": ("color", "shape", "count", "position"),
                           "medium": SHAPESWORLD_QUESTION_KINDS, "hard": SHAPESWORLD_QUESTION_KINDS}

PROCESS_NAMES = ("gaussian", "absorbing")  # the keys of mdm.diffusion.registry.PROCESSES (a test ties them)
MASKING_PROCESSES = ("absorbing",)  # the processes whose modality has a MASK state
ABSORBING_LOSSES = ("elbo", "masked_mean")
TOKENIZER_TYPES = ("auto", "unigram", "bpe", "word")  # "auto" and mdm.data.text_tokenizer.MODEL_TYPES (a test ties them)

# The kinds of source a data mixture (data.sources) reads, each with the files it needs besides its kind and
# weight: key -> what the file is (a name ending in "folder" is a folder). mdm.data.mixture reads them.
SOURCE_KINDS = ("shapesworld", "digits", "imagefolder", "coco", "captionfolder", "vqav2", "chat")
SOURCE_FILES: dict[str, dict[str, str]] = {
    "shapesworld": {}, "digits": {}, "imagefolder": {"path": "class folder"},
    "coco": {"path": "captions JSON file", "images": "images folder"},
    "captionfolder": {"path": "captioned image folder"},
    "vqav2": {"path": "questions JSON file", "annotations": "annotations JSON file", "images": "images folder"},
    "chat": {"path": "chat JSONL file"},
}
