"""The config's sections: one dataclass each, checked as it is built.

Every check here reads only the config's own values and the names of
:mod:`mdm.config.choices`; a check that needs a module's knowledge (is this a
noise schedule? a task?) lives in that module and runs where it is built.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields, is_dataclass
from enum import Enum
from typing import Any

from mdm.config.choices import ABSORBING_LOSSES, MASKING_PROCESSES, PROCESS_NAMES, Discretization, parse_pattern_set
from mdm.config.data import DataConfig
from mdm.config.errors import ConfigError
from mdm.config.train import TrainConfig


def _enum(cls: type[Enum], value: Any, where: str) -> Any:
    try:
        return cls(value.value if isinstance(value, Enum) else value)
    except ValueError:
        raise ConfigError(f"{where}: {value!r} is not one of {[m.value for m in cls]}") from None


class BackboneKind(str, Enum):
    MAMBA2 = "mamba2"  # Mamba-2 blocks with scan switches (the paper)
    BIMAMBA2 = "bimamba2"  # DiM's bidirectional Mamba-2 blocks, scan switches too (DESIGN.md §5)
    TRANSFORMER = "transformer"  # the attention baseline (DESIGN.md §1.7)

    @property
    def scans(self) -> bool:
        """Whether the blocks read the sequence in an order (state-space scans), so scan switches apply."""
        return self is not BackboneKind.TRANSFORMER


class ImageTokens(str, Enum):
    """How an image enters the model (DESIGN.md §1.1, §2.3)."""

    VQ = "vq"  # VQ code ids: discrete states, score entropy (the paper's path)
    PIXELS = "pixels"  # raw pixel patches: continuous, epsilon-prediction MSE


@dataclass
class BackboneConfig:
    """The denoising stack: M blocks over the MDM sequence (Sec 4.2.1; App. C)."""

    kind: BackboneKind = BackboneKind.MAMBA2
    d_model: int = 256
    n_layers: int = 8
    # Mamba-2 mixer (Eq. 10-13)
    d_state: int = 64
    d_conv: int = 4
    expand: int = 2
    head_dim: int = 64  # also the attention head width of the Transformer baseline
    n_groups: int = 1
    chunk_size: int = 64  # the longest SSD chunk (best on CPU; shorter tails run as balanced chunks); CUDA uses >= 64
    discretization: Discretization = Discretization.ZOH
    segment_len: int = 2048  # positions a Mamba block processes at a time (exact; bounds temporaries)
    # the causal conv + SiLU and the SSD scan by C++ kernels on CPU (float32/64, eager; built on first use, PyTorch
    # with a warning when they cannot be); false: PyTorch everywhere. Same results up to rounding.
    cpu_kernels: bool = True
    # initial range of each scan head's step dt (log-uniform) and decay rate A (uniform): the public Mamba-2's
    # [0.001, 0.1] and [1, 16] forget a token within ~30 positions in most heads (decay exp(-dt A) a position)
    dt_init: list = field(default_factory=lambda: [0.001, 0.1])
    a_init: list = field(default_factory=lambda: [1.0, 16.0])
    scan_patterns: str = "1234/12"  # scan switches (DESIGN.md §1.6)
    row_pad: int = 0  # DiM's learned pads after each image row/column; 0 = off until measured
    long_skips: bool = False  # U-ViT skips between the two halves (mirrors the scan cycle)
    # Transformer baseline
    mlp_ratio: float = 4.0
    # sequence
    n_classes: int = 0  # class labels for the CLS token (plus one null class)
    class_modulation: bool = False  # the class also enters every position's adaLN (DiT's t + y); see Backbone
    text_modulation: bool = False  # the pooled clean text (the caption given) also enters it; see Backbone
    # how text_modulation pools the clean text: "mean" (every position alike) or "attention" (one learned query per
    # head_dim channels, zero at init so it starts as the mean; it can single out the words that carry the condition)
    text_pooling: str = "mean"
    max_seq_len: int = 4096
    pos_embed: bool = True
    grid_pos_embed: bool = False  # image/video tokens also embed their (frame, row, col); see grid_position_embedding

    def __post_init__(self) -> None:
        self.kind = _enum(BackboneKind, self.kind, "backbone.kind")
        self.discretization = _enum(Discretization, self.discretization, "backbone.discretization")
        for name in ("d_model", "n_layers", "d_state", "d_conv", "expand", "head_dim", "n_groups",
                     "chunk_size", "segment_len", "max_seq_len"):
            if getattr(self, name) < 1:
                raise ConfigError(f"backbone.{name} must be >= 1, got {getattr(self, name)}")
        for name, low in (("dt_init", 0.0), ("a_init", 0.0)):
            value = getattr(self, name)
            if (not isinstance(value, (list, tuple)) or len(value) != 2
                    or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)
                    or not low < float(value[0]) <= float(value[1])):
                raise ConfigError(f"backbone.{name} must be a range [low, high] with 0 < low <= high, got {value!r}")
            setattr(self, name, [float(v) for v in value])
        if self.row_pad < 0 or self.n_classes < 0:
            raise ConfigError("backbone.row_pad and backbone.n_classes must be >= 0")
        if self.class_modulation and self.n_classes == 0:
            raise ConfigError("backbone.class_modulation needs class labels: set backbone.n_classes (it is 0)")
        if self.text_pooling not in ("mean", "attention"):
            raise ConfigError(f"backbone.text_pooling must be mean or attention, got {self.text_pooling!r}")
        if self.text_pooling == "attention" and not self.text_modulation:
            raise ConfigError("backbone.text_pooling=attention pools the text for backbone.text_modulation, "
                              "which is off: set backbone.text_modulation=true")
        if self.text_pooling == "attention" and self.d_model % self.head_dim:
            raise ConfigError(f"backbone.text_pooling=attention splits d_model into heads of head_dim channels: "
                              f"d_model {self.d_model} is not a multiple of head_dim {self.head_dim}")
        try:
            parse_pattern_set(self.scan_patterns)
        except ValueError as e:
            raise ConfigError(f"backbone.scan_patterns: {e}") from None
        if (self.expand * self.d_model) % self.head_dim or ((self.expand * self.d_model) // self.head_dim) % self.n_groups:
            raise ConfigError(f"backbone: expand * d_model = {self.expand * self.d_model} must split into heads of "
                              f"head_dim {self.head_dim}, a multiple of n_groups {self.n_groups}")
        if self.kind is BackboneKind.TRANSFORMER and self.d_model % self.head_dim:
            raise ConfigError(f"backbone: d_model {self.d_model} must be a multiple of head_dim {self.head_dim} "
                              f"for attention")


@dataclass
class LayoutConfig:
    """How data becomes tokens (Sec 4.1; App. C): image grid and text length per segment."""

    image_size: int = 32  # pixels per side
    image_channels: int = 3
    vq_factor: int = 4  # pixels per image-token side: a VQ code's, or a raw patch's with image_tokens=pixels
    patch_size: int = 1  # codes per token side (App. C: 2 x 2)
    text_len: int = 32  # tokens per text segment (App. C: 512)
    frames: int = 1  # frames per clip: > 1 makes the image segment a video (DiM, DESIGN.md §5)
    image_tokens: ImageTokens = ImageTokens.VQ  # vq (states + score entropy) | pixels (patches + MSE)
    # VQA and text->text read the question before the image or scene (mdm.tasks.task_parts says why)
    question_first: bool = False

    def __post_init__(self) -> None:
        self.image_tokens = _enum(ImageTokens, self.image_tokens, "layout.image_tokens")
        if self.image_tokens is ImageTokens.PIXELS and self.patch_size != 1:
            raise ConfigError(f"layout.image_tokens = pixels cuts the image into vq_factor x vq_factor pixel "
                              f"patches; layout.patch_size must be 1, got {self.patch_size}")
        for name in ("image_size", "image_channels", "vq_factor", "patch_size", "text_len", "frames"):
            if getattr(self, name) < 1:
                raise ConfigError(f"layout.{name} must be >= 1, got {getattr(self, name)}")
        if self.image_size % (self.vq_factor * self.patch_size):
            raise ConfigError(f"layout.image_size {self.image_size} must be a multiple of vq_factor * patch_size "
                              f"= {self.vq_factor * self.patch_size}")

    @property
    def continuous_images(self) -> bool:
        """Whether images are raw pixel patches (a continuous modality) rather than VQ code ids."""
        return self.image_tokens is ImageTokens.PIXELS

    @property
    def patch_features(self) -> int:
        """Values in one raw pixel patch (``channels * vq_factor**2``), the width of a continuous image token."""
        return self.image_channels * self.vq_factor ** 2

    @property
    def image_grid(self) -> tuple[int, int]:
        side = self.image_size // (self.vq_factor * self.patch_size)
        return side, side


@dataclass
class VAEConfig:
    """The unified VAE (Sec 4.1, Eq. 15-17; DESIGN.md §1.2)."""

    d_latent: int = 16
    d_hidden: int = 128
    beta: float = 1e-3  # KL weight (Eq. 17, 18)
    detach_latents: bool = True  # the diffusion loss does not flow into the VAE (REPA-E); False to measure

    def __post_init__(self) -> None:
        if self.d_latent < 1 or self.d_hidden < 1 or self.beta < 0:
            raise ConfigError("vae: d_latent and d_hidden must be >= 1 and beta >= 0")


@dataclass
class DiffusionConfig:
    """Noise schedules, objective and training mixture of noise levels (DESIGN.md §1.4, §2, §3)."""

    num_train_timesteps: int = 1000
    text_schedule: str = "squaredcos_cap_v2"
    image_schedule: str = "linear"
    text_snr_shift: float = 1.0  # divide every level's SNR by this (schedule.NoiseSchedule says why)
    analytic_offset: bool = False  # add the Gaussian log-likelihood to the learned logits (measured: off)
    se_weight: float = 1.0  # lambda of Eq. 18
    per_position_t_prob: float = 0.5  # share of noised segments trained with an independent t per position
    clean_frames_prob: float = 0.0  # share of noised VQ-coded clips trained with whole frames clean (clean_frames)
    clean_frames: str = "random"  # which frames: "random" (any subset) or "prefix" (the first k, as frame passes)
    balance_first_frame: bool = False  # prefix: weight frame 0 by 1/(1-clean_frames_prob) where noised (base.py)
    cond_dropout: float = 0.1  # classifier-free guidance: drop the class / condition segments
    # the process of each modality's states (mdm.diffusion.registry): "gaussian" (Gaussian latents with score
    # entropy over clean candidates, the paper's literal reading) or "absorbing" (SEDD's absorbing graph)
    text_process: str = "gaussian"
    image_process: str = "gaussian"
    # how the absorbing process averages its loss: "elbo" (the weighted CE over all positions, SEDD's / MDLM's
    # bound per position) or "masked_mean" (the plain CE averaged over the masked positions)
    absorbing_loss: str = "elbo"
    # For the Gaussian latents only (DESIGN.md §2.5; mdm.diffusion.gaussian_latent says how):
    self_conditioning: bool = False  # the previous step's x0_hat is an input (Analog Bits, arXiv 2208.04202)
    self_conditioning_prob: float = 0.5  # share of training samples whose x0_hat comes from a no-gradient pass
    time_warping: bool = False  # levels drawn, and sampler steps placed, where the loss changes (CDCD)

    def masked_modalities(self) -> tuple[str, ...]:
        """The modalities ("text", "image") whose process has a MASK state: the network learns its latent."""
        return tuple(m for m, p in (("text", self.text_process), ("image", self.image_process))
                     if p in MASKING_PROCESSES)

    def warped_modalities(self) -> tuple[str, ...]:
        """The modalities whose training levels and sampler steps follow a fitted time warp."""
        return self.gaussian_modalities() if self.time_warping else ()

    def gaussian_modalities(self) -> tuple[str, ...]:
        """The modalities ("text", "image") diffused as Gaussian latents: those self-conditioning and warping serve."""
        return tuple(m for m, p in (("text", self.text_process), ("image", self.image_process)) if p == "gaussian")

    def __post_init__(self) -> None:
        # the schedule names are checked by mdm.diffusion.schedule.check_schedules, where the diffusion is built
        for name in ("text_process", "image_process"):
            if getattr(self, name) not in PROCESS_NAMES:
                raise ConfigError(f"diffusion.{name} must be one of {', '.join(PROCESS_NAMES)}, "
                                  f"got {getattr(self, name)!r}")

        if self.absorbing_loss not in ABSORBING_LOSSES:
            raise ConfigError(f"diffusion.absorbing_loss must be elbo or masked_mean, got {self.absorbing_loss!r}")
        if self.clean_frames not in ("random", "prefix"):
            raise ConfigError(f"diffusion.clean_frames must be random or prefix, got {self.clean_frames!r}")
        if self.balance_first_frame and self.clean_frames != "prefix":
            raise ConfigError("diffusion.balance_first_frame weights the frame that prefix clean frames never "
                              f"noise: it needs diffusion.clean_frames=prefix, got {self.clean_frames!r}")
        for name in ("self_conditioning", "time_warping"):
            if getattr(self, name) and not self.gaussian_modalities():
                raise ConfigError(f"diffusion.{name} serves the gaussian process only (Gaussian latents); "
                                  f"text_process and image_process are {self.text_process} and {self.image_process}")
        for name in ("per_position_t_prob", "clean_frames_prob", "cond_dropout", "self_conditioning_prob"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ConfigError(f"diffusion.{name} must be in [0, 1], got {getattr(self, name)}")
        if self.num_train_timesteps < 2:
            raise ConfigError("diffusion.num_train_timesteps must be >= 2")
        if not self.text_snr_shift > 0:
            raise ConfigError(f"diffusion.text_snr_shift must be > 0, got {self.text_snr_shift}")


@dataclass
class MDMConfig:
    """Everything that defines a model. Sections grow with the library (training, data)."""

    name: str = "custom"
    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    layout: LayoutConfig = field(default_factory=LayoutConfig)
    vae: VAEConfig = field(default_factory=VAEConfig)
    diffusion: DiffusionConfig = field(default_factory=DiffusionConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    data: DataConfig = field(default_factory=DataConfig)

    def __post_init__(self) -> None:
        check_finite(self)
        if self.data.name == "mixture" and self.layout.frames != 1:
            raise ConfigError(f"data.name mixture reads image and text sources, not clips: layout.frames must be 1, "
                              f"got {self.layout.frames}")
        if self.layout.image_tokens is ImageTokens.PIXELS and self.diffusion.image_process != "gaussian":
            raise ConfigError(f"diffusion.image_process = {self.diffusion.image_process} needs image states: "
                              f"layout.image_tokens = pixels feeds raw patches, which only the Gaussian noise MSE "
                              f"diffuses (set layout.image_tokens=vq or diffusion.image_process=gaussian)")
        if self.train.curriculum_self_conditioning_prob is not None and not self.diffusion.self_conditioning:
            raise ConfigError("train.curriculum_self_conditioning_prob needs diffusion.self_conditioning = true: "
                              "without it no step feeds the previous estimate")
        clean_keys = [k for k, p in (("diffusion.clean_frames_prob", self.diffusion.clean_frames_prob),
                                     ("train.curriculum_clean_frames_prob", self.train.curriculum_clean_frames_prob))
                      if p]
        if self.layout.image_tokens is ImageTokens.PIXELS and clean_keys:
            raise ConfigError(f"{' and '.join(clean_keys)} needs VQ-coded clips (layout.image_tokens = vq): "
                              "pixel-patch clips train with one noise level for the whole clip, and the frame "
                              "passes that use clean frames need VQ codes")


def check_finite(config: MDMConfig) -> None:
    """Refuse a NaN or infinite number anywhere in ``config``: a range check such as ``lr > 0`` is false for NaN
    only when written to be, and a NaN learning rate otherwise fails in torch after stage 0 has run."""
    for section in fields(config):
        value = getattr(config, section.name)
        if not is_dataclass(value):
            continue
        for f in fields(value):
            v = getattr(value, f.name)
            items = v.items() if isinstance(v, dict) else enumerate(v) if isinstance(v, (list, tuple)) else [("", v)]
            for key, x in items:
                if isinstance(x, float) and not math.isfinite(x):
                    name = f"{section.name}.{f.name}" + (f".{key}" if isinstance(key, str) and key else
                                                         f"[{key}]" if not isinstance(key, str) else "")
                    raise ConfigError(f"{name} must be a finite number, got {x}")


# Fields removed after checkpoints were written with them, each with the one value that behaves as the code does
# now: an old checkpoint's config.json (or a YAML file) holding that value loads with the key ignored; any other
# value is an error, since the code can no longer do what it asked.
REMOVED_FIELDS: dict[type, dict[str, Any]] = {
    # image SNR / 64 beside the text's: lower text->text and text->image (experiments/answers-from-the-prior)
    DiffusionConfig: {"image_snr_shift": 1.0},
    # a depthwise conv over each clip's (frame, row, column) grid: less motion kept (experiments/video-coherence)
    BackboneConfig: {"grid_conv": 0},
}


# Fields added after checkpoints were written, each with the value that behaves as the code that wrote them did: a
# saved config (a checkpoint's config.json, a stage-0 folder's record) without the key was made that way, so it is
# read with that value, not today's default (mdm.config.files.from_saved_dict).
ADDED_FIELDS: dict[type, dict[str, Any]] = {
    DataConfig: {"tokenizer": "unigram"},
}
