"""Self-conditioning of the Gaussian latents: off is today's model, on feeds the right x0_hat everywhere."""

import pytest
import torch

from mdm.config import load_config
from mdm.diffusion.multimodal import MultimodalDiffusion, Segment
from mdm.diffusion.objective import expected_latent
from mdm.diffusion.sampling import SamplerConfig, sample
from mdm.nn.layout import Modality, SegmentSpec
from mdm.training.loop import build_model

TXT, IMG = SegmentSpec.text(6), SegmentSpec.image(3, 3)


def build(*overrides):
    torch.manual_seed(0)
    config = load_config("tiny", list(overrides))
    return build_model(config, {"text": 30, "image": 16})


def batch(b=4):
    g = torch.Generator().manual_seed(0)
    return torch.randint(0, 30, (b, 6), generator=g), torch.randint(0, 16, (b, 9), generator=g)


class Recorder:
    """Wraps a network's forward and keeps every call's ``x0_prev`` (None when not given) and outputs."""

    def __init__(self, net):
        self.calls, self.net, self.forward = [], net, net.forward

        def forward(z, tau, segment_tau, layout, class_labels=None, x0_prev=None):
            out = self.forward(z, tau, segment_tau, layout, class_labels, x0_prev)
            self.calls.append((None if x0_prev is None else x0_prev.clone(), [o.detach().clone() for o in out],
                               torch.is_grad_enabled()))
            return out
        net.forward = forward


def test_switch_off_builds_todays_network_and_on_adds_only_a_zero_projection():
    plain, _ = build()
    off, _ = build("diffusion.self_conditioning=false")
    on, _ = build("diffusion.self_conditioning=true")
    assert plain.self_cond_in is None and off.state_dict().keys() == plain.state_dict().keys()
    extra = set(on.state_dict()) - set(plain.state_dict())
    assert extra == {"self_cond_in.weight", "self_cond_in.bias"}
    assert all(torch.equal(on.state_dict()[k], v) for k, v in plain.state_dict().items())
    assert on.self_cond_in.weight.abs().sum() == 0 and on.self_cond_in.bias.abs().sum() == 0


@pytest.mark.parametrize("solver", ["dpmsolver++", "ddpm"])
@pytest.mark.parametrize("guidance", [1.0, 3.0])
def test_untrained_projection_samples_exactly_as_the_network_without_it(solver, guidance):
    text, _ = batch()
    results = []
    for switch in ("false", "true"):
        net, diffusion = build(f"diffusion.self_conditioning={switch}")
        net.eval()
        results.append(sample(net, diffusion, [Segment(TXT, text, False), Segment(IMG, None, True)],
                              config=SamplerConfig(steps=4, solver=solver, guidance_scale=guidance),
                              generator=torch.Generator().manual_seed(0))[1])
    assert torch.equal(*results)


def test_training_feeds_the_first_pass_estimate_of_the_targets_and_no_gradient_through_it():
    net, diffusion = build("diffusion.self_conditioning=true", "diffusion.self_conditioning_prob=1.0")
    text, image = batch()
    rec = Recorder(net)
    loss = diffusion.training_losses(net, [Segment(TXT, text, False), Segment(IMG, image, True)],
                                     generator=torch.Generator().manual_seed(0))["loss"]
    assert len(rec.calls) == 2
    (x0_first, out_first, grad_first), (x0_second, _, grad_second) = rec.calls
    assert not grad_first and grad_second
    assert x0_first.abs().sum() == 0
    want = expected_latent(out_first[1], net.vae.candidates(Modality.IMAGE))
    assert torch.allclose(x0_second[:, 6:], want)  # the image target's estimate
    assert x0_second[:, :6].abs().sum() == 0  # a condition has none
    loss.backward()
    assert net.self_cond_in.weight.grad is not None and net.self_cond_in.weight.grad.abs().sum() > 0


def test_training_without_the_draw_feeds_zeros_in_one_pass():
    net, diffusion = build("diffusion.self_conditioning=true", "diffusion.self_conditioning_prob=0.0")
    text, image = batch()
    rec = Recorder(net)
    diffusion.training_losses(net, [Segment(TXT, text, False), Segment(IMG, image, True)],
                              generator=torch.Generator().manual_seed(0))
    assert len(rec.calls) == 1 and rec.calls[0][0].abs().sum() == 0


@pytest.mark.parametrize("solver", ["dpmsolver++", "ddpm"])
@pytest.mark.parametrize("guidance", [1.0, 2.0])
def test_sampling_feeds_each_step_the_previous_steps_estimate(solver, guidance):
    net, diffusion = build("diffusion.self_conditioning=true")
    torch.nn.init.normal_(net.self_cond_in.weight, std=0.5)  # a live projection, so the path matters
    net.eval()
    text, _ = batch()
    rec = Recorder(net)
    steps = 5
    out = sample(net, diffusion, [Segment(TXT, text, False), Segment(IMG, None, True)],
                 config=SamplerConfig(steps=steps, solver=solver, guidance_scale=guidance),
                 generator=torch.Generator().manual_seed(0))[1]
    per_step = 2 if guidance != 1.0 else 1
    assert len(rec.calls) == steps * per_step
    x0s = [rec.calls[i * per_step][0] for i in range(steps)]
    for i in range(steps):  # both calls of a guided step read the same estimate
        assert all(torch.equal(rec.calls[i * per_step + j][0], x0s[i]) for j in range(per_step))
    assert x0s[0].abs().sum() == 0
    assert all(x[:, :6].abs().sum() == 0 for x in x0s)  # the caption is a condition
    assert all(x[:, 6:].abs().sum() > 0 for x in x0s[1:])
    # the estimate of step 1 is the guided, offset x0_hat of step 0's output, with no commits yet in rows
    # where multi-step selection committed nothing
    candidates = net.vae.candidates(Modality.IMAGE)
    outs = [o[1] for _, o, _ in rec.calls[:per_step]]
    guided = outs[0] if per_step == 1 else outs[1] + guidance * (outs[0] - outs[1])
    first = expected_latent(guided, candidates)
    committed = (x0s[1][:, 6:, None, :] == candidates).all(-1).any(-1)
    assert torch.allclose(x0s[1][:, 6:][~committed], first[~committed], atol=1e-5)
    # the final states are the committed candidates the last estimate holds
    assert out.shape == (4, 9)


def test_the_live_projection_changes_the_samples():
    text, _ = batch()
    results = []
    for std in (0.0, 1.0):
        net, diffusion = build("diffusion.self_conditioning=true")
        torch.nn.init.normal_(net.self_cond_in.weight, std=std)
        net.eval()
        results.append(sample(net, diffusion, [Segment(TXT, text, False), Segment(IMG, None, True)],
                              config=SamplerConfig(steps=6), generator=torch.Generator().manual_seed(0))[1])
    assert not torch.equal(*results)
