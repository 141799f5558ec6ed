"""One suite for every diffusion process behind :class:`mdm.diffusion.base.DiffusionProcess`."""

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
