"""How likely the model finds given target states: the diffusion loss of Eq. 18 as a score of candidates.

The score-entropy loss with the one-hot data target is a time-weighted
cross-entropy (DESIGN.md §2.1). With the ELBO's weights ``w_t`` its expectation over
noise levels bounds the negative log-likelihood of the targets given the
conditions; the model is trained, and scored here, with uniform ``w_t`` (the
training objective), which is not an exact bound but ranks candidates the way the
model was taught: a lower value means the model finds the target more likely.
Multiple-choice evaluation (HellaSwag, PIQA, ARC, BoolQ) ranks the choices of a
question by it, as diffusion language models rank choices by their ELBO.

The expectation is estimated on a fixed, stratified grid of noise levels with noise
drawn from a seeded generator, and every candidate of a question sees the *same*
levels and the same noise (common random numbers): the differences between
candidates then do not drown in Monte-Carlo noise.

A continuous target (pixel patches, DESIGN.md §2.3) is scored by its training loss too:
the squared error of the predicted noise, summed over positions.
"""

from __future__ import annotations

import torch
from torch import Tensor

from mdm.diffusion.objective import noise_mse, score_entropy_onehot
from mdm.diffusion.process import MultimodalDiffusion, Segment
from mdm.nn.network import MDMNetwork


@torch.no_grad()
def target_loss(network: MDMNetwork, diffusion: MultimodalDiffusion, segments: list[Segment],
                n_levels: int = 16, seed: int = 0) -> Tensor:
    """Per sample (b,): the mean over ``n_levels`` noise levels of the summed SE of the target segments.

    Conditions are clean (``tau = 0``, fed as ``mu`` as in training); each target segment
    is noised at one shared level per evaluation, levels ``(k + 1/2) T / n_levels``.
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
    b, T = segments[0].states.shape[0], diffusion.T
    generator = torch.Generator(device).manual_seed(seed)
    # mu, not a sampled z0, for targets too: the score of a candidate should not depend on a VAE draw.
    latents = [network.vae.encode(s.states, s.spec.modality)[0] for s in segments]
    total = torch.zeros(b, dtype=torch.float64, device=device)
    for k in range(n_levels):
        t_level = int((k + 0.5) * T / n_levels)
        zs, taus, seg_taus, noises = [], [], [], []
        for seg, mu in zip(segments, latents):
            n = seg.spec.n_content
            if seg.target:
                # One noise draw per level, shared by every sample: candidates of a question differ
                # only in their states, never in their noise.
                noise = torch.randn(mu.shape[1:], generator=generator, device=device, dtype=mu.dtype).expand_as(mu)
                t = torch.full((b, n), t_level, device=device)
                zs.append(diffusion.schedules[seg.spec.modality].add_noise(mu, noise, t))
                taus.append(torch.full((b, n), float(t_level + 1), device=device))
                seg_taus.append(torch.full((b,), float(t_level + 1), device=device))
                noises.append(noise)
            else:
                zs.append(mu)
                taus.append(torch.zeros(b, n, device=device))
                seg_taus.append(torch.zeros(b, device=device))
                noises.append(None)
        logits = diffusion.logits(network, torch.cat(zs, 1), torch.cat(taus, 1), torch.stack(seg_taus, 1), layout)
        for seg, out, noise in zip(segments, logits, noises):
            if seg.target:
                per_position = noise_mse(out, noise) if seg.continuous else score_entropy_onehot(out, seg.states)
                total += per_position.sum(dim=1).double()
    return (total / n_levels).float()
