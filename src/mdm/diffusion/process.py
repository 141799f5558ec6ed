"""MDM's diffusion over a multimodal sequence: noising per segment, the total loss (Eq. 18), the denoiser.

A batch is a list of :class:`Segment`: each is either a *target* (noised, to be
predicted) or a *condition* (clean, ``tau = 0``). Which segments are targets is
the task: caption clean + image noised is text->image, both noised is joint
generation, and so on (DESIGN.md §4) -- one model learns them all.

Noise levels per segment (DESIGN.md §1.3, §3): a target segment draws one
timestep for all its positions, or -- with probability ``per_position_t_prob`` --
one per position with a random share of positions left clean. The second kind
teaches the model the inputs multi-step selection produces at sampling time
(committed positions fed back clean at ``tau = 0`` beside noisy ones).

Images on the continuous path (raw pixel patches, DESIGN.md §2.3) are
segments whose ``states`` are (b, n, f) float patches; the network predicts
their noise and the loss is the noise MSE. Two choices differ from states:
the clean latent they diffuse is ``mu``, not ``z0 = mu + sigma xi`` (the
encoder's noise would be indistinguishable from the diffusion's, a floor under
the eps target: measured on moving digits, the noise MSE rose from 0.15 to 0.27
as the KL shrank and sigma grew); and they always draw one timestep per
segment: the per-position mixture exists for multi-step selection, which
commits states and so does not apply to them.

Video (DiM, DESIGN.md §5): with probability ``clean_frames_prob`` a VQ-coded clip
leaves a random share of its *whole frames* clean, so the relation between frames (the same
digit, moved) is taught directly by frames given as conditions; off by default. Pixel-patch
clips never get clean frames: like per-position t, clean positions inside a target serve the
sampler, whose frame passes need VQ codes, and the MSE path keeps one level per clip
(the config refuses the combination; the guard here keeps the rule for direct callers).
``clean_frames = "prefix"`` leaves the first k frames clean instead (k uniform in
1..frames-1): the inputs of the sampler's frame passes, which keep frames 0..j-1.
Measured on moving digits (benchmarks/results/video-cpu-2core/README.md, fifth
session): random frames raised consistent clips from 21% to 32%; the prefix gave no
more consistency and a third of the frames with the requested digit.

Classifier-free guidance: with probability ``cond_dropout`` a sample's class
becomes the null class and its condition segments are replaced by pure noise at
the last level -- the unconditional model is the joint model that has not yet
seen the condition, so no extra "null" tokens are needed.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from mdm.config import DiffusionConfig, VAEConfig
from mdm.diffusion.objective import gaussian_offset, noise_mse, score_entropy_onehot
from mdm.diffusion.batch_random import BatchRandom
from mdm.diffusion.schedule import NoiseSchedule
from mdm.nn.layout import Modality, SegmentSpec, SequenceLayout
from mdm.nn.network import MDMNetwork


@dataclass
class Segment:
    """One segment of a batch: its shape, its clean states, and whether it is generated (a target)."""

    spec: SegmentSpec
    states: Tensor | None  # (b, n) long ids, or (b, n, f) float patches; None for a target at sampling time
    target: bool

    @property
    def continuous(self) -> bool:
        """Whether the segment holds real-valued tokens (pixel patches) rather than state ids."""
        return self.states is not None and self.states.is_floating_point()

    def __post_init__(self) -> None:
        if self.states is not None:
            n = self.spec.n_content
            if self.states.is_floating_point():
                if self.states.dim() != 3 or self.states.shape[1] != n:
                    raise ValueError(f"Segment: continuous {self.spec.modality.value} tokens must be (batch, {n}, "
                                     f"features), got {tuple(self.states.shape)}")
            elif self.states.dim() != 2 or self.states.shape[1] != n:
                raise ValueError(f"Segment: {self.spec.modality.value} states must be (batch, {n}), got "
                                 f"{tuple(self.states.shape)}")
            elif self.states.dtype != torch.long:
                raise TypeError(f"Segment: states must be torch.long ids or float patches, got {self.states.dtype}")
        elif not self.target:
            raise ValueError("Segment: a condition (target=False) needs its states")


class MultimodalDiffusion:
    """Schedules per modality plus the training loss and the denoiser of an :class:`MDMNetwork`."""

    def __init__(self, config: DiffusionConfig, vae_config: VAEConfig) -> None:
        self.config, self.vae_config = config, vae_config
        self.schedules = {Modality.TEXT: NoiseSchedule(config.text_schedule, config.num_train_timesteps,
                                                       config.text_snr_shift),
                          Modality.IMAGE: NoiseSchedule(config.image_schedule, config.num_train_timesteps,
                                                        config.image_snr_shift)}
        self.T = config.num_train_timesteps

    # ------------------------------------------------------------------ denoiser
    def logits(self, network: MDMNetwork, z: Tensor, tau: Tensor, segment_tau: Tensor, layout: SequenceLayout,
               class_labels: Tensor | None = None, guidance_scale: float = 1.0,
               uncond: tuple[Tensor, Tensor, Tensor, Tensor | None] | None = None) -> list[Tensor]:
        """The network's logits per segment, guided and offset as configured.

        Guidance (DESIGN.md §3) mixes the learned logits ``l_u + w (l_c - l_u)``;
        ``uncond`` = (z, tau, segment_tau, class_labels) of the unconditional input;
        at ``w = 0`` only that input goes through the network.
        The analytic Gaussian offset is added after guidance (it is the same for both).
        A continuous segment's output is its predicted noise, guided the same way.
        """
        if guidance_scale != 1.0 and uncond is None:
            raise ValueError("guidance_scale != 1 needs the unconditional input")
        if guidance_scale == 0.0:  # the unconditional model alone: one network call, not two
            out = network(*uncond[:3], layout, uncond[3])
        else:
            out = network(z, tau, segment_tau, layout, class_labels)
        if guidance_scale not in (0.0, 1.0):
            out_u = network(*uncond[:3], layout, uncond[3])
            out = [lu + guidance_scale * (lc - lu) for lc, lu in zip(out, out_u)]
        if self.config.analytic_offset:
            out = [lg if seg.spec.modality in network.continuous else
                   self._offset(network, lg, z[:, seg.content], tau[:, seg.content], seg.spec.modality)
                   for lg, seg in zip(out, layout.segments)]
        return out

    def _offset(self, network: MDMNetwork, logits: Tensor, z: Tensor, tau: Tensor, modality: Modality) -> Tensor:
        noisy = tau > 0
        t = (tau.round().long() - 1).clamp(min=0)
        alpha_bar = self.schedules[modality].alpha_bar(t)
        offset = gaussian_offset(z, network.vae.candidates(modality).detach(), alpha_bar)
        return logits + torch.where(noisy[..., None], offset, torch.zeros_like(offset))

    # ------------------------------------------------------------------ training
    def training_losses(self, network: MDMNetwork, segments: list[Segment], class_labels: Tensor | None = None,
                        generator: torch.Generator | BatchRandom | None = None) -> dict[str, Tensor]:
        """Eq. 18: ``L = L_rec_img + L_rec_txt + beta L_KL + lambda L_se``, each term returned (and 'loss').

        Continuous image segments add their noise MSE to the diffusion term
        (``lambda (L_se + L_mse)``), logged as ``mse``.

        ``generator`` drives every random draw; a :class:`BatchRandom` makes the draws of
        each sample independent of how the global batch is split across processes.
        """
        if not any(s.target for s in segments):
            raise ValueError("training_losses: at least one segment must be a target")
        layout = network.make_layout([s.spec for s in segments])
        device = next(network.parameters()).device
        b = segments[0].states.shape[0]
        cfg, T = self.config, self.T
        rng = generator if isinstance(generator, BatchRandom) else BatchRandom(generator, device)
        rnd = rng.rand

        drop = rnd(b) < cfg.cond_dropout  # classifier-free guidance dropout, per sample
        if class_labels is not None:
            class_labels = torch.where(drop, torch.full_like(class_labels, network.backbone.null_class), class_labels)

        rec = {m: [] for m in Modality}
        kls, zs, taus, seg_taus, targets, noises = [], [], [], [], [], []
        for seg in segments:
            xi = rng.randn(*seg.states.shape[:2], network.vae.d_latent)
            vae_out = network.vae(seg.states, seg.spec.modality, xi=xi)
            rec[seg.spec.modality].append(vae_out.rec)
            kls.append(vae_out.kl)
            detach = self.vae_config.detach_latents
            n = seg.spec.n_content
            if seg.target:
                mu = vae_out.mu.detach() if detach else vae_out.mu
                # A continuous segment diffuses mu: the encoder's own noise sigma * xi in z0 would be
                # indistinguishable from the diffusion noise, an irreducible floor under the eps target.
                z0 = mu if seg.continuous else (vae_out.z0.detach() if detach else vae_out.z0)
                t = rng.randint(T, b, 1).expand(b, n)
                per_position = (rnd(b) < cfg.per_position_t_prob)[:, None] & (not seg.continuous)
                t_free = rng.randint(T, b, n)
                clean = per_position & (rnd(b, n) < rnd(b, 1))  # a random share of positions left clean
                if seg.spec.is_video and not seg.continuous and cfg.clean_frames_prob > 0:  # whole frames clean
                    frames = seg.spec.frames
                    gate = (rnd(b) < cfg.clean_frames_prob)[:, None]
                    if cfg.clean_frames == "prefix":  # the first k frames, k in 1..frames-1 (frame passes)
                        k = 1 + (rnd(b, 1) * (frames - 1)).long()
                        chosen = gate & (torch.arange(frames, device=device) < k)
                    else:
                        chosen = gate & (rnd(b, frames) < rnd(b, 1))
                    clean = clean | chosen.repeat_interleave(n // frames, dim=1)  # content is frame-major
                seg_tau = (t[:, 0] + 1).float()  # the TIME token: the segment's shared level, as at sampling
                t = torch.where(per_position, t_free, t)
                noise = rng.randn(*z0.shape, dtype=z0.dtype)
                # Clean positions are fed mu, as committed positions are at sampling (c_y = mu(e(y))).
                z = torch.where(clean[..., None], mu, self.schedules[seg.spec.modality].add_noise(z0, noise, t))
                tau = torch.where(clean, torch.zeros_like(t), t + 1).float()
                targets.append(~clean)
                noises.append(noise)
            else:
                mu = vae_out.mu.detach() if detach else vae_out.mu
                noise = rng.randn(*mu.shape, dtype=mu.dtype)
                # Dropped condition: pure noise at the last level (see module docstring).
                last = torch.full((b, n), T - 1, device=device)
                z = torch.where(drop[:, None, None], self.schedules[seg.spec.modality].add_noise(mu, noise, last), mu)
                tau = torch.where(drop[:, None], torch.full((b, n), float(T), device=device),
                                  torch.zeros(b, n, device=device))
                seg_tau = tau[:, 0]
                targets.append(torch.zeros(b, n, dtype=torch.bool, device=device))
                noises.append(None)
            zs.append(z)
            taus.append(tau)
            seg_taus.append(seg_tau)

        z, tau = torch.cat(zs, dim=1), torch.cat(taus, dim=1)
        logits = self.logits(network, z, tau, torch.stack(seg_taus, dim=1), layout, class_labels)
        # Mean over each sample's noised positions, then over samples: a per-sample mean
        # does not depend on how a global batch is split across processes.
        sums = {kind: (z.new_zeros(b), z.new_zeros(b)) for kind in ("se", "mse")}
        for seg, out, mask, noise in zip(segments, logits, targets, noises):
            if seg.target:
                kind = "mse" if seg.continuous else "se"
                per_position = noise_mse(out, noise) if seg.continuous else score_entropy_onehot(out, seg.states)
                total, count = sums[kind]
                sums[kind] = (total + (per_position * mask).sum(dim=1), count + mask.sum(dim=1))
        se, mse = ((total / count.clamp(min=1)).mean() for total, count in sums.values())
        rec_img = torch.stack(rec[Modality.IMAGE]).mean() if rec[Modality.IMAGE] else z.new_zeros(())
        rec_txt = torch.stack(rec[Modality.TEXT]).mean() if rec[Modality.TEXT] else z.new_zeros(())
        kl = torch.stack(kls).mean()
        loss = rec_img + rec_txt + self.vae_config.beta * kl + cfg.se_weight * (se + mse)
        return {"loss": loss, "rec_img": rec_img.detach(), "rec_txt": rec_txt.detach(), "kl": kl.detach(),
                "se": se.detach(), "mse": mse.detach()}
