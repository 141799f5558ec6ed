"""Hugging Face's ImageFolder with captions (what diffusers' text-to-image scripts read): images and their captions.

The folder holds images, at any depth, and one metadata file beside them:

* ``metadata.jsonl``: one JSON object a line, ``{"file_name": "photos/kite.jpg", "text": "a red kite"}``;
* or ``metadata.csv``: a header row naming the same columns, then one row an image.

``file_name`` is the image's path relative to the folder. The caption column is ``text`` (Hugging Face's default)
or ``caption``, whichever the first record (JSONL) or the header (CSV) has; ``caption_column`` names another. A
JSONL caption may also be a list of captions, as diffusers reads it. Several captions of one image are several
lines (or a list); each is one item with ``per_caption=True``, as training wants (every caption trains equally
often), and by default an image is one item holding all its captions, in file order, as evaluation wants
(CIDEr's references). Images the metadata does not name are not read.

Bad input fails loudly, naming the file and the line: no metadata file (or both), a line that is not JSON, a
record without ``file_name`` or the caption column (the message lists the fields it has), a caption that is
empty or not a string. A ``file_name`` that does not exist, or an image that cannot be read, is skipped and
counted in one warning, as for COCO (:mod:`mdm.data.formats.common`; ``strict=True`` raises).
"""

from __future__ import annotations

import csv
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from mdm.data.formats.common import ImageDataset, PathLike, existing, json_lines, load_image, size_hw
from mdm.data.sample import Role, Sample, TextSegment

METADATA_FILES = ("metadata.jsonl", "metadata.csv")
CAPTION_COLUMNS = ("text", "caption")  # tried in this order when caption_column is None


def metadata_file(root: Path) -> Path:
    """The folder's one metadata file; none, or both, is an error naming the folder (which one is meant?)."""
    found = [root / name for name in METADATA_FILES if (root / name).is_file()]
    if not found:
        raise FileNotFoundError(f"{root}: no {' or '.join(METADATA_FILES)} in this captioned image folder "
                                f"(one line an image: {{\"file_name\": \"photos/1.jpg\", \"text\": \"a caption\"}})")
    if len(found) > 1:
        raise ValueError(f"{root}: both {' and '.join(p.name for p in found)}; keep one metadata file")
    return found[0]


def read_records(path: Path) -> Iterator[tuple[int, dict[str, Any], str]]:
    """``(line number, record, what the record's keys are called)`` of a metadata file, blank lines skipped.

    The line number is the file's own (a CSV row's last line, should a quoted caption span several), so a
    message can send the user to it.
    """
    try:
        with path.open(encoding="utf-8-sig", newline="") as f:  # -sig: spreadsheets write a byte-order mark
            if path.suffix == ".csv":
                reader = csv.DictReader(f, strict=True)
                columns = reader.fieldnames or []
                if not columns:
                    raise ValueError(f"{path}: empty, expected a header row such as 'file_name,text'")
                try:
                    for row in reader:
                        cells = len(columns) + len(row.get(None, [])) - sum(v is None for v in row.values())
                        if cells != len(columns):  # DictReader would pad or spill the row silently
                            raise ValueError(f"{path}: line {reader.line_num} has {cells} cells, the header (line 1) "
                                             f"names {len(columns)}: {', '.join(columns)}")
                        yield reader.line_num, row, "column"
                except csv.Error as err:
                    raise ValueError(f"{path}: line {reader.line_num} is not valid CSV: {err}") from None
                return
            for lineno, record in json_lines(f, path, '{"file_name": "1.jpg", "text": "a caption"}'):
                yield lineno, record, "field"
    except UnicodeDecodeError as err:
        raise ValueError(f"{path}: not UTF-8 text ({err.reason} at byte {err.start})") from None


def _names(record: dict[str, Any]) -> str:
    return ", ".join(record) or "none"


def _captions(value: Any, where: str, column: str) -> list[str]:
    """The captions of one record's caption cell: a string, or (JSONL) a list of strings; none may be empty."""
    values = value if isinstance(value, list) and value else [value]
    captions = []
    for v in values:
        if not isinstance(v, str):
            raise ValueError(f"{where}: {column!r} is a {type(v).__name__}, expected a caption string")
        if not v.strip():
            raise ValueError(f"{where}: empty caption in {column!r}")
        captions.append(v.strip())
    return captions


class CaptionFolderDataset(ImageDataset):
    """A captioned image folder (the module docstring): Samples with an image and CAPTION texts.

    ``texts(i)`` reads item ``i``'s captions without decoding its image (a tokenizer's corpus needs only these).
    """

    def __init__(self, root: PathLike, image_size: int | Sequence[int], *, per_caption: bool = False,
                 caption_column: str | None = None, strict: bool = False, full_verify: bool = False) -> None:
        self.root = existing(root, "captioned image folder", is_dir=True)
        self.image_size = size_hw(image_size)
        self.metadata = metadata_file(self.root)
        column = caption_column
        pairs: list[tuple[Path, str, int]] = []  # (image, caption, line), in file order
        for lineno, record, key_word in read_records(self.metadata):
            where = f"{self.metadata}: line {lineno}"
            if column is None:  # the first record decides, so every line is read by the same column
                column = next((c for c in CAPTION_COLUMNS if c in record), None)
                if column is None:
                    at = f"{self.metadata}: the header (line 1)" if key_word == "column" else where
                    raise ValueError(f"{at} has no caption {key_word} {' or '.join(map(repr, CAPTION_COLUMNS))} "
                                     f"(its {key_word}s: {_names(record)})")
            for key in ("file_name", column):
                if key not in record:  # a CSV's columns are its header's
                    at = f"{self.metadata}: the header (line 1)" if key_word == "column" else where
                    raise ValueError(f"{at} has no {key_word} {key!r} (its {key_word}s: {_names(record)})")
            name = record["file_name"]
            if not isinstance(name, str) or not name.strip():
                raise ValueError(f"{where}: 'file_name' must be a path relative to {self.root}, got {name!r}")
            image = self.root / name.strip()
            pairs += [(image, caption, lineno) for caption in _captions(record[column], where, column)]
        if not pairs:
            raise ValueError(f"{self.metadata}: no records (one line an image: file_name and a caption)")
        self.caption_column = column
        captions: dict[Path, list[str]] = {}
        for image, caption, _ in pairs:
            captions.setdefault(image, []).append(caption)
        good = self._verify_images(captions.keys(), strict, full_verify, str(self.root))
        entries = [(image, [caption]) for image, caption, _ in pairs] if per_caption else list(captions.items())
        self.items: list[tuple[Path, list[str]]] = [(image, texts) for image, texts in entries if image in good]

    def texts(self, index: int) -> list[TextSegment]:
        """The captions of item ``index``, without reading its image."""
        return [TextSegment(Role.CAPTION, c) for c in self.items[index][1]]

    def __getitem__(self, index: int) -> Sample:
        path = self.items[index][0]
        meta = {"path": str(path), "file_name": path.relative_to(self.root).as_posix()}
        return Sample(image=load_image(path, self.image_size), texts=self.texts(index), meta=meta)
