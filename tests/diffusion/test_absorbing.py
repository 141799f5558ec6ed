"""SEDD's absorbing graph (DESIGN.md §2.4): the loss identity, the forward marginal, the sampler on a known joint."""

import math

import pytest
import torch
from scipy.stats import chi2

from mdm.config import ConfigError, load_config
from mdm.diffusion.absorbing import (EPS, absorbing_score_entropy, absorbing_weighted_ce, log_linear_sigma,
                                     mask_probability, radd_log_score)
from mdm.diffusion.batch_random import BatchRandom
from mdm.diffusion.multimodal import MultimodalDiffusion, Segment
from mdm.diffusion.sampling import SamplerConfig, sample
from mdm.nn.layout import Modality, SegmentSpec
from mdm.nn.network import MDMNetwork

TXT, IMG = SegmentSpec.text(6), SegmentSpec.image(3, 3)


def build(text="absorbing", image="absorbing", vocab=(30, 16)):
    torch.manual_seed(0)
    config = load_config("tiny", [f"diffusion.text_process={text}", f"diffusion.image_process={image}"])
    network = MDMNetwork(config.backbone, config.layout, config.vae, {Modality.TEXT: vocab[0], Modality.IMAGE: vocab[1]},
                         config.diffusion.masked_modalities())
    return network, MultimodalDiffusion(config.diffusion, config.vae)


def test_sedd_score_entropy_equals_the_weighted_cross_entropy():
    """With RADD's score s_y = p(y) / (e^sigma - 1), SEDD's DSE is -sigma' / (e^sigma - 1) log p(x0)."""
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(4, 7, 11, generator=g) * 3
    x0 = torch.randint(0, 11, (4, 7), generator=g)
    t = torch.rand(4, 1, generator=g).clamp(0.01, 1.0)
    sigma, dsigma = log_linear_sigma(t)
    sedd = absorbing_score_entropy(radd_log_score(logits, sigma), x0, sigma, dsigma)
    ce = absorbing_weighted_ce(logits, x0, sigma, dsigma)
    torch.testing.assert_close(sedd.float(), ce, atol=1e-5, rtol=1e-5)
    # under the log-linear noise the weight is MDLM's 1 / t
    weight = dsigma / torch.expm1(sigma)
    torch.testing.assert_close(weight, 1 / t.double(), atol=1e-9, rtol=1e-9)
    # the score entropy is >= 0 for any score, and 0 at the true ratio
    assert (absorbing_score_entropy(torch.randn(4, 7, 11, generator=g), x0, sigma, dsigma) >= -1e-9).all()
    true = torch.full((4, 7, 11), -math.inf, dtype=torch.float64).scatter(-1, x0[..., None], 0.0)
    exact = absorbing_score_entropy(true - torch.log(torch.expm1(sigma.double()))[..., None], x0, sigma, dsigma)
    assert exact.abs().max() < 1e-9


@pytest.mark.parametrize("t", [0.1, 0.5, 0.93])
def test_forward_marginal_matches_its_closed_form(t):
    """Chi-square on 10^5 draws: a position is masked with probability (1 - eps) t, independently."""
    net, diffusion = build()
    process = diffusion.process(net, Modality.TEXT)
    b, n = 5000, 20
    states = torch.randint(0, 30, (b, n))
    # every sample at level t: replace the level draw by t
    rng = BatchRandom(torch.Generator().manual_seed(1), "cpu")
    draw = rng.rand
    rng.rand = lambda *shape: torch.full(shape, (t - EPS) / (1 - EPS)) if shape == (b, 1) else draw(*shape)
    vae_out = net.vae(states, Modality.TEXT)
    noised = process.corrupt(net, TXT if n == 6 else SegmentSpec.text(n), states, vae_out, rng)
    masked = noised.predict
    p = float(mask_probability(torch.tensor(t)))
    count, total = int(masked.sum()), masked.numel()
    stat = (count - total * p) ** 2 / (total * p) + ((total - count) - total * (1 - p)) ** 2 / (total * (1 - p))
    assert chi2.sf(stat, df=1) > 1e-3
    # the number masked per sample is Binomial(n, p): chi-square over its bins
    per_sample = masked.sum(1)
    expected = torch.distributions.Binomial(n, torch.tensor(p)).log_prob(torch.arange(n + 1.0)).exp() * b
    observed = torch.bincount(per_sample, minlength=n + 1).double()
    keep = expected > 5
    stat = ((observed[keep] - expected[keep]) ** 2 / expected[keep]).sum()
    assert chi2.sf(float(stat), df=int(keep.sum()) - 1) > 1e-3
    # the input: the MASK latent where masked, the clean latent elsewhere; tau = t T where masked, else 0
    mask = net.mask_latent(Modality.TEXT)
    assert torch.equal(noised.z[masked], mask.expand(int(masked.sum()), -1))
    assert torch.allclose(noised.z[~masked], vae_out.mu[~masked])
    assert torch.allclose(noised.tau[masked], torch.tensor(t * 1000.0)) and (noised.tau[~masked] == 0).all()


