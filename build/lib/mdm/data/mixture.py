"""The sources of a data mixture (``data.name: mixture``, ``data.sources``): each opened from its own files and read
one item at a time, with the parts its items hold.

A source's kind says what its items hold (:data:`PARTS`): an image, a class label, texts by role. The tasks it can
train follow from those parts by the rule every run uses (:func:`mdm.tasks.supported_tasks`): COCO captions and
captioned image folders train text->image, captioning and joint; VQAv2 trains VQA; chat text->text; class folders
class->image.

Opening a source reads its index only (JSON records, a chat file's line offsets, a class folder's file names, each
image verified as :mod:`mdm.data.formats` says); ``source[i]`` decodes one item and :meth:`Source.texts` reads an
item's texts without its image. Whether a run holds a source's decoded items or streams them from disk
(``data.memory_items``) is decided by the reader, :mod:`mdm.training.mixture`.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Dataset

from mdm.config import DataConfig
from mdm.config.choices import SOURCE_FILES
from mdm.data import formats
from mdm.data.registry import load_builtin
from mdm.data.sample import Sample, TextSegment

# What an item of each kind holds: "image", "label" (a class id) or a text role (mdm.data.sample.Role). A chat
# dialogue is read as text->text (mdm.data.formats.text_to_text_sample).
PARTS: dict[str, tuple[str, ...]] = {
    "shapesworld": ("image", "caption", "question", "answer", "scene"),
    "digits": ("image", "label", "caption"),
    "imagefolder": ("image", "label"),
    "coco": ("image", "caption"),
    "captionfolder": ("image", "caption"),
    "vqav2": ("image", "question", "answer"),
    "chat": ("scene", "question", "answer"),
}
NOT_TEXT = ("image", "label")


@dataclass
class Source:
    """One entry of ``data.sources``, opened: ``dataset``'s items at ``items`` (``data.train_size`` caps them)."""

    index: int  # its place in data.sources
    kind: str
    weight: float
    dataset: Any
    items: list[int]

    @property
    def name(self) -> str:
        """How errors name it: by its index and kind."""
        return f"data.sources[{self.index}] ({self.kind})"

    @property
    def parts(self) -> tuple[str, ...]:
        return PARTS[self.kind]

    @property
    def roles(self) -> tuple[str, ...]:
        """The text roles of its items."""
        return tuple(p for p in self.parts if p not in NOT_TEXT)

    @property
    def has_images(self) -> bool:
        return "image" in self.parts

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> Sample:
        """Item ``i``, decoded; an image that cannot be decoded is an OSError naming the source and the file."""
        j = self.items[i]
        if self.kind == "chat":
            return formats.text_to_text_sample(self.dataset[j])
        try:
            return self.dataset[j]
        except OSError as e:
            raise OSError(f"{self.name}: {e}") from e

    def texts(self, i: int) -> list[TextSegment]:
        """The texts of item ``i`` without decoding its image (what a tokenizer trains on)."""
        if self.kind in ("coco", "captionfolder", "vqav2"):
            return self.dataset.texts(self.items[i])
        if self.kind == "imagefolder":
            return []
        return self[i].texts  # chat lines hold only texts; built-in items are drawn in microseconds

    def num_classes(self) -> int:
        """The class labels its items may carry (0: none)."""
        if self.kind == "imagefolder":
            return len(self.dataset.class_names)
        return 10 if self.kind == "digits" else 0


def check_files(index: int, spec: dict[str, Any]) -> None:
    """A FileNotFoundError naming the first missing file or folder of source ``index`` by its index and key."""
    for key, what in SOURCE_FILES[spec["kind"]].items():
        path = Path(spec[key])
        if not (path.is_dir() if what.endswith("folder") else path.is_file()):
            raise FileNotFoundError(f"data.sources[{index}].{key}: {what} not found: {path}")


def open_source(index: int, data: DataConfig, image_size: int, channels: int) -> Source:
    """Source ``index`` of ``data.sources``, its items a seeded random subset of ``data.train_size`` (0: all).

    COCO and captioned folders are read one item a caption (every caption trains equally often). Errors name the source.
    """
    spec = data.sources[index]
    kind, where = spec["kind"], f"data.sources[{index}] ({spec['kind']})"
    check_files(index, spec)
    try:
        if kind in ("shapesworld", "digits"):
            dataset = load_builtin(kind, "train", size=data.train_size, seed=data.seed, image_size=image_size,
                                   channels=channels, question_kinds=tuple(data.question_kinds), level=data.level)
        elif kind == "imagefolder":
            dataset = formats.ImageFolderDataset(spec["path"], image_size)
        elif kind == "coco":
            dataset = formats.CocoCaptionsDataset(spec["path"], spec["images"], image_size, per_caption=True)
        elif kind == "captionfolder":
            dataset = formats.CaptionFolderDataset(spec["path"], image_size, per_caption=True)
        elif kind == "vqav2":
            dataset = formats.VQAv2Dataset(spec["path"], spec["annotations"], spec["images"], image_size)
        else:
            dataset = formats.ChatJsonlDataset(spec["path"])
    except ValueError as e:
        raise ValueError(f"{where}: {e}") from e
    except OSError as e:
        raise OSError(f"{where}: {e}") from e
    n = len(dataset)
    if n == 0:
        raise ValueError(f"{where}: no items")
    items = list(range(n))
    if data.train_size and data.train_size < n:  # a seeded random subset: class folders are sorted by class
        generator = torch.Generator().manual_seed(data.seed)
        items = sorted(torch.randperm(n, generator=generator)[:data.train_size].tolist())
    return Source(index, kind, spec["weight"], dataset, items)


class ImageItems(Dataset[Sample]):
    """The items of several sources as one dataset, each read on access: what stage 0's VQ-VAE trains on.

    ``sources``: each a sequence of Samples with images, a :class:`Source` (decoded on access) or a list already
    decoded. Every item counts once, so a larger source gives the VQ-VAE more of its images.
    """

    def __init__(self, sources: Sequence[Sequence[Sample]]) -> None:
        self.sources = [s for s in sources if len(s)]
        self.starts = [0]
        for source in self.sources:
            self.starts.append(self.starts[-1] + len(source))

    def __len__(self) -> int:
        return self.starts[-1]

    def __getitem__(self, k: int) -> Sample:
        if not 0 <= k < len(self):
            raise IndexError(f"item {k} of {len(self)}")
        s = bisect_right(self.starts, k) - 1
        return self.sources[s][k - self.starts[s]]
