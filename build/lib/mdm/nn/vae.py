"""The unified VAE: one encoder and one decoder for every modality (Sec 4.1, Eq. 15-17; DESIGN.md §1.2).

A modality is a sequence of discrete states (text token ids, VQ code ids) or,
for images on the continuous path (DESIGN.md §1.1, §2.3), of raw pixel patches.
A state ``y`` of modality ``g`` is embedded by a per-modality table (a patch by a
per-modality linear layer) plus a learned modality embedding, then one shared
encoder MLP gives ``(mu, log sigma^2)`` in ``d_latent``; ``z0 = mu + sigma * xi``.
One shared decoder MLP maps a latent back to hidden features, and a per-modality
output layer gives logits over that modality's states (Eq. 16's cross-entropy),
or the patch's values (Eq. 15's L2). KL to N(0, I), weighted by beta (Eq. 17).

Why ``mu`` is RMS-normalised: the diffusion schedule assumes unit-scale latents;
without it the encoder can win the loss by inflating the latent scale, and the
last noise level would never reach noise.

Why per position: the clean latents ``mu(e(y))`` of all states are the candidate
set of the score-entropy objective (DESIGN.md §2.1) -- one fixed vector per state.

Shape letters: ``b`` batch, ``n`` positions, ``e`` d_latent, ``v`` states of a modality.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mdm.nn.layout import Modality


@dataclass
class VAEOutput:
    mu: Tensor  # (b, n, e), RMS-normalised
    logvar: Tensor  # (b, n, e)
    z0: Tensor  # (b, n, e), mu + sigma * xi
    logits: Tensor  # (b, n, v), decoder logits of z0 (a continuous modality: its reconstructed values)
    rec: Tensor  # scalar, Eq. 16 cross-entropy (a continuous modality: Eq. 15's mean squared error)
    kl: Tensor  # scalar, Eq. 17 per position (sum over e, mean over positions)


def _mlp(d_in: int, d_hidden: int, d_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(d_in, d_hidden), nn.SiLU(), nn.Linear(d_hidden, d_hidden), nn.SiLU(),
                         nn.Linear(d_hidden, d_out))


def rms_normalize(x: Tensor, eps: float = 1e-6) -> Tensor:
    """``x / rms(x)`` over the last dimension: every latent has unit mean square."""
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps)


def gaussian_kl(mu: Tensor, logvar: Tensor) -> Tensor:
    """KL(N(mu, sigma^2) || N(0, I)) summed over the last dimension (Eq. 17)."""
    return 0.5 * (mu.pow(2) + logvar.exp() - 1.0 - logvar).sum(-1)


class UnifiedVAE(nn.Module):
    """One encoder/decoder pair shared by all modalities.

    Args:
        vocab_sizes: number of states per modality, e.g. ``{TEXT: 512, IMAGE: 256}``; for a
            continuous modality, the number of values in one of its tokens (a patch's pixels).
        d_latent: latent width (the diffusion runs here).
        d_hidden: width of the shared encoder and decoder MLPs.
        init_logvar: initial log sigma^2 (the encoder's bias); small noise at the start.
        continuous: the modalities whose tokens are real vectors, not state ids.
    """

    def __init__(self, vocab_sizes: dict[Modality, int], d_latent: int = 16, d_hidden: int = 128,
                 init_logvar: float = -4.0, continuous: frozenset[Modality] = frozenset()) -> None:
        super().__init__()
        if not vocab_sizes:
            raise ValueError("UnifiedVAE needs at least one modality")
        self.vocab_sizes = {Modality(m): int(v) for m, v in vocab_sizes.items()}
        self.continuous = frozenset(Modality(m) for m in continuous)
        if not self.continuous <= set(self.vocab_sizes):
            raise ValueError(f"UnifiedVAE: continuous modalities {sorted(m.value for m in self.continuous)} must be "
                             f"among {[m.value for m in self.vocab_sizes]}")
        self.d_latent = d_latent
        self.state_embed = nn.ModuleDict({
            m.value: nn.Linear(v, d_hidden) if m in self.continuous else nn.Embedding(v, d_hidden)
            for m, v in self.vocab_sizes.items()})
        self.modality_embed = nn.Embedding(len(Modality), d_hidden)
        self.encoder = _mlp(d_hidden, d_hidden, 2 * d_latent)
        self.decoder = _mlp(d_latent, d_hidden, d_hidden)
        self.decoder_out = nn.ModuleDict({m.value: nn.Linear(d_hidden, v) for m, v in self.vocab_sizes.items()})
        with torch.no_grad():
            self.encoder[-1].bias[d_latent:].fill_(init_logvar)
        self._modality_index = {m: i for i, m in enumerate(Modality)}

    def _check(self, states: Tensor, modality: Modality) -> None:
        if modality not in self.vocab_sizes:
            raise ValueError(f"UnifiedVAE has no modality {modality.value!r}; it has "
                             f"{[m.value for m in self.vocab_sizes]}")
        if modality in self.continuous:
            f = self.vocab_sizes[modality]
            if not states.is_floating_point() or states.dim() < 1 or states.shape[-1] != f:
                raise ValueError(f"UnifiedVAE: {modality.value} tokens are continuous: a float tensor (..., {f}), "
                                 f"got {states.dtype} of shape {tuple(states.shape)}")
            return
        if states.dtype != torch.long:
            raise TypeError(f"UnifiedVAE: states must be integer ids (torch.long), got {states.dtype}")
        v = self.vocab_sizes[modality]
        if states.numel() and (states.min() < 0 or states.max() >= v):
            raise ValueError(f"UnifiedVAE: {modality.value} states must be in [0, {v}), got "
                             f"[{int(states.min())}, {int(states.max())}]")

    def encode(self, states: Tensor, modality: Modality | str) -> tuple[Tensor, Tensor]:
        """(...,) state ids, or (..., f) patches of a continuous modality -> (mu, logvar), each
        (..., d_latent); mu RMS-normalised."""
        modality = Modality(modality)
        self._check(states, modality)
        h = self.state_embed[modality.value](states) + self.modality_embed.weight[self._modality_index[modality]]
        mu, logvar = self.encoder(h).chunk(2, dim=-1)
        return rms_normalize(mu), logvar.clamp(-12.0, 4.0)

    def decode(self, z: Tensor, modality: Modality | str) -> Tensor:
        """(..., d_latent) latents -> (..., v) logits over the modality's states (or its (..., f) values)."""
        modality = Modality(modality)
        return self.decoder_out[modality.value](self.decoder(z))

    def candidates(self, modality: Modality | str) -> Tensor:
        """(v, d_latent): the clean latent ``mu(e(y))`` of every state ``y`` -- the candidate set of Eq. 7."""
        modality = Modality(modality)
        if modality in self.continuous:
            raise ValueError(f"UnifiedVAE: {modality.value} is continuous; it has no candidate states")
        states = torch.arange(self.vocab_sizes[modality], device=self.modality_embed.weight.device)
        return self.encode(states, modality)[0]

    def forward(self, states: Tensor, modality: Modality | str, generator: torch.Generator | None = None,
                xi: Tensor | None = None) -> VAEOutput:
        """Encode, sample z0 (reparameterised, with ``xi`` if given), decode; reconstruction CE (Eq. 16) or, for a
        continuous modality, MSE (Eq. 15); KL (Eq. 17)."""
        modality = Modality(modality)
        mu, logvar = self.encode(states, modality)
        if xi is None:
            xi = torch.randn(mu.shape, generator=generator, device=mu.device, dtype=mu.dtype)
        z0 = mu + torch.exp(0.5 * logvar) * xi
        logits = self.decode(z0, modality)
        if modality in self.continuous:
            rec = F.mse_loss(logits.float(), states.float())
        else:
            rec = F.cross_entropy(logits.flatten(0, -2).float(), states.flatten())
        kl = gaussian_kl(mu, logvar).mean()
        return VAEOutput(mu, logvar, z0, logits, rec, kl)
