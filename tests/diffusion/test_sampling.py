"""Training loss and sampling of the MDM diffusion on the tiny config."""

import pytest
import torch

from mdm.config import load_config
from mdm.diffusion.multimodal import MultimodalDiffusion, Segment
from mdm.diffusion.sampling import CommitSchedule, SamplerConfig, committed_count, sample
from mdm.nn.layout import Modality, SegmentSpec
from mdm.nn.network import MDMNetwork

IMG, TXT = SegmentSpec.image(3, 3), SegmentSpec.text(6)


def build(kind="mamba2"):
    torch.manual_seed(0)
    config = load_config("tiny", [f"backbone.kind={kind}"])
    network = MDMNetwork(config.backbone, config.layout, config.vae, {Modality.TEXT: 30, Modality.IMAGE: 16},
                         config.diffusion.masked_modalities())
    return network, MultimodalDiffusion(config.diffusion, config.vae)


@pytest.mark.parametrize("kind", ["mamba2", "transformer"])
def test_loss_decreases_on_a_batch_it_overfits(kind):
    net, diffusion = build(kind)
    g = torch.Generator().manual_seed(0)
    text = torch.randint(0, 30, (4, 6), generator=g)
    image = text[:, :1].repeat(1, 9) % 16  # the image is determined by the caption
    segs = [Segment(TXT, text, target=False), Segment(IMG, image, target=True)]
    opt = torch.optim.AdamW(net.parameters(), lr=3e-3, weight_decay=0.0)
    losses = []
    for step in range(60):
        out = diffusion.training_losses(net, segs, generator=torch.Generator().manual_seed(step))
        opt.zero_grad()
        out["loss"].backward()
        opt.step()
        losses.append(out["se"].item())
    assert sum(losses[-10:]) / 10 < 0.5 * sum(losses[:10]) / 10
    assert set(out) == {"loss", "rec_img", "rec_txt", "kl", "se", "mse"} and out["mse"] == 0  # no pixel segment


def test_training_losses_use_the_onehot_score_entropy(monkeypatch):
    """Eq. 4 with the data's one-hot target, nothing else, is what training minimises (DESIGN §2.1)."""
    import mdm.diffusion.gaussian_latent as process

    calls = []
    original = process.score_entropy_onehot

    def spy(logits, target, weight=1.0):
        calls.append(target)
        return original(logits, target, weight)

    monkeypatch.setattr(process, "score_entropy_onehot", spy)
    net, diffusion = build()
    image = torch.randint(0, 16, (2, 9))
    diffusion.training_losses(net, [Segment(IMG, image, target=True)])
    assert len(calls) == 1 and torch.equal(calls[0], image)


def three_captioned_samples(net, diffusion, text):
    """Caption -> image sampled with seeds 7, 7 and 8 (5 steps)."""
    net.eval()
    segs = [Segment(TXT, text, target=False), Segment(IMG, None, target=True)]
    return [sample(net, diffusion, segs, config=SamplerConfig(steps=5), generator=torch.Generator().manual_seed(s))
            for s in (7, 7, 8)]


def unguided_samples(net, diffusion):
    """Images at guidance 0 for two different captions and classes, the same noise; and the last segments."""
    net.eval()
    outs = []
    for seed in (1, 2):
        text = torch.randint(0, 30, (2, 6), generator=torch.Generator().manual_seed(seed))
        segs = [Segment(TXT, text, target=False), Segment(IMG, None, target=True)]
        outs.append(sample(net, diffusion, segs, class_labels=torch.tensor([1, 2]) * seed,
                           config=SamplerConfig(steps=4, guidance_scale=0.0),
                           generator=torch.Generator().manual_seed(0))[1])
    return outs, segs


def test_sampling_is_deterministic_by_seed_and_shapes():
    net, diffusion = build()
    text = torch.randint(0, 30, (3, 6))
    a, b, c = three_captioned_samples(net, diffusion, text)
    assert torch.equal(a[1], b[1]) and not torch.equal(a[1], c[1])
    assert torch.equal(a[0], text)  # conditions are returned unchanged
    assert a[1].shape == (3, 9) and a[1].dtype == torch.long and a[1].max() < 16


