"""Gaussian noise on the unified VAE's latents, score entropy over clean candidates (Eq. 1-8; DESIGN.md §2.1-2.2).

The paper's literal design: a segment's states are encoded to latents ``z0``,
noised by Eq. 1 with the modality's schedule, and the network's logits over the
modality's clean candidates ``c_y = mu(e(y))`` are trained by Eq. 4 with the
data's one-hot target (a time-weighted cross-entropy). The sampler steps
diffusers' DPM-Solver++ (or DDPM) on ``x0_hat = sum_y s(y) c_y`` and commits
positions by multi-step selection (Theorem 3).

Noise levels (DESIGN.md §1.3, §3): a target segment draws one timestep for all its
positions, or -- with probability ``per_position_t_prob`` -- one per position with a
random share of positions left clean, the inputs multi-step selection produces at
sampling time (committed positions fed back clean at ``tau = 0`` beside noisy ones).
Network times are ``tau = t + 1`` for scheduler timestep ``t``, 0 for a clean position.

Video (DESIGN.md §5): with probability ``clean_frames_prob`` a clip leaves a random
share of its whole frames clean (``clean_frames = "prefix"``: the first k, as the
sampler's frame passes feed them), so that frames given as conditions teach the
relation between frames directly.

Self-conditioning (``diffusion.self_conditioning``; Chen et al., Analog Bits, arXiv
2208.04202; DESIGN.md §2.5): the network also reads the previous estimate
``x0_hat = sum_y s(y) c_y``. In training a share of the samples get it from a first,
no-gradient pass at the same input (:class:`~mdm.diffusion.multimodal.MultimodalDiffusion`
runs it), the rest get zeros, as the first sampler step does; at sampling each step
feeds the x0_hat its solver stepped on (guided, with commits in place).

Time warping (``diffusion.time_warping``; CDCD, :mod:`mdm.diffusion.time_warp`):
timesteps are drawn as ``F^-1(u)`` of the loss-by-level CDF the network's buffer holds,
updated from every training step's per-position loss, and the solver's timesteps are
evenly spaced in ``u``.

A dropped condition (classifier-free guidance) is pure noise at the last level, as a
target starts at sampling: the unconditional model is the joint model that has not yet
seen the condition.
"""

from __future__ import annotations

import warnings

import torch
from diffusers import DDPMScheduler, DPMSolverMultistepScheduler
from torch import Tensor

from mdm.config import DiffusionConfig
from mdm.diffusion.base import (Corrupted, DiffusionProcess, SegmentSampler, StepInput, clean_frames, clean_latent,
                               first_frame_weight, self_conditioned)
from mdm.diffusion.batch_random import BatchRandom
from mdm.diffusion.objective import expected_latent, gaussian_offset, score_entropy_onehot
from mdm.diffusion.sampler_config import SamplerConfig, Solver, commit_most_confident, committed_count
from mdm.diffusion.schedule import NoiseSchedule
from mdm.diffusion.time_warp import TimeWarp
from mdm.nn.layout import Modality, SegmentSpec
from mdm.nn.network import MDMNetwork
from mdm.nn.vae import VAEOutput


