"""Time warping: training levels drawn where the loss changes, and the sampler's steps placed there too.

CDCD (Dieleman et al. 2022, arXiv 2211.15089, §3.2; DESIGN.md §2.5). The
cross-entropy of a token's prediction rises with the noise level ``s`` in [0, 1],
from almost 0 where the token is still readable from its own latent to the
entropy of the prior where nothing is left. Uniform levels spend most of the
training on the two flat ends, where the network has nothing to learn. CDCD fits
a monotone curve ``F(s)`` to the observed loss by level, normalises it into a CDF
and draws ``s = F^-1(u)`` for uniform ``u``: the density of levels is then
proportional to ``dF/ds``, the rate at which the loss changes, and the loss is
linear in ``u``. The sampler spaces its steps uniformly in ``u`` too, so that it
takes its steps where the prediction changes.

The statistic is a (2, bins) buffer of the network (``MDMNetwork.level_stats``):
row 0 the mean per-position loss of each level bin, row 1 how many training steps
have observed it. A bin averages over the steps that observed it, not over
positions: a level the warp rarely draws must still forget the losses of an earlier,
worse model. Averaged over positions, such bins kept their early losses, the fit
flattened everywhere but at the levels already favoured, and the warp collapsed
onto them (the loss by level of a text->text run at step 1000;
experiments/gaussian-self-conditioning-warping). The buffer lives in the network so that
checkpoints and the EMA carry it.
The fit is a weighted isotonic regression of the bin means (pool adjacent
violators), mixed with the uniform CDF (``UNIFORM_SHARE``) so that every level keeps
some density; until every bin has been seen the warp is the identity.
"""

from __future__ import annotations

import torch
from torch import Tensor

UNIFORM_SHARE = 0.1  # the uniform CDF's weight in the mix: no level is never trained
BIN_RATE = 0.05  # a bin's mean: the running mean of its first 20 observing steps, then this exponential rate


def isotonic(values: Tensor, weights: Tensor) -> Tensor:
    """The non-decreasing sequence closest to ``values`` in weighted least squares (pool adjacent violators)."""
    blocks: list[list[float]] = []  # [mean, weight, length]
    for v, w in zip(values.tolist(), weights.tolist()):
        blocks.append([v, max(w, 1e-12), 1])
        while len(blocks) > 1 and blocks[-2][0] > blocks[-1][0]:
            (m1, w1, n1), (m2, w2, n2) = blocks[-2], blocks.pop()
            blocks[-1] = [(m1 * w1 + m2 * w2) / (w1 + w2), w1 + w2, n1 + n2]
    return torch.tensor([m for m, _, n in blocks for _ in range(n)], dtype=torch.float64)