def test_guidance_scale_zero_is_the_unconditional_model():
    """w = 0 leaves only the unconditional logits: the condition's content cannot matter."""
    net, diffusion = build()
    outs, _ = unguided_samples(net, diffusion)
    assert torch.equal(outs[0], outs[1])
    # and at the level of logits: w = 0 gives the unconditional network, w = 1 the conditional one
    layout = net.make_layout([TXT, IMG])
    z_c, z_u = torch.randn(2, 15, 16), torch.randn(2, 15, 16)
    tau_c = torch.cat([torch.zeros(2, 6), torch.full((2, 9), 500.0)], 1)
    tau_u = torch.full((2, 15), 500.0)
    seg_c, seg_u = torch.tensor([[0.0, 500.0]] * 2), torch.full((2, 2), 500.0)
    uncond = (z_u, tau_u, seg_u, None)
    with torch.no_grad():
        w0 = diffusion.logits(net, z_c, tau_c, seg_c, layout, torch.tensor([3, 4]), 0.0, uncond)
        w1 = diffusion.logits(net, z_c, tau_c, seg_c, layout, torch.tensor([3, 4]), 1.0, uncond)
        assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(w0, net(z_u, tau_u, seg_u, layout, None)))
        assert all(torch.allclose(a, b) for a, b in zip(w1, net(z_c, tau_c, seg_c, layout, torch.tensor([3, 4]))))


@pytest.mark.parametrize("schedule", list(CommitSchedule))
def test_commit_schedule_commits_everything_by_the_last_step(schedule):
    counts = [committed_count(i, 10, 37, schedule) for i in range(10)]
    assert counts[-1] == 37 and counts == sorted(counts)
    if schedule is CommitSchedule.OFF:
        assert counts[:-1] == [0] * 9


def test_ddpm_and_joint_generation_shapes():
    net, diffusion = build()
    out = sample(net, diffusion, [Segment(IMG, None, True), Segment(TXT, None, True)],
                 config=SamplerConfig(solver="ddpm", steps=6, selection="off"), batch_size=2)
    assert out[0].shape == (2, 9) and out[1].shape == (2, 6)


def test_on_step_reports_every_solver_step_without_changing_the_samples():
    """The step hook (a web page's progress bar) sees (1, n) ... (n, n) per run and draws nothing itself."""
    net, diffusion = build()
    segs = [Segment(IMG, None, True), Segment(TXT, None, True)]
    seen = []
    config = SamplerConfig(steps=5)
    hooked = sample(net, diffusion, segs, config=config, batch_size=2, generator=torch.Generator().manual_seed(1),
                    on_step=lambda done, total: seen.append((done, total)))
    plain = sample(net, diffusion, segs, config=config, batch_size=2, generator=torch.Generator().manual_seed(1))
    assert seen == [(i, 5) for i in range(1, 6)]
    assert all(torch.equal(a, b) for a, b in zip(hooked, plain))
    clip, seen = [Segment(SegmentSpec.video(3, 2, 2), None, True)], []
    sample(net, diffusion, clip, config=SamplerConfig(steps=2, frame_passes=3), batch_size=1,
           on_step=lambda done, total: seen.append((done, total)))
    assert seen == [(1, 2), (2, 2)] * 3  # each frame pass counts again

def test_bad_sampler_settings_raise():
    with pytest.raises(ValueError, match="steps"):
        SamplerConfig(steps=0)
    with pytest.raises(ValueError, match="guidance_scale"):
        SamplerConfig(guidance_scale=-1)
    with pytest.raises(ValueError, match="solver|valid|dpm"):
        SamplerConfig(solver="euler-ancestral")
    net, diffusion = build()
    with pytest.raises(ValueError, match="batch_size"):
        sample(net, diffusion, [Segment(IMG, None, True)])
    with pytest.raises(ValueError, match="needs its states"):
        Segment(TXT, None, target=False)


