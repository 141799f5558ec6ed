"""The exponential moving average of the weights that sampling uses (Sec 5.1 of arXiv 2510.13253)."""

from __future__ import annotations

import copy

import torch
from torch import nn


def ema_decay_at(step: int, decay: float, power: float) -> float:
    """The EMA's decay after optimizer step ``step`` (counted from 0): ``min(decay, (1 + s) / (power + 2 + s))``.

    The second term is a power-function average (EDM2, arXiv 2312.02696, Sec 3.1): alone it gives the weights
    of step ``k`` a share growing as ``k**power``, so the average reaches back about ``1 / (power + 2)`` of the
    steps so far, whatever the run's length, and the random initial weights' share falls as about
    ``step**-(power + 1)`` (``1 / (step + 1)`` at power 0, a plain running mean). Power 8 is the usual
    ``(1 + s) / (10 + s)`` warm-up. ``decay`` caps it from step ``(decay * (power + 2) - 1) / (1 - decay)`` on
    (8990 for 0.999 at power 8), so in a shorter run the power alone sets the window.
    """
    return min(decay, (1 + step) / (power + 2 + step))


def ema_cap_step(decay: float, power: float) -> float:
    """The first step from which ``decay`` rather than the power term sets :func:`ema_decay_at`."""
    return (decay * (power + 2) - 1) / (1 - decay)


def ema_window_note(steps: int, decay: float, power: float) -> str | None:
    """A note when a run of ``steps`` never reaches its configured ``decay`` (the power term acts alone); else None."""
    cap = ema_cap_step(decay, power)
    if steps >= cap:
        return None
    window = max(1, round(steps / (power + 2)))
    return (f"note: train.ema_decay={decay} acts only from step {cap:.0f}; over these {steps} steps the EMA is the "
            f"power average of train.ema_power={power:g}, reaching back about {window} steps")


class EMA:
    """Exponential moving average of a module's floating-point state (parameters and buffers).

    Each update moves the average toward the module by ``1 - ema_decay_at(step, decay, power)``; integer
    buffers are copied.
    """

    def __init__(self, model: nn.Module, decay: float, power: float = 8.0) -> None:
        self.decay, self.power = decay, power
        self.model = copy.deepcopy(model).eval().requires_grad_(False)

    @torch.no_grad()
    def update(self, model: nn.Module, step: int) -> None:
        decay = ema_decay_at(step, self.decay, self.power)
        for ema_t, t in zip(self.model.state_dict().values(), model.state_dict().values()):
            if ema_t.dtype.is_floating_point:
                ema_t.lerp_(t, 1.0 - decay)
            else:
                ema_t.copy_(t)
