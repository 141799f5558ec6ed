"""VQAv2: questions over COCO images with their answers, one Sample a question."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from mdm.data.formats.common import (ImageDataset, PathLike, existing, field, id_field, list_field, load_image,
                                     load_json, size_hw, text_field)
from mdm.data.sample import Role, Sample, TextSegment


class VQAv2Dataset(ImageDataset):
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
        qpath = existing(questions_json, "VQAv2 questions file")
        apath = None if annotations_json is None else existing(annotations_json, "VQAv2 annotations file")
        self.images_dir = existing(images_dir, "VQAv2 images folder", is_dir=True)
        self.image_size = size_hw(image_size)
        qdata = load_json(qpath)
        questions = list_field(qdata, "questions", qpath, "top-level object")
        if image_name is None:
            subtype = qdata.get("data_subtype", "val2014")
            image_name = f"COCO_{subtype}_{{image_id:012d}}.jpg"
        self.image_name = image_name

        answers_by_qid: dict[int, dict[str, Any]] = {}
        if apath is not None:
            for i, rec in enumerate(list_field(load_json(apath), "annotations", apath, "top-level object")):
                where = f"annotations record {i}"
                qid = id_field(rec, "question_id", apath, where)
                human = field(rec, "answers", apath, where)
                if not isinstance(human, list) or not human:
                    raise ValueError(f"{apath}: {where} field 'answers' is not a non-empty list")
                answers_by_qid[qid] = {
                    "image_id": id_field(rec, "image_id", apath, where),
                    "answer": text_field(rec, "multiple_choice_answer", apath, where),
                    "answers": [text_field(a, "answer", apath, f"{where} answer {j}") for j, a in enumerate(human)],
                    "answer_type": rec.get("answer_type"),
                }

        records: list[dict[str, Any]] = []
        for i, rec in enumerate(questions):
            where = f"questions record {i}"
            entry = {
                "question_id": id_field(rec, "question_id", qpath, where),
                "image_id": id_field(rec, "image_id", qpath, where),
                "question": text_field(rec, "question", qpath, where),
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

    def texts(self, index: int) -> list[TextSegment]:
        """The question and answer of item ``index``, without reading its image."""
        r = self.items[index]
        return [TextSegment(Role.QUESTION, r["question"])] + (
            [TextSegment(Role.ANSWER, r["answer"])] if "answer" in r else [])

    def __getitem__(self, index: int) -> Sample:
        r = self.items[index]
        texts = self.texts(index)
        meta = {k: r[k] for k in ("question_id", "image_id", "answer_type") if k in r}
        meta["path"] = str(self.files[r["image_id"]])
        return Sample(
            image=load_image(self.files[r["image_id"]], self.image_size),
            texts=texts,
            answers=list(r["answers"]) if "answers" in r else None,
            meta=meta,
        )