# ----------------------------------------------------------------- the continuous path (DESIGN.md §2.3)
PIX = 4  # values in one 2x2x1 pixel patch


def build_pixels():
    torch.manual_seed(0)
    config = load_config("tiny", ["layout.image_tokens=pixels", "layout.image_channels=1", "layout.vq_factor=2"])
    network = MDMNetwork(config.backbone, config.layout, config.vae, {Modality.TEXT: 30, Modality.IMAGE: PIX},
                         config.diffusion.masked_modalities())
    return network, MultimodalDiffusion(config.diffusion, config.vae)


def test_pixel_patches_train_by_noise_mse_on_a_batch_they_overfit():
    net, diffusion = build_pixels()
    assert net.continuous == {Modality.IMAGE} and net.heads["image"].out_features == net.vae_config.d_latent
    g = torch.Generator().manual_seed(0)
    text = torch.randint(0, 30, (4, 6), generator=g)
    image = (text[:, :1, None].float() / 30).expand(4, 9, PIX).contiguous()  # the caption sets the patches
    segs = [Segment(TXT, text, target=False), Segment(IMG, image, target=True)]
    opt = torch.optim.AdamW(net.parameters(), lr=3e-3, weight_decay=0.0)
    losses = []
    for step in range(60):
        out = diffusion.training_losses(net, segs, generator=torch.Generator().manual_seed(step))
        opt.zero_grad()
        out["loss"].backward()
        opt.step()
        losses.append(out["mse"].item())
    assert out["se"] == 0  # no state segment is a target
    assert sum(losses[-10:]) / 10 < 0.5 * sum(losses[:10]) / 10
    # ELBO-style scoring (multiple choice) of pixel targets: the caption's own image scores better
    from mdm.diffusion.likelihood import target_loss

    net.eval()
    wrong = 1.0 - image  # patches no caption asked for
    own, other = (target_loss(net, diffusion, [Segment(TXT, text, False), Segment(IMG, x, True)], n_levels=8)
                  for x in (image, wrong))
    assert own.shape == (4,) and torch.isfinite(own).all() and (own < other).all()


def _network_times(net, diffusion, segment, monkeypatch):
    """The tau the network sees in one training step on ``segment`` alone."""
    seen = []
    forward = net.forward

    def spy(z, tau, segment_tau, layout, class_labels=None):
        seen.append(tau)
        return forward(z, tau, segment_tau, layout, class_labels)

    monkeypatch.setattr(net, "forward", spy)
    diffusion.training_losses(net, [segment], generator=torch.Generator().manual_seed(0))
    return seen[0]


def test_pixel_patches_are_never_trained_with_per_position_times(monkeypatch):
    """Per-position noise levels exist for multi-step selection, which commits states: pixel segments
    draw one timestep per segment even when the mixture asks for per-position ones."""
    net, diffusion = build_pixels()
    diffusion.config.per_position_t_prob = 1.0
    tau = _network_times(net, diffusion, Segment(IMG, torch.rand(8, 9, PIX), target=True), monkeypatch)
    assert (tau == tau[:, :1]).all() and (tau > 0).all()
    net, diffusion = build()  # the same mixture on VQ states does give per-position levels
    diffusion.config.per_position_t_prob = 1.0
    tau = _network_times(net, diffusion, Segment(IMG, torch.randint(0, 16, (8, 9)), target=True), monkeypatch)
    assert not (tau == tau[:, :1]).all()


def test_pixel_patch_clips_are_never_trained_with_clean_frames(monkeypatch):
    """Clean frames inside a target exist for the frame passes, which need VQ codes (see the sampler)."""
    net, diffusion = build_pixels()
    diffusion.config.per_position_t_prob = 0.0
    diffusion.config.clean_frames_prob = 1.0
    clip = Segment(SegmentSpec.video(4, 2, 2), torch.rand(16, 16, PIX), target=True)
    tau = _network_times(net, diffusion, clip, monkeypatch)
    assert (tau == tau[:, :1]).all() and (tau > 0).all()


