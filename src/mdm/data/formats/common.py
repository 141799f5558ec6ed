"""What the file formats of :mod:`mdm.data.formats` share: paths and JSON records checked with messages that
name the file, the record and the field, and images read and verified one way.

Images are **verified eagerly**, at construction (``PIL.Image.verify``: header and,
for PNG, chunk checksums; ``full_verify=True`` decodes every pixel, which also
catches truncated JPEGs). A dataset of many thousand files may hold a few bad
ones; they are skipped, counted in ``dataset.skipped`` (paths and reasons in
``dataset.skipped_files``) and named in one warning, never dropped silently;
``strict=True`` makes the first one an error naming it. Verifying lazily in
``__getitem__`` could not skip (the index is already promised), so a file that
passes verification but fails to decode later raises there, naming itself.
Images become float tensors (3, H, W) in [0, 1]: RGB, centre-cropped to the
target aspect ratio, then resized (bicubic), as ImageNet generative models do.
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import Tensor
from torch.utils.data import Dataset
from tqdm.auto import tqdm

from mdm.data.sample import Sample

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff")
PathLike = str | os.PathLike[str]


def existing(path: PathLike, kind: str, is_dir: bool = False) -> Path:
    """``path``, or a FileNotFoundError naming what it should have been (``kind``)."""
    p = Path(path)
    if not (p.is_dir() if is_dir else p.is_file()):
        raise FileNotFoundError(f"{kind} not found: {p}")
    return p


def load_json(path: Path) -> Any:
    """The JSON of ``path``; malformed JSON is a ValueError naming the file, line and column."""
    try:
        with path.open(encoding="utf-8") as f:
            return json.load(f)
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: malformed JSON at line {err.lineno}, column {err.colno}: {err.msg}") from err


def field(record: Any, key: str, path: Path, where: str) -> Any:
    """``record[key]``, or a ValueError naming the file, the record (``where``) and the field."""
    if not isinstance(record, dict):
        raise ValueError(f"{path}: {where} is a {type(record).__name__}, expected an object")
    if key not in record:
        raise ValueError(f"{path}: {where} has no field {key!r}")
    return record[key]


def text_field(record: Any, key: str, path: Path, where: str) -> str:
    """A string field, checked here so a bad record fails at construction, not mid-epoch."""
    value = field(record, key, path, where)
    if not isinstance(value, str):
        raise ValueError(f"{path}: {where} field {key!r} is a {type(value).__name__}, expected a string")
    return value


def size_hw(image_size: int | Sequence[int]) -> tuple[int, int]:
    """``image_size`` (a side, or (height, width)) as (height, width), checked."""
    size = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
    if len(size) != 2 or min(size) < 1:
        raise ValueError(f"image_size must be a positive int or (height, width), got {image_size}")
    return int(size[0]), int(size[1])


def load_image(path: PathLike, image_size: int | Sequence[int]) -> Tensor:
    """(3, H, W) float32 in [0, 1]: RGB, centre-cropped to H:W, resized with bicubic filtering.

    Cropping before resizing keeps objects undistorted (the ImageNet convention of
    DiT/ADM); the crop is exact, so no pixel outside it leaks in through the
    filter's support; the result is clamped since bicubic overshoots at edges.
    """
    h, w = size_hw(image_size)
    try:
        with Image.open(path) as im:
            im = im.convert("RGB")
            iw, ih = im.size
            scale = min(iw / w, ih / h)  # largest centred box with the target aspect
            cw, ch = round(w * scale), round(h * scale)
            left, top = (iw - cw) // 2, (ih - ch) // 2
            im = im.crop((left, top, left + cw, top + ch)).resize((w, h), Image.Resampling.BICUBIC)
            array = np.asarray(im, dtype=np.float32) / 255.0
    except (OSError, SyntaxError, ValueError) as err:  # PIL raises all three on bad files
        raise OSError(f"cannot read image {path}: {err}") from err
    return torch.from_numpy(array).permute(2, 0, 1).clamp_(0.0, 1.0).contiguous()


class ImageDataset(Dataset[Sample]):
    """What the image datasets share: eager verification (module docstring), ``items``, the skip count."""

    items: list[Any]
    skipped_files: list[tuple[str, str]]

    def __len__(self) -> int:
        return len(self.items)

    def _verify_images(self, paths: Iterable[Path], strict: bool, full_verify: bool, desc: str) -> set[Path]:
        paths = list(paths)
        self.skipped_files = []
        good: set[Path] = set()
        # tqdm hides itself when stderr is not a terminal (disable=None), so tests stay quiet.
        for path in tqdm(paths, desc=f"verifying {desc}", unit="img", disable=None if len(paths) > 1000 else True):
            try:
                if not path.is_file():
                    raise FileNotFoundError(f"image not found: {path}")
                with Image.open(path) as im:
                    if full_verify:
                        im.load()
                    else:
                        im.verify()
            except Exception as err:  # noqa: BLE001 - PIL raises many types on bad files
                if strict:
                    kind = FileNotFoundError if isinstance(err, FileNotFoundError) else ValueError
                    raise kind(f"corrupt or missing image {path}: {err}") from err
                self.skipped_files.append((str(path), f"{type(err).__name__}: {err}"))
            else:
                good.add(path)
        if self.skipped_files:
            first, reason = self.skipped_files[0]
            warnings.warn(
                f"{type(self).__name__}: skipped {len(self.skipped_files)} of {len(paths)} images "
                f"that cannot be read, first {first} ({reason}); see .skipped_files, or strict=True to fail",
                stacklevel=3,
            )
        return good

    @property
    def skipped(self) -> int:
        """How many images were skipped as unreadable at construction."""
        return len(self.skipped_files)
