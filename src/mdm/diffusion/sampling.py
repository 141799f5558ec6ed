"""Sampling: DPM-Solver++ or DDPM over the target segments, with multi-step selection and guidance.

DESIGN.md §3 and App. B / Theorem 3 of arXiv 2510.13253.

* The solvers are diffusers' ``DPMSolverMultistepScheduler`` (dpmsolver++, order 2)
  and ``DDPMScheduler`` (1000 ancestral steps, the reference), both fed the
  model's expected clean latent ``x0_hat = sum_y s(y) c_y`` (``prediction_type="sample"``).
  They are stateful: a fresh one per segment per call. Clean condition segments
  are never stepped.
* Multi-step selection (Theorem 3): ``se ~ 0`` at a position means ``s_theta`` is
  one-hot there, so its confidence ``max_y s(y)`` is the computable proxy. After
  each step the most confident uncommitted positions are committed to a state
  (argmax, or a sample for diversity), so that by the last step all are; a
  committed position is fed back *clean* at its own ``tau = 0``. Re-noising
  committed positions to the current level (the "replacement trick") measured far
  worse (DESIGN.md §3) and is not offered.
* Guidance: ``l = l_u + w (l_c - l_u)`` on the learned logits; the unconditional
  input has the class set to null and the condition segments replaced by noise at
  the last level, as in training.

At the end a position's state is the argmax of the last logits (or its committed state).

Video (DESIGN.md §5) can be drawn in ``frame_passes`` solver runs instead of one:
run ``j`` keeps frame ``j`` of its result, and the later runs start with the kept
frames committed (clean, at ``tau = 0``, exactly as multi-step selection feeds back
its commits) and generate the rest. A frame's digit and place are then settled
before its neighbours are drawn, and two kept frames fix the motion. The network
is the same; it needs only to predict frames from clean ones, which
``benchmarks/video_context_probe.py`` measures. ``frame_passes`` runs cost that
many times one. On moving digits it barely raised the share of consistent clips of
a model trained without clean frames (21% in one run, 24% frame by frame), and of
one trained with whole frames clean (``diffusion.clean_frames_prob``, the preset) from 32% to 38%
(benchmarks/results/video-cpu-2core).

``later_guidance_scale`` sets the guidance of the runs after the first. Run 0
settles frame 0, and with it the digit; the later runs draw the motion from the
kept frames. Guidance sharpens the condition but costs motion (measured in the
same results), so it can be spent in run 0 only.

A continuous segment (images as raw pixel patches, DESIGN.md §2.3) is stepped
with ``x0_hat`` from its predicted noise and never committed; at the end its
last ``x0_hat`` goes through the VAE decoder, and the sampler returns those
(b, n, f) patch values in place of states.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from enum import Enum

import torch
from diffusers import DDPMScheduler, DPMSolverMultistepScheduler
from torch import Tensor
from tqdm.auto import tqdm

from mdm.diffusion.objective import clean_latent_from_noise, expected_latent
from mdm.diffusion.process import MultimodalDiffusion, Segment
from mdm.nn.network import MDMNetwork


class Solver(str, Enum):
    DPM_SOLVER = "dpmsolver++"
    DDPM = "ddpm"


class CommitSchedule(str, Enum):
    OFF = "off"  # plain solver
    COSINE = "cosine"
    LINEAR = "linear"


@dataclass
class SamplerConfig:
    solver: Solver = Solver.DPM_SOLVER
    steps: int = 20
    selection: CommitSchedule = CommitSchedule.COSINE
    commit_sample: bool = False  # commit a sampled state instead of the argmax (diversity)
    guidance_scale: float = 1.0  # 1 = conditional model, 0 = unconditional
    temperature: float = 1.0  # for commit_sample
    frame_passes: int = 1  # video: solver runs, run j keeping frame j (1 = the whole clip at once)
    later_guidance_scale: float | None = None  # video: guidance of frame passes after the first (None: same)

    def __post_init__(self) -> None:
        self.solver, self.selection = Solver(self.solver), CommitSchedule(self.selection)
        if not 1 <= self.steps <= 1000:
            raise ValueError(f"steps must be in [1, 1000], got {self.steps}")
        if not isinstance(self.frame_passes, int) or self.frame_passes < 1:
            raise ValueError(f"frame_passes must be an int >= 1, got {self.frame_passes!r}")
        _check_guidance("guidance_scale", self.guidance_scale)
        if self.later_guidance_scale is not None:
            _check_guidance("later_guidance_scale", self.later_guidance_scale)
            if self.frame_passes == 1:
                raise ValueError("later_guidance_scale is the guidance of the frame passes after the first: it "
                                 "needs frame_passes > 1")
        if self.temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {self.temperature}")


def _check_guidance(name: str, value) -> None:
    if not (isinstance(value, (int, float)) and math.isfinite(value) and 0.0 <= value <= 50.0):
        raise ValueError(f"{name} must be in [0, 50], got {value!r}")


def committed_count(step: int, steps: int, n: int, schedule: CommitSchedule) -> int:
    """Positions committed after ``step`` (0-based) of ``steps``; all of them after the last step."""
    if schedule is CommitSchedule.OFF:
        return n if step == steps - 1 else 0
    frac = (step + 1) / steps
    if schedule is CommitSchedule.COSINE:
        frac = 1.0 - math.cos(frac * math.pi / 2)
    return n if step == steps - 1 else min(n, math.ceil(frac * n))


def _make_scheduler(diffusion: MultimodalDiffusion, modality, config: SamplerConfig):
    base = diffusion.schedules[modality].scheduler.config
    if config.solver is Solver.DDPM:
        s = DDPMScheduler.from_config(base, clip_sample=False, prediction_type="sample",
                                      timestep_spacing="trailing")
    else:
        s = DPMSolverMultistepScheduler.from_config(base, algorithm_type="dpmsolver++", solver_order=2,
                                                    prediction_type="sample", timestep_spacing="trailing",
                                                    lower_order_final=True)
    s.set_timesteps(config.steps)
    return s


@torch.no_grad()
def sample(network: MDMNetwork, diffusion: MultimodalDiffusion, segments: list[Segment],
           class_labels: Tensor | None = None, config: SamplerConfig | None = None, batch_size: int | None = None,
           generator: torch.Generator | None = None, progress: bool = False) -> list[Tensor]:
    """Generate every target segment; returns the states (b, n_k) of every segment (conditions unchanged), or
    for a continuous image segment its decoded patches (b, n_k, f)."""
    config = config or SamplerConfig()
    if not any(s.target for s in segments):
        raise ValueError("sample: at least one segment must be a target (states=None, target=True)")
    b = batch_size or next((s.states.shape[0] for s in segments if s.states is not None), None)
    if b is None:
        raise ValueError("sample: give batch_size when every segment is generated")
    videos = [k for k, s in enumerate(segments) if s.target and s.spec.is_video]
    if config.frame_passes == 1 or not videos:
        return _solve(network, diffusion, segments, class_labels, config, b, generator, progress, {})
    if any(segments[k].spec.modality in network.continuous for k in videos):
        raise ValueError("sample: frame_passes needs VQ-coded video; pixel-patch segments never train with clean "
                         "positions inside a target (use frame_passes=1)")
    passes = min(config.frame_passes, min(segments[k].spec.frames for k in videos))
    device = next(network.parameters()).device
    kept: dict[int, tuple[Tensor, Tensor]] = {}
    later = config
    if config.later_guidance_scale is not None and passes > 1:  # a one-frame clip has only run 0
        later = replace(config, guidance_scale=config.later_guidance_scale)
    for j in range(passes - 1):
        out = _solve(network, diffusion, segments, class_labels, config if j == 0 else later, b, generator,
                     progress, kept)
        for k in videos:  # keep frame j of this run
            frame = segments[k].spec.grid[0] * segments[k].spec.grid[1]
            mask = torch.zeros(b, segments[k].spec.n_content, dtype=torch.bool, device=device)
            mask[:, :(j + 1) * frame] = True
            kept[k] = (out[k], mask)
    return _solve(network, diffusion, segments, class_labels, later, b, generator, progress, kept)


def _solve(network: MDMNetwork, diffusion: MultimodalDiffusion, segments: list[Segment], class_labels: Tensor | None,
           config: SamplerConfig, b: int, generator: torch.Generator | None, progress: bool,
           kept: dict[int, tuple[Tensor, Tensor]]) -> list[Tensor]:
    """One solver run. ``kept[k] = (states, mask)``: positions of target ``k`` that start committed."""
    device = next(network.parameters()).device
    layout = network.make_layout([s.spec for s in segments])
    T = diffusion.T
    candidates = {s.spec.modality: network.vae.candidates(s.spec.modality) for s in segments
                  if s.spec.modality not in network.continuous}

    zs, taus, uncond_zs, uncond_taus, schedulers = [], [], [], [], []
    for seg in segments:
        n, e = seg.spec.n_content, network.config.vae.d_latent
        noise = torch.randn(b, n, e, generator=generator, device=device)
        if seg.target:
            zs.append(noise)
            taus.append(torch.full((b, n), float(T), device=device))
            schedulers.append(_make_scheduler(diffusion, seg.spec.modality, config))
        else:
            if seg.states.shape[0] != b:
                raise ValueError(f"sample: condition batch {seg.states.shape[0]} != {b}")
            zs.append(network.vae.encode(seg.states.to(device), seg.spec.modality)[0])
            taus.append(torch.zeros(b, n, device=device))
            schedulers.append(None)
        uncond_zs.append(noise if not seg.target else None)
        uncond_taus.append(torch.full((b, n), float(T), device=device))
    committed = [torch.zeros(b, s.spec.n_content, dtype=torch.bool, device=device) for s in segments]
    states = [s.states.to(device) if s.states is not None else torch.zeros(b, s.spec.n_content, dtype=torch.long,
                                                                              device=device) for s in segments]
    n_kept = [0] * len(segments)
    for k, (known, mask) in kept.items():  # start committed: clean, at tau = 0
        committed[k], states[k] = mask.clone(), torch.where(mask, known, states[k])
        zs[k] = torch.where(mask[..., None], candidates[segments[k].spec.modality][states[k]], zs[k])
        n_kept[k] = int(mask[0].sum())  # the same frames in every row
    null = None if class_labels is None else torch.full_like(class_labels, network.backbone.null_class)
    timesteps = next(s for s in schedulers if s is not None).timesteps

    for i, t in enumerate(tqdm(timesteps, desc="sampling", disable=not progress, leave=False)):
        t = int(t)
        for k, seg in enumerate(segments):
            if seg.target:
                taus[k] = torch.where(committed[k], 0.0, float(t + 1))
        seg_tau = torch.stack([tk[:, 0] if not s.target else torch.full((b,), float(t + 1), device=device)
                               for tk, s in zip(taus, segments)], dim=1)
        z, tau = torch.cat(zs, dim=1), torch.cat(taus, dim=1)
        uncond = None
        if config.guidance_scale != 1.0:
            uz = torch.cat([zk if u is None else u for zk, u in zip(zs, uncond_zs)], dim=1)
            ut = torch.cat([tk if s.target else ut for tk, ut, s in zip(taus, uncond_taus, segments)], dim=1)
            useg = torch.stack([seg_tau[:, k] if s.target else torch.full((b,), float(T), device=device)
                                for k, s in enumerate(segments)], dim=1)
            uncond = (uz, ut, useg, null)
        logits = diffusion.logits(network, z, tau, seg_tau, layout, class_labels, config.guidance_scale, uncond)
        last = i == len(timesteps) - 1
        for k, seg in enumerate(segments):
            if not seg.target:
                continue
            modality = seg.spec.modality
            if modality in network.continuous:  # no states: step on x0_hat from the predicted noise
                alpha_bar = diffusion.schedules[modality].alpha_bar(torch.full((b, seg.spec.n_content), t,
                                                                               device=device))
                x0_hat = clean_latent_from_noise(zs[k], logits[k].float(), alpha_bar)
                if last:
                    states[k] = network.vae.decode(x0_hat, modality)
                else:
                    zs[k] = schedulers[k].step(x0_hat, t, zs[k], generator=generator).prev_sample
                continue
            lg, c = logits[k].float(), candidates[modality]
            probs = torch.softmax(lg / (config.temperature if config.commit_sample else 1.0), dim=-1)
            choice = (torch.multinomial(probs.flatten(0, 1), 1, generator=generator).view(b, -1)
                      if config.commit_sample else lg.argmax(-1))
            # Commit the most confident uncommitted positions (Theorem 3).
            n_free = seg.spec.n_content - n_kept[k]  # the schedule runs over the positions not kept
            want = n_kept[k] + committed_count(i, len(timesteps), n_free, config.selection)
            new = want - committed[k].sum(1)  # (b,)
            confidence = probs.max(-1).values.masked_fill(committed[k], -1.0)
            rank = confidence.argsort(dim=1, descending=True).argsort(dim=1)
            newly = (rank < new[:, None]) & ~committed[k]
            states[k] = torch.where(newly, choice, states[k])
            committed[k] = committed[k] | newly
            if last:  # every position is committed by now
                continue
            x0_hat = expected_latent(lg, c)
            x0_hat = torch.where(committed[k][..., None], c[states[k]], x0_hat)
            z_next = schedulers[k].step(x0_hat, t, zs[k], generator=generator).prev_sample
            zs[k] = torch.where(committed[k][..., None], c[states[k]], z_next)
    return states
