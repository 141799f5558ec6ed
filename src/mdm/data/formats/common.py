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
Images become float tensors (3, H, W) in [0, 1]: turned upright by their EXIF
orientation (a phone stores a portrait photo as a landscape one plus a tag), RGB
(16-bit images scaled from their own range, transparent pixels shown over white,
:func:`to_rgb`), centre-cropped to the target aspect ratio, then resized (bicubic),
as ImageNet generative models do.
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageOps
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


def list_field(record: Any, key: str, path: Path, where: str) -> list:
    """A list field (of records), checked so that ``"images": 5`` is named, not a ``TypeError`` from a loop."""
    value = field(record, key, path, where)
    if not isinstance(value, list):
        raise ValueError(f"{path}: {where} field {key!r} is a {type(value).__name__}, expected a list")
    return value


def id_field(record: Any, key: str, path: Path, where: str) -> int | str:
    """An id field: an int or a string (a list or object cannot index the records it should join)."""
    value = field(record, key, path, where)
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise ValueError(f"{path}: {where} field {key!r} is a {type(value).__name__} ({value!r}), expected an "
                         f"int or a string id")
    return value


def json_lines(lines: Iterable[str], path: Path, example: str) -> Iterator[tuple[int, dict[str, Any]]]:
    """``(line number, object)`` of each non-blank line of a JSON-lines file, or a ValueError naming the file and
    line that is not JSON or not an object (``example``: the object the message shows instead)."""
    for lineno, raw in enumerate(lines, start=1):
        if not raw.strip():
            continue
        try:
            record = json.loads(raw)
        except json.JSONDecodeError as err:
            raise ValueError(f"{path}: line {lineno} is not JSON ({err.msg}, column {err.colno})") from None
        if not isinstance(record, dict):
            raise ValueError(f"{path}: line {lineno} is a JSON {type(record).__name__}, expected an object such "
                             f"as {example}")
        yield lineno, record


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
            ImageOps.exif_transpose(im, in_place=True)  # no copy when there is no orientation tag
            im = to_rgb(im)
            iw, ih = im.size
            scale = min(iw / w, ih / h)  # largest centred box with the target aspect
            cw, ch = round(w * scale), round(h * scale)
            left, top = (iw - cw) // 2, (ih - ch) // 2
            im = im.crop((left, top, left + cw, top + ch)).resize((w, h), Image.Resampling.BICUBIC)
            array = np.asarray(im, dtype=np.float32) / 255.0
    except (OSError, SyntaxError, ValueError) as err:  # PIL raises all three on bad files
        raise OSError(f"cannot read image {path}: {err}") from err
    return torch.from_numpy(array).permute(2, 0, 1).clamp_(0.0, 1.0).contiguous()


def to_rgb(im: Image.Image) -> Image.Image:
    """``im`` as 8-bit RGB, its full range kept, transparent pixels over white.

    PIL's own ``convert("RGB")`` clips 16-bit and 32-bit integer pixels at 255 (a 16-bit grayscale PNG turns
    almost all white), so those are scaled from their range first. It also drops the alpha channel, which
    shows whatever colour the fully transparent pixels happen to store (often black: a logo on a transparent
    ground would train as a logo on black); images with alpha, or with a transparent colour (a PNG's tRNS), are
    composited over white instead, as a page shows them.
    """
    if im.mode in ("I;16", "I;16L", "I;16B", "I;16N", "I"):
        array = np.asarray(im, dtype=np.float64)
        array = np.clip(array, 0, 65535) / 257.0  # 16-bit PNGs decode to I;16 or I, in [0, 65535]
        return Image.fromarray(np.round(array).astype(np.uint8), "L").convert("RGB")
    if im.mode == "F":
        array = np.asarray(im, dtype=np.float64)
        peak = 1.0 if array.max(initial=0.0) <= 1.0 else 255.0  # float TIFFs are stored in [0, 1] or [0, 255]
        return Image.fromarray(np.round(np.clip(array / peak, 0, 1) * 255).astype(np.uint8), "L").convert("RGB")
    if im.mode in ("RGBA", "LA", "PA", "RGBa") or (im.mode in ("P", "L", "RGB") and "transparency" in im.info):
        rgba = im.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    return im.convert("RGB")


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
