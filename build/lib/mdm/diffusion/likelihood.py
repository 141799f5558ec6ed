"""How likely the model finds given target states: the diffusion loss of Eq. 18 as a score of candidates.

Each target segment is scored by its process's training loss (DESIGN.md §2): for the
Gaussian latents the time-weighted cross-entropy over clean candidates, for the
absorbing graph the weighted cross-entropy on masked positions (§2.4), for pixel
patches the squared error of the predicted noise. Its expectation over levels bounds
the negative log-likelihood of the targets given the conditions (exactly so for the
absorbing graph, whose weights are the ELBO's; the Gaussian latents train with uniform
weights, which ranks candidates the way the model was taught). Multiple-choice
evaluation (HellaSwag, PIQA, ARC, BoolQ) ranks the choices of a question by it, as
diffusion language models rank choices by their ELBO.

The expectation is estimated on a fixed, stratified grid of levels with noise (or
masks) drawn from a seeded generator, and every candidate of a question sees the
*same* levels and the same draws (common random numbers): the differences between
candidates then do not drown in Monte-Carlo noise.
"""

from __future__ import annotations

import torch
from torch import Tensor

from mdm.diffusion.multimodal import MultimodalDiffusion, Segment
from mdm.nn.network import MDMNetwork


@torch.no_grad()
def target_loss(network: MDMNetwork, diffusion: MultimodalDiffusion, segments: list[Segment],
                n_levels: int = 16, seed: int = 0) -> Tensor:
    """Per sample (b,): the mean over ``n_levels`` noise levels of the summed SE of the target segments.

    Conditions are clean (``tau = 0``, fed as ``mu`` as in training); each target segment
    is corrupted at one shared level per evaluation, levels ``(k + 1/2) / n_levels`` of the range.
    Every segment needs its states (the candidates being scored).
    """
    if n_levels < 1:
        raise ValueError(f"target_loss: n_levels must be >= 1, got {n_levels}")
    if any(s.states is None for s in segments):
        raise ValueError("target_loss: every segment needs its states (the candidates to score)")
    if not any(s.target for s in segments):
        raise ValueError("target_loss: at least one segment must be a target")
    network.eval()
    layout = network.make_layout([s.spec for s in segments])
    device = next(network.parameters()).device
    b = segments[0].states.shape[0]
    generator = torch.Generator(device).manual_seed(seed)
    # mu, not a sampled z0, for targets too: the score of a candidate should not depend on a VAE draw.
    latents = [network.vae.encode(s.states, s.spec.modality)[0] for s in segments]
    total = torch.zeros(b, dtype=torch.float64, device=device)
    for k in range(n_levels):
        level = (k + 0.5) / n_levels
        zs, taus, seg_taus, corrupted = [], [], [], []
        for seg, mu in zip(segments, latents):
            n = seg.spec.n_content
            if seg.target:
                # One draw per level, shared by every sample: candidates of a question differ
                # only in their states, never in their noise.
                noised = diffusion.process(network, seg.spec.modality).corrupt_at(network, seg.spec, seg.states, mu,
                                                                                   level, generator)
                zs.append(noised.z), taus.append(noised.tau), seg_taus.append(noised.segment_tau)
                corrupted.append(noised)
            else:
                zs.append(mu)
                taus.append(torch.zeros(b, n, device=device))
                seg_taus.append(torch.zeros(b, device=device))
                corrupted.append(None)
        outputs = diffusion.logits(network, torch.cat(zs, 1), torch.cat(taus, 1), torch.stack(seg_taus, 1), layout)
        for seg, out, noised in zip(segments, outputs, corrupted):
            if seg.target:
                total += diffusion.process(network, seg.spec.modality).likelihood(out, seg.states, noised).double()
    return (total / n_levels).float()