def test_pixel_sampling_is_deterministic_by_seed_and_returns_patches():
    net, diffusion = build_pixels()
    a, b, c = three_captioned_samples(net, diffusion, torch.randint(0, 30, (3, 6)))
    assert a[1].shape == (3, 9, PIX) and a[1].is_floating_point() and torch.isfinite(a[1]).all()
    assert torch.equal(a[1], b[1]) and not torch.equal(a[1], c[1])
    # image -> text with a clean pixel condition
    out = sample(net, diffusion, [Segment(IMG, a[1], target=False), Segment(TXT, None, target=True)],
                 config=SamplerConfig(steps=5), generator=torch.Generator().manual_seed(0))
    assert torch.equal(out[0], a[1]) and out[1].dtype == torch.long and out[1].shape == (3, 6)


def test_pixel_guidance_scale_zero_is_the_unconditional_model():
    net, diffusion = build_pixels()
    outs, segs = unguided_samples(net, diffusion)
    assert torch.equal(outs[0], outs[1])
    guided = sample(net, diffusion, segs, class_labels=torch.tensor([1, 2]), config=SamplerConfig(steps=4),
                    generator=torch.Generator().manual_seed(0))[1]
    assert not torch.equal(guided, outs[1])  # the condition does reach the unguided model


def test_segment_shape_errors_for_pixel_patches():
    with pytest.raises(ValueError, match=r"continuous image tokens must be \(batch, 9, features\)"):
        Segment(IMG, torch.rand(2, 8, PIX), target=True)
    net, diffusion = build_pixels()
    with pytest.raises(ValueError, match=r"a float tensor \(\.\.\., 4\)"):
        diffusion.training_losses(net, [Segment(IMG, torch.rand(2, 9, 3), target=True)])


def test_clean_frames_leave_whole_frames_of_a_clip_as_conditions(monkeypatch):
    net, diffusion = build()
    diffusion.config.per_position_t_prob = 0.0
    clip = SegmentSpec.video(4, 2, 2)  # 4 frames of 2x2 codes, frame-major
    codes = torch.randint(0, 16, (64, 16))
    tau = _network_times(net, diffusion, Segment(clip, codes, target=True), monkeypatch)
    assert (tau > 0).all()  # off by default: every position noised
    diffusion.config.clean_frames_prob = 1.0
    tau = _network_times(net, diffusion, Segment(clip, codes, target=True), monkeypatch).view(64, 4, 4)
    clean = tau == 0
    assert (clean == clean[:, :, :1]).all()  # a frame is clean or noised as a whole
    assert clean.any() and (~clean).any()
    assert (tau[~clean] == tau.amax(dim=(1, 2), keepdim=True).expand_as(tau)[~clean]).all()  # one shared level
    diffusion.config.clean_frames = "prefix"  # the first k frames, 1 <= k < 4: what frame passes feed
    clean = _network_times(net, diffusion, Segment(clip, codes, target=True), monkeypatch).view(64, 4, 4) == 0
    frame_clean = clean[:, :, 0]
    assert (clean == clean[:, :, :1]).all() and frame_clean[:, 0].all() and not frame_clean[:, -1].any()
    assert (frame_clean[:, 1:] <= frame_clean[:, :-1]).all()  # clean frames come first
    assert len(set(frame_clean.sum(1).tolist())) == 3  # k = 1, 2 and 3 all occur in 64 clips


def test_frame_passes_keep_each_frame_of_the_earlier_runs():
    """Run 0 of a frame-pass sampling is the one-run sampling; the frames it kept survive the later runs."""
    net, diffusion = build()
    clip = [Segment(SegmentSpec.video(4, 2, 2), None, target=True)]

    def draw(passes: int, seed: int = 3):
        config = SamplerConfig(steps=4, frame_passes=passes)
        return sample(net, diffusion, clip, config=config, batch_size=6,
                      generator=torch.Generator().manual_seed(seed))[0].view(6, 4, 4)

    once, twice, four = draw(1), draw(2), draw(4)
    assert twice.shape == four.shape == (6, 4, 4)
    assert torch.equal(twice[:, 0], once[:, 0]) and torch.equal(four[:, 0], once[:, 0])
    assert not torch.equal(twice[:, 1:], once[:, 1:])  # the rest is drawn again, given frame 0
    assert torch.equal(draw(2), twice)  # deterministic by seed
    assert torch.equal(draw(9), draw(4))  # at most one run per frame


