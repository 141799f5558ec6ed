"""Scan switches (Sec 3.2, 4.2.1 and Fig. 2 f, g of arXiv 2510.13253; DESIGN.md §1.6).

A causal scan sees only what comes before a position, so each block reads the
sequence in its own order: a permutation applied before the block and undone
after it. The patterns follow DiM (Teng et al., arXiv 2405.14224):

* image: ``1`` rows left->right, top->bottom; ``2`` its exact reverse;
  ``3`` columns top->bottom, left->right; ``4`` its exact reverse (raster sweeps, no zigzag);
* text: ``1`` forward; ``2`` reverse;
* video (a clip of T frames, DiM's spatio-temporal scans, DESIGN.md §5): ``1``
  frame-major (frame after frame, rows inside each frame); ``2`` its exact
  reverse; ``3`` space-major (position after position in row raster, the T
  frames of that position inside); ``4`` its exact reverse. Frame-major keeps a
  frame's neighbours close in the scan; space-major puts a position's past and
  future next to it, which is what keeps motion consistent.

A pattern set is written ``IMAGE/TEXT``: ``1234/12`` is the paper, ``12/1`` its
ablation (Table 3), ``1/1`` a single forward scan. Block ``k`` uses image pattern
``image[k % len(image)]`` and text pattern ``text[k % len(text)]``.

A block whose image pattern is a reversal (2 or 4) reads the whole sequence
backwards: the order of segments and of the CLS/begin/time/end/pad tokens is
reversed too. Without this, a causal scan could never condition an image on a
caption placed after it; with it, an image sees the text in some blocks and the
text sees the image in others. Text content follows its own pattern inside.

With long skips, the cycle is mirrored in the second half of the blocks (as DiM
does) so that each skip joins two tensors read in the same order.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from mdm.config import parse_pattern_set
from mdm.nn.layout import Modality, SequenceLayout

# the pattern numbers a config may name (mdm.config.IMAGE_SCAN_PATTERNS, TEXT_SCAN_PATTERNS; a test ties them)
IMAGE_PATTERNS = {1: ("row", False), 2: ("row", True), 3: ("col", False), 4: ("col", True)}
TEXT_PATTERNS = {1: False, 2: True}  # reversed?


@dataclass(frozen=True)
class ScanPattern:
    """How one block reads the sequence."""

    image_order: str  # "row" | "col"
    reverse: bool  # the whole sequence (and image raster) backwards
    text_reverse: bool  # text content backwards

    @property
    def name(self) -> str:
        img = {v: k for k, v in IMAGE_PATTERNS.items()}[(self.image_order, self.reverse)]
        return f"{img}/{2 if self.text_reverse else 1}"


def block_patterns(spec: str, n_layers: int, mirror: bool = False) -> list[ScanPattern]:
    """The pattern of every block; ``mirror`` makes block ``n_layers-1-k`` use block ``k``'s pattern."""
    image, text = parse_pattern_set(spec)
    out = []
    for k in range(n_layers):
        j = min(k, n_layers - 1 - k) if mirror else k
        order, reverse = IMAGE_PATTERNS[image[j % len(image)]]
        out.append(ScanPattern(order, reverse, TEXT_PATTERNS[text[j % len(text)]]))
    return out


def scan_order(layout: SequenceLayout, pattern: ScanPattern) -> Tensor:
    """The permutation (L,) of canonical positions that ``pattern`` reads: ``x_scanned = x[:, order]``."""
    groups: list[Tensor] = []
    for seg in layout.segments:
        if seg.spec.modality is Modality.IMAGE and seg.spec.is_video:
            rows, cols = seg.padded_grid
            body = seg.body.view(seg.spec.frames, rows, cols)  # canonical: frame-major
            body = body.flatten() if pattern.image_order == "row" else body.permute(1, 2, 0).flatten()
        elif seg.spec.modality is Modality.IMAGE:
            rows, cols = seg.padded_grid
            body = seg.body.view(rows, cols)
            body = body.flatten() if pattern.image_order == "row" else body.t().flatten()
        else:
            # Text follows its own direction; it is flipped here so that the
            # whole-sequence flip below leaves it in the text pattern's order.
            body = seg.body.flip(0) if pattern.text_reverse != pattern.reverse else seg.body
        wrapper = [torch.tensor([seg.begin, seg.time]), body, torch.tensor([seg.end])]
        if pattern.reverse:
            wrapper = [w.flip(0) for w in reversed(wrapper)]
        groups.append(torch.cat(wrapper))
    head, tail = torch.tensor([layout.cls_position]), layout.global_pad_positions
    if pattern.reverse:
        return torch.cat([tail.flip(0)] + groups[::-1] + [head])
    return torch.cat([head] + groups + [tail])


def inverse_permutation(order: Tensor) -> Tensor:
    """``inv`` with ``inv[order] = arange``: ``x[:, order][:, inv] == x``."""
    inv = torch.empty_like(order)
    inv[order] = torch.arange(order.numel(), device=order.device)
    return inv


class _PermutePositions(torch.autograd.Function):
    """``x[:, perm]`` whose backward is the inverse gather ``grad[:, inv]``.

    Autograd's backward for advanced indexing is an accumulating ``index_put``
    (it cannot know the index is a permutation); on CPU that was the largest
    single cost of a small model's training step.
    """

    @staticmethod
    def forward(ctx, x: Tensor, perm: Tensor, inv: Tensor) -> Tensor:
        ctx.save_for_backward(inv)
        return x.index_select(1, perm)

    @staticmethod
    def backward(ctx, grad: Tensor):
        (inv,) = ctx.saved_tensors
        return grad.index_select(1, inv), None, None


def permute_positions(x: Tensor, perm: Tensor, inv: Tensor) -> Tensor:
    """``x[:, perm]`` for a permutation ``perm`` with inverse ``inv`` (see :class:`_PermutePositions`)."""
    return _PermutePositions.apply(x, perm, inv)


class ScanSwitch:
    """The per-block orders of one layout, as gathers between consecutive blocks.

    Rather than permuting before a block and un-permuting after it (two gathers),
    the hidden state stays in the previous block's order and one gather takes it
    to the next: ``transitions[k]`` maps block ``k-1``'s order to block ``k``'s
    (block ``-1`` is canonical), and ``to_canonical`` undoes the last block's.
    """

    def __init__(self, layout: SequenceLayout, patterns: list[ScanPattern]) -> None:
        self.layout = layout
        self.patterns = patterns
        self.orders = [scan_order(layout, p) for p in patterns]
        self.transitions: list[Tensor | None] = []
        inv_prev = None  # canonical
        for order in self.orders:
            step = order if inv_prev is None else inv_prev[order]
            is_identity = bool(torch.equal(step, torch.arange(step.numel())))
            self.transitions.append(None if is_identity else step)
            inv_prev = inverse_permutation(order)
        self.to_canonical = inv_prev if inv_prev is not None and self.transitions and not torch.equal(
            inv_prev, torch.arange(inv_prev.numel())) else None
        self.transition_inverses = [None if t is None else inverse_permutation(t) for t in self.transitions]

    def to(self, device: torch.device | str) -> "ScanSwitch":
        self.orders = [o.to(device) for o in self.orders]
        self.transitions = [t if t is None else t.to(device) for t in self.transitions]
        self.transition_inverses = [t if t is None else t.to(device) for t in self.transition_inverses]
        self.to_canonical = None if self.to_canonical is None else self.to_canonical.to(device)
        return self
