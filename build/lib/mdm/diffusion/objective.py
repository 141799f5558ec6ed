"""Score entropy over clean candidate states (Eq. 4-8 and Theorem 2 of arXiv 2510.13253; DESIGN.md §2).

At a position of modality g the candidates are the clean latents ``c_y = mu(e(y))``
of all that modality's states; the network gives logits ``f_theta(z_t, y)`` and
``s_theta = softmax_y f_theta`` (Eq. 7). Eq. 4 for a target ratio ``r``::

    se = sum_y w_t (s(y) - r(y) log s(y) + K(r(y))),   K(a) = a (log a - 1)

which equals ``KL(r || s)`` when both are normalised. With the data's one-hot
target (the clean state is known in training) it is exactly the time-weighted
cross-entropy ``-w_t log s(x)``; that is what training minimises.

Two readings of the paper are wrong and guarded by tests: the candidates are
*clean* states (the "z_{0:t-1}" trajectory states have different variances and
the posterior trivially picks z_{t-1}); and the target is the one-hot data
state, not the likelihood-only posterior (its loss reaches 0 while the samples
are at chance: its minimiser ignores the context).

Everything is in log space: raw Eq. 5 ratios over/underflow float32 at any
realistic latent width.

A continuous modality (raw pixel patches, DESIGN.md §2.3) has no candidate set:
its head predicts the noise ``eps`` of Eq. 1 and trains by MSE -- the continuous
limit of score entropy is denoising score matching -- and
:func:`clean_latent_from_noise` turns the prediction into the sampler's ``x0_hat``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def score_entropy(log_s: Tensor, log_r: Tensor, weight: Tensor | float = 1.0) -> Tensor:
    """Eq. 4 per position for normalised log-probabilities ``log_s`` (model) and ``log_r`` (target) over y.

    Args:
        log_s: (..., v) log s_theta, e.g. ``log_softmax(logits)``.
        log_r: (..., v) log r; ``-inf`` where r is 0.
        weight: w_t, broadcastable to (...).
    Returns:
        (...) the score entropy, >= 0, zero iff s == r.
    """
    r = torch.exp(log_r)
    s = torch.exp(log_s)  # <= 1: log_s is a log-softmax, nothing overflows
    k = torch.xlogy(r, r) - r  # K(r) = r (log r - 1), with K(0) = 0
    r_log_s = torch.where(r > 0, r * log_s, torch.zeros_like(log_s))
    return weight * (s - r_log_s + k).sum(-1)


def score_entropy_onehot(logits: Tensor, target: Tensor, weight: Tensor | float = 1.0) -> Tensor:
    """Eq. 4 with the one-hot data target: ``-w_t log s_theta(x)`` per position (the training loss).

    logits: (..., v); target: (...) state ids. Equal to :func:`score_entropy` with
    ``log_r = log one_hot(target)`` (a test proves it).
    """
    ce = F.cross_entropy(logits.flatten(0, -2).float(), target.flatten(), reduction="none")
    return weight * ce.view(target.shape)


def gaussian_offset(z_t: Tensor, candidates: Tensor, alpha_bar: Tensor) -> Tensor:
    """The analytic Gaussian log-likelihood of ``z_t`` under each candidate, up to y-independent terms.

    ``(sqrt(a) <z_t, c_y> - a ||c_y||^2 / 2) / (1 - a)`` with ``a = alpha_bar_t``: Eq. 5's
    ratio with every term that does not depend on y (its ||z_t||^2 / 2 included)
    cancelled by the softmax. An option to add to the learned logits (DESIGN.md §2.1).

    z_t: (..., e); candidates: (v, e); alpha_bar: (...). Returns (..., v).
    """
    a = alpha_bar.to(z_t.dtype)[..., None]
    dot = z_t @ candidates.t()
    sq = candidates.pow(2).sum(-1)
    return (a.sqrt() * dot - a * sq / 2) / (1 - a).clamp_min(1e-6)


def expected_latent(logits: Tensor, candidates: Tensor) -> Tensor:
    """x0_hat = sum_y s_theta(y) c_y: the model's expected clean latent (DESIGN.md §2.2), (..., e)."""
    return torch.softmax(logits.float(), dim=-1).to(candidates.dtype) @ candidates


def noise_mse(eps_hat: Tensor, eps: Tensor) -> Tensor:
    """The continuous path's loss per position: ``mean_e (eps_hat - eps)^2`` (DESIGN.md §2.3), (...)."""
    return (eps_hat.float() - eps.float()).pow(2).mean(-1)


def clean_latent_from_noise(z_t: Tensor, eps_hat: Tensor, alpha_bar: Tensor) -> Tensor:
    """x0_hat = (z_t - sqrt(1 - a) eps_hat) / sqrt(a), Eq. 1 solved for z_0; z_t, eps_hat (..., e), a (...)."""
    a = alpha_bar.to(z_t.dtype)[..., None]
    return (z_t - (1 - a).sqrt() * eps_hat.to(z_t.dtype)) / a.sqrt()
