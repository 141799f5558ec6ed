"""Score entropy (Eq. 4-8): the SE/CE identity, its KL form, and guards against two wrong readings (DESIGN §2.1)."""

import math

import pytest
import torch

from mdm.diffusion.objective import expected_latent, gaussian_offset, score_entropy, score_entropy_onehot
from mdm.diffusion.schedule import NoiseSchedule


def test_onehot_score_entropy_is_weighted_cross_entropy():
    logits = torch.randn(3, 7, 11, dtype=torch.float64)
    target = torch.randint(0, 11, (3, 7))
    weight = torch.rand(3, 7, dtype=torch.float64) + 0.5
    log_s = torch.log_softmax(logits, -1)
    log_r = torch.log(torch.nn.functional.one_hot(target, 11).double())  # -inf off the data state
    general = score_entropy(log_s, log_r, weight)
    assert torch.allclose(general, score_entropy_onehot(logits, target, weight).double(), rtol=1e-6, atol=1e-6)
    assert torch.allclose(general, -weight * log_s.gather(-1, target[..., None])[..., 0], atol=1e-12)


def test_score_entropy_is_kl_for_normalised_distributions():
    log_s = torch.log_softmax(torch.randn(5, 9, dtype=torch.float64), -1)
    log_r = torch.log_softmax(torch.randn(5, 9, dtype=torch.float64), -1)
    kl = (log_r.exp() * (log_r - log_s)).sum(-1)
    assert torch.allclose(score_entropy(log_s, log_r), kl, atol=1e-12)
    assert torch.allclose(score_entropy(log_s, log_s), torch.zeros(5, dtype=torch.float64), atol=1e-12)
    assert (score_entropy(log_s, log_r) > 0).all()


def test_score_entropy_is_finite_for_extreme_logits():
    logits = torch.tensor([[1e4, -1e4, 0.0]])
    log_r = torch.log(torch.tensor([[0.0, 1.0, 0.0]]))
    se = score_entropy(torch.log_softmax(logits, -1), log_r)
    assert torch.isfinite(se).all() and se.item() == pytest.approx(2e4, rel=1e-6)