def test_later_guidance_applies_to_the_frame_passes_after_the_first(monkeypatch):
    """Run 0 (which settles frame 0) at ``guidance_scale``, the later runs at ``later_guidance_scale``."""
    from mdm.diffusion.sampling import _solve

    net, diffusion = build()
    scales, logits = [], diffusion.logits

    def spy(*args):
        scales.append(args[6])  # (network, z, tau, seg_tau, layout, class_labels, guidance_scale, uncond)
        return logits(*args)

    monkeypatch.setattr(diffusion, "logits", spy)
    net.eval()
    clip, labels = [Segment(SegmentSpec.video(4, 2, 2), None, target=True)], torch.tensor([1, 2, 3])

    def draw(**kw):
        return sample(net, diffusion, clip, labels, SamplerConfig(steps=4, frame_passes=2, **kw), batch_size=3,
                      generator=torch.Generator().manual_seed(5))[0]

    mixed = draw(guidance_scale=4.0, later_guidance_scale=1.0)
    assert scales == [4.0] * 4 + [1.0] * 4  # 4 solver steps a run, 2 runs
    g = torch.Generator().manual_seed(5)  # the same two runs by hand
    first = _solve(net, diffusion, clip, labels, SamplerConfig(steps=4, guidance_scale=4.0), 3, g, False, {})[0]
    frame0 = torch.zeros(3, 16, dtype=torch.bool)
    frame0[:, :4] = True
    second = _solve(net, diffusion, clip, labels, SamplerConfig(steps=4), 3, g, False, {0: (first, frame0)})[0]
    assert torch.equal(mixed, second) and torch.equal(mixed[:, :4], first[:, :4])
    guided = draw(guidance_scale=4.0)
    assert torch.equal(draw(guidance_scale=4.0, later_guidance_scale=4.0), guided)  # None means the same scale
    assert torch.equal(guided[:, :4], mixed[:, :4]) and scales[-8:] == [4.0] * 8
    scales.clear()  # a one-frame clip has only run 0, at guidance_scale
    sample(net, diffusion, [Segment(SegmentSpec.video(1, 2, 2), None, target=True)], labels,
           SamplerConfig(steps=4, frame_passes=2, guidance_scale=4.0, later_guidance_scale=1.0), batch_size=3)
    assert scales == [4.0] * 4
    with pytest.raises(ValueError, match="later_guidance_scale must be in"):
        SamplerConfig(frame_passes=2, later_guidance_scale=-0.5)
    with pytest.raises(ValueError, match="needs frame_passes > 1"):
        SamplerConfig(later_guidance_scale=1.0)
    with pytest.raises(ValueError, match="guidance_scale must be in"):
        SamplerConfig(guidance_scale=None)


def test_frame_passes_leave_images_alone_and_reject_bad_values():
    net, diffusion = build()
    image = [Segment(IMG, None, target=True)]
    a, b = (sample(net, diffusion, image, config=SamplerConfig(steps=3, frame_passes=p), batch_size=2,
                   generator=torch.Generator().manual_seed(0))[0] for p in (1, 3))
    assert torch.equal(a, b)  # an image has one frame: one run
    for bad in (0, -1, 1.5):
        with pytest.raises(ValueError, match="frame_passes must be an int >= 1"):
            SamplerConfig(frame_passes=bad)
    pixels, pixel_diffusion = build_pixels()
    with pytest.raises(ValueError, match="frame_passes needs VQ-coded video"):
        sample(pixels, pixel_diffusion, [Segment(SegmentSpec.video(2, 3, 3), None, target=True)],
               config=SamplerConfig(steps=2, frame_passes=2), batch_size=1)
