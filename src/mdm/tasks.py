"""Every MDM task from one checkpoint (DESIGN.md §4): a task is which segments are clean.

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
batch out for a task. :class:`MDMPipeline` runs the tasks on a trained model and
returns images and strings.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path

import torch
from torch import Tensor

from mdm.checkpoint import checkpoint_folder, load_checkpoint, save_checkpoint
from mdm.config import ConfigError
from mdm.data.sample import Role
from mdm.data.patches import patch_grid, patchify, unpatchify
from mdm.data.text_tokenizer import TextTokenizer
from mdm.data.vq import VQVAE
from mdm.diffusion.multimodal import MultimodalDiffusion, Segment
from mdm.diffusion.sampling import SamplerConfig, sample
from mdm.nn.layout import SegmentSpec
from mdm.nn.network import MDMNetwork


class Task(str, Enum):
    CLASS_TO_IMAGE = "class_to_image"
    TEXT_TO_IMAGE = "text_to_image"
    IMAGE_TO_TEXT = "image_to_text"
    VQA = "vqa"
    TEXT_TO_TEXT = "text_to_text"
    JOINT = "joint"


def check_task_weights(weights: dict[str, float]) -> None:
    """A ConfigError naming ``train.task_weights`` if a key of the mixture is not a task."""
    for name in weights:
        if name not in {t.value for t in Task}:
            raise ConfigError(f"train.task_weights: {name!r} is not one of {[t.value for t in Task]}")


# (part, generated?) per task; a part is "image" or a text role.
TASK_PARTS: dict[Task, tuple[tuple[str, bool], ...]] = {
    Task.CLASS_TO_IMAGE: (("image", True),),
    Task.TEXT_TO_IMAGE: ((Role.CAPTION.value, False), ("image", True)),
    Task.IMAGE_TO_TEXT: (("image", False), (Role.CAPTION.value, True)),
    Task.VQA: (("image", False), (Role.QUESTION.value, False), (Role.ANSWER.value, True)),
    Task.TEXT_TO_TEXT: ((Role.SCENE.value, False), (Role.QUESTION.value, False), (Role.ANSWER.value, True)),
    Task.JOINT: (("image", True), (Role.CAPTION.value, True)),
}


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
        needed = {p for p, _ in TASK_PARTS[task]}
        return needed <= self.parts() and (task is not Task.CLASS_TO_IMAGE or self.labels is not None)

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


class MDMPipeline:
    """A trained MDM with its tokenizers: the tasks of the module table as one Python API.

    A video model (``layout.frames > 1``) generates clips where an image model
    generates images: its image tasks take and return (b, T, c, s, s) clips, and
    ``class_to_video`` / ``text_to_video`` name that and refuse an image model.
    A model on the continuous path (``layout.image_tokens = pixels``) has no VQ-VAE:
    its images go in and come out as raw pixel patches.
    """

    def __init__(self, network: MDMNetwork, diffusion: MultimodalDiffusion, tokenizer: TextTokenizer | None,
                 vq: VQVAE | None, text_lens: dict[str, int]) -> None:
        if network.config.layout.patch_size != 1:
            raise NotImplementedError(f"layout.patch_size = {network.config.layout.patch_size}: grouping VQ codes "
                                      f"into multi-code tokens (App. C's 2x2) is not implemented yet; use 1")
        self.network, self.diffusion, self.tokenizer, self.vq = network, diffusion, tokenizer, vq
        self.text_lens = dict(text_lens)
        self.device = next(network.parameters()).device
        self.progress = False  # a progress bar over the solver steps of every call (mdm eval turns it on)

    # -- files ---------------------------------------------------------------
    @classmethod
    def from_pretrained(cls, folder: str | Path, use_ema: bool = True,
                        device: str | torch.device = "cpu") -> "MDMPipeline":
        """Load a checkpoint folder, or a run folder's latest checkpoint (EMA weights by default, Sec 5.1)."""
        ckpt = load_checkpoint(checkpoint_folder(folder))
        if use_ema and ckpt.ema_state is not None:
            ckpt.network.load_state_dict(ckpt.ema_state)
        network = ckpt.network.to(device).eval()
        vq = ckpt.vq.to(device) if ckpt.vq is not None else None
        return cls(network, MultimodalDiffusion(ckpt.config.diffusion, ckpt.config.vae), ckpt.tokenizer, vq,
                   ckpt.text_lens)

    def save_pretrained(self, folder: str | Path) -> Path:
        """Write the network (as the sampling weights), its config and tokenizers as a checkpoint folder."""
        return save_checkpoint(folder, config=self.network.config, network=self.network, tokenizer=self.tokenizer,
                               vq=self.vq, text_lens=self.text_lens)

    # -- encoding / decoding -------------------------------------------------
    def encode_text(self, texts: list[str], role: str) -> Tensor:
        if self.tokenizer is None:
            raise ValueError("this model has no text tokenizer")
        if isinstance(texts, str):
            texts = [texts]
        if not texts or any(not isinstance(t, str) or not t.strip() for t in texts):
            raise ValueError(f"{role}: prompts must be a non-empty list of non-empty strings")
        length = self.text_lens[role]
        return torch.stack([self.tokenizer.encode_fixed(t, length)[0] for t in texts]).to(self.device)

    def decode_text(self, ids: Tensor) -> list[str]:
        return [self.tokenizer.decode(row.tolist()) for row in ids.cpu()]

    @property
    def frames(self) -> int:
        """Frames per clip of the model's image segment: 1 for an image model, T for a video model (DiM)."""
        return self.network.config.layout.frames

    @property
    def is_video(self) -> bool:
        return self.frames > 1

    @property
    def continuous_images(self) -> bool:
        return self.network.config.layout.continuous_images

    def encode_images(self, images: Tensor) -> Tensor:
        """Images (b, c, s, s) -- or clips (b, T, c, s, s) for a video model -- in [0, 1] -> (b, n) VQ ids, or
        (b, n, f) pixel patches on the continuous path."""
        layout = self.network.config.layout
        if self.vq is None and not self.continuous_images:
            raise ValueError("this model has no image tokenizer")
        c, size = layout.image_channels, layout.image_size
        shape = (c, size, size) if not self.is_video else (self.frames, c, size, size)
        if images.dim() != 1 + len(shape) or images.shape[1:] != shape:
            what = "images" if not self.is_video else "clips"
            raise ValueError(f"{what} must be (batch, {', '.join(map(str, shape))}) in [0, 1] for this model, got "
                             f"{tuple(images.shape)}")
        if self.continuous_images:
            patches = image_patches(images.to(self.device).float().clamp(0, 1), layout.vq_factor)
            return patches.reshape(images.shape[0], -1, patches.shape[-1])
        with torch.no_grad():
            codes = self.vq.encode(images.to(self.device).float().clamp(0, 1).reshape(-1, c, size, size))
        return codes.reshape(images.shape[0], -1)

    def decode_images(self, codes: Tensor) -> Tensor:
        """(b, n) VQ ids (or (b, n, f) pixel patches) -> images (b, c, s, s), or clips (b, T, c, s, s) for a video
        model, in [0, 1]."""
        layout = self.network.config.layout
        side = layout.image_size // layout.vq_factor
        if self.continuous_images:
            f = layout.patch_features
            if codes.dim() != 3 or codes.shape[1:] != (self.frames * side * side, f):
                raise ValueError(f"decode_images: patches must be (batch, {self.frames * side * side}, {f}) for this "
                                 f"model, got {tuple(codes.shape)}")
            pixels = unpatchify(codes.reshape(-1, side * side, f).float(), layout.vq_factor, layout.image_size,
                                layout.image_channels).clamp(0, 1).cpu()
            return pixels.unflatten(0, (codes.shape[0], self.frames)) if self.is_video else pixels
        if codes.dim() != 2 or codes.shape[1] != self.frames * side * side:
            raise ValueError(f"decode_images: codes must be (batch, {self.frames * side * side}) VQ ids for this "
                             f"model, got {tuple(codes.shape)}")
        with torch.no_grad():
            pixels = self.vq.decode(codes.reshape(-1, side, side)).clamp(0, 1).cpu()
        return pixels.unflatten(0, (codes.shape[0], self.frames)) if self.is_video else pixels

    def _grid(self) -> SegmentSpec:
        side = self.network.config.layout.image_size // self.network.config.layout.vq_factor
        return SegmentSpec.video(self.frames, side, side) if self.is_video else SegmentSpec.image(side, side)

    def _require_video(self, task: str) -> None:
        if not self.is_video:
            raise ValueError(f"{task} needs a video model (layout.frames > 1, e.g. the moving-digits config); this "
                             f"checkpoint is an image model (layout.frames = 1)")

    def _run(self, segments: list[Segment], class_labels: Tensor | None, sampler: SamplerConfig | None,
             batch_size: int | None, seed: int) -> list[Tensor]:
        self.network.eval()
        generator = torch.Generator(self.device).manual_seed(seed)
        return sample(self.network, self.diffusion, segments, class_labels, sampler, batch_size, generator,
                      progress=self.progress)

    # -- tasks ---------------------------------------------------------------
    def class_to_image(self, labels: list[int], sampler: SamplerConfig | None = None, seed: int = 0) -> Tensor:
        n = self.network.config.backbone.n_classes
        if not labels or any(not 0 <= int(c) < n for c in labels):
            raise ValueError(f"class labels must be a non-empty list of ints in [0, {n})")
        segs = [Segment(self._grid(), None, True)]
        out = self._run(segs, torch.tensor(labels, device=self.device), sampler, len(labels), seed)
        return self.decode_images(out[0])

    def class_to_video(self, labels: list[int], sampler: SamplerConfig | None = None, seed: int = 0) -> Tensor:
        """Clips (b, T, c, s, s) of the requested classes from a video model (DiM, DESIGN.md §5)."""
        self._require_video("class_to_video")
        return self.class_to_image(labels, sampler, seed)

    def text_to_video(self, prompts: list[str], sampler: SamplerConfig | None = None, seed: int = 0) -> Tensor:
        """Clips (b, T, c, s, s) for captions from a video model (DiM, DESIGN.md §5)."""
        self._require_video("text_to_video")
        return self.text_to_image(prompts, sampler, seed)

    def text_to_image(self, prompts: list[str], sampler: SamplerConfig | None = None, seed: int = 0) -> Tensor:
        cap = self.encode_text(prompts, Role.CAPTION.value)
        segs = [Segment(SegmentSpec.text(cap.shape[1]), cap, False), Segment(self._grid(), None, True)]
        return self.decode_images(self._run(segs, None, sampler, None, seed)[1])

    def image_to_text(self, images: Tensor, sampler: SamplerConfig | None = None, seed: int = 0) -> list[str]:
        codes = self.encode_images(images)
        segs = [Segment(self._grid(), codes, False),
                Segment(SegmentSpec.text(self.text_lens[Role.CAPTION.value]), None, True)]
        return self.decode_text(self._run(segs, None, sampler, None, seed)[1])

    def vqa(self, images: Tensor, questions: list[str], sampler: SamplerConfig | None = None,
            seed: int = 0) -> list[str]:
        codes, q = self.encode_images(images), self.encode_text(questions, Role.QUESTION.value)
        if codes.shape[0] != q.shape[0]:
            raise ValueError(f"vqa: {codes.shape[0]} images but {q.shape[0]} questions")
        return self._answer(Task.VQA, Segment(self._grid(), codes, False), q, sampler, seed)

    def text_to_text(self, scenes: list[str], questions: list[str], sampler: SamplerConfig | None = None,
                     seed: int = 0) -> list[str]:
        s, q = self.encode_text(scenes, Role.SCENE.value), self.encode_text(questions, Role.QUESTION.value)
        if s.shape[0] != q.shape[0]:
            raise ValueError(f"text_to_text: {s.shape[0]} scenes but {q.shape[0]} questions")
        return self._answer(Task.TEXT_TO_TEXT, Segment(SegmentSpec.text(s.shape[1]), s, False), q, sampler, seed)

    def _answer(self, task: Task, context: Segment, questions: Tensor, sampler: SamplerConfig | None,
                seed: int) -> list[str]:
        """Answers to ``questions`` (ids) about ``context`` (an image or a scene), the segments in the order
        the checkpoint trained ``task`` with (:func:`task_parts`)."""
        by_part = {Role.QUESTION.value: Segment(SegmentSpec.text(questions.shape[1]), questions, False),
                   Role.ANSWER.value: Segment(SegmentSpec.text(self.text_lens[Role.ANSWER.value]), None, True)}
        parts = [part for part, _ in task_parts(task, self.network.config.layout.question_first)]
        segs = [by_part.get(part, context) for part in parts]
        return self.decode_text(self._run(segs, None, sampler, None, seed)[parts.index(Role.ANSWER.value)])

    def joint(self, n: int, sampler: SamplerConfig | None = None, seed: int = 0) -> tuple[Tensor, list[str]]:
        if n < 1:
            raise ValueError(f"joint: n must be >= 1, got {n}")
        segs = [Segment(self._grid(), None, True),
                Segment(SegmentSpec.text(self.text_lens[Role.CAPTION.value]), None, True)]
        out = self._run(segs, None, sampler, n, seed)
        return self.decode_images(out[0]), self.decode_text(out[1])
