"""The sampler's settings and the commit schedule of multi-step selection (Theorem 3; DESIGN.md §3).

Every process reads the same :class:`SamplerConfig`: the Gaussian processes run its solver
over ``steps`` levels, the absorbing process unmasks over ``steps`` levels, and both
commit positions by ``selection`` (:func:`committed_count`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import Enum

from torch import Tensor


class Solver(str, Enum):
    DPM_SOLVER = "dpmsolver++"
    DDPM = "ddpm"


class CommitSchedule(str, Enum):
    OFF = "off"  # plain solver; the absorbing process: random unmasking (analytic tau-leaping)
    COSINE = "cosine"
    LINEAR = "linear"


@dataclass
class SamplerConfig:
    """How to sample: solver and steps, multi-step selection, guidance, frame passes of video."""

    solver: Solver = Solver.DPM_SOLVER
    steps: int = 20
    selection: CommitSchedule = CommitSchedule.COSINE
    # image segments' schedule; None = the process's default: `selection` for the Gaussian processes, "off"
    # (random unmasking) for the absorbing one, where argmax commits in confidence order collapse diversity
    image_selection: CommitSchedule | None = None
    commit_sample: bool = False  # commit a sampled state instead of the argmax (diversity)
    guidance_scale: float = 1.0  # 1 = conditional model, 0 = unconditional
    temperature: float = 1.0  # for commit_sample
    frame_passes: int = 1  # video: solver runs, run j keeping frame j (1 = the whole clip at once)
    later_guidance_scale: float | None = None  # video: guidance of frame passes after the first (None: same)

    def __post_init__(self) -> None:
        self.solver, self.selection = Solver(self.solver), CommitSchedule(self.selection)
        if self.image_selection is not None:
            self.image_selection = CommitSchedule(self.image_selection)
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


def commit_most_confident(confidence: Tensor, free: Tensor, want: int) -> Tensor:
    """(b, n) bool: the most confident ``free`` positions of each row, as many as bring its committed count to
    ``want``. ``confidence`` (b, n) is >= 0 where free (a probability)."""
    new = want - (~free).sum(1)  # (b,)
    rank = confidence.masked_fill(~free, -1.0).argsort(dim=1, descending=True).argsort(dim=1)
    return (rank < new[:, None]) & free


def committed_count(step: int, steps: int, n: int, schedule: CommitSchedule) -> int:
    """Positions committed after ``step`` (0-based) of ``steps``; all of them after the last step."""
    if schedule is CommitSchedule.OFF:
        return n if step == steps - 1 else 0
    frac = (step + 1) / steps
    if schedule is CommitSchedule.COSINE:
        frac = 1.0 - math.cos(frac * math.pi / 2)
    return n if step == steps - 1 else min(n, math.ceil(frac * n))
