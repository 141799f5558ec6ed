"""scikit-learn's bundled 8x8 handwritten digits as a class-conditional image dataset (DESIGN.md §6).

``sklearn.datasets.load_digits`` ships inside scikit-learn (1797 greyscale
8x8 images, 16 grey levels, classes 0-9, about 180 each), so this dataset
needs no download: it is the class-conditional counterpart of ShapesWorld for
the ImageNet-style ``[CLS c]`` token of §1.3, small enough to train on a CPU.

Each item is a :class:`~mdm.data.sample.Sample` with ``image`` (C, H, W) float
in [0, 1] (ink bright on black, the ShapesWorld convention), ``label`` the digit
and one caption ``"the digit seven"``, so the same items also serve
text->image and captioning.

The train/val/test split is 80/10/10, stratified by class, from a permutation
seeded by ``seed``: every split built with the same seed is disjoint from the
others and the union is the whole set. Resizing (8 -> 16 or 32) is bilinear
(``torch.nn.functional.interpolate``) with values clamped to [0, 1], so the
image stays a valid Sample image; ``channels=3`` repeats the grey channel so
an RGB tokenizer (:mod:`mdm.nn.vq`) can read it.
"""

from __future__ import annotations

from enum import Enum

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from mdm.data.sample import Role, Sample, TextSegment

DIGIT_NAMES = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
NUM_CLASSES = 10
SPLIT_FRACTIONS = (0.8, 0.1, 0.1)  # train, val, test; per class
IMAGE_SIZES = (8, 16, 32)


class Split(str, Enum):
    TRAIN = "train"
    VAL = "val"
    TEST = "test"


def digit_caption(label: int) -> str:
    """``7 -> "the digit seven"``."""
    if not 0 <= int(label) < NUM_CLASSES:
        raise ValueError(f"digit label must be in [0, {NUM_CLASSES}), got {label}")
    return f"the digit {DIGIT_NAMES[int(label)]}"


def load_digit_arrays() -> tuple[np.ndarray, np.ndarray]:
    """All 1797 digits: images (n, 8, 8) float32 in [0, 1] and labels (n,) int64."""
    from sklearn.datasets import load_digits  # deferred: importing sklearn takes ~1 s

    bunch = load_digits()
    images = (bunch.images / 16.0).astype(np.float32)  # 16 grey levels, 16 = full ink
    return images, bunch.target.astype(np.int64)


def split_indices(labels: np.ndarray, split: Split | str, seed: int = 0) -> np.ndarray:
    """Sorted indices of ``split``: per class, a seeded permutation cut 80/10/10."""
    split = Split(split)
    rng = np.random.default_rng(seed)
    chosen: list[np.ndarray] = []
    for k in range(NUM_CLASSES):
        idx = rng.permutation(np.flatnonzero(labels == k))
        n_train = int(round(SPLIT_FRACTIONS[0] * len(idx)))
        n_val = int(round(SPLIT_FRACTIONS[1] * len(idx)))
        bounds = {Split.TRAIN: (0, n_train), Split.VAL: (n_train, n_train + n_val),
                  Split.TEST: (n_train + n_val, len(idx))}[split]
        chosen.append(idx[bounds[0]:bounds[1]])
    return np.sort(np.concatenate(chosen))


def resize_images(images: Tensor, size: int) -> Tensor:
    """Bilinear resize of (n, c, h, w) to (n, c, size, size), clamped to [0, 1]."""
    if images.dim() != 4:
        raise ValueError(f"resize_images expects (N, C, H, W), got {tuple(images.shape)}")
    if images.shape[-1] == size and images.shape[-2] == size:
        return images.clone()
    out = F.interpolate(images, size=(size, size), mode="bilinear", align_corners=False)
    return out.clamp(0.0, 1.0)


class DigitsDataset:
    """The sklearn digits split ``split``, at ``image_size`` with ``channels`` channels.

    All images are built once in ``__init__`` (at most 1438 x 3 x 32 x 32
    floats); ``images`` (n, C, H, W) and ``labels`` (n,) are exposed for batched
    use (e.g. :func:`mdm.nn.vq.train_vq` takes the tensor directly).
    """

    def __init__(
        self,
        split: Split | str = Split.TRAIN,
        image_size: int = 8,
        channels: int = 1,
        seed: int = 0,
    ) -> None:
        if image_size not in IMAGE_SIZES:
            raise ValueError(f"DigitsDataset: image_size must be one of {IMAGE_SIZES}, got {image_size}")
        if channels not in (1, 3):
            raise ValueError(f"DigitsDataset: channels must be 1 or 3, got {channels}")
        self.split, self.image_size, self.channels, self.seed = Split(split), image_size, channels, seed
        all_images, all_labels = load_digit_arrays()
        self.indices = split_indices(all_labels, self.split, seed)
        images = torch.from_numpy(all_images[self.indices]).unsqueeze(1)  # (n, 1, 8, 8)
        images = resize_images(images, image_size)
        self.images: Tensor = images.expand(-1, channels, -1, -1).contiguous()
        self.labels: Tensor = torch.from_numpy(all_labels[self.indices])

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> Sample:
        if not -len(self) <= i < len(self):
            raise IndexError(f"DigitsDataset[{self.split.value}] has {len(self)} items, index {i}")
        label = int(self.labels[i])
        return Sample(
            image=self.images[i].clone(),
            label=label,
            texts=[TextSegment(Role.CAPTION, digit_caption(label))],
            meta={"index": int(self.indices[i]), "split": self.split.value},
        )

    def __repr__(self) -> str:
        return (f"DigitsDataset(split={self.split.value!r}, n={len(self)}, "
                f"image_size={self.image_size}, channels={self.channels}, seed={self.seed})")