class GaussianLatent(DiffusionProcess):
    """Eq. 1 on VAE latents; Eq. 4's one-hot score entropy over clean candidates; DPM-Solver + selection."""

    name = "gaussian"

    def __init__(self, config: DiffusionConfig, modality: Modality) -> None:
        super().__init__(config, modality)
        text = self.modality is Modality.TEXT
        self.schedule = NoiseSchedule(config.text_schedule if text else config.image_schedule, self.T,
                                      config.text_snr_shift if text else 1.0)

    # -- training ------------------------------------------------------------
    def corrupt(self, network: MDMNetwork, spec: SegmentSpec, states: Tensor, vae_out: VAEOutput,
                rng: BatchRandom) -> Corrupted:
        cfg, T = self.config, self.T
        mu = clean_latent(network, vae_out)
        z0 = vae_out.z0.detach() if network.vae_config.detach_latents else vae_out.z0
        b, n = states.shape[:2]
        warp = self.warp(network)
        t = (rng.randint(T, b, 1) if warp is None else warp.timesteps(rng.rand(b, 1), T)).expand(b, n)
        per_position = (rng.rand(b) < cfg.per_position_t_prob)[:, None]
        t_free = rng.randint(T, b, n) if warp is None else warp.timesteps(rng.rand(b, n), T)
        clean = per_position & (rng.rand(b, n) < rng.rand(b, 1))  # a random share of positions left clean
        frames = clean_frames(cfg, spec, rng, b, mu.device)
        clean = clean | frames
        segment_tau = (t[:, 0] + 1).float()  # the TIME token: the segment's shared level, as at sampling
        t = torch.where(per_position, t_free, t)
        noise = rng.randn(*z0.shape, dtype=z0.dtype)
        # Clean positions are fed mu, as committed positions are at sampling (c_y = mu(e(y))).
        z = torch.where(clean[..., None], mu, self.schedule.add_noise(z0, noise, t))
        tau = torch.where(clean, torch.zeros_like(t), t + 1).float()
        return Corrupted(z, tau, segment_tau, ~clean, noise, weight=first_frame_weight(cfg, spec, frames))

    def warp(self, network: MDMNetwork) -> TimeWarp | None:
        """The network's fitted time warp of this modality, or None when it trained without one."""
        stats = network.level_stats(self.modality) if hasattr(network, "level_stats") else None
        return None if stats is None else TimeWarp(stats)

    def observe(self, network: MDMNetwork, out: Tensor, states: Tensor, corrupted: Corrupted) -> None:
        """Add the step's per-position score entropy, by noise level, to the time warp's statistic."""
        warp = self.warp(network)
        if warp is None:
            return
        predict = corrupted.predict & (corrupted.tau > 0)
        loss = score_entropy_onehot(out.detach(), states)
        warp.observe((corrupted.tau[predict] - 0.5) / self.T, loss[predict])

    def estimate_x0(self, network: MDMNetwork, out: Tensor) -> Tensor:
        """``x0_hat = sum_y s(y) c_y``, the estimate the solver steps on (and the self-condition)."""
        return expected_latent(out.float(), network.vae.candidates(self.modality).detach())

    def corrupt_at(self, network: MDMNetwork, spec: SegmentSpec, states: Tensor, mu: Tensor, level: float,
                   generator: torch.Generator) -> Corrupted:
        b, n = states.shape[:2]
        t_level = min(int(level * self.T + 1e-9), self.T - 1)
        noise = torch.randn(mu.shape[1:], generator=generator, device=mu.device, dtype=mu.dtype).expand_as(mu)
        z = self.schedule.add_noise(mu, noise, torch.full((b, n), t_level, device=mu.device))
        tau = torch.full((b, n), float(t_level + 1), device=mu.device)
        return Corrupted(z, tau, tau[:, 0], torch.ones(b, n, dtype=torch.bool, device=mu.device), noise)

    def loss(self, out: Tensor, states: Tensor, corrupted: Corrupted) -> tuple[Tensor, Tensor]:
        per_position = score_entropy_onehot(out, states) * corrupted.scored()
        return per_position.sum(dim=1), corrupted.predict.sum(dim=1)

    # -- conditions ----------------------------------------------------------
    def null_condition(self, network: MDMNetwork, mu: Tensor, noise: Tensor | None) -> tuple[Tensor, Tensor]:
        """Pure noise at ``tau = T``, as a target starts at sampling."""
        return noise, torch.full(mu.shape[:2], float(self.T), device=mu.device)

    def adjust_output(self, network: MDMNetwork, out: Tensor, z: Tensor, tau: Tensor) -> Tensor:
        """With ``analytic_offset``, add the Gaussian log-likelihood of ``z_t`` under each candidate (§2.1)."""
        if not self.config.analytic_offset:
            return out
        noisy = tau > 0
        alpha_bar = self.schedule.alpha_bar((tau.round().long() - 1).clamp(min=0))
        offset = gaussian_offset(z, network.vae.candidates(self.modality).detach(), alpha_bar)
        return out + torch.where(noisy[..., None], offset, torch.zeros_like(offset))

    # -- sampling ------------------------------------------------------------
    def make_scheduler(self, config: SamplerConfig, warp: TimeWarp | None = None):
        """A fresh diffusers solver over this schedule (they are stateful), ``x0_hat`` in, timesteps set
        (evenly in the warp's ``u`` when the network trained with one)."""
        base = self.schedule.scheduler.config
        if config.solver is Solver.DDPM:
            s = DDPMScheduler.from_config(base, clip_sample=False, prediction_type="sample",
                                          timestep_spacing="trailing")
        else:
            s = DPMSolverMultistepScheduler.from_config(base, algorithm_type="dpmsolver++", solver_order=2,
                                                        prediction_type="sample", timestep_spacing="trailing",
                                                        lower_order_final=True)
        if warp is not None and not warp.fitted:
            warnings.warn(f"the {self.modality.value} time warp of this network is not fitted (its training has not "
                          f"seen every noise level yet): sampling on the plain schedule", stacklevel=2)
        if warp is not None and warp.fitted:
            s.set_timesteps(timesteps=warp.sampler_timesteps(config.steps, self.T))
        else:
            s.set_timesteps(config.steps)
        return s

    def start(self, network: MDMNetwork, spec: SegmentSpec, b: int, sampler_config: SamplerConfig,
              generator: torch.Generator | None, kept: tuple[Tensor, Tensor] | None) -> SegmentSampler:
        return _LatentSampler(self, network, spec, b, sampler_config, generator, kept)


