"""Sampling: every target segment stepped by its process, with multi-step selection, guidance and frame passes.

DESIGN.md §3 and App. B / Theorem 3 of arXiv 2510.13253.

At each of ``steps`` steps every target segment gives its network input (its
:class:`~mdm.diffusion.base.SegmentSampler`), the network runs once on the whole
sequence (twice with guidance), and each segment consumes its output: the Gaussian
processes step DPM-Solver++ or DDPM on ``x0_hat`` and commit the most confident
positions (Theorem 3); the absorbing process unmasks positions. Clean condition
segments are never stepped.

Guidance: ``l = l_u + w (l_c - l_u)`` on the network's outputs; the unconditional
input has the class set to null and each condition segment replaced by its
process's null input (noise at the last level, or fully masked), as in training.

A self-conditioned network (``diffusion.self_conditioning``) reads each target's x0_hat
of the previous step (zeros at the first, and for conditions), in both guided calls.

Video (DESIGN.md §5) can be drawn in ``frame_passes`` runs instead of one: run
``j`` keeps frame ``j`` of its result, and the later runs start with the kept frames
committed (clean, at ``tau = 0``, as multi-step selection feeds back its commits)
and generate the rest. A frame's digit and place are then settled before its
neighbours are drawn, and two kept frames fix the motion. ``frame_passes`` runs cost
that many times one. ``later_guidance_scale`` sets the guidance of the runs after the
first: run 0 settles frame 0, and with it the digit; guidance sharpens the condition
but costs motion, so it can be spent in run 0 only.

A continuous segment (images as raw pixel patches, DESIGN.md §2.3) returns its
decoded (b, n, f) patch values in place of states.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

import torch
from torch import Tensor
from tqdm.auto import tqdm

from mdm.diffusion.base import self_conditioned
from mdm.diffusion.multimodal import MultimodalDiffusion, Segment
from mdm.diffusion.sampler_config import CommitSchedule, SamplerConfig, Solver, committed_count
from mdm.nn.network import MDMNetwork

__all__ = ["CommitSchedule", "SamplerConfig", "Solver", "committed_count", "sample"]


@torch.no_grad()
def sample(network: MDMNetwork, diffusion: MultimodalDiffusion, segments: list[Segment],
           class_labels: Tensor | None = None, config: SamplerConfig | None = None, batch_size: int | None = None,
           generator: torch.Generator | None = None, progress: bool = False,
           on_step: Callable[[int, int], None] | None = None) -> list[Tensor]:
    """Generate every target segment; returns the states (b, n_k) of every segment (conditions unchanged), or
    for a continuous image segment its decoded patches (b, n_k, f).

    ``on_step(done, total)`` is called after every solver step of a run (a frame pass counts from 1 again), so
    that a caller without a terminal (a web page) can show how far sampling has come."""
    config = config or SamplerConfig()
    if not any(s.target for s in segments):
        raise ValueError("sample: at least one segment must be a target (states=None, target=True)")
    b = batch_size or next((s.states.shape[0] for s in segments if s.states is not None), None)
    if b is None:
        raise ValueError("sample: give batch_size when every segment is generated")
    videos = [k for k, s in enumerate(segments) if s.target and s.spec.is_video]
    if config.frame_passes == 1 or not videos:
        return _solve(network, diffusion, segments, class_labels, config, b, generator, progress, {}, on_step)
    for k in videos:
        process = diffusion.process(network, segments[k].spec.modality)
        if not process.keeps_positions:
            raise ValueError(f"sample: frame_passes needs VQ-coded video: the {process.name} process of the "
                             f"{segments[k].spec.modality.value} segment keeps no given positions (pixel-patch "
                             f"segments never train with clean positions inside a target; use frame_passes=1)")
    passes = min(config.frame_passes, min(segments[k].spec.frames for k in videos))
    device = next(network.parameters()).device
    kept: dict[int, tuple[Tensor, Tensor]] = {}
    later = config
    if config.later_guidance_scale is not None and passes > 1:  # a one-frame clip has only run 0
        later = replace(config, guidance_scale=config.later_guidance_scale)
    for j in range(passes - 1):
        out = _solve(network, diffusion, segments, class_labels, config if j == 0 else later, b, generator,
                     progress, kept, on_step)
        for k in videos:  # keep frame j of this run
            frame = segments[k].spec.grid[0] * segments[k].spec.grid[1]
            mask = torch.zeros(b, segments[k].spec.n_content, dtype=torch.bool, device=device)
            mask[:, :(j + 1) * frame] = True
            kept[k] = (out[k], mask)
    return _solve(network, diffusion, segments, class_labels, later, b, generator, progress, kept, on_step)


def _solve(network: MDMNetwork, diffusion: MultimodalDiffusion, segments: list[Segment], class_labels: Tensor | None,
           config: SamplerConfig, b: int, generator: torch.Generator | None, progress: bool,
           kept: dict[int, tuple[Tensor, Tensor]], on_step: Callable[[int, int], None] | None = None) -> list[Tensor]:
    """One run. ``kept[k] = (states, mask)``: positions of target ``k`` that start committed."""
    device = next(network.parameters()).device
    layout = network.make_layout([s.spec for s in segments])
    samplers, conditions, nulls = {}, {}, {}
    for k, seg in enumerate(segments):
        process = diffusion.process(network, seg.spec.modality)
        if seg.target:
            samplers[k] = process.start(network, seg.spec, b, config, generator, kept.get(k))
            continue
        if seg.states.shape[0] != b:
            raise ValueError(f"sample: condition batch {seg.states.shape[0]} != {b}")
        mu = network.vae.encode(seg.states.to(device), seg.spec.modality)[0]
        noise = (torch.randn(mu.shape, generator=generator, device=device) if process.draws_null_noise()
                 else None)
        conditions[k] = mu
        nulls[k] = process.null_condition(network, mu, noise)
    n_steps = {s.n_steps for s in samplers.values()}
    if len(n_steps) != 1:
        raise ValueError(f"sample: the target segments' processes disagree on the step count: {sorted(n_steps)}")
    null = None if class_labels is None else torch.full_like(class_labels, network.backbone.null_class)

    total = n_steps.pop()
    for i in tqdm(range(total), desc="sampling", disable=not progress, leave=False):
        inputs = {k: s.inputs(i) for k, s in samplers.items()}
        zs, taus, seg_taus = [], [], []
        uzs, utaus, useg_taus = [], [], []
        for k, seg in enumerate(segments):
            n = seg.spec.n_content
            if seg.target:
                x = inputs[k]
                zs.append(x.z), taus.append(x.tau), seg_taus.append(x.segment_tau)
                uzs.append(x.z), utaus.append(x.tau), useg_taus.append(x.segment_tau)
            else:
                zs.append(conditions[k]), taus.append(torch.zeros(b, n, device=device))
                seg_taus.append(torch.zeros(b, device=device))
                uzs.append(nulls[k][0]), utaus.append(nulls[k][1]), useg_taus.append(nulls[k][1][:, 0])
        extra = {}
        if self_conditioned(network):  # each target's previous x0_hat; zeros for conditions and others
            extra["x0_prev"] = torch.cat([inputs[k].x0_prev if k in inputs and inputs[k].x0_prev is not None
                                 else zs[k].new_zeros(zs[k].shape) for k in range(len(segments))], dim=1)
        uncond = None
        if config.guidance_scale != 1.0:
            uncond = (torch.cat(uzs, dim=1), torch.cat(utaus, dim=1), torch.stack(useg_taus, dim=1), null)
        outputs = diffusion.logits(network, torch.cat(zs, dim=1), torch.cat(taus, dim=1), torch.stack(seg_taus, dim=1),
                                   layout, class_labels, config.guidance_scale, uncond, **extra)
        for k, s in samplers.items():
            s.step(i, outputs[k], generator)
        if on_step is not None:
            on_step(i + 1, total)
    return [samplers[k].result() if k in samplers else seg.states.to(device) for k, seg in enumerate(segments)]
