"""What the sampling commands write besides their grids: one file a sample, and JSON lines of what made each.

``--out-dir DIR`` (``mdm sample``, ``mdm generate``) writes

* ``DIR/000.png``, ``001.png``, ...: one PNG a sample, the pipeline's images in [0, 1] as 8-bit RGB
  (grayscale models as L), each value ``round(255 * x)`` (:func:`to_uint8`), so a PNG decodes to exactly the
  pixels of the tensor the pipeline returned;
* for a video model, ``DIR/000/`` ... one folder a clip, its frames as ``frame-00.png``, ... (lossless
  PNGs, where a GIF's 256-colour palette would change the pixels);
* ``DIR/samples.jsonl``: one line a sample, in order: ``file``, ``index``, ``seed``, and the prompt, label or
  generated caption.

Batch captioning and answering write JSON lines too (:func:`write_jsonl`). Output paths are checked before a
model samples for minutes (:func:`output_dir`), as :func:`mdm.cli.common.output_file` checks a grid's.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

import torch
from torch import Tensor

from mdm.checkpoint import make_writable_folder

SAMPLES_FILE = "samples.jsonl"
T = TypeVar("T")


def output_dir(out_dir: str | Path, option: str = "--out-dir") -> Path:
    """The folder ``out_dir``, created if need be and checked writable, before any sampling."""
    path = Path(out_dir)
    if path.exists() and not path.is_dir():
        raise ValueError(f"{option} {path} is a file, not a folder")
    make_writable_folder(path, option)
    return path


def to_uint8(images: Tensor) -> Tensor:
    """Images ``(..., c, h, w)`` in [0, 1] -> uint8 ``(..., h, w, c)``: ``round(255 * x)``, as every figure of
    the package converts them (values outside [0, 1] are clamped first)."""
    return (images.detach().float().clamp(0, 1) * 255).round().to(torch.uint8).movedim(-3, -1).cpu()


def _write_png(pixels: Tensor, path: Path) -> None:
    """One (h, w, c) uint8 image as a PNG: RGB for 3 channels, L for 1."""
    from PIL import Image

    array = pixels.numpy()
    if array.shape[-1] == 1:
        Image.fromarray(array[..., 0]).save(path)  # uint8 (h, w): mode L
    elif array.shape[-1] == 3:
        Image.fromarray(array).save(path)  # uint8 (h, w, 3): mode RGB
    else:
        raise ValueError(f"cannot write {array.shape[-1]}-channel images as PNG (1 or 3 channels)")


def write_sample_files(out_dir: Path, images: Tensor, records: Sequence[dict[str, Any]]) -> Path:
    """One PNG a sample (or a folder of frame PNGs a clip) in ``out_dir`` and ``samples.jsonl`` beside them.

    ``images``: (b, c, s, s) images or (b, T, c, s, s) clips in [0, 1], as the pipeline returns them;
    ``records``: one dict a sample (its prompt or label, seed, ...), to which the file name and index are added.
    Returns the JSONL's path.
    """
    if images.dim() not in (4, 5) or images.shape[0] != len(records):
        raise ValueError(f"write_sample_files: {len(records)} records for images of shape {tuple(images.shape)}; "
                         f"expected one record a sample of (b, c, s, s) images or (b, T, c, s, s) clips")
    pixels = to_uint8(images)
    width = max(3, len(str(len(records) - 1)))
    lines = []
    for i, (sample, record) in enumerate(zip(pixels, records)):
        name = f"{i:0{width}d}"
        if images.dim() == 5:  # a clip: a folder of its frames
            folder = out_dir / name
            folder.mkdir(exist_ok=True)
            frames = max(2, len(str(sample.shape[0] - 1)))
            for t, frame in enumerate(sample):
                _write_png(frame, folder / f"frame-{t:0{frames}d}.png")
            lines.append({"file": f"{name}/", "index": i, **record})
        else:
            _write_png(sample, out_dir / f"{name}.png")
            lines.append({"file": f"{name}.png", "index": i, **record})
    return write_jsonl(out_dir / SAMPLES_FILE, lines)


def write_jsonl(path: Path, records: Iterable[dict[str, Any]]) -> Path:
    """``records`` as JSON lines (UTF-8, one object a line) in ``path``, written whole then renamed into place, so
    a reader never sees half a file."""
    tmp = path.with_name(path.name + ".writing")
    with tmp.open("w", encoding="utf-8") as f:
        for record in records:
            f.write(json.dumps(record, ensure_ascii=False) + "\n")
    os.replace(tmp, path)
    return path


def batches(items: Sequence[T], size: int) -> Iterator[tuple[int, Sequence[T]]]:
    """``(batch number, items)`` of ``size`` items at most, in order."""
    for k, start in enumerate(range(0, len(items), size)):
        yield k, items[start:start + size]
