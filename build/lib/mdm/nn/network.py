"""The MDM network: latents of every segment -> backbone -> logits over each modality's states.

A continuous modality (images as raw pixel patches, ``layout.image_tokens =
pixels``; DESIGN.md §2.3) has no states: its head predicts the noise ``eps`` of
each latent instead (``d_latent`` values a position), trained by MSE.

This is ``f_theta`` of Eq. 7 (arXiv 2510.13253) plus the unified VAE that defines
the latents it sees. It knows nothing of diffusion: it takes latents and noise
levels and returns logits; ``mdm.diffusion`` turns those into losses and samples.

Noise levels here are *network times* ``tau``: 0 for a clean position (a
condition, or a position committed by multi-step selection) and ``t + 1`` for a
position noised to scheduler timestep ``t``; so "clean" never collides with the
first noise level.

A modality whose states are diffused by masking (``diffusion.text_process`` or
``image_process = absorbing``, DESIGN.md §2.4) gets one learned MASK latent: the input
of a masked position. Only those modalities have one, so a checkpoint of the
Gaussian processes keeps its parameters.

With ``diffusion.self_conditioning`` the network also reads the previous estimate
``x0_hat`` of every position through ``self_cond_in``, a projection initialised at
zero (it starts as the network without it); with ``diffusion.time_warping`` it keeps a
(2, LEVEL_BINS) buffer per Gaussian-latent modality, the loss by noise level the warp
is fitted from (:mod:`mdm.diffusion.time_warp`), so that checkpoints and the EMA carry
it. Both exist only when switched on: other checkpoints keep their parameters.

Shape letters: ``b`` batch, ``n`` content positions (all segments), ``e`` d_latent,
``d`` d_model, ``v`` states of a modality.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import Tensor, nn

from mdm.config import BackboneConfig, LayoutConfig, VAEConfig
from mdm.nn.backbone import Backbone
from mdm.nn.layout import Modality, SequenceLayout
from mdm.nn.vae import UnifiedVAE

LEVEL_BINS = 100  # noise-level bins of the time warp's loss statistic


class MDMNetwork(nn.Module):
    """Unified VAE + latent-in projection + backbone + per-modality heads (logits over candidate states,
    or the predicted noise of a continuous modality).

    It takes only its own config sections: ``backbone`` (the denoiser), ``layout`` (whether images come as
    pixel patches, ``layout.image_tokens = pixels``) and ``vae`` (the latent width). ``vocab_sizes`` gives the
    states of each modality; for images on the continuous path it gives the values of one patch.
    ``masked_modalities`` names the modalities whose states are diffused by masking
    (``DiffusionConfig.masked_modalities()``): each gets a learned MASK latent. ``self_conditioning`` and
    ``warped_modalities`` (``DiffusionConfig.warped_modalities()``) add what those switches need.
    """

    def __init__(self, backbone: BackboneConfig, layout: LayoutConfig, vae: VAEConfig,
                 vocab_sizes: dict[Modality | str, int], masked_modalities: Iterable[Modality | str] = (),
                 self_conditioning: bool = False, warped_modalities: Iterable[Modality | str] = ()) -> None:
        super().__init__()
        self.layout_config, self.vae_config = layout, vae
        self.vocab_sizes = {Modality(m): int(v) for m, v in vocab_sizes.items()}
        self.continuous = frozenset({Modality.IMAGE} & set(self.vocab_sizes)
                                    if layout.continuous_images else ())
        d, e = backbone.d_model, vae.d_latent
        self.vae = UnifiedVAE(self.vocab_sizes, d_latent=e, d_hidden=vae.d_hidden,
                              continuous=self.continuous)
        self.latent_in = nn.Linear(e, d)
        self.modality_in = nn.Embedding(len(Modality), d)
        self.backbone = Backbone(backbone)
        self.heads = nn.ModuleDict({m.value: nn.Linear(d, e if m in self.continuous else v)
                                    for m, v in self.vocab_sizes.items()})
        self._modality_index = {m: i for i, m in enumerate(Modality)}
        with_states = [m for m in self.vocab_sizes if m not in self.continuous]  # what masking and warping serve
        masking = {Modality(m) for m in masked_modalities}
        self.mask_latents = nn.ParameterDict({m.value: nn.Parameter(torch.randn(e)) for m in with_states
                                              if m in masking})
        self.self_cond_in = None
        if self_conditioning:
            self.self_cond_in = nn.Linear(e, d)
            nn.init.zeros_(self.self_cond_in.weight)
            nn.init.zeros_(self.self_cond_in.bias)
        warping = {Modality(m) for m in warped_modalities}
        for m in with_states:
            if m in warping:
                self.register_buffer(f"level_stats_{m.value}", torch.zeros(2, LEVEL_BINS))

    def level_stats(self, modality: Modality) -> Tensor | None:
        """(2, LEVEL_BINS) loss by noise level of ``modality`` (mean, count), or None when it is not warped."""
        return getattr(self, f"level_stats_{Modality(modality).value}", None)

    def mask_latent(self, modality: Modality) -> Tensor:
        """(e,) the learned latent of the MASK state of ``modality``."""
        modality = Modality(modality)
        if modality.value not in self.mask_latents:
            raise ValueError(f"MDMNetwork: {modality.value} has no MASK state: its diffusion process is not "
                             f"absorbing (diffusion.{modality.value}_process)")
        return self.mask_latents[modality.value]

    def make_layout(self, segments: list, length: int | None = None) -> SequenceLayout:
        return self.backbone.make_layout(segments, length)

    def modality_ids(self, layout: SequenceLayout, device: torch.device) -> Tensor:
        """(n,) the modality index of every content position."""
        ids = [torch.full((seg.spec.n_content,), self._modality_index[seg.spec.modality], dtype=torch.long)
               for seg in layout.segments]
        return torch.cat(ids).to(device)

    def forward(self, z: Tensor, tau: Tensor, segment_tau: Tensor, layout: SequenceLayout,
                class_labels: Tensor | None = None, x0_prev: Tensor | None = None) -> list[Tensor]:
        """Logits over each segment's candidate states (a continuous segment: its predicted noise, (b, n_k, e)).

        Args:
            z: (b, n, e) latents of all segments, concatenated in layout order.
            tau: (b, n) network time of every content position (0 = clean).
            segment_tau: (b, n_segments) network time of every segment, for its TIME token.
            layout: the shared segment structure.
            class_labels: (b,) or None (null class).
            x0_prev: (b, n, e) the previous estimate of every position's clean latent, zeros where there is
                none (self-conditioning); ignored by a network built without it.
        Returns:
            One (b, n_k, v_k) tensor of logits per segment; (b, n_k, e) predicted noise for a continuous one.
        """
        e = self.vae_config.d_latent
        if z.dim() != 3 or z.shape[-1] != e:
            raise ValueError(f"MDMNetwork: z must be (batch, n_content, {e}), got {tuple(z.shape)}")
        for seg in layout.segments:
            if seg.spec.modality not in self.vocab_sizes:
                raise ValueError(f"MDMNetwork: the layout has a {seg.spec.modality.value} segment but the model "
                                 f"was built for {[m.value for m in self.vocab_sizes]}")
        x = self.latent_in(z) + self.modality_in(self.modality_ids(layout, z.device))
        if self.self_cond_in is not None and x0_prev is not None:
            x = x + self.self_cond_in(x0_prev)
        h = self.backbone(x, tau, segment_tau, layout, class_labels)
        return [self.heads[seg.spec.modality.value](h[:, seg.content]) for seg in layout.segments]
