"""One suite for every diffusion process behind :class:`mdm.diffusion.base.DiffusionProcess`."""

from dataclasses import replace

import pytest
import torch

from mdm.config import load_config
from mdm.diffusion.likelihood import target_loss
from mdm.diffusion.multimodal import MultimodalDiffusion, Segment
from mdm.diffusion.sampling import SamplerConfig, sample
from mdm.nn.layout import Modality, SegmentSpec
from mdm.nn.network import MDMNetwork

TXT, IMG = SegmentSpec.text(6), SegmentSpec.image(3, 3)
PIX = 4

PROCESSES = {  # name -> (config overrides, image vocabulary / patch values, image states)
    "gaussian": ([], 16, lambda g: torch.randint(0, 16, (4, 9), generator=g)),
    "absorbing": (["diffusion.text_process=absorbing", "diffusion.image_process=absorbing"], 16,
                  lambda g: torch.randint(0, 16, (4, 9), generator=g)),
    "gaussian-mse": (["layout.image_tokens=pixels", "layout.image_channels=1", "layout.vq_factor=2"], PIX,
                     lambda g: torch.rand(4, 9, PIX, generator=g)),
}


def build(name):
    overrides, image_vocab, _ = PROCESSES[name]
    torch.manual_seed(0)
    config = load_config("tiny", overrides)
    network = MDMNetwork(config.backbone, config.layout, config.vae, {Modality.TEXT: 30, Modality.IMAGE: image_vocab},
                         config.diffusion.masked_modalities())
    return network, MultimodalDiffusion(config.diffusion, config.vae)


@pytest.mark.parametrize("name", list(PROCESSES))
def test_process_overfits_one_batch_with_a_nonnegative_loss(name):
    net, diffusion = build(name)
    assert diffusion.process(net, Modality.IMAGE).name == name
    g = torch.Generator().manual_seed(0)
    text = torch.randint(0, 30, (4, 6), generator=g)
    image = PROCESSES[name][2](g)
    segs = [Segment(TXT, text, target=False), Segment(IMG, image, target=True)]
    opt = torch.optim.AdamW(net.parameters(), lr=3e-3, weight_decay=0.0)
    losses = []
    for step in range(60):
        out = diffusion.training_losses(net, segs, generator=torch.Generator().manual_seed(step))
        assert all(v.dim() == 0 and torch.isfinite(v) and v >= 0 for v in out.values())
        opt.zero_grad()
        out["loss"].backward()
        opt.step()
        losses.append((out["se"] + out["mse"]).item())
    assert sum(losses[-10:]) / 10 < 0.6 * sum(losses[:10]) / 10


@pytest.mark.parametrize("name", list(PROCESSES))
def test_process_samples_and_scores_with_the_right_shapes(name):
    net, diffusion = build(name)
    net.eval()
    g = torch.Generator().manual_seed(0)
    text, image = torch.randint(0, 30, (4, 6), generator=g), PROCESSES[name][2](g)
    out = sample(net, diffusion, [Segment(TXT, text, False), Segment(IMG, None, True)],
                 config=SamplerConfig(steps=3), generator=torch.Generator().manual_seed(0))
    assert out[1].shape == image.shape and out[1].dtype == image.dtype and torch.equal(out[0], text)
    scores = target_loss(net, diffusion, [Segment(TXT, text, False), Segment(IMG, image, True)], n_levels=4)
    again = target_loss(net, diffusion, [Segment(TXT, text, False), Segment(IMG, image, True)], n_levels=4)
    assert scores.shape == (4,) and (scores >= 0).all() and torch.equal(scores, again)


@pytest.mark.parametrize("name", ["gaussian", "absorbing"])
def test_balanced_first_frame_weighs_frame_zero_in_clips_without_clean_frames(name):
    """With prefix clean frames, frame 0 is a target only in clips given none; ``balance_first_frame`` weighs its
    positions there by 1 / (1 - clean_frames_prob), and nothing else changes."""
    from mdm.diffusion.batch_random import BatchRandom

    net, diffusion = build(name)
    process = diffusion.process(net, Modality.IMAGE)
    process.config.clean_frames, process.config.clean_frames_prob = "prefix", 0.75
    process.config.per_position_t_prob = 0.0
    clip = SegmentSpec.video(4, 2, 2)  # 4 frames of 2x2 codes, frame-major
    codes = torch.randint(0, 16, (64, 16), generator=torch.Generator().manual_seed(0))
    vae_out = net.vae(codes, Modality.IMAGE)

    def corrupt(balance: bool):
        process.config.balance_first_frame = balance
        return process.corrupt(net, clip, codes, vae_out, BatchRandom(torch.Generator().manual_seed(1), "cpu"))

    plain, balanced = corrupt(False), corrupt(True)
    assert plain.weight is None and torch.equal(plain.predict, balanced.predict)
    weight = balanced.weight.view(64, 4, 4)
    assert (weight[:, 1:] == 1.0).all() and (weight[:, 0] == weight[:, 0, :1]).all()
    whole = weight[:, 0, 0] == 4.0  # the clips given no clean frame
    assert 0 < whole.sum() < 64 and (weight[~whole] == 1.0).all()
    scored_first = plain.predict.view(64, 4, 4)[:, 0].any(dim=1)  # a prefix clip gives frame 0 clean
    assert (whole >= scored_first).all() and scored_first.sum() > 0.8 * whole.sum()
    out = torch.randn(64, 16, 16, generator=torch.Generator().manual_seed(2))
    (plain_total, plain_count), (total, count) = process.loss(out, codes, plain), process.loss(out, codes, balanced)
    assert torch.equal(count, plain_count)  # the average is still over the clip's positions
    assert torch.allclose(total[~whole], plain_total[~whole])
    assert (total[scored_first] > plain_total[scored_first]).all()
    frame_0 = replace(plain, predict=plain.predict & (torch.arange(16) < 4))
    first_only = process.loss(out, codes, frame_0)[0]  # frame 0's share of the plain loss
    assert torch.allclose(total, plain_total + 3 * first_only, rtol=1e-5, atol=1e-5)


def test_balanced_first_frame_needs_prefix_clean_frames():
    from mdm.config import ConfigError

    with pytest.raises(ConfigError, match=r"diffusion.balance_first_frame .* needs diffusion.clean_frames=prefix, "
                                          r"got 'random'"):
        load_config("tiny", ["diffusion.balance_first_frame=true", "diffusion.clean_frames_prob=0.5"])
    assert load_config("tiny", ["diffusion.balance_first_frame=true", "diffusion.clean_frames=prefix"])
