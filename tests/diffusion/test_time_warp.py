"""CDCD's time warp: monotone, onto the schedule's range, fitted from losses, and carried by checkpoints."""

import warnings

import pytest
import torch

from mdm.checkpoint import load_checkpoint, save_checkpoint
from mdm.config import ConfigError, load_config
from mdm.diffusion.multimodal import MultimodalDiffusion, Segment
from mdm.diffusion.sampling import SamplerConfig
from mdm.diffusion.time_warp import UNIFORM_SHARE, TimeWarp, isotonic
from mdm.nn.layout import Modality, SegmentSpec
from mdm.nn.network import LEVEL_BINS
from mdm.training.loop import build_model

TXT, IMG = SegmentSpec.text(6), SegmentSpec.image(3, 3)


def fitted_warp(curve, n=200_000, seed=0) -> TimeWarp:
    """A warp fitted from noisy per-position losses ``curve(s) + noise`` at uniform levels."""
    g = torch.Generator().manual_seed(seed)
    warp = TimeWarp(torch.zeros(2, LEVEL_BINS))
    for _ in range(10):
        s = torch.rand(n // 10, generator=g, dtype=torch.float64)
        warp.observe(s, curve(s) + 0.3 * torch.randn(s.shape, generator=g, dtype=torch.float64))
    return warp


def test_isotonic_pools_violators_and_keeps_a_monotone_sequence():
    assert isotonic(torch.tensor([1.0, 3.0, 2.0, 4.0]), torch.ones(4)).tolist() == [1.0, 2.5, 2.5, 4.0]
    assert isotonic(torch.tensor([0.0, 1.0, 2.0]), torch.ones(3)).tolist() == [0.0, 1.0, 2.0]
    # weights pull the pooled value towards the heavier bin
    assert isotonic(torch.tensor([2.0, 0.0]), torch.tensor([3.0, 1.0])).tolist() == [1.5, 1.5]


def test_a_rarely_observed_level_forgets_the_losses_of_an_earlier_model():
    warp = TimeWarp(torch.zeros(2, 4))
    levels = torch.tensor([0.1, 0.3, 0.6, 0.9], dtype=torch.float64).repeat_interleave(50)
    for _ in range(500):  # an early, bad model: loss 2 everywhere, every level seen at every step
        warp.observe(levels, torch.full_like(levels, 2.0))
    for step in range(200):  # the model has learned the lowest level, which the warp now draws rarely
        warp.observe(levels[50:], torch.full((150,), 2.0, dtype=torch.float64))
        if step % 10 == 0:
            warp.observe(torch.tensor([0.1], dtype=torch.float64), torch.tensor([0.0], dtype=torch.float64))
    assert warp.stats[0, 0] < 1.0  # 20 observing steps of 200 moved it most of the way
    assert torch.allclose(warp.stats[0, 1:], torch.full((3,), 2.0, dtype=warp.stats.dtype))


def test_unfitted_warp_is_the_identity():
    warp = TimeWarp(torch.zeros(2, LEVEL_BINS))
    u = torch.linspace(0, 1, 11, dtype=torch.float64)
    assert not warp.fitted
    assert torch.allclose(warp.level(u), u)


def test_fitted_warp_recovers_a_known_cdf_from_noisy_losses():
    warp = fitted_warp(lambda s: 4.0 * s ** 2)
    assert warp.fitted
    s = torch.linspace(0.05, 0.95, 19, dtype=torch.float64)
    want = (1 - UNIFORM_SHARE) * s ** 2 + UNIFORM_SHARE * s  # F(s) = L(s) normalised, mixed with uniform
    assert torch.allclose(warp.level(want), s, atol=0.02), (warp.level(want), s)  # F^-1(F(s)) = s


def test_warp_is_monotone_and_maps_the_unit_interval_onto_the_schedule():
    warp = fitted_warp(lambda s: torch.sigmoid((s - 0.6) * 20))
    u = torch.linspace(0, 1, 1001, dtype=torch.float64)
    level = warp.level(u)
    assert (level.diff() >= 0).all()
    assert level[0] == 0.0 and level[-1] == 1.0
    t = warp.timesteps(u, 1000)
    assert int(t.min()) == 0 and int(t.max()) == 999
    # the levels concentrate where the loss changes: half of them within 0.15 of the sigmoid's centre
    middle = ((level - 0.6).abs() < 0.15).double().mean()
    assert middle > 0.5


@pytest.mark.parametrize("steps", [1, 5, 20, 1000])
def test_sampler_timesteps_descend_strictly_from_the_top(steps):
    warp = fitted_warp(lambda s: torch.sigmoid((s - 0.6) * 20))
    t = warp.sampler_timesteps(steps, 1000)
    assert len(t) == steps and t[0] == 999 and min(t) >= 0
    assert all(a > b for a, b in zip(t, t[1:]))


def test_self_conditioning_and_warping_are_refused_without_a_gaussian_process():
    absorbing = ["diffusion.text_process=absorbing", "diffusion.image_process=absorbing"]
    for switch in ("self_conditioning", "time_warping"):
        with pytest.raises(ConfigError, match=f"diffusion.{switch} serves the gaussian process only"):
            load_config("tiny", [*absorbing, f"diffusion.{switch}=true"])
    config = load_config("tiny", ["diffusion.text_process=absorbing", "diffusion.time_warping=true"])
    net = build_model(config, {"text": 30, "image": 16})[0]
    assert net.level_stats(Modality.TEXT) is None and net.level_stats(Modality.IMAGE) is not None


def trained_warped_model():
    torch.manual_seed(0)
    config = load_config("tiny", ["diffusion.time_warping=true"])
    net, diffusion = build_model(config, {"text": 30, "image": 16})
    g = torch.Generator().manual_seed(0)
    segs = [Segment(TXT, torch.randint(0, 30, (8, 6), generator=g), target=False),
            Segment(IMG, torch.randint(0, 16, (8, 9), generator=g), target=True)]
    for step in range(40):
        diffusion.training_losses(net, segs, generator=torch.Generator().manual_seed(step))["loss"].backward()
    return config, net, diffusion


def test_training_fills_the_loss_by_level_and_draws_levels_through_the_warp():
    config, net, diffusion = trained_warped_model()
    stats = net.level_stats(Modality.IMAGE)
    assert stats[1].sum() > 0 and (stats[0] >= 0).all()
    assert net.level_stats(Modality.TEXT) is not None and net.level_stats(Modality.TEXT)[1].sum() == 0  # no target
    stats[0] = torch.linspace(0, 1, LEVEL_BINS) ** 8  # a loss that changes only near the top
    stats[1] = 1.0
    process = diffusion.process(net, Modality.IMAGE)
    torch.manual_seed(1)
    from mdm.diffusion.batch_random import BatchRandom
    image = torch.randint(0, 16, (256, 9))
    vae_out = net.vae(image, Modality.IMAGE, xi=torch.zeros(256, 9, config.vae.d_latent))
    tau = process.corrupt(net, IMG, image, vae_out, BatchRandom(torch.Generator().manual_seed(0), "cpu")).tau
    noised = tau[tau > 0]
    assert (noised > 700).double().mean() > 0.6  # uniform levels would put 30% there


def test_checkpoint_samples_with_the_warp_it_trained_with(tmp_path):
    config, net, diffusion = trained_warped_model()
    stats = net.level_stats(Modality.IMAGE)
    stats[0] = torch.linspace(0, 1, LEVEL_BINS) ** 8
    stats[1] = 1.0
    save_checkpoint(tmp_path / "ckpt", config=config, network=net, tokenizer=None, vq=None, text_lens={"text": 6},
                    step=40)
    loaded = load_checkpoint(tmp_path / "ckpt").network
    assert torch.equal(loaded.level_stats(Modality.IMAGE), stats)
    process = MultimodalDiffusion(config.diffusion, config.vae).process(loaded, Modality.IMAGE)
    sampler_config = SamplerConfig(steps=10)
    warped = [int(t) for t in process.make_scheduler(sampler_config, process.warp(loaded)).timesteps]
    plain = [int(t) for t in process.make_scheduler(sampler_config).timesteps]
    assert warped == TimeWarp(stats).sampler_timesteps(10, config.diffusion.num_train_timesteps)
    assert warped != plain and warped[1] > plain[1]  # the steps crowd the top, where this loss changes


def test_unfitted_warp_samples_on_the_plain_schedule_with_a_warning():
    torch.manual_seed(0)
    config = load_config("tiny", ["diffusion.time_warping=true"])
    net = build_model(config, {"text": 30, "image": 16})[0]
    process = MultimodalDiffusion(config.diffusion, config.vae).process(net, Modality.IMAGE)
    with pytest.warns(UserWarning, match="time warp .* not fitted"):
        warped = [int(t) for t in process.make_scheduler(SamplerConfig(steps=10), process.warp(net)).timesteps]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        plain = [int(t) for t in process.make_scheduler(SamplerConfig(steps=10)).timesteps]
    assert not [w for w in caught if "time warp" in str(w.message)]
    assert warped == plain
