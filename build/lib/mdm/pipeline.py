"""One trained MDM with its tokenizers, every task of :mod:`mdm.tasks` as one Python call.

``MDMPipeline.from_pretrained(folder)`` loads a checkpoint (EMA weights by default,
Sec 5.1 of arXiv 2510.13253); each task method lays its segments out as training did
(:func:`mdm.tasks.task_parts`), samples the generated ones and decodes them to images
(or clips) and strings.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch
from torch import Tensor

from mdm.checkpoint import checkpoint_folder, load_checkpoint, save_checkpoint
from mdm.config import MDMConfig
from mdm.data.patches import unpatchify
from mdm.data.sample import Role
from mdm.data.text_tokenizer import TextTokenizer
from mdm.nn.vq import VQVAE
from mdm.diffusion.multimodal import MultimodalDiffusion, Segment
from mdm.diffusion.sampling import SamplerConfig, sample
from mdm.nn.layout import SegmentSpec
from mdm.nn.network import MDMNetwork
from mdm.tasks import Task, image_patches, task_parts


class MDMPipeline:
    """A trained MDM with its tokenizers: the tasks of :mod:`mdm.tasks` as one Python API.

    A video model (``layout.frames > 1``) generates clips where an image model
    generates images: its image tasks take and return (b, T, c, s, s) clips, and
    ``class_to_video`` / ``text_to_video`` name that and refuse an image model.
    A model on the continuous path (``layout.image_tokens = pixels``) has no VQ-VAE:
    its images go in and come out as raw pixel patches.
    """

    def __init__(self, network: MDMNetwork, diffusion: MultimodalDiffusion, tokenizer: TextTokenizer | None,
                 vq: VQVAE | None, text_lens: dict[str, int], config: MDMConfig,
                 trained_tasks: list[str] | None = None) -> None:
        if config.layout.patch_size != 1:
            raise NotImplementedError(f"layout.patch_size = {config.layout.patch_size}: grouping VQ codes "
                                      f"into multi-code tokens (App. C's 2x2) is not implemented yet; use 1")
        self.network, self.diffusion, self.tokenizer, self.vq = network, diffusion, tokenizer, vq
        self.config = config  # the model's whole config: its layout, and the data it was trained on
        self.text_lens = dict(text_lens)
        self.device = next(network.parameters()).device
        self.progress = False  # a progress bar over the solver steps of every call (mdm eval turns it on)
        self.on_step: Callable[[int, int], None] | None = None  # called (done, total) after every solver step
        self.trained_tasks = None if trained_tasks is None else list(trained_tasks)  # None: not recorded

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
                   ckpt.text_lens, ckpt.config, ckpt.trained_tasks)

    def save_pretrained(self, folder: str | Path) -> Path:
        """Write the network (as the sampling weights), its config and tokenizers as a checkpoint folder."""
        return save_checkpoint(folder, config=self.config, network=self.network, tokenizer=self.tokenizer,
                               vq=self.vq, text_lens=self.text_lens, trained_tasks=self.trained_tasks)

    def require_trained(self, task: Task) -> None:
        """Refuse ``task`` when the checkpoint records the tasks it trained and ``task`` is not among them: the
        network still returns something for it, an image no training asked for, with nothing to say so."""
        if self.trained_tasks is not None and task.value not in self.trained_tasks:
            raise ValueError(f"this checkpoint never trained {task.value} (it trained "
                             f"{', '.join(self.trained_tasks) or 'nothing'}); ask for one of those")

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
        return self.config.layout.frames

    @property
    def is_video(self) -> bool:
        return self.frames > 1

    @property
    def continuous_images(self) -> bool:
        return self.config.layout.continuous_images

    def encode_images(self, images: Tensor) -> Tensor:
        """Images (b, c, s, s) -- or clips (b, T, c, s, s) for a video model -- in [0, 1] -> (b, n) VQ ids, or
        (b, n, f) pixel patches on the continuous path."""
        layout = self.config.layout
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
        layout = self.config.layout
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
        side = self.config.layout.image_size // self.config.layout.vq_factor
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
                      progress=self.progress, on_step=self.on_step)

    # -- tasks ---------------------------------------------------------------
    def class_to_image(self, labels: list[int], sampler: SamplerConfig | None = None, seed: int = 0) -> Tensor:
        n = self.config.backbone.n_classes
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
        parts = [part for part, _ in task_parts(task, self.config.layout.question_first)]
        segs = [by_part.get(part, context) for part in parts]
        return self.decode_text(self._run(segs, None, sampler, None, seed)[parts.index(Role.ANSWER.value)])

    def joint(self, n: int, sampler: SamplerConfig | None = None, seed: int = 0) -> tuple[Tensor, list[str]]:
        if n < 1:
            raise ValueError(f"joint: n must be >= 1, got {n}")
        segs = [Segment(self._grid(), None, True),
                Segment(SegmentSpec.text(self.text_lens[Role.CAPTION.value]), None, True)]
        out = self._run(segs, None, sampler, n, seed)
        return self.decode_images(out[0]), self.decode_text(out[1])
