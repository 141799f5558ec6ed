"""Images and questions to caption or answer in a batch: named one by one, by a folder, a list file or a JSONL.

* an image file (a suffix of :data:`IMAGE_EXTENSIONS`): itself;
* a folder: its image files at any depth, sorted by path (hidden files and folders skipped);
* a list file (any other file, e.g. ``images.txt``): one image path a line, relative paths from the list
  file's folder; blank lines and lines starting with ``#`` skipped;
* a questions JSONL (:func:`read_questions`): one ``{"image": path, "question": text}`` (VQA) or
  ``{"scene": text, "question": text}`` (text->text) a line, relative image paths from the file's folder;
  other fields are kept and written back beside the answer.

A path given by itself must exist (a ``FileNotFoundError`` naming it). A list or a JSONL may name files that
are gone since it was written: those are collected in ``missing``, not raised, so a caller can report them and
go on with the rest, or refuse. A malformed line is always an error naming the file, the line and the field.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mdm.data.formats.common import IMAGE_EXTENSIONS, PathLike, existing, json_lines


@dataclass
class ImageInputs:
    """What a batch command reads: the images that exist, in order, and per list file the paths it named that do
    not exist (``missing[list_file] = [path, ...]``, with the number of paths the list named in ``named``)."""

    paths: list[Path] = field(default_factory=list)
    missing: dict[Path, list[Path]] = field(default_factory=dict)
    named: dict[Path, int] = field(default_factory=dict)


def is_image_file(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_EXTENSIONS


def folder_images(folder: Path) -> list[Path]:
    """The image files under ``folder`` at any depth, sorted, hidden files and folders skipped."""
    return sorted(p for p in folder.rglob("*") if p.is_file() and is_image_file(p)
                  and not any(part.startswith(".") for part in p.relative_to(folder).parts))


def read_image_list(path: Path) -> list[Path]:
    """The image paths a list file names, one a line (relative to its folder), in order."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as err:
        raise ValueError(f"{path} is not a text list of image paths (one a line): {err}") from None
    entries = [line.strip() for line in lines]
    return [_resolve(path, entry) for entry in entries if entry and not entry.startswith("#")]


def collect_images(sources: Sequence[PathLike]) -> ImageInputs:
    """The images ``sources`` name (image files, folders, list files; the module docstring), in order.

    A folder without images is a ``ValueError`` naming it: a mistyped folder should not caption nothing.
    """
    found = ImageInputs()
    for source in sources:
        path = Path(source)
        if path.is_dir():
            images = folder_images(path)
            if not images:
                raise ValueError(f"{path}: no image files in this folder (suffixes {', '.join(IMAGE_EXTENSIONS)})")
            found.paths += images
        elif is_image_file(path) or not path.exists():
            found.paths.append(existing(path, "image"))
        else:
            listed = read_image_list(path)
            found.named[path] = len(listed)
            found.paths += [p for p in listed if p.is_file()]
            gone = [p for p in listed if not p.is_file()]
            if gone:
                found.missing[path] = gone
    return found


@dataclass
class Question:
    """One line of a questions JSONL: the question about ``image`` (a path) or ``scene`` (a text), and the
    line's whole record, written back beside the answer."""

    question: str
    image: Path | None
    scene: str | None
    record: dict[str, Any]
    line: int


def read_questions(path: PathLike) -> tuple[list[Question], dict[Path, list[Path]]]:
    """The questions of a JSONL file (the module docstring), and ``{path: [missing images]}`` for the images it
    names that do not exist (their questions are left out)."""
    path = existing(path, "questions file")
    questions, missing = [], []
    with path.open(encoding="utf-8") as f:
        for lineno, record in json_lines(f, path, '{"image": "a.png", "question": "what color is it?"}'):
            where = f"{path}: line {lineno}"
            if not isinstance(record.get("question"), str) or not record["question"].strip():
                raise ValueError(f"{where}: field 'question' must be a non-empty string")
            if ("image" in record) == ("scene" in record):
                raise ValueError(f"{where}: give exactly one of the fields 'image' (a path: VQA) or 'scene' "
                                 f"(a text: text->text)")
            key = "image" if "image" in record else "scene"
            if not isinstance(record[key], str) or not record[key].strip():
                raise ValueError(f"{where}: field {key!r} must be a non-empty string")
            image = _resolve(path, record["image"]) if key == "image" else None
            if image is not None and not image.is_file():
                missing.append(image)
                continue
            questions.append(Question(record["question"], image, record.get("scene"), record, lineno))
    if not questions and not missing:
        raise ValueError(f"{path}: no questions (one JSON object a line)")
    return questions, ({path: missing} if missing else {})


def _resolve(list_file: Path, entry: str) -> Path:
    """``entry`` as a path: absolute, or relative to ``list_file``'s folder."""
    entry_path = Path(entry).expanduser()
    return entry_path if entry_path.is_absolute() else list_file.parent / entry_path