class _LatentSampler(SegmentSampler):
    """DPM-Solver/DDPM on ``x0_hat``; the most confident uncommitted positions committed after each step."""

    def __init__(self, process: GaussianLatent, network: MDMNetwork, spec: SegmentSpec, b: int,
                 config: SamplerConfig, generator: torch.Generator | None,
                 kept: tuple[Tensor, Tensor] | None) -> None:
        device = next(network.parameters()).device
        n, e = spec.n_content, network.vae_config.d_latent
        self.config, self.b, self.n = config, b, n
        self.selection = config.selection
        if process.modality is Modality.IMAGE and config.image_selection is not None:
            self.selection = config.image_selection
        self.z = torch.randn(b, n, e, generator=generator, device=device)
        self.scheduler = process.make_scheduler(config, process.warp(network))
        self.timesteps = [int(t) for t in self.scheduler.timesteps]
        self.n_steps = len(self.timesteps)
        self.candidates = network.vae.candidates(process.modality)
        self.states = torch.zeros(b, n, dtype=torch.long, device=device)
        self.committed = torch.zeros(b, n, dtype=torch.bool, device=device)
        self.n_kept = 0
        self.x0_prev = torch.zeros_like(self.z) if self_conditioned(network) else None
        if kept is not None:  # start committed: clean, at tau = 0
            known, mask = kept
            self.committed, self.states = mask.clone(), torch.where(mask, known, self.states)
            self.z = torch.where(mask[..., None], self.candidates[self.states], self.z)
            self.n_kept = int(mask[0].sum())  # the same frames in every row

    def inputs(self, i: int) -> StepInput:
        level = float(self.timesteps[i] + 1)
        tau = torch.where(self.committed, 0.0, level)
        return StepInput(self.z, tau, torch.full((self.b,), level, device=self.z.device), self.x0_prev)

    def step(self, i: int, out: Tensor, generator: torch.Generator | None) -> None:
        config, lg, c = self.config, out.float(), self.candidates
        probs = torch.softmax(lg / (config.temperature if config.commit_sample else 1.0), dim=-1)
        choice = (torch.multinomial(probs.flatten(0, 1), 1, generator=generator).view(self.b, -1)
                  if config.commit_sample else lg.argmax(-1))
        # Commit the most confident uncommitted positions (Theorem 3).
        n_free = self.n - self.n_kept  # the schedule runs over the positions not kept
        want = self.n_kept + committed_count(i, self.n_steps, n_free, self.selection)
        newly = commit_most_confident(probs.max(-1).values, ~self.committed, want)
        self.states = torch.where(newly, choice, self.states)
        self.committed = self.committed | newly
        if i == self.n_steps - 1:  # every position is committed by now
            return
        x0_hat = expected_latent(lg, c)
        x0_hat = torch.where(self.committed[..., None], c[self.states], x0_hat)
        if self.x0_prev is not None:
            self.x0_prev = x0_hat
        z_next = self.scheduler.step(x0_hat, self.timesteps[i], self.z, generator=generator).prev_sample
        self.z = torch.where(self.committed[..., None], c[self.states], z_next)

    def result(self) -> Tensor:
        return self.states
