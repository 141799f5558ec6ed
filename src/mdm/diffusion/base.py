"""The interface every diffusion process of one modality implements (SEDD's ``Graph`` pattern; STYLE.md).

MDM diffuses each segment of a multimodal sequence with the process of its
modality (``diffusion.text_process``, ``diffusion.image_process``). A process
answers, for one segment:

* **training**: :meth:`DiffusionProcess.corrupt` draws a level and corrupts the
  clean states into the network's input (latents ``z``, network times ``tau``);
  :meth:`DiffusionProcess.loss` scores the network's output against the clean states;
* **conditions**: :meth:`DiffusionProcess.null_condition` is the input of a dropped
  condition (classifier-free guidance's unconditional model);
* **sampling**: :meth:`DiffusionProcess.start` returns a :class:`SegmentSampler`
  that holds the segment's state through the sampler's steps;
* **likelihood**: :meth:`DiffusionProcess.corrupt_at` corrupts at a given level with
  noise shared by every sample of the batch (ELBO scoring of candidates).

The network never learns which process fed it: it takes latents and noise levels
(``tau = 0`` clean, ``tau`` in ``(0, T]`` noised) and returns one output per
position. Training, sampling and ELBO scoring call this interface and never
branch on the process; a new process is one file and one line of
:mod:`mdm.diffusion.registry`.

Shape letters: ``b`` batch, ``n`` positions of the segment, ``e`` d_latent, ``v`` states.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor

from mdm.config import DiffusionConfig
from mdm.diffusion.batch_random import BatchRandom
from mdm.nn.layout import Modality, SegmentSpec
from mdm.nn.network import MDMNetwork
from mdm.nn.vae import VAEOutput


@dataclass
class Corrupted:
    """One segment corrupted for the network: its input and what the loss needs."""

    z: Tensor  # (b, n, e) the network's input latents
    tau: Tensor  # (b, n) network time per position: 0 clean, (0, T] noised
    segment_tau: Tensor  # (b,) the segment's level, for its TIME token
    predict: Tensor  # (b, n) bool: the positions the loss scores
    noise: Tensor | None = None  # (b, n, e) the Gaussian noise, where the loss needs it
    level: Tensor | None = None  # (b, 1) the level in (0, 1], where the loss weights by it
    weight: Tensor | None = None  # (b, n) each position's loss weight (first_frame_weight), None for all 1

    def scored(self) -> Tensor:
        """(b, n) each position's share of the loss: ``predict`` times ``weight``."""
        return self.predict if self.weight is None else self.predict * self.weight


@dataclass
class StepInput:
    """A target segment's input to the network at one sampler step."""

    z: Tensor  # (b, n, e)
    tau: Tensor  # (b, n)
    segment_tau: Tensor  # (b,)
    x0_prev: Tensor | None = None  # (b, n, e) the previous step's x0_hat, for a self-conditioned network


