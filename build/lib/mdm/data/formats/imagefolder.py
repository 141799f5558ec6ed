"""ImageNet-style class folders, ``root/<class_name>/<image>``: one labelled image a Sample."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from mdm.data.formats.common import IMAGE_EXTENSIONS, ImageDataset, PathLike, existing, load_image, size_hw
from mdm.data.sample import Sample


class ImageFolderDataset(ImageDataset):
    """``root/<class_name>/<image>``; class names sorted give the label ids 0..C-1.

    Sorting makes the ids reproducible across machines (``os.listdir`` order is
    not). ``class_names[label]`` maps back; files whose suffix is not an image
    extension are ignored (``.DS_Store``, ``README``), hidden folders too.
    """

    def __init__(self, root: PathLike, image_size: int | Sequence[int], *,
                 extensions: Sequence[str] = IMAGE_EXTENSIONS, strict: bool = False,
                 full_verify: bool = False) -> None:
        self.root = existing(root, "image folder root", is_dir=True)
        self.image_size = size_hw(image_size)
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
