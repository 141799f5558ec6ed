"""Loaders for real data formats on local disk, each a Dataset of :class:`Sample` (DESIGN.md §6).

* :class:`ImageFolderDataset` — ImageNet-style ``root/<class_name>/*.jpg|png``;
* :class:`CocoCaptionsDataset` — COCO captions JSON;
* :class:`VQAv2Dataset` — VQAv2 questions + annotations JSON over COCO images;
* :class:`ChatJsonlDataset` — UltraChat-style JSON lines.

Bad input fails loudly: a missing file or folder is a ``FileNotFoundError``
naming it; malformed JSON a ``ValueError`` naming the file, line and column; a
record without a field a ``ValueError`` naming the file, the record index and
the field.

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

from mdm.data.sample import Role, Sample, TextSegment

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff")
PathLike = str | os.PathLike[str]


def _existing(path: PathLike, kind: str, is_dir: bool = False) -> Path:
    p = Path(path)
    if not (p.is_dir() if is_dir else p.is_file()):
        raise FileNotFoundError(f"{kind} not found: {p}")
    return p


def _load_json(path: Path) -> Any:
    try:
        with path.open(encoding="utf-8") as f:
            return json.load(f)
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: malformed JSON at line {err.lineno}, column {err.colno}: {err.msg}") from err


def _field(record: Any, key: str, path: Path, where: str) -> Any:
    """``record[key]``, or a ValueError naming the file, the record (``where``) and the field."""
    if not isinstance(record, dict):
        raise ValueError(f"{path}: {where} is a {type(record).__name__}, expected an object")
    if key not in record:
        raise ValueError(f"{path}: {where} has no field {key!r}")
    return record[key]


def _text(record: Any, key: str, path: Path, where: str) -> str:
    """A string field, checked here so a bad record fails at construction, not mid-epoch."""
    value = _field(record, key, path, where)
    if not isinstance(value, str):
        raise ValueError(f"{path}: {where} field {key!r} is a {type(value).__name__}, expected a string")
    return value


def _size_hw(image_size: int | Sequence[int]) -> tuple[int, int]:
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
    h, w = _size_hw(image_size)
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


class _ImageDataset(Dataset[Sample]):
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


# -- ImageNet-style class folders ------------------------------------------------------


class ImageFolderDataset(_ImageDataset):
    """``root/<class_name>/<image>``; class names sorted give the label ids 0..C-1.

    Sorting makes the ids reproducible across machines (``os.listdir`` order is
    not). ``class_names[label]`` maps back; files whose suffix is not an image
    extension are ignored (``.DS_Store``, ``README``), hidden folders too.
    """

    def __init__(self, root: PathLike, image_size: int | Sequence[int], *,
                 extensions: Sequence[str] = IMAGE_EXTENSIONS, strict: bool = False,
                 full_verify: bool = False) -> None:
        self.root = _existing(root, "image folder root", is_dir=True)
        self.image_size = _size_hw(image_size)
        self.class_names = sorted(d.name for d in self.root.iterdir() if d.is_dir() and not d.name.startswith("."))
        if not self.class_names:
            raise ValueError(f"{self.root}: no class folders (expected root/<class_name>/<image>)")
        exts = {e.lower() for e in extensions}
        items = [
            (path, label)
            for label, name in enumerate(self.class_names)
            for path in sorted((self.root / name).iterdir())
            if path.is_file() and path.suffix.lower() in exts
        ]
        if not items:
            raise ValueError(f"{self.root}: no images with extensions {sorted(exts)} in the class folders")
        good = self._verify_images((p for p, _ in items), strict, full_verify, str(self.root))
        self.items: list[tuple[Path, int]] = [(p, label) for p, label in items if p in good]

    def __getitem__(self, index: int) -> Sample:
        path, label = self.items[index]
        meta = {"path": str(path), "class_name": self.class_names[label]}
        return Sample(image=load_image(path, self.image_size), label=label, meta=meta)


# -- COCO captions ---------------------------------------------------------------------


class CocoCaptionsDataset(_ImageDataset):
    """COCO captions: ``{"images": [{"id", "file_name"}], "annotations": [{"image_id", "caption"}]}``.

    By default one Sample per image with every caption as a CAPTION segment (in
    file order), so evaluation sees all references (CIDEr); every listed image is
    kept, also one with no caption. ``per_caption=True`` gives one Sample per
    caption instead (training on each caption equally often). A caption whose
    ``image_id`` is not among the images is an error: the files disagree.
    """

    def __init__(self, annotations_json: PathLike, images_dir: PathLike, image_size: int | Sequence[int], *,
                 per_caption: bool = False, strict: bool = False, full_verify: bool = False) -> None:
        path = _existing(annotations_json, "COCO annotations file")
        self.images_dir = _existing(images_dir, "COCO images folder", is_dir=True)
        self.image_size = _size_hw(image_size)
        data = _load_json(path)
        images = _field(data, "images", path, "top-level object")
        annotations = _field(data, "annotations", path, "top-level object")
        files: dict[int, Path] = {}
        for i, rec in enumerate(images):
            image_id = _field(rec, "id", path, f"images record {i}")
            files[image_id] = self.images_dir / _field(rec, "file_name", path, f"images record {i}")
        captions: dict[int, list[str]] = {image_id: [] for image_id in files}
        pairs: list[tuple[int, str]] = []
        for i, rec in enumerate(annotations):
            image_id = _field(rec, "image_id", path, f"annotations record {i}")
            caption = _text(rec, "caption", path, f"annotations record {i}").strip()
            if image_id not in files:
                raise ValueError(f"{path}: annotations record {i} refers to image_id {image_id} not in 'images'")
            captions[image_id].append(caption)
            pairs.append((image_id, caption))
        good = self._verify_images(files.values(), strict, full_verify, str(self.images_dir))
        self.files = files
        entries = pairs if per_caption else [(image_id, None) for image_id in files]
        self.items: list[tuple[int, list[str]]] = [
            (image_id, [text] if text is not None else captions[image_id])
            for image_id, text in entries
            if files[image_id] in good
        ]

    def __getitem__(self, index: int) -> Sample:
        image_id, caps = self.items[index]
        path = self.files[image_id]
        return Sample(
            image=load_image(path, self.image_size),
            texts=[TextSegment(Role.CAPTION, c) for c in caps],
            meta={"image_id": image_id, "path": str(path)},
        )


# -- VQAv2 -----------------------------------------------------------------------------


class VQAv2Dataset(_ImageDataset):
    """VQAv2 questions (+ annotations) over COCO images; one Sample per question.

    ``texts`` = [QUESTION, ANSWER (the ``multiple_choice_answer``)] and
    ``answers`` = the human answers (ten in VQAv2), which the official accuracy
    ``min(#matches / 3, 1)`` needs. ``annotations_json=None`` reads a test split
    (questions only; no ANSWER segment, ``answers=None``).

    The image of ``image_id`` is ``images_dir / image_name.format(image_id=...)``;
    by default ``COCO_<data_subtype>_<12-digit id>.jpg`` with the questions file's
    ``data_subtype`` (``val2014`` when absent), falling back to the COCO 2017 name
    ``<12-digit id>.jpg`` and then ``<id>.jpg``, so a renamed folder still works.
    A question whose image is missing or corrupt is skipped and counted like any
    bad image (``strict=True`` raises).
    """

    def __init__(self, questions_json: PathLike, annotations_json: PathLike | None, images_dir: PathLike,
                 image_size: int | Sequence[int], *, image_name: str | None = None, strict: bool = False,
                 full_verify: bool = False) -> None:
        qpath = _existing(questions_json, "VQAv2 questions file")
        apath = None if annotations_json is None else _existing(annotations_json, "VQAv2 annotations file")
        self.images_dir = _existing(images_dir, "VQAv2 images folder", is_dir=True)
        self.image_size = _size_hw(image_size)
        qdata = _load_json(qpath)
        questions = _field(qdata, "questions", qpath, "top-level object")
        if image_name is None:
            subtype = qdata.get("data_subtype", "val2014")
            image_name = f"COCO_{subtype}_{{image_id:012d}}.jpg"
        self.image_name = image_name

        answers_by_qid: dict[int, dict[str, Any]] = {}
        if apath is not None:
            for i, rec in enumerate(_field(_load_json(apath), "annotations", apath, "top-level object")):
                where = f"annotations record {i}"
                qid = _field(rec, "question_id", apath, where)
                human = _field(rec, "answers", apath, where)
                if not isinstance(human, list) or not human:
                    raise ValueError(f"{apath}: {where} field 'answers' is not a non-empty list")
                answers_by_qid[qid] = {
                    "image_id": _field(rec, "image_id", apath, where),
                    "answer": _text(rec, "multiple_choice_answer", apath, where),
                    "answers": [_text(a, "answer", apath, f"{where} answer {j}") for j, a in enumerate(human)],
                    "answer_type": rec.get("answer_type"),
                }

        records: list[dict[str, Any]] = []
        for i, rec in enumerate(questions):
            where = f"questions record {i}"
            entry = {
                "question_id": _field(rec, "question_id", qpath, where),
                "image_id": _field(rec, "image_id", qpath, where),
                "question": _text(rec, "question", qpath, where),
            }
            if apath is not None:
                ann = answers_by_qid.get(entry["question_id"])
                if ann is None:
                    raise ValueError(f"{apath}: no annotation for question_id {entry['question_id']} ({qpath})")
                if ann["image_id"] != entry["image_id"]:
                    raise ValueError(
                        f"{apath}: question_id {entry['question_id']} has image_id {ann['image_id']}, "
                        f"but {qpath} says {entry['image_id']}"
                    )
                entry.update(ann)
            records.append(entry)

        self.files = {r["image_id"]: self._image_path(r["image_id"]) for r in records}
        good = self._verify_images(self.files.values(), strict, full_verify, str(self.images_dir))
        self.items = [r for r in records if self.files[r["image_id"]] in good]

    def _image_path(self, image_id: int) -> Path:
        """The first existing of the pattern and the two fallbacks (else the pattern, reported missing)."""
        paths = [self.images_dir / n for n in (self.image_name.format(image_id=image_id),
                                               f"{image_id:012d}.jpg", f"{image_id}.jpg")]
        return next((p for p in paths if p.is_file()), paths[0])

    def __getitem__(self, index: int) -> Sample:
        r = self.items[index]
        texts = [TextSegment(Role.QUESTION, r["question"])]
        if "answer" in r:
            texts.append(TextSegment(Role.ANSWER, r["answer"]))
        meta = {k: r[k] for k in ("question_id", "image_id", "answer_type") if k in r}
        meta["path"] = str(self.files[r["image_id"]])
        return Sample(
            image=load_image(self.files[r["image_id"]], self.image_size),
            texts=texts,
            answers=list(r["answers"]) if "answers" in r else None,
            meta=meta,
        )


# -- chat JSON lines -------------------------------------------------------------------

_CHAT_ROLES = {"user": Role.USER, "assistant": Role.ASSISTANT, "system": Role.TEXT}


class ChatJsonlDataset(Dataset[Sample]):
    """UltraChat-style JSON lines, one dialogue a line, as USER/ASSISTANT segments.

    A line is ``{"messages": [{"role": "user"|"assistant"|"system", "content": str}]}``
    (a system prompt becomes a TEXT segment) or UltraChat's raw
    ``{"data": [turn, turn, ...]}``, alternating user/assistant from a user turn.
    Every line is parsed once at construction, so errors surface before training
    (file, line number, field), but only byte offsets are kept: UltraChat is
    gigabytes, and ``__getitem__`` re-reads its line. Blank lines are ignored.
    """

    def __init__(self, path: PathLike) -> None:
        self.path = _existing(path, "chat JSONL file")
        self.offsets: list[tuple[int, int]] = []  # (byte offset, line number)
        offset = 0
        with self.path.open("rb") as f:
            for lineno, raw in enumerate(f, start=1):
                if raw.strip():
                    self._parse(raw, lineno, len(self.offsets))
                    self.offsets.append((offset, lineno))
                offset += len(raw)

    def _parse(self, raw: bytes, lineno: int, index: int) -> list[TextSegment]:
        where = f"{self.path}: record {index} (line {lineno})"
        try:
            record = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise ValueError(f"{where}: malformed JSON: {err}") from err
        if not isinstance(record, dict):
            raise ValueError(f"{where}: expected an object, got {type(record).__name__}")
        if "messages" in record:
            if not isinstance(record["messages"], list):
                raise ValueError(f"{where}: field 'messages' must be a list")
            segments = []
            for i, msg in enumerate(record["messages"]):
                role = _field(msg, "role", self.path, f"record {index} (line {lineno}) message {i}")
                content = _text(msg, "content", self.path, f"record {index} (line {lineno}) message {i}")
                if role not in _CHAT_ROLES:
                    raise ValueError(f"{where}: message {i} has role {role!r}, expected one of {list(_CHAT_ROLES)}")
                segments.append(TextSegment(_CHAT_ROLES[role], content))
        elif "data" in record:
            turns = record["data"]
            if not isinstance(turns, list) or not all(isinstance(t, str) for t in turns):
                raise ValueError(f"{where}: field 'data' must be a list of strings")
            segments = [TextSegment(Role.USER if i % 2 == 0 else Role.ASSISTANT, t) for i, t in enumerate(turns)]
        else:
            raise ValueError(f"{where}: record has no field 'messages' (or 'data')")
        if not segments:
            raise ValueError(f"{where}: empty dialogue")
        return segments

    def __len__(self) -> int:
        return len(self.offsets)

    def __getitem__(self, index: int) -> Sample:
        offset, lineno = self.offsets[index]
        with self.path.open("rb") as f:
            f.seek(offset)
            raw = f.readline()
        return Sample(texts=self._parse(raw, lineno, index), meta={"path": str(self.path), "line": lineno})
