"""The exponential moving average of the weights that sampling uses (Sec 5.1 of arXiv 2510.13253)."""

from __future__ import annotations

import copy

import torch
from torch import nn


class EMA:
    """Exponential moving average of a module's floating-point state (parameters and buffers).

    The decay at step ``s`` is ``min(decay, (1 + s) / (10 + s))``: the warm-up keeps the first steps'
    random weights from lingering. Until step ``(10 * decay - 1) / (1 - decay)`` (8990 for 0.999, 890
    for 0.99) the warm-up term is the smaller one, so a shorter run averages with it alone whatever
    ``decay`` says: a power-law average whose weight on step ``k`` grows about as ``k**8``, reaching
    back roughly the last tenth of the run.
    """

    def __init__(self, model: nn.Module, decay: float) -> None:
        self.decay = decay
        self.model = copy.deepcopy(model).eval().requires_grad_(False)

    @torch.no_grad()
    def update(self, model: nn.Module, step: int) -> None:
        decay = min(self.decay, (1 + step) / (10 + step))
        for ema_t, t in zip(self.model.state_dict().values(), model.state_dict().values()):
            if ema_t.dtype.is_floating_point:
                ema_t.lerp_(t, 1.0 - decay)
            else:
                ema_t.copy_(t)