class TimeWarp:
    """The fitted warp ``u -> s`` of one modality, read from (and updated into) its ``level_stats`` buffer.

    The fit is computed once and kept until :meth:`observe`: a training step draws its levels twice (one per
    segment, one per position) from one fit. Build a new one after the buffer changes elsewhere.
    """

    def __init__(self, stats: Tensor) -> None:
        if stats.dim() != 2 or stats.shape[0] != 2 or stats.shape[1] < 2:
            raise ValueError(f"TimeWarp: stats must be (2, bins >= 2), got {tuple(stats.shape)}")
        self.stats = stats
        self.bins = stats.shape[1]
        self._knots: tuple[Tensor, Tensor] | None = None  # the fit of ``stats``, until :meth:`observe` changes them

    @property
    def fitted(self) -> bool:
        """Whether every level bin has been observed (before that the warp is the identity)."""
        return bool((self.stats[1] > 0).all())

    @torch.no_grad()
    def observe(self, levels: Tensor, losses: Tensor) -> None:
        """Add one step's per-position ``losses`` at ``levels`` in [0, 1] to the bins they fall in."""
        levels, losses = levels.detach().flatten().double(), losses.detach().flatten().double()
        if levels.numel() == 0:
            return
        k = (levels * self.bins).long().clamp(0, self.bins - 1)
        n = torch.zeros(self.bins, dtype=torch.float64).index_add_(0, k.cpu(), torch.ones_like(levels).cpu())
        total = torch.zeros(self.bins, dtype=torch.float64).index_add_(0, k.cpu(), losses.cpu())
        seen = n > 0
        mean, steps = self.stats[0].double().cpu(), self.stats[1].double().cpu()
        rate = torch.clamp(1.0 / (steps + 1.0), min=BIN_RATE)
        batch_mean = total / n.clamp(min=1)
        mean = torch.where(seen, mean + rate * (batch_mean - mean), mean)
        self.stats[0].copy_(mean.to(self.stats.dtype))
        self.stats[1].copy_((steps + seen.double()).to(self.stats.dtype))
        self._knots = None

    def cdf(self) -> tuple[Tensor, Tensor]:
        """The knots ``(s, F(s))`` of the piecewise-linear CDF, both (bins + 2,) float64, from (0, 0) to (1, 1)."""
        if self._knots is None:
            self._knots = self._fit()
        return self._knots

    def _fit(self) -> tuple[Tensor, Tensor]:
        """:meth:`cdf` computed from ``stats``: the isotonic fit, normalised, mixed with the uniform CDF."""
        centres = (torch.arange(self.bins, dtype=torch.float64) + 0.5) / self.bins
        s = torch.cat([torch.zeros(1, dtype=torch.float64), centres, torch.ones(1, dtype=torch.float64)])
        if not self.fitted:
            return s, s.clone()
        curve = isotonic(self.stats[0].double().cpu(), self.stats[1].double().cpu())
        span = float(curve[-1] - curve[0])
        fitted = (curve - curve[0]) / span if span > 1e-12 else centres
        f = torch.cat([torch.zeros(1, dtype=torch.float64), fitted, torch.ones(1, dtype=torch.float64)])
        return s, (1 - UNIFORM_SHARE) * f + UNIFORM_SHARE * s

    def level(self, u: Tensor) -> Tensor:
        """``s = F^-1(u)`` for ``u`` in [0, 1], any shape, same dtype and device as ``u``."""
        s, f = self.cdf()
        flat = u.detach().flatten().double().cpu().clamp(0.0, 1.0)
        i = torch.searchsorted(f, flat, right=True).clamp(1, len(f) - 1)
        f0, f1, s0, s1 = f[i - 1], f[i], s[i - 1], s[i]
        out = s0 + (flat - f0) / (f1 - f0).clamp(min=1e-12) * (s1 - s0)
        return out.clamp(0.0, 1.0).view(u.shape).to(device=u.device, dtype=u.dtype)

    def timesteps(self, u: Tensor, num_train_timesteps: int) -> Tensor:
        """Integer timesteps in [0, T) for uniform ``u``: level ``s`` falls in timestep ``floor(s T)``."""
        return (self.level(u.double()) * num_train_timesteps).long().clamp(0, num_train_timesteps - 1)

    def sampler_timesteps(self, steps: int, num_train_timesteps: int) -> list[int]:
        """``steps`` strictly decreasing timesteps from ``T - 1``, evenly spaced in ``u`` ("trailing" spacing)."""
        if steps > num_train_timesteps:
            raise ValueError(f"sampler steps {steps} > num_train_timesteps {num_train_timesteps}")
        u = 1.0 - torch.arange(steps, dtype=torch.float64) / steps
        t = (self.level(u) * num_train_timesteps).ceil().long() - 1
        out: list[int] = []
        for i, ti in enumerate(t.clamp(0, num_train_timesteps - 1).tolist()):
            low = steps - 1 - i  # leave room below for the steps still to come
            ti = max(min(ti, out[-1] - 1 if out else num_train_timesteps - 1), low)
            out.append(ti)
        return out

    def plot_points(self, n: int = 101) -> tuple[list[float], list[float]]:
        """(u, s) on a uniform grid of ``u``: the curve the run folder's plot draws."""
        u = torch.linspace(0, 1, n, dtype=torch.float64)
        return u.tolist(), self.level(u).tolist()
