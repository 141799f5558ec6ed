"""One sample format for every dataset MDM reads (DESIGN.md §6).

A :class:`Sample` holds whatever a dataset has: an image (or its VQ codes), a
video, text segments with roles, a class label, reference answers, and
free-form metadata (a ShapesWorld scene's objects, a clip's trajectories, the
file an item came from). Tasks (captioning, VQA, text->image, ...) are chosen
later by which of these parts are noised; datasets only describe content.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from torch import Tensor


class Role(str, Enum):
    """What a text segment is, so a task can pick the condition and the target."""

    CAPTION = "caption"
    QUESTION = "question"
    ANSWER = "answer"
    SCENE = "scene"  # a scene described in words (text-only questions)
    USER = "user"  # chat turns
    ASSISTANT = "assistant"
    TEXT = "text"  # plain text


@dataclass
class TextSegment:
    role: Role
    text: str

    def __post_init__(self) -> None:
        self.role = Role(self.role)
        if not isinstance(self.text, str):
            raise TypeError(f"TextSegment.text must be str, got {type(self.text).__name__}")


@dataclass
class Sample:
    """One item of any dataset. Images are float tensors (C, H, W) in [0, 1]; videos (T, C, H, W)."""

    image: Tensor | None = None
    image_tokens: Tensor | None = None  # (h, w) long VQ code ids
    video: Tensor | None = None
    texts: list[TextSegment] = field(default_factory=list)
    label: int | None = None  # class id (ImageNet-style, digits)
    answers: list[str] | None = None  # reference answers (VQAv2: ten human answers)
    meta: dict[str, Any] = field(default_factory=dict)

    def text(self, role: Role | str) -> str | None:
        """The first text segment with ``role``, or None."""
        role = Role(role)
        return next((t.text for t in self.texts if t.role is role), None)
