"""Loaders for real data formats on local disk, each a Dataset of :class:`Sample` (DESIGN.md §6).

* :class:`ImageFolderDataset` — ImageNet-style ``root/<class_name>/*.jpg|png``;
* :class:`CocoCaptionsDataset` — COCO captions JSON;
* :class:`CaptionFolderDataset` — Hugging Face's ImageFolder with captions (``metadata.jsonl`` / ``.csv``);
* :class:`VQAv2Dataset` — VQAv2 questions + annotations JSON over COCO images;
* :class:`ChatJsonlDataset` — UltraChat-style JSON lines.

Bad input fails loudly: a missing file or folder is a ``FileNotFoundError``
naming it; malformed JSON a ``ValueError`` naming the file, line and column; a
record without a field a ``ValueError`` naming the file, the record index and
the field.

Images are verified eagerly, bad ones skipped and counted (:mod:`mdm.data.formats.common`
says how). One format a file; this package names them all.
"""

from mdm.data.formats.captionfolder import CaptionFolderDataset
from mdm.data.formats.chat import ChatJsonlDataset, text_to_text_sample
from mdm.data.formats.coco import CocoCaptionsDataset
from mdm.data.formats.common import IMAGE_EXTENSIONS, load_image
from mdm.data.formats.imagefolder import ImageFolderDataset
from mdm.data.formats.vqav2 import VQAv2Dataset

__all__ = ["IMAGE_EXTENSIONS", "CaptionFolderDataset", "ChatJsonlDataset", "CocoCaptionsDataset", "ImageFolderDataset", "VQAv2Dataset",
           "load_image", "text_to_text_sample"]
