"""The MDM denoising backbone (Sec 4.2 of arXiv 2510.13253; DESIGN.md §1.3, §1.5-1.7).

Content embeddings of every segment -> the sequence layout (class, begin/end,
time and pad tokens) -> M blocks, each reading the sequence in its scan-switch
order and modulated per position by its own noise level -> a final modulated
norm -> hidden states of the content positions. The network knows nothing of
diffusion: it sees embeddings and noise levels, and returns features that the
model's heads turn into predictions.

The class enters as the CLS token (Fig. 2d). With ``class_modulation`` it also
enters every position's modulation, as DiT's adaLN conditions on ``t + y`` and
DiM (which keeps DiT's conditioning) does: a single token at one end of a long
sequence -- a 128-token clip -- reaches the far positions only through the
scans' decaying state, and the backward scan of a bidirectional block reads it
last. The modulation is computed once per distinct (class, noise level) pair.

With ``text_modulation`` the clean text of a sample (a caption or question given as
the condition: its positions at network time 0) enters the modulation the same way,
as its mean embedding (or, with ``text_pooling = attention``, an attention pool
whose zero query starts as the mean) through a zero-initialised projection -- the pooled text
vector that SD3/PixArt-style DiTs add to ``t``. A clip drawn from a caption otherwise
learns the caption only through tokens at one end of the sequence, which the training
clips with whole frames clean (``diffusion.clean_frames_prob``) rarely need. A dropped
caption (guidance) is noised, so it pools to nothing: the null condition. The
modulation is then computed once per distinct (sample, noise level) pair.

Shape letters: ``b`` batch, ``l`` layout length, ``n`` content positions, ``d`` d_model,
``k`` modulation vectors per block, ``u`` distinct noise levels in a batch.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from mdm.config import BackboneConfig, BackboneKind
from mdm.nn.adaln_block import AdaLNBlock
from mdm.nn.bimamba2 import BiMambaBlock
from mdm.nn.embeddings import (AdaLNSingle, TimestepEmbedder, grid_position_embedding, modulate, per_position,
                               sincos_position_embedding)
from mdm.nn.layout import N_SPECIAL, Modality, SequenceLayout
from mdm.nn.mamba2 import MambaBlock
from mdm.nn.scan import ScanSwitch, block_patterns, permute_positions
from mdm.nn.transformer import TransformerBlock


def build_block(config: BackboneConfig) -> AdaLNBlock:
    """One block of ``config.kind``: a mixer (or attention and an MLP) inside the shared residual adaLN wrapper."""
    ssm = {"d_state": config.d_state, "d_conv": config.d_conv, "expand": config.expand, "head_dim": config.head_dim,
           "n_groups": config.n_groups, "chunk_size": config.chunk_size, "discretization": config.discretization,
           "dt_min": config.dt_init[0], "dt_max": config.dt_init[1], "A_init_range": tuple(config.a_init),
           "cpu_kernels": config.cpu_kernels}
    if config.kind is BackboneKind.MAMBA2:
        return MambaBlock(config.d_model, segment_len=config.segment_len, **ssm)
    if config.kind is BackboneKind.BIMAMBA2:
        return BiMambaBlock(config.d_model, **ssm)
    return TransformerBlock(config.d_model, head_dim=config.head_dim, mlp_ratio=config.mlp_ratio)


class Backbone(nn.Module):
    """M blocks over the MDM sequence: the Mamba-2 stack of the paper, DiM's bidirectional stack, or the
    Transformer baseline."""

    def __init__(self, config: BackboneConfig) -> None:
        super().__init__()
        self.config = config
        d = config.d_model
        self.class_embed = nn.Embedding(config.n_classes + 1, d)  # row n_classes is the null class
        # added to the time embedding of the modulation; zero at init, so it starts as the time-only network
        self.class_modulation = nn.Embedding(config.n_classes + 1, d) if config.class_modulation else None
        if self.class_modulation is not None:
            nn.init.zeros_(self.class_modulation.weight)
        # the mean of the clean text positions, added to the time embedding; zero at init, like class_modulation
        self.text_modulation = nn.Linear(d, d, bias=False) if config.text_modulation else None
        if self.text_modulation is not None:
            nn.init.zeros_(self.text_modulation.weight)
        # text_pooling = attention: one query per head of head_dim channels; zero, so it starts as the mean
        self.text_query = (nn.Parameter(torch.zeros(d // config.head_dim, config.head_dim))
                           if config.text_pooling == "attention" else None)  # the config ties it to text_modulation
        self.special_embed = nn.Embedding(N_SPECIAL, d)
        self.time_embed = TimestepEmbedder(d)
        self.blocks = nn.ModuleList(build_block(config) for _ in range(config.n_layers))
        self.adaln = AdaLNSingle(d, self.blocks[0].n_modulation)
        n_skips = config.n_layers // 2 if config.long_skips else 0
        self.skip_proj = nn.ModuleList(nn.Linear(2 * d, d) for _ in range(n_skips))
        self.norm_out = nn.RMSNorm(d, elementwise_affine=False, eps=1e-6)
        self.adaln_out = AdaLNSingle(d, 2)
        self.patterns = (block_patterns(config.scan_patterns, config.n_layers, mirror=config.long_skips)
                         if config.kind.scans else None)
        self._switches: dict[tuple, ScanSwitch] = {}

    @property
    def null_class(self) -> int:
        return self.config.n_classes

    def scan_switch(self, layout: SequenceLayout, device: torch.device) -> ScanSwitch | None:
        """The per-block orders of ``layout`` (cached); None for attention, which needs no order."""
        if self.patterns is None:
            return None
        key = (layout.key, device)
        if key not in self._switches:
            self._switches[key] = ScanSwitch(layout, self.patterns).to(device)
        return self._switches[key]

    def forward(self, content: Tensor, content_t: Tensor, segment_t: Tensor, layout: SequenceLayout,
                class_labels: Tensor | None = None) -> Tensor:
        """Hidden states of the content positions.

        Args:
            content: (b, n, d) embeddings of every segment's content, segments concatenated in order.
            content_t: (b, n) noise level (scheduler timestep) of each content position.
            segment_t: (b, n_segments) noise level of each segment, for its TIME token.
            layout: the segment structure shared by the batch.
            class_labels: (b,) ints in [0, n_classes], ``n_classes`` = null; ``-1`` (the collate's
                NO_LABEL, a sample without a class) is also the null class; None = null for all.
        Returns:
            (b, n, d).
        """
        self._check(content, content_t, segment_t, layout, class_labels)
        b, device = content.shape[0], content.device
        dtype = content.dtype

        # 1. Lay out the sequence in canonical order (Fig. 2 d, e).
        if class_labels is None:
            class_labels = torch.full((b,), self.null_class, dtype=torch.long, device=device)
        class_labels = torch.where(class_labels < 0, self.null_class, class_labels)
        x = content.new_empty(b, layout.length, content.shape[-1])
        x[:, layout.content_positions.to(device)] = content
        x[:, layout.special_positions.to(device)] = self.special_embed(layout.special_ids.to(device)).to(dtype)
        x[:, layout.cls_position] = self.class_embed(class_labels).to(dtype)
        # Every level, TIME tokens' included, is embedded once (a TIME token carries its segment's level).
        t_pos = layout.position_times(content_t, segment_t)  # (b, l)
        levels, level_of = torch.unique(t_pos, return_inverse=True)  # (u,), (b, l)
        t_emb = self.time_embed(levels).to(dtype)  # (u, d)
        time_positions = layout.time_positions.to(device)
        x[:, time_positions] = per_position(t_emb, level_of[:, time_positions])
        if self.config.pos_embed:
            x = x + sincos_position_embedding(layout.length, x.shape[-1], device).to(dtype)
        if self.config.grid_pos_embed:
            x = x + grid_position_embedding(layout.grid_coords.to(device), x.shape[-1]).to(dtype)

        # 2. Per-position modulation, computed once per distinct noise level (or (class, level) pair, or
        #    (sample, level) pair when the text modulates).
        cond_emb, cond_of = t_emb, level_of
        if self.text_modulation is not None:
            sample = torch.arange(b, device=device)[:, None] * len(levels) + level_of  # (b, l): (sample, level)
            pairs, cond_of = torch.unique(sample, return_inverse=True)
            owner = pairs // len(levels)
            cond_emb = t_emb[pairs % len(levels)] + self.text_modulation(self.pooled_text(content, content_t,
                                                                                          layout))[owner]
            if self.class_modulation is not None:
                cond_emb = cond_emb + self.class_modulation(class_labels[owner]).to(dtype)
        elif self.class_modulation is not None:
            pair = class_labels[:, None] * len(levels) + level_of  # (b, l): one id per (class, level)
            pairs, cond_of = torch.unique(pair, return_inverse=True)
            cond_emb = t_emb[pairs % len(levels)] + self.class_modulation(pairs // len(levels)).to(dtype)
        modulation = self.adaln(cond_emb)  # (u, k, d)

        # 3. The blocks, each in its scan-switch order (one gather between blocks).
        switch = self.scan_switch(layout, device)
        order = None  # None = canonical
        skips: list[Tensor] = []
        n_skips, n_layers = len(self.skip_proj), len(self.blocks)
        for i, block in enumerate(self.blocks):
            if switch is not None:
                step = switch.transitions[i]
                if step is not None:
                    x = permute_positions(x, step, switch.transition_inverses[i])
                order = switch.orders[i]
            if i >= n_layers - n_skips:
                x = self.skip_proj[n_layers - 1 - i](torch.cat([x, skips.pop()], dim=-1))
            levels_here = cond_of if order is None else cond_of[:, order]
            x = block(x, modulation, levels_here)
            if i < n_skips:
                skips.append(x)
        if switch is not None and switch.to_canonical is not None:
            x = permute_positions(x, switch.to_canonical, switch.orders[-1])

        # 4. Final modulated norm, content positions only.
        shift, scale = per_position(self.adaln_out(cond_emb), cond_of).unbind(-2)
        x = modulate(self.norm_out(x), shift, scale)
        return x[:, layout.content_positions.to(device)]

    def pooled_text(self, content: Tensor, content_t: Tensor, layout: SequenceLayout) -> Tensor:
        """(b, d) each sample's clean text pooled for ``text_modulation``: the mean, or (``text_pooling =
        attention``) per head a softmax over the clean text positions of ``content . query / sqrt(head_dim)``.

        Why attention: a caption's condition sits in a few of its positions (a digit word is 1-5 of 32, the rest
        shared words and pads), so the mean shrinks the difference between two conditions by that share and the
        projection learns it that much more slowly than the class's own embedding (measured on moving digits).
        """
        if self.text_query is None:
            return self.clean_text_mean(content, content_t, layout)
        clean = self.clean_text_mask(content_t, layout)  # (b, n)
        b, n, d = content.shape
        heads = content.view(b, n, *self.text_query.shape)  # (b, n, h, c)
        scores = torch.einsum("bnhc,hc->bnh", heads, self.text_query.to(content.dtype)) / self.config.head_dim ** 0.5
        mask = clean[..., None]  # a finite fill: a sample without clean text softmaxes to a finite row, zeroed here
        weights = scores.masked_fill(~mask, torch.finfo(scores.dtype).min).softmax(1) * mask
        return torch.einsum("bnh,bnhc->bhc", weights, heads).reshape(b, d)

    @staticmethod
    def clean_text_mask(content_t: Tensor, layout: SequenceLayout) -> Tensor:
        """(b, n) the clean text positions (network time 0) of each sample."""
        is_text = torch.zeros(layout.n_content, dtype=torch.bool, device=content_t.device)
        for seg in layout.segments:
            if seg.spec.modality is Modality.TEXT:
                is_text[seg.content] = True
        return is_text & (content_t == 0)

    @staticmethod
    def clean_text_mean(content: Tensor, content_t: Tensor, layout: SequenceLayout) -> Tensor:
        """(b, d) the mean embedding of each sample's clean text positions (network time 0); zeros where a
        sample has none (no text segment, or its text is noised or dropped)."""
        clean = Backbone.clean_text_mask(content_t, layout).to(content.dtype)  # (b, n)
        return torch.einsum("bn,bnd->bd", clean, content) / clean.sum(1, keepdim=True).clamp(min=1)

    def _check(self, content: Tensor, content_t: Tensor, segment_t: Tensor, layout: SequenceLayout,
               class_labels: Tensor | None) -> None:
        d = self.config.d_model
        if content.dim() != 3 or content.shape[1:] != (layout.n_content, d):
            raise ValueError(f"Backbone: content must be (batch, {layout.n_content}, {d}) for {layout}, "
                             f"got {tuple(content.shape)}")
        if not content.is_floating_point():
            raise TypeError(f"Backbone: content must be floating point, got {content.dtype}")
        b = content.shape[0]
        if content_t.shape != (b, layout.n_content):
            raise ValueError(f"Backbone: content_t must be (batch, n_content) = {(b, layout.n_content)}, "
                             f"got {tuple(content_t.shape)}")
        if segment_t.shape != (b, layout.n_segments):
            raise ValueError(f"Backbone: segment_t must be (batch, n_segments) = {(b, layout.n_segments)}, "
                             f"got {tuple(segment_t.shape)}")
        if layout.length > self.config.max_seq_len:
            raise ValueError(f"Backbone: the sequence has {layout.length} positions but backbone.max_seq_len is "
                             f"{self.config.max_seq_len}; raise max_seq_len or shorten the segments")
        if layout.row_pad != self.config.row_pad:
            raise ValueError(f"Backbone: layout has row_pad={layout.row_pad} but backbone.row_pad is "
                             f"{self.config.row_pad}")
        if class_labels is not None:
            if class_labels.shape != (b,) or class_labels.dtype != torch.long:
                raise ValueError(f"Backbone: class_labels must be a (batch,) = ({b},) long tensor, got "
                                 f"{tuple(class_labels.shape)} {class_labels.dtype}")
            if len(class_labels) and (class_labels.min() < -1 or class_labels.max() > self.null_class):
                raise ValueError(f"Backbone: class labels must be in [0, {self.null_class}] "
                                 f"({self.null_class} or -1 = null class), got [{int(class_labels.min())}, "
                                 f"{int(class_labels.max())}]")

    def make_layout(self, segments: list, length: int | None = None) -> SequenceLayout:
        """A layout for this backbone (its row pads)."""
        return SequenceLayout(segments, length=length, row_pad=self.config.row_pad)