JOINT = torch.tensor([[[0.30, 0.02, 0.01], [0.01, 0.02, 0.10]],
                      [[0.05, 0.20, 0.01], [0.02, 0.01, 0.25]]])  # p(x0, x1, x2) over {0,1} x {0,1} x {0,1,2}


def _exact_conditionals() -> torch.Tensor:
    """(4, 4, 4, 3, 3): for every input (x_i in {0, 1, 2} or 3 = masked), log p(x_i = y | the unmasked ones)."""
    table = torch.full((4, 4, 4, 3, 3), -1e9)
    for a in range(4):
        for b in range(4):
            for c in range(4):
                joint = JOINT.clone()
                for i, seen in enumerate((a, b, c)):
                    if seen < 3 and seen >= JOINT.shape[i]:
                        joint.zero_()  # a state position i cannot take: no mass (never fed by the sampler)
                    elif seen < 3:
                        keep = torch.zeros(JOINT.shape[i], dtype=torch.bool)
                        keep[seen] = True
                        joint = joint * keep.view([-1 if d == i else 1 for d in range(3)])
                if joint.sum() == 0:
                    continue
                for i in range(3):
                    marginal = joint.sum(dim=[d for d in range(3) if d != i])
                    table[a, b, c, i, : marginal.numel()] = (marginal / marginal.sum()).clamp_min(1e-30).log()
    return table


class _Oracle(MDMNetwork):
    """The exact conditionals p(x_i | unmasked positions) of JOINT as logits: the sampler's ideal denoiser."""

    table = _exact_conditionals()

    def forward(self, z, tau, segment_tau, layout, class_labels=None):
        states = torch.cdist(z, self.vae.candidates(Modality.TEXT)).argmin(-1)  # unmasked inputs are clean latents
        seen = torch.where(tau > 0, 3, states)  # 3 = masked
        return [self.table[seen[:, 0], seen[:, 1], seen[:, 2]]]


@pytest.mark.parametrize("selection", ["off", "cosine"])
def test_sampler_draws_a_known_joint(selection):
    """Driven by the exact denoiser, the tau-leaping sampler's empirical joint is within TV 0.05 of the truth;
    with sampled commits in confidence order (multi-step selection) it stays close too."""
    torch.manual_seed(0)
    config = load_config("tiny", ["diffusion.text_process=absorbing"])
    oracle = _Oracle(config.backbone, config.layout, config.vae, {Modality.TEXT: 3},
                     config.diffusion.masked_modalities())
    diffusion = MultimodalDiffusion(config.diffusion, config.vae)
    n = 4000
    sampler = SamplerConfig(steps=24, selection=selection, commit_sample=True)
    out = sample(oracle, diffusion, [Segment(SegmentSpec.text(3), None, target=True)], config=sampler,
                 batch_size=n, generator=torch.Generator().manual_seed(0))[0]
    assert ((out[:, :2] < 2).all() and (out[:, 2] < 3).all())
    empirical = torch.zeros(2, 2, 3)
    for x in out.tolist():
        empirical[tuple(x)] += 1.0 / n
    tv = 0.5 * (empirical - JOINT / JOINT.sum()).abs().sum()
    assert tv < (0.05 if selection == "off" else 0.1), tv


def test_sampling_is_deterministic_by_seed_and_keeps_conditions():
    net, diffusion = build()
    net.eval()
    text = torch.randint(0, 30, (3, 6))
    segs = [Segment(TXT, text, target=False), Segment(IMG, None, target=True)]
    a, b, c = (sample(net, diffusion, segs, config=SamplerConfig(steps=5, selection=sel),
                      generator=torch.Generator().manual_seed(s)) for s, sel in ((7, "off"), (7, "off"), (8, "off")))
    assert torch.equal(a[1], b[1]) and not torch.equal(a[1], c[1]) and torch.equal(a[0], text)
    assert a[1].shape == (3, 9) and a[1].dtype == torch.long and 0 <= a[1].min() and a[1].max() < 16