def clean_frames(config: DiffusionConfig, spec: SegmentSpec, rng: BatchRandom, b: int,
                 device: torch.device) -> Tensor:
    """(b, n) whole frames of a clip given clean in training (``clean_frames_prob``); all False for an image.

    Frames given as conditions teach the relation between frames directly (DESIGN.md §5);
    ``clean_frames = "prefix"`` gives the first k frames, k in 1..frames-1, as the sampler's
    frame passes feed them.
    """
    n = spec.n_content
    if not spec.is_video or config.clean_frames_prob == 0:
        return torch.zeros(b, n, dtype=torch.bool, device=device)
    frames = spec.frames
    gate = (rng.rand(b) < config.clean_frames_prob)[:, None]
    if config.clean_frames == "prefix":
        k = 1 + (rng.rand(b, 1) * (frames - 1)).long()
        chosen = gate & (torch.arange(frames, device=device) < k)
    else:
        chosen = gate & (rng.rand(b, frames) < rng.rand(b, 1))
    return chosen.repeat_interleave(n // frames, dim=1)  # content is frame-major


def first_frame_weight(config: DiffusionConfig, spec: SegmentSpec, frames_clean: Tensor) -> Tensor | None:
    """(b, n) loss weights that train frame 0 as much as the last frame (``balance_first_frame``), or None.

    With prefix clean frames (:func:`clean_frames`) frame 0 is a target only in the clips
    given no clean frame, a share ``1 - clean_frames_prob`` of them, while frame ``T - 1``
    is a target in every clip; the frame passes draw frame 0 from nothing and every later
    frame from it. Frame 0's positions in those clips weigh ``1 / (1 - clean_frames_prob)``
    (measured: experiments/video-first-frame).
    """
    p = config.clean_frames_prob
    if not (config.balance_first_frame and spec.is_video) or p == 0 or p == 1:
        return None
    n = spec.n_content
    first = torch.arange(n, device=frames_clean.device) < n // spec.frames  # content is frame-major
    whole = ~frames_clean.any(dim=1, keepdim=True)
    return torch.where(whole & first, 1.0 / (1.0 - p), 1.0)


def clean_latent(network: MDMNetwork, vae_out: VAEOutput) -> Tensor:
    """The clean latent ``mu`` a segment is fed, cut from the VAE's graph unless ``vae.detach_latents`` is off."""
    return vae_out.mu.detach() if network.vae_config.detach_latents else vae_out.mu


def self_conditioned(network: MDMNetwork) -> bool:
    """Whether ``network`` reads a self-condition (built with ``diffusion.self_conditioning``)."""
    return getattr(network, "self_cond_in", None) is not None


class SegmentSampler(ABC):
    """One target segment through a sampling run: its input before each step and its update after it."""

    n_steps: int

    @abstractmethod
    def inputs(self, i: int) -> StepInput:
        """The segment's network input at step ``i`` (0-based)."""

    @abstractmethod
    def step(self, i: int, out: Tensor, generator: torch.Generator | None) -> None:
        """Consume the (guided) network output ``out`` of step ``i``."""

    @abstractmethod
    def result(self) -> Tensor:
        """After the last step: (b, n) state ids, or (b, n, f) decoded values of a continuous segment."""


class DiffusionProcess(ABC):
    """A diffusion process over one modality's segments.

    ``config`` is shared, not copied: a process reads its settings when it runs.
    """

    name: ClassVar[str]
    keeps_positions: ClassVar[bool] = True  # whether a sampler can start with positions given (frame passes)
    loss_name: ClassVar[str] = "se"  # the Eq. 18 term the loss is logged under

    def __init__(self, config: DiffusionConfig, modality: Modality) -> None:
        self.config, self.modality = config, Modality(modality)
        self.T = config.num_train_timesteps

    # -- training ------------------------------------------------------------
    @abstractmethod
    def corrupt(self, network: MDMNetwork, spec: SegmentSpec, states: Tensor, vae_out: VAEOutput,
                rng: BatchRandom) -> Corrupted:
        """Draw a level per sample (or per position) and corrupt the clean segment for training."""

    @abstractmethod
    def corrupt_at(self, network: MDMNetwork, spec: SegmentSpec, states: Tensor, mu: Tensor, level: float,
                   generator: torch.Generator) -> Corrupted:
        """Corrupt at ``level`` in (0, 1) with one draw shared by every sample (common random numbers)."""

    @abstractmethod
    def loss(self, out: Tensor, states: Tensor, corrupted: Corrupted) -> tuple[Tensor, Tensor]:
        """Per sample (b,): the summed loss and the count it is averaged over."""

    def observe(self, network: MDMNetwork, out: Tensor, states: Tensor, corrupted: Corrupted) -> None:
        """Keep what a process learns from a training step's output (the time warp's loss by level); nothing here."""

    def likelihood(self, out: Tensor, states: Tensor, corrupted: Corrupted) -> Tensor:
        """Per sample (b,): the loss of the targets at one level, summed over positions (ELBO scoring)."""
        return self.loss(out, states, corrupted)[0]

    # -- conditions ----------------------------------------------------------
    @abstractmethod
    def null_condition(self, network: MDMNetwork, mu: Tensor, noise: Tensor | None) -> tuple[Tensor, Tensor]:
        """(z, tau) of a dropped condition: the input of the model that has not seen it."""

    def draws_null_noise(self) -> bool:
        """Whether :meth:`null_condition` consumes a (b, n, e) Gaussian draw."""
        return True

    def adjust_output(self, network: MDMNetwork, out: Tensor, z: Tensor, tau: Tensor) -> Tensor:
        """A process's fixed term on the network's (guided) output; none by default."""
        return out

    def estimate_x0(self, network: MDMNetwork, out: Tensor) -> Tensor | None:
        """(b, n, e) the clean latent a target's output estimates, the self-condition of the next call; None
        for a process without one (only the Gaussian latents self-condition)."""
        return None

    # -- sampling ------------------------------------------------------------
    @abstractmethod
    def start(self, network: MDMNetwork, spec: SegmentSpec, b: int, sampler_config,
              generator: torch.Generator | None, kept: tuple[Tensor, Tensor] | None) -> SegmentSampler:
        """A fresh sampler for a target segment; ``kept = (states, mask)`` start committed."""
