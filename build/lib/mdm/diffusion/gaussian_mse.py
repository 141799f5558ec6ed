"""Gaussian noise on continuous tokens (raw pixel patches), trained by the noise MSE (DESIGN.md §2.3).

The continuous limit of score entropy is denoising score matching: the head
predicts the noise ``eps`` of Eq. 1 and the loss is its mean squared error; the
sampler steps DPM-Solver++ (or DDPM) on ``x0_hat`` from the predicted noise and
decodes the last ``x0_hat`` through the VAE to patch values.

Two choices differ from :mod:`mdm.diffusion.gaussian_latent`: the clean latent
diffused is ``mu``, not ``z0 = mu + sigma xi`` (the encoder's noise would be
indistinguishable from the diffusion's, a floor under the eps target: on moving
digits the noise MSE rose from 0.15 to 0.27 as the KL shrank and sigma grew);
and a segment always draws one timestep, never clean positions inside it: those
exist for multi-step selection and frame passes, which commit states.
"""

from __future__ import annotations

import torch
from torch import Tensor

from mdm.diffusion.base import Corrupted, SegmentSampler, StepInput, clean_latent
from mdm.diffusion.batch_random import BatchRandom
from mdm.diffusion.gaussian_latent import GaussianLatent
from mdm.diffusion.objective import clean_latent_from_noise, noise_mse
from mdm.diffusion.sampler_config import SamplerConfig
from mdm.nn.layout import SegmentSpec
from mdm.nn.network import MDMNetwork
from mdm.nn.vae import VAEOutput


FRAME_PASSES_NEED_STATES = ("sample: frame_passes needs VQ-coded video; pixel-patch segments never train with "
                            "clean positions inside a target (use frame_passes=1)")


class GaussianMSE(GaussianLatent):
    """Eq. 1 on the latents of continuous tokens; epsilon prediction, MSE; decoded values out."""

    name = "gaussian-mse"
    keeps_positions = False  # one level a segment: frame passes need states to keep
    loss_name = "mse"

    def corrupt(self, network: MDMNetwork, spec: SegmentSpec, states: Tensor, vae_out: VAEOutput,
                rng: BatchRandom) -> Corrupted:
        mu = clean_latent(network, vae_out)
        b, n = states.shape[:2]
        t = rng.randint(self.T, b, 1).expand(b, n)
        noise = rng.randn(*mu.shape, dtype=mu.dtype)
        z = self.schedule.add_noise(mu, noise, t)
        tau = (t + 1).float()
        return Corrupted(z, tau, tau[:, 0], torch.ones(b, n, dtype=torch.bool, device=mu.device), noise)

    def loss(self, out: Tensor, states: Tensor, corrupted: Corrupted) -> tuple[Tensor, Tensor]:
        per_position = noise_mse(out, corrupted.noise) * corrupted.predict
        return per_position.sum(dim=1), corrupted.predict.sum(dim=1)

    def adjust_output(self, network: MDMNetwork, out: Tensor, z: Tensor, tau: Tensor) -> Tensor:
        return out  # no candidates: the analytic offset does not apply

    def start(self, network: MDMNetwork, spec: SegmentSpec, b: int, sampler_config: SamplerConfig,
              generator: torch.Generator | None, kept: tuple[Tensor, Tensor] | None) -> SegmentSampler:
        if kept is not None:
            raise ValueError(FRAME_PASSES_NEED_STATES)
        return _NoiseSampler(self, network, b, spec.n_content, sampler_config, generator)


class _NoiseSampler(SegmentSampler):
    """DPM-Solver/DDPM on ``x0_hat`` from the predicted noise; the last ``x0_hat`` decoded to values."""

    def __init__(self, process: GaussianMSE, network: MDMNetwork, b: int, n: int, config: SamplerConfig,
                 generator: torch.Generator | None) -> None:
        device = next(network.parameters()).device
        self.process, self.network, self.b = process, network, b
        self.z = torch.randn(b, n, network.vae_config.d_latent, generator=generator, device=device)
        self.scheduler = process.make_scheduler(config)
        self.timesteps = [int(t) for t in self.scheduler.timesteps]
        self.n_steps = len(self.timesteps)
        self.values: Tensor | None = None

    def inputs(self, i: int) -> StepInput:
        level = float(self.timesteps[i] + 1)
        return StepInput(self.z, torch.full(self.z.shape[:2], level, device=self.z.device),
                         torch.full((self.b,), level, device=self.z.device))

    def step(self, i: int, out: Tensor, generator: torch.Generator | None) -> None:
        t = self.timesteps[i]
        alpha_bar = self.process.schedule.alpha_bar(torch.full(self.z.shape[:2], t, device=self.z.device))
        x0_hat = clean_latent_from_noise(self.z, out.float(), alpha_bar)
        if i == self.n_steps - 1:
            self.values = self.network.vae.decode(x0_hat, self.process.modality)
        else:
            self.z = self.scheduler.step(x0_hat, t, self.z, generator=generator).prev_sample

    def result(self) -> Tensor:
        return self.values
