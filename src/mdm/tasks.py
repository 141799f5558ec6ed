"""The MDM tasks one checkpoint learns (DESIGN.md §4): a task is which segments are clean.

=================  ==========================================  ==================
task               segments (clean -> generated)               paper
=================  ==========================================  ==================
class_to_image     CLS class -> image                          Table 1 (ImageNet)
text_to_image      caption -> image                            Table 1 (GenEval)
image_to_text      image -> caption                            Table 2 (COCO)
vqa                image, question -> answer                   Table 2 (VQAv2)
text_to_text       scene text, question -> answer              Fig. 3 (QA)
joint              -> image + caption                          Fig. 3, 4
=================  ==========================================  ==================

:class:`TokenizedData` holds a dataset as tensors (text ids per role, VQ codes or,
on the continuous path, pixel patches, labels) so that training batches are tensor slices; :func:`task_segments` lays a
batch out for a task. :class:`mdm.pipeline.MDMPipeline` runs the tasks on a trained model and
returns images and strings.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import Enum

import torch
from torch import Tensor

from mdm.config import ConfigError
from mdm.data.sample import Role
from mdm.data.patches import patch_grid, patchify
from mdm.data.text_tokenizer import TextTokenizer
from mdm.nn.vq import VQVAE
from mdm.diffusion.multimodal import Segment
from mdm.nn.layout import SegmentSpec


class Task(str, Enum):
    CLASS_TO_IMAGE = "class_to_image"
    TEXT_TO_IMAGE = "text_to_image"
    IMAGE_TO_TEXT = "image_to_text"
    VQA = "vqa"
    TEXT_TO_TEXT = "text_to_text"
    JOINT = "joint"


def check_task_weights(weights: dict[str, float], field: str = "train.task_weights") -> None:
    """A ConfigError naming ``field`` (the config key of ``weights``) if a key of the mixture is not a task."""
    for name in weights:
        if name not in {t.value for t in Task}:
            raise ConfigError(f"{field}: {name!r} is not one of {[t.value for t in Task]}")


# (part, generated?) per task; a part is "image" or a text role.
TASK_PARTS: dict[Task, tuple[tuple[str, bool], ...]] = {
    Task.CLASS_TO_IMAGE: (("image", True),),
    Task.TEXT_TO_IMAGE: ((Role.CAPTION.value, False), ("image", True)),
    Task.IMAGE_TO_TEXT: (("image", False), (Role.CAPTION.value, True)),
    Task.VQA: (("image", False), (Role.QUESTION.value, False), (Role.ANSWER.value, True)),
    Task.TEXT_TO_TEXT: ((Role.SCENE.value, False), (Role.QUESTION.value, False), (Role.ANSWER.value, True)),
    Task.JOINT: (("image", True), (Role.CAPTION.value, True)),
}


def supported_tasks(parts: Iterable[str]) -> list[Task]:
    """The tasks data with ``parts`` can train ("image", text roles, and "label" for class->image), in Task order.

    Why from parts: a dataset describes its content, never its tasks (:mod:`mdm.data.sample`), so a COCO source
    (image, caption) trains text->image, captioning and joint, VQAv2 (image, question, answer) VQA, and chat
    (scene, question, answer) text->text, by the one rule every run uses.
    """
    have = set(parts)
    return [task for task in Task if {p for p, _ in TASK_PARTS[task]} <= have
            and (task is not Task.CLASS_TO_IMAGE or "label" in have)]


def task_parts(task: Task, question_first: bool = False) -> tuple[tuple[str, bool], ...]:
    """The (part, generated?) of ``task`` in sequence order; ``question_first`` (``layout.question_first``)
    moves the question of VQA and text->text before the image or scene.

    Why offer it: a causal scan has to store the context before it knows what will be asked about it, and
    only reaches the answer through a block that reads forward after one that read the question into the
    context. With the question first, every forward block reads the context already knowing the question,
    and the answer, last in both orders, reads the result. Recurrent language models recall much better with
    the query before the document (Arora et al. 2024, "Just read twice", arXiv 2407.05483).
    """
    parts = TASK_PARTS[task]
    if question_first and task in (Task.VQA, Task.TEXT_TO_TEXT):
        context, question, answer = parts
        return question, context, answer
    return parts


@dataclass
class TokenizedData:
    """A dataset as tensors: ``codes`` (N, h, w) VQ ids (or (N, T, h, w) for clips of T frames) -- on the
    continuous path (``layout.image_tokens = pixels``) float pixel patches with a last axis of patch values,
    (N, h, w, f) or (N, T, h, w, f) -- ``texts[role]`` (N, L_role) ids, ``labels`` (N,)."""

    codes: Tensor | None = None
    texts: dict[str, Tensor] = field(default_factory=dict)
    labels: Tensor | None = None

    def __len__(self) -> int:
        for t in (self.codes, self.labels, *self.texts.values()):
            if t is not None:
                return t.shape[0]
        return 0

    def parts(self) -> set[str]:
        return ({"image"} if self.codes is not None else set()) | set(self.texts)

    def supports(self, task: Task) -> bool:
        return task in supported_tasks(self.parts() | ({"label"} if self.labels is not None else set()))

    def num_classes(self) -> int:
        """Class labels the data holds (the largest id + 1; 0 without labels)."""
        return 0 if self.labels is None else int(self.labels.max()) + 1

    def to(self, device: torch.device | str) -> "TokenizedData":
        return TokenizedData(None if self.codes is None else self.codes.to(device),
                             {k: v.to(device) for k, v in self.texts.items()},
                             None if self.labels is None else self.labels.to(device))

    def subset(self, index: Tensor) -> "TokenizedData":
        return TokenizedData(None if self.codes is None else self.codes[index],
                             {k: v[index] for k, v in self.texts.items()},
                             None if self.labels is None else self.labels[index])


def image_patches(images: Tensor, patch: int) -> Tensor:
    """Images (..., c, H, W) in [0, 1] -> the continuous path's tokens (..., H/p, W/p, c p p): :func:`patchify`'s
    raster order, one image (or frame) at a time."""
    lead, (c, height, width) = images.shape[:-3], images.shape[-3:]
    rows, cols = patch_grid((height, width), patch)
    tokens = patchify(images.reshape(-1, c, height, width), patch)
    return tokens.reshape(*lead, rows, cols, tokens.shape[-1])


def tokenize_samples(samples, tokenizer: TextTokenizer | None, vq: VQVAE | None, text_lens: dict[str, int],
                     batch_size: int = 256, pixel_patch: int | None = None) -> TokenizedData:
    """Encode a list of :class:`Sample` once: texts per role to fixed length, images (or every frame of a
    clip) to VQ codes -- or, given ``pixel_patch``, to raw pixel patches of that side (the continuous path)."""
    texts = {}
    for role, length in text_lens.items():
        rows = []
        for s in samples:
            text = s.text(role)
            if text is None:
                raise ValueError(f"tokenize_samples: a sample has no {role!r} text; roles present: "
                                 f"{sorted({t.role.value for t in s.texts})}")
            rows.append(tokenizer.encode_fixed(text, length)[0])
        texts[role] = torch.stack(rows)
    codes = None
    if pixel_patch is not None:
        stacked = [s.video if s.video is not None else s.image for s in samples]
        if stacked and stacked[0] is not None:
            codes = image_patches(torch.stack(stacked).float(), pixel_patch)
    elif vq is not None:
        chunks = []
        video = samples[0].video is not None
        with torch.no_grad():
            for i in range(0, len(samples), batch_size):
                part = samples[i:i + batch_size]
                if video:  # each frame on its own through the image VQ: (n, T, h, w)
                    clips = torch.stack([s.video for s in part])
                    chunks.append(vq.encode(clips.flatten(0, 1)).unflatten(0, clips.shape[:2]))
                else:
                    chunks.append(vq.encode(torch.stack([s.image for s in part])))
        codes = torch.cat(chunks)
    labels = None
    if samples and samples[0].label is not None:
        labels = torch.tensor([s.label for s in samples], dtype=torch.long)
    return TokenizedData(codes, texts, labels)


def task_segments(task: Task, batch: TokenizedData, generate: bool = False,
                  question_first: bool = False) -> list[Segment]:
    """The segments of ``task`` for ``batch`` in :func:`task_parts` order; ``generate=True`` drops the states of
    the generated parts."""
    segments = []
    for part, generated in task_parts(task, question_first):
        if part == "image":
            if batch.codes is None:
                raise ValueError(f"task {task.value} needs images (VQ codes or pixel patches)")
            continuous = batch.codes.is_floating_point()  # pixel patches carry a last axis of values
            grid = batch.codes.shape[1:-1] if continuous else batch.codes.shape[1:]
            spec = SegmentSpec.video(*grid) if len(grid) == 3 else SegmentSpec.image(*grid)  # clips: (T, h, w)
            states = batch.codes.flatten(1, len(grid))
        else:
            if part not in batch.texts:
                raise ValueError(f"task {task.value} needs {part!r} texts; the data has {sorted(batch.texts)}")
            states = batch.texts[part]
            spec = SegmentSpec.text(states.shape[1])
        segments.append(Segment(spec, None if (generate and generated) else states, target=generated))
    return segments