def _clean_candidates(v=32, e=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    c = torch.randn(v, e, generator=g, dtype=torch.float64)
    return c * torch.rsqrt(c.pow(2).mean(-1, keepdim=True))  # unit RMS, as the VAE's mu


def test_gaussian_offset_is_the_exact_posterior_over_candidates():
    """Softmax of the offset = Bayes posterior p(y | z_t) under a uniform prior (Eq. 5 with y-free terms cancelled)."""
    c = _clean_candidates()
    a = torch.tensor(0.3, dtype=torch.float64)
    z_t = a.sqrt() * c[5] + (1 - a).sqrt() * torch.randn(16, dtype=torch.float64)
    log_lik = -((z_t - a.sqrt() * c).pow(2).sum(-1)) / (2 * (1 - a))
    expected = torch.softmax(log_lik, -1)
    assert torch.allclose(torch.softmax(gaussian_offset(z_t, c, a), -1), expected, atol=1e-12)


def test_guard_candidates_are_clean_states_not_the_trajectory():
    """Wrong reading 1: candidates z_{0:t-1} of the trajectory. Their posterior trivially picks z_{t-1}
    (the closest state in variance), and says nothing about the data; clean candidates recover the data."""
    schedule = NoiseSchedule("linear")
    c = _clean_candidates()
    g = torch.Generator().manual_seed(1)
    hits_trajectory, hits_clean, trials = 0, 0, 200
    t = 50
    a_t, a_prev = schedule.alphas_cumprod[t], schedule.alphas_cumprod[t - 1]
    for _ in range(trials):
        y = int(torch.randint(0, 32, (1,), generator=g))
        eps = torch.randn(16, generator=g, dtype=torch.float64)
        z_prev = a_prev.sqrt() * c[y] + (1 - a_prev).sqrt() * eps
        z_t = (a_t / a_prev).sqrt() * z_prev + (1 - a_t / a_prev).sqrt() * torch.randn(16, generator=g,
                                                                                            dtype=torch.float64)
        # trajectory candidates: z_{t-1} plus the clean states, scored by the same Gaussian ratio
        cands = torch.cat([z_prev[None], c])
        hits_trajectory += int(gaussian_offset(z_t, cands, a_t).argmax() == 0)
        hits_clean += int(gaussian_offset(z_t, c, a_t).argmax() == y)
    assert hits_trajectory / trials > 0.9  # the wrong candidate set collapses onto z_{t-1}
    assert hits_clean / trials > 0.9  # clean candidates identify the data state


def test_guard_target_is_onehot_not_likelihood_posterior():
    """Wrong reading 2: target = likelihood-only posterior r = softmax(offset). A model that ignores the
    context and outputs exactly that posterior reaches se = 0 under that target, while under the one-hot
    data target (what training uses) its loss at high noise stays near log(v): it is at chance."""
    schedule = NoiseSchedule("linear")
    c = _clean_candidates(v=64)
    g = torch.Generator().manual_seed(2)
    t = 900
    a = schedule.alphas_cumprod[t]
    y = torch.randint(0, 64, (256,), generator=g)
    z_t = a.sqrt() * c[y] + (1 - a).sqrt() * torch.randn(256, 16, generator=g, dtype=torch.float64)
    context_free_logits = gaussian_offset(z_t, c, a.expand(256))
    log_r_posterior = torch.log_softmax(context_free_logits, -1)
    wrong = score_entropy(torch.log_softmax(context_free_logits, -1), log_r_posterior)
    right = score_entropy_onehot(context_free_logits, y)
    assert wrong.abs().max() < 1e-9  # the wrong objective is already minimised by a context-free model
    assert right.mean() > 0.8 * math.log(64)  # the right one still asks for the context
    accuracy = (context_free_logits.argmax(-1) == y).double().mean()
    assert accuracy < 0.1  # and such a model's samples are at (near) chance


def test_expected_latent_is_convex_combination_of_candidates():
    c = _clean_candidates(v=8, e=4)
    logits = torch.randn(3, 8, dtype=torch.float64)
    x0 = expected_latent(logits, c)
    assert torch.allclose(x0, torch.softmax(logits, -1) @ c)
    sharp = torch.full((1, 8), -1e9, dtype=torch.float64)
    sharp[0, 3] = 0
    assert torch.allclose(expected_latent(sharp, c), c[3:4])


def test_snr_shift_divides_every_levels_snr():
    base, shifted = NoiseSchedule("squaredcos_cap_v2", 1000), NoiseSchedule("squaredcos_cap_v2", 1000, snr_shift=8.0)
    t = torch.arange(0, 990, 7)
    snr = lambda ab: ab / (1 - ab)  # noqa: E731
    ratio = snr(base.alpha_bar(t)) / snr(shifted.alpha_bar(t))
    assert torch.allclose(ratio, torch.full_like(ratio, 8.0), rtol=1e-3)  # diffusers recomputes in float32
    z0, noise = torch.randn(4, 6, 3), torch.randn(4, 6, 3)
    tt = torch.full((4, 6), 500)
    ab = shifted.alpha_bar(tt)[..., None].float()
    assert torch.allclose(shifted.add_noise(z0, noise, tt), ab.sqrt() * z0 + (1 - ab).sqrt() * noise, atol=1e-6)
    with pytest.raises(ValueError, match="snr_shift must be > 0"):
        NoiseSchedule("linear", 1000, snr_shift=0.0)


def test_clean_latent_from_the_true_noise_is_the_clean_latent():
    """Eq. 1 solved for z0: fed the noise that made z_t, the continuous path's x0_hat is exactly z0."""
    from mdm.diffusion.objective import clean_latent_from_noise, noise_mse
    from mdm.diffusion.schedule import NoiseSchedule

    schedule = NoiseSchedule("linear", 1000)
    g = torch.Generator().manual_seed(0)
    z0, eps = torch.randn(4, 7, 16, generator=g, dtype=torch.float64), torch.randn(4, 7, 16, generator=g,
                                                                                dtype=torch.float64)
    t = torch.randint(0, 1000, (4, 7), generator=g)
    z_t = schedule.add_noise(z0, eps, t)
    torch.testing.assert_close(clean_latent_from_noise(z_t, eps, schedule.alpha_bar(t)), z0)
    assert not torch.allclose(clean_latent_from_noise(z_t, torch.zeros_like(eps), schedule.alpha_bar(t)), z0)
    assert noise_mse(eps, eps).abs().max() == 0
    assert noise_mse(eps + 2.0, eps).shape == (4, 7) and torch.allclose(noise_mse(eps + 2.0, eps),
                                                                        torch.full((4, 7), 4.0))
