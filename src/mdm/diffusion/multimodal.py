"""MDM's diffusion over a multimodal sequence: a process per segment, the total loss (Eq. 18), guidance.

A batch is a list of :class:`Segment`: each is either a *target* (noised, to be
predicted) or a *condition* (clean, ``tau = 0``). Which segments are targets is
the task: caption clean + image noised is text->image, both noised is joint
generation, and so on (DESIGN.md §4) -- one model learns them all.

Each segment is corrupted, scored and sampled by the diffusion process of its
modality (:mod:`mdm.diffusion.registry`): Gaussian latents with score entropy over
clean candidates (the paper's literal reading, DESIGN.md §2.1), SEDD's absorbing
graph (§2.4), or, for pixel patches, the noise MSE (§2.3). One model may mix them,
for example absorbing text with Gaussian image latents. This module never asks
which process a segment has.

Classifier-free guidance: with probability ``cond_dropout`` a sample's class
becomes the null class and its condition segments are replaced by the process's
null input (pure noise at the last level, or fully masked): the unconditional
model is the joint model that has not yet seen the condition, so no extra "null"
tokens are needed. At sampling :meth:`MultimodalDiffusion.logits` wraps the network
into the guided denoiser ``l_u + w (l_c - l_u)``.

Self-conditioning (``diffusion.self_conditioning``, DESIGN.md §2.5): with probability
``self_conditioning_prob`` a training sample first goes through the network without
gradient, and each Gaussian-latent target's estimate ``x0_hat`` of that pass is the
second pass's self-condition; the others get zeros. Both calls of a guided step
read the same self-condition.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from mdm.config import MASKING_PROCESSES, PROCESS_NAMES, DiffusionConfig, VAEConfig
from mdm.diffusion.base import DiffusionProcess, clean_latent, self_conditioned
from mdm.diffusion.batch_random import BatchRandom
from mdm.diffusion.registry import make_process, process_name
from mdm.diffusion.schedule import check_schedules
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
    """The process of every modality, the training loss (Eq. 18) and the guided denoiser of an MDMNetwork."""

    def __init__(self, config: DiffusionConfig, vae_config: VAEConfig) -> None:
        check_schedules(config)
        self.config, self.vae_config = config, vae_config
        self.T = config.num_train_timesteps
        self._processes: dict[tuple[Modality, bool], DiffusionProcess] = {}

    def train_with(self, config: DiffusionConfig) -> None:
        """Train under ``config`` from now on: a curriculum stage's clean-frame share
        (``train.curriculum_clean_frames_prob``). The processes are rebuilt, as each holds the config it was made
        with; the run's own config object is left as it was (it is the one the checkpoint saves)."""
        check_schedules(config)
        self.config, self._processes = config, {}

    def process(self, network: MDMNetwork, modality: Modality) -> DiffusionProcess:
        """The process of ``modality`` for this network (pixel patches: the noise MSE)."""
        key = (Modality(modality), Modality(modality) in network.continuous)
        if key[1] and process_name(self.config, key[0]) != "gaussian":
            raise ValueError(f"{key[0].value} tokens of this network are pixel patches, which only the Gaussian "
                             f"noise MSE diffuses; diffusion.{key[0].value}_process is "
                             f"{process_name(self.config, key[0])}")
        # The network knows its processes only by their MASK latents; one process of each kind is registered
        # (config.choices), so the one it was trained with follows from whether it learned a MASK latent.
        trained_masked = key[0].value in network.mask_latents
        if not key[1] and trained_masked != (process_name(self.config, key[0]) in MASKING_PROCESSES):
            trained = next(p for p in PROCESS_NAMES if (p in MASKING_PROCESSES) == trained_masked)
            raise ValueError(f"this network was trained with diffusion.{key[0].value}_process = {trained}; it "
                             f"cannot be sampled or scored as {process_name(self.config, key[0])}")
        if key not in self._processes:
            self._processes[key] = make_process(self.config, *key)
        return self._processes[key]

    # ------------------------------------------------------------------ denoiser
    def logits(self, network: MDMNetwork, z: Tensor, tau: Tensor, segment_tau: Tensor, layout: SequenceLayout,
               class_labels: Tensor | None = None, guidance_scale: float = 1.0,
               uncond: tuple[Tensor, Tensor, Tensor, Tensor | None] | None = None,
               x0_prev: Tensor | None = None) -> list[Tensor]:
        """The network's output per segment, guided, plus each process's fixed term.

        Guidance (DESIGN.md §3) mixes the learned outputs ``l_u + w (l_c - l_u)``;
        ``uncond`` = (z, tau, segment_tau, class_labels) of the unconditional input;
        at ``w = 0`` only that input goes through the network. A process's fixed term
        (the Gaussian latents' analytic offset) is added after guidance: it is the same for both.
        ``x0_prev`` (b, n, e) is a self-conditioned network's previous estimate, read by both calls.
        """
        if guidance_scale != 1.0 and uncond is None:
            raise ValueError("guidance_scale != 1 needs the unconditional input")
        extra = () if x0_prev is None else (x0_prev,)  # a network without self-conditioning takes none
        if guidance_scale == 0.0:  # the unconditional model alone: one network call, not two
            out = network(*uncond[:3], layout, uncond[3], *extra)
        else:
            out = network(z, tau, segment_tau, layout, class_labels, *extra)
        if guidance_scale not in (0.0, 1.0):
            out_u = network(*uncond[:3], layout, uncond[3], *extra)
            out = [lu + guidance_scale * (lc - lu) for lc, lu in zip(out, out_u)]
        return [self.process(network, seg.spec.modality).adjust_output(network, lg, z[:, seg.content],
                                                                         tau[:, seg.content])
                for lg, seg in zip(out, layout.segments)]

    # ------------------------------------------------------------------ training
    def training_losses(self, network: MDMNetwork, segments: list[Segment], class_labels: Tensor | None = None,
                        generator: torch.Generator | BatchRandom | None = None) -> dict[str, Tensor]:
        """Eq. 18: ``L = L_rec_img + L_rec_txt + beta L_KL + lambda L_se``, each term returned (and 'loss').

        Continuous image segments add their noise MSE to the diffusion term
        (``lambda (L_se + L_mse)``), logged as ``mse``. Each term is a mean per sample
        (the process says over what), then over samples: a per-sample mean does not
        depend on how a global batch is split across processes.

        ``generator`` drives every random draw; a :class:`BatchRandom` makes the draws of
        each sample independent of how the global batch is split across processes.
        """
        if not any(s.target for s in segments):
            raise ValueError("training_losses: at least one segment must be a target")
        layout = network.make_layout([s.spec for s in segments])
        device = next(network.parameters()).device
        b = segments[0].states.shape[0]
        rng = generator if isinstance(generator, BatchRandom) else BatchRandom(generator, device)

        drop = rng.rand(b) < self.config.cond_dropout  # classifier-free guidance dropout, per sample
        if class_labels is not None:
            class_labels = torch.where(drop, torch.full_like(class_labels, network.backbone.null_class), class_labels)

        rec = {m: [] for m in Modality}
        kls, zs, taus, seg_taus, corrupted = [], [], [], [], []
        for seg in segments:
            process = self.process(network, seg.spec.modality)
            xi = rng.randn(*seg.states.shape[:2], network.vae.d_latent)
            vae_out = network.vae(seg.states, seg.spec.modality, xi=xi)
            rec[seg.spec.modality].append(vae_out.rec)
            kls.append(vae_out.kl)
            if seg.target:
                noised = process.corrupt(network, seg.spec, seg.states, vae_out, rng)
                z, tau, seg_tau = noised.z, noised.tau, noised.segment_tau
            else:
                mu = clean_latent(network, vae_out)
                noise = rng.randn(*mu.shape, dtype=mu.dtype) if process.draws_null_noise() else None
                z_null, tau_null = process.null_condition(network, mu, noise)
                z = torch.where(drop[:, None, None], z_null, mu)
                tau = torch.where(drop[:, None], tau_null, torch.zeros_like(tau_null))
                seg_tau, noised = tau[:, 0], None
            zs.append(z)
            taus.append(tau)
            seg_taus.append(seg_tau)
            corrupted.append(noised)

        z, tau, seg_tau = torch.cat(zs, dim=1), torch.cat(taus, dim=1), torch.stack(seg_taus, dim=1)
        x0_prev = None
        if self_conditioned(network):
            x0_prev = self._self_condition(network, segments, z, tau, seg_tau, layout, class_labels, rng)
        outputs = self.logits(network, z, tau, seg_tau, layout, class_labels, x0_prev=x0_prev)
        sums = {kind: (z.new_zeros(b), z.new_zeros(b)) for kind in ("se", "mse")}
        for seg, out, noised in zip(segments, outputs, corrupted):
            if seg.target:
                process = self.process(network, seg.spec.modality)
                process.observe(network, out, seg.states, noised)
                total, count = process.loss(out, seg.states, noised)
                sums[process.loss_name] = (sums[process.loss_name][0] + total, sums[process.loss_name][1] + count)
        se, mse = ((total / count.clamp(min=1)).mean() for total, count in sums.values())
        rec_img = torch.stack(rec[Modality.IMAGE]).mean() if rec[Modality.IMAGE] else z.new_zeros(())
        rec_txt = torch.stack(rec[Modality.TEXT]).mean() if rec[Modality.TEXT] else z.new_zeros(())
        kl = torch.stack(kls).mean()
        loss = rec_img + rec_txt + self.vae_config.beta * kl + self.config.se_weight * (se + mse)
        return {"loss": loss, "rec_img": rec_img.detach(), "rec_txt": rec_txt.detach(), "kl": kl.detach(),
                "se": se.detach(), "mse": mse.detach()}

    @torch.no_grad()
    def _self_condition(self, network: MDMNetwork, segments: list[Segment], z: Tensor, tau: Tensor,
                        seg_tau: Tensor, layout: SequenceLayout, class_labels: Tensor | None,
                        rng: BatchRandom) -> Tensor:
        """(b, n, e) the self-condition of a training batch: a first pass's x0_hat for the drawn samples, else 0."""
        x0_prev = torch.zeros_like(z)
        chosen = (rng.rand(z.shape[0]) < self.config.self_conditioning_prob).nonzero().flatten()
        if len(chosen) == 0:
            return x0_prev
        labels = None if class_labels is None else class_labels[chosen]
        first = self.logits(network, z[chosen], tau[chosen], seg_tau[chosen], layout, labels,
                            x0_prev=x0_prev[chosen])
        for seg, placed, out in zip(segments, layout.segments, first):
            x0 = self.process(network, seg.spec.modality).estimate_x0(network, out) if seg.target else None
            if x0 is not None:
                x0_prev[chosen, placed.content] = x0.to(x0_prev.dtype)
        return x0_prev
