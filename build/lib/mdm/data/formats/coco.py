"""COCO captions: images with their reference captions (CIDEr's references, or text->image training pairs)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from mdm.data.formats.common import (ImageDataset, PathLike, existing, id_field, list_field, load_image, load_json,
                                     size_hw, text_field)
from mdm.data.sample import Role, Sample, TextSegment


class CocoCaptionsDataset(ImageDataset):
    """COCO captions: ``{"images": [{"id", "file_name"}], "annotations": [{"image_id", "caption"}]}``.

    By default one Sample per image with every caption as a CAPTION segment (in
    file order), so evaluation sees all references (CIDEr); every listed image is
    kept, also one with no caption. ``per_caption=True`` gives one Sample per
    caption instead (training on each caption equally often). A caption whose
    ``image_id`` is not among the images is an error: the files disagree.
    """

    def __init__(self, annotations_json: PathLike, images_dir: PathLike, image_size: int | Sequence[int], *,
                 per_caption: bool = False, strict: bool = False, full_verify: bool = False) -> None:
        path = existing(annotations_json, "COCO annotations file")
        self.images_dir = existing(images_dir, "COCO images folder", is_dir=True)
        self.image_size = size_hw(image_size)
        data = load_json(path)
        images = list_field(data, "images", path, "top-level object")
        annotations = list_field(data, "annotations", path, "top-level object")
        files: dict[int, Path] = {}
        for i, rec in enumerate(images):
            image_id = id_field(rec, "id", path, f"images record {i}")
            files[image_id] = self.images_dir / text_field(rec, "file_name", path, f"images record {i}")
        captions: dict[int, list[str]] = {image_id: [] for image_id in files}
        pairs: list[tuple[int, str]] = []
        for i, rec in enumerate(annotations):
            image_id = id_field(rec, "image_id", path, f"annotations record {i}")
            caption = text_field(rec, "caption", path, f"annotations record {i}").strip()
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

    def texts(self, index: int) -> list[TextSegment]:
        """The captions of item ``index``, without reading its image (a tokenizer's corpus needs only these)."""
        return [TextSegment(Role.CAPTION, c) for c in self.items[index][1]]

    def __getitem__(self, index: int) -> Sample:
        image_id = self.items[index][0]
        path = self.files[image_id]
        return Sample(image=load_image(path, self.image_size), texts=self.texts(index),
                      meta={"image_id": image_id, "path": str(path)})