def test_guidance_zero_is_the_unconditional_model():
    """w = 0: the condition fully masked, the class null: its content cannot matter."""
    net, diffusion = build()
    net.eval()
    outs = []
    for seed in (1, 2):
        text = torch.randint(0, 30, (2, 6), generator=torch.Generator().manual_seed(seed))
        segs = [Segment(TXT, text, target=False), Segment(IMG, None, target=True)]
        outs.append(sample(net, diffusion, segs, class_labels=torch.tensor([1, 2]) * seed,
                           config=SamplerConfig(steps=4, guidance_scale=0.0, selection="off"),
                           generator=torch.Generator().manual_seed(0))[1])
    assert torch.equal(outs[0], outs[1])
    seen = []  # the condition's part of every network input: fully masked at w = 0, its latents at w = 1
    forward = net.forward
    net.forward = lambda z, tau, *rest: seen.append((z[:, :6], tau[:, :6])) or forward(z, tau, *rest)
    for w in (0.0, 1.0):
        sample(net, diffusion, segs, config=SamplerConfig(steps=2, guidance_scale=w), batch_size=2)
    mask = net.mask_latent(Modality.TEXT)
    assert all(torch.equal(z, mask.expand_as(z)) and (tau == 1000).all() for z, tau in seen[:2])
    mu = net.vae.encode(segs[0].states, Modality.TEXT)[0]
    assert all(torch.allclose(z, mu) and (tau == 0).all() for z, tau in seen[2:]) and len(seen) == 4


def test_one_model_mixes_processes_and_frame_passes_keep_frames():
    net, diffusion = build(text="absorbing", image="gaussian")
    assert set(net.mask_latents) == {"text"}
    net.eval()
    out = sample(net, diffusion, [Segment(IMG, None, True), Segment(TXT, None, True)],
                 config=SamplerConfig(steps=5), batch_size=2, generator=torch.Generator().manual_seed(0))
    assert out[0].shape == (2, 9) and out[1].shape == (2, 6)
    net, diffusion = build()
    net.eval()
    clip = [Segment(SegmentSpec.video(4, 2, 2), None, target=True)]
    once, twice = (sample(net, diffusion, clip, config=SamplerConfig(steps=4, frame_passes=p), batch_size=3,
                          generator=torch.Generator().manual_seed(3))[0].view(3, 4, 4) for p in (1, 2))
    assert torch.equal(twice[:, 0], once[:, 0])


def test_bad_process_settings_are_refused():
    with pytest.raises(ConfigError, match="diffusion.text_process must be one of gaussian, absorbing"):
        load_config("tiny", ["diffusion.text_process=uniform"])
    with pytest.raises(ConfigError, match="layout.image_tokens"):
        load_config("tiny", ["diffusion.image_process=absorbing", "layout.image_tokens=pixels"])
    net, _ = build(text="absorbing", image="gaussian")
    other = load_config("tiny")  # both Gaussian
    with pytest.raises(ValueError, match="trained with diffusion.text_process = absorbing"):
        MultimodalDiffusion(other.diffusion, other.vae).process(net, Modality.TEXT)
    gaussian_net, _ = build(text="gaussian", image="gaussian")
    with pytest.raises(ValueError, match="has no MASK state"):
        gaussian_net.mask_latent(Modality.TEXT)


def test_registry_names_match_the_config():
    from mdm.config import PROCESS_NAMES
    from mdm.diffusion.registry import PROCESSES

    assert tuple(PROCESSES) == PROCESS_NAMES


def test_likelihood_is_the_elbo_whatever_the_training_average():
    """ELBO scoring keeps SEDD's weights when training averages the plain CE over masked positions."""
    from mdm.diffusion.likelihood import target_loss

    net, diffusion = build()
    net.eval()
    other = load_config("tiny", ["diffusion.text_process=absorbing", "diffusion.image_process=absorbing",
                                 "diffusion.absorbing_loss=masked_mean"])
    masked_mean = MultimodalDiffusion(other.diffusion, other.vae)
    g = torch.Generator().manual_seed(0)
    segs = [Segment(TXT, torch.randint(0, 30, (3, 6), generator=g), False),
            Segment(IMG, torch.randint(0, 16, (3, 9), generator=g), True)]
    elbo = target_loss(net, diffusion, segs, n_levels=4)
    assert torch.equal(target_loss(net, masked_mean, segs, n_levels=4), elbo) and (elbo > 0).all()
